"""sRGB <-> CIE Lab (D65), Lab histograms and colour statistics transfer. Pure numpy."""

from __future__ import annotations

import numpy as np

_M = np.array([[0.4124564, 0.3575761, 0.1804375],
               [0.2126729, 0.7151522, 0.0721750],
               [0.0193339, 0.1191920, 0.9503041]])
_WHITE = np.array([0.95047, 1.0, 1.08883])
_EPS, _KAPPA = 216 / 24389, 24389 / 27

HIST_BINS = 8  # per Lab axis: 8 x 8 x 8 = 512 bins
_LAB_LO = np.array([0.0, -100.0, -100.0])
_LAB_HI = np.array([100.0, 100.0, 100.0])


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) sRGB -> float (..., 3) Lab, L in [0, 100]."""
    c = rgb.astype(np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _M.T / _WHITE
    f = np.where(xyz > _EPS, np.cbrt(xyz), (_KAPPA * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """float (..., 3) Lab -> uint8 (..., 3) sRGB, clipped to the gamut."""
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f ** 3 > _EPS, f ** 3, (116 * f - 16) / _KAPPA) * _WHITE
    lin = np.clip(xyz @ np.linalg.inv(_M).T, 0, 1)
    c = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    rgb: np.ndarray = np.clip(np.round(c * 255), 0, 255).astype(np.uint8)
    return rgb


def lab_histogram(rgb: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) -> float (512,) Lab histogram that sums to 1."""
    lab = rgb_to_lab(rgb).reshape(-1, 3)
    idx = np.clip(((lab - _LAB_LO) / (_LAB_HI - _LAB_LO) * HIST_BINS).astype(int), 0,
                  HIST_BINS - 1)
    flat = (idx[:, 0] * HIST_BINS + idx[:, 1]) * HIST_BINS + idx[:, 2]
    hist = np.bincount(flat, minlength=HIST_BINS ** 3).astype(np.float64)
    normed: np.ndarray = hist / max(hist.sum(), 1.0)
    return normed


def chi2(p: np.ndarray, q: np.ndarray) -> float:
    """Symmetric chi-squared distance of two histograms summing to 1: 0 (same) .. 1."""
    s = p + q
    nz = s > 0
    return float(0.5 * np.sum((p[nz] - q[nz]) ** 2 / s[nz]))


def match_lab_stats(frames: np.ndarray, target_mean: np.ndarray, target_std: np.ndarray,
                    strength: float) -> np.ndarray:
    """Move the frames' per-channel Lab mean/std toward a target by `strength` (0..1).

    frames: uint8 (F, H, W, 3); one transfer for the whole segment, so no flicker.
    """
    lab = rgb_to_lab(frames)
    mean = lab.reshape(-1, 3).mean(axis=0)
    std = lab.reshape(-1, 3).std(axis=0) + 1e-6
    matched = (lab - mean) / std * target_std + target_mean
    return lab_to_rgb(lab + strength * (matched - lab))


def lab_stats(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (..., 3) -> per-channel Lab (mean (3,), std (3,))."""
    lab = rgb_to_lab(frames).reshape(-1, 3)
    return lab.mean(axis=0), lab.std(axis=0)
