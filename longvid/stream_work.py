"""The work of a streaming backend (`caps.stream`) over a plan's segments: the
transformer forwards its engine runs per block, the clean passes that rebuild its KV
cache at each segment that continues a take (pins, sink, context; one forward at a
prompt switch, LongLive's rule), and the most latents one forward takes. Pure; the
engine this mirrors is backends/causal_engine.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from longvid.backends.base import BackendCaps
from longvid.segments import Segment


@dataclass(frozen=True)
class StreamWork:
    """The transformer forwards of a streaming backend (`caps.stream`), as its engine runs
    them: per block, one forward per step and one clean pass at t = 0; per segment that
    continues a take, clean passes replaying the take's sink (one forward) and its context
    latents (one per block) to rebuild the KV cache."""

    block_latents: int
    blocks: int  # blocks denoised (a segment's last one may be shorter)
    forwards_per_block: int  # steps + 1 (the clean pass)
    replay_forwards: int  # cache rebuilds, all segments together
    cached_latents: int  # latent frames the KV cache holds at most
    kv_gib_per_latent: float  # its keys and values per latent frame at the plan's size


def prompt_switched(segments: Sequence[Segment], seg: Segment) -> bool:
    """A segment continuing its take under other conditioning than the segment before it
    (a timed prompt, a `continue`, a blend step): a stream re-caches at it."""
    prev = segments[seg.index - 1] if seg.index > 0 else None
    return bool(seg.context_latents) and prev is not None and prev.take == seg.take and (
        (prev.prompt, prev.blend_prompt, prev.blend_weight)
        != (seg.prompt, seg.blend_prompt, seg.blend_weight))


def sink_replayed(seg: Segment, caps: BackendCaps, clip: bool | None) -> int:
    """Latents of the take's sink a segment replays before its context (0: none): those
    the context lacks, [0, where the context starts). `clip`: None, or whether the clip a
    first take continues (`extend`) gave it a sink (its first latents, all of which
    precede the context); without one, that take carries no sink at all."""
    assert caps.stream is not None
    lo = seg.first_latent - seg.context_latents  # where the context starts in the take
    if (not seg.context_latents or caps.sink is None or not caps.stream.sink_latents
            or (seg.take == 0 and clip is False)):
        return 0
    full = min(caps.sink.latents, caps.stream.sink_latents)
    if lo < 0:
        return full if seg.take == 0 and clip else 0
    return min(lo, full)


def rebuild_forwards(segments: Sequence[Segment], seg: Segment, caps: BackendCaps,
             clip: bool | None) -> list[int]:
    """The latents of each forward that rebuilds a segment's cache, as
    causal_engine.rebuild runs them: a memory engine's pins first (one pass each, or one
    over them all), the sink in one clean pass, then the context block by block; at a
    prompt switch (where the engine re-caches) the context in one forward, or sink and
    context together when the context reaches back to the sink; plus one clean pass over
    a take's image."""
    stream = caps.stream
    assert stream is not None
    block, c = stream.block_latents, seg.context_latents
    image = [1] if seg.image is not None else []
    m = pinned_latents(segments, seg, caps)
    pins = ([1] * m if stream.pin_each else [m]) if m else []
    if not c:
        return pins + image
    sink = sink_replayed(seg, caps, clip)
    lo = seg.first_latent - c
    if prompt_switched(segments, seg) and stream.recache_on_switch:
        if not sink or lo <= stream.sink_latents:
            return pins + [sink + c] + image
        return pins + [sink, c] + image
    return (pins + ([sink] if sink else []) + [min(block, c - i) for i in range(0, c, block)]
            + image)


def pinned_latents(segments: Sequence[Segment], seg: Segment, caps: BackendCaps) -> int:
    """Recalled latents a memory engine pins at a segment's start: one keyframe of each
    shot its `recall` names that an earlier segment made (the loop's recall-only picks,
    memory.recall.choose_memory), at most the backend's memory budget."""
    if not seg.recall or not caps.memory_latents:
        return 0
    made = {s.shot_id for s in segments[:seg.index]}
    return min(caps.memory_latents, sum(r in made for r in seg.recall))


def stream_work(segments: list[Segment], caps: BackendCaps, steps: int,
                 tokens_per_latent: int, clip: bool | None) -> StreamWork:
    stream = caps.stream
    assert stream is not None
    block = stream.block_latents
    # a take's starting image is one clean pass; the latents after it are denoised in blocks
    blocks = sum(-(-(s.num_latents - (s.image is not None)) // block) for s in segments)
    replay = sum(len(rebuild_forwards(segments, s, caps, clip)) for s in segments)
    return StreamWork(block_latents=block, blocks=blocks, forwards_per_block=steps + 1,
                      replay_forwards=replay, cached_latents=stream.cached_latents,
                      kv_gib_per_latent=stream.kv_bytes_per_latent(tokens_per_latent) / 2**30)


def stream_max_latents(segments: list[Segment], caps: BackendCaps, clip: bool | None) -> int:
    """The most latents one forward of a stream takes: a block, or a replay forward."""
    assert caps.stream is not None
    block = caps.stream.block_latents
    return max(max([min(block, s.num_latents), *rebuild_forwards(segments, s, caps, clip)])
               for s in segments)
