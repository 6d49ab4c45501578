"""The run directory: manifest, lock, and atomic per-segment commits. The disk is the truth.

    <run>/manifest.json                   binds the run to its plan and preset (the run key)
    <run>/run.lock                        flock held while a render writes here
    <run>/versions.json                   longvid, library and weight versions of the backend
    <run>/concat.txt                      ffmpeg's list of the videos joined into the output
    <run>/segments/seg_0007.mp4           frames this segment adds to the video
    <run>/segments/seg_0007.state.safetensors   what segment 8 needs (context latents, held frames)
    <run>/segments/seg_0007.memory.safetensors  its keyframes for the memory bank
    <run>/segments/seg_0007.json          written last: a segment is done iff this exists;
                                          it holds the segment's identity (identity.py)
    <run>/segments/init.*                 the state `extend` starts from; init.json seals it
    <run>/clip.mp4, clip.mp4.seal         `extend`'s clip, re-encoded, and its size and hash

Every file is written to a temporary name and moved into place with os.replace, so
a render killed at any moment leaves either a whole segment or none of it. A record
holds the size and SHA-256 of its segment's files; when a run is opened, the done
segments are checked against them, and a damaged one is rendered again, with every
segment that reads it (its state or keyframes; with no plan given, every later one).
So is every done segment whose identity is not the one the (perhaps edited) plan gives
its index. A removed segment's record goes first, then its files, so no stale file
outlives its segment.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from longvid.errors import InputError, ResourceError

MANIFEST_VERSION = 1
INIT = "init"  # the files of index -1: the state a run starts from (`extend`'s clip)
_SEGMENT_KINDS = ("mp4", "json", "state.safetensors", "memory.safetensors")
_SEGMENT_FILE = re.compile(r"^(seg_\d{4,}|init)\.(mp4|json|(state|memory)\.safetensors)$")
_RUN_FILES = {"manifest.json", "run.lock", "segments", "versions.json", "concat.txt",
              "clip.mp4", "clip.mp4.seal"}


def run_dir_for(output: Path) -> Path:
    """`out.mp4` -> `out.run/` beside it, or under $LONGVID_HOME/runs/ when that is set."""
    output = output.resolve()
    if home := os.environ.get("LONGVID_HOME"):
        tag = hashlib.sha256(str(output).encode()).hexdigest()[:8]
        return Path(home) / "runs" / f"{output.stem}-{tag}"
    return output.with_suffix(".run")


def find_run(target: Path) -> Path:
    """A run directory, or the video a render writes or wrote (its run directory is found
    beside it or under $LONGVID_HOME/runs/); exit 3 with what to pass otherwise."""
    if target.is_dir():
        if (target / "manifest.json").is_file():
            return target
        raise InputError(f"{target} is not a longvid run directory (it has no manifest.json)",
                         "pass a run directory (`scene.run`) or the output video a render "
                         "is writing")
    if target.suffix.lower() == ".mp4":
        run_root = run_dir_for(target)
        if (run_root / "manifest.json").is_file():
            return run_root
        raise InputError(f"no run of {target}: no run directory (looked for {run_root})",
                         "pass the output a render is writing (or wrote), or its run "
                         "directory; with LONGVID_HOME set, set it as the render had it")
    raise InputError(f"{target} is neither a run directory nor an .mp4",
                     "pass the output a render is writing, or its run directory")


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


def foreign_entries(root: Path) -> list[str]:
    """Names under a would-be run directory that no render writes (temporary files aside)."""
    names = [p.name for p in root.iterdir() if p.name not in _RUN_FILES]
    segments = root / "segments"
    if segments.is_dir():
        names += [f"segments/{p.name}" for p in segments.iterdir()
                  if not _SEGMENT_FILE.match(p.name)]
    elif segments.exists():
        names.append("segments")
    return sorted(n for n in names if not Path(n).name.startswith("."))


def seal(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of each file, by name: what a later run checks them against."""
    return {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in paths}


def intact(folder: Path, sealed: Any) -> bool:
    """Every file `seal` described is in `folder`, with its size and hash."""
    try:
        for name, want in sealed.items():
            path = folder / name
            if not (path.is_file() and path.stat().st_size == want["bytes"]
                    and file_sha256(path) == want["sha256"]):
                return False
    except (AttributeError, KeyError, TypeError, OSError):
        return False
    return True


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
    rerolls: dict[str, int] = field(default_factory=dict)  # shot id -> `--reroll` count

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recorded_rerolls(root: Path) -> dict[str, int]:
    """The `--reroll` counts the run directory's manifest holds (none if there is none)."""
    try:
        rerolls = json.loads((root / "manifest.json").read_text(encoding="utf-8"))["rerolls"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(rerolls, dict):
        return {}
    return {str(k): v for k, v in rerolls.items() if type(v) is int and v > 0}


def readable(done: set[int], reads: Sequence[tuple[tuple[int, ...], bool]]) -> set[int]:
    """The done segments that stay done: those whose every read segment stays done too.
    `reads[i]`: (earlier segments segment i reads, whether it reads all earlier ones)."""
    kept: set[int] = set()
    all_kept = True  # every segment so far
    for index, (direct, everything) in enumerate(reads):
        if index in done and not (everything and not all_kept) and all(d in kept
                                                                         for d in direct):
            kept.add(index)
        all_kept = all_kept and index in kept
    return kept


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
        self._identities: tuple[str, ...] | None = None

    # -- opening -------------------------------------------------------------------------

    def open(self, manifest: dict[str, Any], *, identities: tuple[str, ...] | None = None,
             reads: Sequence[tuple[tuple[int, ...], bool]] | None = None,
             fresh: bool = False) -> int:
        """Lock the directory and bind it to `manifest`; return the number of done segments.
        `identities`: of the plan's segments (identity.py); done segments whose identity
        differs are removed, and `commit` records them. `reads`: per segment, the earlier
        segments it reads and whether it reads all of them (identity.depends_on); a done
        segment that reads one that is not done is removed too. Without them, a damaged
        segment is removed with every later one.

        Raises ResourceError if another render holds the lock, and InputError if the
        directory belongs to a different run key (unless `fresh`, which starts over).
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
        if fresh:
            if self.segments.exists():
                shutil.rmtree(self.segments)
            for name in ("clip.mp4", "clip.mp4.seal"):
                (self.root / name).unlink(missing_ok=True)
        else:
            self._check_binding(path, manifest)
        self.segments.mkdir(exist_ok=True)
        for stale in [*self.root.glob(".*.tmp*"), *self.segments.glob(".*.tmp*")]:
            stale.unlink()  # left by a render killed mid-write; we hold the lock now
        self._keep_intact(every_later=reads is None)
        if identities is not None:
            self._keep_matching(identities)
        if reads is not None:
            self._keep_readable(reads)
        self._identities = identities
        self._sweep()
        atomic_write_text(path, json.dumps(manifest | {
            "manifest_version": MANIFEST_VERSION, "updated": time.time()}, indent=2))
        return sum(1 for _ in self.segments.glob("seg_*.json"))

    def _check_binding(self, path: Path, manifest: dict[str, Any]) -> None:
        """The directory's segments were made for this manifest's run key, or there are none."""
        recover = ("add --fresh to discard the run directory and start over, or render to "
                   "another output (-o)")
        if not path.exists():
            if any(self.segments.glob("seg_*.json")):
                raise InputError(f"{path} is missing, so the segments in {self.segments} "
                                 "cannot be matched to this storyboard", recover)
            return
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            old_key = old["run_key"]
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path} is damaged (not a longvid manifest)", recover) from None
        if old_key != manifest["run_key"]:
            raise InputError(
                f"{self.root} holds a render of a different storyboard or settings "
                f"({old.get('storyboard', '?')}, preset {old.get('preset', '?')})", recover)

    def _keep_intact(self, every_later: bool) -> None:
        """Done segments stay done while their files are as their records say; one that is
        not (and, if `every_later`, every one after it or after a segment not done) will be
        rendered again."""
        for record in self.segments.glob("seg_*.json"):
            if not record.stem[4:].isdigit():
                record.unlink()
        if not self._init_intact():
            for kind in _SEGMENT_KINDS:
                segment_file(self.segments, -1, kind).unlink(missing_ok=True)
            damaged = set(self._done_indices())
        else:
            damaged = {i for i in self._done_indices() if not self._segment_intact(i)}
        done = self._done_indices()
        holes = set(range(max(done, default=-1) + 1)) - set(done)  # never done, or removed
        first = min(damaged | holes, default=None)
        for index in done:
            if index in damaged or (every_later and first is not None and index > first):
                self.record_path(index).unlink()

    def _keep_readable(self, reads: Sequence[tuple[tuple[int, ...], bool]]) -> None:
        done = set(self._done_indices())
        for index in done - readable(done, reads):
            self.record_path(index).unlink()

    def _keep_matching(self, identities: tuple[str, ...]) -> None:
        """Done segments stay done where their recorded identity is the plan's."""
        for index, same in self.reusable(identities).items():
            if not same:
                self.record_path(index).unlink()

    def _sweep(self) -> None:
        """Remove every segment file of a segment that is not done (the record went first)."""
        done = set(self._done_indices())
        for path in self.segments.glob("seg_*"):
            match = _SEGMENT_FILE.match(path.name)
            if match and int(match.group(1)[4:]) not in done:
                path.unlink()

    def _done_indices(self) -> list[int]:
        return sorted(int(p.stem[4:]) for p in self.segments.glob("seg_*.json")
                      if p.stem[4:].isdigit())

    def reusable(self, identities: tuple[str, ...]) -> dict[int, bool]:
        """Each done segment (by index): whether its record holds the identity that
        `identities` (a plan's) gives its index. Reads the records only, not the files."""
        found = {}
        for index in self._done_indices():
            try:
                record = json.loads(self.record_path(index).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                record = None
            found[index] = (isinstance(record, dict) and index < len(identities)
                            and record.get("identity") == identities[index])
        return found

    def _init_intact(self) -> bool:
        files = [segment_file(self.segments, -1, k) for k in _SEGMENT_KINDS]
        if not any(p.exists() for p in files):
            return True
        try:
            return intact(self.segments, json.loads(files[1].read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return False

    def _segment_intact(self, index: int) -> bool:
        try:
            record = json.loads(self.record_path(index).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if not isinstance(record, dict):
            return False
        if "files" in record:
            return intact(self.segments, record["files"])
        # a record written before files were sealed: the files exist and the video is whole
        needed = [self.state_path(index), self.memory_path(index)]
        if not all(p.is_file() for p in needed):
            return False
        if not record.get("frames"):
            return True
        from longvid.mux import probe

        try:
            return probe(self.video(index)).frames == record["frames"]
        except InputError:
            return False

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

    def memory_path(self, index: int) -> Path:
        return segment_file(self.segments, index, "memory.safetensors")

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
        """Mark segment `index` done; its video and state must already be in place. The
        record seals them (size and hash), so a later run can tell they are whole."""
        assert self.state_path(index).exists()
        files = [p for p in (self.video(index), self.state_path(index), self.memory_path(index))
                 if p.exists()]
        identity = {} if self._identities is None else {"identity": self._identities[index]}
        atomic_write_text(self.record_path(index),
                          json.dumps(record | identity | {"files": seal(files)}, indent=2))

    def has_init(self) -> bool:
        return self.record_path(-1).exists()

    def commit_init(self, tensors: dict[str, Any]) -> None:
        """The state segment 0 starts from (`extend`); its keyframes must be in place."""
        self.save_state(-1, tensors)
        files = [p for p in (self.state_path(-1), self.memory_path(-1)) if p.exists()]
        atomic_write_text(self.record_path(-1), json.dumps(seal(files), indent=2))

    def sealed(self, path: Path) -> bool:
        """`path` is as `seal_file` left it."""
        try:
            sealed = json.loads(path.with_name(path.name + ".seal").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return intact(path.parent, sealed)

    def seal_file(self, path: Path) -> None:
        atomic_write_text(path.with_name(path.name + ".seal"), json.dumps(seal([path])))
