"""The backend seam: capabilities, typed options, one request/result pair, the Protocol.

Torch-free on purpose: `longvid plan` reads `caps` and `Options` from backend classes
without importing torch. Tensors cross this seam typed as `Any`; shapes are in comments.

`BackendCaps` has a core every backend fills in (what the planner needs to cut a
storyboard into windows) and optional parts a backend declares only when it has the
ability: taking recalled keyframes (`memory`), following the storyboard camera
(`camera`), drawing one latent frame per forward (`per_frame`), streaming blocks
through a KV cache (`stream`), keeping a take's first latents as an attention sink
(`sink`), starting a take from a storyboard image or taking reference images
(`images`), applying LoRAs (`lora`). `SegmentRequest` mirrors
that: core fields every backend reads, and parts filled in only for a backend that
declared the matching ability (`memory`, `view`, `sink`, `images`, `loras`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field

# -- capabilities -------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryCaps:
    """The backend takes recalled keyframes in front of its window.

    `trained`: the model was trained to take them (procworld's memory variant). A backend
    whose injection no training ever saw declares `opt_in`: its presets plan without memory
    (0 keyframes) unless their options set `memory_latents`. `frames`: the keyframes enter
    as full-resolution uint8 frames, not latents (VACE's reference images), so the bank
    keeps each keyframe's frame as well. `recall_only`: the model keeps a trained memory of
    its own (MAG's slots, MemFlow's bank), so longvid adds only what `recall` names, never
    the shot's anchor or its own retrieval.
    """

    latents: int  # recalled keyframes one window can take (0: memory available, but off)
    trained: bool = False
    opt_in: bool = False
    frames: bool = False
    recall_only: bool = False

    @property
    def kind(self) -> str:
        """What `plan` calls it (see MEMORY_KINDS)."""
        return "trained" if self.trained else "opt-in untrained" if self.opt_in else "untrained"


# What memory a preset has, as `plan` says it. "untrained": on by default though no training
# taught the model to use it (only the `tiny` test model, whose weights are random anyway).
MEMORY_KINDS = ("trained", "untrained", "opt-in untrained", "none")


@dataclass(frozen=True)
class CameraCaps:
    """The backend follows the storyboard `camera` (procworld): the planner gives every
    generated frame a position (longvid/camera.py). Without this part the camera is only a
    prompt phrase."""

    view_steps: int  # side of the view, in camera steps
    range_steps: int  # positions stay within +-range_steps on each axis


@dataclass(frozen=True)
class PerFrameWork:
    """The backend draws one latent frame per transformer forward (procworld), each of a
    fixed sequence length. Without this part one forward denoises a whole window."""

    tokens_per_forward: int


@dataclass(frozen=True)
class SinkCaps:
    """The backend's cache keeps a take's first latents as an attention sink (LongLive):
    the loop carries them from the take's first segment to every later one."""

    latents: int  # how many of a take's first latents


@dataclass(frozen=True)
class StreamCaps:
    """The backend streams a segment block by block through a KV cache of past latent
    frames (causal-wan, tiny-causal). Each block of `block_latents` is denoised in one
    forward per step, then one clean forward writes its keys and values; a segment that
    continues a take first replays its sink (one forward) and its context (a forward per
    block) to rebuild the cache. The planner counts those forwards; the VRAM budget keeps
    the cache on the GPU beside the transformer. A preset's options shape it
    (`caps_for` calls their `stream_caps`). A memory engine (MAG, MemFlow) first pins a
    segment's recalled latents, and its cache holds its memory too (MAG's slots,
    MemFlow's bank): `cached_latents` counts them."""

    block_latents: int  # latent frames denoised together, one forward per step
    sink_latents: int  # a take's first latents, replayed in one forward as the cache's sink
    cached_latents: int  # latent frames the cache holds per layer, at most
    attended_latents: int  # latent frames one block attends to (cache seen + itself)
    layers: int  # transformer blocks, each caching its own keys and values
    kv_width: int  # elements of one token's key (or value) in one layer: heads x head dim
    head_dim: int = 128  # elements of one head's key: fp8 keeps one fp32 scale per head
    kv_bytes_per_element: float = 2  # bf16; set from the options (kv_bytes_per_element())
    # a memory engine's rebuild (causal_memory.py): recalled latents pinned first, one
    # forward per latent (MAG's memory model writes them one by one) or one over them all
    pin_each: bool = False
    recache_on_switch: bool = True  # False: a prompt switch replays the context by blocks

    @property
    def kv_storage(self) -> str:
        """The cached keys' dtype, as `plan` names it."""
        return "bf16" if self.kv_bytes_per_element >= 2 else "fp8"

    def kv_bytes_per_latent(self, tokens_per_latent: int) -> int:
        """Keys and values of one latent frame in every layer: 1560 tokens x 1536 x 2
        (K, V) x 30 layers x 2 B = 287.5 MB for Wan-1.3B at 832x480 in bf16 (fp8 with its
        scales: 1 + 4/128 B, 148.2 MB)."""
        return round(tokens_per_latent * self.kv_width * 2 * self.layers
                     * self.kv_bytes_per_element)

    def kv_bytes(self, tokens_per_latent: int) -> int:
        """The cache at its fullest, plus the copies one layer's attention makes while it
        runs (the frames it attends to, gathered, and the cache grown by the block before
        eviction): about two attended windows of one layer."""
        per_layer = self.kv_bytes_per_latent(tokens_per_latent) // self.layers
        return per_layer * (self.cached_latents * self.layers + 2 * self.attended_latents)


@dataclass(frozen=True)
class StreamDecodeCaps:
    """The backend decodes a take as one causal stream (its VAE decoder's feature cache
    lives from segment to segment): the loop carries the take's last `history_latents`
    latents, from which the backend rebuilds that cache exactly when it lost it (a
    resumed render). `cache_elements_per_latent_px`: the size of that cache, in elements
    of the VAE's dtype per latent pixel (H/8 x W/8), held for the whole take."""

    history_latents: int
    cache_elements_per_latent_px: int
    gpu_bytes_per_element: int = 4  # the VAE's dtype on a GPU (fp32: 4, bf16: 2)

    def cache_bytes(self, latent_px: int) -> int:
        """The decoder's feature cache on a GPU for latents of `latent_px` (H/8 x W/8)."""
        return self.cache_elements_per_latent_px * latent_px * self.gpu_bytes_per_element


@dataclass(frozen=True)
class ImageCaps:
    """The backend takes storyboard images. `first_frame`: a shot's `image:` enters as the
    take's first latent, held clean like context, so the take continues from it. `refs`:
    `refs:` enter as reference images (VACE's reference frames)."""

    first_frame: bool = False
    refs: bool = False


@dataclass(frozen=True)
class LoraCaps:
    """The backend applies LoRAs to its transformer through diffusers' LoRA loading
    (longvid/backends/lora.py); `family` names the checkpoint layout LoRAs are converted
    from ("wan": diffusers, original Wan/ComfyUI and musubi key names)."""

    family: str


@dataclass(frozen=True)
class BackendCaps:
    """What a backend can do, declared once and read by the planner.

    One latent frame holds `latent_stride_t` pixel frames, except the first of a take
    (1 frame): a take of n latents has (n-1)*stride+1 frames (4n-3 for Wan).
    """

    native_fps: int
    any_fps: bool  # False: the storyboard fps must equal native_fps
    latent_stride_t: int
    max_latents: int  # latent frames per window (context included)
    context_latents: int  # latent frames carried from one segment into the next
    size_multiple: int  # width and height must be multiples of this
    max_side: int  # largest width or height the backend accepts
    takes_context: bool  # accepts context latents (continuation inside a take)
    tokens_per_latent_px: int  # spatial patch area in pixels: tokens = T * H * W / this
    # optional parts: None when the backend lacks the ability
    memory: MemoryCaps | None = None
    camera: CameraCaps | None = None
    per_frame: PerFrameWork | None = None
    stream: StreamCaps | None = None
    sink: SinkCaps | None = None
    decode: StreamDecodeCaps | None = None
    images: ImageCaps | None = None
    lora: LoraCaps | None = None
    # opt-outs, for backends whose pictures are not prompted diffusion (procworld)
    reads_prompts: bool = True  # False: prompts change nothing (plan warns)
    corrects_drift: bool = True  # False: anti-drift stays off (it would alter exact pixels)

    @property
    def max_frames(self) -> int:
        return (self.max_latents - 1) * self.latent_stride_t + 1

    @property
    def memory_latents(self) -> int:
        """Recalled keyframes a window can take (0: no memory, or memory left off)."""
        return self.memory.latents if self.memory is not None else 0

    @property
    def memory_kind(self) -> str:
        """One of MEMORY_KINDS."""
        return self.memory.kind if self.memory is not None else "none"


# -- options ------------------------------------------------------------------------------


class BackendOptions(BaseModel):
    """A preset's `options:`, validated when the preset loads. Every backend's `Options`
    subclasses this; these three shrink the backend's window or memory (unset: the
    backend's own)."""

    # strict: YAML's `true` is no number and 1 no switch; finite: no .nan or 1e400
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    max_latents: int | None = Field(
        None, ge=1, description="latent frames per window, context included (at most the "
                                "backend's)")
    context_latents: int | None = Field(
        None, ge=0, description="latent frames carried into the next window (fewer than "
                                "max_latents)")
    memory_latents: int | None = Field(
        None, ge=0, description="recalled keyframe latents per window; 0 turns memory off")


class OptInMemoryOptions(BackendOptions):
    """Options of a backend whose memory is `MemoryCaps(opt_in=True)`: the same key, off
    unless set."""

    memory_latents: int | None = Field(
        None, ge=0, description="opt-in: recalled keyframes per window, fed in a way the "
                                "model was never trained on (unmeasured, see docs/memory.md); "
                                "unset: 0, off")


def caps_for(caps: BackendCaps, options: BaseModel) -> BackendCaps:
    """The caps a preset plans with: the backend's, shrunk by the preset's window options.
    The options were checked against the caps when the preset loaded (`check_window`)."""
    changes: dict[str, Any] = {}
    for key in ("max_latents", "context_latents"):
        if (value := getattr(options, key, None)) is not None:
            changes[key] = value
    memory = getattr(options, "memory_latents", None)
    if caps.memory is not None and memory is not None:
        changes["memory"] = replace(caps.memory, latents=memory) if memory else None
    elif caps.memory is not None and caps.memory.opt_in:  # untrained: off unless asked for
        changes["memory"] = replace(caps.memory, latents=0)
    shaped = replace(caps, **changes)
    stream_caps = getattr(options, "stream_caps", None)  # options of a streaming backend
    if caps.stream is not None and stream_caps is not None:
        shaped = replace(shaped, stream=stream_caps(caps.stream, shaped.max_latents,
                                                     pinned=shaped.memory_latents))
    return shaped


def check_window(caps: BackendCaps, options: BaseModel) -> tuple[str, str, str] | None:
    """(option, problem, fix) when the window options do not fit the backend, else None."""
    ceilings = {"max_latents": caps.max_latents, "context_latents": caps.context_latents,
                "memory_latents": caps.memory_latents}
    for key, ceiling in ceilings.items():
        value = getattr(options, key, None)
        if value is not None and value > ceiling:
            what = "takes no memory" if key == "memory_latents" and not ceiling else \
                f"allows at most {ceiling}"
            return (key, f"option {key} is {value} but the backend {what}",
                    f"use a value up to {ceiling}, or remove `{key}` for the backend's own")
    shrunk = caps_for(caps, options)
    if shrunk.context_latents >= shrunk.max_latents:
        return ("context_latents", f"context_latents {shrunk.context_latents} leaves no room "
                f"for new latents in a window of {shrunk.max_latents}",
                f"use context_latents below {shrunk.max_latents}")
    return None


# -- one segment --------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewPath:
    """Where the camera is, for a backend with `caps.camera` (procworld)."""

    positions: tuple[tuple[int, int], ...]  # (y, x) of every frame of [memory | context | new]
    new_cells: tuple[int, ...]  # per new frame: bitmask of view cells no earlier frame showed
    world_seed: int  # the storyboard's `seed`: which world


@dataclass(frozen=True)
class ShotImages:
    """Storyboard images for a backend with `caps.images`."""

    # caps.images.first_frame: normalized latent (1, C, 1, H/8, W/8) of the shot's `image:`
    # (scaled and centre-cropped to the frame) in the first segment of its take, else None;
    # it is the first of the segment's new latents and stays exactly as given
    first_latent: Any = None
    first_frame: Any = None  # the same image as uint8 (H, W, 3) pixels, for a backend that
    # conditions on frames rather than latents (VACE keeps it as its control video's first)
    refs: tuple[Any, ...] = ()  # caps.images.refs: uint8 (h, w, 3) images as read from disk


@dataclass(frozen=True)
class LoraWeight:
    """One LoRA of the plan and this segment's weight of it (0: off)."""

    name: str  # as the storyboard or preset names it, for messages
    path: str  # local .safetensors file
    key: str  # identity of its content (sha256, or repo@revision:file)
    weight: float


@dataclass(frozen=True)
class SegmentRequest:
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
    blend_prompt: str | None = None  # a prompt whose embeddings are mixed into `prompt`'s
    blend_weight: float = 0.0  # weight of blend_prompt: embeds = (1-w)*e(prompt) + w*e(blend)
    # optional parts, filled in only for a backend that declared the ability:
    # caps.memory: None, or recalled latents (1, C, m, H/8, W/8), oldest first; with
    # caps.memory.frames a tuple of their uint8 (H, W, 3) full-resolution frames instead
    memory: Any = None
    view: ViewPath | None = None  # caps.camera: the camera path of this segment
    # caps.sink: None, or the take's first latents (1, C, s, H/8, W/8) the context lacks
    sink: Any = None
    sink_prompt: str | None = None  # caps.sink: the prompt of the take's first segment
    context_start: int = 0  # caps.sink: take-local index of the context's first latent
    # caps.sink: this segment's conditioning differs from the previous segment's in the
    # take (a prompt switch, a step of a `continue` blend): the cache is re-cached
    switched: bool = False
    # caps.decode: None at a take's start, else the take's latents before this segment, the
    # last (at most) history_latents of them (1, C, k, H/8, W/8), as the backend made them
    history: Any = None
    images: ShotImages | None = None  # caps.images: the shot's image and reference images
    # caps.lora: every LoRA of the plan with this segment's weight (empty: none; a backend
    # switches off LoRAs a previous storyboard loaded)
    loras: tuple[LoraWeight, ...] | None = None

    def conditioning(self, embed: Callable[[str], Any]) -> Any:
        """The prompt's embeddings, mixed with blend_prompt's as (1-w)*e(prompt) + w*e(blend)
        during a `continue` transition. `embed(text)` gives one prompt's (1, L, D)."""
        cond = embed(self.prompt)
        if self.blend_prompt and self.blend_weight > 0:
            w = float(self.blend_weight)
            cond = (1 - w) * cond + w * embed(self.blend_prompt)
        return cond


@dataclass(frozen=True)
class SegmentOutput:
    latents: Any  # (1, C, num_latents, H/8, W/8) float32, new latents only
    # uint8 numpy (F, H, W, 3): the new latents' frames, (n-1)*stride+1 at a take's start and
    # n*stride after context (Wan: 4n-3 and 4n; one frame per latent: n)
    frames: Any
    seconds: dict[str, float] = field(default_factory=dict)  # per stage wall time


StepCallback = Callable[[int, int], None]  # (step done, steps total)


class Backend(Protocol):
    name: ClassVar[str]
    caps: ClassVar[BackendCaps]
    Options: ClassVar[type[BaseModel]]  # a BackendOptions subclass: the preset's `options:`

    def load(self, preset: Any, policy: Any = None) -> None:
        """Build or load the models of a `Preset` (its `options` an instance of `Options`),
        placed as the `LoadPolicy` says (None: no GPU budget applies). Heavy imports happen
        here, never at import time."""

    def prepare(self, prompts: list[str], negative_prompt: str, guidance_scale: float) -> None:
        """Encode every prompt the run still needs, before the first segment, so a text
        encoder can be freed before the denoiser runs."""

    def generate(self, request: SegmentRequest, on_step: StepCallback) -> SegmentOutput:
        """Denoise one segment and decode its new frames."""

    def encode_frames(self, frames: Any) -> Any:
        """uint8 (F, H, W, 3), F = 4k+1 -> latents (1, C, k+1, H/8, W/8), for `extend`."""

    def versions(self) -> dict[str, str]:
        """Library and weight versions that determine this backend's output."""
