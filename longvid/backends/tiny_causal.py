"""`tiny-causal`: the few-step causal KV-cache engine on the tiny random-weight Wan.

The same transformer, VAE and text encoder as `tiny` (built from a fixed seed, CPU,
no download), streamed the way LongLive-1.3B and Self-Forcing run: blocks of 3 latent
frames, 4 steps each, a clean pass per block that writes its keys and values, a
window of 12 latent frames with a sink of 3 (longvid/backends/causal_engine.py).
Its pictures are coloured texture; it exists so the causal path runs anywhere.

One longvid segment is a whole number of blocks where the plan allows it (the
first segment of a take 7 blocks, later ones 4; a prompt switch may end a segment
inside a block: that segment's last block is shorter). A segment starts a fresh
stream: the context latents the loop passes in (the last 9 of the take, read from
disk) are replayed through clean passes to rebuild the cache, then the new blocks
are denoised after them; the last 2 context latents warm up the VAE decoder, and
their frames are dropped. Nothing survives from one segment to the next but what the
run directory holds, so a resumed render equals an uninterrupted one. The oldest
context block serves as the sink, and frame positions restart at the context's first
frame: they stay below the RoPE table's end however long the video.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from longvid.backends.base import BackendCaps, SegmentOutput, SegmentRequest, StepCallback
from longvid.backends.tiny import TinyWanBackend
from longvid.errors import InputError

BLOCK_LATENTS = 3
CONTEXT_LATENTS = 9  # a LongLive window (12) less one block: everything a new block sees
# Context latents decoded before a segment's own, so the VAE's causal convolutions (which
# keep 2 frames) start warm; decoding all 9 would cost as much again as the new frames.
DECODE_WARMUP_LATENTS = 2


class CausalOptions(BaseModel):
    """Options of the causal-engine backends: the schedule and the cache policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    flow_shift: float = Field(5.0, gt=0, description="shift of the warped few-step schedule")
    block_latents: int = Field(BLOCK_LATENTS, ge=1, description="latent frames per block")
    window_latents: int = Field(12, ge=0, description="latent frames a block attends to, "
                                "itself and the sink included (0: all)")
    sink_latents: int = Field(3, ge=0, description="first cached frames always attended to")
    write: Literal["all", "last"] = Field("all", description="frames of a block cached")

    def policy(self) -> Any:
        from longvid.backends.causal_cache import CachePolicy

        try:
            return CachePolicy(self.block_latents, self.window_latents, self.sink_latents,
                               self.write)
        except ValueError as exc:
            raise InputError(f"invalid cache policy: {exc}",
                             "make window_latents larger than sink_latents + block_latents, "
                             "or 0 for no window") from None


def options_of(cls: type[BaseModel], preset: Any) -> Any:
    """The preset's options as the backend's Options (presets still hold a dict)."""
    if isinstance(preset.options, cls):
        return preset.options
    try:
        return cls.model_validate(dict(preset.options))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise InputError(f"preset {preset.name!r}: options.{where}: {err['msg']}",
                         "see docs/presets.md for the backend's options") from None


class TinyCausalBackend(TinyWanBackend):
    name: ClassVar[str] = "tiny-causal"
    caps: ClassVar[BackendCaps] = BackendCaps(
        native_fps=16, any_fps=True, frame_multiple=4, frame_offset=1, latent_stride_t=4,
        max_latents=CONTEXT_LATENTS + 4 * BLOCK_LATENTS, context_latents=CONTEXT_LATENTS,
        size_multiple=16, max_side=512, takes_context=True, tokens_per_latent_px=8 * 8 * 2 * 2,
        memory_latents=0)

    class Options(CausalOptions):
        weights_seed: int = Field(0, description="seed of the random tiny weights")

    def load(self, preset: Any, policy: Any = None) -> None:
        from longvid.backends.causal_engine import CausalEngine

        self.opts = options_of(self.Options, preset)
        super().load(preset, policy)
        self.engine = CausalEngine(self.transformer, self.opts.policy())

    def versions(self) -> dict[str, str]:
        return super().versions() | {"engine": "causal-kv 1"}

    def generate(self, request: SegmentRequest, on_step: StepCallback) -> SegmentOutput:
        import torch

        from longvid.backends.causal_engine import FewStepSchedule, stream_segment

        assert request.memory is None, "tiny-causal takes no memory (caps.memory_latents 0)"
        cond = self._conditioning(request)  # (1, L, 32), mixed during a transition
        context = None if request.context is None else request.context.float()  # (1, 16, c, h, w)
        schedule = FewStepSchedule.warped(request.steps, self.opts.flow_shift)
        latents, seconds = stream_segment(
            self.engine, context, request.num_latents, (16, request.height // 8,
                                                        request.width // 8),
            cond, schedule, request.seed, on_step)  # (1, 16, n, h, w)
        t0 = time.perf_counter()
        with torch.no_grad():  # the context's tail warms the VAE's causal cache, then drops
            warm = None if context is None else context[:, :, -DECODE_WARMUP_LATENTS:]
            c = 0 if warm is None else warm.shape[2]
            whole = latents if warm is None else torch.cat([warm, latents], dim=2)
            frames = self._decode(whole, drop=4 * c - 3 if c else 0)
        return SegmentOutput(latents=latents, frames=frames,
                             seconds=seconds | {"decode": time.perf_counter() - t0})
