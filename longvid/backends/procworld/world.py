"""Seeded procedural worlds and the camera that looks at them. Pure numpy.

A world is an S x S RGB image: multi-octave bicubic value noise plus hard-edged
landmarks (discs and rectangles in saturated colours) so that views can be told
apart. Every world is regenerated bit-exactly from its seed: only elementwise
float64 arithmetic is used (no BLAS, whose summation order may vary by machine).

The camera is a FRAME_PX x FRAME_PX crop whose top-left corner sits on the
PATCH_PX grid; poses are (y, x) in patches.
"""

from __future__ import annotations

import numpy as np

WORLD_PX = 384  # side of a world
FRAME_PX = 32  # side of a camera frame
PATCH_PX = 4  # poses move on this grid (the tiny model's patch size)
FRAME_PATCHES = FRAME_PX // PATCH_PX  # 8
WORLD_PATCHES = WORLD_PX // PATCH_PX  # 96
MAX_POSE = WORLD_PATCHES - FRAME_PATCHES  # largest valid y or x of a pose

OCTAVES = 5
BASE_GRID = 3  # noise cells per side at the coarsest octave; doubled per octave
LANDMARKS_MIN, LANDMARKS_MAX = 150, 250

TRAIN_SEED_START = 0  # train worlds: seeds 0, 1, 2, ...
TEST_SEED_START = 1_000_000  # held-out worlds: seeds 1_000_000, ...


def train_seeds(n_worlds: int) -> range:
    return range(TRAIN_SEED_START, TRAIN_SEED_START + n_worlds)


def held_out_seeds(n_worlds: int) -> range:
    return range(TEST_SEED_START, TEST_SEED_START + n_worlds)


def _cubic_weights(frac: np.ndarray) -> tuple[np.ndarray, ...]:
    """Catmull-Rom (Keys, a=-0.5) weights of taps -1, 0, 1, 2 for fractions in [0, 1)."""
    f, f2, f3 = frac, frac * frac, frac * frac * frac
    return (-0.5 * f3 + f2 - 0.5 * f, 1.5 * f3 - 2.5 * f2 + 1.0,
            -1.5 * f3 + 2.0 * f2 + 0.5 * f, 0.5 * f3 - 0.5 * f2)


def _upsample_axis0(grid: np.ndarray, out_px: int) -> np.ndarray:
    """(n + 3, ...) padded grid -> (out_px, ...) by cubic interpolation along axis 0."""
    n = grid.shape[0] - 3
    pos = (np.arange(out_px) + 0.5) * n / out_px  # cell coordinates of pixel centres
    base = np.floor(pos).astype(int)
    frac = (pos - base).reshape(-1, *([1] * (grid.ndim - 1)))
    w = _cubic_weights(frac)
    # grid index base + 1 is cell `base` (one cell of padding before)
    return (w[0] * grid[base] + w[1] * grid[base + 1] + w[2] * grid[base + 2]
            + w[3] * grid[base + 3])


def _noise(rng: np.random.Generator, side_px: int) -> np.ndarray:
    """float64 (side_px, side_px, 3) in [0, 1]: sum of OCTAVES bicubic noise layers."""
    total = np.zeros((side_px, side_px, 3))
    for octave in range(OCTAVES):
        cells = BASE_GRID * 2 ** octave
        grid = rng.random((cells + 3, cells + 3, 3))  # one cell of padding before, two after
        layer = _upsample_axis0(grid, side_px)  # (side_px, cells + 3, 3)
        layer = _upsample_axis0(layer.transpose(1, 0, 2), side_px).transpose(1, 0, 2)
        total += layer * 0.5 ** octave
    lo, hi = total.min(axis=(0, 1)), total.max(axis=(0, 1))
    return (total - lo) / (hi - lo)


def _saturated(rng: np.random.Generator) -> np.ndarray:
    """A random fully saturated colour: float64 (3,) in [0, 1]."""
    hue = rng.random() * 6.0
    sector, frac = int(hue), hue - int(hue)
    ramps = [(1, frac, 0), (1 - frac, 1, 0), (0, 1, frac), (0, 1 - frac, 1),
             (frac, 0, 1), (1, 0, 1 - frac)]
    return np.array(ramps[sector % 6], dtype=np.float64)


def make_world(seed: int, side_px: int = WORLD_PX) -> np.ndarray:
    """uint8 (side_px, side_px, 3), identical for equal seeds on every machine."""
    rng = np.random.default_rng(seed)
    img = 0.15 + 0.7 * _noise(rng, side_px)  # keep landmarks' saturated colours distinct
    yy, xx = np.mgrid[0:side_px, 0:side_px]
    for _ in range(int(rng.integers(LANDMARKS_MIN, LANDMARKS_MAX + 1))):
        colour = _saturated(rng) * (0.55 + 0.45 * rng.random())
        cy, cx = rng.integers(0, side_px, size=2)
        if rng.random() < 0.5:
            radius_px = int(rng.integers(3, 11))
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius_px ** 2
        else:
            h_px, w_px = rng.integers(4, 21, size=2)
            mask = (np.abs(yy - cy) <= h_px // 2) & (np.abs(xx - cx) <= w_px // 2)
        img[mask] = colour
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def crop(world: np.ndarray, pose: np.ndarray | tuple[int, int]) -> np.ndarray:
    """uint8 (S, S, 3), pose (y, x) in patches -> uint8 (FRAME_PX, FRAME_PX, 3), a view."""
    y, x = int(pose[0]), int(pose[1])
    if not (0 <= y <= MAX_POSE and 0 <= x <= MAX_POSE):
        raise ValueError(f"pose {(y, x)} is outside the world (0..{MAX_POSE} patches)")
    y_px, x_px = y * PATCH_PX, x * PATCH_PX
    return world[y_px:y_px + FRAME_PX, x_px:x_px + FRAME_PX]


def render(world: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """poses int (T, 2) -> uint8 (T, FRAME_PX, FRAME_PX, 3), the exact ground truth."""
    return np.stack([crop(world, p) for p in poses])


def overlap_patches(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Shared patches of the views at poses a (..., 2) and b (..., 2): int (...)."""
    d = np.maximum(FRAME_PATCHES - np.abs(np.asarray(a) - np.asarray(b)), 0)
    return d[..., 0] * d[..., 1]


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of the views at poses a (..., 2) and b (..., 2)."""
    inter = overlap_patches(a, b)
    return inter / (2 * FRAME_PATCHES ** 2 - inter)
