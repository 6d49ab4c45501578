"""The memory the causal Wan models were trained with: MAG's compressed slots, MemFlow's bank.

Both are cache rules on the causal engine (longvid/backends/causal_engine.py); the
stateful attention processor and the offset RoPE are unchanged, only what the cache
keeps and what a block sees differ (../shared/docs/causal-wan.md §2.2, §2.3).

MAG (Memorize-and-Generate, Xilluill/MAG `configs/magbench_inference.yaml`):
- a block of 3 latent frames is denoised by the generator over
  [sink (2 frames) | slots (up to 21 frames) | the block]; the generator writes nothing;
- then a separate memory transformer runs once over the block's clean latents at t = 0
  under the EMPTY prompt and writes only the keys/values of the block's LAST latent frame
  into the next slot (the oldest goes when 21 are full); the first block written also
  gives its first 2 frames to the sink. So 21 slots hold one frame per block: 63 latent
  frames (about 16 s) of history in 21 frames of keys.
- `recall` (longvid's, not MAG's): recalled latents are written once by the memory
  model as single frames into slots that are never evicted (pinned); the ring keeps
  the other `slots - pinned`.

MemFlow (KlingTeam/MemFlow `wan/modules/causal_model.py`, `configs/inference.yaml`):
- LongLive's cache (a sink of 3 and a window of 12 frames) plus a bank of up to 3 frames;
- a block whose index in the stream is a multiple of `record_interval` (3) is recorded:
  its clean pass keeps the keys/values of its FIRST latent frame as the bank's pending
  entry (`bank["k_new"] = new_k[:, :1560]`);
- before the next block runs, the pending entry enters the bank; if the bank is full,
  each layer keeps the `bank_size - 1` old entries most relevant to the current prompt,
  scored as the source's `compress_kv_bank`: the layer's cross-attention keys of the
  prompt's text tokens used as queries against the entry's keys, q.k / sqrt(D),
  averaged over text tokens, heads and the entry's tokens; then the new entry (the
  order of keys does not change attention; longvid keeps them oldest first);
- a block attends to [sink | bank | recent window]; SMA (top-k routing) is off as shipped.
- `recall` (longvid's): recalled latents are written into the bank as pinned entries
  that retrieval never drops; retrieval fills the other `bank_size - pinned`.

A longvid segment on either is causal_engine.stream_segment: `rebuild` pins the
recalled latents, then replays the sink and the context through the engine's hooks.

Imports torch at module level: import it only where torch is already needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar, Literal

import torch

from longvid.backends.causal_cache import (
    CachePolicy,
    KVCache,
    dequantize,
    quantize,
    rms_norm_fp32,
)
from longvid.backends.causal_engine import CausalEngine, compute_placement

# -- MAG --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MagPolicy:
    """MAG's compressed cache, in latent frames: `sink` first frames ever written, and one
    frame per block in `slots` slots (MAG-Bench: block 3, sink 2, 21 slots)."""

    block_latents: int = 3
    sink_latents: int = 2
    slots: int = 21
    kv_dtype: Literal["model", "float8_e4m3fn"] = "model"  # as CachePolicy's

    def __post_init__(self) -> None:
        if self.block_latents < 1 or self.sink_latents < 0 or self.slots < 1:
            raise ValueError(f"invalid MAG policy {self}")

    def cache_policy(self) -> CachePolicy:
        """The engine's view: a block sees everything cached (sink, pinned and slots)."""
        return CachePolicy(self.block_latents, 0, self.sink_latents, "last", self.kv_dtype)


class MagCache(KVCache):
    """Per layer [sink | pinned | slots oldest first] in one tensor each of keys and
    values (B, F*T, H, D), so a block reads them without a copy; `count[layer]` says how
    many frames of each part it holds.

    What a write keeps depends on `mode`, set by the engine before the memory pass:
    "block" (a block's clean pass: its first frames fill the sink while it has room, its
    last frame goes to a slot), "sink" (every frame to the sink) or "pin" (every frame to
    a pinned slot)."""

    slot_frame = -1  # which frame of a block goes to a slot: MAG's is the last
    PARTS = ("sink", "pin", "slot")

    def __init__(self, policy: MagPolicy, num_layers: int) -> None:
        self.mag = policy
        super().__init__(policy.cache_policy(), num_layers)

    def reset(self) -> None:
        super().reset()
        self.count = [dict.fromkeys(self.PARTS, 0) for _ in range(self.num_layers)]
        self.mode = "block"

    def part(self, layer: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One part's keys and values (B, n*T, H, D) as stored, for inspection."""
        k, v, c = self.keys[layer], self.values[layer], self.count[layer]
        assert k is not None and v is not None
        start = sum(c[p] for p in self.PARTS[:self.PARTS.index(name)]) * self.frame_tokens
        end = start + c[name] * self.frame_tokens
        return k[:, start:end], v[:, start:end]

    def seen(self, layer: int, dtype: torch.dtype | None = None
             ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """[sink | pinned | slots]: as stored, or fp8 ones dequantized to `dtype`."""
        parts = [stored[layer] for stored in self._stored()]
        return None if parts[0] is None else self._read(parts, dtype)

    def _insert(self, layer: int, name: str, new: list[torch.Tensor]) -> None:
        """Frames (B, n*T, ...) of every stored list (keys, values, fp8 scales) at the end
        of part `name`."""
        c, t = self.count[layer], self.frame_tokens
        at = sum(c[p] for p in self.PARTS[:self.PARTS.index(name) + 1]) * t
        for stored, x in zip(self._stored(), new, strict=True):
            old = stored[layer]
            stored[layer] = x if old is None else torch.cat([old[:, :at], x, old[:, at:]], dim=1)
        c[name] += new[0].shape[1] // t

    def _evict_slots(self, layer: int, n: int) -> None:
        """Drop the n oldest slots."""
        c, t = self.count[layer], self.frame_tokens
        at = (c["sink"] + c["pin"]) * t
        for stored in self._stored():
            x = stored[layer]
            assert x is not None
            stored[layer] = torch.cat([x[:, :at], x[:, at + n * t:]], dim=1)
        c["slot"] -= n

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        t, c = self.frame_tokens, self.count[layer]
        frames = k.shape[1] // t
        room = self.mag.sink_latents - c["sink"]
        new: list[torch.Tensor] = [k, v]  # (B, b*T, H, D) each; fp8: and their scales
        if self.policy.kv_dtype != "model":
            (k8, k_scale), (v8, v_scale) = quantize(k), quantize(v)
            new = [k8, v8, k_scale, v_scale]

        def frames_of(start: int, end: int) -> list[torch.Tensor]:
            return [x[:, start * t:end * t] for x in new]

        if self.mode == "sink":
            n = min(max(room, 0), frames)
            if n:
                self._insert(layer, "sink", frames_of(0, n))
        elif self.mode == "pin":
            self._insert(layer, "pin", new)
        else:
            n = min(max(room, 0), frames - 1)  # the first block: its first frames (never
            if n:  # its last) are the sink
                self._insert(layer, "sink", frames_of(0, n))
            f = self.slot_frame % frames
            self._insert(layer, "slot", frames_of(f, f + 1))
            keep = max(0, self.mag.slots - c["pin"])
            if c["slot"] > keep:
                self._evict_slots(layer, c["slot"] - keep)
        self.frames[layer] = sum(c.values())


class MagEngine(CausalEngine):
    """The causal engine with MAG's two transformers on one cache: the generator denoises
    (reading the cache), the memory model writes it, once per block, under `empty_cond`
    (the empty prompt's embeddings, set by the caller before streaming). No prompt
    enters the cache, so a prompt switch re-caches nothing: a segment's rebuild replays
    the context block by block (one slot each) whatever its prompt."""

    cache: MagCache
    recache_on_switch: ClassVar[bool] = False

    def __init__(self, transformer: Any, memory: Any, policy: MagPolicy,
                 cache_class: type[MagCache] = MagCache) -> None:
        super().__init__(transformer, policy.cache_policy(),
                         cache=cache_class(policy, len(transformer.blocks)))
        self.mag, self.memory = policy, memory
        self.memory_engine = CausalEngine(memory, policy.cache_policy(), cache=self.cache)
        self.empty_cond: torch.Tensor | None = None  # (1, L, D)

    def reset(self) -> None:
        super().reset()
        self.memory_engine.reset()  # the shared cache again, and the memory model's text

    def _forward(self, x: torch.Tensor, sigma: float, cond: torch.Tensor,
                 writing: bool) -> torch.Tensor:
        if not writing:
            return super()._forward(x, sigma, cond, writing)
        if self.empty_cond is None:
            raise RuntimeError("MagEngine.empty_cond is unset: the memory model writes "
                               "under the empty prompt's embeddings")
        self.memory_engine.next_frame = self.next_frame
        return self.memory_engine._forward(x, sigma, self.empty_cond, writing=True)

    def _commit_as(self, mode: str, latents: torch.Tensor, cond: torch.Tensor) -> None:
        self.cache.mode = mode
        try:
            self.commit(latents, cond)
        finally:
            self.cache.mode = "block"

    def commit_sink(self, latents: torch.Tensor, cond: torch.Tensor) -> None:
        """A take's first latents (1, C, s, h, w), every frame into the sink."""
        self._commit_as("sink", latents, cond)

    def pin(self, latents: torch.Tensor, cond: torch.Tensor) -> None:
        """Recalled latents (1, C, m, h, w): one memory pass per frame, each frame kept in
        a slot that is never evicted."""
        for i in range(latents.shape[2]):
            self._commit_as("pin", latents[:, :, i:i + 1], cond)



# -- MemFlow ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BankPolicy:
    """MemFlow's bank on top of a LongLive cache policy (configs/inference.yaml)."""

    bank_size: int = 3  # latent frames in the bank
    record_interval: int = 3  # blocks 0, k, 2k, ... of a stream are recorded

    def __post_init__(self) -> None:
        if self.bank_size < 0 or self.record_interval < 1:
            raise ValueError(f"invalid bank policy {self}")


@dataclass
class BankEntry:
    """One latent frame of one layer in MemFlow's bank: keys and values (B, T, H, D) in
    storage of their own, never a view of the forward that wrote them (a view keeps all
    of that forward's frames alive: 3 for a block, up to 15 for a re-cache). Under
    `kv_dtype: float8_e4m3fn` they are fp8 with fp32 scales (B, T, H, 1), as the window
    is, so the bank takes what the VRAM plan counts for it."""

    label: Any  # what the frame was, for inspection: ("block", i) or ("pin", i)
    k: torch.Tensor  # (B, T, H, D)
    v: torch.Tensor
    pinned: bool = False
    k_scale: torch.Tensor | None = None  # fp8 only: (B, T, H, 1) fp32
    v_scale: torch.Tensor | None = None

    @classmethod
    def keep(cls, label: Any, k: torch.Tensor, v: torch.Tensor, kv_dtype: str,
             pinned: bool = False) -> BankEntry:
        """An entry for frame keys/values (B, T, H, D) stored as `kv_dtype` says."""
        if kv_dtype == "model":
            return cls(label, k.clone(), v.clone(), pinned)
        (k8, k_scale), (v8, v_scale) = quantize(k), quantize(v)
        return cls(label, k8, v8, pinned, k_scale, v_scale)

    def read(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values in `dtype` (None: as stored, fp8 ones dequantized to fp32)."""
        if self.k_scale is None or self.v_scale is None:
            return self.k, self.v
        out = dtype or torch.float32
        return dequantize(self.k, self.k_scale, out), dequantize(self.v, self.v_scale, out)


class MemFlowCache(KVCache):
    """A LongLive cache (sink + window) plus, per layer, a bank of single frames."""

    def __init__(self, policy: CachePolicy, bank: BankPolicy, num_layers: int) -> None:
        self.bank_policy = bank
        super().__init__(policy, num_layers)

    def reset(self) -> None:
        super().reset()
        self.bank: list[list[BankEntry]] = [[] for _ in range(self.num_layers)]
        self.pending: list[BankEntry | None] = [None] * self.num_layers
        self.record: Any = None  # label of the block being committed, if it is recorded
        self.pinning = False  # True: a write only pins its frames into the bank

    def seen(self, layer: int, dtype: torch.dtype | None = None
             ) -> tuple[torch.Tensor, torch.Tensor] | None:
        window = super().seen(layer, dtype)
        bank = self.bank[layer]
        if not bank:
            return window
        entries = [e.read(dtype) for e in bank]
        bank_k = torch.cat([k for k, _ in entries], dim=1)
        bank_v = torch.cat([v for _, v in entries], dim=1)
        if window is None:
            return bank_k, bank_v
        cut = min(self.policy.sink_latents, self.frames[layer]) * self.frame_tokens
        k, v = window
        return (torch.cat([k[:, :cut], bank_k, k[:, cut:]], dim=1),
                torch.cat([v[:, :cut], bank_v, v[:, cut:]], dim=1))

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        t, kv_dtype = self.frame_tokens, self.policy.kv_dtype
        if self.pinning:
            self.bank[layer] += [BankEntry.keep(("pin", i), k[:, i * t:(i + 1) * t],
                                                v[:, i * t:(i + 1) * t], kv_dtype, pinned=True)
                                 for i in range(k.shape[1] // t)]
            return
        super().write(layer, k, v)
        if self.record is not None:
            self.pending[layer] = BankEntry.keep(self.record, k[:, :t], v[:, :t], kv_dtype)

    def admit(self, text_keys: list[torch.Tensor]) -> None:
        """The pending entries enter the bank, scored against the prompt's text keys
        text_keys[layer] (B, L, H, D) when the bank is full."""
        size = self.bank_policy.bank_size
        for layer, new in enumerate(self.pending):
            if new is None:
                continue
            self.pending[layer] = None
            bank = self.bank[layer]
            pinned = [e for e in bank if e.pinned]
            free = [e for e in bank if not e.pinned]
            room = size - len(pinned)
            if room <= 0:
                continue
            if len(free) + 1 > room:
                query = text_keys[layer].to(new.k.device)  # where the cache is
                scores = relevance(query, [e.read(torch.float32)[0] for e in free])
                best = sorted(range(len(free)), key=lambda i: -scores[i])[:room - 1]
                free = [free[i] for i in sorted(best)]  # oldest first, as recorded
            self.bank[layer] = pinned + free + [new]


def relevance(text_k: torch.Tensor, entries: list[torch.Tensor]) -> list[float]:
    """MemFlow's saliency of bank entries (B, T, H, D) each for a prompt's text keys
    (B, L, H, D): softmax-free attention scores q.k / sqrt(D) of every text token on every
    entry token, averaged over text tokens, heads and entry tokens (batch 1). The mean of
    a bilinear form is the form of the means, so this averages first."""
    d = text_k.shape[-1]
    q = text_k.float().mean(dim=1)  # (B, H, D)
    return [float((q * e.float().mean(dim=1)).sum(-1).mean() * d ** -0.5) for e in entries]


def text_keys(transformer: Any, cond: torch.Tensor) -> list[torch.Tensor]:
    """Each block's cross-attention keys of the prompt (MemFlow's `crossattn_cache["k"]`):
    cond (1, L, D_text) -> per layer (1, L, H, D), as WanAttnProcessor computes them, on
    the device and in the dtype the model computes in. A group-offloaded model's weights
    wait on the CPU between forwards, and a consumer CPU has no fast bf16 matmul (about
    100 s per 512-token prompt at 1.3B without AVX-512-BF16), so the layers used here
    are read onto the GPU for the call (about 150 MB at 1.3B, once per prompt)."""
    device, dtype = compute_placement(transformer)
    embedder = transformer.condition_embedder.text_embedder  # PixArtAlphaTextProjection
    with torch.no_grad():
        text = cond.to(device, dtype)
        text = _linear(embedder.linear_2, embedder.act_1(_linear(embedder.linear_1, text)))
        out = []
        for block in transformer.blocks:
            attn = block.attn2
            norm_k = SimpleNamespace(eps=attn.norm_k.eps,
                                     weight=attn.norm_k.weight.to(device, dtype))
            k = rms_norm_fp32(norm_k, _linear(attn.to_k, text))
            out.append(k.unflatten(2, (attn.heads, -1)))
    return out


def _linear(layer: Any, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` with its weights read to x's device and dtype, wherever they wait (the
    CPU for a group-offloaded model, fp8 under layerwise casting)."""
    bias = None if layer.bias is None else layer.bias.to(x.device, x.dtype)
    return torch.nn.functional.linear(x, layer.weight.to(x.device, x.dtype), bias)


class MemFlowEngine(CausalEngine):
    """The causal engine with MemFlow's bank: blocks are counted from the stream's start
    (pins excluded; the take's sink is block 0); a recorded block's first frame enters
    the bank before the next block runs, retrieved against that block's prompt.

    A prompt switch follows LongLive's rule (MemFlow is LongLive plus the bank): the sink
    stays under the take's first prompt and the context is re-cached in one forward
    under the new prompt. That forward is one commit spanning its blocks' indices: it
    records its first frame when its first index is a multiple of `record_interval`."""

    cache: MemFlowCache

    def __init__(self, transformer: Any, policy: CachePolicy, bank: BankPolicy,
                 cache_class: type[MemFlowCache] = MemFlowCache) -> None:
        super().__init__(transformer, policy,
                         cache=cache_class(policy, bank, len(transformer.blocks)))
        self.bank_policy = bank
        self.blocks_done = 0
        self._keys: tuple[Any, list[torch.Tensor]] | None = None  # (cond, its text keys)

    def reset(self) -> None:
        super().reset()
        self.blocks_done = 0

    def _admit(self, cond: torch.Tensor) -> None:
        if all(p is None for p in self.cache.pending):
            return
        if self._keys is None or self._keys[0] is not cond:
            self._keys = (cond, text_keys(self.transformer, cond))
        self.cache.admit(self._keys[1])

    def denoise_block(self, noise: torch.Tensor, cond: torch.Tensor, *args: Any,
                      **kwargs: Any) -> torch.Tensor:
        self._admit(cond)
        return super().denoise_block(noise, cond, *args, **kwargs)

    def commit(self, x0: torch.Tensor, cond: torch.Tensor) -> None:
        self._admit(cond)
        index = self.blocks_done
        recorded = index % self.bank_policy.record_interval == 0
        self.cache.record = ("block", index) if recorded and not self.cache.pinning else None
        try:
            super().commit(x0, cond)
        finally:
            self.cache.record = None
        if not self.cache.pinning:  # a one-forward re-cache spans its blocks' indices
            self.blocks_done += -(-x0.shape[2] // self.policy.block_latents)

    def pin(self, latents: torch.Tensor, cond: torch.Tensor) -> None:
        """Recalled latents (1, C, m, h, w) into the bank as pinned frames, one clean pass
        over them all (they attend to each other and to what is cached)."""
        self.cache.pinning = True
        try:
            self.commit(latents, cond)
        finally:
            self.cache.pinning = False

