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
from typing import Any

import torch

from longvid.backends.causal_cache import (
    CachePolicy,
    CausalSelfAttnProcessor,
    KVCache,
    OffsetRope,
)


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
    cache). The transformer's dtype is its compute dtype; latents stay float32."""

    def __init__(self, transformer: Any, policy: CachePolicy,
                 cache: KVCache | None = None) -> None:
        """`cache`: a cache with other rules (longvid/backends/causal_memory.py), or one
        shared with another transformer; default a `KVCache` of `policy`."""
        self.transformer, self.policy = transformer, policy
        blocks = transformer.blocks
        self.cache = cache if cache is not None else KVCache(policy, len(blocks))
        for i, block in enumerate(blocks):
            block.attn1.set_processor(CausalSelfAttnProcessor(self.cache, i))
        rope = transformer.rope
        self.rope = rope if isinstance(rope, OffsetRope) else OffsetRope(rope)
        transformer.rope = self.rope
        _, p_h, p_w = transformer.config.patch_size
        self._patch_area = p_h * p_w
        self.next_frame = 0  # stream position of the next block's first latent frame

    def reset(self) -> None:
        self.cache.reset()
        self.next_frame = 0

    @property
    def _param(self) -> torch.Tensor:
        return next(self.transformer.parameters())

    def _forward(self, x: torch.Tensor, sigma: float, cond: torch.Tensor,
                 writing: bool) -> torch.Tensor:
        """x (1, C, b, h, w) float32 at noise level sigma -> flow prediction, same shape."""
        _, _, frames, height, width = x.shape
        self.rope.start_frame = self.next_frame
        self.cache.begin(height * width // self._patch_area, frames, writing)
        param = self._param
        timestep = torch.full((x.shape[0],), 1000.0 * sigma, device=param.device)
        with torch.no_grad():
            out = self.transformer(x.to(param.device, param.dtype), timestep=timestep,
                                   encoder_hidden_states=cond.to(param.device, param.dtype),
                                   return_dict=False)[0]
        return out.float()

    def commit(self, x0: torch.Tensor, cond: torch.Tensor) -> None:
        """The clean pass: clean latents (1, C, b, h, w) at t = 0 write their keys/values."""
        self._forward(x0, 0.0, cond, writing=True)
        self.next_frame += x0.shape[2]

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
        x = noise.to(self._param.device)
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
               on_step: Callable[[int, int], None] = lambda i, n: None) -> torch.Tensor:
        """Generate num_latents latent frames after whatever the cache holds, in blocks
        (the last one shorter if num_latents is not a multiple of the block).
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
        return torch.cat(blocks, dim=2)


def stream_segment(engine: CausalEngine, sink: torch.Tensor | None,
                   context: torch.Tensor | None, num_latents: int,
                   shape: tuple[int, int, int], cond: torch.Tensor, schedule: FewStepSchedule,
                   seed: int, on_step: Callable[[int, int], None],
                   first: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """One longvid segment as a fresh stream: the take's first latents (1, C, s, h, w) that
    the context lacks (the sink) and the context latents (1, C, c, h, w), each None or
    replayed through clean passes in that order, then num_latents new ones. The sink sits
    right before the context in frame positions. Returns the new latents (1, C, n, h, w)
    and the seconds spent rebuilding the cache and denoising.

    `first` (1, C, 1, h, w), a take's starting image encoded, is the first new latent, as
    Self-Forcing's image-to-video streams it: one clean pass at position 0 writes its keys
    and values (it is never noised), the other num_latents - 1 are denoised after it in
    blocks, and it is returned exactly as given."""
    import time

    t0 = time.perf_counter()
    engine.reset()
    if sink is not None and sink.shape[2] and engine.policy.sink_latents:
        engine.commit(sink[:, :, :engine.policy.sink_latents].float(), cond)
    if context is not None:
        engine.prefill(context.float(), cond)
    if first is not None:
        engine.commit(first.float(), cond)
    t1 = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    new = num_latents - (0 if first is None else first.shape[2])
    parts = [] if first is None else [first.float().cpu()]
    if new:
        parts.append(engine.stream(new, shape, cond, schedule, generator, on_step))
    return torch.cat(parts, dim=2), {"prefill": t1 - t0, "denoise": time.perf_counter() - t1}
