"""Does a numpy matrix product slow down the torch work right after it? (the scaling cause)

    OPENBLAS_NUM_THREADS=1 python benchmarks/blas_threads.py   # as `longvid` runs it
    python benchmarks/blas_threads.py                          # numpy's default pool

Times a small torch conv (the size of a tiny-preset decode step) 100 times each,
interleaved: alone, right after the memory bank's eviction product (65 x 768
descriptors, `unit @ unit.T`), and right after a colour conversion (pixels x 3 @
3 x 3). With numpy's default OpenBLAS pool the worker threads keep spinning after
a product and compete with torch's threads on a small CPU; with one BLAS thread
the three medians should match. Prints JSON: median milliseconds per case.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

import numpy as np
import torch

ROUNDS = 100


def main() -> None:
    video = torch.randn(1, 16, 4, 32, 32)  # (B, C, T, H, W)
    conv = torch.nn.Conv3d(16, 32, 3, padding=1)
    descriptors = np.random.default_rng(0).random((65, 768), dtype=np.float32)
    pixels, matrix = np.random.default_rng(1).random((64 * 64 * 8, 3)), np.eye(3)
    before = {"alone": lambda: None, "after_eviction_product": lambda: descriptors @ descriptors.T,
              "after_colour_product": lambda: pixels @ matrix.T}
    times_ms: dict[str, list[float]] = {case: [] for case in before}
    with torch.no_grad():
        for i in range(ROUNDS * len(before)):
            case = list(before)[i % len(before)]
            before[case]()
            t0 = time.perf_counter()
            for _ in range(5):
                conv(video)
            times_ms[case].append((time.perf_counter() - t0) * 1000)
    print(json.dumps({
        "benchmark": "blas_threads", "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "numpy default"),
        "torch_threads": torch.get_num_threads(),
        "median_ms": {case: round(statistics.median(v), 1) for case, v in times_ms.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
