"""The Typer app: wiring only. Each command lives in its own module."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated, NoReturn

import typer

from longvid import __version__, signals
from longvid.budget import ALLOCATOR_CONF
from longvid.cli import doctor, extend, models, plan, presets, preview, render, report
from longvid.cli.bench import bench_app
from longvid.errors import ExitCode
from longvid.terminal import open_std_streams, output_closed, silence_output

app = typer.Typer(
    name="longvid", no_args_is_help=True, add_completion=False,
    pretty_exceptions_enable=False, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Author long AI videos from a YAML storyboard on one consumer GPU.\n\n"
         "Exit codes: 0 ok, 1 unexpected, 2 usage, 3 invalid storyboard or input, "
         "4 missing resource, 130 interrupted, 143 terminated (both resumable), 141 "
         "output's reader gone (`| head`).",
)


def _version(value: bool) -> None:
    if value:
        print(f"longvid {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """longvid: storyboard in, long video out."""


app.command("render")(render.render)
app.command("plan")(plan.plan)
app.command("extend")(extend.extend)
app.command("doctor")(doctor.doctor)
app.command("report")(report.report)
app.command("preview")(preview.preview)
app.add_typer(models.models_app, name="models")
app.add_typer(presets.presets_app, name="presets")
app.add_typer(bench_app, name="bench")


def main() -> None:
    open_std_streams()  # before anything opens a file: a closed fd 2 would be its number
    # numpy's OpenBLAS keeps its worker threads spinning ~0.1 s after each call; on a
    # small CPU they then compete with torch's threads. The memory bank's eviction (a
    # 65x768 matrix product per segment once the bank is full) made every later
    # segment ~50 % slower on 2 cores (benchmarks/scaling.py). numpy's work here is
    # small, so it gets one thread. Set before numpy loads; a user's own value wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # the CUDA allocator the VRAM plan is measured under (longvid.budget); read by torch
    # when CUDA starts, so set before any backend loads; a user's own value wins
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", ALLOCATOR_CONF)
    # SIGTERM (Slurm at a time limit, `kill`, a container stop) ends a render as Ctrl-C
    # does: the segment in progress is abandoned and the run stays resumable
    signals.install()
    # a library's warnings at import (bitsandbytes asking for a `kernels` download on
    # some CPUs) are not the user's business; LONGVID_DEBUG=1 shows them
    logging.basicConfig(level=logging.WARNING if os.environ.get("LONGVID_DEBUG")
                        else logging.ERROR, format="%(name)s: %(message)s")
    try:
        app()  # always ends in SystemExit (typer's standalone mode)
    except SystemExit as done:
        # a reader that has gone (`| head`) ends the command quietly with 141: what is
        # still buffered for stdout goes now, not as a flush error at exit; and click's
        # own exit 1 for a closed pipe (--help, --version: it swaps sys.stdout) is 141 too
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _closed_output()
        if done.code == 1 and sys.stdout is not sys.__stdout__ and output_closed():
            _closed_output()
        raise


def _closed_output() -> NoReturn:
    silence_output()
    raise SystemExit(int(ExitCode.OUTPUT_CLOSED)) from None
