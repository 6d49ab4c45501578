"""Wan-family components (transformer, UMT5 text encoder) loaded as a preset stores them.

Shared by the backends that run Wan-architecture checkpoints. What it loads:
- transformer: the diffusers safetensors folder in bf16; or the same with fp8 storage
  (diffusers' layerwise casting, bf16 compute); or a GGUF file through diffusers'
  `from_single_file` with the config taken from the local snapshot, never fetched;
- text encoder: UMT5 from the snapshot, plain or quantized on load by bitsandbytes
  (nf4 or int8) with bf16 compute (fp32 on a CPU); fp16 is never used, because
  transformers then keeps UMT5's `wo` in fp32 and T5 activations overflow in fp16.
It knows nothing about schedules, prompts or placement beyond the device it is given.
Only safetensors and GGUF files reach it (longvid.hub refuses pickles). Heavy imports
are inside the functions.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from longvid.budget import Quantization
from longvid.errors import InputError, ResourceError

# Original SkyReels-V2 checkpoints, and GGUF files converted from them, keep the fps MLP
# as an nn.Sequential; diffusers' Wan key mapping (0.42.1) does not rename it.
ORIGINAL_TO_DIFFUSERS_KEYS = {"fps_projection.0.": "fps_projection.net.0.proj.",
                              "fps_projection.2.": "fps_projection.net.2."}
# GGUF converters quantize every large tensor, but diffusers packs only nn.Linear weights
# (GGUFLinear): these other modules' weights are dequantized while loading.
GGUF_NOT_LINEAR = ["fps_embedding", "patch_embedding"]
NEEDS = {"nf4": "bitsandbytes", "int8": "bitsandbytes", "gguf": "gguf"}


def check_installed(quant: Quantization) -> None:
    """Before any download: the packages the preset's quantization needs are importable."""
    for choice in (quant.text_encoder, quant.transformer):
        package = NEEDS.get(choice)
        if package and importlib.util.find_spec(package) is None:
            raise ResourceError(f"the preset stores weights as {choice}, which needs the "
                                f"{package!r} package, and it is not installed",
                                "pip install 'longvid[quant]'")


def load_transformer(cls: Any, folder: Path, quant: Quantization, gguf_file: Path | None,
                     dtype: Any) -> Any:
    """`cls` (e.g. SkyReelsV2Transformer3DModel) on the CPU, computing in `dtype`."""
    import torch

    if quant.transformer == "gguf":
        return _from_gguf(cls, folder, gguf_file, quant.gguf_type, dtype)
    model = cls.from_pretrained(folder, subfolder="transformer", torch_dtype=dtype)
    if quant.transformer == "fp8":  # the class's _skip_layerwise_casting_patterns keep
        # the patch and condition embedders and the norms wide
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
    return model


def _from_gguf(cls: Any, folder: Path, gguf_file: Path | None, gguf_type: str | None,
               dtype: Any) -> Any:
    from diffusers import GGUFQuantizationConfig
    from diffusers.models.model_loading_utils import load_gguf_checkpoint

    assert gguf_file is not None and gguf_type is not None  # presets.py validates the pair
    try:
        state = load_gguf_checkpoint(str(gguf_file))
    except (ValueError, OSError) as exc:  # unsupported quant type, truncated file
        raise InputError(f"{gguf_file.name}: cannot read the GGUF file: {exc}",
                         "remove it with `longvid models rm` and pull again, or choose a GGUF "
                         "type diffusers supports (Q8_0, Q6_K, Q5_K, Q4_K, Q4_0, ...)") from None
    found = {t.quant_type.name for t in state.values() if hasattr(t, "quant_type")}
    base = gguf_type.removesuffix("_M").removesuffix("_S")
    if base not in found and gguf_type not in ("BF16", "F16"):
        raise InputError(
            f"{gguf_file.name} holds {', '.join(sorted(found)) or 'no quantized'} tensors, "
            f"but the preset says quant_type {gguf_type}",
            "set `transformer_gguf.quant_type` to the file's type: the VRAM plan depends on it")
    for old in [k for k in state if any(o in k for o in ORIGINAL_TO_DIFFUSERS_KEYS)]:
        new = old
        for original, ours in ORIGINAL_TO_DIFFUSERS_KEYS.items():
            new = new.replace(original, ours)
        state[new] = state.pop(old)
    config = GGUFQuantizationConfig(compute_dtype=dtype)
    config.modules_to_not_convert = GGUF_NOT_LINEAR
    # a dict, not the path: the fps keys above must be renamed first; the config comes
    # from the local snapshot (diffusers would otherwise fetch one from the Hub)
    return cls.from_single_file(state, config=str(folder), subfolder="transformer",
                                local_files_only=True, torch_dtype=dtype,
                                quantization_config=config)


def load_text_encoder(folder: Path, quant: Quantization, dtype: Any, device: Any) -> Any:
    """UMT5 from `folder/text_encoder` on `device`, quantized on load if the preset says so."""
    import torch
    from transformers import BitsAndBytesConfig, UMT5EncoderModel

    assert dtype in (torch.bfloat16, torch.float32), "fp16 overflows T5 activations"
    if quant.text_encoder == "bf16":
        return UMT5EncoderModel.from_pretrained(folder, subfolder="text_encoder",
                                                dtype=dtype).to(device).eval()
    if quant.text_encoder == "nf4":
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                    bnb_4bit_compute_dtype=dtype)
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    # bitsandbytes quantizes while placing the weights, so the device is chosen here; a
    # quantized model is not moved afterwards
    return UMT5EncoderModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype,
                                            quantization_config=config,
                                            device_map={"": str(device)}).eval()

