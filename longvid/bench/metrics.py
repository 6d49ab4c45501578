"""Frame metrics against exact ground truth, the retention curve, retrieval precision.

PSNR and SSIM are the standard definitions on uint8 RGB (data range 255); SSIM
uses the usual 11-tap Gaussian window (sigma 1.5) per channel, valid region only.
Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PSNR_CAP_DB = 100.0  # identical frames would be +inf; capped so means stay finite
SSIM_WINDOW_PX, SSIM_SIGMA_PX = 11, 1.5
_C1, _C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
# Retention buckets of "frames since last seen" (inclusive bounds).
GAP_BUCKETS = ((1, 4), (5, 8), (9, 16), (17, 32), (33, 64))


def psnr_db(pred: np.ndarray, target: np.ndarray) -> float:
    """uint8 (..., H, W, 3) pair -> PSNR in dB over all pixels, capped at PSNR_CAP_DB."""
    mse = float(np.mean((pred.astype(np.float64) - target.astype(np.float64)) ** 2))
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * np.log10(255.0 ** 2 / mse))


def _gauss_filter(img: np.ndarray) -> np.ndarray:
    """float (H, W, C) -> (H - 10, W - 10, C): separable Gaussian, valid region."""
    r = np.arange(SSIM_WINDOW_PX) - SSIM_WINDOW_PX // 2
    g = np.exp(-(r ** 2) / (2 * SSIM_SIGMA_PX ** 2))
    g /= g.sum()
    win = np.lib.stride_tricks.sliding_window_view(img, SSIM_WINDOW_PX, axis=0)
    img = (win * g).sum(axis=-1)  # (H - 10, W, C)
    win = np.lib.stride_tricks.sliding_window_view(img, SSIM_WINDOW_PX, axis=1)
    return (win * g).sum(axis=-1)


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """uint8 (H, W, 3) pair -> mean SSIM over channels and valid windows, in [-1, 1]."""
    x, y = pred.astype(np.float64), target.astype(np.float64)
    mx, my = _gauss_filter(x), _gauss_filter(y)
    vx = _gauss_filter(x * x) - mx * mx
    vy = _gauss_filter(y * y) - my * my
    cxy = _gauss_filter(x * y) - mx * my
    s = ((2 * mx * my + _C1) * (2 * cxy + _C2)) / ((mx * mx + my * my + _C1) * (vx + vy + _C2))
    return float(s.mean())


def gap_bucket(gap: int) -> str | None:
    """Frames since last seen -> bucket label like "5-8", or None beyond the last bucket."""
    for lo, hi in GAP_BUCKETS:
        if lo <= gap <= hi:
            return f"{lo}-{hi}"
    return None


def retention_curve(gaps: Sequence[int], psnrs_db: Sequence[float]) -> dict[str, float]:
    """Mean PSNR per gap bucket, buckets in order; empty buckets are left out."""
    sums: dict[str, list[float]] = {}
    for gap, value in zip(gaps, psnrs_db, strict=True):
        label = gap_bucket(gap)
        if label is not None:
            sums.setdefault(label, []).append(value)
    return {f"{lo}-{hi}": float(np.mean(sums[f"{lo}-{hi}"]))
            for lo, hi in GAP_BUCKETS if f"{lo}-{hi}" in sums}


def precision_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    """Fraction of the top-k ranked bank indices that are relevant."""
    if k < 1:
        raise ValueError("k must be >= 1")
    return sum(1 for i in ranked[:k] if i in relevant) / k
