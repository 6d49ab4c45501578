"""Write a model folder into a Hugging Face cache in the Hub's own layout (blobs,
snapshots/<commit>/... symlinks, refs/<revision>), so that huggingface_hub finds it
exactly as it finds a real download. Used by the tests and by gpu_proof.py.

Blobs are named by their SHA-256, as on the Hub; `fast=True` names them by a digest of
path and size instead (huggingface_hub resolves the symlinks and never checks a blob's
content), which saves hashing gigabytes of random weights."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def write_hub_snapshot(cache: Path, repo: str, source: Path, revision: str = "main", *,
                       fast: bool = False) -> Path:
    files = sorted(p for p in source.rglob("*") if p.is_file())
    commit = hashlib.sha1("".join(str(p.relative_to(source)) for p in files).encode()).hexdigest()
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    for path in files:
        digest = hashlib.sha256()
        if fast:
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
