"""The run directory: manifest, lock, and atomic per-segment commits. The disk is the truth.

    <run>/manifest.json          binds the run to its plan and preset (the run key)
    <run>/run.lock               flock held while a render writes here
    <run>/versions.json          longvid, library and weight versions of the backend
    <run>/clip.mp4               `extend` only: the input clip, re-encoded to the plan's fps
    <run>/concat.txt             ffmpeg's list of the videos joined into the output
    <run>/segments/seg_0007.mp4                 frames this segment adds to the video
    <run>/segments/seg_0007.state.safetensors   what segment 8 needs (context latents, held
                                                frames)
    <run>/segments/seg_0007.memory.safetensors  its keyframes for the memory bank
                                                (longvid/memory/store.py)
    <run>/segments/seg_0007.json                written last: a segment is done iff this exists
    <run>/segments/init.state.safetensors       `extend` only: the clip's tail latents,
                                                segment 0's context
    <run>/segments/init.memory.safetensors      `extend` only: the clip's keyframes

Every file is written to a temporary name and moved into place with os.replace, so
a render killed at any moment leaves either a whole segment or none of it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from longvid.errors import InputError, ResourceError

MANIFEST_VERSION = 1
INIT = "init"  # the files of index -1: the state a run starts from (`extend`'s clip)


def run_dir_for(output: Path) -> Path:
    """`out.mp4` -> `out.run/` beside it, or under $LONGVID_HOME/runs/ when that is set."""
    output = output.resolve()
    if home := os.environ.get("LONGVID_HOME"):
        tag = hashlib.sha256(str(output).encode()).hexdigest()[:8]
        return Path(home) / "runs" / f"{output.stem}-{tag}"
    return output.with_suffix(".run")


def segment_file(segments: Path, index: int, kind: str) -> Path:
    """`seg_0007.<kind>` for segment 7, `init.<kind>` for index -1: every per-segment name."""
    name = INIT if index < 0 else f"seg_{index:04d}"
    return segments / f"{name}.{kind}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """What binds a run directory to one job: resuming needs the same `run_key`."""

    longvid: str
    run_key: str  # plan, preset and CRF: everything that changes the segments' frames
    storyboard: str
    content_sha256: str
    preset: str
    preset_sha256: str
    backend: str
    crf: int
    fps: int
    output: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.segments = root / "segments"
        self._lock_file: Any = None

    # -- opening -------------------------------------------------------------------------

    def open(self, manifest: Manifest, *, fresh: bool = False) -> int:
        """Lock the directory and bind it to `manifest`; return the number of done segments.

        Raises ResourceError if another render holds the lock, and InputError if the
        directory belongs to a different plan (unless `fresh`, which starts over).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.root / "run.lock", "a+")  # noqa: SIM115 - held for the run
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise ResourceError(
                f"another longvid render is writing to {self.root}",
                "wait for it to finish, or render to a different output (-o)") from None
        path = self.root / "manifest.json"
        if fresh and self.segments.exists():
            shutil.rmtree(self.segments)
        if path.exists() and not fresh:
            old = json.loads(path.read_text())
            if old.get("run_key") != manifest.run_key:
                raise InputError(
                    f"{self.root} holds a render of a different storyboard or settings "
                    f"({old.get('storyboard', '?')}, preset {old.get('preset', '?')})",
                    "add --fresh to discard it and start over, or render to another output (-o)")
        self.segments.mkdir(exist_ok=True)
        for stale in [*self.root.glob(".*.tmp*"), *self.segments.glob(".*.tmp*")]:
            stale.unlink()  # left by a render killed mid-write; we hold the lock now
        atomic_write_text(path, json.dumps(manifest.to_dict() | {
            "manifest_version": MANIFEST_VERSION, "updated": time.time()}, indent=2))
        return sum(1 for _ in self.segments.glob("seg_*.json"))

    def close(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    # -- segments ------------------------------------------------------------------------

    def video(self, index: int) -> Path:
        return segment_file(self.segments, index, "mp4")

    def record_path(self, index: int) -> Path:
        return segment_file(self.segments, index, "json")

    def state_path(self, index: int) -> Path:
        return segment_file(self.segments, index, "state.safetensors")

    def is_done(self, index: int) -> bool:
        return self.record_path(index).exists()

    def record(self, index: int) -> dict[str, Any]:
        return json.loads(self.record_path(index).read_text())

    def tmp_path(self, final: Path) -> Path:
        return final.with_name(f".{final.stem}.{os.getpid()}.tmp{final.suffix}")

    def save_state(self, index: int, tensors: dict[str, Any]) -> None:
        """Tensors the next segment needs; index -1 is the run's initial state (extend)."""
        from safetensors.torch import save_file

        final = self.state_path(index)
        tmp = self.tmp_path(final)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, final)

    def load_state(self, index: int) -> dict[str, Any]:
        from safetensors.torch import load_file

        path = self.state_path(index)
        return load_file(str(path)) if path.exists() else {}

    def commit(self, index: int, record: dict[str, Any]) -> None:
        """Mark segment `index` done; its video and state must already be in place."""
        assert self.state_path(index).exists()
        atomic_write_text(self.record_path(index), json.dumps(record, indent=2))
