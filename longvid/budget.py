"""VRAM budget -> load policy, and the estimated peak of each stage. Pure.

One dial: the GPU memory the render may use (`--vram`, default the free VRAM).
From it and the preset's `memory:` figures (weights per component, activation
bytes per transformer token, tiled VAE decode) and the preset's quantization, the
policy decides where each component lives, using only diffusers' own mechanisms (a
resident module, or block-level group offload with CUDA streams; VAE tiling).
Estimates follow the planning formulas in docs/presets.md: stage peak = the stage's
component (resident, or the blocks in flight when streamed) + activations + whatever
else is resident on the GPU in that stage + 1 GiB of allocator and workspace
overhead. The backends load the transformer and VAE before the text encoder runs,
so the text-encoder stage holds them too; the text encoder is freed (and its blocks
returned to the driver) before the first denoising step. A streaming backend's KV
cache (`KVCacheBudget`) is on the GPU in the transformer and VAE stages only.

A text encoder never runs on the CPU when there is a GPU: in bf16 a desktop CPU
without AVX-512-BF16 computes at ~1 GFLOPS (docs/performance.md), hours for one
prompt. A bf16 encoder that does not fit streams through the GPU a block at a time;
a bitsandbytes one is resident.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

OVERHEAD_GIB = 1.0  # allocator fragmentation, cuBLAS/cuDNN workspaces
# The CUDA allocator configuration these figures assume; the CLI sets it (unless the
# user has) before torch loads, and benchmarks/gpu_proof.py measures under it. Growing
# segments in place keeps a freed text encoder's blocks from fragmenting the denoiser's.
ALLOCATOR_CONF = "expandable_segments:True"
# A streaming backend's KV cache grows and evicts every block, and its VAE decoder's
# cache every frame: the allocator keeps more in pieces than 1 GiB. Measured on an H100
# (2026-11-28, docs/performance.md): memflow-1.3b reserved 2.08 GiB over its allocated
# peak's estimate (1.08 over OVERHEAD_GIB, 0.19 of its 5.78 GiB of caches); longlive-1.3b
# and mag-1.3b ran into their caps with the allocator giving back blocks 84 and 153 times.
CACHE_CHURN_FRACTION = 0.2
BLOCKS_IN_FLIGHT = 3  # group offload with streams: current block, next one, one spare
BF16_BYTES_PER_PARAM = 2
# bitsandbytes, per quantized Linear weight: nf4 = 4 bit + one fp32 absmax per 64 weights
# (no double quantization); int8 = 1 byte (+ one scale per row, negligible).
BNB_BYTES_PER_PARAM = {"nf4": 0.5625, "int8": 1.0}
TEXT_ENCODER_QUANTS = ("bf16", *BNB_BYTES_PER_PARAM)
FP8_BYTES_PER_PARAM = 1  # layerwise casting: float8_e4m3fn storage, bf16 compute
TRANSFORMER_QUANTS = ("bf16", "fp8", "gguf")
# GGUF bits per weight (gguf-py GGML_QUANT_SIZES). llama.cpp's K-quant mixes (_S, _M)
# keep a few tensors at a higher type; their estimate uses the base type.
GGUF_BITS_PER_WEIGHT = {
    "BF16": 16.0, "F16": 16.0, "Q8_0": 8.5, "Q6_K": 6.5625, "Q5_1": 6.0, "Q5_0": 5.5,
    "Q5_K_M": 5.5, "Q5_K_S": 5.5, "Q4_1": 5.0, "Q4_0": 4.5, "Q4_K_M": 4.5, "Q4_K_S": 4.5,
    "Q3_K_M": 3.4375, "Q3_K_S": 3.4375, "Q2_K": 2.625,
}


@dataclass(frozen=True)
class Quantization:
    """How a preset stores its big components (docs/presets.md, `quantization:`)."""

    text_encoder: str = "bf16"  # "bf16" | "nf4" | "int8": bitsandbytes, bf16 compute
    transformer: str = "bf16"  # "bf16" | "fp8": layerwise casting | "gguf": a GGUF file
    gguf_type: str | None = None  # "Q8_0", ...: the GGUF file's quantization, if gguf

    @property
    def transformer_storage(self) -> str:
        return f"gguf {self.gguf_type}" if self.transformer == "gguf" else self.transformer


NO_QUANTIZATION = Quantization()


@dataclass(frozen=True)
class MemorySpec:
    text_encoder_gib: float
    text_encoder_act_gib: float
    transformer_gib: float
    transformer_blocks: int
    act_bytes_per_token: int
    vae_gib: float
    vae_decode_gib: float  # tiled decode of one window
    text_encoder_unquantized_gib: float = 0.0  # bf16 weights bitsandbytes leaves alone
    text_encoder_blocks: int = 1  # streamed a block at a time when offloaded
    text_encoder_embedding_gib: float = 0.0  # on the GPU for the whole pass when streamed


def text_encoder_weights_gib(memory: MemorySpec, quant: Quantization) -> float:
    """UMT5 under bitsandbytes: Linear weights shrink; `wo` (kept in bf16 by transformers)
    and the embeddings, `text_encoder_unquantized_gib`, do not."""
    if quant.text_encoder == "bf16":
        return memory.text_encoder_gib
    kept = memory.text_encoder_unquantized_gib
    per_param = BNB_BYTES_PER_PARAM[quant.text_encoder] / BF16_BYTES_PER_PARAM
    return kept + (memory.text_encoder_gib - kept) * per_param


def transformer_weights_gib(memory: MemorySpec, quant: Quantization) -> float:
    """fp8 stores every weight in 1 byte; GGUF at its bits per weight. The few tensors
    either keeps wider (norms, embedders, biases) are under 1 % at 1.3B: ignored."""
    if quant.transformer == "fp8":
        return memory.transformer_gib * FP8_BYTES_PER_PARAM / BF16_BYTES_PER_PARAM
    if quant.transformer == "gguf":
        assert quant.gguf_type is not None  # presets.py requires the type with a GGUF file
        return memory.transformer_gib * GGUF_BITS_PER_WEIGHT[quant.gguf_type] / 16
    return memory.transformer_gib


@dataclass(frozen=True)
class Stage:
    name: str  # "text encoder" | "transformer" | "vae"
    placement: str  # "gpu" | "group offload"
    peak_gib: float
    weights_gib: float = 0.0  # the component's weights at their stored size
    storage: str = "bf16"  # "bf16" | "nf4" | "int8" | "fp8" | "gguf Q8_0" | "fp32"


@dataclass(frozen=True)
class KVCacheBudget:
    """A streaming backend's KV cache (caps.stream): on the GPU from the first block to the
    segment's decode, so in the transformer and VAE stages; the text encoder runs before."""

    gib: float  # the cache at its fullest, and one layer's working copies
    latents: int  # latent frames it holds
    storage: str  # "bf16" | "fp8"
    decoder_gib: float = 0.0  # a streaming VAE decoder's feature cache, held for a take
    decoder_storage: str = ""  # that VAE's dtype on the GPU ("" without one: fp32, tiled)

    @property
    def churn_gib(self) -> float:
        """What the allocator holds in pieces beyond OVERHEAD_GIB while the caches churn."""
        return CACHE_CHURN_FRACTION * (self.gib + self.decoder_gib)

    @property
    def total_gib(self) -> float:
        return self.gib + self.decoder_gib + self.churn_gib


@dataclass(frozen=True)
class SecondTransformer:
    """A second transformer of the same network and storage that runs once per block
    beside the generator (MAG's memory model). `offload`: streamed block by block through
    the GPU (diffusers group offload) while it runs, absent from the GPU otherwise;
    else resident from load to the end, like the transformer."""

    name: str
    offload: bool


@dataclass(frozen=True)
class LoadPolicy:
    vram_gib: float
    text_encoder: str  # "gpu" | "group offload"
    transformer: str  # "gpu" | "group offload"
    stages: tuple[Stage, ...]
    kv_cache: KVCacheBudget | None = None  # a streaming backend's, in the stages' peaks
    second: Stage | None = None  # a second transformer's share, in the stages' peaks

    @property
    def peak_gib(self) -> float:
        return max(s.peak_gib for s in self.stages)

    @property
    def fits(self) -> bool:
        return self.peak_gib <= self.vram_gib

    @property
    def streamed(self) -> tuple[Stage, ...]:
        """The components streamed through the GPU a block at a time."""
        return tuple(s for s in (*self.stages, self.second)
                     if s is not None and s.placement == "group offload")

    @property
    def host_weights_gib(self) -> float:
        """Weights that stay in host RAM for the whole render: every streamed component
        (diffusers' group offload keeps it all on the host, pinned). A floor of the
        render's RAM, not its peak: Python, torch and the loaders come on top."""
        return sum(s.weights_gib for s in self.streamed)

    def to_dict(self) -> dict[str, Any]:
        """As JSON data; `kv_cache` and `second` only for a backend that has one."""
        data = asdict(self)
        for key in ("kv_cache", "second"):
            if data[key] is None:
                del data[key]
        if self.kv_cache is not None:
            data["kv_cache"]["churn_gib"] = self.kv_cache.churn_gib
        return data


def streamed_gib(weights_gib: float, blocks: int, always_on_gib: float = 0.0) -> float:
    """GPU share of a component under block-level group offload with streams: the
    blocks in flight (current, next, a spare) plus what stays on for the whole pass."""
    per_block = (weights_gib - always_on_gib) / blocks
    return always_on_gib + min(BLOCKS_IN_FLIGHT, blocks) * per_block


def text_encoder_placements(quant: Quantization) -> tuple[str, ...]:
    """Fastest first. bitsandbytes weights are quantized onto one device while loading
    and are not streamed."""
    return ("gpu", "group offload") if quant.text_encoder == "bf16" else ("gpu",)


def policy_for(vram_gib: float, memory: MemorySpec, max_tokens: int,
               quant: Quantization = NO_QUANTIZATION,
               kv: KVCacheBudget | None = None,
               second: SecondTransformer | None = None) -> LoadPolicy:
    """The fastest placement whose every stage fits in `vram_gib` (the transformer, which
    runs every step, resident before the text encoder, which runs once); the leanest
    placement, not fitting, when none does. `kv`: a streaming backend's KV cache, which
    stays on the GPU while blocks are made and decoded; `second`: a second transformer
    (MAG's memory model), in the transformer's storage."""
    candidates = [(te, tr) for tr in ("gpu", "group offload")
                  for te in text_encoder_placements(quant)]
    policies = [_policy(vram_gib, memory, max_tokens, quant, te, tr, kv, second)
                for te, tr in candidates]
    return next((p for p in policies if p.fits), policies[-1])


def _policy(vram_gib: float, memory: MemorySpec, max_tokens: int, quant: Quantization,
            te_placement: str, tr_placement: str, kv: KVCacheBudget | None,
            second: SecondTransformer | None = None) -> LoadPolicy:
    act = max_tokens * memory.act_bytes_per_token / 2**30
    te_weights = text_encoder_weights_gib(memory, quant)
    tr_weights = transformer_weights_gib(memory, quant)
    # the transformer and VAE are loaded (and stay) before the text encoder runs
    tr_resident = tr_weights if tr_placement == "gpu" else 0.0
    # a second transformer: streamed while it runs (in the transformer stage only), or
    # resident from load on, like a resident transformer
    second_stage = None if second is None else Stage(
        second.name, "group offload" if second.offload else "gpu",
        streamed_gib(tr_weights, memory.transformer_blocks) if second.offload else tr_weights,
        tr_weights, quant.transformer_storage)
    second_gpu = 0.0 if second_stage is None else second_stage.peak_gib
    tr_resident += 0.0 if second is None or second.offload else second_gpu
    vae_resident = memory.vae_gib
    te_gpu = te_weights if te_placement == "gpu" else streamed_gib(
        te_weights, memory.text_encoder_blocks, memory.text_encoder_embedding_gib)
    te = Stage("text encoder", te_placement, te_gpu + memory.text_encoder_act_gib + tr_resident
               + vae_resident + OVERHEAD_GIB, te_weights, quant.text_encoder)
    tr_gpu = tr_weights if tr_placement == "gpu" else streamed_gib(
        tr_weights, memory.transformer_blocks)
    kv_gib = kv.total_gib if kv is not None else 0.0
    tr = Stage("transformer", tr_placement,
               tr_gpu + second_gpu + act + kv_gib + vae_resident + OVERHEAD_GIB, tr_weights,
               quant.transformer_storage)
    decode_gib = memory.vae_decode_gib  # a tiled window decode, or a streamed latent frame's
    vae = Stage("vae", "gpu", vae_resident + decode_gib + tr_resident + kv_gib
                + OVERHEAD_GIB, memory.vae_gib,  # tiled, or streamed one latent at a time
                kv.decoder_storage if kv is not None and kv.decoder_storage else "fp32")
    return LoadPolicy(vram_gib, te_placement, tr_placement, (te, tr, vae), kv, second_stage)
