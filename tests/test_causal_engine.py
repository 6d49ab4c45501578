"""The causal engine against a straightforward reference, on a tiny real Wan transformer.

The reference has no cache: every forward runs the whole sequence so far (clean
blocks at t = 0, the current block at its noise level, per-token timesteps) through
an untouched copy of the transformer whose self-attention is diffusers' own
WanAttnProcessor with a block-causal mask (window and sink as the policy says). The
engine streams the same blocks through its KV cache and RoPE offset. Both draw their
noise in the same order, so their latents must agree to float32 rounding.
"""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

from longvid.backends.causal_cache import CachePolicy
from longvid.backends.causal_engine import CausalEngine, FewStepSchedule

C, H, W = 16, 4, 6  # latent channels, height, width: 2 x 3 = 6 tokens per latent frame
TOKENS = (H // 2) * (W // 2)
TOL = 1e-5


def tiny_transformer(seed: int = 0) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=C,
        out_channels=C, text_dim=32, freq_dim=64, ffn_dim=64, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=64).eval()
    with torch.no_grad():  # random init leaves the norms at 1: make them matter
        for name, p in model.named_parameters():
            if "norm_q" in name or "norm_k" in name:
                p.copy_(1 + 0.5 * torch.randn_like(p))
    return model


class MaskedProcessor(WanAttnProcessor):
    """diffusers' own Wan self-attention, with an attention mask it would not be given."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.mask = mask

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 rotary_emb=None):
        return super().__call__(attn, hidden_states, encoder_hidden_states, self.mask,
                                rotary_emb)


def seen_frames(policy: CachePolicy, blocks: list[range], j: int) -> list[int]:
    """Frames block j attends to: the sink, the newest others, itself."""
    cached: list[int] = []
    for block in blocks[:j]:
        cached += list(block) if policy.write == "all" else [block[-1]]
    sink, rest = cached[:policy.sink_latents], cached[policy.sink_latents:]
    if policy.window_latents:
        room = policy.window_latents - policy.sink_latents - len(blocks[j])
        rest = rest[max(0, len(rest) - room):]
    return sink + rest + list(blocks[j])


def block_mask(policy: CachePolicy, blocks: list[range]) -> torch.Tensor:
    frames = blocks[-1][-1] + 1
    allowed = torch.zeros(frames, frames, dtype=torch.bool)
    for j, block in enumerate(blocks):
        for f in block:
            allowed[f, seen_frames(policy, blocks, j)] = True
    return allowed.repeat_interleave(TOKENS, 0).repeat_interleave(TOKENS, 1)[None, None]


def reference(model, policy, schedule, cond, context, n_new, seed, positions=None):
    """Latents of n_new frames after `context`, without any cache."""
    model = copy.deepcopy(model)
    if positions is not None:
        model.rope = positions
    g = torch.Generator().manual_seed(seed)
    b = policy.block_latents
    sizes = [min(b, context.shape[2] - a) for a in range(0, context.shape[2], b)]
    sizes += [min(b, n_new - a) for a in range(0, n_new, b)]
    blocks, start = [], 0
    for size in sizes:
        blocks.append(range(start, start + size))
        start += size
    first_new = len(sizes) - -(-n_new // b)
    clean = [context[:, :, r.start:r.stop] for r in blocks[:first_new]]
    for j in range(first_new, len(blocks)):
        mask = block_mask(policy, blocks[:j + 1])
        for blk in model.blocks:
            blk.attn1.set_processor(MaskedProcessor(mask))
        x = torch.randn((1, C, len(blocks[j]), H, W), generator=g)
        done = sum(len(r) for r in blocks[:j])
        for i, sigma in enumerate(schedule.sigmas):
            seq = torch.cat(clean + [x], dim=2)
            t = torch.zeros(1, seq.shape[2] * TOKENS)
            t[:, done * TOKENS:] = 1000.0 * sigma
            with torch.no_grad():
                v = model(seq, timestep=t, encoder_hidden_states=cond, return_dict=False)[0]
            x0 = x - sigma * v[:, :, done:]
            if i + 1 < len(schedule.sigmas):
                s = schedule.sigmas[i + 1]
                x = (1 - s) * x0 + s * torch.randn(x.shape, generator=g)
        clean.append(x0)
    return torch.cat(clean[first_new:], dim=2)


def engine_latents(model, policy, schedule, cond, context, n_new, seed):
    engine = CausalEngine(copy.deepcopy(model), policy)
    engine.reset()
    if context.shape[2]:
        engine.prefill(context, cond)
    g = torch.Generator().manual_seed(seed)
    return engine.stream(n_new, (C, H, W), cond, schedule, g)


@pytest.fixture(scope="module")
def setup():
    model = tiny_transformer()
    torch.manual_seed(1)
    cond = torch.randn(1, 8, 32)
    context = torch.randn(1, C, 5, H, W)
    return model, cond, context


SCHEDULE = FewStepSchedule.warped(4, 5.0)
POLICIES = {
    "global": CachePolicy(block_latents=3),
    "longlive": CachePolicy(block_latents=3, window_latents=12, sink_latents=3),
    "window-no-sink": CachePolicy(block_latents=3, window_latents=7),
    "sink-small-window": CachePolicy(block_latents=2, window_latents=6, sink_latents=2),
    "last-frame-only": CachePolicy(block_latents=3, window_latents=8, sink_latents=2,
                                   write="last"),
}


def test_the_schedule_is_self_forcing_s():
    assert [round(1000 * s, 2) for s in SCHEDULE.sigmas] == [1000.0, 937.5, 833.33, 625.0]


@pytest.mark.parametrize("name", POLICIES)
def test_streaming_with_the_cache_equals_the_masked_full_sequence(setup, name):
    model, cond, context = setup
    policy = POLICIES[name]
    empty = context[:, :, :0]
    for ctx, n_new in ((empty, 20), (context, 10)):  # 20 frames: eviction well under way
        want = reference(model, policy, SCHEDULE, cond, ctx, n_new, seed=3)
        got = engine_latents(model, policy, SCHEDULE, cond, ctx, n_new, seed=3)
        assert got.shape == want.shape == (1, C, n_new, H, W)
        assert (got - want).abs().max().item() < TOL
        assert want.abs().mean().item() > 0.1  # not trivially small


def test_a_wrong_window_or_sink_is_caught(setup):
    model, cond, context = setup
    right = POLICIES["longlive"]
    want = reference(model, right, SCHEDULE, cond, context[:, :, :0], 20, seed=3)
    for wrong in (CachePolicy(3, 12, 0), CachePolicy(3, 15, 3), CachePolicy(3, 9, 3)):
        got = engine_latents(model, wrong, SCHEDULE, cond, context[:, :, :0], 20, seed=3)
        assert (got - want).abs().max().item() > 1e-2, wrong


class FramePositionsModuloBlock(torch.nn.Module):
    """A wrong RoPE for the reference: every block's frames at positions 0, 1, 2."""

    def __init__(self, rope, block: int) -> None:
        super().__init__()
        self.rope, self.block = rope, block

    def forward(self, hidden_states):
        cos, sin = self.rope(hidden_states)
        frames = hidden_states.shape[2]
        index = torch.tensor([f % self.block for f in range(frames)])
        pick = index.repeat_interleave(TOKENS) * TOKENS + torch.arange(TOKENS).repeat(frames)
        return cos[:, pick], sin[:, pick]


def test_frame_positions_matter(setup):
    """Positions are checked: a reference with every block at position 0 disagrees."""
    model, cond, context = setup
    policy = POLICIES["longlive"]
    wrong = FramePositionsModuloBlock(copy.deepcopy(model.rope), 3)
    want = reference(model, policy, SCHEDULE, cond, context[:, :, :0], 9, seed=3,
                     positions=wrong)
    got = engine_latents(model, policy, SCHEDULE, cond, context[:, :, :0], 9, seed=3)
    assert (got - want).abs().max().item() > 1e-2


def test_the_cache_stays_bounded_over_a_long_stream(setup):
    """Sink plus the newest window - sink - 1 frames, whatever the stream's length."""
    model, cond, _ = setup
    policy = POLICIES["longlive"]
    engine = CausalEngine(copy.deepcopy(model), policy)
    engine.reset()
    engine.stream(60, (C, H, W), cond, FewStepSchedule.warped(2, 5.0),
                  torch.Generator().manual_seed(0))
    kept = policy.sink_latents + policy.window_latents - policy.sink_latents - 1
    assert engine.cache.frames == [kept] * len(model.blocks)
    assert all(k.shape[1] == kept * TOKENS for k in engine.cache.keys)
    assert engine.next_frame == 60
