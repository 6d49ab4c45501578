"""Is a downloaded or cached file whole? Checked from its structure (and, for a small file
of a Hub cache, against the hash its blob is named by).

A download cut short, a disk that filled while a file was copied, or a hand-made copy
of a Hub cache leave files that a loader reports as a bug deep inside a library
(`SafetensorError: incomplete metadata`, `JSONDecodeError`). `damage(path)` says in
one line why a file of a format longvid loads cannot be whole, or None:

- `.safetensors`: the 8-byte header length, a JSON header of tensors, and data offsets
  that cover the rest of the file exactly (as safetensors itself requires);
- `.gguf`: gguf's own reader parses it, and every tensor's data lies inside the file;
- `.json`: it parses;
- `.pt` / `.pth`: a zip archive (torch's format) whose directory at the end is there;
  a legacy pickle file is left to `torch.load(weights_only=True)`;
- any file of a Hub cache up to HASHED_MAX_BYTES (configs, tokenizers, whatever their
  format): its bytes against the hash its blob is named by.

Reading a header costs microseconds; the small files are the cost: the check of a
Wan2.1-sized snapshot takes about 0.2 s (benchmarks/weights_check.py,
docs/performance.md). Torch-free: `gguf` is imported only for a GGUF, huggingface_hub
only for a Hub blob.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit on the JSON header
# a Hub blob up to this size is hashed too (configs, tokenizers: ~25 MB for a Wan
# snapshot); a larger one (weights) is checked from its structure only
HASHED_MAX_BYTES = 64 * 2**20
_HEX = frozenset("0123456789abcdef")


def damage(path: Path) -> str | None:
    """Why `path` cannot be a whole file of its format, or None (whole, or a format this
    does not check)."""
    check = _CHECKS.get(path.suffix.lower())
    try:
        return (check(path) if check else None) or _hub_blob(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"


def _hub_blob(path: Path) -> str | None:
    """A small file in a Hub cache against the hash its blob is named by (the sha256 of
    an LFS file, the git hash of any other), whatever its format."""
    blob = Path(os.path.realpath(path))
    if blob.parent.name != "blobs" or len(blob.name) not in (40, 64) \
            or not _HEX.issuperset(blob.name) or blob.stat().st_size > HASHED_MAX_BYTES:
        return None
    from huggingface_hub.utils.sha import git_hash, sha_fileobj

    if len(blob.name) == 64:
        with blob.open("rb") as f:
            digest = sha_fileobj(f).hex()
    else:
        digest = git_hash(blob.read_bytes())
    return None if digest == blob.name else "its bytes differ from the Hub's hash of the file"


def _safetensors(path: Path) -> str | None:
    read = safetensors_header(path)
    if isinstance(read, str):
        return read
    header, length = read
    ends: list[int] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) for o in offsets)):
            return f"not a safetensors file (tensor {name!r} has no data offsets)"
        ends.append(offsets[1])
    size = path.stat().st_size
    expected = 8 + length + max(ends, default=0)
    if size < expected:
        return f"truncated: {size:,} of {expected:,} bytes"
    if size > expected:
        return f"{size:,} bytes where its header describes {expected:,}"
    return None


def safetensors_header(path: Path) -> tuple[dict[str, Any], int] | str:
    """(the JSON header of a safetensors file, its length in bytes), or why there is none."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"truncated: {size} bytes, not even a safetensors header"
        length = struct.unpack("<Q", head)[0]
        if length > MAX_HEADER_BYTES:
            return "not a safetensors file (no header at its start)"
        if 8 + length > size:
            return "truncated inside its header"
        text = f.read(length)
    try:
        header = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return "not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict):
        return "not a safetensors file (its header is not a table of tensors)"
    return header, length


def _gguf(path: Path) -> str | None:
    from gguf import GGUFReader

    size = path.stat().st_size
    try:
        reader = GGUFReader(path)
    except Exception as exc:  # noqa: BLE001 - gguf raises ValueError, IndexError, ... on damage
        return f"not a whole GGUF file ({type(exc).__name__}: {exc})"
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    return f"truncated: {size:,} of {end:,} bytes" if end > size else None


def _json(path: Path) -> str | None:
    try:
        json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        return f"not valid JSON ({exc})"
    return None


def _torch_archive(path: Path) -> str | None:
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        return None  # torch's legacy pickle format: torch.load(weights_only=True) judges it
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except zipfile.BadZipFile:
        return "truncated or damaged (its zip directory is missing)"
    return None


_CHECKS = {".safetensors": _safetensors, ".gguf": _gguf, ".json": _json,
           ".pt": _torch_archive, ".pth": _torch_archive}
