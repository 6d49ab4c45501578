"""`longvid bench memory [--quick] [--json] [--plot PNG]`: the ProcMem memory benchmark."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from longvid.cli._ui import guarded

bench_app = typer.Typer(no_args_is_help=True, help="Offline benchmarks with exact ground truth.")


def _print_human(r: dict[str, Any]) -> None:
    print(f"ProcMem on {r['config']['test_worlds']} held-out worlds, "
          f"{r['config']['trajectories']} trajectories per region, "
          f"{r['config']['euler_steps']} Euler steps ({r['wall_s']:.0f} s)")
    print(f"{'variant':<8} {'region':<8} {'PSNR dB':>8} {'SSIM':>6}")
    for variant in ("window", "memory"):
        for region in ("revisit", "novel"):
            m = r[variant][region]
            print(f"{variant:<8} {region:<8} {m['psnr']:>8.2f} {m['ssim']:>6.3f}")
    print("retention (revisit PSNR dB by frames since last seen):")
    for variant in ("window", "memory"):
        curve = "  ".join(f"{k}: {v:.1f}" for k, v in r[variant]["retention"].items())
        print(f"  {variant:<7} {curve}")
    ret = r["retrieval"]
    print(f"retrieval precision@1: descriptor {ret['descriptor']['precision_at_1']:.3f}, "
          f"pose oracle {ret['oracle']['precision_at_1']:.3f} "
          f"({ret['oracle']['queries']} queries)")
    gain, goal = r["gain_db"], r["goal"]
    print(f"memory - window: revisit {gain['revisit']:+.2f} dB, novel {gain['novel']:+.2f} dB; "
          f"goal (>= {goal['revisit_gain_db_min']:.0f} dB, novel within "
          f"{goal['novel_gap_db_max']:.0f} dB) {'met' if goal['met'] else 'NOT met'}")


@bench_app.command("memory")
def memory(
    quick: Annotated[bool, typer.Option("--quick", help="Fewer worlds and trajectories, "
                                        "8 Euler steps: under a minute on 2 CPU cores.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also draw the retention curve "
                                              "to this PNG.")] = None,
) -> None:
    """Score the shipped window and memory world models on held-out ProcMem worlds.

    Revisit PSNR/SSIM (out-and-back), the novel control (straight line), the
    retention curve, and the bank descriptor's retrieval precision vs the pose oracle.
    """

    def body() -> None:
        from longvid.bench.procmem import QUICK, BenchConfig, run

        def log(line: str) -> None:
            if not as_json:
                print(line, file=sys.stderr, flush=True)

        result = run(QUICK if quick else BenchConfig(), log=log)
        if plot is not None:
            from longvid.bench.plot import draw_retention

            draw_retention(result, plot)
        if as_json:
            print(json.dumps(result, indent=2))
        else:
            _print_human(result)
        sys.stdout.flush()

    guarded(body, as_json)
