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
from dataclasses import dataclass
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


def check_installed(quant: Quantization, transformer_cls: Any) -> None:
    """Before any download: the packages the preset's quantization needs are importable,
    and a GGUF transformer is one diffusers can load from a single file."""
    for choice in (quant.text_encoder, quant.transformer):
        package = NEEDS.get(choice)
        if package and importlib.util.find_spec(package) is None:
            raise ResourceError(f"the preset stores weights as {choice}, which needs the "
                                f"{package!r} package, and it is not installed",
                                "pip install 'longvid[quant]'")
    if quant.transformer == "gguf":
        from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

        if transformer_cls.__name__ not in SINGLE_FILE_LOADABLE_CLASSES:
            raise InputError(f"{transformer_cls.__name__} cannot be loaded from a GGUF file: "
                             "diffusers has no single-file mapping for it",
                             "set `quantization.transformer` to fp8 (or bf16) in the preset")


def quiet_loading_bars() -> None:
    """No "Loading weights" bars from transformers and diffusers between longvid's own
    progress lines (a cluster job's log fills with them); huggingface_hub's download bars
    stay as they were, since transformers turns those off with its own."""
    import diffusers
    import transformers
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars

    downloads_shown = not are_progress_bars_disabled()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()
    if downloads_shown:
        enable_progress_bars()


@dataclass(frozen=True)
class Weights:
    """Where a preset's weights are: the diffusers snapshot, and its GGUF file if any."""

    folder: Path
    gguf_folder: Path | None = None
    gguf_file: Path | None = None

    @classmethod
    def resolve(cls, preset: Any) -> Weights:
        """From the Hub cache, or downloaded (longvid.hub decides; offline: exit 4)."""
        from longvid import hub

        quiet_loading_bars()
        label = preset.cli_name  # for `longvid models pull LABEL`
        folder = hub.resolve(preset.hub, label)
        if (gguf := preset.transformer_gguf) is None:
            return cls(folder)
        gguf_folder = hub.resolve(gguf, label)
        return cls(folder, gguf_folder, gguf_folder / gguf.files[0])

    def versions(self, preset: Any) -> dict[str, str]:
        """The weights' entries of a run's `versions`: repo@commit of each source."""
        versions = {"weights": f"{preset.hub.repo}@{self.folder.name}"}
        if gguf := preset.transformer_gguf:
            assert self.gguf_folder is not None
            versions["transformer_gguf"] = f"{gguf.repo}@{self.gguf_folder.name}/{gguf.files[0]}"
        return versions

    def prompt_cache_key(self, preset: Any, max_sequence_length: int) -> str:
        """What prompt embeddings depend on: the snapshot, the length, and the text
        encoder's storage (nf4 embeddings differ from bf16 ones)."""
        key = f"{preset.hub.repo}@{self.folder.name}:{max_sequence_length}:"
        if preset.quantization.text_encoder != "bf16":
            key += f"{preset.quantization.text_encoder}:"
        return key


def compute_dtype(device: Any) -> Any:
    """What the Wan models compute in: bf16 on a GPU, fp32 on a CPU (bf16 matmuls are slow
    there without AVX-512-BF16). One place, so a test can run the GPU's dtype on a CPU."""
    import torch

    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_transformer(cls: Any, weights: Weights, quant: Quantization, dtype: Any) -> Any:
    """`cls` (e.g. SkyReelsV2Transformer3DModel) on the CPU, computing in `dtype`, frozen
    (inference only: no call through it can build an autograd graph)."""
    import torch

    if quant.transformer == "gguf":
        model = _from_gguf(cls, weights.folder, weights.gguf_file, quant.gguf_type, dtype)
        return model.requires_grad_(False)
    model = cls.from_pretrained(weights.folder, subfolder="transformer", torch_dtype=dtype)
    if quant.transformer == "fp8":  # the class's _skip_layerwise_casting_patterns keep
        # the patch and condition embedders and the norms wide
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
    return model.requires_grad_(False)


def _from_gguf(cls: Any, folder: Path, gguf_file: Path | None, gguf_type: str | None,
               dtype: Any) -> Any:
    from diffusers import GGUFQuantizationConfig
    from diffusers.models.model_loading_utils import load_gguf_checkpoint

    assert gguf_file is not None and gguf_type is not None  # presets.py validates the pair;
    # check_installed, that the class has a single-file mapping
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
                                                dtype=dtype).to(device).eval().requires_grad_(False)
    if quant.text_encoder == "nf4":
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                    bnb_4bit_compute_dtype=dtype)
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    # bitsandbytes quantizes while placing the weights, so the device is chosen here; a
    # quantized model is not moved afterwards
    return UMT5EncoderModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype,
                                            quantization_config=config,
                                            device_map={"": str(device)}
                                            ).eval().requires_grad_(False)


def text_pipeline(pipeline_cls: Any, folder: Path, quant: Quantization, dtype: Any,
                  device: Any, *, streamed: bool = False) -> Any:
    """A `pipeline_cls` (e.g. WanVACEPipeline) holding only the tokenizer and the text
    encoder, for diffusers' own prompt cleaning and padding rules. `streamed`: the
    encoder's weights stay in CPU memory and pass through `device` (a GPU) a block at a
    time on a CUDA stream (diffusers' block-level group offload of UMT5's 24 blocks);
    the shared embedding and final norm are on `device` for the whole pass."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    if streamed:
        import torch
        from diffusers.hooks import apply_group_offloading

        text_encoder = load_text_encoder(folder, quant, dtype, torch.device("cpu"))
        # The blocks sit under `encoder` (UMT5Stack), which holds every weight (the top's
        # `shared` is its `embed_tokens`): offload the stack itself. Naming it in
        # `block_modules` instead registers diffusers' (0.42.1) layer tracker twice with
        # streams, a ValueError on the first GPU run.
        apply_group_offloading(text_encoder.encoder, onload_device=device,
                               offload_type="block_level", num_blocks_per_group=1,
                               use_stream=True, low_cpu_mem_usage=True)
    else:
        text_encoder = load_text_encoder(folder, quant, dtype, device)
    return pipeline_cls(tokenizer=tokenizer, text_encoder=text_encoder, transformer=None,
                        vae=None, scheduler=None)


# What sampling depends on and a preset does not set: a snapshot whose scheduler says
# otherwise (another prediction type, sigmas not from the flow) samples noise silently.
FLOW_UNIPC = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}


def check_scheduler(folder: Path, class_name: str, expected: dict[str, Any]) -> None:
    """The snapshot's scheduler is `class_name` with `expected` settings; else exit 3."""
    import json

    path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    found = {"_class_name": config.get("_class_name")} | {k: config.get(k) for k in expected}
    for key, want in ({"_class_name": class_name} | expected).items():
        if found[key] != want:
            raise InputError(
                f"{path}: the scheduler's {key} is {found[key]!r}, and this backend samples "
                f"with {want!r}: the download is not the checkpoint the preset names",
                "check the preset's `hub.repo` and `revision`, or remove the snapshot with "
                "`longvid models rm` and pull it again")


def unipc_scheduler(folder: Path, flow_shift: float | None) -> Any:
    """The snapshot's UniPC scheduler, checked to sample flow predictions, with the
    preset's `flow_shift` when it sets one (the preset's choice, whatever the snapshot's)."""
    from diffusers import UniPCMultistepScheduler

    check_scheduler(folder, "UniPCMultistepScheduler", FLOW_UNIPC)
    scheduler = UniPCMultistepScheduler.from_pretrained(folder, subfolder="scheduler")
    if flow_shift is None:
        return scheduler
    return UniPCMultistepScheduler.from_config(scheduler.config, flow_shift=float(flow_shift))


def place_transformer(transformer: Any, device: Any, policy: Any) -> None:
    """Where the LoadPolicy puts the transformer on a GPU: block-level group offload with
    streams, or resident (the text encoder is gone before the first step). CPU: stays."""
    if device.type != "cuda":
        return
    if policy is not None and policy.transformer == "group offload":
        from diffusers.hooks import apply_group_offloading

        apply_group_offloading(transformer, onload_device=device, offload_type="block_level",
                               num_blocks_per_group=1, use_stream=True)
    else:
        transformer.to(device)


class WanVAE:
    """The Wan VAE in fp32 (tiled on a GPU), speaking longvid's normalized latents.
    `gpu_dtype`: its dtype on a GPU (a streaming decoder keeps its feature cache for a
    whole take, half the size in bf16); on a CPU it stays fp32."""

    def __init__(self, folder: Path, device: Any, gpu_dtype: Any = None) -> None:
        import torch
        from diffusers import AutoencoderKLWan

        self.model = AutoencoderKLWan.from_pretrained(folder, subfolder="vae",
                                                      torch_dtype=torch.float32
                                                      ).eval().requires_grad_(False)
        if device.type == "cuda":
            self.model.to(device, gpu_dtype or torch.float32).enable_tiling()
        self.z_dim = z = self.model.config.z_dim
        self.mean = torch.tensor(self.model.config.latents_mean).view(1, z, 1, 1, 1)
        self.std = torch.tensor(self.model.config.latents_std).view(1, z, 1, 1, 1)

    def encode(self, video: Any) -> Any:
        """Pixels (1, 3, F, H, W) in [-1, 1] -> normalized latents (1, z, (F-1)/4+1, h, w)."""
        import torch

        with torch.no_grad():
            z = self.model.encode(video.to(self.model.device, self.model.dtype)
                                  ).latent_dist.mode().float().cpu()
        return (z - self.mean) / self.std

    def decode_float(self, latents: Any) -> Any:
        """Normalized latents (1, z, T, h, w) -> pixels (1, 3, 4T-3, H, W) in [-1, 1]."""
        import torch

        z = latents.float().cpu() * self.std + self.mean
        with torch.no_grad():
            return self.model.decode(z.to(self.model.device, self.model.dtype),
                                     return_dict=False)[0].float().cpu()

    def decode(self, latents: Any, drop: int) -> Any:
        """Normalized latents (1, z, T, h, w) -> uint8 frames (4T-3-drop, H, W, 3)."""
        video = self.decode_float(latents)[0, :, drop:]  # (3, F, H, W) in [-1, 1]
        pixels = ((video.clamp(-1, 1) + 1) * 127.5).round().byte()
        return pixels.permute(1, 2, 3, 0).contiguous().numpy()

    def encode_frames(self, frames: Any) -> Any:
        """uint8 (F, H, W, 3), F = 4k+1 -> normalized latents (1, z, k+1, h, w)."""
        import torch

        video = torch.from_numpy(frames.copy()).float().permute(3, 0, 1, 2).unsqueeze(0)
        return self.encode(video / 127.5 - 1)
