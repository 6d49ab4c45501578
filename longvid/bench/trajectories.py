"""Exact camera trajectories: one patch per frame, so 1/8 of a 32 px frame is new.

Each trajectory is a list of poses (y, x) in patches and a split: the first
`given_frames` frames are ground truth handed to the model, the rest are what the
model generates (protocol A of docs/memory.md). Pure numpy.

- out_and_back: n steps in one of 8 directions, then the exact reverse.
- loop: a square back to the start.
- detour_revisit: leave A, wander, return to A along a different path.
- straight: the no-revisit control; every generated frame sees new ground.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from longvid.backends.procworld.world import FRAME_PATCHES, MAX_POSE, PATCH_PX

DIRECTIONS = np.array([(0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1)])
KINDS = ("out_and_back", "loop", "detour_revisit", "straight")


@dataclass(frozen=True)
class Trajectory:
    kind: str
    poses: np.ndarray  # int (T, 2): (y, x) in patches
    given_frames: int  # frames [0, given_frames) are ground truth context

    @property
    def num_frames(self) -> int:
        return len(self.poses)


def _walk(start: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """start (2,), steps (n, 2) -> poses (n + 1, 2)."""
    return np.concatenate([start[None], start + np.cumsum(steps, axis=0)]).astype(int)


def _fit_start(rng: np.random.Generator, steps: np.ndarray) -> np.ndarray:
    """A random start such that every pose of the walk stays inside the world."""
    path = np.concatenate([[[0, 0]], np.cumsum(steps, axis=0)])
    lo, hi = -path.min(axis=0), MAX_POSE - path.max(axis=0)
    if np.any(hi < lo):
        raise ValueError("trajectory does not fit in the world")
    return np.array([rng.integers(lo[0], hi[0] + 1), rng.integers(lo[1], hi[1] + 1)])


def out_and_back(rng: np.random.Generator, out_steps: int) -> Trajectory:
    d = DIRECTIONS[rng.integers(len(DIRECTIONS))]
    steps = np.concatenate([np.tile(d, (out_steps, 1)), np.tile(-d, (out_steps, 1))])
    poses = _walk(_fit_start(rng, steps), steps)
    return Trajectory("out_and_back", poses, given_frames=out_steps + 1)


def straight(rng: np.random.Generator, out_steps: int) -> Trajectory:
    """The control: as long as out_and_back, but it never turns back."""
    d = DIRECTIONS[rng.integers(len(DIRECTIONS))]
    steps = np.tile(d, (2 * out_steps, 1))
    poses = _walk(_fit_start(rng, steps), steps)
    return Trajectory("straight", poses, given_frames=out_steps + 1)


def loop(rng: np.random.Generator, side_steps: int) -> Trajectory:
    """A square (clockwise or not); the last side is generated and returns to the start."""
    turn = 1 if rng.random() < 0.5 else -1
    d0 = 2 * int(rng.integers(0, 4))  # an axis-aligned start direction
    sides = [DIRECTIONS[(d0 + 2 * turn * k) % 8] for k in range(4)]
    steps = np.concatenate([np.tile(d, (side_steps, 1)) for d in sides])
    poses = _walk(_fit_start(rng, steps), steps)
    return Trajectory("loop", poses, given_frames=3 * side_steps + 1)


def detour_revisit(rng: np.random.Generator, wander_steps: int) -> Trajectory:
    """Leave A, wander `wander_steps` frames in random legs, then head straight back to A."""
    legs, total = [], 0
    while total < wander_steps:
        n = int(min(rng.integers(3, 8), wander_steps - total))
        legs.append(np.tile(DIRECTIONS[rng.integers(len(DIRECTIONS))], (n, 1)))
        total += n
    away = np.concatenate(legs)
    offset = away.sum(axis=0)
    back = []  # Chebyshev path home: diagonal first, then straight
    while np.any(offset):
        step = -np.sign(offset)
        back.append(step)
        offset = offset + step
    if not back:  # the wander happened to end at A: leave and come back once
        back = [DIRECTIONS[0], -DIRECTIONS[0]]
    steps = np.concatenate([away, np.array(back)])
    poses = _walk(_fit_start(rng, steps), steps)
    return Trajectory("detour_revisit", poses, given_frames=wander_steps + 1)


def sample(kind: str, rng: np.random.Generator, steps: int) -> Trajectory:
    """One trajectory of `kind`; `steps` is the leg length (out/side/wander)."""
    make = {"out_and_back": out_and_back, "loop": loop, "detour_revisit": detour_revisit,
            "straight": straight}
    if kind not in make:
        raise ValueError(f"unknown trajectory kind {kind!r}; choose one of {', '.join(KINDS)}")
    return make[kind](rng, steps)


def _entering_cells(poses: np.ndarray, t: int) -> np.ndarray:
    """World patches (n, 2) in view t but not in view t - 1 (all of view 0)."""
    y, x = np.mgrid[0:FRAME_PATCHES, 0:FRAME_PATCHES]
    cells = np.stack([y.ravel(), x.ravel()], axis=1) + poses[t]  # (64, 2) world patches
    if t == 0:
        return cells
    rel_prev = cells - poses[t - 1]
    return cells[~np.all((rel_prev >= 0) & (rel_prev < FRAME_PATCHES), axis=1)]


def entering_mask(poses: np.ndarray, t: int) -> np.ndarray:
    """bool (FRAME_PX, FRAME_PX): the pixels of frame t that frame t - 1 did not show."""
    mask = np.zeros((FRAME_PATCHES, FRAME_PATCHES), dtype=bool)
    rel = _entering_cells(poses, t) - poses[t]
    mask[rel[:, 0], rel[:, 1]] = True
    return np.kron(mask, np.ones((PATCH_PX, PATCH_PX), dtype=bool))


def last_seen_gap(poses: np.ndarray, t: int) -> int | None:
    """Frames since the region entering view at frame t was last fully in view.

    The entering region is the part of view t outside view t - 1 (patches). None
    when it was never seen (novel content) or when nothing enters (t == 0 or the
    camera stood still).
    """
    if t == 0:
        return None
    entering = _entering_cells(poses, t)
    if len(entering) == 0:
        return None
    for s in range(t - 2, -1, -1):
        rel = entering - poses[s]
        if np.all((rel >= 0) & (rel < FRAME_PATCHES)):
            return t - s
    return None
