"""`longvid plan FILE`: validate a storyboard and show its timeline. Never imports torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from longvid.cli._ui import guarded


def plan(
    storyboard: Annotated[Path, typer.Argument(
        help="Storyboard YAML file; - reads it from standard input.")],
    preset: Annotated[str | None, typer.Option("--preset", "-p",
                                               help="Preset name or .yaml path; overrides "
                                                    "the storyboard's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    vram: Annotated[float, typer.Option(
        "--vram", min=1, help="GPU memory to plan for, in GiB (`render` uses the free VRAM).")
                    ] = 12.0,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="The output .mp4 whose run to compare with (default: the "
        "storyboard's): which segments a render would reuse.")] = None,
) -> None:
    """Validate STORYBOARD and print its shots, segments, prompt switches and work estimate."""

    def body() -> None:
        from longvid.output import check_output, default_output
        from longvid.render import load_job, reuse_of
        from longvid.vram import plan_policy

        sb, chosen, p = load_job(storyboard, preset)
        out = check_output(output) if output is not None else default_output(sb)
        p, reuse = reuse_of(p, chosen, out.resolve())
        policy = plan_policy(chosen, p, vram)
        # which negative prompt applies: the storyboard's when it sets one, else the preset's
        source = "storyboard" if sb.negative_prompt is not None else "preset"
        if as_json:
            data = p.to_dict() | {"negative_prompt_source": source,
                                  "policy": policy.to_dict() if policy else None}
            if reuse is not None:  # only against an existing run: the plan itself is as is
                data["run"] = reuse.to_dict()
                for seg, reused in zip(data["segments"], reuse.reused, strict=True):
                    seg["reused"] = reused
            print(json.dumps(data, indent=2))
        else:
            from longvid.cli.plan_view import show_plan

            show_plan(p, policy, source, reuse)

    guarded(body, as_json)
