"""The memory bank: keyframes of what was generated, a fixed budget, deterministic eviction.

After each segment the loop stores a few keyframes (latent, thumbnail, descriptor,
shot, frame, prompt) in the run directory, one file per segment. The bank in RAM
is rebuilt by replaying those files in segment order, and `add` + `evict` are pure
functions of what was added, so a resumed render holds exactly the bank an
uninterrupted one would. Its size is bounded by `capacity`, not by the video's
length; evicted keyframes stay on disk for `longvid report`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from longvid.memory import BANK_CAPACITY

DEFAULT_CAPACITY = BANK_CAPACITY  # keyframes kept in RAM and eligible for retrieval
KEYFRAMES_PER_SEGMENT = 2


@dataclass(frozen=True)
class Keyframe:
    segment: int  # segment that produced it; -1 for the clip given to `extend`
    take: int
    shot_id: str
    frame: int  # timeline frame (negative for a clip's frames before the extension)
    prompt: str
    latent: np.ndarray  # float32 (C, h, w): one latent frame, normalized like the backend's
    thumb: np.ndarray  # uint8 (64, 64, 3)
    descriptor: np.ndarray  # float32 (D,), see descriptor.describe
    sharpness: float
    # uint8 (H, W, 3), the keyframe's full-resolution frame: kept only for a backend that
    # takes recalled keyframes as frames (caps.memory.frames, VACE's reference images)
    image: np.ndarray | None = None

    @property
    def key(self) -> tuple[int, int]:
        return (self.segment, self.frame)


class MemoryBank:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("a memory bank needs room for at least one keyframe")
        self.capacity = capacity
        self.entries: list[Keyframe] = []  # in insertion order
        self.last: list[Keyframe] = []  # what the latest segment added, evicted or not

    def add(self, keyframes: list[Keyframe]) -> None:
        self.last = list(keyframes)
        self.entries.extend(keyframes)
        while len(self.entries) > self.capacity:
            self.entries.remove(self._victim())

    def anchor_of(self, take: int, shot_id: str) -> Keyframe | None:
        """The first keyframe of `shot_id` in `take` (None before the shot has one): what
        the drift monitor compares with. Anchors are evicted last: only from a bank that
        holds nothing but anchors (see `_victim`)."""
        return next((e for e in self.entries if e.take == take and e.shot_id == shot_id), None)

    def of_shot(self, shot_id: str) -> list[Keyframe]:
        return [e for e in self.entries if e.shot_id == shot_id]

    def _victim(self) -> Keyframe:
        """The entry to forget: never a shot's first keyframe (its anchor, what `recall`
        and anti-drift use) while others remain; among the rest, the one most like another
        entry (a near-duplicate adds least), the older on ties."""
        firsts: dict[str, Keyframe] = {}
        for e in self.entries:
            firsts.setdefault(e.shot_id, e)
        protected = {id(e) for e in firsts.values()}
        pool = [i for i, e in enumerate(self.entries) if id(e) not in protected] or \
            list(range(len(self.entries) - 1))
        unit = np.stack([e.descriptor / max(float(np.linalg.norm(e.descriptor)), 1e-12)
                         for e in self.entries])  # (n, D)
        sims = unit @ unit.T  # cosine of every pair, (n, n)
        np.fill_diagonal(sims, -np.inf)
        closest = sims.max(axis=1)
        best = max(pool, key=lambda i: (round(float(closest[i]), 9), -i))
        return self.entries[best]
