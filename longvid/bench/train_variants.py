"""Train the pose-free variants (retrieval-descriptor, pfp, mag, malt) from a seed.

Same worlds, clip mix, target draw, optimiser, schedule and seed as longvid/bench/
train.py (window and memory); what differs is the context. The clip's absolute
poses are used only to render it and to compute the camera motion (the step
between frames) the model is given; no memory is chosen or built from them.

pfp and mag pretrain their memory first (the first PRETRAIN_FRACTION of the steps:
reconstruction loss only, generator untouched), then train generator and memory
together (flow loss + reconstruction loss).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from longvid.backends.procworld.world import crop, make_world, train_seeds
from longvid.bench import trajectories as tr
from longvid.bench.train import (
    CLIP_KIND_WEIGHTS,
    CLIP_KINDS,
    MAX_LEG_STEPS,
    MIN_LEG_STEPS,
    TrainConfig,
    log_progress,
    lr_at,
    optimizer_step,
)

POSE_FREE = ("retrieval-descriptor", "pfp", "mag", "malt")
PRETRAIN_FRACTION = 0.2


def motion_of(poses: np.ndarray) -> np.ndarray:
    """int (T, 2) poses -> int (T, 2) steps, the first 0."""
    return np.diff(poses, axis=0, prepend=poses[:1])


def sample_clips(rng: np.random.Generator, worlds: list[np.ndarray], batch: int,
                 ) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """-> per item (frames uint8 (t + 1, 32, 32, 3), motion int (t + 1, 2), t)."""
    out = []
    for _ in range(batch):
        world = worlds[rng.integers(len(worlds))]
        kind = CLIP_KINDS[rng.choice(len(CLIP_KINDS), p=CLIP_KIND_WEIGHTS)]
        traj = tr.sample(kind, rng, int(rng.integers(MIN_LEG_STEPS, MAX_LEG_STEPS + 1)))
        t = int(rng.integers(4, traj.num_frames))
        frames = np.stack([crop(world, p) for p in traj.poses[:t + 1]])
        out.append((frames, motion_of(traj.poses[:t + 1]), t))
    return out


def descriptor_context(frames: np.ndarray, motion: np.ndarray, t: int,
                       ) -> tuple[np.ndarray, np.ndarray]:
    """-> context frames uint8 (4, 32, 32, 3), offsets int (4, 2) relative to frame t."""
    from longvid.backends.procworld.variants.descriptor import select
    from longvid.bench.retrieval import describe_frames

    idx, offsets = select(frames[:t], describe_frames(frames[:t]), motion[:t + 1], t)
    return frames[idx], offsets


def train_pose_free(cfg: TrainConfig, out: Path, log: Callable[[str], None] = print) -> dict:
    """Train one pose-free variant; write `out` (safetensors) and return the run record."""
    import torch

    from longvid.backends.procworld.model import CONTEXT_NOISE, WorldModel, to_model
    from longvid.backends.procworld.variants.descriptor import recent_offsets
    from longvid.backends.procworld.variants.generator import History, MemoryWorldModel
    from longvid.backends.procworld.variants.io import save_variant

    if cfg.variant not in POSE_FREE:
        raise ValueError(f"unknown variant {cfg.variant!r}; choose one of {', '.join(POSE_FREE)}")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    rng = np.random.default_rng(cfg.seed)
    worlds = [make_world(s) for s in train_seeds(cfg.train_worlds)]
    model: torch.nn.Module = (WorldModel() if cfg.variant == "retrieval-descriptor"
                              else MemoryWorldModel(cfg.variant))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    params = sum(p.numel() for p in model.parameters())
    pretrain = int(PRETRAIN_FRACTION * cfg.steps) if cfg.variant in ("pfp", "mag") else 0
    log(f"{cfg.variant}: {params / 1e6:.2f} M params, {cfg.steps} steps of batch {cfg.batch} "
        f"({pretrain} memory pretraining)")

    losses: list[float] = []
    start_s = time.perf_counter()
    for step in range(cfg.steps):
        clips = sample_clips(rng, worlds, cfg.batch)
        x1 = to_model(np.stack([f[t] for f, _, t in clips]))  # (B, 3, 32, 32)
        noise = torch.randn_like(x1)
        t_flow = torch.rand(cfg.batch)
        if cfg.variant == "retrieval-descriptor":
            ctx, offsets = zip(*(descriptor_context(f, m, t) for f, m, t in clips), strict=True)
            ctx_x = to_model(np.stack(ctx))
            ctx_x = ctx_x + CONTEXT_NOISE * torch.randn_like(ctx_x)
            cache = model.encode_context(ctx_x, torch.from_numpy(np.stack(offsets)))
            x_t = (1 - t_flow)[:, None, None, None] * noise + t_flow[:, None, None, None] * x1
            v = model.velocity(x_t, t_flow, torch.zeros(cfg.batch, 2, dtype=torch.long), cache)
            loss = torch.mean((v - (x1 - noise)) ** 2)
        else:
            hist_frames = [to_model(f[:t]) for f, _, t in clips]
            hist_frames = [h + CONTEXT_NOISE * torch.randn_like(h) for h in hist_frames]
            hist = History.from_frames(hist_frames, [torch.from_numpy(m[:t]) for _, m, t in clips])
            memory, aux = model.build_memory(hist, gen)
            if step < pretrain:
                loss = aux
            else:
                recent = torch.stack([h[-2:] for h in hist_frames])
                rec_off = torch.from_numpy(np.stack([recent_offsets(m, t, 2) for _, m, t in clips]))
                cache = model.encode(recent, rec_off, memory)
                loss = model.loss(x1, noise, t_flow, cache) + aux
        # a mag pretraining batch may hold no complete block: no step then
        optimizer_step(opt, model, loss, lr_at(cfg, step))
        losses.append(float(loss.detach()))
        if (step + 1) % 25 == 0 or step == cfg.steps - 1 or step < 3:
            log_progress(log, cfg, step, losses, start_s)
    wall_s = time.perf_counter() - start_s
    record = {"variant": cfg.variant, "steps": cfg.steps, "batch": cfg.batch, "lr": cfg.lr,
              "seed": cfg.seed, "train_worlds": cfg.train_worlds, "threads": cfg.threads,
              "params": params, "memory_pretrain_steps": pretrain, "wall_s": round(wall_s, 1),
              "loss_first_25": float(np.mean(losses[:25])),
              "loss_last_25": float(np.mean(losses[-25:])),
              "torch": torch.__version__}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_variant(model.eval(), cfg.variant, out, {"train": json.dumps(record)})
    return record
