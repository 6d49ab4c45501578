"""How well the memory bank's descriptor finds the frames the pose oracle retrieves.

Retrieval precision compares the pose oracle of the procworld memory variant
(longvid/backends/procworld/retrieval.py) with the memory bank's weight-free
descriptor (longvid.memory.descriptor), which sees only pixels. Pure numpy.
"""

from __future__ import annotations

import numpy as np

from longvid.backends.procworld.retrieval import RECENT_FRAMES
from longvid.backends.procworld.world import iou
from longvid.bench.metrics import precision_at_k
from longvid.bench.trajectories import Trajectory

RELEVANT_IOU = 0.5  # a bank frame is a correct retrieval when its view overlaps this much


def rank_by_descriptor(descriptors: np.ndarray, query: int, bank_frames: int) -> list[int]:
    """descriptors float (T, D): bank indices [0, bank_frames) by cosine to frame `query`."""
    from longvid.memory.descriptor import similarity

    scores = [similarity(descriptors[query], descriptors[i]) for i in range(bank_frames)]
    return sorted(range(bank_frames), key=lambda i: (-scores[i], i))


def rank_by_pose(poses: np.ndarray, target: int, bank_frames: int) -> list[int]:
    """Bank indices [0, bank_frames) by IoU with the target view (the oracle)."""
    scores = iou(poses[:bank_frames], poses[target])
    return sorted(range(bank_frames), key=lambda i: (-scores[i], i))


def describe_frames(frames: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3) -> float32 (T, D): the bank's descriptor, the frame as its latent."""
    from longvid.memory.descriptor import describe

    return np.stack([describe(f.transpose(2, 0, 1) / 255.0, f) for f in frames])


def retrieval_precision(trajectories: list[Trajectory], frames: list[np.ndarray],
                        ks: tuple[int, ...] = (1, 2)) -> dict[str, dict[str, float]]:
    """Precision@k of descriptor vs pose-oracle retrieval over every answerable query.

    For each frame t (the next view), the query is the newest frame t - 1, the bank
    is every frame before the recent ones, and a bank frame is relevant when its
    view has IoU >= RELEVANT_IOU with view t. Queries with no relevant frame are
    skipped (nothing to find).
    """
    hits: dict[str, dict[int, list[float]]] = {"descriptor": {}, "oracle": {}}
    for traj, clip in zip(trajectories, frames, strict=True):
        descriptors = describe_frames(clip)
        for t in range(RECENT_FRAMES + 1, traj.num_frames):
            bank_frames = t - RECENT_FRAMES
            relevant = set(np.flatnonzero(
                iou(traj.poses[:bank_frames], traj.poses[t]) >= RELEVANT_IOU).tolist())
            if not relevant:
                continue
            ranked = {"descriptor": rank_by_descriptor(descriptors, t - 1, bank_frames),
                      "oracle": rank_by_pose(traj.poses, t, bank_frames)}
            for name, order in ranked.items():
                for k in ks:
                    hits[name].setdefault(k, []).append(precision_at_k(order, relevant, k))
    queries = len(hits["oracle"].get(ks[0], []))
    return {name: {**{f"precision_at_{k}": float(np.mean(v)) if v else float("nan")
                      for k, v in by_k.items()}, "queries": queries}
            for name, by_k in hits.items()}
