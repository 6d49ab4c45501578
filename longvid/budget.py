"""VRAM budget -> load policy, and the estimated peak of each stage. Pure.

One dial: the GPU memory the render may use (`--vram`, default the free VRAM).
From it and the preset's `memory:` figures (weights per component, activation
bytes per transformer token, tiled VAE decode), the policy decides where each
component lives, using only diffusers' own mechanisms (a resident module, or
block-level group offload with CUDA streams; VAE tiling). Estimates follow the
planning formulas in docs/presets.md: stage peak = resident weights + activations
+ 1 GiB of allocator and workspace overhead.
"""

from __future__ import annotations

from dataclasses import dataclass

OVERHEAD_GIB = 1.0  # allocator fragmentation, cuBLAS/cuDNN workspaces
BLOCKS_IN_FLIGHT = 3  # group offload with streams: current block, next one, one spare


@dataclass(frozen=True)
class MemorySpec:
    text_encoder_gib: float
    text_encoder_act_gib: float
    transformer_gib: float
    transformer_blocks: int
    act_bytes_per_token: int
    vae_gib: float
    vae_decode_gib: float  # tiled decode of one window


@dataclass(frozen=True)
class Stage:
    name: str  # "text encoder" | "transformer" | "vae"
    placement: str  # "gpu" | "cpu" | "group offload"
    peak_gib: float


@dataclass(frozen=True)
class LoadPolicy:
    vram_gib: float
    text_encoder: str  # "gpu" | "cpu"
    transformer: str  # "gpu" | "group offload"
    vae_tiling: bool
    stages: tuple[Stage, ...]

    @property
    def peak_gib(self) -> float:
        return max(s.peak_gib for s in self.stages)

    @property
    def fits(self) -> bool:
        return self.peak_gib <= self.vram_gib


def policy_for(vram_gib: float, memory: MemorySpec, max_tokens: int) -> LoadPolicy:
    """The fastest placement whose every stage fits in `vram_gib`."""
    gib = 2**30
    act = max_tokens * memory.act_bytes_per_token / gib
    te_gpu = memory.text_encoder_gib + memory.text_encoder_act_gib + OVERHEAD_GIB
    te = Stage("text encoder", "gpu", te_gpu) if te_gpu <= vram_gib else Stage(
        "text encoder", "cpu", 0.0)
    resident = memory.transformer_gib + act + OVERHEAD_GIB
    block = memory.transformer_gib / memory.transformer_blocks
    streamed = BLOCKS_IN_FLIGHT * block + act + OVERHEAD_GIB
    tr = Stage("transformer", "gpu", resident) if resident <= vram_gib else Stage(
        "transformer", "group offload", streamed)
    vae = Stage("vae", "gpu", memory.vae_gib + memory.vae_decode_gib + OVERHEAD_GIB)
    return LoadPolicy(vram_gib, te.placement, tr.placement, True, (te, tr, vae))
