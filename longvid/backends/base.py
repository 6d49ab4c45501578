"""The backend seam: capabilities, one request/result pair, and the Protocol.

Torch-free on purpose: `longvid plan` reads `caps` from backend classes without
importing torch. Tensors cross this seam typed as `Any`; shapes are in comments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol


@dataclass(frozen=True)
class BackendCaps:
    """What a backend can do, declared once and read by the planner.

    Frames follow `frame_multiple * k + frame_offset` (4k+1 for Wan); one latent
    frame holds `latent_stride_t` pixel frames, except the first of a take (1 frame).
    """

    native_fps: int
    any_fps: bool  # False: the storyboard fps must equal native_fps
    frame_multiple: int
    frame_offset: int
    latent_stride_t: int
    max_latents: int  # latent frames per window (context included)
    context_latents: int  # latent frames carried from one segment into the next
    size_multiple: int  # width and height must be multiples of this
    max_side: int  # largest width or height the backend accepts
    takes_context: bool  # accepts context latents (continuation inside a take)
    tokens_per_latent_px: int  # spatial patch area in pixels: tokens = T * H * W / this
    memory_latents: int = 0  # recalled keyframe latents a window can take (0: no memory)
    # A backend that follows the storyboard `camera` (procworld) declares its view's side and
    # how far the camera may go, in camera steps; the planner then gives every generated
    # frame a position (see longvid/camera.py). 0: the camera is only a prompt phrase.
    camera_view: int = 0  # side of the view, in camera steps
    camera_range: int = 0  # positions stay within +-camera_range steps on each axis
    reads_prompts: bool = True  # False: prompts change nothing (plan warns)
    corrects_drift: bool = True  # False: anti-drift stays off (it would alter exact pixels)
    # A backend that draws one latent frame per transformer forward (procworld) declares the
    # fixed sequence length of that forward; 0: one forward denoises a whole window.
    tokens_per_forward: int = 0

    @property
    def max_frames(self) -> int:
        return (self.max_latents - 1) * self.latent_stride_t + 1


@dataclass(frozen=True)
class SegmentRequest:
    index: int
    prompt: str  # style and camera already folded in
    negative_prompt: str
    num_latents: int  # new latent frames to generate
    context: Any  # None, or latents (1, C, context_latents, H/8, W/8) to continue from
    width: int
    height: int
    seed: int
    steps: int
    guidance_scale: float
    fps: int
    memory: Any = None  # None, or recalled keyframe latents (1, C, m, H/8, W/8), oldest first
    blend_prompt: str | None = None  # a prompt whose embeddings are mixed into `prompt`'s
    blend_weight: float = 0.0  # weight of blend_prompt: embeds = (1-w)*e(prompt) + w*e(blend)
    # for backends that follow the camera (caps.camera_view > 0), else None:
    camera: tuple[tuple[int, int], ...] | None = None  # (y, x) of [memory | context | new]
    camera_new: tuple[int, ...] | None = None  # per new frame: bitmask of never-seen view cells
    storyboard_seed: int = 0  # the storyboard's `seed` (procworld: picks the world)


@dataclass(frozen=True)
class SegmentOutput:
    latents: Any  # (1, C, num_latents, H/8, W/8) float32, new latents only
    frames: Any  # uint8 numpy (F, H, W, 3): 4n-3 frames without context, 4n with
    seconds: dict[str, float] = field(default_factory=dict)  # per stage wall time


StepCallback = Callable[[int, int], None]  # (step done, steps total)


class Backend(Protocol):
    name: ClassVar[str]
    caps: ClassVar[BackendCaps]

    def load(self, preset: Any, policy: Any = None) -> None:
        """Build or load the models of a `Preset`, placed as the `LoadPolicy` says (None:
        no GPU budget applies). Heavy imports happen here, never at import time."""

    def prepare(self, prompts: list[str], negative_prompt: str, guidance_scale: float) -> None:
        """Encode every prompt the run still needs, before the first segment, so a text
        encoder can be freed before the denoiser runs."""

    def generate(self, request: SegmentRequest, on_step: StepCallback) -> SegmentOutput:
        """Denoise one segment and decode its new frames."""

    def encode_frames(self, frames: Any) -> Any:
        """uint8 (F, H, W, 3), F = 4k+1 -> latents (1, C, k+1, H/8, W/8), for `extend`."""

    def versions(self) -> dict[str, str]:
        """Library and weight versions that determine this backend's output."""


def caps_for(caps: BackendCaps, options: dict[str, Any]) -> BackendCaps:
    """A preset may shrink the window or the memory: options `max_latents`,
    `context_latents` and `memory_latents` (0 turns memory off)."""
    keys = ("max_latents", "context_latents", "memory_latents")
    return replace(caps, **{k: int(options[k]) for k in keys if k in options})
