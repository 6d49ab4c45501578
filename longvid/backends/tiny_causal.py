"""`tiny-causal`: the few-step causal KV-cache engine on the tiny random-weight Wan.

The same transformer and text encoder as `tiny` and a narrower Wan VAE (built from a
fixed seed, CPU, no download), streamed the way LongLive-1.3B and Self-Forcing run:
blocks of 3 latent frames, 4 steps each, a clean pass per block that writes its keys
and values, a window of 12 latent frames with a sink of 3
(longvid/backends/causal_engine.py).
Its pictures are coloured texture; it exists so the causal path runs anywhere.

One longvid segment is a whole number of blocks where the plan allows it (the
first segment of a take 7 blocks, later ones 4; a prompt switch may end a segment
inside a block: that segment's last block is shorter). A segment starts a fresh
stream: the take's first 3 latents (the sink, which the loop carries in the run
directory because `caps.sink` asks for it) and the context latents the loop passes in
(the last 9 of the take, read from disk) are replayed through clean passes to rebuild
the cache, then the new blocks are denoised after them. Each block is decoded as soon
as it is made, by a VAE decoder whose causal cache runs through the whole take
(longvid/backends/causal_decode.py): a decoder that lost it (a resumed render) rebuilds
it from the take's last latents the loop carries (`caps.decode`). Nothing else survives
from one segment to the next but what the run directory holds, and what does survive
is checked against it, so a resumed render equals an uninterrupted one. Frame positions
restart at every segment (sink, then context): they stay below the RoPE table's end
however long the video.

A take that starts from a storyboard image begins as Self-Forcing's image-to-video
does: the encoded image is the take's first latent, written into the cache by a
clean pass and never noised; the blocks are denoised after it, and it is the first
of the sink later segments of the take replay.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from longvid.backends.base import (
    BackendCaps,
    BackendOptions,
    ImageCaps,
    SegmentOutput,
    SegmentRequest,
    SinkCaps,
    StepCallback,
    StreamCaps,
    StreamDecodeCaps,
)
from longvid.backends.tiny import TinyWanBackend

TINY_HISTORY_LATENTS = 26  # the VAE decoder's receptive field (causal_decode.py)

BLOCK_LATENTS = 3
CONTEXT_LATENTS = 9  # a LongLive window (12) less one block: everything a new block sees
SINK_LATENTS = 3  # a take's first latents the loop carries for the cache's sink
# The stream part before a preset's options shape it (CausalOptions.stream_caps); the
# tiny transformer of `tiny`: 2 layers, 2 heads of 16.
TINY_STREAM = StreamCaps(block_latents=BLOCK_LATENTS, sink_latents=SINK_LATENTS,
                         cached_latents=11, attended_latents=12, layers=2, kv_width=2 * 16,
                         head_dim=16)


class KVDtypeOptions(BackendOptions):
    """How a causal cache stores its keys and values (LongLive's window, MemFlow's bank,
    MAG's slots alike)."""

    kv_dtype: Literal["model", "float8_e4m3fn"] = Field(
        "model", description="cached keys/values: the transformer's dtype, or fp8 with a "
        "scale per token and head")

    def kv_bytes_per_element(self, head_dim: int) -> float:
        """Bytes of one cached key or value element on the GPU: the one place the KV cache's
        dtype enters the VRAM budget. bf16 (the model's dtype on a GPU): 2; fp8: 1, plus its
        fp32 scale per token and head, shared by `head_dim` elements."""
        return 2.0 if self.kv_dtype == "model" else 1 + 4 / head_dim


class CausalOptions(KVDtypeOptions):
    """Options of the causal-engine backends: the schedule and the cache policy."""

    flow_shift: float = Field(5.0, gt=0, description="shift of the warped few-step schedule")
    block_latents: int = Field(BLOCK_LATENTS, ge=1, description="latent frames per block")
    sink_latents: int = Field(3, ge=0, le=SINK_LATENTS, description="a take's first latent "
                              "frames, always attended to")
    window_latents: int = Field(12, ge=0, description="latent frames a block attends to, "
                                "itself and the sink included (0: all)")
    write: Literal["all", "last"] = Field("all", description="frames of a block cached")

    @field_validator("window_latents")
    @classmethod
    def _window_leaves_room(cls, window: int, info: ValidationInfo) -> int:
        sink, block = info.data.get("sink_latents", 0), info.data.get("block_latents", 1)
        if window and window <= sink + block:
            raise ValueError(f"a window of {window} leaves no history beside a sink of {sink} "
                             f"and a block of {block}: make it larger, or 0 for no window")
        return window

    def stream_caps(self, stream: StreamCaps, max_latents: int, pinned: int = 0) -> StreamCaps:
        """The backend's stream part shaped by these options: block, sink, and the frames the
        cache holds. With a window w the cache keeps the sink and the w - sink - 1 latest
        other frames (what a 1-frame block still sees: causal_cache.CachePolicy), so w - 1;
        with no window, everything a segment replays and makes (sink + window of latents).
        `pinned`: recalled latents a segment pins (a memory engine's; none here)."""
        if self.window_latents:
            cached, attended = self.window_latents - 1, self.window_latents
        else:
            cached = attended = self.sink_latents + max_latents
        return replace(stream, block_latents=self.block_latents,
                       sink_latents=self.sink_latents, cached_latents=cached,
                       attended_latents=attended,
                       kv_bytes_per_element=self.kv_bytes_per_element(stream.head_dim))

    def policy(self) -> Any:
        from longvid.backends.causal_cache import CachePolicy

        return CachePolicy(self.block_latents, self.window_latents, self.sink_latents,
                           self.write, self.kv_dtype)


class TinyCausalBackend(TinyWanBackend):
    name: ClassVar[str] = "tiny-causal"
    caps: ClassVar[BackendCaps] = BackendCaps(
        native_fps=16, any_fps=True, latent_stride_t=4,
        max_latents=CONTEXT_LATENTS + 4 * BLOCK_LATENTS, context_latents=CONTEXT_LATENTS,
        size_multiple=16, max_side=512, takes_context=True, tokens_per_latent_px=8 * 8 * 2 * 2,
        sink=SinkCaps(SINK_LATENTS), stream=TINY_STREAM, images=ImageCaps(first_frame=True),
        decode=StreamDecodeCaps(TINY_HISTORY_LATENTS, 1_516))  # 6 KB per latent px in fp32

    class Options(CausalOptions):
        weights_seed: int = Field(0, description="seed of the random tiny weights")

    def load(self, preset: Any, policy: Any = None) -> None:
        import torch
        from diffusers import AutoencoderKLWan

        from longvid.backends.causal_decode import StreamDecoder
        from longvid.backends.causal_engine import CausalEngine

        super().load(preset, policy)
        self.engine = CausalEngine(self.transformer, preset.options.policy())
        # a narrower VAE than tiny's (base_dim 2, not 8): decoding is most of a tiny render,
        # and this one decodes about 3x faster; the picture is coloured texture either way
        torch.manual_seed(preset.options.weights_seed + 2)
        self.vae = AutoencoderKLWan(base_dim=2, z_dim=16, dim_mult=[1, 1, 1, 1],
                                    num_res_blocks=1, temperal_downsample=[False, True, True]
                                    ).eval()
        self.decoder = StreamDecoder(self.vae, self._mean, self._std, TINY_HISTORY_LATENTS)

    def versions(self) -> dict[str, str]:
        return super().versions() | {"engine": "causal-kv 1"}

    def generate(self, request: SegmentRequest, on_step: StepCallback) -> SegmentOutput:
        import torch

        from longvid.backends.causal_decode import to_uint8
        from longvid.backends.causal_engine import (
            FewStepSchedule,
            SegmentStart,
            stream_segment,
        )

        cond = request.conditioning(self._embed)  # (1, L, 32), mixed during a transition
        context = None if request.context is None else request.context.float()  # (1, 16, c, h, w)
        schedule = FewStepSchedule.warped(request.steps, self.options.flow_shift)
        # the decoder continues the take where the history ends (a direct request without
        # one, or `extend`'s first segment, continues from the context)
        self.decoder.follow(request.history if request.history is not None else context)
        self.decoder.seconds = 0.0
        videos: list[torch.Tensor] = []  # (1, 3, f, H, W) per block, decoded as it is made
        start = SegmentStart(
            cond, context, request.context_start, request.sink,
            None if request.sink_prompt is None else self._embed(request.sink_prompt),
            request.switched, request.memory)  # memory: a memory engine's pins
        latents, seconds = stream_segment(
            self.engine, start, request.num_latents,
            (16, request.height // 8, request.width // 8), schedule, request.seed, on_step,
            lambda x0: videos.append(self.decoder.decode(x0)),
            first=request.images.first_latent if request.images else None)  # (1, 16, n, h, w)
        decode_s = self.decoder.seconds
        seconds = seconds | {"denoise": seconds["denoise"] - decode_s, "decode": decode_s}
        return SegmentOutput(latents=latents, frames=to_uint8(torch.cat(videos, dim=2)),
                             seconds=seconds)
