"""Autoregressive generation for every ProcMem variant, from its own outputs.

`window` and `retrieval-oracle` (weights `procworld-memory`) choose 4 context frames
(longvid/backends/procworld/retrieval.py; the oracle reads poses). The pose-free
variants read only pixels and the camera's motion (pose[t] - pose[t-1]):
`retrieval-descriptor` picks 2 frames by descriptor and places them by registration;
`pfp`, `mag` and `malt` build 128 memory tokens from the history. Every variant
conditions each generated frame on 256 context tokens.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from longvid.bench import trajectories as tr

VARIANTS = ("window", "retrieval-oracle", "retrieval-descriptor", "pfp", "mag", "malt")
WEIGHTS_STEM = {"window": "window", "retrieval-oracle": "memory"}  # others: the name itself
POSE_FREE = {"window": True, "retrieval-oracle": False, "retrieval-descriptor": True,
             "pfp": True, "mag": True, "malt": True}
CONTEXT_TOKENS = 256  # 4 frames x 64 tokens, or 2 frames x 64 + 128 memory tokens


def weights_name(variant: str) -> str:
    return f"procworld-{WEIGHTS_STEM.get(variant, variant)}.safetensors"


def context_tokens(variant: str) -> int:
    from longvid.backends.procworld.retrieval import CONTEXT_FRAMES
    from longvid.backends.procworld.variants.common import MEMORY_TOKENS, TOKENS_PER_FRAME

    if variant in ("pfp", "mag", "malt"):
        return MEMORY_TOKENS + 2 * TOKENS_PER_FRAME
    return CONTEXT_FRAMES * TOKENS_PER_FRAME


def generate(model: Any, variant: str, clips: np.ndarray, trajs: list[tr.Trajectory],
             euler_steps: int, seed: int) -> np.ndarray:
    """clips uint8 (B, T, 32, 32, 3) ground truth -> a copy whose frames from
    `given_frames` on are generated one at a time (all trajectories the same split)."""
    import torch

    from longvid.backends.procworld.model import to_model, to_uint8
    from longvid.backends.procworld.retrieval import select_context
    from longvid.backends.procworld.variants import descriptor
    from longvid.backends.procworld.variants.generator import History
    from longvid.bench.retrieval import describe_frames
    from longvid.bench.train_variants import motion_of

    out = clips.copy()
    gen = torch.Generator().manual_seed(seed)
    given = trajs[0].given_frames
    motions = [motion_of(traj.poses) for traj in trajs]  # the camera's motion, known
    descs = [describe_frames(c[:given]) for c in out] if variant == "retrieval-descriptor" else []
    for t in range(given, out.shape[1]):
        if variant in ("window", "retrieval-oracle"):
            rule = "window" if variant == "window" else "memory"
            idx = [select_context(rule, traj.poses, t) for traj in trajs]
            ctx = np.stack([out[b, i] for b, i in enumerate(idx)])  # (B, 4, 32, 32, 3)
            ctx_poses = np.stack([traj.poses[i] for traj, i in zip(trajs, idx, strict=True)])
            pose = np.stack([traj.poses[t] for traj in trajs])  # (B, 2)
            frame = model.sample(to_model(ctx), torch.from_numpy(ctx_poses),
                                 torch.from_numpy(pose), euler_steps, gen)
        elif variant == "retrieval-descriptor":
            picks = [descriptor.select(out[b, :t], descs[b], motions[b], t)
                     for b in range(len(trajs))]
            ctx = np.stack([out[b, idx] for b, (idx, _) in enumerate(picks)])
            offsets = np.stack([off for _, off in picks])
            frame = model.sample(to_model(ctx), torch.from_numpy(offsets),
                                 torch.zeros(len(trajs), 2, dtype=torch.long), euler_steps, gen)
        else:
            hist_x = to_model(out[:, :t])  # (B, t, 3, 32, 32)
            hist = History.from_frames(list(hist_x),
                                       [torch.from_numpy(m[:t]) for m in motions])
            rec_off = np.stack([descriptor.recent_offsets(m, t, 2) for m in motions])
            frame = model.sample(hist, hist_x[:, -2:], torch.from_numpy(rec_off), euler_steps,
                                 gen)
        out[:, t] = to_uint8(frame)
        if descs:
            descs = [np.concatenate([d, describe_frames(out[b, t:t + 1])])
                     for b, d in enumerate(descs)]
    return out
