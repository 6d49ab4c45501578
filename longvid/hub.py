"""Checkpoints from the Hugging Face Hub: the preset's files only, safetensors or GGUF only.

Paths and the offline switch are read at call time (HF_HUB_CACHE, HF_HOME,
HF_HUB_OFFLINE, HF_TOKEN), so a process can be pointed at another cache. A render
never downloads silently when offline: it exits 4 with the `longvid models pull`
command to run. Every file a preset loads is checked whole first (longvid.filecheck: a
download cut short, a damaged copy): online, only that file is fetched again; offline,
exit 4 names it and the command that fixes it.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longvid.errors import InputError, ResourceError
from longvid.filecheck import damage

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


@dataclass(frozen=True)
class HubSource:
    repo: str
    revision: str
    files: tuple[str, ...]  # glob patterns relative to the repo root
    verified: bool  # False: a community repo id nobody here could check


# huggingface_hub sends its API calls (a repo's revision, its file tree) with no timeout:
# a network that takes the connection and never answers (a dropped route, a stuck proxy)
# would hold a render or a pull forever. Every request gets these bounds instead (a read
# is one wait for bytes, so a large download is not cut). A Hub that takes the connection
# and never answers is exit 4 after about 35 s (docs/performance.md);
# LONGVID_HUB_TIMEOUT_S sets the read bound.
HUB_CONNECT_TIMEOUT_S = 15.0
HUB_READ_TIMEOUT_S = 30.0
# what the local disk says when a download cannot be written (not the Hub's fault)
_LOCAL_REFUSALS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES,
                   errno.EPERM}


def hub_cache_dir() -> Path:
    if cache := os.environ.get("HF_HUB_CACHE"):
        return Path(cache)
    home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    return Path(home) / "hub"


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def bound_waits() -> None:
    """Give every request of huggingface_hub's shared HTTP client finite timeouts (it may
    make a new client, so this is called before each use of the network)."""
    from huggingface_hub.utils import get_session

    hub_timeout_s()  # a bad LONGVID_HUB_TIMEOUT_S is said here, before any request
    hooks = get_session().event_hooks
    if _finite_timeouts not in hooks.setdefault("request", []):
        hooks["request"].append(_finite_timeouts)


def hub_timeout_s() -> float:
    """How long the Hub may stay silent in a request: LONGVID_HUB_TIMEOUT_S, or 30 s."""
    text = os.environ.get("LONGVID_HUB_TIMEOUT_S", "").strip()
    try:
        seconds = float(text) if text else HUB_READ_TIMEOUT_S
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < 86400:  # NaN fails this too
        raise InputError(f"LONGVID_HUB_TIMEOUT_S={text} is not a number of seconds",
                         "set it to the seconds the Hub may stay silent (like 60), or unset it")
    return seconds


def _finite_timeouts(request: Any) -> None:  # an httpx request, before it is sent
    read_s = hub_timeout_s()
    bounds = {"connect": min(read_s, HUB_CONNECT_TIMEOUT_S), "read": read_s, "write": read_s,
              "pool": read_s}
    asked = request.extensions.get("timeout") or {}
    request.extensions["timeout"] = {key: asked.get(key) if asked.get(key) is not None
                                     else bound for key, bound in bounds.items()}


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
    if folder is not None:
        folder = whole(source, folder, download=download, offline_hint=(
            f"run `longvid models pull {preset_name}` with network access: it fetches them "
            "again"))
    if folder is None:
        if is_offline() or not download:
            raise ResourceError(
                f"the weights of preset {preset_name!r} ({source.repo}@{source.revision}) are "
                f"not in the Hub cache at {hub_cache_dir()}",
                f"run `longvid models pull {preset_name}` with network access"
                + (" (HF_HUB_OFFLINE is set)" if is_offline() else ""))
        folder = download_snapshot(source)
        if absent := _missing(folder, source):
            raise ResourceError(
                f"{source.repo}@{source.revision} has no file matching "
                f"{', '.join(absent)}", "check the preset's `hub.files` against the repo's "
                "files at that revision")
        if bad := damaged_files(source, folder):
            raise ResourceError(
                f"{source.repo}@{source.revision} was downloaded but {_listing(bad)}",
                "check the disk and HF_ENDPOINT, then run the same command again")
    for path in folder.rglob("*"):
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise InputError(f"{path.name} in {source.repo} is a pickle checkpoint; refused",
                             "longvid loads only .safetensors and .gguf files")
    return folder


def damaged_files(source: HubSource, folder: Path) -> list[tuple[str, str]]:
    """(path in the repo, why) for each of the preset's files in `folder` that cannot be
    whole (cut short, not of its format, a small file unlike its hash): longvid.filecheck."""
    return [(name, why) for name, _ in snapshot_files(source, folder)
            if (why := damage(folder / name)) is not None]


def _listing(bad: list[tuple[str, str]]) -> str:
    return ("these files are damaged: " if len(bad) > 1 else "a file is damaged: ") + \
        "; ".join(f"{name} ({why})" for name, why in bad)


def whole(source: HubSource, folder: Path, *, download: bool, offline_hint: str) -> Path:
    """`folder` once every file of the source in it is whole: a damaged file is fetched
    again (only that file), or, offline or without `download`, is exit 4 naming it."""
    bad = damaged_files(source, folder)
    if not bad:
        return folder
    if is_offline() or not download:
        raise ResourceError(
            f"{source.repo}@{source.revision} in the Hub cache at {hub_cache_dir()}: "
            f"{_listing(bad)}",
            offline_hint + (" (HF_HUB_OFFLINE is set)" if is_offline() else ""))
    fetch_again(source, [name for name, _ in bad])
    if still := damaged_files(source, folder):
        raise ResourceError(f"{source.repo}@{source.revision} was fetched again but "
                            f"{_listing(still)}",
                            "check the disk and HF_ENDPOINT, then run the same command again")
    return folder


def fetch_again(source: HubSource, names: list[str]) -> None:
    """Download `names` of the source anew over their damaged copies in the cache (the
    copy is replaced only once the new one is complete)."""
    from huggingface_hub import hf_hub_download

    sizes = {f.filename: f.file_size or 0 for f in remote_files(source)}
    _check_room(sum(sizes.get(name, 0) for name in names), source.repo)
    for name in names:
        print(f"{source.repo}: {name} in the Hub cache is damaged; fetching it again",
              file=sys.stderr, flush=True)
        try:
            hf_hub_download(source.repo, name, revision=source.revision,
                            cache_dir=hub_cache_dir(), force_download=True)
        except Exception as exc:  # noqa: BLE001 - any transport or Hub error
            raise _unreachable(source, exc) from None


def _unreachable(source: HubSource, exc: Exception) -> ResourceError:
    return fetch_failed(f"{source.repo}@{source.revision}", exc)


def fetch_failed(what: str, exc: Exception) -> ResourceError:
    """The error for a download of `what` that failed: the local disk's refusal (full,
    over quota, read-only), or else the Hub out of reach."""
    if isinstance(exc, OSError) and exc.errno in _LOCAL_REFUSALS:
        return ResourceError(
            f"cannot write {what} into the Hub cache at {hub_cache_dir()}: {exc.strerror}",
            "free disk space there (or fix its permissions), or point HF_HUB_CACHE at another "
            "disk, then run the same command again: the download resumes")
    # the Hub's own answer (a missing repo, a gated one, ...), which huggingface_hub may
    # wrap (a dry run's DryRunError); else the error as raised
    chain: list[BaseException] = [exc]
    while (inner := chain[-1].__cause__) is not None and len(chain) < 8:
        chain.append(inner)
    cause = next((e for e in chain if type(e).__name__ in _HUB_HINTS), exc)
    said = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return ResourceError(f"cannot fetch {what} from the Hub: {type(cause).__name__}: {said}",
                         _HUB_HINTS.get(type(cause).__name__, _NETWORK_HINT))


_NETWORK_HINT = ("check the network, HF_ENDPOINT and HF_TOKEN (gated repos need a token), or "
                 "pull on a machine with network and copy the Hub cache over")
# what the Hub's own answers mean for a preset (huggingface_hub's error classes, by name)
_HUB_HINTS = {
    "RepositoryNotFoundError": "the repo does not exist, or is private: check the preset's "
                               "`hub.repo`, and set HF_TOKEN for a private repo",
    "GatedRepoError": "the repo is gated: accept its terms on its Hub page, then set HF_TOKEN "
                      "to a token of that account",
    "RevisionNotFoundError": "the repo has no such revision: check the preset's "
                             "`hub.revision` (a branch, tag or commit)",
    "RemoteEntryNotFoundError": "the repo has no such file at that revision: check the "
                                "preset's `hub.files`",
    "EntryNotFoundError": "the repo has no such file at that revision: check the preset's "
                          "`hub.files`",
}


def download_snapshot(source: HubSource) -> Path:
    """Download the preset's files (resumable; honours HF_TOKEN) into the Hub cache.
    huggingface_hub shows its progress bars on stderr meanwhile (files fetched, bytes
    downloaded, all files together); HF_HUB_DISABLE_PROGRESS_BARS=1 turns them off."""
    from huggingface_hub import snapshot_download

    check_disk_space([source])
    bound_waits()
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
    _check_room(needed, " + ".join(s.repo for s in sources))
    return listings


def _check_room(needed: int, repos: str) -> None:
    free = shutil.disk_usage(_existing_parent(hub_cache_dir())).free
    if needed > free:
        raise ResourceError(
            f"{repos} needs {needed / 2**30:.1f} GiB but {hub_cache_dir()} has "
            f"{free / 2**30:.1f} GiB free", "free some disk, or point HF_HOME elsewhere")


def snapshot_files(source: HubSource, folder: Path) -> list[tuple[str, int]]:
    """(path in the repo, bytes) of the preset's files in a local snapshot; other files
    the repo shares with other presets are left out."""
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return [(name, (folder / name).stat().st_size) for name in names
            if any(fnmatch.fnmatch(name, pattern) for pattern in source.files)]


def remote_files(source: HubSource) -> list:
    """What a pull would fetch (name and size), asked of the Hub; network required."""
    from huggingface_hub import snapshot_download

    bound_waits()
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
