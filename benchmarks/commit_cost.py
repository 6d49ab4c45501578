"""What committing a causal segment costs at real frame size: the H.264 encode of its
frames and the write of its state, as the segment loop does them (longvid/mux.py
`encode_frames`, longvid/rundir.py `RunDir.save_state`).

    python benchmarks/commit_cost.py [--frames 12 48 96] [--repeats 3]

Encodes smooth moving 832x480 frames (a real segment compresses like this, not like
noise) at crf 18 for each frame count, fits seconds = a + b x frames over the medians,
and writes a `causal-wan` segment's state (9 context, 3 sink and 38 history latents of
16 x 60 x 104, fp32). Prints JSON: per-count medians, the fit, the state write.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import torch

from longvid.mux import encode_frames
from longvid.rundir import RunDir

WIDTH, HEIGHT, FPS, CRF = 832, 480, 16, 18


def frames_of(count: int) -> np.ndarray:
    """Smooth moving gradients (F, H, W, 3) uint8."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    out = np.empty((count, HEIGHT, WIDTH, 3), np.uint8)
    for f in range(count):
        for c in range(3):
            out[f, :, :, c] = (127.5 + 127 * np.sin((x + 7 * f) / (60 + 20 * c)
                                                     + (y - 3 * f) / 90)).astype(np.uint8)
    return out


def timed(work: Callable[[], object], repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        work()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[12, 48, 96])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        encode = {}
        for count in args.frames:
            frames = frames_of(count)
            encode[count] = timed(
                lambda f=frames: encode_frames(f, root / "seg.mp4", FPS, CRF), args.repeats)
        slope, intercept = np.polyfit(list(encode), list(encode.values()), 1)
        run = RunDir(root / "run")
        run.open({"run_key": "bench"})
        h, w = HEIGHT // 8, WIDTH // 8
        state = {"context": torch.randn(1, 16, 9, h, w), "sink": torch.randn(1, 16, 3, h, w),
                 "history": torch.randn(1, 16, 38, h, w)}
        state_s = timed(lambda: run.save_state(0, state), args.repeats)
        state_mib = run.state_path(0).stat().st_size / 2**20
        run.close()
    print(json.dumps({
        "benchmark": "commit_cost", "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "size": f"{WIDTH}x{HEIGHT}", "crf": CRF,
        "encode_median_s": {str(k): round(v, 3) for k, v in encode.items()},
        "encode_fit": {"per_segment_s": round(float(intercept), 3),
                       "per_frame_ms": round(float(slope) * 1000, 2)},
        "state_write_s": round(state_s, 3), "state_mib": round(state_mib, 1)}, indent=2))


if __name__ == "__main__":
    main()
