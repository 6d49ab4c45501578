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
SCHEDULE = FewStepSchedule.warped(4, 5.0)
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


def denoise_after(model, clean, cond, b, g, schedule=None):
    """One block of b latents denoised after `clean` (1, C, done, H, W), no cache: each
    step runs the whole sequence, the clean frames at t = 0; the processors set on the
    model hold the mask. Returns the block's x0 (1, C, b, H, W). The reference for the
    engine here and for MAG's and MemFlow's rules (test_causal_memory.py)."""
    schedule = schedule or SCHEDULE
    done = clean.shape[2]
    x = torch.randn((1, C, b, H, W), generator=g)
    for i, sigma in enumerate(schedule.sigmas):
        seq = torch.cat([clean, x], dim=2)
        t = torch.zeros(1, seq.shape[2] * TOKENS)
        t[:, done * TOKENS:] = 1000.0 * sigma
        with torch.no_grad():
            v = model(seq, timestep=t, encoder_hidden_states=cond, return_dict=False)[0]
        x0 = x - sigma * v[:, :, done:]
        if i + 1 < len(schedule.sigmas):
            s = schedule.sigmas[i + 1]
            x = (1 - s) * x0 + s * torch.randn(x.shape, generator=g)
    return x0


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
        x0 = denoise_after(model, torch.cat(clean, dim=2) if clean else torch.zeros(
            1, C, 0, H, W), cond, len(blocks[j]), g, schedule)
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


class SplitCrossAttention(WanAttnProcessor):
    """diffusers' own Wan cross-attention, the first `rows` queries reading the first `n`
    text tokens (one prompt) and the others the rest (another prompt): per-token prompts."""

    def __init__(self, rows: int, n: int) -> None:
        super().__init__()
        self.rows, self.n = rows, n

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 rotary_emb=None):
        r, n = self.rows, self.n
        return torch.cat([
            super().__call__(attn, hidden_states[:, :r], encoder_hidden_states[:, :n]),
            super().__call__(attn, hidden_states[:, r:], encoder_hidden_states[:, n:])], dim=1)


def recorded_values(model, seq, allowed, cond_rows, conds):
    """Self-attention values (B, N, dim) per layer of one t=0 forward of `seq` through an
    untouched copy with diffusers' processors: frame-level mask `allowed`, the first
    `cond_rows` tokens under conds[0] and the rest under conds[1]."""
    model = copy.deepcopy(model)
    mask = allowed.repeat_interleave(TOKENS, 0).repeat_interleave(TOKENS, 1)[None, None]
    values = []
    for blk in model.blocks:
        blk.attn1.set_processor(MaskedProcessor(mask))
        blk.attn2.set_processor(SplitCrossAttention(cond_rows, conds[0].shape[1]))
        blk.attn1.to_v.register_forward_hook(lambda m, i, out: values.append(out))
    with torch.no_grad():
        model(seq, timestep=torch.zeros(1), encoder_hidden_states=torch.cat(conds, dim=1),
              return_dict=False)
    return values


def cached_values(engine, layer):
    return engine.cache.values[layer].flatten(2)  # (B, F*T, dim)


def test_a_prompt_switch_keeps_the_sink_and_re_caches_the_window(setup):
    """LongLive's switch (global sink): the sink keeps the keys and values its own clean
    pass wrote under the old prompt; the window is one clean forward under the new
    prompt, its frames seeing each other and the sink. Checked against diffusers' own
    processors over the whole sequence with a frame mask and per-token prompts."""
    from longvid.backends.causal_engine import SegmentStart, rebuild

    model, cond_a, _ = setup
    torch.manual_seed(7)
    cond_b = torch.randn(1, 8, 32)
    policy = POLICIES["longlive"]
    engine = CausalEngine(copy.deepcopy(model), policy)
    engine.reset()
    take = engine.stream(18, (C, H, W), cond_a, SCHEDULE, torch.Generator().manual_seed(0))
    sink_k = [k[:, :3 * TOKENS].clone() for k in engine.cache.keys]
    sink_v = [v[:, :3 * TOKENS].clone() for v in engine.cache.values]

    def switch(sink_cond=cond_a, switched=True):
        rebuild(engine, SegmentStart(cond_b, take[:, :, 9:], 9, take[:, :, :3], sink_cond,
                                     switched))

    switch()
    for layer in range(len(model.blocks)):  # the sink: as the take's first block wrote it
        assert torch.equal(engine.cache.keys[layer][:, :3 * TOKENS], sink_k[layer])
        assert torch.equal(engine.cache.values[layer][:, :3 * TOKENS], sink_v[layer])
    seq = torch.cat([take[:, :, :3], take[:, :, 9:]], dim=2)  # positions 0-2, 3-11
    allowed = torch.ones(12, 12, dtype=torch.bool)
    allowed[:3, 3:] = False  # the sink saw only itself
    want = recorded_values(model, seq, allowed, 3 * TOKENS, (cond_a, cond_b))
    kept = list(range(3)) + list(range(4, 12))  # the window keeps 8 frames beside the sink
    rows = torch.tensor([f * TOKENS + t for f in kept for t in range(TOKENS)])
    for layer in range(len(model.blocks)):
        assert engine.cache.frames[layer] == 11
        got = cached_values(engine, layer)
        assert (got - want[layer][:, rows]).abs().max().item() < TOL
    # controls: the sink re-encoded under the new prompt; the window replayed block-causally
    switch(sink_cond=cond_b)
    assert not torch.equal(engine.cache.values[1][:, :3 * TOKENS], sink_v[1])
    switch(switched=False)
    assert (cached_values(engine, 1) - want[1][:, rows]).abs().max().item() > 1e-3


def test_a_switch_within_the_first_window_re_encodes_the_sink_too(setup):
    """LongLive re-caches from frame 0 when the switch is at most a window into the take:
    then one forward covers every frame, the sink included, under the new prompt."""
    from longvid.backends.causal_engine import SegmentStart, rebuild

    model, cond_a, _ = setup
    torch.manual_seed(8)
    cond_b = torch.randn(1, 8, 32)
    engine = CausalEngine(copy.deepcopy(model), POLICIES["longlive"])
    engine.reset()
    take = engine.stream(9, (C, H, W), cond_a, SCHEDULE, torch.Generator().manual_seed(0))
    rebuild(engine, SegmentStart(cond_b, take[:, :, 1:], 1, take[:, :, :1], cond_a, True))
    want = recorded_values(model, take, torch.ones(9, 9, dtype=torch.bool), 0,
                           (cond_a[:, :0], cond_b))
    for layer in range(len(model.blocks)):
        assert (cached_values(engine, layer) - want[layer]).abs().max().item() < TOL


def test_a_prompt_s_text_keys_are_computed_once_and_renewed_at_a_switch(setup):
    """The cross-attention keys/values of a prompt: once per prompt and layer, reused by
    every step, clean pass and block; a switch or a blend (another tensor) renews them;
    the latents equal those of diffusers' own cross-attention bit for bit."""
    from longvid.backends.causal_engine import SegmentStart, stream_segment

    model, cond_a, context = setup
    torch.manual_seed(9)
    cond_b = torch.randn(1, 8, 32)
    blend = 0.5 * cond_a + 0.5 * cond_b
    policy = POLICIES["longlive"]
    cached = CausalEngine(copy.deepcopy(model), policy)
    plain = CausalEngine(copy.deepcopy(model), policy, text_cache=False)
    assert plain.text is None
    layers = len(model.blocks)
    for n, (cond, sink_cond) in enumerate(((cond_a, None), (cond_b, cond_a), (blend, cond_a))):
        start = SegmentStart(cond, context[:, :, 3:], 6, context[:, :, :3], sink_cond, n > 0)
        got = [stream_segment(e, start, 7, (C, H, W), SCHEDULE, 4, lambda i, t: None)[0]
               for e in (cached, plain)]
        assert torch.equal(got[0], got[1])
        assert cached.text is not None and cached.text.cond is cond
        # per segment: once for the sink's prompt if it differs, once for the segment's;
        # 3 blocks x (4 steps + 1 clean pass) + 2 context forwards reuse them
        assert cached.text.computed == layers * (1 if sink_cond is None else 2)
        cached.text.computed = 0


def test_fp8_keys_and_values_stay_close_to_full_precision_over_a_long_stream(setup):
    """kv_dtype float8_e4m3fn: stored in fp8 with a scale per token and head (each element
    within 1/16 of its token-head's largest magnitude), read back dequantized; over 20
    blocks the latents stay within 0.02 of the full-precision cache's (mean magnitude
    0.7), and the error does not grow."""
    from longvid.backends.causal_cache import dequantize, quantize

    model, cond, _ = setup
    torch.manual_seed(5)
    x = torch.randn(1, 40, 2, 16) * torch.rand(1, 40, 2, 1) * 10
    x8, scale = quantize(x)
    assert x8.dtype == torch.float8_e4m3fn and scale.shape == (1, 40, 2, 1)
    amax = x.abs().amax(dim=-1, keepdim=True)
    assert ((dequantize(x8, scale, torch.float32) - x).abs() <= amax / 16).all()

    out = {}
    for kv in ("model", "float8_e4m3fn"):
        engine = CausalEngine(copy.deepcopy(model), CachePolicy(3, 12, 3, "all", kv))
        engine.reset()
        out[kv] = engine.stream(60, (C, H, W), cond, SCHEDULE, torch.Generator().manual_seed(0))
        stored = engine.cache.keys[0]
        assert stored is not None
        assert stored.dtype == (torch.float8_e4m3fn if kv != "model" else torch.float32)
    err = [(out["model"] - out["float8_e4m3fn"])[:, :, a:a + 3].abs().max().item()
           for a in range(0, 60, 3)]
    assert err[0] == 0.0  # the first block reads no cache
    assert 0 < max(err[1:]) < 0.02
    assert max(err[-5:]) <= 2 * max(err[1:6])


def test_a_checkpoint_loaded_in_bf16_streams_with_its_fp32_modules_kept(setup, tmp_path):
    """As the Hub backends load it (`from_pretrained(torch_dtype=bfloat16)`), diffusers
    keeps `_keep_in_fp32_modules` wide, and the first parameter is the fp32
    `scale_shift_table`: the engine must feed the model its compute dtype (bf16), not the
    first parameter's, or the patch embedding fails on its first block (the first GPU run
    of longlive-1.3b and self-forcing-1.3b). The prompt's memory keys likewise."""
    from longvid.backends.causal_engine import compute_placement
    from longvid.backends.causal_memory import text_keys

    model, cond, _ = setup
    model.save_pretrained(tmp_path)
    loaded = WanTransformer3DModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16).eval()
    first = next(loaded.parameters())
    assert first.dtype == torch.float32 and loaded.patch_embedding.weight.dtype == torch.bfloat16
    assert compute_placement(loaded) == (torch.device("cpu"), torch.bfloat16)
    engine = CausalEngine(loaded, CachePolicy(block_latents=3, window_latents=12,
                                              sink_latents=3))
    engine.reset()
    out = engine.stream(6, (C, H, W), cond, SCHEDULE, torch.Generator().manual_seed(0))
    reference = engine_latents(model, CachePolicy(block_latents=3, window_latents=12,
                                                  sink_latents=3), SCHEDULE, cond,
                               torch.zeros(1, C, 0, H, W), 6, 0)
    assert out.shape == reference.shape == (1, C, 6, H, W) and torch.isfinite(out).all()
    assert (out.float() - reference).abs().mean() < 0.1 * reference.abs().mean()  # bf16
    keys = text_keys(loaded, cond)
    assert len(keys) == 2 and keys[0].dtype == torch.bfloat16
