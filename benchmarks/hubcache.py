"""Write a model folder into a Hugging Face cache in the Hub's own layout (blobs,
snapshots/<commit>/... symlinks, refs/<revision>), so that huggingface_hub finds it
exactly as it finds a real download. Used by the tests and by gpu_proof.py.

Blobs are named by their SHA-256, as on the Hub; `fast=True` names a file over
longvid.filecheck.HASHED_MAX_BYTES by a digest of path and size instead (neither
huggingface_hub nor longvid hashes a blob that large), which saves hashing gigabytes of
random weights."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from longvid.filecheck import HASHED_MAX_BYTES


def write_hub_snapshot(cache: Path, repo: str, source: Path, revision: str = "main", *,
                       fast: bool = False) -> Path:
    files = sorted(p for p in source.rglob("*") if p.is_file())
    commit = hashlib.sha1("".join(str(p.relative_to(source)) for p in files).encode()).hexdigest()
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    for path in files:
        digest = hashlib.sha256()
        if fast and path.stat().st_size > HASHED_MAX_BYTES:
            digest.update(f"{repo}/{path.relative_to(source)}:{path.stat().st_size}".encode())
        else:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    digest.update(block)
        blob = root / "blobs" / digest.hexdigest()
        if not blob.exists():  # move, not copy: checkpoints may be gigabytes
            shutil.move(path, blob)
        link = snapshot / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / revision).write_text(commit)
    return snapshot


def replace_cached_file(link: Path, data: bytes) -> None:
    """Another version of one file of a cached snapshot, as a download of it lands: a blob
    of its own, named by its SHA-256, with the snapshot's link pointed at it."""
    blob = Path(os.path.realpath(link)).parent / hashlib.sha256(data).hexdigest()
    blob.write_bytes(data)
    link.unlink()
    os.symlink(os.path.relpath(blob, link.parent), link)
