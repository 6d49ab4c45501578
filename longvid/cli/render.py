"""`longvid render A.yaml [B.yaml ...]`: render storyboards; resumes by default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from longvid.cli._ui import fail, report
from longvid.errors import ExitCode

T = TypeVar("T")
# worst first: an interrupt, then a bug, then missing resources, then bad input
SEVERITY = (ExitCode.INTERRUPTED, ExitCode.TERMINATED, ExitCode.OUTPUT_CLOSED,
            ExitCode.UNEXPECTED,
            ExitCode.MISSING_RESOURCE, ExitCode.INVALID_INPUT, ExitCode.OK)


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        i = n = 0
    if not 1 <= i <= n:
        raise typer.BadParameter(f"{text!r} is not I/N with 1 <= I <= N (e.g. 2/8)")
    return i, n


def shard(items: list[T], i: int, n: int) -> list[T]:
    """Items at positions i-1, i-1+n, ... : disjoint for different i, together the whole list."""
    return items[i - 1::n]


def render(
    storyboards: Annotated[list[Path], typer.Argument(
        help="Storyboard YAML files; - reads one from standard input.")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Output .mp4 (one storyboard) or folder (several).")] = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", "-p", help="Preset name or .yaml path; overrides the storyboards'.")] = None,
    crf: Annotated[int, typer.Option(min=0, max=51, help="H.264 quality (lower is better).")
                   ] = 18,
    fresh: Annotated[bool, typer.Option(
        "--fresh", help="Discard an earlier run of the same output and start over.")] = False,
    shard_spec: Annotated[str | None, typer.Option(
        "--shard", metavar="I/N", help="Render only the I-th of N interleaved slices of the "
        "list (1-based), e.g. --shard $((SLURM_ARRAY_TASK_ID+1))/8.")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON line per storyboard on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    vram: Annotated[float | None, typer.Option(
        "--vram", min=1, help="GPU memory the render may use, in GiB (default: the free VRAM); "
        "decides where each model component lives.")] = None,
    with_report: Annotated[bool, typer.Option(
        "--report", help="Also write a contact sheet and a drift plot PNG beside each video "
        "(see `longvid report`).")] = False,
    preview: Annotated[bool, typer.Option(
        "--preview", help="Keep OUTPUT_STEM.partial.mp4 beside each output: the segments done "
        "so far, joined after each one; removed when the video is written.")] = False,
    seed: Annotated[int | None, typer.Option(
        "--seed", min=0, max=2**63 - 1, metavar="N", help="Seed to use instead of the "
        "storyboard's `seed` (shots with their own `seed` keep it).")] = None,
    reroll: Annotated[list[str] | None, typer.Option(
        "--reroll", metavar="SHOT", help="Render shot SHOT (and what depends on it) again "
        "with a new seed, kept by later renders of this output; repeatable.")] = None,
) -> None:
    """Render STORYBOARDS to mp4. Rerunning after Ctrl-C or a crash resumes where it stopped."""
    from longvid.errors import LongvidError
    from longvid.progress import make_progress
    from longvid.render import BackendPool, render_storyboard

    if output is not None and len(storyboards) > 1 and output.suffix.lower() == ".mp4" \
            and not output.is_dir():
        fail(ExitCode.USAGE, "-o names one .mp4 but several storyboards were given",
             "pass a folder with -o, or render one storyboard at a time", as_json)
    slice_of = parse_shard(shard_spec) if shard_spec is not None else (1, 1)
    try:
        outputs = _outputs(storyboards, output, as_json)
    except LongvidError as exc:
        raise typer.Exit(report(exc, as_json)) from None
    jobs = shard(list(zip(storyboards, outputs, strict=True)), *slice_of)
    pool, progress = BackendPool(), make_progress(quiet)
    worst = ExitCode.OK
    for path, out in jobs:
        try:
            result = render_storyboard(path, output=out, preset_name=preset, crf=crf,
                                       fresh=fresh, pool=pool, progress=progress, vram_gib=vram,
                                       preview=preview, seed=seed,
                                       rerolls=tuple(reroll or ()))
            extra = _report(result.run_dir) if with_report else {}
        except BaseException as exc:  # noqa: BLE001 - one failure must not stop the batch
            progress.finish()
            code = ExitCode(report(exc, as_json=False) if not as_json else _json_error(path, exc))
            worst = min(worst, code, key=SEVERITY.index)
            if code in (ExitCode.INTERRUPTED, ExitCode.TERMINATED, ExitCode.OUTPUT_CLOSED):
                break
            continue
        if with_report and not as_json and not quiet:
            progress.message(f"report: {extra['contact_sheet']} {extra['drift_plot']}")
        if as_json:
            print(json.dumps(result.to_dict() | extra), flush=True)
        elif not quiet:
            progress.message(f"wrote {result.output} ({result.frames} frames, "
                             f"{result.duration_s:.2f}s) in {result.seconds:.1f}s")
    raise typer.Exit(int(worst))


def _outputs(storyboards: list[Path], output: Path | None, as_json: bool
             ) -> list[Path | None]:
    """Each storyboard's output as -o decides it (None: the storyboard's own), checked
    before any work: -o is an .mp4 or a folder, and no two storyboards write one file."""
    from longvid.errors import InputError, LongvidError
    from longvid.output import check_output, default_output
    from longvid.storyboard import load_storyboard
    from longvid.yamlsrc import source_stem

    if output is None:
        chosen: list[Path | None] = [None] * len(storyboards)
    elif output.is_dir() or output.suffix == "":
        chosen = [output / f"{source_stem(path)}.mp4" for path in storyboards]
    elif len(storyboards) > 1:
        raise InputError(f"-o {output} is neither a folder nor an .mp4",
                         "for several storyboards pass a folder (create it first if its "
                         "name has a dot)")
    else:
        chosen = [check_output(output)]
    writers: dict[Path, Path] = {}
    for path, out in zip(storyboards, chosen, strict=True):
        try:
            target = (out or default_output(load_storyboard(path))).resolve()
        except LongvidError:
            continue  # reported when its turn comes; the others still render
        if target in writers and writers[target].resolve() != path.resolve():
            fail(ExitCode.USAGE, f"{writers[target].absolute()} and {path.absolute()} would "
                 f"both write {target}", "give the storyboards different names or `output:`"
                 " keys, or render them into different folders with -o", as_json)
        writers[target] = path
    return chosen


def _report(run_dir: Path) -> dict[str, str]:
    from longvid.report import write_report

    pictures = write_report(run_dir)
    return {"contact_sheet": str(pictures.contact_sheet), "drift_plot": str(pictures.drift_plot)}


def _json_error(path: Path, exc: BaseException) -> int:
    from longvid.cli._ui import error_dict
    from longvid.yamlsrc import source_id

    err = error_dict(exc)
    if err["code"] != ExitCode.OUTPUT_CLOSED:  # else nobody reads stdout any more
        print(json.dumps({"status": "error", "source": source_id(path), "error": err}),
              flush=True)
    report(exc, as_json=False)  # the human-readable line goes to stderr as well
    return err["code"]
