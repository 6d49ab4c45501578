"""`causal-memflow` and `causal-mag`: the Wan-1.3B causal models trained with memory.

- MemFlow (KlingTeam/MemFlow, Apache-2.0): LongLive's network and cache, its own
  `base.pt` + `lora.pt` (LongLive's layout), plus the memory bank of
  longvid/backends/causal_memory.py (3 frames, every third block's first latent frame,
  kept by relevance to the prompt).
- MAG (xilluill/MAG, CC BY-NC-SA 4.0): two Wan-1.3B transformers, the generator and the
  memory model, published as `from_pretrained` folders in the original Wan key layout
  (read as safetensors, converted once like the others); the memory model writes one
  frame per block under the empty prompt into 21 slots beside a 2-frame sink.

Both run segment by segment as `causal-wan` does (causal_engine.stream_segment, each
block decoded as it is made by the take's StreamDecoder, a take's image its first
latent), with the memory rebuilt at each segment's start from the request (recalled
latents pinned, then the sink, then the context), so a resumed render equals an
uninterrupted one. At a prompt switch MemFlow re-caches as LongLive does; MAG's cache
holds no prompt (its memory model writes under the empty one), so it re-caches nothing.

MAG on 12 GB: two transformers (2.67 GiB each in bf16) and a cache of 23 frames (sink 2 +
21 slots, 287.5 MB each at 480x832 in bf16: 6.2 GiB) do not fit beside the VAE's decode.
The preset stores both in fp8 (1.34 GiB each) and, by default, streams the memory
model block by block through the GPU (diffusers group offload), since it runs once per
block: about 0.1 GiB of it is resident. See docs/presets.md for the budget.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from pydantic import Field

from longvid.backends.base import (
    BackendCaps,
    MemoryCaps,
    SinkCaps,
)
from longvid.backends.causal_wan import (
    BLOCKS_PER_SEGMENT,
    NATIVE_FPS,
    WAN_1_3B_STREAM,
    CausalWanBackend,
)
from longvid.backends.tiny_causal import BLOCK_LATENTS
from longvid.backends.tiny_memory import (
    MAG_PINNED,
    MAG_SINK_LATENTS,
    MEMFLOW_PINNED,
    MagOptions,
    MemFlowOptions,
)
from longvid.backends.wan_hub import WanHubOptions

MAG_SLOTS = 21
MAG_CONTEXT_LATENTS = MAG_SLOTS * BLOCK_LATENTS  # every block the slots hold is replayed


class MemoryWanBackend(CausalWanBackend):
    """`causal-wan` with a memory engine (`load` sets `self.engine`): the same segment
    (causal_engine.stream_segment, recalled latents pinned first) and streaming decode."""


class CausalMemFlowBackend(MemoryWanBackend):
    name: ClassVar[str] = "causal-memflow"
    caps: ClassVar[BackendCaps] = replace(
        CausalWanBackend.caps, memory=MemoryCaps(MEMFLOW_PINNED, trained=True, recall_only=True))

    class Options(CausalWanBackend.Options, MemFlowOptions):
        checkpoint_repo: str = Field("KlingTeam/MemFlow", pattern=r"^[\w.-]+/[\w.-]+$",
                                     description="Hub repo of the causal generator")
        checkpoint_file: str = Field("base.pt", description="the generator's .pt in that repo")
        lora_file: str | None = Field("lora.pt", description="a PEFT LoRA .pt merged at "
                                      "conversion (unset: none)")

    def load(self, preset: Any, policy: Any = None) -> None:
        from longvid.backends.causal_memory import MemFlowEngine

        super().load(preset, policy)
        o = self.options
        self.engine = MemFlowEngine(self.transformer, o.policy(), o.bank())

    def versions(self) -> dict[str, str]:
        o = self.options
        return super().versions() | {"engine": "causal-kv 1 + memflow bank "
                                     f"{o.bank_size}/{o.record_interval}"}


class CausalMagBackend(MemoryWanBackend):
    name: ClassVar[str] = "causal-mag"
    caps: ClassVar[BackendCaps] = BackendCaps(
        native_fps=NATIVE_FPS, any_fps=False, latent_stride_t=4,
        max_latents=MAG_CONTEXT_LATENTS + BLOCKS_PER_SEGMENT * BLOCK_LATENTS,
        context_latents=MAG_CONTEXT_LATENTS, size_multiple=16, max_side=832,
        takes_context=True, tokens_per_latent_px=8 * 8 * 2 * 2,
        sink=SinkCaps(MAG_SINK_LATENTS),
        memory=MemoryCaps(MAG_PINNED, trained=True, recall_only=True),
        images=CausalWanBackend.caps.images, decode=CausalWanBackend.caps.decode,
        stream=WAN_1_3B_STREAM)

    class Options(WanHubOptions, MagOptions):
        slots: int = Field(MAG_SLOTS, ge=1, le=MAG_SLOTS, description="compressed frames "
                           "kept: the last frame of each of this many past blocks")
        checkpoint_repo: str = Field("xilluill/MAG", pattern=r"^[\w.-]+/[\w.-]+$",
                                     description="Hub repo of the generator and memory model")
        checkpoint_revision: str = Field("main", description="its revision")
        generator_file: str = Field("generator/diffusion_pytorch_model.safetensors",
                                    description="the generator's weights in that repo")
        memory_file: str = Field("memory_model/diffusion_pytorch_model.safetensors",
                                 description="the memory model's weights in that repo")
        memory_offload: bool = Field(True, description="on a GPU, stream the memory model "
                                     "block by block (it runs once per block)")

    def checkpoint(self, which: str = "generator") -> Any:
        from longvid.backends.causal_weights import CausalCheckpoint

        o = self.options
        file = o.generator_file if which == "generator" else o.memory_file
        return CausalCheckpoint(o.checkpoint_repo, o.checkpoint_revision, file, None,
                                ("generator", "generator_ema", "model"))

    def load(self, preset: Any, policy: Any = None) -> None:
        from diffusers import WanTransformer3DModel

        from longvid.backends import wan_parts
        from longvid.backends.causal_memory import MagEngine
        from longvid.backends.causal_weights import converted_transformer

        label = self.load_shared(preset, policy, cpu_preset="tiny-mag")
        self.converted = converted_transformer(self.checkpoint(), self.folder, label)
        self.memory_converted = converted_transformer(self.checkpoint("memory"), self.folder,
                                                      label)

        def transformer(folder: Any) -> Any:
            return wan_parts.load_transformer(WanTransformer3DModel, wan_parts.Weights(folder),
                                              preset.quantization, self.dtype).eval()

        generator, memory = transformer(self.converted), transformer(self.memory_converted)
        wan_parts.place_transformer(generator, self.device, policy)
        if self.device.type == "cuda" and self.options.memory_offload:
            from diffusers.hooks import apply_group_offloading

            apply_group_offloading(memory, onload_device=self.device,
                                   offload_type="block_level", num_blocks_per_group=1,
                                   use_stream=True)
        else:  # resident, as the VRAM budget counts it (vram.second_transformer)
            memory.to(self.device)
        self.transformer, self.memory = generator, memory
        self.engine = MagEngine(generator, memory, self.options.policy())

    def prepare(self, prompts: list[str], negative_prompt: str, guidance_scale: float) -> None:
        super().prepare(sorted(set(prompts) | {""}), negative_prompt, guidance_scale)
        self.engine.empty_cond = self.prompts[""]  # the memory model's prompt

    def versions(self) -> dict[str, str]:
        from longvid.backends.wan_hub import WanHubBackend

        o = self.options
        return WanHubBackend.versions(self) | {
            "converted": self.converted.name,
            "generator": f"{o.checkpoint_repo}@{o.checkpoint_revision}/{o.generator_file}",
            "memory_model": f"{o.checkpoint_repo}@{o.checkpoint_revision}/{o.memory_file}",
            "memory_converted": self.memory_converted.name,
            "engine": f"causal-kv 1 + mag {o.sink_latents}+{o.slots}"}
