"""The cross-attention keys and values of a prompt, computed once per prompt.

A causal stream runs many forwards under one prompt: 4 steps and a clean pass per
block, blocks after blocks. The text never changes among them, so neither do the
keys and values every block's cross-attention (attn2) makes from it. The original
code keeps them per layer (`crossattn_cache`) and resets them when the prompt
changes; `CachedCrossAttnProcessor`, set on every block's `attn2`, does the same,
computing them exactly as diffusers' `WanAttnProcessor` does for a text-to-video
model, so outputs do not change. The conditioning tensor the engine is given is the
prompt's identity: a new tensor (another prompt, a blend) computes them again.

Imports torch at module level: import it only where torch is already needed.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn


class TextKVCache:
    """Per-layer cross-attention keys/values (B, L, H, D) of the current conditioning."""

    def __init__(self, num_layers: int) -> None:
        self.num_layers = num_layers
        self.computed = 0  # layers' keys/values computed so far (for tests and benchmarks)
        self.reset()

    def reset(self) -> None:
        self.cond: torch.Tensor | None = None  # the caller's conditioning they belong to
        self.keys: list[torch.Tensor | None] = [None] * self.num_layers
        self.values: list[torch.Tensor | None] = [None] * self.num_layers

    def use(self, cond: torch.Tensor) -> None:
        """The next forwards run under `cond` (1, L, D), as the caller holds it."""
        if cond is not self.cond:
            self.reset()
            self.cond = cond


class CachedCrossAttnProcessor:
    """Cross-attention (attn2) of one transformer block, keys/values from `TextKVCache`."""

    _attention_backend = None  # diffusers' dispatcher picks the active backend
    _parallel_config = None

    def __init__(self, cache: TextKVCache, layer: int) -> None:
        self.cache, self.layer = cache, layer

    def __call__(self, attn: Any, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None,
                 rotary_emb: Any = None) -> torch.Tensor:
        # hidden_states (B, N, dim); encoder_hidden_states (B, L, dim), the projected text
        assert encoder_hidden_states is not None and attention_mask is None
        assert attn.add_k_proj is None and not attn.fused_projections, "text-to-video only"
        cache, i = self.cache, self.layer
        if cache.keys[i] is None:
            cache.keys[i] = attn.norm_k(attn.to_k(encoder_hidden_states)).unflatten(
                2, (attn.heads, -1))  # (B, L, H, D)
            cache.values[i] = attn.to_v(encoder_hidden_states).unflatten(2, (attn.heads, -1))
            cache.computed += 1
        q = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        out = dispatch_attention_fn(q, cache.keys[i], cache.values[i], attn_mask=None,
                                    dropout_p=0.0, is_causal=False,
                                    backend=self._attention_backend)
        out = out.flatten(2, 3).type_as(q)  # (B, N, H*D)
        return attn.to_out[1](attn.to_out[0](out))
