"""`retrieval-descriptor`: 2 recent frames + 2 frames the pixel descriptor retrieves.

No pose is read. The bank is every frame before the 2 recent ones; the query is the
newest frame (t - 1); the 2 bank frames with the highest descriptor cosine are
picked (longvid.memory.descriptor, the memory bank's weight-free descriptor).

Positions (RoPE) without absolute pose: the target sits at offset (0, 0). A recent
frame t - k sits at minus the sum of the last k camera motions (known, relative).
A retrieved frame is placed by *registration*: the integer patch shift that best
aligns its pixels with frame t - 1 (lowest mean squared error over an overlap of at
least MIN_OVERLAP_PATCHES patches), plus the known motion from t - 1 to t. Pure numpy.
"""

from __future__ import annotations

import numpy as np

from longvid.backends.procworld.world import FRAME_PATCHES, PATCH_PX

RECENT_FRAMES = 2
RETRIEVED_FRAMES = 2
MIN_OVERLAP_PATCHES = 16
MAX_SHIFT = FRAME_PATCHES - 2  # shifts beyond this leave under 16 patches of overlap


def pick_by_descriptor(descriptors: np.ndarray, t: int, n_frames: int = RETRIEVED_FRAMES,
                       ) -> list[int]:
    """descriptors float (>= t, D) -> the bank indices [0, t - 2) most like frame t - 1."""
    bank = t - RECENT_FRAMES
    if bank <= 0:
        return []
    d = descriptors[:t].astype(np.float64)
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    scores = d[:bank] @ d[t - 1]  # (bank,)
    order = sorted(range(bank), key=lambda i: (-scores[i], i))
    return sorted(order[:n_frames])


def register(frame: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """uint8 (32, 32, 3) x 2 -> int (2,): shift s (patches) such that frame's world view
    starts at reference's + s, i.e. frame[y, x] ~ reference[y + s_y * 4, x + s_x * 4]."""
    a, b = frame.astype(np.float32), reference.astype(np.float32)
    best, best_err = np.zeros(2, dtype=int), np.inf
    n = FRAME_PATCHES * PATCH_PX
    for sy in range(-MAX_SHIFT, MAX_SHIFT + 1):
        for sx in range(-MAX_SHIFT, MAX_SHIFT + 1):
            oy, ox = FRAME_PATCHES - abs(sy), FRAME_PATCHES - abs(sx)
            if oy * ox < MIN_OVERLAP_PATCHES:
                continue
            py, px = sy * PATCH_PX, sx * PATCH_PX
            fa = a[max(-py, 0):n - max(py, 0), max(-px, 0):n - max(px, 0)]
            fb = b[max(py, 0):n - max(-py, 0), max(px, 0):n - max(-px, 0)]
            err = float(np.mean((fa - fb) ** 2))
            if err < best_err:
                best, best_err = np.array([sy, sx]), err
    return best


def recent_offsets(motion: np.ndarray, t: int, k_frames: int) -> np.ndarray:
    """motion int (T, 2), motion[i] = pose[i] - pose[i-1] -> int (k, 2): offsets of
    frames t-k..t-1 relative to frame t (oldest first), from the last k motions only."""
    steps = motion[t - k_frames + 1:t + 1]  # motions into frames t-k+1 .. t
    return -np.cumsum(steps[::-1], axis=0)[::-1]


def select(frames: np.ndarray, descriptors: np.ndarray, motion: np.ndarray, t: int,
           ) -> tuple[list[int], np.ndarray]:
    """-> (4 frame indices: retrieved oldest first, then recent), their offsets int (4, 2)
    relative to frame t. frames uint8 (>= t, 32, 32, 3); reads pixels and motion only."""
    picked = pick_by_descriptor(descriptors, t)
    recent = list(range(t - RECENT_FRAMES, t))
    rec_off = recent_offsets(motion, t, RECENT_FRAMES)
    offsets = [register(frames[i], frames[t - 1]) + rec_off[-1] for i in picked]
    while len(picked) < RETRIEVED_FRAMES:  # too short a history: repeat the oldest recent
        picked.insert(0, recent[0])
        offsets.insert(0, rec_off[0])
    return picked + recent, np.concatenate([np.stack(offsets), rec_off]).astype(int)
