"""`longvid report RUN_OR_VIDEO`: contact sheet and drift plot PNGs; prints their paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from longvid.cli._ui import guarded


def report(
    target: Annotated[Path, typer.Argument(help="A video longvid rendered, or its .run folder.")],
    out_dir: Annotated[Path | None, typer.Option(
        "--out-dir", help="Where to write the PNGs (default: beside the video).")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the run directory and the PNG paths as JSON.")] = False,
) -> None:
    """Draw a contact sheet (one row per shot) and a drift plot of a render."""
    def body() -> None:
        from longvid.report import write_report
        from longvid.rundir import find_run

        run = find_run(target)
        result = write_report(run, out_dir)
        if as_json:
            print(json.dumps({"run_dir": str(run.resolve()),
                              "contact_sheet": str(result.contact_sheet),
                              "drift_plot": str(result.drift_plot)}, indent=2))
        else:
            print(result.contact_sheet)
            print(result.drift_plot)

    guarded(body, as_json)
