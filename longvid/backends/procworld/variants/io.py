"""Save and load the pose-free variants' weights (fp16 safetensors, run in fp32).

Training-only heads (the pfp / mag reconstruction decoders) are not shipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

TRAIN_ONLY = ".decoder."


def save_variant(model: torch.nn.Module, variant: str, path: Path, meta: dict[str, str]) -> None:
    from safetensors.torch import save_file

    cfg = model.gen.cfg if hasattr(model, "gen") else model.cfg
    tensors = {k: v.detach().to(torch.float16).contiguous()
               for k, v in model.state_dict().items() if TRAIN_ONLY not in k}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"config": json.dumps(cfg.to_dict()),
                                           "variant": variant, **meta})
    os.replace(tmp, path)


def load_variant(path: Path) -> tuple[Any, dict[str, str]]:
    """-> (fp32 model in eval mode: WorldModel or MemoryWorldModel, the file's metadata)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from longvid.backends.procworld.model import ModelConfig, WorldModel
    from longvid.backends.procworld.variants.generator import MemoryWorldModel

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    cfg = ModelConfig(**json.loads(meta["config"]))
    variant = meta.get("variant", "")
    model: torch.nn.Module = (MemoryWorldModel(variant, cfg) if variant in ("pfp", "mag", "malt")
                              else WorldModel(cfg))
    missing, unexpected = model.load_state_dict(
        {k: v.float() for k, v in load_file(str(path)).items()}, strict=False)
    if unexpected or any(TRAIN_ONLY not in k for k in missing):
        raise ValueError(f"{path}: weights do not match the {variant or 'window'} model")
    return model.eval(), meta
