"""A segment: one model-sized piece of a take, the unit the segment loop generates,
commits and resumes from. Built by plan.py; its streaming work is counted in
stream_work.py."""

from __future__ import annotations

from dataclasses import dataclass

from longvid.images import ImageFile


@dataclass(frozen=True)
class Segment:
    index: int
    take: int
    shot_id: str
    first_latent: int  # take-local index of its first new latent
    num_latents: int  # new latents
    context_latents: int  # latents carried in from the previous segment (0 at a take start)
    start_frame: int  # timeline frame of its first new frame (negative only in a crossfade lead)
    num_frames: int  # new frames the backend returns
    blend_frames: int  # first frames dissolved with the held tail of the previous take
    emit_frames: int  # frames written to the video (blended ones included)
    hold_frames: int  # frames kept back for the next take's crossfade
    prompt: str
    seed: int
    blend_prompt: str | None = None  # mixed into `prompt` during a `continue` transition
    blend_weight: float = 0.0  # weight of blend_prompt's embeddings
    recall: tuple[str, ...] = ()  # shots whose keyframes this segment is given (`recall`)
    image: ImageFile | None = None  # the take's first frame (first segment of a take only)
    refs: tuple[ImageFile, ...] = ()  # reference images (a backend with `caps.images.refs`)
    lora_weights: tuple[float, ...] = ()  # weight of each of the plan's `loras`
