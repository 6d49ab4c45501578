"""Run ProcMem: the shipped window and memory models on held-out worlds, and retrieval.

Protocol A (docs/memory.md): the model gets the ground-truth frames of the leave
phase and generates the rest from its own outputs, one frame at a time, each
conditioned on the 4 context frames its variant selects. Out-and-back
trajectories give the revisit figures (every generated view was seen before);
straight lines give the novel control (no generated view was seen before), where
memory must not win. Retrieval precision runs on ground-truth frames of all
trajectory kinds and needs no model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longvid.backends.procworld.retrieval import VARIANTS, select_context
from longvid.backends.procworld.world import held_out_seeds, make_world, render
from longvid.bench import trajectories as tr
from longvid.bench.metrics import psnr_db, retention_curve, ssim
from longvid.bench.retrieval import retrieval_precision

GOAL_REVISIT_GAIN_DB = 6.0  # memory must beat the window by this much on revisits
GOAL_NOVEL_GAP_DB = 1.0  # ... and stay within this of it on novel content
# One thread: the figures are then bit-reproducible, and on a shared 2-core machine
# two threads ran several times slower than one (spinning against other work).
TORCH_THREADS = 1
LEG_STEPS = {"out_and_back": 16, "straight": 16, "loop": 6, "detour_revisit": 16}


@dataclass(frozen=True)
class BenchConfig:
    test_worlds: int = 8
    trajectories: int = 16  # per generated kind (out-and-back, straight)
    euler_steps: int = 12
    retrieval_trajectories: int = 16  # per kind
    seed: int = 0


QUICK = BenchConfig(test_worlds=4, trajectories=4, euler_steps=8, retrieval_trajectories=4)


def make_trajectories(kind: str, count: int, cfg: BenchConfig) -> list[tr.Trajectory]:
    rng = np.random.default_rng([cfg.seed, tr.KINDS.index(kind)])
    return [tr.sample(kind, rng, LEG_STEPS[kind]) for _ in range(count)]


def generate(model: Any, variant: str, clips: np.ndarray, trajs: list[tr.Trajectory],
             euler_steps: int, seed: int) -> np.ndarray:
    """clips uint8 (B, T, 32, 32, 3) ground truth -> a copy whose frames from
    `given_frames` on are generated autoregressively (all trajectories the same split)."""
    import torch

    from longvid.backends.procworld.model import to_model, to_uint8

    out = clips.copy()
    gen = torch.Generator().manual_seed(seed)
    given = trajs[0].given_frames
    for t in range(given, out.shape[1]):
        idx = [select_context(variant, traj.poses, t) for traj in trajs]
        ctx = np.stack([out[b, i] for b, i in enumerate(idx)])  # (B, 4, 32, 32, 3)
        ctx_poses = np.stack([traj.poses[i] for traj, i in zip(trajs, idx, strict=True)])
        pose = np.stack([traj.poses[t] for traj in trajs])  # (B, 2)
        frame = model.sample(to_model(ctx), torch.from_numpy(ctx_poses),
                             torch.from_numpy(pose), euler_steps, gen)
        out[:, t] = to_uint8(frame)
    return out


def score(generated: np.ndarray, clips: np.ndarray, trajs: list[tr.Trajectory],
          ) -> dict[str, Any]:
    """PSNR/SSIM of the generated frames against ground truth, per frame index and mean.

    strip_psnr scores only the pixels entering view at each frame, where memory matters.
    """
    given = trajs[0].given_frames
    psnr = np.array([[psnr_db(g[t], c[t]) for t in range(given, len(c))]
                     for g, c in zip(generated, clips, strict=True)])  # (B, T - given)
    strip = [psnr_db(g[t][m], c[t][m]) for g, c, traj in zip(generated, clips, trajs, strict=True)
             for t in range(given, len(c)) if (m := tr.entering_mask(traj.poses, t)).any()]
    ssims = np.array([[ssim(g[t], c[t]) for t in range(given, len(c))]
                      for g, c in zip(generated, clips, strict=True)])
    gaps = [[tr.last_seen_gap(traj.poses, t) for t in range(given, traj.num_frames)]
            for traj in trajs]
    seen = [(g, p) for row_g, row_p in zip(gaps, psnr, strict=True)
            for g, p in zip(row_g, row_p, strict=True) if g is not None]
    return {"psnr": float(psnr.mean()), "ssim": float(ssims.mean()),
            "strip_psnr": float(np.mean(strip)),
            "psnr_per_frame": [round(float(v), 2) for v in psnr.mean(axis=0)],
            "retention": retention_curve([g for g, _ in seen], [p for _, p in seen])}


def run(cfg: BenchConfig, weights_dir: Path | None = None,
        log: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """The whole benchmark -> a JSON-able dict (see docs/memory.md for the keys).

    weights_dir holds procworld-{variant}.safetensors; default: the shipped weights.
    """
    import torch

    from longvid.backends.procworld.model import WEIGHTS_DIR, load_model
    from longvid.errors import ResourceError

    paths = {v: (weights_dir or WEIGHTS_DIR) / f"procworld-{v}.safetensors" for v in VARIANTS}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ResourceError(f"ProcMem weights not found: {', '.join(missing)}",
                            hint="train them with `nice -n 19 python scripts/train_procworld.py`")
    start_s = time.perf_counter()
    worlds = [make_world(s) for s in held_out_seeds(cfg.test_worlds)]
    result: dict[str, Any] = {"config": {**asdict(cfg), "world_seeds":
                                         [held_out_seeds(cfg.test_worlds)[0],
                                          held_out_seeds(cfg.test_worlds)[-1]]}}

    # 1. retrieval precision on ground-truth frames of every trajectory kind
    by_kind, all_trajs, all_frames = {}, [], []
    for kind in tr.KINDS:
        trajs = make_trajectories(kind, cfg.retrieval_trajectories, cfg)
        frames = [render(worlds[i % len(worlds)], t.poses) for i, t in enumerate(trajs)]
        by_kind[kind] = retrieval_precision(trajs, frames)["descriptor"]
        all_trajs += trajs
        all_frames += frames
    result["retrieval"] = {**retrieval_precision(all_trajs, all_frames),
                           "descriptor_by_kind": by_kind}
    log(f"retrieval done ({time.perf_counter() - start_s:.1f} s)")

    # 2. generate the revisit (out-and-back) and novel (straight) trajectories
    regions = {"revisit": "out_and_back", "novel": "straight"}
    sets = {}
    for region, kind in regions.items():
        trajs = make_trajectories(kind, cfg.trajectories, cfg)
        clips = np.stack([render(worlds[i % len(worlds)], t.poses) for i, t in enumerate(trajs)])
        sets[region] = (trajs, clips)
    threads = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    try:
        for variant in VARIANTS:
            model, _ = load_model(paths[variant])
            result[variant] = {}
            for region, (trajs, clips) in sets.items():
                generated = generate(model, variant, clips, trajs, cfg.euler_steps, cfg.seed)
                result[variant][region] = score(generated, clips, trajs)
                log(f"{variant} {region}: {result[variant][region]['psnr']:.2f} dB "
                    f"({time.perf_counter() - start_s:.1f} s)")
            result[variant]["retention"] = result[variant]["revisit"].pop("retention")
            result[variant]["novel"].pop("retention")
    finally:
        torch.set_num_threads(threads)

    # 3. the verdict
    gain = {region: result["memory"][region]["psnr"] - result["window"][region]["psnr"]
            for region in regions}
    result["gain_db"] = {k: round(v, 2) for k, v in gain.items()}
    result["goal"] = {"revisit_gain_db_min": GOAL_REVISIT_GAIN_DB,
                      "novel_gap_db_max": GOAL_NOVEL_GAP_DB,
                      "met": bool(gain["revisit"] >= GOAL_REVISIT_GAIN_DB
                                  and abs(gain["novel"]) <= GOAL_NOVEL_GAP_DB)}
    result["wall_s"] = round(time.perf_counter() - start_s, 1)
    return result
