"""Random-weight checkpoints of the Hub presets' models, at real or tiny size, written
into a Hugging Face cache in the Hub's own layout (hubcache.py).

Real size uses the released checkpoints' configs: values change neither memory nor
FLOPs, so random weights prove a fit as well as the real ones. Tiny size keeps every
quantized matrix a whole number of quantization blocks (bitsandbytes' CPU nf4 packs
64 inputs x 32 outputs, GGUF Q8_0 rows of 32), so nf4, fp8 and GGUF really pack
weights there too. Also writes a transformer as a GGUF file the way community
converters do (`write_gguf`), for vram_12gb.py and the tests alike.
"""

from __future__ import annotations

import fnmatch
import tempfile
from pathlib import Path
from typing import Any

from hubcache import write_hub_snapshot

# UMT5-XXL encoder (google/umt5-xxl), the text encoder of every Wan-family checkpoint
UMT5_XXL = {"d_model": 4096, "d_ff": 10240, "d_kv": 64, "num_heads": 64, "num_layers": 24,
            "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
            "feed_forward_proj": "gated-gelu", "vocab_size": 256384}
# Wan2.1-T2V-1.3B's DiT: the backbone of all three 1.3B presets
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
}


def build_pipeline(backend: str, *, tiny: bool, seed: int = 0) -> Any:
    """The preset family's diffusers pipeline with random weights (bf16 at real size)."""
    import diffusers
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    from longvid.backends.tiny import _byte_tokenizer

    pipeline, transformer_cls, scheduler_cls, scheduler_kwargs = FAMILIES[backend]
    dtype = torch.float32 if tiny else torch.bfloat16  # what the checkpoints ship
    tokenizer = _byte_tokenizer()  # the real UMT5 vocabulary changes no memory figure
    te_config = (dict(TINY_UMT5, vocab_size=len(tokenizer)) if tiny else UMT5_XXL) | {
        "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(**te_config)).to(dtype).eval()
    torch.manual_seed(seed)
    config = (TINY_TRANSFORMER if tiny else REAL_TRANSFORMER)[backend]
    transformer = getattr(diffusers, transformer_cls)(**config).to(dtype).eval()
    torch.manual_seed(seed)
    vae = diffusers.AutoencoderKLWan(**(TINY_VAE if tiny else {})).eval()
    scheduler = getattr(diffusers, scheduler_cls)(**scheduler_kwargs)
    return getattr(diffusers, pipeline)(tokenizer=tokenizer, text_encoder=text_encoder,
                                        transformer=transformer, vae=vae, scheduler=scheduler)


def install_preset(cache: Path, preset: Any, *, tiny: bool) -> None:
    """Every Hub source of `preset` in `cache`, holding just the files the preset
    downloads: the diffusers snapshot, and the GGUF file of its transformer if any."""
    pipe = build_pipeline(preset.backend, tiny=tiny)
    with tempfile.TemporaryDirectory(dir=cache.parent) as tmp:
        if gguf := preset.transformer_gguf:
            folder = Path(tmp) / "gguf"
            folder.mkdir()
            write_gguf(folder / gguf.files[0], pipe.transformer,
                       qtype=preset.quantization.gguf_type)
            write_hub_snapshot(cache, gguf.repo, folder, gguf.revision)
        snapshot = Path(tmp) / "snapshot"
        pipe.save_pretrained(snapshot, safe_serialization=True)
        del pipe
        for path in [p for p in snapshot.rglob("*") if p.is_file()]:
            name = str(path.relative_to(snapshot))
            if not any(fnmatch.fnmatch(name, pattern) for pattern in preset.hub.files):
                path.unlink()  # e.g. the transformer's safetensors of a GGUF preset
        write_hub_snapshot(cache, preset.hub.repo, snapshot, preset.hub.revision)


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


def write_gguf(path: Path, transformer: Any, *, original_keys: bool = False,
               qtype: str = "Q8_0") -> Path:
    """The transformer as a GGUF file the way community files are made: matrices whose
    rows hold whole blocks quantized, everything else (norms, biases, convs) in F32.
    gguf-py quantizes in numpy, one tensor at a time (a 1.3B model in about a minute)."""
    import gguf
    import numpy as np

    kind = gguf.GGMLQuantizationType[qtype]
    block = gguf.GGML_QUANT_SIZES[kind][0]
    writer = gguf.GGUFWriter(str(path), arch="wan")
    for key, tensor in transformer.state_dict().items():
        name = original_key(key) if original_keys else key
        data = tensor.float().numpy()
        if data.ndim == 2 and data.shape[-1] % block == 0:
            packed = gguf.quants.quantize(data, kind)
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=kind)
        else:
            writer.add_tensor(name, data.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
