"""What a segment is made of, as a hash: which committed segments a changed storyboard
can reuse. Pure, torch-free (`longvid plan` shows reuse without it).

A run has one *run key*: what every segment shares and an edit cannot change without
starting over (preset, backend, size, fps, steps, guidance, CRF, `extend`'s clip).
Inside a run, each segment has an *identity*: the hash of its own inputs (every field
of the planned segment: index, frames, prompts and mix, seed, recall, images, LoRA
weights; the camera path of its frames; the storyboard-wide settings such as the
negative prompt, the seed, anti-drift and the LoRA files) and of the identities of
the segments it reads from disk:

- the previous segment of its take (context latents, the take's sink, the shot's
  drift anchor), and so, one after another, every earlier segment of the take;
- the previous segment when it dissolves into that segment's held frames (crossfade);
- every earlier segment when it reads the memory bank beyond its take: with memory,
  a continuing segment retrieves from every earlier keyframe and a `recall` picks
  among the survivors of eviction; without memory too once the plan has more shots
  than the bank holds anchors, because eviction then reaches the anchors.

Reuse is by position: the identity holds the segment's index, as do the files a
segment leaves (keyframes name their segment). A segment committed with the identity
that the new plan gives the same index is reused; any other is rendered again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import Any

from longvid.memory import BANK_CAPACITY
from longvid.plan import Plan, Segment

IDENTITY_VERSION = 1  # bump when the loop reads something new: old runs then re-render
# what every segment of a run shares: a change needs --fresh
RUN_FIELDS = ("preset", "backend", "fps", "width", "height", "steps", "guidance_scale",
              "context_latents", "latent_stride_t", "memory_latents")
# plan fields that sum up or describe all segments: each segment's part is in its own
# fields (a new plan field is, conservatively, storyboard-wide: in every identity)
_NOT_GLOBAL = {"title", "storyboard", "content_sha256", "total_frames", "shots", "takes",
               "segments", "switches", "warnings", "forwards", "max_tokens", *RUN_FIELDS}


def run_key(plan: Plan, preset_sha256: str, crf: int, extra: str = "") -> str:
    """The hash a run directory is bound to; `extra`: `extend`'s clip hash."""
    data = {name: getattr(plan, name) for name in RUN_FIELDS}
    text = json.dumps({"identity_version": IDENTITY_VERSION, "plan": data,
                       "preset_sha256": preset_sha256, "crf": crf, "extra": extra},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def depends_on(plan: Plan, index: int) -> tuple[tuple[int, ...], bool]:
    """(earlier segments segment `index` reads directly, whether it reads all of them)."""
    seg = plan.segments[index]
    prev = plan.segments[index - 1] if index else None
    direct = []
    if prev is not None and (prev.take == seg.take or seg.blend_frames):
        direct.append(index - 1)
    reads_bank = plan.memory_latents > 0 and (bool(seg.recall) or seg.context_latents > 0)
    anchors_evicted = len(plan.shots) + 1 > BANK_CAPACITY  # + 1: `extend`'s clip
    return tuple(direct), index > 0 and (reads_bank or anchors_evicted)


def segment_identities(plan: Plan) -> tuple[str, ...]:
    """One hex SHA-256 per segment of `plan`, in order (see the module docstring)."""
    shared = _digest({k: v for k, v in asdict(plan).items() if k not in _NOT_GLOBAL})
    identities: list[str] = []
    past = _digest("start")  # all identities so far, folded one by one
    for seg in plan.segments:
        direct, everything = depends_on(plan, seg.index)
        identities.append(_digest({
            "version": IDENTITY_VERSION, "shared": shared, "own": _own(plan, seg),
            "direct": [identities[d] for d in direct], "past": past if everything else None}))
        past = _digest([past, identities[-1]])
    return tuple(identities)


def _own(plan: Plan, seg: Segment) -> dict[str, Any]:
    """The segment's own inputs: every planned field, and its take's camera path over the
    latents it sees (context and new; empty for a backend that ignores the camera)."""
    take = plan.takes[seg.take]
    lo, hi = seg.first_latent - seg.context_latents, seg.first_latent + seg.num_latents
    return asdict(seg) | {"origin": take.origin, "camera": take.camera[max(lo, 0):hi],
                          "camera_new": take.camera_new[seg.first_latent:hi]}


def reroll_seed(seed: int, count: int) -> int:
    """The seed of a segment whose shot was rerolled `count` times (63 bits, stable)."""
    digest = hashlib.sha256(f"longvid:reroll:{seed}:{count}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def rerolled(plan: Plan, rerolls: Mapping[str, int]) -> Plan:
    """`plan` with every segment of a shot rerolled n times given a new seed."""
    if not any(rerolls.get(seg.shot_id) for seg in plan.segments):
        return plan
    return replace(plan, segments=tuple(
        replace(seg, seed=reroll_seed(seg.seed, rerolls[seg.shot_id]))
        if rerolls.get(seg.shot_id) else seg for seg in plan.segments))


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
