"""`longvid preview RUN_OR_OUTPUT`: join what a run has committed into OUTPUT_STEM.partial.mp4."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from longvid.cli._ui import guarded


def preview(
    target: Annotated[Path, typer.Argument(
        help="The output .mp4 a render is writing (or was), or its .run folder.")],
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the preview's path, frames and segments as JSON.")] = False,
) -> None:
    """Write the segments a render has committed so far (in progress or interrupted) as
    OUTPUT_STEM.partial.mp4 beside its output, joined by stream copy; prints its path."""
    def body() -> None:
        from longvid.preview import preview_run

        run, path, done = preview_run(target)
        if as_json:
            print(json.dumps({"preview": str(path), "run_dir": str(run.resolve()),
                              "frames": done.frames, "segments": done.segments}))
        else:
            print(path)

    guarded(body, as_json)
