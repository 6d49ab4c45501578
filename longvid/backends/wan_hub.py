"""What the Hub backends of Wan-architecture checkpoints share.

`skyreels-df`, `wan-vace` and `anyflow-far` differ in how they denoise a window;
they load, encode prompts, report versions and meet a full GPU the same way. Each
backend file keeps its own caps, options and generation; this base holds the rest:
- `_load_models`: the CUDA check (before any download), the quantization packages,
  the snapshot, the transformer as the preset stores it, the VAE;
- `prepare`: every prompt encoded once through the checkpoint's own diffusers
  pipeline (`text_pipeline_class`), cached on disk, the encoder freed; on a GPU the
  encoder is resident or streamed through it, as the LoadPolicy says, never run on
  the CPU (a CPU without AVX-512-BF16 takes hours per prompt in bf16);
- `on_gpu(stage)`: CUDA out-of-memory in any stage (load, text encoder,
  transformer, vae) becomes an error naming the stage and the `--vram` to try next.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from pydantic import Field

from longvid.backends.base import BackendOptions
from longvid.backends.lora import LoraStack
from longvid.backends.prompt_cache import PromptCache
from longvid.errors import ResourceError

MAX_SEQUENCE_LENGTH = 512  # UMT5 tokens per prompt, as the Wan pipelines pad them
VRAM_STEP_GIB = 2  # how much lower a --vram to suggest after an out-of-memory error


class WanHubOptions(BackendOptions):
    """Options every Wan Hub backend takes."""

    max_sequence_length: int = Field(MAX_SEQUENCE_LENGTH, ge=1, le=MAX_SEQUENCE_LENGTH,
                                     description="UMT5 tokens per prompt (longer prompts are "
                                                 "cut)")


class WanHubBackend:
    text_pipeline_class: ClassVar[str]  # diffusers pipeline whose encode_prompt we use

    def _load_models(self, preset: Any, policy: Any, transformer_cls: Any) -> Any:
        """Set options, device and dtype, load the VAE; return the transformer (not placed)."""
        self.preset, self.policy = preset, policy
        self.options = preset.options
        with gpu_stage("load", policy):
            return self._load_weights(preset, policy, transformer_cls)

    def _load_weights(self, preset: Any, policy: Any, transformer_cls: Any) -> Any:
        import torch

        from longvid.backends import wan_parts

        cuda = torch.cuda.is_available()
        preset.check_gpu(cuda)  # before any download
        wan_parts.check_installed(preset.quantization, transformer_cls)
        self.weights = wan_parts.Weights.resolve(preset)
        self.folder = self.weights.folder
        self.device = torch.device("cuda" if cuda else "cpu")
        self.dtype = wan_parts.compute_dtype(self.device)
        transformer = wan_parts.load_transformer(
            transformer_cls, self.weights, preset.quantization, self.dtype).eval()
        self.vae = wan_parts.WanVAE(self.folder, self.device)
        self.lora_stack = LoraStack(transformer)  # `generate` applies each segment's weights
        return transformer

    def versions(self) -> dict[str, str]:
        import diffusers
        import torch
        import transformers

        return {"diffusers": diffusers.__version__, "torch": torch.__version__,
                "transformers": transformers.__version__} | self.weights.versions(self.preset)

    # -- text: encode once, cache on disk, free the encoder ---------------------------------

    def prepare(self, prompts: list[str], negative_prompt: str, guidance_scale: float) -> None:
        texts = prompts + ([negative_prompt] if guidance_scale > 1 else [])
        length = self.options.max_sequence_length
        self.prompts = PromptCache(self.weights.prompt_cache_key(self.preset, length))
        with self.on_gpu("text encoder"):
            self.prompts.prepare(texts, length, self._text_pipeline, self.device)

    def _text_pipeline(self) -> Any:
        """The encoder where the policy puts it: resident on the GPU, streamed through it,
        or (no GPU) on the CPU in fp32."""
        import diffusers

        from longvid.backends import wan_parts

        streamed = (self.device.type == "cuda" and self.policy is not None
                    and self.policy.text_encoder == "group offload")
        return wan_parts.text_pipeline(getattr(diffusers, self.text_pipeline_class),
                                       self.folder, self.preset.quantization, self.dtype,
                                       self.device, streamed=streamed)

    # -- a full GPU ---------------------------------------------------------------------------

    def on_gpu(self, stage: str) -> Any:
        """Run a stage ("load", "text encoder", "transformer", "vae"); CUDA out-of-memory
        becomes a ResourceError (exit 4) that names the stage and what to try."""
        return gpu_stage(stage, self.policy)


@contextmanager
def gpu_stage(stage: str, policy: Any) -> Iterator[None]:
    import torch

    try:
        yield
    except torch.cuda.OutOfMemoryError:
        raise out_of_memory(stage, policy) from None


def out_of_memory(stage: str, policy: Any) -> ResourceError:
    vram_gib = policy.vram_gib if policy is not None else None
    budget = f" under the policy for {vram_gib:.1f} GiB" if vram_gib is not None else ""
    lower = (f"--vram {max(vram_gib - VRAM_STEP_GIB, 1):.0f}" if vram_gib is not None
             else "a lower --vram")
    return ResourceError(
        f"the GPU ran out of memory in the {stage} stage{budget}",
        f"rerun the same command with {lower} (a leaner placement) or a lower resolution; "
        "committed segments are kept and the render resumes")
