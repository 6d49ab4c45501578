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
    print(f"{'variant':<21} {'tokens':>6} {'pose-free':>9} {'revisit dB':>10} {'SSIM':>6} "
          f"{'novel dB':>8} {'SSIM':>6} {'ms/frame':>8}")
    for name, v in r["variants"].items():
        print(f"{name:<21} {v['context_tokens']:>6} {'yes' if v['pose_free'] else 'no':>9} "
              f"{v['revisit']['psnr']:>10.2f} {v['revisit']['ssim']:>6.3f} "
              f"{v['novel']['psnr']:>8.2f} {v['novel']['ssim']:>6.3f} {v['ms_per_frame']:>8.1f}")
    if r.get("variants_missing"):
        print(f"not trained (no weights): {', '.join(r['variants_missing'])}")
    print("retention (revisit PSNR dB by frames since last seen):")
    for name, v in r["variants"].items():
        curve = "  ".join(f"{k}: {x:.1f}" for k, x in v["retention"].items())
        print(f"  {name:<21} {curve}")
    ret = r["retrieval"]
    print(f"retrieval precision@1: descriptor {ret['descriptor']['precision_at_1']:.3f}, "
          f"pose oracle {ret['oracle']['precision_at_1']:.3f} "
          f"({ret['oracle']['queries']} queries)")
    gain, goal = r["gain_db"], r["goal"]
    print(f"memory - window: revisit {gain['revisit']:+.2f} dB, novel {gain['novel']:+.2f} dB; "
          f"goal (>= {goal['revisit_gain_db_min']:.0f} dB, novel within "
          f"{goal['novel_gap_db_max']:.0f} dB) {'met' if goal['met'] else 'NOT met'}")
    pf = r["pose_free_goal"]
    if pf["best"] is not None:
        print(f"best pose-free: {pf['best']}: {pf['revisit_over_window_db']:+.2f} dB over the "
              f"window, {pf['revisit_under_oracle_db']:.2f} dB under the pose oracle, novel "
              f"{pf['novel_vs_window_db']:+.2f} dB; goal {'met' if pf['met'] else 'NOT met'}")


@bench_app.command("memory")
def memory(
    quick: Annotated[bool, typer.Option("--quick", help="Fewer worlds and trajectories, "
                                        "8 Euler steps: under a minute on 2 CPU cores.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also draw the retention curve "
                                              "to this PNG.")] = None,
) -> None:
    """Score every shipped ProcMem world model variant on held-out worlds.

    Revisit PSNR/SSIM (out-and-back), the novel control (straight line), the
    retention curve to a 64-frame gap, per-variant cost, and the bank descriptor's
    retrieval precision vs the pose oracle.
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


def _print_revisit(r: dict[str, Any]) -> None:
    print(f"revisit ({r['source']}, {len(r['clips'])} clips, metric {r['metric']}; "
          f"{r['wall_s']:.0f} s)")
    print(f"{'preset':<24} {'PSNR dB':>8} {'SSIM':>6} {'LPIPS':>6}")
    for name, m in r["presets"].items():
        lp = f"{m['lpips']:>6.3f}" if m["lpips"] is not None else f"{'-':>6}"
        print(f"{name:<24} {m['psnr']:>8.2f} {m['ssim']:>6.3f} {lp}")


@bench_app.command("revisit")
def revisit(
    folder: Annotated[Path | None, typer.Argument(
        help="MAG-Bench folder: .mp4 clips and a CSV (video_path, raw_caption, "
             "duration(sec)). Without it: procedural leave-and-return clips.")] = None,
    preset: Annotated[list[str] | None, typer.Option(
        "--preset", "-p", help="Preset name or .yaml path; repeat to compare presets.")
                      ] = None,
    csv_file: Annotated[Path | None, typer.Option(
        "--csv", help="The clips' CSV (default: the only .csv in FOLDER).")] = None,
    clips: Annotated[int | None, typer.Option(
        "--clips", min=1, help="Use only the first N clips.")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the continuations.")] = 0,
    quick: Annotated[bool, typer.Option("--quick", help="2 short procedural clips (or the "
                                        "first 2 of FOLDER): a smoke test.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """MAG-Bench's revisit protocol for any preset: the first 75 % of each clip is context,
    the preset generates the rest, each generated frame is scored against its closest
    ground-truth frame after the switch (find-match). Mean PSNR/SSIM per preset."""

    def body() -> None:
        import time

        from longvid.bench.magbench import folder_clips, preset_continuation
        from longvid.bench.revisit import QUICK_CLIPS, procedural_for, run
        from longvid.presets import load_preset

        def log(line: str) -> None:
            if not as_json:
                print(line, file=sys.stderr, flush=True)

        names = preset or ["tiny-causal"]
        presets = [load_preset(n) for n in names]  # bad names fail before any work
        limit = min(clips or QUICK_CLIPS, QUICK_CLIPS) if quick else clips
        t0 = time.perf_counter()
        if folder is not None:
            sources, source = folder_clips(folder, csv_file, limit), str(folder)
        else:
            sources, source = procedural_for(presets[0], quick, limit), "procedural"
        given = {p.name: n for p, n in zip(presets, names, strict=True)}  # name or .yaml
        result = run(sources, list(given),
                     lambda name: preset_continuation(given[name], seed), log=log)
        result = {"source": source} | result | {"seed": seed,
                                                "wall_s": round(time.perf_counter() - t0, 1)}
        if as_json:
            print(json.dumps(result, indent=2))
        else:
            _print_revisit(result)
        sys.stdout.flush()

    guarded(body, as_json)
