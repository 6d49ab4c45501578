"""THE segment loop: walk the plan, generate each segment, commit it, yield it.

Everything a segment needs from the past (context latents, frames held back for a
crossfade, the memory bank of keyframes) is read from committed files, so the loop
starts equally well from segment 0 or from the middle of a killed render.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from longvid import signals
from longvid.backends.base import Backend, SegmentRequest, ViewPath
from longvid.memory.bank import DEFAULT_CAPACITY, MemoryBank
from longvid.memory.drift import correct_frames, correct_latents, read_drift
from longvid.memory.recall import choose_memory, memory_order, stack_frames, stack_latents
from longvid.memory.store import (
    load_keyframes,
    memory_path,
    pick_keyframes,
    replay_bank,
    save_keyframes,
)
from longvid.mux import encode_frames
from longvid.plan import Plan, Segment
from longvid.rundir import RunDir
from longvid.segment_inputs import SegmentInputs
from longvid.stream_work import prompt_switched
from longvid.transitions import crossfade


@dataclass(frozen=True)
class SegmentDone:
    segment: Segment
    skipped: bool  # committed by an earlier run
    seconds: float  # wall time of this segment in this run (0 when skipped)


def render_segments(plan: Plan, backend: Backend | None, run: RunDir, *, crf: int,
                    output_size: tuple[int, int] | None = None,
                    memory_capacity: int = DEFAULT_CAPACITY,
                    on_start: Callable[[Segment], None] = lambda seg: None,
                    on_step: Callable[[int, int], None] = lambda i, n: None
                    ) -> Iterator[SegmentDone]:
    def step(i: int, n: int) -> None:
        signals.check()  # a stop a library swallowed ends the segment here (longvid.signals)
        on_step(i, n)

    todo = [seg for seg in plan.segments if not run.is_done(seg.index)]
    as_frames = False  # recalled keyframes go in as latents
    recall_only = False  # True: only `recall` (the model's own memory does the rest)
    if todo:  # every prompt encoded once, up front (a text encoder can then be freed)
        import torch  # only when there is something to generate: a re-join stays light

        assert backend is not None, "segments to generate need a loaded backend"
        prompts = {seg.prompt for seg in todo} | {seg.blend_prompt for seg in todo
                                                  if seg.blend_prompt}
        if backend.caps.sink is not None:  # a take's sink stays under its first prompt
            prompts |= {stream_facts(plan, seg, True)["sink_prompt"] for seg in todo}
        backend.prepare(sorted(prompts), plan.negative_prompt, plan.guidance_scale)
        inputs = SegmentInputs(plan, backend)  # images and LoRA files, found up front
        # ... or as full-resolution frames (VACE's reference images)
        as_frames = backend.caps.memory is not None and backend.caps.memory.frames
        recall_only = backend.caps.memory is not None and backend.caps.memory.recall_only
    bank: MemoryBank | None = None
    for seg in plan.segments:
        # 1. skip what an earlier run committed (after an edit, maybe after a segment
        # rendered again: then the bank, already built, takes its keyframes as replay would)
        if run.is_done(seg.index):
            if bank is not None:
                bank.add(load_keyframes(memory_path(run.segments, seg.index)))
            yield SegmentDone(seg, skipped=True, seconds=0.0)
            continue
        signals.check()
        on_start(seg)
        t0 = time.perf_counter()

        # 2. restore what the past left: context latents, held frames, the memory bank
        state = run.load_state(seg.index - 1)
        context = state["context"][:, :, -seg.context_latents:] if seg.context_latents else None
        sink = state.get("sink") if context is not None else None  # the take's first latents
        history = state.get("history") if context is not None else None  # for the decoder
        lo = seg.first_latent - seg.context_latents  # where the context starts in the take
        # the sink latents the context lacks: [0, lo) of the take; all of them when the
        # take continues a clip (`extend`: lo < 0), whose first latents precede its tail
        lacking = sink
        if sink is not None and lo >= 0:
            lacking = sink[:, :, :lo] if lo > 0 else None
        if bank is None:
            bank = replay_bank(run.segments, seg.index, memory_capacity)

        # 3. remember: recalled shots, the shot's anchor, retrieved keyframes
        picks = choose_memory(bank, segment=seg.index, take=seg.take, shot_id=seg.shot_id,
                              recall=seg.recall, continuing=context is not None,
                              budget=plan.memory_latents, near=keyframe_distance(plan, seg),
                              recall_only=recall_only)
        memory: Any = stack_frames(picks) if as_frames else stack_latents(picks)
        if memory is not None and not as_frames:
            memory = torch.from_numpy(memory)  # (1, C, m, h, w)
        view = segment_view(plan, seg, [(k.take, k.frame) for k in memory_order(picks)])

        # 4. generate: (1, C, n, h, w) new latents and their uint8 frames (F, H, W, 3)
        out = backend.generate(SegmentRequest(
            prompt=seg.prompt, negative_prompt=plan.negative_prompt,
            num_latents=seg.num_latents, context=context, width=plan.width,
            height=plan.height, seed=seg.seed, steps=plan.steps,
            guidance_scale=plan.guidance_scale, fps=plan.fps,
            memory=memory,
            blend_prompt=seg.blend_prompt, blend_weight=seg.blend_weight, view=view,
            sink=lacking, history=history,
            **(stream_facts(plan, seg, continuing=context is not None)
               if backend.caps.sink is not None else {}),
            images=inputs.images(seg), loras=inputs.loras(seg)), step)
        frames = out.frames
        if frames.shape[0] != seg.num_frames:
            raise RuntimeError(f"backend {backend.name!r} returned {frames.shape[0]} frames for "
                               f"segment {seg.index}, the plan expects {seg.num_frames}")

        # 5. measure drift against the shot's anchor; correct pixels and carried latents
        new_latents = out.latents[0].float().numpy()  # (C, n, h, w)
        anchor = bank.anchor_of(seg.take, seg.shot_id)
        drift = read_drift(new_latents, frames, anchor)
        corrected = plan.anti_drift and anchor is not None and drift.drifted()
        if corrected:
            frames = correct_frames(frames, anchor)
        if seg.image is not None:  # a shot's first frame is its image, not a decode of it
            frames = frames.copy()
            frames[0] = inputs.first_frame(seg)

        # 6. dissolve the head into the frames the previous take held back
        if seg.blend_frames:
            frames = frames.copy()
            frames[:seg.blend_frames] = crossfade(state["held"].numpy(),
                                                  frames[:seg.blend_frames])

        # 7. write this segment's frames once, the state the next segment needs, and
        # its keyframes for the bank
        if seg.emit_frames:
            encode_frames(frames[:seg.emit_frames], run.video(seg.index), plan.fps, crf,
                          size=output_size)
        tail = out.latents if context is None else torch.cat([context, out.latents], dim=2)
        tail = tail[:, :, -plan.context_latents:].contiguous()
        if corrected:
            tail = torch.from_numpy(correct_latents(tail.float().numpy(), anchor))
        next_state = {"context": tail}
        if backend.caps.sink is not None:  # carried through the take, for the cache's sink
            head = out.latents if context is None else (
                None if sink is None else torch.cat([sink, out.latents], dim=2))
            if head is not None:
                next_state["sink"] = head[:, :, :backend.caps.sink.latents].clone()
        if backend.caps.decode is not None:  # the take's latents as decoded, uncorrected
            past = history if history is not None else context  # extend: only the context
            made = out.latents if past is None else torch.cat([past, out.latents], dim=2)
            next_state["history"] = made[:, :, -backend.caps.decode.history_latents:].clone()
        if seg.hold_frames:
            held = frames[seg.emit_frames:seg.emit_frames + seg.hold_frames]
            next_state["held"] = torch.from_numpy(held.copy())
        run.save_state(seg.index, next_state)
        keyframes = pick_keyframes(
            segment=seg.index, take=seg.take, shot_id=seg.shot_id, prompt=seg.prompt,
            start_frame=seg.start_frame, latents=new_latents, frames=frames,
            continuing=context is not None, stride=plan.latent_stride_t,
            keep_images=as_frames)
        save_keyframes(memory_path(run.segments, seg.index), keyframes)

        # 8. commit (the record is written last), then yield
        bank.add(keyframes)
        seconds = time.perf_counter() - t0
        run.commit(seg.index, {
            "index": seg.index, "shot": seg.shot_id, "seed": seg.seed, "prompt": seg.prompt,
            "frames": seg.emit_frames, "seconds": round(seconds, 3),
            "stages_s": {k: round(v, 3) for k, v in out.seconds.items()},
            "memory": [p.describe() for p in picks],
            "drift": drift.to_dict() | {"corrected": corrected}})
        yield SegmentDone(seg, skipped=False, seconds=seconds)


def stream_facts(plan: Plan, seg: Segment, continuing: bool) -> dict[str, Any]:
    """The request fields of a segment continuing a take for a backend with `caps.sink`:
    the take's first prompt, where the context starts, whether the prompt switched."""
    first = next(s for s in plan.segments if s.take == seg.take)
    switched = continuing and prompt_switched(plan.segments, seg)
    return {"sink_prompt": first.prompt, "switched": switched,
            "context_start": seg.first_latent - seg.context_latents}


def segment_view(plan: Plan, seg: Segment, memory: list[tuple[int, int]]) -> ViewPath | None:
    """The camera path of a segment for a backend that follows the camera, else None.
    `memory`: the recalled keyframes' (take, timeline frame), in the order their latents
    are stacked; positions are those of [memory | context | new]."""
    take = plan.takes[seg.take]
    if not take.camera:
        return None
    lo, hi = seg.first_latent - seg.context_latents, seg.first_latent + seg.num_latents
    positions = tuple(plan.takes[t].position(f) for t, f in memory) + take.camera[lo:hi]
    return ViewPath(positions, take.camera_new[seg.first_latent:hi], world_seed=plan.seed)


def keyframe_distance(plan: Plan, seg: Segment) -> Callable[[Any], int] | None:
    """Steps (Chebyshev) from a keyframe's camera position to the segment's first frame;
    None when the backend does not follow the camera. Keyframes need `take` and `frame`."""
    take = plan.takes[seg.take]
    if not take.camera:
        return None
    y, x = take.camera[seg.first_latent]

    def distance(keyframe: Any) -> int:
        ky, kx = plan.takes[keyframe.take].position(keyframe.frame)
        return max(abs(ky - y), abs(kx - x))

    return distance
