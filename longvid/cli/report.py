"""`longvid report RUN_OR_VIDEO`: contact sheet and drift plot PNGs; prints their paths."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from longvid.cli._ui import guarded


def report(
    target: Annotated[Path, typer.Argument(help="A video longvid rendered, or its .run folder.")],
    out_dir: Annotated[Path | None, typer.Option(
        "--out-dir", help="Where to write the PNGs (default: beside the video).")] = None,
) -> None:
    """Draw a contact sheet (one row per shot) and a drift plot of a render."""
    def body() -> None:
        from longvid.report import find_run, write_report

        result = write_report(find_run(target), out_dir)
        print(result.contact_sheet)
        print(result.drift_plot)

    guarded(body, as_json=False)
