"""THE segment loop: walk the plan, generate each segment, commit it, yield it.

Everything a segment needs from the past (context latents, frames held back for a
crossfade) is read from the previous segment's committed state, so the loop starts
equally well from segment 0 or from the middle of a killed render.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from longvid.backends.base import Backend, SegmentRequest
from longvid.mux import encode_frames
from longvid.plan import Plan, Segment
from longvid.rundir import RunDir
from longvid.transitions import crossfade


@dataclass(frozen=True)
class SegmentDone:
    segment: Segment
    skipped: bool  # committed by an earlier run
    seconds: float  # wall time of this segment in this run (0 when skipped)


def render_segments(plan: Plan, backend: Backend | None, run: RunDir, *, crf: int,
                    output_size: tuple[int, int] | None = None,
                    on_start: Callable[[Segment], None] = lambda seg: None,
                    on_step: Callable[[int, int], None] = lambda i, n: None
                    ) -> Iterator[SegmentDone]:
    todo = [seg for seg in plan.segments if not run.is_done(seg.index)]
    if todo:  # every prompt encoded once, up front (a text encoder can then be freed)
        import torch  # only when there is something to generate: a re-join stays light

        assert backend is not None, "segments to generate need a loaded backend"
        backend.prepare(sorted({seg.prompt for seg in todo}), plan.negative_prompt,
                        plan.guidance_scale)
    for seg in plan.segments:
        # 1. skip what an earlier run committed
        if run.is_done(seg.index):
            yield SegmentDone(seg, skipped=True, seconds=0.0)
            continue
        on_start(seg)
        t0 = time.perf_counter()

        # 2. restore what the previous segment left: context latents, held frames
        state = run.load_state(seg.index - 1)
        context = state["context"][:, :, -seg.context_latents:] if seg.context_latents else None

        # 3. generate: (1, C, n, h, w) new latents and their uint8 frames (F, H, W, 3)
        out = backend.generate(SegmentRequest(
            index=seg.index, prompt=seg.prompt, negative_prompt=plan.negative_prompt,
            num_latents=seg.num_latents, context=context, width=plan.width,
            height=plan.height, seed=seg.seed, steps=plan.steps,
            guidance_scale=plan.guidance_scale, fps=plan.fps), on_step)
        frames = out.frames
        if frames.shape[0] != seg.num_frames:
            raise RuntimeError(f"backend {backend.name!r} returned {frames.shape[0]} frames for "
                               f"segment {seg.index}, the plan expects {seg.num_frames}")

        # 4. dissolve the head into the frames the previous take held back
        if seg.blend_frames:
            frames = frames.copy()
            frames[:seg.blend_frames] = crossfade(state["held"].numpy(),
                                                  frames[:seg.blend_frames])

        # 5. write this segment's frames once, and the state the next segment needs
        if seg.emit_frames:
            encode_frames(frames[:seg.emit_frames], run.video(seg.index), plan.fps, crf,
                          size=output_size)
        tail = out.latents if context is None else torch.cat([context, out.latents], dim=2)
        next_state = {"context": tail[:, :, -plan.context_latents:].contiguous()}
        if seg.hold_frames:
            held = frames[seg.emit_frames:seg.emit_frames + seg.hold_frames]
            next_state["held"] = torch.from_numpy(held.copy())
        run.save_state(seg.index, next_state)

        # 6. commit (the record is written last), then yield
        seconds = time.perf_counter() - t0
        run.commit(seg.index, {"index": seg.index, "shot": seg.shot_id, "seed": seg.seed,
                               "prompt": seg.prompt, "frames": seg.emit_frames,
                               "seconds": round(seconds, 3),
                               "stages_s": {k: round(v, 3) for k, v in out.seconds.items()}})
        yield SegmentDone(seg, skipped=False, seconds=seconds)
