"""`causal-wan`: few-step causal Wan-1.3B generators (LongLive, Self-Forcing) from the Hub.

The network is Wan2.1-T2V-1.3B; only the generator's weights and the cache policy
differ between the models. The text encoder, tokenizer and VAE come from the Wan2.1
diffusers snapshot (the preset's `hub`); the generator comes from the upstream
pickle checkpoint named in the options, converted once to safetensors
(longvid/backends/causal_weights.py) and loaded from there. Generation is the engine
of longvid/backends/causal_engine.py, segment by segment as `tiny-causal` does it: a
segment rebuilds the KV cache from the take's first latents (the sink, under the
take's first prompt) and its context latents (re-cached under the new prompt at a
switch, as LongLive does), then streams its blocks, each decoded as it is made
(longvid/backends/causal_decode.py); no guidance. A take's
starting image is its first latent, written into the cache by a clean pass
(Self-Forcing's image-to-video), as on `tiny-causal`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from longvid.backends.base import (
    BackendCaps,
    ImageCaps,
    SegmentOutput,
    SegmentRequest,
    SinkCaps,
    StepCallback,
    StreamCaps,
    StreamDecodeCaps,
)
from longvid.backends.tiny_causal import (
    BLOCK_LATENTS,
    CONTEXT_LATENTS,
    SINK_LATENTS,
    CausalOptions,
)
from longvid.backends.wan_hub import WanHubBackend, WanHubOptions

NATIVE_FPS = 16
WAN21_HISTORY_LATENTS = 38  # the VAE decoder's receptive field (causal_decode.py)
BLOCKS_PER_SEGMENT = 8  # 96 frames: commits stay rare beside the blocks' generation
# Wan2.1-T2V-1.3B's transformer (its transformer/config.json): 30 layers, 12 heads of 128.
# The window figures are the presets' (CausalOptions.stream_caps reshapes them).
WAN_1_3B_STREAM = StreamCaps(block_latents=BLOCK_LATENTS, sink_latents=SINK_LATENTS,
                             cached_latents=11, attended_latents=12, layers=30,
                             kv_width=12 * 128)


def preset_checkpoint(preset: Any) -> Any:
    """The upstream pickle generator (a causal_weights.CausalCheckpoint) that a preset on
    this backend converts, or None for a preset on another backend."""
    options = preset.options
    return options.checkpoint() if isinstance(options, CausalWanBackend.Options) else None


class CausalWanBackend(WanHubBackend):
    name: ClassVar[str] = "causal-wan"
    text_pipeline_class: ClassVar[str] = "WanPipeline"
    caps: ClassVar[BackendCaps] = BackendCaps(
        native_fps=NATIVE_FPS, any_fps=False, latent_stride_t=4,
        max_latents=CONTEXT_LATENTS + BLOCKS_PER_SEGMENT * BLOCK_LATENTS,
        context_latents=CONTEXT_LATENTS, size_multiple=16, max_side=832, takes_context=True,
        tokens_per_latent_px=8 * 8 * 2 * 2, sink=SinkCaps(SINK_LATENTS),
        stream=WAN_1_3B_STREAM, images=ImageCaps(first_frame=True),
        # the decoder's cache: 151,328 elements per latent pixel, 1.89 GB at 480x832 in bf16
        decode=StreamDecodeCaps(WAN21_HISTORY_LATENTS, 151_328, gpu_bytes_per_element=2))

    class Options(WanHubOptions, CausalOptions):
        checkpoint_repo: str = Field("Efficient-Large-Model/LongLive-1.3B",
                                     pattern=r"^[\w.-]+/[\w.-]+$",
                                     description="Hub repo of the causal generator")
        checkpoint_revision: str = Field("main", description="its revision")
        checkpoint_file: str = Field("models/longlive_base.pt",
                                     description="the generator's .pt in that repo")
        lora_file: str | None = Field("models/lora.pt", description="a PEFT LoRA .pt merged "
                                      "at conversion (unset: none)")
        state_keys: tuple[str, ...] = Field(("generator", "generator_ema", "model"),
                                            strict=False,  # a YAML list is fine here
                                            description="checkpoint entries holding the "
                                            "generator, first present wins")
        lora_scale: float = Field(1.0, description="lora_alpha / r")

        def checkpoint(self) -> Any:
            """The upstream generator: where `models pull` fetches it, how it converts."""
            from longvid.backends.causal_weights import CausalCheckpoint

            return CausalCheckpoint(self.checkpoint_repo, self.checkpoint_revision,
                                    self.checkpoint_file, self.lora_file,
                                    tuple(self.state_keys), self.lora_scale)

    # -- models --------------------------------------------------------------------------

    def load(self, preset: Any, policy: Any = None) -> None:
        from diffusers import WanTransformer3DModel

        from longvid.backends import wan_parts
        from longvid.backends.causal_engine import CausalEngine
        from longvid.backends.causal_weights import converted_transformer

        label = self.load_shared(preset, policy, cpu_preset="tiny-causal")
        self.converted = converted_transformer(self.options.checkpoint(), self.folder, label)
        transformer = wan_parts.load_transformer(
            WanTransformer3DModel, wan_parts.Weights(self.converted), preset.quantization,
            self.dtype).eval()
        wan_parts.place_transformer(transformer, self.device, policy)
        self.transformer = transformer
        self.engine = CausalEngine(transformer, self.options.policy())

    def load_shared(self, preset: Any, policy: Any, cpu_preset: str) -> str:
        """What every causal Hub backend loads before its transformers: checks (before any
        download), the Wan2.1 text encoder, tokenizer and VAE, and the streaming decoder.
        Returns the label of the converted weights' cache entry."""
        import torch
        from diffusers import WanTransformer3DModel

        from longvid.backends import wan_parts
        from longvid.backends.causal_decode import StreamDecoder

        self.preset, self.policy = preset, policy
        self.options = preset.options
        cuda = torch.cuda.is_available()
        preset.check_gpu(cuda, cpu_preset=cpu_preset)  # before any download
        wan_parts.check_installed(preset.quantization, WanTransformer3DModel)
        self.weights = wan_parts.Weights.resolve(preset)  # text encoder, tokenizer, VAE
        self.folder = self.weights.folder
        self.device = torch.device("cuda" if cuda else "cpu")
        self.dtype = wan_parts.compute_dtype(self.device)
        # block by block, untiled: the decoder's causal cache of a 480x832 take is 1.9 GB in
        # bf16 on a GPU (3.8 GB in fp32), held beside the transformer and the KV cache
        self.vae = wan_parts.WanVAE(self.folder, self.device, gpu_dtype=torch.bfloat16)
        self.decoder = StreamDecoder(self.vae.model, self.vae.mean, self.vae.std,
                                     WAN21_HISTORY_LATENTS)
        return self.weights_label(preset)

    @staticmethod
    def weights_label(preset: Any) -> str:
        from pathlib import Path

        from longvid.presets import available_presets

        named = available_presets().get(preset.name) == Path(preset.source)
        return preset.name if named else preset.source

    def versions(self) -> dict[str, str]:
        o = self.options
        return super().versions() | {
            "generator": f"{o.checkpoint_repo}@{o.checkpoint_revision}/{o.checkpoint_file}"
                         + (f"+{o.lora_file}" if o.lora_file else ""),
            "converted": self.converted.name, "engine": "causal-kv 1"}

    # -- generation --------------------------------------------------------------------------

    def generate(self, request: SegmentRequest, on_step: StepCallback) -> SegmentOutput:
        import torch

        from longvid.backends.causal_decode import to_uint8
        from longvid.backends.causal_engine import (
            FewStepSchedule,
            SegmentStart,
            stream_segment,
        )

        cond, _ = self.prompts.conditioning(request)  # (1, L, 4096); no guidance
        context = None if request.context is None else request.context.float()
        schedule = FewStepSchedule.warped(request.steps, self.options.flow_shift)
        with self.on_gpu("vae"):  # a resumed render replays the take's last latents
            self.decoder.follow(request.history if request.history is not None else context)
        self.decoder.seconds = 0.0
        videos: list[Any] = []  # (1, 3, f, H, W) per block, decoded as it is made
        with self.on_gpu("transformer"):
            start = SegmentStart(
                cond, context, request.context_start, request.sink,
                None if request.sink_prompt is None else self.prompts[request.sink_prompt],
                request.switched, request.memory)  # memory: a memory engine's pins
            latents, seconds = stream_segment(
                self.engine, start, request.num_latents,
                (self.vae.z_dim, request.height // 8, request.width // 8), schedule,
                request.seed, on_step,
                lambda x0: videos.append(self.decoder.decode(x0)),
                first=request.images.first_latent if request.images else None)  # (1, z, n, h, w)
        decode_s = self.decoder.seconds
        seconds = seconds | {"denoise": seconds["denoise"] - decode_s, "decode": decode_s}
        return SegmentOutput(latents=latents, frames=to_uint8(torch.cat(videos, dim=2)),
                             seconds=seconds)

    def encode_frames(self, frames: Any) -> Any:
        return self.vae.encode_frames(frames)
