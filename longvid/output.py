"""What a render delivers beside its run directory: the mp4 and its JSON sidecar.

    <folder>/scene.mp4     the video
    <folder>/scene.json    the sidecar: how it was made (plan, preset, seeds, versions, timings)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from longvid.errors import InputError
from longvid.storyboard import Storyboard


def default_output(sb: Storyboard) -> Path:
    return sb.output if sb.output is not None else Path.cwd() / f"{Path(sb.path).stem}.mp4"


def check_output(path: Path) -> Path:
    if path.suffix.lower() != ".mp4":
        raise InputError(f"output {path} is not an .mp4 file", "name the output like `out.mp4`")
    return path


def sidecar_path(output: Path) -> Path:
    return output.with_suffix(".json")


@dataclass(frozen=True)
class Sidecar:
    """How a video was made; written beside it after every successful join."""

    title: str
    storyboard: str
    storyboard_sha256: str
    preset: str
    backend: str
    seed: int
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
    segments: tuple[dict[str, Any], ...]  # the committed segment records, in order

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"segments": list(self.segments)}
