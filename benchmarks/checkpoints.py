"""Random-weight checkpoints of the Hub presets' models, at real or tiny size, written
into a Hugging Face cache in the Hub's own layout (hubcache.py).

Real size uses the released checkpoints' configs: values change neither memory nor
FLOPs, so random weights prove a fit as well as the real ones. Tiny size keeps every
quantized matrix a whole number of quantization blocks (bitsandbytes' CPU nf4 packs
64 inputs x 32 outputs, GGUF Q8_0 rows of 32), so nf4, fp8 and GGUF really pack
weights there too. Also writes a transformer as a GGUF file the way community
converters do (`write_gguf`), for gpu_proof.py and the tests alike.
"""

from __future__ import annotations

import fnmatch
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hubcache import write_hub_snapshot

# UMT5-XXL encoder (google/umt5-xxl), the text encoder of every Wan-family checkpoint
UMT5_XXL = {"d_model": 4096, "d_ff": 10240, "d_kv": 64, "num_heads": 64, "num_layers": 24,
            "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
            "feed_forward_proj": "gated-gelu", "vocab_size": 256384}
# Wan2.1-T2V-1.3B's DiT: the backbone of every 1.3B preset
WAN_1_3B = {"patch_size": (1, 2, 2), "num_attention_heads": 12, "attention_head_dim": 128,
            "in_channels": 16, "out_channels": 16, "text_dim": 4096, "freq_dim": 256,
            "ffn_dim": 8960, "num_layers": 30, "cross_attn_norm": True, "eps": 1e-6}
QK_NORM = {"qk_norm": "rms_norm_across_heads"}
REAL_TRANSFORMER = {
    # Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers
    "skyreels-df": WAN_1_3B | QK_NORM | {"inject_sample_info": True},
    # Wan-AI/Wan2.1-VACE-1.3B-diffusers, as diffusers' scripts/convert_wan_to_diffusers.py
    # converts it: a VACE block beside every second DiT block (15), 96 control channels.
    # ([0, 5, ..., 35] is the 14B's; 15 blocks agree with the 2.154 B parameters of
    # docs/diffusers-facts.md and the preset's 4.01 GiB.)
    "wan-vace": WAN_1_3B | QK_NORM | {"vace_layers": list(range(0, 30, 2)),
                                      "vace_in_channels": 96},
    # nvidia/AnyFlow-FAR-Wan2.1-1.3B-Diffusers: Wan-1.3B plus the FAR parts at the class
    # defaults, which diffusers documents as the released checkpoints' (the chunk
    # partition for 81 frames); gate_value and deltatime_type could not be checked
    # against the repo's config.json from here; neither changes memory or FLOPs.
    "anyflow-far": WAN_1_3B | {"compressed_patch_size": (1, 4, 4), "full_chunk_limit": 3,
                               "gate_value": 0.25, "deltatime_type": "r",
                               "chunk_partition": (1, 3, 3, 3, 3, 3, 3, 2)},
    # Wan-AI/Wan2.1-T2V-1.3B-Diffusers: the network LongLive and Self-Forcing fine-tune
    "causal-wan": WAN_1_3B | QK_NORM,
    # the same network: MemFlow fine-tunes LongLive; MAG's generator and memory model
    "causal-memflow": WAN_1_3B | QK_NORM,
    "causal-mag": WAN_1_3B | QK_NORM,
}
TINY_UMT5 = {"d_model": 64, "d_ff": 64, "d_kv": 16, "num_heads": 4, "num_layers": 2,
             "relative_attention_num_buckets": 8, "feed_forward_proj": "gated-gelu"}
TINY_WAN = {"patch_size": (1, 2, 2), "num_attention_heads": 2, "attention_head_dim": 16,
            "in_channels": 16, "out_channels": 16, "text_dim": 64, "freq_dim": 256,
            "ffn_dim": 64, "num_layers": 2, "cross_attn_norm": True, "rope_max_seq_len": 32}
TINY_TRANSFORMER = {
    "skyreels-df": TINY_WAN | QK_NORM | {"inject_sample_info": True},
    "wan-vace": TINY_WAN | QK_NORM | {"num_layers": 3, "vace_layers": [0, 2],
                                      "vace_in_channels": 96},
    "anyflow-far": TINY_WAN,
    "causal-wan": TINY_WAN | QK_NORM,
    "causal-memflow": TINY_WAN | QK_NORM,
    "causal-mag": TINY_WAN | QK_NORM,
}
TINY_VAE = {"base_dim": 3, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1}  # real: the defaults
FLOW_UNIPC = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}
# backend -> (pipeline, transformer class, scheduler class, scheduler kwargs)
FAMILIES = {
    "skyreels-df": ("SkyReelsV2DiffusionForcingPipeline", "SkyReelsV2Transformer3DModel",
                    "UniPCMultistepScheduler", FLOW_UNIPC | {"flow_shift": 8.0}),
    "wan-vace": ("WanVACEPipeline", "WanVACETransformer3DModel", "UniPCMultistepScheduler",
                 FLOW_UNIPC | {"flow_shift": 3.0}),
    # shift 5 as diffusers' tests and AnyFlow's training configs use; unchecked against
    # the repo's scheduler_config.json (irrelevant to memory and step time)
    "anyflow-far": ("AnyFlowFARPipeline", "AnyFlowFARTransformer3DModel",
                    "FlowMapEulerDiscreteScheduler", {"shift": 5.0}),
    # the Wan2.1 snapshot; the generator itself is an upstream .pt (write_causal_generator)
    "causal-wan": ("WanPipeline", "WanTransformer3DModel", "FlowMatchEulerDiscreteScheduler",
                   {"shift": 5.0}),
}
FAMILIES["causal-memflow"] = FAMILIES["causal-mag"] = FAMILIES["causal-wan"]
# PEFT LoRA rank of the causal generator's LoRA: LongLive's 0.7 GB file at real size
LORA_RANK = {False: 256, True: 4}


def build_pipeline(backend: str, *, tiny: bool, device: str = "cpu", seed: int = 0) -> Any:
    """The preset family's diffusers pipeline with random weights (bf16 at real size, the
    VAE in fp32, as the checkpoints ship), built on the meta device and filled in place
    on `device`: no CPU random init (5.7 B UMT5 parameters take minutes on a CPU and
    milliseconds on a GPU), and no memory held twice."""
    import diffusers
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    from longvid.backends.tiny import _byte_tokenizer

    pipeline, transformer_cls, scheduler_cls, scheduler_kwargs = FAMILIES[backend]
    dtype = torch.float32 if tiny else torch.bfloat16  # what the checkpoints ship
    tokenizer = _byte_tokenizer()  # the real UMT5 vocabulary changes no memory figure
    te_config = (dict(TINY_UMT5, vocab_size=len(tokenizer)) if tiny else UMT5_XXL) | {
        "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}
    config = (TINY_TRANSFORMER if tiny else REAL_TRANSFORMER)[backend]
    generator = torch.Generator(device).manual_seed(seed)
    with torch.device("meta"):
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            text_encoder = UMT5EncoderModel(UMT5Config(**te_config))
            transformer = getattr(diffusers, transformer_cls)(**config)
        finally:
            torch.set_default_dtype(default)
        vae = diffusers.AutoencoderKLWan(**(TINY_VAE if tiny else {}))  # fp32
    for model in (text_encoder, transformer, vae):
        fill_random(model, device, generator)
    scheduler = getattr(diffusers, scheduler_cls)(**scheduler_kwargs)
    return getattr(diffusers, pipeline)(tokenizer=tokenizer, text_encoder=text_encoder,
                                        transformer=transformer, vae=vae, scheduler=scheduler)


def fill_random(model: Any, device: str, generator: Any) -> None:
    """Give a meta-device `model` real storage on `device` and fill it in place with
    N(0, 0.02): the values change neither memory nor FLOPs. Buffers computed at init
    (RoPE tables) are not saved, so the load path recomputes them."""
    import torch

    model.to_empty(device=device)
    if hasattr(model, "tie_weights"):  # to_empty unties UMT5's shared embedding: 2 GiB more
        model.tie_weights()
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.normal_(0.0, 0.02, generator=generator)
    model.eval()


def component_files(name: str, patterns: tuple[str, ...]) -> str | None:
    """What of component `name` a preset downloads: "weights" (and config), "config"
    only (a GGUF preset's transformer), or None."""
    weights = (f"{name}/diffusion_pytorch_model.safetensors", f"{name}/model.safetensors",
               f"{name}/tokenizer.json")
    if any(fnmatch.fnmatch(f, p) for f in weights for p in patterns):
        return "weights"
    if any(fnmatch.fnmatch(f"{name}/config.json", p) for p in patterns):
        return "config"
    return None


def install_preset(cache: Path, preset: Any, *, tiny: bool, device: str = "cpu",
                   work: Path | None = None) -> None:
    """Every Hub source of `preset` in `cache`, holding just the files the preset
    downloads: the diffusers snapshot, and the GGUF file of its transformer if any.
    Only what the load path reads is written (a GGUF preset's transformer safetensors
    are not); blobs over 64 MiB are named by a cheap digest (neither huggingface_hub
    nor longvid's filecheck hashes them), smaller ones by their SHA-256."""
    pipe = build_pipeline(preset.backend, tiny=tiny, device=device)
    fast = not tiny
    with tempfile.TemporaryDirectory(dir=work or cache.parent) as tmp:
        if gguf := preset.transformer_gguf:
            folder = Path(tmp) / "gguf"
            folder.mkdir()
            write_gguf(folder / gguf.files[0], pipe.transformer,
                       qtype=preset.quantization.gguf_type)
            write_hub_snapshot(cache, gguf.repo, folder, gguf.revision, fast=fast)
        if preset.backend in ("causal-wan", "causal-memflow"):
            write_causal_generator(cache, preset.options, pipe.transformer, Path(tmp),
                                   tiny=tiny)
        if preset.backend == "causal-mag":
            write_mag_folders(cache, preset.options, pipe.transformer, Path(tmp), tiny=tiny)
        snapshot = Path(tmp) / "snapshot"
        pipe.save_config(snapshot)  # model_index.json
        components = pipe.components
        del pipe
        for name in list(components):
            component = components.pop(name)  # freed once written
            what = component_files(name, preset.hub.files) if component is not None else None
            if what == "weights":
                kwargs = {} if name == "tokenizer" else {"safe_serialization": True}
                component.save_pretrained(snapshot / name, **kwargs)
            elif what is not None:  # the scheduler, or a GGUF preset's transformer
                component.save_config(snapshot / name)
            del component
        for path in [p for p in snapshot.rglob("*") if p.is_file()]:
            name = str(path.relative_to(snapshot))
            if not any(fnmatch.fnmatch(name, pattern) for pattern in preset.hub.files):
                path.unlink()
        write_hub_snapshot(cache, preset.hub.repo, snapshot, preset.hub.revision, fast=fast)


def write_causal_generator(cache: Path, options: Any, transformer: Any, tmp: Path, *,
                           tiny: bool) -> None:
    """`transformer`'s weights as the upstream causal checkpoint the preset's options name,
    in the layout longvid/backends/causal_weights.py reads: a `.pt` of
    `{state_keys[0]: {"model." + original Wan key: tensor}}` (bf16 at real size, as
    released), and where the options name a LoRA file, PEFT pairs for every attention
    and FFN matrix of each block under `generator_lora` (LongLive's layout)."""
    import torch

    folder = tmp / "generator"
    state = {"model." + original_key(k): v for k, v in transformer.state_dict().items()}
    base = folder / options.checkpoint_file
    base.parent.mkdir(parents=True, exist_ok=True)
    torch.save({options.state_keys[0]: state}, base)
    del state
    if options.lora_file:
        rank, lora = LORA_RANK[tiny], {}
        generator = torch.Generator(transformer.device).manual_seed(1)
        for key, weight in transformer.state_dict().items():
            target = original_key(key)
            parts = target.split(".")
            if parts[0] != "blocks" or weight.ndim != 2 or \
                    parts[2] not in ("self_attn", "cross_attn", "ffn"):
                continue
            module = target.removesuffix(".weight")
            out_f, in_f = weight.shape
            for part, shape in (("lora_A", (rank, in_f)), ("lora_B", (out_f, rank))):
                lora[f"base_model.model.{module}.{part}.weight"] = torch.empty(
                    shape, device=weight.device, dtype=weight.dtype).normal_(
                        0.0, 0.02, generator=generator)
        path = folder / options.lora_file
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"generator_lora": lora}, path)
        del lora
    write_hub_snapshot(cache, options.checkpoint_repo, folder, options.checkpoint_revision,
                       fast=not tiny)
    shutil.rmtree(folder)


def write_mag_folders(cache: Path, options: Any, transformer: Any, tmp: Path, *,
                      tiny: bool) -> None:
    """`transformer`'s weights as MAG's generator and memory model: the safetensors files
    the options name (`from_pretrained` folders, original Wan keys, no prefix), the same
    random values in both (values change neither memory nor FLOPs)."""
    from safetensors.torch import save_file

    folder = tmp / "mag"
    state = {original_key(k): v.contiguous() for k, v in transformer.state_dict().items()}
    for file in (options.generator_file, options.memory_file):
        path = folder / file
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path))
    del state
    write_hub_snapshot(cache, options.checkpoint_repo, folder, options.checkpoint_revision,
                       fast=not tiny)
    shutil.rmtree(folder)


def storage_of(model: Any) -> dict[str, int]:
    """Parameter count by how each is stored: "torch.bfloat16", "torch.float8_e4m3fn",
    "GGUF Q8_0", "Params4bit" (bitsandbytes nf4), "Int8Params", ..."""
    kinds: dict[str, int] = {}
    for p in model.parameters():
        kind = type(p).__name__
        kind = f"GGUF {p.quant_type.name}" if kind == "GGUFParameter" else (
            kind if kind not in ("Parameter", "Tensor") else str(p.dtype))
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


# diffusers key -> original SkyReels-V2 / Wan key, the inverse of diffusers'
# convert_wan_transformer_to_diffusers plus the fps MLP (longvid.backends.wan_parts)
TO_ORIGINAL = [("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
               ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
               ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
               ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
               ("condition_embedder.time_proj", "time_projection.1"),
               ("fps_projection.net.0.proj", "fps_projection.0"),
               ("fps_projection.net.2", "fps_projection.2"),
               ("attn1", "self_attn"), ("attn2", "cross_attn"), (".to_out.0.", ".o."),
               (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."),
               ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"), ("proj_out", "head.head"),
               (".norm2.", ".norm3.")]


def original_key(key: str) -> str:
    if key == "scale_shift_table":
        return "head.modulation"
    if key.endswith(".scale_shift_table"):
        return key.replace("scale_shift_table", "modulation")
    for ours, theirs in TO_ORIGINAL:
        key = key.replace(ours, theirs)
    return key


def quantize_q8_0(tensor: Any) -> Any:
    """GGUF Q8_0 of a 2-D tensor, on the tensor's own device (a GPU: milliseconds for what
    gguf-py does in numpy in about a minute): per row-block of 32, d = absmax / 127 as
    fp16, then the 32 values rounded to int8; bytes laid out as gguf-py's `quantize`
    (d, then the 32 int8), returned as uint8 numpy of shape (rows, cols / 32 * 34)."""
    import torch

    rows, cols = tensor.shape
    blocks = tensor.float().reshape(-1, 32)
    d = blocks.abs().amax(dim=1, keepdim=True) / 127
    inverse = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    # gguf-py rounds half away from zero (np_roundf); torch.round rounds half to even
    scaled = blocks * inverse
    q = (scaled.sign() * torch.floor(scaled.abs() + 0.5)).to(torch.int8)
    packed = torch.cat([d.half().view(torch.uint8), q.view(torch.uint8)], dim=1)
    return packed.reshape(rows, cols // 32 * 34).cpu().numpy()


def write_gguf(path: Path, transformer: Any, *, original_keys: bool = False,
               qtype: str = "Q8_0") -> Path:
    """The transformer as a GGUF file the way community files are made: matrices whose
    rows hold whole blocks quantized, everything else (norms, biases, convs) in F32.
    Q8_0 is quantized with torch where the weights are (`quantize_q8_0`); other types by
    gguf-py in numpy, one tensor at a time (a 1.3B model in about a minute)."""
    import gguf
    import numpy as np

    kind = gguf.GGMLQuantizationType[qtype]
    block = gguf.GGML_QUANT_SIZES[kind][0]
    writer = gguf.GGUFWriter(str(path), arch="wan")
    for key, tensor in transformer.state_dict().items():
        name = original_key(key) if original_keys else key
        if tensor.ndim == 2 and tensor.shape[-1] % block == 0:
            packed = quantize_q8_0(tensor) if qtype == "Q8_0" else \
                gguf.quants.quantize(tensor.float().cpu().numpy(), kind)
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=kind)
        else:
            writer.add_tensor(name, tensor.float().cpu().numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
