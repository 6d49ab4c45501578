"""`tiny-mag` and `tiny-memflow`: the trained-memory cache rules on the tiny random Wan.

The same tiny transformer, text encoder and narrow VAE as `tiny-causal`, streamed with
MAG's compressed cache (a second tiny transformer, from another seed, is the memory
model) or MemFlow's bank (longvid/backends/causal_memory.py). Their pictures are
coloured texture; they exist so the memory rules, recall and resume run anywhere.

A segment is `tiny-causal`'s (causal_engine.stream_segment, each block decoded as it
is made, a take's image its first latent): recalled latents (what `recall` names) are
pinned, the take's first latents (the sink) and the context are replayed through clean
passes, then the new blocks are denoised; so a resumed render equals an uninterrupted
one. MAG's context is every block its slots hold (slots
x 3 latents), so the replay rewrites all of them; MemFlow's is LongLive's 9.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from pydantic import Field

from longvid.backends.base import (
    BackendCaps,
    BackendOptions,
    ImageCaps,
    MemoryCaps,
    SegmentOutput,
    SegmentRequest,
    SinkCaps,
    StepCallback,
    StreamCaps,
)
from longvid.backends.tiny_causal import (
    BLOCK_LATENTS,
    TINY_STREAM,
    CausalOptions,
    KVDtypeOptions,
    TinyCausalBackend,
)

MAG_SINK_LATENTS = 2
MAG_PINNED = 2  # recalled latents a MAG segment pins (they take slots from the ring)
MEMFLOW_PINNED = 2  # recalled latents a MemFlow segment pins: one bank frame stays free
TINY_MAG_SLOTS = 5  # the tiny RoPE table has 64 positions: 5 slots keep a segment in it


class MagOptions(KVDtypeOptions):
    """Options of MAG's compressed cache."""

    flow_shift: float = Field(5.0, gt=0, description="shift of the warped few-step schedule")
    block_latents: int = Field(BLOCK_LATENTS, ge=2, description="latent frames per block")
    sink_latents: int = Field(MAG_SINK_LATENTS, ge=0, le=MAG_SINK_LATENTS,
                              description="a take's first latent frames, always attended to")
    slots: int = Field(21, ge=1, description="compressed frames kept: the last frame of each "
                       "of this many past blocks")

    def stream_caps(self, stream: StreamCaps, max_latents: int, pinned: int = 0) -> StreamCaps:
        """The backend's stream part shaped by MAG's cache: sink + slots (pinned latents
        take slots from the ring, so more only if there are more pins than slots), seen
        by a block beside itself, in `kv_dtype`; pins one memory pass each; a prompt
        switch replays the context by blocks (no prompt in the cache)."""
        cached = self.sink_latents + max(self.slots, pinned)
        return replace(stream, block_latents=self.block_latents,
                       sink_latents=self.sink_latents, cached_latents=cached,
                       attended_latents=cached + self.block_latents,
                       kv_bytes_per_element=self.kv_bytes_per_element(stream.head_dim),
                       pin_each=True, recache_on_switch=False)

    def policy(self) -> Any:
        from longvid.backends.causal_memory import MagPolicy

        return MagPolicy(self.block_latents, self.sink_latents, self.slots, self.kv_dtype)


class BankOptions(BackendOptions):
    """Options of MemFlow's memory bank (on a LongLive cache policy)."""

    bank_size: int = Field(3, ge=0, description="latent frames in the memory bank")
    record_interval: int = Field(3, ge=1, description="every this many blocks, a block's "
                                 "first latent frame is recorded for the bank")

    def bank(self) -> Any:
        from longvid.backends.causal_memory import BankPolicy

        return BankPolicy(self.bank_size, self.record_interval)


class MemFlowOptions(CausalOptions, BankOptions):
    """LongLive's cache options with MemFlow's bank."""

    def stream_caps(self, stream: StreamCaps, max_latents: int, pinned: int = 0) -> StreamCaps:
        """LongLive's stream part plus the bank, which every block attends to: its
        `bank_size` frames, or the pinned ones if more (retrieval never drops a pin);
        the pins in one clean pass."""
        shaped = super().stream_caps(stream, max_latents, pinned)
        bank = max(self.bank_size, pinned)
        return replace(shaped, cached_latents=shaped.cached_latents + bank,
                       attended_latents=shaped.attended_latents + bank)


class TinyMemoryBackend(TinyCausalBackend):
    """The shared generate of the two tiny memory variants: `load` sets `self.engine`."""

    def versions(self) -> dict[str, str]:
        return super().versions() | {"memory": self.name}

    def generate(self, request: SegmentRequest, on_step: StepCallback) -> SegmentOutput:
        if hasattr(self.engine, "empty_cond"):
            self.engine.empty_cond = self._embed("")  # MAG's memory pass
        return super().generate(request, on_step)  # tiny-causal's, with pins and decoder


class TinyMagBackend(TinyMemoryBackend):
    name: ClassVar[str] = "tiny-mag"
    caps: ClassVar[BackendCaps] = BackendCaps(
        native_fps=16, any_fps=True, latent_stride_t=4,
        max_latents=TINY_MAG_SLOTS * BLOCK_LATENTS + 4 * BLOCK_LATENTS,
        context_latents=TINY_MAG_SLOTS * BLOCK_LATENTS, size_multiple=16, max_side=512,
        takes_context=True, tokens_per_latent_px=8 * 8 * 2 * 2,
        sink=SinkCaps(MAG_SINK_LATENTS), memory=MemoryCaps(MAG_PINNED, recall_only=True),
        images=ImageCaps(first_frame=True), decode=TinyCausalBackend.caps.decode,
        stream=TINY_STREAM)

    class Options(MagOptions):
        weights_seed: int = Field(0, description="seed of the random tiny weights (the "
                                  "memory model's: this + 7)")
        slots: int = Field(TINY_MAG_SLOTS, ge=1, le=TINY_MAG_SLOTS,
                           description="compressed frames kept: the last frame of each of "
                           "this many past blocks")

    def load(self, preset: Any, policy: Any = None) -> None:
        import torch
        from diffusers import WanTransformer3DModel

        from longvid.backends.causal_memory import MagEngine

        super().load(preset, policy)
        torch.manual_seed(preset.options.weights_seed + 7)
        memory = WanTransformer3DModel.from_config(self.transformer.config).eval()
        self.engine = MagEngine(self.transformer, memory, preset.options.policy())


class TinyMemFlowBackend(TinyMemoryBackend):
    name: ClassVar[str] = "tiny-memflow"
    caps: ClassVar[BackendCaps] = replace(  # tiny-causal's, with the bank's recall
        TinyCausalBackend.caps, memory=MemoryCaps(MEMFLOW_PINNED, recall_only=True))

    class Options(MemFlowOptions):
        weights_seed: int = Field(0, description="seed of the random tiny weights")

    def load(self, preset: Any, policy: Any = None) -> None:
        from longvid.backends.causal_memory import MemFlowEngine

        super().load(preset, policy)
        o = preset.options
        self.engine = MemFlowEngine(self.transformer, o.policy(), o.bank())
