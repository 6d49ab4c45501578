"""Which past frames a procworld model variant sees. Pure numpy.

Both variants get the same budget of CONTEXT_FRAMES context frames:

- window: the last 4 frames.
- memory: the last RECENT_FRAMES frames plus the rest picked from the older frames
  (the bank) by greedy field-of-view overlap with the target pose (pose oracle).

How well the bank's pixel descriptor finds the same frames is the benchmark's
question: longvid/bench/retrieval.py.
"""

from __future__ import annotations

import numpy as np

from longvid.backends.procworld.world import FRAME_PATCHES, overlap_patches

VARIANTS = ("window", "memory")
CONTEXT_FRAMES = 4  # the context budget of both variants
RECENT_FRAMES = 2  # the memory variant's recent frames; the rest are retrieved


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
