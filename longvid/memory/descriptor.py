"""A weight-free descriptor of a keyframe, for retrieval and for the drift monitor.

descriptor = concat(L2norm(avgpool(latent -> 4x4)), L2norm(Lab 8x8x8 histogram))

so two keyframes of the same place score a high cosine even when the model's
latents differ in detail. Works on any (C, h, w) array: model latents, or pixels
for a pixel-space backend. Pure numpy.
"""

from __future__ import annotations

import numpy as np

from longvid.memory.colour import lab_histogram

POOL = 4  # the latent is average-pooled to POOL x POOL
THUMB_PX = 64  # thumbnails are THUMB_PX x THUMB_PX


def _pool(latent: np.ndarray, side: int) -> np.ndarray:
    """(C, h, w) -> (C, side, side) by area averaging (h, w >= side)."""
    c, h, w = latent.shape
    ys = np.linspace(0, h, side + 1).astype(int)
    xs = np.linspace(0, w, side + 1).astype(int)
    out = np.empty((c, side, side), dtype=np.float64)
    for i in range(side):
        for j in range(side):
            out[:, i, j] = latent[:, ys[i]:max(ys[i + 1], ys[i] + 1),
                                  xs[j]:max(xs[j + 1], xs[j] + 1)].mean(axis=(1, 2))
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def describe(latent: np.ndarray, thumb: np.ndarray) -> np.ndarray:
    """latent (C, h, w) float, thumb uint8 (H, W, 3) -> float32 (C*16 + 512,), norm sqrt(2)."""
    pooled = _pool(np.asarray(latent, dtype=np.float64), POOL).reshape(-1)
    pooled = pooled - pooled.mean()  # brightness alone should not make places alike
    return np.concatenate([_unit(pooled), _unit(lab_histogram(thumb))]).astype(np.float32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two descriptors, in [-1, 1]."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(a @ b / (na * nb)) if na and nb else 0.0


def thumbnail(frame: np.ndarray, side: int = THUMB_PX) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (side, side, 3), area-averaged (aspect not kept)."""
    pooled = _pool(frame.transpose(2, 0, 1).astype(np.float64), side)
    pixels = np.clip(np.round(pooled), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(1, 2, 0))


def sharpness(frame: np.ndarray) -> float:
    """Variance of the Laplacian of the luma: higher is sharper. uint8 (H, W, 3)."""
    y = frame.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    lap = (-4 * y[1:-1, 1:-1] + y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:])
    return float(lap.var()) if lap.size else 0.0
