"""Checkpoints from the Hugging Face Hub: the preset's files only, safetensors or GGUF only.

Paths and the offline switch are read at call time (HF_HUB_CACHE, HF_HOME,
HF_HUB_OFFLINE, HF_TOKEN), so a process can be pointed at another cache. A render
never downloads silently when offline: it exits 4 with the `longvid models pull`
command to run.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from longvid.errors import InputError, ResourceError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


@dataclass(frozen=True)
class HubSource:
    repo: str
    revision: str
    files: tuple[str, ...]  # glob patterns relative to the repo root
    verified: bool  # False: a community repo id nobody here could check


def hub_cache_dir() -> Path:
    if cache := os.environ.get("HF_HUB_CACHE"):
        return Path(cache)
    home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    return Path(home) / "hub"


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def refuse_pickles(source: HubSource) -> None:
    """Only safetensors and GGUF are loaded; a preset naming a pickle checkpoint is refused."""
    for pattern in source.files:
        if pattern.lower().endswith(PICKLE_SUFFIXES):
            raise InputError(
                f"{source.repo}: {pattern} is a pickle checkpoint, which can run code when "
                "loaded; longvid loads only .safetensors and .gguf",
                "point the preset at the repo's safetensors (or GGUF) files")


def _missing(snapshot: Path, source: HubSource) -> list[str]:
    present = [str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()]
    return [pat for pat in source.files if not fnmatch.filter(present, pat)]


def cached_snapshot(source: HubSource) -> Path | None:
    """The local folder holding every file the preset needs, or None."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(source.repo, revision=source.revision,
                                        allow_patterns=list(source.files),
                                        cache_dir=hub_cache_dir(), local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        return None
    return folder if folder.is_dir() and not _missing(folder, source) else None


def resolve(source: HubSource, preset_name: str, *, download: bool = True) -> Path:
    """Local snapshot of the preset's files: from the cache, else downloaded (if allowed)."""
    refuse_pickles(source)
    folder = cached_snapshot(source)
    if folder is None:
        if is_offline() or not download:
            raise ResourceError(
                f"the weights of preset {preset_name!r} ({source.repo}@{source.revision}) are "
                f"not in the Hub cache at {hub_cache_dir()}",
                f"run `longvid models pull {preset_name}` with network access"
                + (" (HF_HUB_OFFLINE is set)" if is_offline() else ""))
        folder = download_snapshot(source)
    for path in folder.rglob("*"):
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise InputError(f"{path.name} in {source.repo} is a pickle checkpoint; refused",
                             "longvid loads only .safetensors and .gguf files")
    return folder


def _unreachable(source: HubSource, exc: Exception) -> ResourceError:
    return ResourceError(f"cannot fetch {source.repo}@{source.revision} from the Hub: "
                         f"{type(exc).__name__}: {exc}",
                         "check the network, HF_ENDPOINT and HF_TOKEN (gated repos need a token), "
                         "or pull on a machine with network and copy the Hub cache over")


def download_snapshot(source: HubSource) -> Path:
    """Download the preset's files (resumable; honours HF_TOKEN) into the Hub cache.
    huggingface_hub shows its progress bars on stderr meanwhile (files fetched, bytes
    downloaded, all files together); HF_HUB_DISABLE_PROGRESS_BARS=1 turns them off."""
    from huggingface_hub import snapshot_download

    check_disk_space([source])
    try:
        return Path(snapshot_download(source.repo, revision=source.revision,
                                      allow_patterns=list(source.files),
                                      cache_dir=hub_cache_dir()))
    except Exception as exc:  # noqa: BLE001 - any transport or Hub error: the Hub is out of reach
        raise _unreachable(source, exc) from None


def check_disk_space(sources: list[HubSource]) -> list[list]:
    """The files still to fetch, from every source together, fit on the cache's disk.
    Returns each source's `remote_files` listing, asked of the Hub once here."""
    listings = [remote_files(s) for s in sources]
    needed = sum(f.file_size or 0 for files in listings for f in files if f.will_download)
    free = shutil.disk_usage(_existing_parent(hub_cache_dir())).free
    if needed > free:
        repos = " + ".join(s.repo for s in sources)
        raise ResourceError(
            f"{repos} needs {needed / 2**30:.1f} GiB but {hub_cache_dir()} has "
            f"{free / 2**30:.1f} GiB free", "free some disk, or point HF_HOME elsewhere")
    return listings


def snapshot_files(source: HubSource, folder: Path) -> list[tuple[str, int]]:
    """(path in the repo, bytes) of the preset's files in a local snapshot; other files
    the repo shares with other presets are left out."""
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return [(name, (folder / name).stat().st_size) for name in names
            if any(fnmatch.fnmatch(name, pattern) for pattern in source.files)]


def remote_files(source: HubSource) -> list:
    """What a pull would fetch (name and size), asked of the Hub; network required."""
    from huggingface_hub import snapshot_download

    try:
        return list(snapshot_download(source.repo, revision=source.revision,
                                      allow_patterns=list(source.files),
                                      cache_dir=hub_cache_dir(), dry_run=True))
    except Exception as exc:  # noqa: BLE001 - any transport or Hub error: the Hub is out of reach
        raise _unreachable(source, exc) from None


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
