"""What a render delivers beside its run directory: the mp4 and its JSON sidecar.

    <folder>/scene.mp4     the video
    <folder>/scene.json    the sidecar: how it was made (plan, preset, seeds, versions, timings)
    <folder>/scene.run/    the run directory (or under $LONGVID_HOME/runs/)

A render writes these three and nothing else, and never replaces a file it did not
make: before any work, each of them must be absent or recognisably longvid's own,
and none may be one of the job's inputs. (With `--preview` it also keeps
`scene.partial.mp4` until the video is written, claimed by the same rule in
longvid/preview.py.) A storyboard's `output:` stays in the
storyboard's folder (or below) and names an .mp4; `-o` on the command line may point
anywhere but must name an .mp4 (or, for `render`, a folder).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from longvid.errors import InputError, StoryboardError
from longvid.rundir import foreign_entries, run_dir_for
from longvid.storyboard import Storyboard
from longvid.yamlsrc import source_folder, source_stem

VIDEO_SUFFIX = ".mp4"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# a tag every longvid video carries (mux metadata), and keys every sidecar has
VIDEO_TAG = "longvid_storyboard_sha256"
_SIDECAR_KEYS = {"storyboard_sha256", "preset", "versions", "segments"}


def is_video_name(path: Path) -> bool:
    return path.suffix.lower() == VIDEO_SUFFIX and path.stem != ""


def default_output(sb: Storyboard) -> Path:
    """The storyboard's `output:`, confined to its folder, else `<stem>.mp4` in the cwd."""
    if sb.output is None:
        return Path.cwd() / f"{source_stem(Path(sb.path))}{VIDEO_SUFFIX}"
    folder = source_folder(Path(sb.path)).resolve()
    target = (folder / sb.output).resolve()

    def refuse(why: str) -> StoryboardError:
        return StoryboardError(
            f"`output` {why}", "write a path below the storyboard's folder ending in .mp4, "
            "like `output: renders/scene.mp4`, or choose the file with -o on the command line",
            path=sb.path, line=sb.line_of("output"), key="output")

    if _CONTROL.search(str(sb.output)):
        raise refuse("contains a control character (a newline?)")
    if not is_video_name(sb.output):
        raise refuse(f"must name an .mp4 file, not {sb.output.name!r}")
    if not target.is_relative_to(folder):
        raise refuse(f"leads outside the storyboard's folder ({target}); only -o may do that")
    return target


def check_output(path: Path) -> Path:
    """An output named on the command line: an .mp4 file, not a folder."""
    if not is_video_name(path):
        raise InputError(f"output {path} is not an .mp4 file",
                         "name the output like `out.mp4` (render also takes a folder)")
    if path.is_dir():
        raise InputError(f"output {path} is a folder", "name a file like `out.mp4` in it")
    return path


def sidecar_path(output: Path) -> Path:
    return output.with_suffix(".json")


def claim_outputs(output: Path, inputs: list[tuple[Path, str]]) -> None:
    """Refuse, before any work, a render whose mp4, sidecar or run directory would replace
    one of its inputs (path, what it is) or a file longvid did not write."""
    sidecar, run = sidecar_path(output), run_dir_for(output)
    for target in (output, sidecar, run):
        for source, what in inputs:
            if same_file(target, source):
                name = "the sidecar" if target == sidecar else "the output"
                raise InputError(f"{name} {target} is {what}",
                                 "choose another output with -o")
    for target, mine, what in ((output, _is_longvid_video, "video"),
                               (sidecar, _is_longvid_sidecar, "sidecar")):
        if target.is_dir():
            raise InputError(f"the {what} {target} would replace a folder",
                             "choose another output with -o")
        if target.exists() and not (mine(target) or _recorded_in(run, output)):
            raise InputError(
                f"{target} exists and was not written by longvid; the render's {what} "
                "would replace it", "choose another output with -o, or move that file away")
    if run.exists() and not run.is_dir():
        raise InputError(f"the run directory {run} is a file not written by longvid",
                         "choose another output with -o, or move that file away")
    if run.is_dir() and (strangers := foreign_entries(run)):
        raise InputError(
            f"{run} is not a longvid run directory (it holds {', '.join(strangers[:3])})",
            "choose another output with -o, or move that folder away")


def _recorded_in(run: Path, output: Path) -> bool:
    """The run directory says it wrote `output` (whatever state that file is in now)."""
    try:
        manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
        return isinstance(manifest, dict) and manifest.get("output") == str(output)
    except (OSError, ValueError):
        return False


def same_file(a: Path, b: Path) -> bool:
    """Both exist and are one file (a link, another spelling of the path)."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def has_tag(path: Path, tag: str) -> bool:
    """The video's container metadata holds `tag` (False for anything ffprobe cannot read)."""
    from longvid.mux import probe

    try:
        return tag in probe(path).tags
    except InputError:
        return False


def _is_longvid_video(path: Path) -> bool:
    return has_tag(path, VIDEO_TAG)


def _is_longvid_sidecar(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(data, dict) and set(data) >= _SIDECAR_KEYS
            and isinstance(data["versions"], dict) and "longvid" in data["versions"])


@dataclass(frozen=True)
class Sidecar:
    """How a video was made; written beside it after every successful join."""

    title: str
    storyboard: str
    storyboard_sha256: str
    preset: str
    backend: str
    seed: int
    rerolls: dict[str, int]  # shot id -> times `--reroll` gave it a new seed
    fps: int
    width: int
    height: int
    steps: int
    guidance_scale: float
    crf: int
    frames: int
    duration_s: float
    audio: str | None
    versions: dict[str, str]
    timings: dict[str, float]  # wall_s: this run; generate_s: every segment's own time
    # the committed segment records, in order; `reused`: committed by an earlier render
    segments: tuple[dict[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"segments": list(self.segments)}
