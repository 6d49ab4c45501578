"""Does a segment cost the same at minute 10 as at second 10? Render 4, 16 and 64 segments.

    python benchmarks/scaling.py [--segments 4 16 64] [--size 32] [--threads 1] [--json out.json]

Each length is a fresh `longvid render` of a generated storyboard on the tiny preset:
places visited in turn (harbour, market, forest), joined by cuts, every return to the
harbour with `recall`, so the memory bank fills, evicts and is queried all along.
Reports, per length: wall time, seconds per full-size continuing segment (the first
and the last such segment, and the medians of the first and last three, overall
and grouped by how many recalled keyframes the window held, since those add
tokens), the render process's peak RSS, and how many CPUs other processes kept
busy meanwhile (on a small shared machine, the usual reason a late segment is
slower). Segments of the same size should cost the same however long the video
is, and peak RSS should stop growing once the bank is full.
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

from longvid.memory.bank import DEFAULT_CAPACITY

REPO = Path(__file__).resolve().parent.parent
PLACES = ("a quiet harbour at dusk", "a busy night market", "a misty pine forest")
_CHILD = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(done.stderr)
print(done.stdout.strip())
use = resource.getrusage(resource.RUSAGE_CHILDREN)
print(use.ru_maxrss, use.ru_utime + use.ru_stime)
sys.exit(done.returncode)
"""


def storyboard(shots: int, size: int) -> str:
    lines = ["version: 1", "title: scaling", "preset: tiny", f"resolution: {size}x{size}",
             "seed: 1", "shots:"]
    for i in range(shots):
        place = i % len(PLACES)
        extra = ", transition: cut" if i else ""
        if place == 0 and i:
            extra += ", recall: [s0]"
        lines.append(f"  - {{id: s{i}, duration: 6s, prompt: {PLACES[place]!r}{extra}}}")
    return "\n".join(lines) + "\n"


def fitting_storyboard(segments: int, size: int, folder: Path) -> tuple[Path, int]:
    """The shortest generated storyboard whose plan has at least `segments` segments."""
    from longvid.render import load_job

    shots = 1
    while True:
        path = folder / f"scaling-{segments}.yaml"
        path.write_text(storyboard(shots, size))
        _, _, plan = load_job(path, None)
        if len(plan.segments) >= segments:
            return path, len(plan.segments)
        shots += 1


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy since boot (Linux; 0 elsewhere)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def measure(segments: int, size: int, folder: Path, threads: int) -> dict:
    path, planned = fitting_storyboard(segments, size, folder)
    out = folder / f"scaling-{segments}.mp4"
    t0, busy0 = time.perf_counter(), busy_cpu_s()
    done = subprocess.run([sys.executable, "-c", _CHILD, sys.executable, "-m", "longvid",
                           "render", str(path), "--fresh", "--json", "-o", str(out)],
                          capture_output=True, text=True, check=True,
                          env=os.environ | ({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    wall = time.perf_counter() - t0
    peak_kib, render_cpu_s = done.stdout.strip().splitlines()[-1].split()
    # other processes' CPU use during the render: on a small shared machine it, not the
    # render, is what makes a late segment slower; report it so a reading can be judged
    others_cpus = max(busy_cpu_s() - busy0 - float(render_cpu_s), 0.0) / wall
    sidecar = json.loads(out.with_suffix(".json").read_text())
    from longvid.render import load_job

    _, _, plan = load_job(path, None)
    full = max(s.num_latents for s in plan.segments if s.context_latents)
    pairs = [(rec, seg) for rec, seg in zip(sidecar["segments"], plan.segments, strict=True)
             if seg.context_latents and seg.num_latents == full]
    steady = [rec["seconds"] for rec, _ in pairs]
    by_memory = {}  # recalled latents change the window's size: compare like with like
    for m in sorted({len(rec["memory"]) for rec, _ in pairs}):
        times = [rec["seconds"] for rec, _ in pairs if len(rec["memory"]) == m]
        by_memory[str(m)] = {"segments": len(times),
                             "first3_median_s": statistics.median(times[:3]),
                             "last3_median_s": statistics.median(times[-3:]),
                             "last_vs_first": round(statistics.median(times[-3:])
                                                    / statistics.median(times[:3]), 3)}
    bank = out.with_suffix(".run") / "segments"
    return {"requested": segments, "segments": planned, "video_s": round(plan.duration_s, 1),
            "wall_s": round(wall, 1),
            "full_segments": len(steady), "first_full_s": steady[0], "last_full_s": steady[-1],
            "first3_median_s": statistics.median(steady[:3]),
            "last3_median_s": statistics.median(steady[-3:]),
            "last_vs_first": round(statistics.median(steady[-3:])
                                   / statistics.median(steady[:3]), 3),
            "by_recalled_latents": by_memory,
            "peak_rss_mib": round(int(peak_kib) / 1024, 1),
            "other_processes_cpus": round(others_cpus, 2),
            "keyframes_on_disk": sum(1 for _ in bank.glob("seg_*.memory.safetensors")) * 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--size", type=int, default=32, help="square frame side in pixels")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the render (0: torch's default). One by default: "
                             "on a small shared VM two threads' placement flips a segment's "
                             "cost between two levels (0.16 and 0.25 s here), which hides the "
                             "trend this benchmark looks for")
    parser.add_argument("--repeats", type=int, default=1,
                        help="renders per length; the summary takes the median of their ratios")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(n, args.size, Path(tmp), args.threads) | {"repeat": r}
                for n in args.segments for r in range(args.repeats)]
    summary = []
    for n in args.segments:
        mine = [row for row in rows if row["requested"] == n]
        summary.append({"segments": mine[0]["segments"],
                        "last_vs_first_median": statistics.median(r["last_vs_first"] for r in mine),
                        "peak_rss_mib_max": max(r["peak_rss_mib"] for r in mine)})
    result = {"benchmark": "scaling", "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
              "python": platform.python_version(), "size_px": args.size,
              "torch_threads": args.threads or "default",
              "bank_capacity_keyframes": DEFAULT_CAPACITY, "summary": summary,
              "runs": rows}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
