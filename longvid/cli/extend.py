"""`longvid extend CLIP --seconds N`: continue a clip; resumes like render."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from longvid.cli._ui import guarded


def extend(
    clip: Annotated[Path, typer.Argument(help="Video to continue (mp4, mov, ...).")],
    seconds: Annotated[float, typer.Option("--seconds", "-s", help="How much to add.")],
    prompt: Annotated[str | None, typer.Option(help="What happens next.")] = None,
    preset: Annotated[str, typer.Option("--preset", "-p", help="Preset name or .yaml path.")
                      ] = "tiny",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Output .mp4 (default: CLIP_extended.mp4 beside the clip).")
                      ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the continuation.")] = 0,
    crf: Annotated[int, typer.Option(min=0, max=51, help="H.264 quality (lower is better).")
                   ] = 18,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start over.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    vram: Annotated[float | None, typer.Option(
        "--vram", min=1, help="GPU memory the render may use, in GiB (default: the free VRAM); "
        "decides where each model component lives.")] = None,
    with_report: Annotated[bool, typer.Option(
        "--report", help="Also write a contact sheet and a drift plot PNG beside the video "
        "(see `longvid report`).")] = False,
) -> None:
    """Write CLIP followed by SECONDS of continuation as one mp4 at the clip's fps and size."""

    def body() -> None:
        from longvid.extend import extend_clip
        from longvid.output import check_output
        from longvid.progress import make_progress
        from longvid.render import BackendPool

        out = check_output(output or clip.with_name(f"{clip.stem}_extended.mp4"))
        progress = make_progress(quiet)
        try:
            result = extend_clip(clip, seconds=seconds, prompt=prompt, preset_name=preset,
                                 output=out, seed=seed, crf=crf, fresh=fresh,
                                 pool=BackendPool(), progress=progress, vram_gib=vram)
        finally:
            progress.finish()
        extra = {}
        if with_report:
            from longvid.report import write_report

            pictures = write_report(result.run_dir)
            extra = {"contact_sheet": str(pictures.contact_sheet),
                     "drift_plot": str(pictures.drift_plot)}
        if as_json:
            print(json.dumps(result.to_dict() | extra))
        elif not quiet:
            if extra:
                progress.message(f"report: {extra['contact_sheet']} {extra['drift_plot']}")
            progress.message(f"wrote {result.output} ({result.frames} frames, "
                             f"{result.duration_s:.2f}s)")

    guarded(body, as_json)
