"""Prompt embeddings encoded once per distinct text, kept on disk, mixed for transitions.

Shared by the Hub backends: `prepare` loads what is cached and creates the text
encoder only when something is missing, then drops it, so it is gone before the
first denoising step. The cache lives in $LONGVID_HOME/cache/prompt-embeddings (or
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
                text_pipeline: Callable[[], Any]) -> None:
        """Load every text's embeddings; encode the missing ones with a diffusers pipeline
        that holds only a tokenizer and text encoder (its own cleaning and padding)."""
        from safetensors.torch import load_file, save_file

        missing = [t for t in texts if not self.path(t).exists()]
        if missing:
            encoder = text_pipeline()
            embeddings_cache_dir().mkdir(parents=True, exist_ok=True)
            for text in missing:
                embeds, _ = encoder.encode_prompt(
                    prompt=text, do_classifier_free_guidance=False,
                    max_sequence_length=max_sequence_length,
                    device=encoder.text_encoder.device)
                path = self.path(text)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                save_file({"embeds": embeds.float().cpu().contiguous()}, str(tmp))
                os.replace(tmp, path)
            del encoder
            gc.collect()  # the text encoder is gone before the first denoising step
        for text in texts:
            self._embeds[text] = load_file(str(self.path(text)))["embeds"]

    def __getitem__(self, text: str) -> Any:
        return self._embeds[text]

    def conditioning(self, request: SegmentRequest) -> tuple[Any, Any]:
        """(cond, uncond or None), each (1, L, D): the prompt's embeddings, mixed with
        blend_prompt's as (1-w)*e(prompt) + w*e(blend) during a transition."""
        cond = request.conditioning(self._embeds.__getitem__)
        uncond = self._embeds[request.negative_prompt] if request.guidance_scale > 1 else None
        return cond, uncond
