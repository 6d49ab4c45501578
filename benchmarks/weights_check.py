"""What checking a preset's files before they load costs, and how long a silent Hub holds
a command.

    python benchmarks/weights_check.py                # the check of a Wan-sized snapshot
    python benchmarks/weights_check.py --silent-hub   # also: a Hub that never answers

The snapshot is written in the Hub's cache layout with the sizes of a Wan2.1 diffusers
snapshot: a 16 MiB tokenizer.json and a 4.3 MiB spiece.model (hashed: under
filecheck.HASHED_MAX_BYTES), small configs, and weights whose headers are real but whose
data is a sparse file (11.4 GB UMT5, 2.8 GB transformer, 0.5 GB VAE: only the header is
read). `--silent-hub` runs `longvid models pull` against a socket that takes the
connection and never answers, with the default bounds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from longvid.hub import HubSource, damaged_files

WEIGHTS = {"text_encoder/model.safetensors": 11_400_000_000,
           "transformer/diffusion_pytorch_model.safetensors": 2_840_000_000,
           "vae/diffusion_pytorch_model.safetensors": 508_000_000}


def write_blob(root: Path, name: str, data: bytes | None = None, size: int = 0) -> None:
    """One file of the snapshot: a blob named by its SHA-256 (or, for a sparse weights
    file, by a digest of its name) and the snapshot's link to it."""
    digest = hashlib.sha256(data if data is not None else name.encode()).hexdigest()
    blob = root / "blobs" / digest
    with open(blob, "wb") as f:
        if data is not None:
            f.write(data)
        else:  # a safetensors header for one uint8 tensor of `size` bytes, then a hole
            header = json.dumps({"w": {"dtype": "U8", "shape": [size],
                                       "data_offsets": [0, size]}}).encode()
            f.write(len(header).to_bytes(8, "little") + header)
            f.truncate(8 + len(header) + size)
    link = root / "snapshots" / "main0" / name
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(blob, link.parent), link)


def snapshot(root: Path) -> Path:
    (root / "blobs").mkdir(parents=True)
    vocab = {f"\u2581tok{i}": float(i) for i in range(250_000)}
    tokenizer = json.dumps({"model": {"vocab": vocab}}).encode()
    tokenizer += b" " * max(0, 16 * 2**20 - len(tokenizer))  # 16 MiB, as UMT5's
    write_blob(root, "tokenizer/tokenizer.json", tokenizer)
    write_blob(root, "tokenizer/spiece.model", os.urandom(4_300_000))
    for name in ("model_index.json", "scheduler/scheduler_config.json",
                 "text_encoder/config.json", "transformer/config.json", "vae/config.json"):
        write_blob(root, name, json.dumps({"_class_name": name}).encode())
    for name, size in WEIGHTS.items():
        write_blob(root, name, size=size)
    return root / "snapshots" / "main0"


def silent_hub_seconds() -> float:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "HF_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}"}
    env.pop("LONGVID_HUB_TIMEOUT_S", None)
    with tempfile.TemporaryDirectory() as tmp:
        env["HF_HUB_CACHE"] = tmp
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "longvid", "models", "pull",
                               "skyreels-df-1.3b"], env=env, capture_output=True, text=True,
                              timeout=900)
        seconds = time.perf_counter() - started
    silent.close()
    assert done.returncode == 4, done.stderr
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--silent-hub", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = snapshot(Path(tmp))
        source = HubSource("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "main", ("**",), True)
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            bad = damaged_files(source, folder)
            times.append(time.perf_counter() - started)
            assert bad == [], bad
    print(f"check of a Wan-sized snapshot (10 files, 14.7 GB of weights): median "
          f"{statistics.median(times):.3f} s over {args.runs} runs "
          f"({', '.join(f'{t:.3f}' for t in times)})")
    if args.silent_hub:
        print(f"`models pull` against a Hub that never answers: exit 4 after "
              f"{silent_hub_seconds():.1f} s")


if __name__ == "__main__":
    main()
