"""What a segment remembers: explicit recall, the shot's anchor, automatic retrieval. Pure.

Within the backend's budget of `memory_latents` keyframes, in this order:
1. `recall: [shot ids]` of the storyboard: each named shot's sharpest keyframe, or,
   for a backend that follows the camera, the one nearest the camera (`near`);
2. the anchor (sink) of the current shot, once the shot has moved past its first
   segment's context, so a long shot keeps looking at where it began;
3. automatic retrieval inside a take: earlier keyframes whose descriptor is close to
   the last generated keyframe (cosine above `threshold`), minus a penalty for the
   most recent segments (already in context), skipping near-duplicates of a pick.
A cut starts a new place: there is nothing to query with until the shot has frames,
so the first segment after a cut remembers only what `recall` names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from longvid.memory.bank import Keyframe, MemoryBank
from longvid.memory.descriptor import similarity

AUTO_THRESHOLD = 0.9  # cosine of descriptors; same place ~0.95+, other places lower
RECENT_SEGMENTS = 2  # keyframes this recent are in the context already
RECENT_PENALTY = 0.2
DUPLICATE = 0.98  # a candidate this close to a pick adds nothing


@dataclass(frozen=True)
class Recalled:
    keyframe: Keyframe
    reason: str  # "recall" | "anchor" | "auto"
    score: float

    def describe(self) -> dict[str, Any]:
        k = self.keyframe
        return {"reason": self.reason, "shot": k.shot_id, "segment": k.segment,
                "frame": k.frame, "score": round(self.score, 4)}


def choose_memory(bank: MemoryBank, *, segment: int, take: int, shot_id: str,
                  recall: tuple[str, ...], continuing: bool, budget: int,
                  threshold: float = AUTO_THRESHOLD,
                  near: Callable[[Keyframe], int] | None = None,
                  recall_only: bool = False) -> list[Recalled]:
    """`near`: camera steps from a keyframe to this segment's view (camera backends).
    `recall_only`: step 1 alone, for a model with a trained memory of its own."""
    picks: list[Recalled] = []
    if budget <= 0:
        return picks

    def taken(k: Keyframe) -> bool:
        return any(p.keyframe.key == k.key for p in picks)

    # 1. explicit recall: the sharpest (or nearest) keyframe of each named shot
    for rid in recall:
        frames = bank.of_shot(rid)
        if frames and len(picks) < budget:
            best = max(frames, key=lambda k: (-near(k) if near else 0, k.sharpness,
                                              -k.segment, -k.frame))
            picks.append(Recalled(best, "recall", 1.0))

    if recall_only:
        return picks

    # 2. the shot's anchor, once it has left the carried context
    anchor = bank.anchor_of(take, shot_id)
    if (continuing and anchor is not None and len(picks) < budget and not taken(anchor)
            and anchor.segment < segment - 1):
        picks.append(Recalled(anchor, "anchor", 1.0))

    # 3. automatic retrieval, queried with the last generated keyframe
    if not continuing or not bank.last or len(picks) >= budget:
        return picks
    query = bank.last[-1].descriptor
    in_context = {k.key for k in bank.last}
    scored = []
    for k in bank.entries:
        if taken(k) or k.key in in_context or k.segment >= segment - 1:  # the context's
            continue
        score = similarity(query, k.descriptor)
        if k.segment >= segment - 1 - RECENT_SEGMENTS:
            score -= RECENT_PENALTY
        if score >= threshold:
            scored.append((score, k))
    scored.sort(key=lambda sk: (-sk[0], sk[1].segment, sk[1].frame))
    for score, k in scored:
        if len(picks) >= budget:
            break
        if any(similarity(k.descriptor, p.keyframe.descriptor) > DUPLICATE for p in picks):
            continue
        picks.append(Recalled(k, "auto", score))
    return picks


def memory_order(picks: list[Recalled]) -> list[Keyframe]:
    """The picked keyframes in the order their latents are stacked: oldest first."""
    return [p.keyframe for p in sorted(picks, key=lambda p: (p.keyframe.segment,
                                                             p.keyframe.frame))]


def stack_latents(picks: list[Recalled]) -> np.ndarray | None:
    """The picks' latents, oldest first: float32 (1, C, m, h, w), or None."""
    if not picks:
        return None
    return np.stack([k.latent for k in memory_order(picks)], axis=1)[None].astype(np.float32)


def stack_frames(picks: list[Recalled]) -> tuple[np.ndarray, ...] | None:
    """The picks' full-resolution frames, oldest first: uint8 (H, W, 3) each, or None.
    For a backend that takes keyframes as frames, whose bank keeps them (store.py)."""
    if not picks:
        return None
    frames = tuple(k.image for k in memory_order(picks))
    assert all(f is not None for f in frames), "keyframes were stored without their frames"
    return frames  # type: ignore[return-value]
