"""A tiny LoRA for the tiny Wan transformer, written the way Wan LoRAs ship (original
Wan / ComfyUI key names, `diffusion_model.blocks.N.self_attn.q.lora_A.weight`), so
loading it exercises diffusers' format conversion."""

from __future__ import annotations

from pathlib import Path

# (original module name, out features, in features) in each block of the tiny Wan
TINY_LAYERS = (("self_attn.q", 32, 32), ("self_attn.v", 32, 32), ("cross_attn.k", 32, 32),
               ("ffn.0", 64, 32))
TINY_BLOCKS = 2


def write_tiny_lora(path: Path, *, seed: int = 0, rank: int = 4, in_features: int | None = None,
                    module: str | None = None) -> Path:
    """`in_features` / `module` make an incompatible LoRA (wrong shape / unknown layer)."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for b in range(TINY_BLOCKS):
        for name, out_f, in_f in TINY_LAYERS:
            key = f"diffusion_model.blocks.{b}.{module or name}"
            a = torch.randn(rank, in_features or in_f, generator=g) * 0.3
            tensors[f"{key}.lora_A.weight"] = a.contiguous()
            tensors[f"{key}.lora_B.weight"] = (torch.randn(out_f, rank, generator=g) * 0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def write_lora_for(transformer, path: Path, *, seed: int = 0, rank: int = 2) -> Path:
    """A LoRA in diffusers' own key layout (`transformer.blocks.N.attn1.to_q.lora_A.weight`)
    for whatever Wan-family transformer is given: its attention query/value and first
    feed-forward layers."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in transformer.named_modules():
        if name.startswith("blocks.") and name.endswith(("attn1.to_q", "attn1.to_v",
                                                         "ffn.net.0.proj")):
            a = torch.randn(rank, module.in_features, generator=g) * 0.3
            tensors[f"transformer.{name}.lora_A.weight"] = a
            tensors[f"transformer.{name}.lora_B.weight"] = torch.randn(
                module.out_features, rank, generator=g) * 0.3
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path
