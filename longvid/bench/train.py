"""Train the tiny ProcMem world model, one variant, reproducibly from a seed.

Clips are sampled on the fly from the train worlds (seeds 0..n-1; the benchmark
uses held-out seeds from 1_000_000): mostly out-and-back, plus straight lines and
detours, so targets are a mix of novel and revisited views. Both variants see the
same clips, targets and noise for a given seed; only the context frames differ.

    nice -n 19 python scripts/train_procworld.py --variant memory
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longvid.backends.procworld.retrieval import CONTEXT_FRAMES, select_context
from longvid.backends.procworld.world import crop, make_world, train_seeds
from longvid.bench import trajectories as tr

CLIP_KINDS = ("out_and_back", "straight", "detour_revisit")
CLIP_KIND_WEIGHTS = (0.6, 0.2, 0.2)
MIN_LEG_STEPS, MAX_LEG_STEPS = 4, 16


@dataclass(frozen=True)
class TrainConfig:
    variant: str
    steps: int = 900
    batch: int = 16
    lr: float = 5e-4
    warmup_steps: int = 50
    seed: int = 0
    train_worlds: int = 64
    threads: int = 1  # 2 threads ran 3.6x slower than 1 on a shared, oversubscribed 2-core box


def sample_batch(rng: np.random.Generator, worlds: list[np.ndarray], variant: str,
                 batch: int) -> tuple[np.ndarray, ...]:
    """-> ctx uint8 (B, 4, 32, 32, 3), ctx_poses int (B, 4, 2), target uint8 (B, 32, 32, 3),
    target_pose int (B, 2)."""
    ctx, ctx_poses, target, target_pose = [], [], [], []
    for _ in range(batch):
        world = worlds[rng.integers(len(worlds))]
        kind = CLIP_KINDS[rng.choice(len(CLIP_KINDS), p=CLIP_KIND_WEIGHTS)]
        traj = tr.sample(kind, rng, int(rng.integers(MIN_LEG_STEPS, MAX_LEG_STEPS + 1)))
        t = int(rng.integers(CONTEXT_FRAMES, traj.num_frames))
        idx = select_context(variant, traj.poses, t)
        ctx.append(np.stack([crop(world, traj.poses[i]) for i in idx]))
        ctx_poses.append(traj.poses[idx])
        target.append(crop(world, traj.poses[t]))
        target_pose.append(traj.poses[t])
    return np.stack(ctx), np.stack(ctx_poses), np.stack(target), np.stack(target_pose)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine down to 10 % of `cfg.lr`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def optimizer_step(opt: Any, model: Any, loss: Any, lr: float) -> None:
    """One AdamW step at `lr`, gradients clipped to norm 1; none for a loss that holds no
    graph (a batch with nothing to learn)."""
    import torch

    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    if loss.requires_grad:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()


def log_progress(log: Callable[[str], None], cfg: TrainConfig, step: int,
                 losses: list[float], start_s: float) -> None:
    elapsed_s = time.perf_counter() - start_s
    log(f"{cfg.variant} step {step + 1}/{cfg.steps} loss {np.mean(losses[-25:]):.4f} "
        f"{elapsed_s:.0f} s ({elapsed_s / (step + 1):.2f} s/step)")


def train(cfg: TrainConfig, out: Path, log: Callable[[str], None] = print) -> dict:
    """Train one variant; write `out` (safetensors) and return the run record."""
    import torch

    from longvid.backends.procworld.model import CONTEXT_NOISE, WorldModel, save_model, to_model

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    worlds = [make_world(s) for s in train_seeds(cfg.train_worlds)]
    model = WorldModel()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    params = sum(p.numel() for p in model.parameters())
    log(f"{cfg.variant}: {params / 1e6:.2f} M params, {cfg.steps} steps of batch {cfg.batch}")

    losses: list[float] = []
    start_s = time.perf_counter()
    for step in range(cfg.steps):
        ctx, ctx_poses, target, target_pose = sample_batch(rng, worlds, cfg.variant, cfg.batch)
        x1 = to_model(target)  # (B, 3, 32, 32)
        ctx_x = to_model(ctx)  # (B, 4, 3, 32, 32)
        ctx_x = ctx_x + CONTEXT_NOISE * torch.randn_like(ctx_x)
        noise = torch.randn_like(x1)
        t = torch.rand(cfg.batch)
        x_t = (1 - t)[:, None, None, None] * noise + t[:, None, None, None] * x1
        cache = model.encode_context(ctx_x, torch.from_numpy(ctx_poses))
        v = model.velocity(x_t, t, torch.from_numpy(target_pose), cache)
        loss = torch.mean((v - (x1 - noise)) ** 2)
        optimizer_step(opt, model, loss, lr_at(cfg, step))
        losses.append(float(loss.detach()))
        if (step + 1) % 25 == 0 or step == cfg.steps - 1:
            log_progress(log, cfg, step, losses, start_s)
    wall_s = time.perf_counter() - start_s
    record = {"variant": cfg.variant, "steps": cfg.steps, "batch": cfg.batch, "lr": cfg.lr,
              "seed": cfg.seed, "train_worlds": cfg.train_worlds, "threads": cfg.threads,
              "params": params, "wall_s": round(wall_s, 1),
              "loss_first_25": float(np.mean(losses[:25])),
              "loss_last_25": float(np.mean(losses[-25:])),
              "torch": torch.__version__}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(model.eval(), out, {"train": json.dumps(record)})
    return record
