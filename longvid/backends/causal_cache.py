"""The key/value cache of a causal Wan transformer: which past latent frames a block sees.

Few-step causal Wan models (Self-Forcing, LongLive) generate a video in blocks of a
few latent frames. A block attends to itself and to the cached keys and values of
frames generated before it, never to later ones. This module holds that state for a
stock diffusers `WanTransformer3DModel`, through its public seams only:
- `CausalSelfAttnProcessor`, set on every block's `attn1` with `set_processor`: it reads
  the layer's cached keys/values and, on a block's clean pass, writes them;
- `OffsetRope`, assigned to `transformer.rope`: the stock RoPE tables read from a frame
  offset, so a block's tokens get their place in the stream, not position 0;
- `CachePolicy`: how many frames are seen (window, sink) and which frames are written.
Keys are stored rotated at their absolute frame position (as the original code does),
so positions count from the first frame the engine was given after `reset`.

Imports torch at module level: import it only where torch is already needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn


@dataclass(frozen=True)
class CachePolicy:
    """Which cached frames a block attends to, in latent frames.

    A block of b frames sees the first `sink_latents` frames ever cached, the most
    recent `window_latents - sink_latents - b` other cached frames, and itself; so at
    most `window_latents` frames in all (Self-Forcing's `local_attn_size`, LongLive's 12).
    `window_latents` 0 means every cached frame. `write` says which frames of a block
    enter the cache on its clean pass: all of them, or only its last (MAG's rule).
    """

    block_latents: int = 3
    window_latents: int = 0
    sink_latents: int = 0
    write: Literal["all", "last"] = "all"
    # how cached keys/values are stored: the transformer's dtype, or fp8 (e4m3) with one
    # fp32 scale per token and head, dequantized to the transformer's dtype when read
    kv_dtype: Literal["model", "float8_e4m3fn"] = "model"

    def __post_init__(self) -> None:
        if self.block_latents < 1 or self.sink_latents < 0 or self.window_latents < 0:
            raise ValueError(f"invalid cache policy {self}")
        if self.window_latents and self.window_latents <= self.sink_latents + self.block_latents:
            raise ValueError(f"a window of {self.window_latents} latent frames leaves no room "
                             f"for history beside a sink of {self.sink_latents} and a block of "
                             f"{self.block_latents}")

    def recent_seen(self, block_frames: int) -> int | None:
        """Non-sink cached frames a block of `block_frames` sees (None: all)."""
        if not self.window_latents:
            return None
        return self.window_latents - self.sink_latents - block_frames

    def recent_kept(self) -> int | None:
        """Non-sink frames worth keeping: the most any later block (of >= 1 frame) sees."""
        return self.recent_seen(1)


class KVCache:
    """Per-layer keys/values of cached frames, [sink | recent] oldest first, plus what the
    current forward is: its tokens per latent frame, its frame count, read or write."""

    def __init__(self, policy: CachePolicy, num_layers: int) -> None:
        self.policy = policy
        self.num_layers = num_layers
        self.reset()

    def reset(self) -> None:
        self.keys: list[torch.Tensor | None] = [None] * self.num_layers  # (B, F*T, H, D)
        self.values: list[torch.Tensor | None] = [None] * self.num_layers  # (B, F*T, H, D)
        # kv_dtype fp8: keys/values above hold fp8, these their scales (B, F*T, H, 1) fp32
        self.key_scales: list[torch.Tensor | None] = [None] * self.num_layers
        self.value_scales: list[torch.Tensor | None] = [None] * self.num_layers
        self.frames = [0] * self.num_layers  # F: cached frames per layer
        self.frame_tokens = 0  # T: tokens per latent frame of the current forward
        self.block_frames = 0  # b: latent frames of the current forward
        self.writing = False  # True on a block's clean pass: its keys/values are kept

    def begin(self, frame_tokens: int, block_frames: int, writing: bool) -> None:
        self.frame_tokens, self.block_frames, self.writing = frame_tokens, block_frames, writing

    @property
    def cached_frames(self) -> int:
        return self.frames[0]

    def _stored(self) -> list[list[torch.Tensor | None]]:
        """The per-layer lists a write fills: keys, values (and their fp8 scales)."""
        lists = [self.keys, self.values, self.key_scales, self.value_scales]
        return lists if self.policy.kv_dtype != "model" else lists[:2]

    def seen(self, layer: int, dtype: torch.dtype | None = None
             ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The cached keys/values the current block attends to, (B, F'*T, H, D) each, in
        `dtype` (None: as stored; fp8 ones are dequantized to it)."""
        n = self.frames[layer]
        if self.keys[layer] is None:
            return None
        t, sink = self.frame_tokens, min(self.policy.sink_latents, n)
        recent = self.policy.recent_seen(self.block_frames)
        parts = [stored[layer] for stored in self._stored()]
        if recent is not None and n - sink > recent:
            cut = (n - recent) * t
            parts = [torch.cat([x[:, :sink * t], x[:, cut:]], dim=1)
                     for x in parts if x is not None]
        return self._read(parts, dtype)

    def _read(self, parts: list[torch.Tensor | None], dtype: torch.dtype | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values from the stored lists' slices: as stored, or fp8 ones
        dequantized to `dtype` (None: fp32)."""
        if self.policy.kv_dtype == "model":
            k, v = parts[0], parts[1]
            assert k is not None and v is not None
            return k, v
        k8, v8, k_scale, v_scale = parts
        assert k8 is not None and v8 is not None and k_scale is not None and v_scale is not None
        out = dtype or torch.float32
        return dequantize(k8, k_scale, out), dequantize(v8, v_scale, out)

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Keep the current block's keys/values (B, b*T, H, D), evicting what no later
        block can see: the sink stays, the oldest recent frames go."""
        t = self.frame_tokens
        if self.policy.write == "last":
            k, v = k[:, -t:], v[:, -t:]
        new: list[torch.Tensor] = [k, v]
        if self.policy.kv_dtype != "model":
            (k8, k_scale), (v8, v_scale) = quantize(k), quantize(v)
            new = [k8, v8, k_scale, v_scale]
        stored = self._stored()
        parts = [x if old[layer] is None else torch.cat([old[layer], x], dim=1)
                 for old, x in zip(stored, new, strict=True)]
        n = parts[0].shape[1] // t
        sink, keep = min(self.policy.sink_latents, n), self.policy.recent_kept()
        if keep is not None and n - sink > keep:
            parts = [torch.cat([x[:, :sink * t], x[:, (n - keep) * t:]], dim=1) for x in parts]
            n = sink + keep
        for old, x in zip(stored, parts, strict=True):
            old[layer] = x
        self.frames[layer] = n


FP8_MAX = 448.0  # the largest finite float8_e4m3fn


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, N, H, D) -> fp8 e4m3 values and fp32 scales (B, N, H, 1): each token and
    head scaled so its largest magnitude is the format's largest finite value."""
    x32 = x.float()
    scale = x32.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / FP8_MAX
    return (x32 / scale).to(torch.float8_e4m3fn), scale


def dequantize(x8: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (x8.float() * scale).to(dtype)


def rms_norm_fp32(norm: Any, x: torch.Tensor) -> torch.Tensor:
    """The original Wan RMSNorm: normalise in fp32, cast back, then scale by the weight.
    In bf16 this keeps q/k drift bounded over hundreds of blocks; in fp32 it equals
    torch's RMSNorm up to rounding."""
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + norm.eps)
    return normed.type_as(x) * norm.weight


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's RoPE on interleaved pairs, as diffusers' WanAttnProcessor applies it.
    x (B, N, H, D); cos, sin (1, N, 1, D)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


class CausalSelfAttnProcessor:
    """Self-attention (attn1) of one transformer block over [seen cache | current block]."""

    _attention_backend = None  # diffusers' dispatcher picks the active backend
    _parallel_config = None

    def __init__(self, cache: KVCache, layer: int) -> None:
        self.cache, self.layer = cache, layer

    def __call__(self, attn: Any, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None,
                 rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        # hidden_states (B, N, dim), N = b*T tokens of the current block
        assert encoder_hidden_states is None and attention_mask is None, "self-attention only"
        q = rms_norm_fp32(attn.norm_q, attn.to_q(hidden_states))
        k = rms_norm_fp32(attn.norm_k, attn.to_k(hidden_states))
        v = attn.to_v(hidden_states)
        q, k, v = (x.unflatten(2, (attn.heads, -1)) for x in (q, k, v))  # (B, N, H, D)
        if rotary_emb is not None:
            q, k = apply_rotary(q, *rotary_emb), apply_rotary(k, *rotary_emb)
        keys, values = k, v
        if (seen := self.cache.seen(self.layer, k.dtype)) is not None:
            keys = torch.cat([seen[0], k], dim=1)  # (B, F'*T + N, H, D)
            values = torch.cat([seen[1], v], dim=1)
        out = dispatch_attention_fn(q, keys, values, attn_mask=None, dropout_p=0.0,
                                    is_causal=False, backend=self._attention_backend)
        if self.cache.writing:
            self.cache.write(self.layer, k, v)
        out = out.flatten(2, 3).type_as(q)  # (B, N, H*D)
        return attn.to_out[1](attn.to_out[0](out))


class OffsetRope(torch.nn.Module):
    """The transformer's own `WanRotaryPosEmbed` tables, read from frame `start_frame`:
    a block's frame f gets the position start_frame + f."""

    def __init__(self, rope: Any) -> None:
        super().__init__()
        self.inner = rope
        self.start_frame = 0

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rope: Any = self.inner
        _, _, frames, height, width = hidden_states.shape
        p_t, p_h, p_w = rope.patch_size
        ppf, pph, ppw = frames // p_t, height // p_h, width // p_w
        first = self.start_frame
        if first + ppf > rope.max_seq_len:
            raise ValueError(f"frame positions up to {first + ppf} exceed the RoPE table of "
                             f"{rope.max_seq_len}; positions restart at every segment, so a "
                             "segment must stay shorter than that")
        tables = []
        for table in (rope.freqs_cos, rope.freqs_sin):  # (max_seq_len, D) each
            f_t, f_h, f_w = table.split([rope.t_dim, rope.h_dim, rope.w_dim], dim=1)
            parts = (f_t[first:first + ppf].view(ppf, 1, 1, -1).expand(ppf, pph, ppw, -1),
                     f_h[:pph].view(1, pph, 1, -1).expand(ppf, pph, ppw, -1),
                     f_w[:ppw].view(1, 1, ppw, -1).expand(ppf, pph, ppw, -1))
            tables.append(torch.cat(parts, dim=-1).reshape(1, ppf * pph * ppw, 1, -1))
        return tables[0], tables[1]  # (1, N, 1, D) cos, sin
