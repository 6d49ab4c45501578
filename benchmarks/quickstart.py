"""Time the README's quickstart render (storyboards/quickstart.yaml on the procworld preset).

    python benchmarks/quickstart.py [--runs 3] [--json out.json]

Each run is a fresh `longvid render ... --fresh` in a new process, so model build,
imports, generation, encoding and the join are all counted, as a user sees them.
Prints the machine, each wall time and the median, and the median wall time of
`longvid plan` on the same storyboard (5 runs; it must stay well under a second),
and the last render's own split from its sidecar JSON (denoise, decode, and time
outside generation: imports, model build and the join).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    storyboard = REPO / "storyboards" / "quickstart.yaml"
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "longvid", "render", str(storyboard),
                            "--fresh", "-q", "-o", str(Path(tmp) / "q.mp4")], check=True)
            times.append(time.perf_counter() - t0)
        sidecar = json.loads((Path(tmp) / "q.json").read_text())  # the last run's own timings
    plan_times = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "longvid", "plan", str(storyboard)], check=True,
                       capture_output=True)
        plan_times.append(time.perf_counter() - t0)
    result = {"benchmark": "quickstart", "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
              "python": platform.python_version(), "runs_s": [round(t, 2) for t in times],
              "median_s": round(statistics.median(times), 2),
              "plan_median_s": round(statistics.median(plan_times), 3),
              "last_run": {
                  "generate_s": sidecar["timings"]["generate_s"],
                  "outside_generation_s": round(sidecar["timings"]["wall_s"]
                                                - sidecar["timings"]["generate_s"], 2),
                  "denoise_s": round(sum(s["stages_s"]["denoise"]
                                         for s in sidecar["segments"]), 2),
                  "decode_s": round(sum(s["stages_s"]["decode"] for s in sidecar["segments"]), 2),
              }}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
