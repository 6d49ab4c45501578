"""Prompt embeddings encoded once per distinct text, kept on disk, mixed for transitions.

Shared by the Hub backends: `prepare` loads what is cached and creates the text
encoder only when something is missing, encodes the missing texts in batches (one
pass of a streamed encoder serves PROMPTS_PER_PASS prompts), then drops it and
returns its GPU blocks to the driver, so it is gone before the first denoising step.
The cache lives in $LONGVID_HOME/cache/prompt-embeddings (or
~/.cache/longvid/prompt-embeddings), one safetensors file per (weights, text).
"""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from longvid.backends.base import SegmentRequest

PROMPTS_PER_PASS = 4  # activations of 4 x 512 tokens stay within the planned 0.5 GiB


def embeddings_cache_dir() -> Path:
    home = os.environ.get("LONGVID_HOME")
    base = Path(home) / "cache" if home else Path.home() / ".cache" / "longvid"
    return base / "prompt-embeddings"


class PromptCache:
    def __init__(self, key: str) -> None:
        """`key` names the weights and settings the embeddings depend on."""
        self.key = key
        self._embeds: dict[str, Any] = {}  # text -> float32 (1, L, D)

    def path(self, text: str) -> Path:
        digest = hashlib.sha256((self.key + text).encode()).hexdigest()
        return embeddings_cache_dir() / f"{digest}.safetensors"

    def prepare(self, texts: list[str], max_sequence_length: int,
                text_pipeline: Callable[[], Any], device: Any) -> None:
        """Load every text's embeddings; encode the missing ones on `device` with a
        diffusers pipeline that holds only a tokenizer and text encoder (its own cleaning
        and padding)."""
        import torch

        # an entry that does not load whole (cut short, damaged) is encoded again
        missing = list(dict.fromkeys(t for t in texts if not self._load(t)))
        if missing:
            encoder = text_pipeline()
            embeddings_cache_dir().mkdir(parents=True, exist_ok=True)
            # encode_prompt runs outside the pipeline's own no_grad __call__: without this,
            # autograd keeps every layer's activations (~8 GiB for UMT5-XXL at 4 x 512
            # tokens: out of memory on the first GPU run at 11.4 GiB)
            with torch.no_grad():
                self._encode(encoder, missing, max_sequence_length, device)
            del encoder
            release_gpu_memory()  # the text encoder is gone before the first denoising step
        for text in missing:
            if not self._load(text):
                raise RuntimeError(f"the embeddings just written to {self.path(text)} do not "
                                   "load back")

    def _load(self, text: str) -> bool:
        """Load `text`'s cached embeddings (float32 (1, L, D)); False if there are none
        whole on disk."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if text in self._embeds:
            return True
        try:
            embeds = load_file(str(self.path(text)))["embeds"]
        except (OSError, KeyError, SafetensorError):
            return False
        if embeds.dim() != 3 or embeds.shape[0] != 1:
            return False
        self._embeds[text] = embeds
        return True

    def _encode(self, encoder: Any, missing: list[str], max_sequence_length: int,
                device: Any) -> None:
        """Encode `missing` texts, PROMPTS_PER_PASS at a time, each saved atomically."""
        from safetensors.torch import save_file

        for start in range(0, len(missing), PROMPTS_PER_PASS):
            batch = missing[start:start + PROMPTS_PER_PASS]
            embeds, _ = encoder.encode_prompt(  # (B, L, D), each row padded alone
                prompt=batch, do_classifier_free_guidance=False,
                max_sequence_length=max_sequence_length, device=device)
            for row, text in enumerate(batch):
                path = self.path(text)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                save_file({"embeds": embeds[row:row + 1].float().cpu().contiguous()},
                          str(tmp))
                os.replace(tmp, path)

    def __getitem__(self, text: str) -> Any:
        return self._embeds[text]

    def conditioning(self, request: SegmentRequest) -> tuple[Any, Any]:
        """(cond, uncond or None), each (1, L, D): the prompt's embeddings, mixed with
        blend_prompt's as (1-w)*e(prompt) + w*e(blend) during a transition."""
        cond = request.conditioning(self._embeds.__getitem__)
        uncond = self._embeds[request.negative_prompt] if request.guidance_scale > 1 else None
        return cond, uncond


def release_gpu_memory() -> None:
    """Collect what was dropped and hand the CUDA allocator's freed blocks back to the
    driver, so the next stage starts from what is really resident."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
