"""Which past frames a variant sees, and how well the bank's descriptor finds them.

Both variants get the same budget of CONTEXT_FRAMES context frames:

- window: the last 4 frames.
- memory: the last RECENT_FRAMES frames plus the rest picked from the older frames
  (the bank) by greedy field-of-view overlap with the target pose (pose oracle).

Retrieval precision compares that pose oracle with the memory bank's weight-free
descriptor (longvid.memory.descriptor), which sees only pixels. Pure numpy.
"""

from __future__ import annotations

import numpy as np

from longvid.bench.metrics import precision_at_k
from longvid.bench.trajectories import Trajectory
from longvid.bench.world import FRAME_PATCHES, iou, overlap_patches

VARIANTS = ("window", "memory")
CONTEXT_FRAMES = 4  # the context budget of both variants
RECENT_FRAMES = 2  # the memory variant's recent frames; the rest are retrieved
RELEVANT_IOU = 0.5  # a bank frame is a correct retrieval when its view overlaps this much


def _target_mask(pose: np.ndarray, target: np.ndarray) -> np.ndarray:
    """bool (8, 8): which patches of the target view the view at `pose` covers."""
    dy, dx = int(pose[0] - target[0]), int(pose[1] - target[1])
    mask = np.zeros((FRAME_PATCHES, FRAME_PATCHES), dtype=bool)
    mask[max(dy, 0):max(FRAME_PATCHES + dy, 0), max(dx, 0):max(FRAME_PATCHES + dx, 0)] = True
    return mask


def retrieve_by_pose(bank_poses: np.ndarray, covered_by: np.ndarray, target: np.ndarray,
                     n_frames: int) -> list[int]:
    """Greedy FOV cover: indices into bank_poses (N, 2) that add the most unseen target area.

    `covered_by` (M, 2) are poses already in context (the recent frames). Ties go to
    the larger total overlap, then to the older frame.
    """
    covered = np.zeros((FRAME_PATCHES, FRAME_PATCHES), dtype=bool)
    for pose in covered_by:
        covered |= _target_mask(pose, target)
    overlap = overlap_patches(bank_poses, target)  # (N,)
    masks = [_target_mask(p, target) for p in bank_poses]
    picked: list[int] = []
    for _ in range(min(n_frames, len(bank_poses))):
        best, best_key = -1, None
        for i, mask in enumerate(masks):
            if i in picked:
                continue
            key = (int((mask & ~covered).sum()), int(overlap[i]), -i)
            if best_key is None or key > best_key:
                best, best_key = i, key
        picked.append(best)
        covered |= masks[best]
    return picked


def select_context(variant: str, poses: np.ndarray, t: int) -> list[int]:
    """Frame indices (oldest first within each group) that condition frame t."""
    if t < CONTEXT_FRAMES:
        raise ValueError(f"frame {t} has fewer than {CONTEXT_FRAMES} frames before it")
    if variant == "window":
        return list(range(t - CONTEXT_FRAMES, t))
    if variant == "memory":
        recent = list(range(t - RECENT_FRAMES, t))
        bank = poses[:t - RECENT_FRAMES]
        picked = retrieve_by_pose(bank, poses[recent], poses[t], CONTEXT_FRAMES - RECENT_FRAMES)
        return sorted(picked) + recent
    raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")


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
