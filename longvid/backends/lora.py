"""LoRAs on a Wan-family transformer, through diffusers' own LoRA loading (PEFT).

`WanLoraLoaderMixin.lora_state_dict` reads a .safetensors file and converts the
layouts Wan LoRAs ship in (original Wan / ComfyUI `diffusion_model.*`, musubi
`lora_unet_*`) to diffusers' keys; `transformer.load_lora_adapter` injects it as a
named adapter, once per file per loaded model (in float32 when the model stores fp8);
`set_adapters` sets each segment's weights without reloading anything. A segment
whose weights are all zero runs with the adapters disabled, i.e. through the
untouched base layers: the output is then bit-for-bit that of the model without
LoRAs.

Before injecting, every key is matched against the transformer's layers and every
matrix against the layer's shape, so an incompatible LoRA (another architecture, a
bigger model) is exit 3 naming the file and the first key that does not fit,
rather than PEFT's warning about unexpected keys and a silently partial load.
"""

from __future__ import annotations

from typing import Any

from longvid.backends.base import LoraWeight
from longvid.errors import InputError

_PREFIX = "transformer."  # diffusers' keys after conversion


class LoraStack:
    """The adapters loaded into one transformer, and which of them are on."""

    def __init__(self, transformer: Any) -> None:
        self.transformer = transformer
        self.loaded: dict[str, str] = {}  # LoRA key (content identity) -> adapter name

    def apply(self, loras: tuple[LoraWeight, ...] | None) -> None:
        """Load what is new, then weight every adapter as this segment asks (0: off)."""
        for lora in loras or ():
            if lora.key not in self.loaded:
                self._load(lora)
        active = [(self.loaded[lora.key], lora.weight) for lora in loras or ()
                  if lora.weight != 0]
        if not self.loaded:
            return
        if not active:
            self.transformer.disable_lora()
            return
        self.transformer.enable_lora()
        names, weights = zip(*active, strict=True)
        self.transformer.set_adapters(list(names), list(weights))

    def _load(self, lora: LoraWeight) -> None:
        from diffusers.loaders.lora_pipeline import WanLoraLoaderMixin

        name = f"lora{len(self.loaded)}"
        try:
            state = WanLoraLoaderMixin.lora_state_dict(lora.path)
        except Exception as exc:  # noqa: BLE001 - any unreadable or unconvertible file
            raise _incompatible(lora, f"it cannot be read as a Wan LoRA ({exc})") from None
        if problem := check_fits(self.transformer, state):
            raise _incompatible(lora, problem)
        try:
            self.transformer.load_lora_adapter(state, adapter_name=name, prefix="transformer")
        except Exception as exc:  # noqa: BLE001 - PEFT's errors for what the check missed
            if name in getattr(self.transformer, "peft_config", {}):
                self.transformer.delete_adapters([name])
            raise _incompatible(lora, f"{type(exc).__name__}: {exc}") from None
        _storage_to_float32(self.transformer, name)
        self.loaded[lora.key] = name


def _storage_to_float32(transformer: Any, adapter: str) -> None:
    """PEFT creates an adapter in its base layer's dtype. Under fp8 storage (layerwise
    casting, `quantization.transformer: fp8`) that is float8, which no matmul takes and
    which no casting hook upcasts (the hooks sit on the base layers); float32 adapters
    work under every storage, as PEFT keeps them for bf16 layers."""
    import torch

    for key, param in transformer.named_parameters():
        if f".{adapter}." in key and param.dtype.itemsize == 1 and param.is_floating_point():
            param.data = param.data.to(torch.float32)


def check_fits(transformer: Any, state: dict[str, Any]) -> str | None:
    """The first LoRA key that names no linear layer of `transformer` or has the wrong
    shape for it, in words; None when every key fits."""
    if not state:
        return "it holds no tensors"
    modules = dict(transformer.named_modules())
    for key, tensor in state.items():
        if not key.startswith(_PREFIX) or ".lora_" not in key:
            return f"key {key!r} is not a LoRA weight of the transformer"
        path, part = key[len(_PREFIX):].split(".lora_", 1)
        layer = modules.get(path)
        layer = getattr(layer, "base_layer", layer)  # a layer that already holds an adapter
        if layer is None or not hasattr(layer, "in_features"):
            return f"key {key!r}: the model has no linear layer {path!r}"
        expected = {"A.weight": (None, layer.in_features), "B.weight": (layer.out_features, None),
                    "B.bias": (layer.out_features,)}.get(part)
        if expected is None:
            return f"key {key!r} is not a lora_A/lora_B weight"
        shape = tuple(tensor.shape)
        if len(shape) != len(expected) or any(e is not None and e != s
                                              for e, s in zip(expected, shape, strict=True)):
            want = " x ".join("rank" if e is None else str(e) for e in expected)
            return (f"key {key!r} has shape {' x '.join(map(str, shape))} but layer {path!r} "
                    f"takes {want}")
    return None


def _incompatible(lora: LoraWeight, why: str) -> InputError:
    return InputError(f"LoRA {lora.name!r} ({lora.path}) does not fit this model: {why}",
                      "use a LoRA trained for this model family and size (a Wan2.1 1.3B LoRA "
                      "for the 1.3B presets), or remove it from `loras:`")
