"""The few-step causal streaming loop on a stock diffusers `WanTransformer3DModel`.

Self-Forcing and LongLive denoise a video block by block (3 latent frames each):
1. the block starts as pure noise at sigma 1;
2. for each of the few steps (4: sigma 1, 0.9375, 0.8333, 0.625 from a shift of 5), one
   forward predicts the flow v; x0 = x_t - sigma * v; if a step follows, x0 is renoised
   to the next sigma with fresh noise: x = (1 - sigma') * x0 + sigma' * eps;
3. the last x0 is the block; one more forward of it at t = 0 (the clean pass) writes
   its keys and values into the cache, for the blocks after it.
No classifier-free guidance: the models are distilled to one forward per step.

`prefill` runs only clean passes, over latents given (a segment's context): that is
how the cache is rebuilt from committed latents, so a resumed render equals an
uninterrupted one. Noise is drawn on the CPU from the caller's generator, in the
order: each block's noise, then one renoise per step but the last; so results do not
depend on the device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from longvid.backends.causal_cache import (
    CachePolicy,
    CausalSelfAttnProcessor,
    KVCache,
    OffsetRope,
)
from longvid.backends.causal_text import CachedCrossAttnProcessor, TextKVCache


def compute_placement(model: Any) -> tuple[torch.device, torch.dtype]:
    """Where and in what dtype `model` computes, as diffusers reports them: `device` is
    the GPU a group-offloaded model runs on (its weights wait on the CPU between
    forwards, and its outputs come back on the GPU); `dtype` is the compute dtype under
    fp8 layerwise casting, and skips the modules `_keep_in_fp32_modules` keeps wide, such
    as Wan's `scale_shift_table`, the first parameter of a checkpoint loaded in bf16.
    A plain torch module: its first parameter's."""
    param = next(model.parameters())
    return getattr(model, "device", param.device), getattr(model, "dtype", param.dtype)


@dataclass(frozen=True)
class FewStepSchedule:
    """The noise levels of the steps, highest first; the model's timestep is 1000 sigma."""

    sigmas: tuple[float, ...]

    @classmethod
    def warped(cls, steps: int, shift: float) -> FewStepSchedule:
        """Self-Forcing's `warp_denoising_step`: s = 1, 1 - 1/steps, ... mapped through the
        flow shift, sigma = shift*s / (1 + (shift-1)*s). For 4 steps at shift 5 this gives
        timesteps 1000, 937.5, 833.33, 625 (the released configs' [1000, 750, 500, 250])."""
        if steps < 1 or shift <= 0:
            raise ValueError(f"need steps >= 1 and shift > 0, not {steps} and {shift}")
        s = [1 - k / steps for k in range(steps)]
        return cls(tuple(shift * x / (1 + (shift - 1) * x) for x in s))


class CausalEngine:
    """Owns a transformer's attention processors and RoPE while it streams.

    Built once per loaded model; `reset` starts a new stream (positions from 0, empty
    cache). The transformer's dtype is its compute dtype; latents stay float32. With
    `text_cache`, each prompt's cross-attention keys/values are computed once per stream
    (longvid/backends/causal_text.py); callers pass the same conditioning tensor for
    the same prompt.

    The memory engines (longvid/backends/causal_memory.py) override three hooks that
    `rebuild` and `stream_segment` call: `pin` (recalled latents), `commit_sink` (a take's
    first latents) and `recache_on_switch` (whether a prompt switch re-caches the context
    in one forward, LongLive's rule, or replays it as without a switch)."""

    recache_on_switch: ClassVar[bool] = True

    def __init__(self, transformer: Any, policy: CachePolicy, cache: KVCache | None = None,
                 text_cache: bool = True) -> None:
        """`cache`: a cache with other rules (longvid/backends/causal_memory.py), or one
        shared with another transformer; default a `KVCache` of `policy`. `text_cache`:
        each prompt's cross-attention keys and values computed once (causal_text.py)."""
        self.transformer, self.policy = transformer, policy
        blocks = transformer.blocks
        self.cache = cache if cache is not None else KVCache(policy, len(blocks))
        self.text = TextKVCache(len(blocks)) if text_cache else None
        for i, block in enumerate(blocks):
            block.attn1.set_processor(CausalSelfAttnProcessor(self.cache, i))
            if self.text is not None:
                block.attn2.set_processor(CachedCrossAttnProcessor(self.text, i))
        rope = transformer.rope
        self.rope = rope if isinstance(rope, OffsetRope) else OffsetRope(rope)
        transformer.rope = self.rope
        _, p_h, p_w = transformer.config.patch_size
        self._patch_area = p_h * p_w
        self.next_frame = 0  # stream position of the next block's first latent frame

    def reset(self) -> None:
        self.cache.reset()
        if self.text is not None:
            self.text.reset()
        self.next_frame = 0

    def _forward(self, x: torch.Tensor, sigma: float, cond: torch.Tensor,
                 writing: bool) -> torch.Tensor:
        """x (1, C, b, h, w) float32 at noise level sigma -> flow prediction, same shape."""
        _, _, frames, height, width = x.shape
        self.rope.start_frame = self.next_frame
        self.cache.begin(height * width // self._patch_area, frames, writing)
        if self.text is not None:  # the prompt's cross-attention keys/values, once
            self.text.use(cond)
        device, dtype = compute_placement(self.transformer)
        timestep = torch.full((x.shape[0],), 1000.0 * sigma, device=device)
        with torch.no_grad():
            out = self.transformer(x.to(device, dtype), timestep=timestep,
                                   encoder_hidden_states=cond.to(device, dtype),
                                   return_dict=False)[0]
        return out.float()

    def commit(self, x0: torch.Tensor, cond: torch.Tensor) -> None:
        """The clean pass: clean latents (1, C, b, h, w) at t = 0 write their keys/values."""
        self._forward(x0, 0.0, cond, writing=True)
        self.next_frame += x0.shape[2]

    def commit_sink(self, latents: torch.Tensor, cond: torch.Tensor) -> None:
        """A take's first latents (1, C, s, h, w), or its starting image: one clean pass."""
        self.commit(latents, cond)

    def pin(self, latents: torch.Tensor, cond: torch.Tensor) -> None:
        """Recalled latents (1, C, m, h, w): only a memory engine keeps them."""
        raise ValueError("this causal engine keeps no recalled latents (caps.memory is None)")

    def prefill(self, latents: torch.Tensor, cond: torch.Tensor) -> None:
        """Clean passes over given latents (1, C, n, h, w), block by block from the first."""
        step = self.policy.block_latents
        for a in range(0, latents.shape[2], step):
            self.commit(latents[:, :, a:a + step], cond)

    def denoise_block(self, noise: torch.Tensor, cond: torch.Tensor,
                      schedule: FewStepSchedule, generator: torch.Generator,
                      on_step: Callable[[], None] = lambda: None) -> torch.Tensor:
        """Pure noise (1, C, b, h, w) -> the block's clean latents x0, same shape."""
        sigmas = schedule.sigmas
        x = noise.to(compute_placement(self.transformer)[0])
        x0 = x
        for i, sigma in enumerate(sigmas):
            x0 = x - sigma * self._forward(x, sigma, cond, writing=False)
            if i + 1 < len(sigmas):
                eps = torch.randn(x.shape, generator=generator).to(x.device)
                x = (1 - sigmas[i + 1]) * x0 + sigmas[i + 1] * eps
            on_step()
        return x0

    def stream(self, num_latents: int, shape: tuple[int, int, int], cond: torch.Tensor,
               schedule: FewStepSchedule, generator: torch.Generator,
               on_step: Callable[[int, int], None] = lambda i, n: None,
               on_block: Callable[[torch.Tensor], None] = lambda x0: None) -> torch.Tensor:
        """Generate num_latents latent frames after whatever the cache holds, in blocks
        (the last one shorter if num_latents is not a multiple of the block); each block's
        clean latents (1, C, b, h, w) go to `on_block` as soon as they are made.
        shape = (C, h, w); returns float32 latents (1, C, num_latents, h, w) on the CPU."""
        step = self.policy.block_latents
        total = -(-num_latents // step) * len(schedule.sigmas)
        done = 0

        def tick() -> None:
            nonlocal done
            done += 1
            on_step(done, total)

        blocks = []
        for a in range(0, num_latents, step):
            b = min(step, num_latents - a)
            noise = torch.randn((1, shape[0], b, shape[1], shape[2]), generator=generator)
            x0 = self.denoise_block(noise, cond, schedule, generator, tick)
            self.commit(x0, cond)
            blocks.append(x0.cpu())
            on_block(blocks[-1])
        return torch.cat(blocks, dim=2)


@dataclass(frozen=True)
class SegmentStart:
    """What a segment's cache is rebuilt from: the take's latents before it, as the run
    directory holds them, and the prompts they were made under."""

    cond: torch.Tensor  # (1, L, D): this segment's text conditioning
    context: torch.Tensor | None = None  # the take's last latents (1, C, c, h, w)
    context_start: int = 0  # take-local index of the context's first latent
    sink: torch.Tensor | None = None  # the take's first latents the context lacks (1, C, s, h, w)
    sink_cond: torch.Tensor | None = None  # the prompt the sink was made under (None: cond)
    switched: bool = False  # the conditioning changed at this segment (a prompt switch)
    memory: torch.Tensor | None = None  # recalled latents (1, C, m, h, w), pinned first


def rebuild(engine: CausalEngine, start: SegmentStart) -> None:
    """A fresh stream whose cache holds what a segment starts from, by LongLive's rules
    (`_recache_after_switch` with `global_sink`, and the sink written once by a take's
    first block). Positions re-base: the sink at 0, the context right after it.
    - The sink keeps the keys and values of its own clean pass under its own prompt
      (`sink_cond`), whatever the segment's prompt: what a take's first block wrote.
    - No switch: the context is replayed block by block (its clean passes again).
    - A switch: one clean forward over the context under the new prompt, its frames
      attending to each other and to the sink, every frame written (LongLive writes
      only those the window keeps; the older ones it forwards reach no kept key).
    - A switch whose context, with the sink's part the context lacks, reaches back to
      the take's first latent (LongLive: a switch at most a window into the take, whose
      re-cache then starts at frame 0): the one forward covers the take from its start
      and re-encodes the sink under the new prompt too.
    A memory engine first pins the recalled latents (`start.memory`, positions 0..m-1),
    then the sink and context follow as above through its own `commit_sink`; one whose
    cache no prompt enters (MAG: `recache_on_switch` False) replays the context block
    by block at a switch too."""
    engine.reset()
    cond, s = start.cond, engine.policy.sink_latents
    if start.memory is not None and start.memory.shape[2]:
        engine.pin(start.memory.float(), cond)
    context = None if start.context is None else start.context.float()
    sink = start.sink if start.sink is not None and start.sink.shape[2] and s else None
    sink = None if sink is None else sink[:, :, :s].float()
    if context is None:
        return
    switched = start.switched and engine.recache_on_switch
    if switched and (sink is None or start.context_start <= s):
        # the context with the sink's missing part is the take from its first latent
        whole = context if sink is None else torch.cat([sink, context], dim=2)
        engine.commit(whole, cond)
        return
    if sink is not None:
        engine.commit_sink(sink, cond if start.sink_cond is None else start.sink_cond)
    if switched:
        engine.commit(context, cond)
    else:
        engine.prefill(context, cond)


def stream_segment(engine: CausalEngine, start: SegmentStart, num_latents: int,
                   shape: tuple[int, int, int], schedule: FewStepSchedule, seed: int,
                   on_step: Callable[[int, int], None],
                   on_block: Callable[[torch.Tensor], None] = lambda x0: None,
                   first: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """One longvid segment as a fresh stream: the cache rebuilt from `start`, then
    num_latents new latent frames under `start.cond`. Returns the new latents
    (1, C, n, h, w) and the seconds spent rebuilding the cache and streaming the blocks
    (`on_block` included).

    `first` (1, C, 1, h, w), a take's starting image encoded, is the first new latent, as
    Self-Forcing's image-to-video streams it: one clean pass at position 0 writes its keys
    and values (it is never noised; `on_block` gets it first), the other num_latents - 1
    are denoised after it in blocks, and it is returned exactly as given (through the
    engine's `commit_sink`: MAG keeps it in its sink, as a later segment's replay does)."""
    import time

    t0 = time.perf_counter()
    rebuild(engine, start)
    t1 = time.perf_counter()
    parts = []
    if first is not None:
        engine.commit_sink(first.float(), start.cond)
        parts.append(first.float().cpu())
        on_block(parts[0])
    generator = torch.Generator().manual_seed(seed)
    if num_latents > len(parts):
        parts.append(engine.stream(num_latents - len(parts), shape, start.cond, schedule,
                                   generator, on_step, on_block))
    return torch.cat(parts, dim=2), {"prefill": t1 - t0, "denoise": time.perf_counter() - t1}
