"""MAG's and MemFlow's cache rules on the causal engine, against references without a cache.

MAG: the reference keeps no cache. Before each block it runs the memory model over the
whole clean sequence so far (t = 0, the empty prompt) with the block-causal mask MAG's
rule implies (each block sees the sink, the last frame of each of the previous `slots`
blocks, and itself), and takes every clean frame's keys/values from that forward. The
generator then runs the whole sequence with those keys/values in place of its own for
the clean frames and a mask over them: the new block sees exactly the sink, the slots
and itself. The engine streams the same blocks through its cache; latents must agree
to float32 rounding.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from diffusers import WanTransformer3DModel
from test_causal_engine import denoise_after

from longvid.backends.causal_cache import CachePolicy
from longvid.backends.causal_engine import CausalEngine, FewStepSchedule
from longvid.backends.causal_memory import (
    BankEntry,
    BankPolicy,
    MagCache,
    MagEngine,
    MagPolicy,
    MemFlowCache,
    MemFlowEngine,
    relevance,
    text_keys,
)

C, H, W = 16, 4, 6  # 2 x 3 = 6 tokens per latent frame
TOKENS = (H // 2) * (W // 2)
TOL = 1e-5
SCHEDULE = FewStepSchedule.warped(4, 5.0)


def tiny(seed: int) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=C,
        out_channels=C, text_dim=32, freq_dim=64, ffn_dim=64, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=128).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm_q" in name or "norm_k" in name:
                p.copy_(1 + 0.5 * torch.randn_like(p))
    return model


def rotate(x, cos, sin):
    """Wan's interleaved-pair RoPE, x (B, N, H, D), written out independently."""
    pairs = torch.view_as_complex(x.double().unflatten(-1, (-1, 2)).contiguous())
    rot = torch.complex(cos[..., 0::2].double(), sin[..., 1::2].double())
    return torch.view_as_real(pairs * rot).flatten(-2).type_as(x)


class Reference:
    """Self-attention over the whole sequence with a boolean mask; optionally records its
    rotated keys/values (`captured`) or puts given ones in place of the first frames'."""

    def __init__(self, mask, given=None):
        self.mask, self.given, self.captured = mask, given, None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 rotary_emb=None):
        q = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        k = attn.norm_k(attn.to_k(hidden_states)).unflatten(2, (attn.heads, -1))
        v = attn.to_v(hidden_states).unflatten(2, (attn.heads, -1))
        q, k = rotate(q, *rotary_emb), rotate(k, *rotary_emb)
        if self.given is not None:
            n = self.given[0].shape[1]
            k = torch.cat([self.given[0], k[:, n:]], dim=1)
            v = torch.cat([self.given[1], v[:, n:]], dim=1)
        self.captured = (k, v)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2), attn_mask=self.mask)
        return attn.to_out[1](attn.to_out[0](out.transpose(1, 2).flatten(2)))


def mag_held(policy: MagPolicy, block: int, slot_frame: int = -1) -> list[int]:
    """MAG's rule: the frames cached when block `block` runs (blocks of full size)."""
    b = policy.block_latents
    if block == 0:
        return []
    sink = list(range(min(policy.sink_latents, b - 1)))
    slots = [m * b + (b - 1 if slot_frame == -1 else slot_frame) for m in range(block)]
    return sink + slots[-policy.slots:]


def mask_of(rows: list[list[int]]) -> torch.Tensor:
    """rows[f]: the frames frame f attends to -> a token mask (1, 1, N, N)."""
    n = len(rows)
    allowed = torch.zeros(n, n, dtype=torch.bool)
    for f, cols in enumerate(rows):
        allowed[f, cols] = True
    return allowed.repeat_interleave(TOKENS, 0).repeat_interleave(TOKENS, 1)[None, None]


def memory_pass(memory, policy, clean, empty):
    """The memory model over all clean frames (1, C, F, H, W) at t = 0 under the empty
    prompt, block-causal as MAG's rule says: every layer's rotated (k, v) of every frame."""
    b, frames = policy.block_latents, clean.shape[2]
    rows = [mag_held(policy, f // b) + list(range(f // b * b, f // b * b + b))
            for f in range(frames)]
    procs = [Reference(mask_of(rows)) for _ in memory.blocks]
    for blk, proc in zip(memory.blocks, procs, strict=True):
        blk.attn1.set_processor(proc)
    with torch.no_grad():
        memory(clean, timestep=torch.zeros(1), encoder_hidden_states=empty, return_dict=False)
    return [p.captured for p in procs]


def mag_reference(gen, memory, policy, cond, empty, blocks, seed, want_cache=False):
    gen, memory = copy.deepcopy(gen), copy.deepcopy(memory)
    g = torch.Generator().manual_seed(seed)
    b = policy.block_latents
    clean = torch.zeros(1, C, 0, H, W)
    for j in range(blocks):
        kv = memory_pass(memory, policy, clean, empty) if j else None
        done = j * b
        rows = [[f] for f in range(done)] + [mag_held(policy, j) + list(range(done, done + b))
                                             ] * b
        mask = mask_of(rows)
        for layer, blk in enumerate(gen.blocks):
            blk.attn1.set_processor(Reference(mask, None if kv is None else kv[layer]))
        clean = torch.cat([clean, denoise_after(gen, clean, cond, b, g)], dim=2)
    kv = memory_pass(memory, policy, clean, empty) if want_cache else None
    return clean, kv


def mag_engine(gen, memory, policy, empty, cache_class=MagCache):
    engine = MagEngine(copy.deepcopy(gen), copy.deepcopy(memory), policy, cache_class)
    engine.reset()
    engine.empty_cond = empty
    return engine


@pytest.fixture(scope="module")
def models():
    gen, memory = tiny(0), tiny(1)
    torch.manual_seed(2)
    return gen, memory, torch.randn(1, 8, 32), torch.randn(1, 8, 32)  # cond, empty


def test_mag_streams_as_the_masked_full_sequence_and_caches_sink_plus_last_frames(models):
    gen, memory, cond, empty = models
    for policy, blocks in ((MagPolicy(3, 2, 21), 23), (MagPolicy(3, 2, 4), 7)):
        want, kv = mag_reference(gen, memory, policy, cond, empty, blocks, seed=3,
                                 want_cache=True)
        engine = mag_engine(gen, memory, policy, empty)
        got = engine.stream(blocks * 3, (C, H, W), cond, SCHEDULE,
                            torch.Generator().manual_seed(3))
        assert got.shape == want.shape == (1, C, blocks * 3, H, W)
        assert (got - want).abs().max().item() < TOL, policy
        assert want.abs().mean().item() > 0.1
        # the cache: [sink | the last frame of each of the last min(N, slots) blocks]
        held = mag_held(policy, blocks)
        assert held[:2] == [0, 1] and held[2:] == [3 * m + 2 for m in
                                                   range(max(0, blocks - policy.slots), blocks)]
        for layer, (k, v) in enumerate(kv):
            count = engine.cache.count[layer]
            assert (count["sink"], count["pin"], count["slot"]) == (2, 0, min(blocks,
                                                                              policy.slots))
            cached_k, cached_v = engine.cache.seen(layer)
            index = torch.tensor([f * TOKENS + i for f in held for i in range(TOKENS)])
            assert cached_k.shape[1] == len(held) * TOKENS
            assert (cached_k - k[:, index]).abs().max().item() < TOL
            assert (cached_v - v[:, index]).abs().max().item() < TOL


class FirstFrameMag(MagCache):
    slot_frame = 0  # the mutation: a block's first frame, not its last


def test_mag_mutations_are_caught(models):
    gen, memory, cond, empty = models
    policy = MagPolicy(3, 2, 4)
    want, _ = mag_reference(gen, memory, policy, cond, empty, 7, seed=3)

    def run(engine):
        return engine.stream(21, (C, H, W), cond, SCHEDULE, torch.Generator().manual_seed(3))

    first = run(mag_engine(gen, memory, policy, empty, FirstFrameMag))
    assert (first - want).abs().max().item() > 1e-2  # writing the first frame
    prompted = run(mag_engine(gen, memory, policy, cond))
    assert (prompted - want).abs().max().item() > 1e-2  # the memory pass under the prompt
    one_model = run(mag_engine(gen, gen, policy, empty))
    assert (one_model - want).abs().max().item() > 1e-2  # the generator writing the cache


def test_mag_pinned_frames_survive_eviction(models):
    """longvid's recall on MAG: pinned frames stay; the ring keeps slots - pinned."""
    gen, memory, cond, empty = models
    policy = MagPolicy(3, 2, 4)
    engine = mag_engine(gen, memory, policy, empty)
    engine.commit_sink(torch.randn(1, C, 2, H, W), cond)
    engine.pin(torch.randn(1, C, 1, H, W), cond)
    pinned = engine.cache.part(0, "pin")[0].clone()
    engine.stream(18, (C, H, W), cond, FewStepSchedule.warped(1, 5.0),
                  torch.Generator().manual_seed(0))
    assert engine.cache.count[0] == {"sink": 2, "pin": 1, "slot": 3}
    assert torch.equal(engine.cache.part(0, "pin")[0], pinned)
    assert engine.cache.frames == [6, 6]


def test_mag_s_cache_in_fp8_keeps_its_layout_and_stays_close(models):
    """kv_dtype float8_e4m3fn on MAG's cache: sink, pinned frames and slots are stored in
    fp8 with a scale per token and head that moves with its frame (insertions before the
    slots, evictions of the oldest); read back, keys and values and the stream stay close
    to the model-dtype cache's (the stream within 0.02, mean magnitude > 0.1)."""
    gen, memory, cond, empty = models
    torch.manual_seed(7)
    sink, recalled = torch.randn(1, C, 2, H, W), torch.randn(1, C, 1, H, W)
    out, caches = {}, {}
    for kv in ("model", "float8_e4m3fn"):
        engine = mag_engine(gen, memory, MagPolicy(3, 2, 4, kv), empty)
        engine.commit_sink(sink, cond)
        engine.pin(recalled, cond)
        out[kv] = engine.stream(18, (C, H, W), cond, SCHEDULE, torch.Generator().manual_seed(0))
        caches[kv] = engine.cache
    full, fp8 = caches["model"], caches["float8_e4m3fn"]
    assert fp8.count == full.count and fp8.count[0] == {"sink": 2, "pin": 1, "slot": 3}
    for layer in range(len(fp8.keys)):
        k8, scale = fp8.keys[layer], fp8.key_scales[layer]
        assert k8 is not None and scale is not None and fp8.value_scales[layer] is not None
        assert k8.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32
        assert scale.shape == (*k8.shape[:3], 1) == fp8.value_scales[layer].shape
        for got, want in zip(fp8.seen(layer, torch.float32), full.seen(layer), strict=True):
            assert got.shape == want.shape
            assert (got - want).abs().max().item() < 0.1 * want.abs().max().item()
    assert out["model"].abs().mean().item() > 0.1
    assert 0 < (out["model"] - out["float8_e4m3fn"]).abs().max().item() < 0.02


# -- MemFlow ------------------------------------------------------------------------------

LONGLIVE = CachePolicy(block_latents=3, window_latents=12, sink_latents=3)


def test_memflow_records_the_first_frame_of_every_third_block(models):
    gen, _, cond, _ = models
    engine = MemFlowEngine(copy.deepcopy(gen), LONGLIVE, BankPolicy(3, 3))
    engine.reset()
    g = torch.Generator().manual_seed(0)
    first_frames = {}  # block -> layer 0's keys of its first frame, from the window cache
    for j in range(11):
        x0 = engine.denoise_block(torch.randn((1, C, 3, H, W), generator=g), cond,
                                  FewStepSchedule.warped(1, 5.0), g)
        engine.commit(x0, cond)
        n = engine.cache.frames[0]
        first_frames[j] = engine.cache.keys[0][:, (n - 3) * TOKENS:(n - 2) * TOKENS].clone()
        labels = [e.label for e in engine.cache.bank[0]]
        recorded = [("block", i) for i in range(0, j, 3)]  # admitted before this block ran
        if len(recorded) <= 3:
            assert labels == recorded, j
        else:
            assert len(labels) == 3 and labels[-1] == recorded[-1], j
    engine._admit(cond)
    entries = engine.cache.bank[0]
    for e in entries:
        assert torch.equal(e.k, first_frames[e.label[1]])
    # a block sees [sink | bank | window]: 3 + 3 + (12 - 3 - 3) frames of keys
    engine.cache.begin(TOKENS, 3, False)
    k, _ = engine.cache.seen(0)
    assert k.shape[1] == (3 + 3 + 6) * TOKENS
    assert torch.equal(k[:, 3 * TOKENS:4 * TOKENS], entries[0].k)


def test_memflow_retrieval_keeps_the_entries_the_prompt_attends_to():
    """A constructed bank: each entry's keys point along one axis; a prompt whose text
    keys point along axes 1 and 2 keeps those two beside the new entry, another prompt
    keeps axes 0 and 2. Scores are checked against the source's full attention scores."""
    heads, dim, t = 2, 8, TOKENS
    cache = MemFlowCache(LONGLIVE, BankPolicy(3, 3), num_layers=1)
    cache.begin(t, 1, True)

    def frame(axis: int) -> torch.Tensor:
        k = 0.1 * torch.randn(1, t, heads, dim)
        k[..., axis] += 2.0
        return k

    def text(axes: tuple[int, ...]) -> list[torch.Tensor]:
        q = 0.1 * torch.randn(1, 5, heads, dim)
        for a in axes:
            q[..., a] += 1.0
        return [q]

    def filled() -> MemFlowCache:
        cache.reset()
        cache.begin(t, 1, True)
        for i in range(4):
            cache.record = ("block", 3 * i)
            cache.write(0, frame(i), torch.randn(1, t, heads, dim))
            cache.admit(text((0,)) if i < 3 else prompt)
        return cache

    torch.manual_seed(0)
    for prompt_axes, kept in (((1, 2), [1, 2]), ((0, 2), [0, 2])):
        prompt = text(prompt_axes)
        labels = [e.label for e in filled().bank[0]]
        assert labels == [("block", 3 * i) for i in kept] + [("block", 9)], prompt_axes
    # the averaged score equals the mean of the full attention-score matrix
    q, entry = text((1,))[0], frame(1)
    full = torch.einsum("blhd,bthd->bhlt", q, entry).mean() * dim ** -0.5
    assert abs(relevance(q, [entry])[0] - full.item()) < 1e-5


def test_memflow_pinned_entries_are_never_dropped(models):
    gen, _, cond, _ = models
    engine = MemFlowEngine(copy.deepcopy(gen), LONGLIVE, BankPolicy(3, 1))
    engine.reset()
    engine.pin(torch.randn(1, C, 2, H, W), cond)
    engine.stream(15, (C, H, W), cond, FewStepSchedule.warped(1, 5.0),
                  torch.Generator().manual_seed(0))
    engine._admit(cond)
    labels = [e.label for e in engine.cache.bank[1]]
    assert labels[:2] == [("pin", 0), ("pin", 1)] and len(labels) == 3
    assert labels[2] == ("block", 4)  # one free slot: the newest recorded block


@pytest.mark.parametrize("kv", ["model", "float8_e4m3fn"])
def test_memflow_s_bank_holds_only_its_frames_in_the_cache_s_dtype(models, kv):
    """A bank entry is one frame in storage of its own: as a view it kept alive every frame
    of the forward that wrote it (3 for a block, all of a pin or re-cache forward), beyond
    the VRAM plan. Under an fp8 cache it is fp8 too (the plan counts the bank at the
    cache's element size), and the stream stays close to the full-precision one."""
    gen, _, cond, _ = models
    out = {}
    for kv_dtype in ("model", kv):
        engine = MemFlowEngine(copy.deepcopy(gen), replace(LONGLIVE, kv_dtype=kv_dtype),
                               BankPolicy(3, 1))
        engine.reset()
        engine.pin(torch.randn(1, C, 2, H, W, generator=torch.Generator().manual_seed(1)),
                   cond)
        out[kv_dtype] = engine.stream(15, (C, H, W), cond, FewStepSchedule.warped(1, 5.0),
                                      torch.Generator().manual_seed(0))
        engine._admit(cond)
        for layer in engine.cache.bank:
            assert [e.label for e in layer][:2] == [("pin", 0), ("pin", 1)]
            assert len(layer) == 3
            for entry in layer:
                for x in (entry.k, entry.v):
                    assert x.shape == (1, TOKENS, 2, 16)
                    assert x.untyped_storage().nbytes() == x.nbytes  # not a view
                    assert x.dtype == (torch.float32 if kv_dtype == "model"
                                       else torch.float8_e4m3fn)
                assert (entry.k_scale is None) == (kv_dtype == "model")
    err = (out["model"] - out[kv]).abs().max().item()
    assert err == 0.0 if kv == "model" else 0 < err < 0.05


def test_text_keys_are_the_cross_attention_keys(models):
    """The retrieval query is what attn2 computes as its keys for the prompt."""
    gen, _, cond, _ = models
    seen = {}

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, attn, hidden_states, encoder_hidden_states=None,
                     attention_mask=None, rotary_emb=None):
            seen["k"] = attn.norm_k(attn.to_k(encoder_hidden_states))
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask,
                              rotary_emb)

    model = copy.deepcopy(gen)
    model.blocks[1].attn2.set_processor(Spy(model.blocks[1].attn2.processor))
    engine = CausalEngine(model, LONGLIVE, text_cache=False)  # attn2 stays diffusers' (spied)
    engine.reset()
    engine.commit(torch.randn(1, C, 3, H, W), cond)
    keys = text_keys(model, cond)
    assert (keys[1].flatten(2) - seen["k"]).abs().max().item() < 1e-6


@pytest.mark.parametrize("where", ["group offload", "fp8 storage"])
def test_text_keys_are_computed_where_the_model_computes(models, where):
    """MemFlow's prompt keys of a group-offloaded model come out on its onload device (the
    GPU where there is one: its weights wait on the CPU, slow in bf16 on most desktop
    CPUs) and equal the resident model's; under fp8 layerwise casting they use the fp8
    weights cast to the compute dtype, as the model's own forward does."""
    from diffusers.hooks import apply_group_offloading

    gen, _, cond, _ = models
    model = copy.deepcopy(gen)
    reference_model = copy.deepcopy(gen)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if where == "group offload":
        reference_model.to(device)
        apply_group_offloading(model, onload_device=device, offload_type="block_level",
                               num_blocks_per_group=1)
        assert model.blocks[0].attn2.to_k.weight.device.type == "cpu"
    else:
        device = torch.device("cpu")
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn,
                                       compute_dtype=torch.float32)
        assert model.blocks[0].attn2.to_k.weight.dtype == torch.float8_e4m3fn
        with torch.no_grad():
            for block in reference_model.blocks:  # weight and bias stored in fp8
                for p in block.attn2.to_k.parameters():
                    p.copy_(p.to(torch.float8_e4m3fn).float())
    keys, reference = text_keys(model, cond), text_keys(reference_model, cond.to(device))
    assert [k.shape for k in keys] == [r.shape for r in reference]
    for k, r in zip(keys, reference, strict=True):
        assert k.device.type == device.type and k.dtype == torch.float32
        assert (k - r).abs().max().item() < TOL * r.abs().max().item()
    if where == "fp8 storage":  # the rounding shows: fp8 weights were used, not fp32 ones
        assert (keys[0] - text_keys(gen, cond)[0]).abs().max() > TOL


def memflow_seen(block: int, interval: int, recent: int, b: int = 3,
                 recorded_frame: int = 0) -> list[int]:
    """Frames block `block` attends to under MemFlow's rule when the bank never fills and
    no bank frame is still in the window: the first frame of every recorded block before
    it, the `recent` newest cached frames, itself."""
    bank = [i * b + recorded_frame for i in range(block) if i % interval == 0]
    window = list(range(max(0, block * b - recent), block * b))
    return bank + window + list(range(block * b, block * b + b))


def memflow_reference(model, cond, blocks, interval, recent, seed):
    """No cache: every forward runs the whole sequence so far with MemFlow's mask."""
    model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    b = 3
    clean = torch.zeros(1, C, 0, H, W)
    for j in range(blocks):
        done = j * b
        rows = [memflow_seen(f // b, interval, recent) for f in range(done)]
        rows += [memflow_seen(j, interval, recent)] * b
        for blk in model.blocks:
            blk.attn1.set_processor(Reference(mask_of(rows)))
        clean = torch.cat([clean, denoise_after(model, clean, cond, b, g)], dim=2)
    return clean


class LastFrameBank(MemFlowCache):
    """The mutation: a recorded block's last frame enters the bank, not its first."""

    def write(self, layer, k, v):
        record, self.record = self.record, None
        super().write(layer, k, v)
        if record is not None:
            t = self.frame_tokens
            self.pending[layer] = BankEntry(record, k[:, -t:], v[:, -t:])


def test_memflow_streams_as_the_masked_full_sequence(models):
    """A window of 4 frames (no sink) keeps only the previous block's last frame, so the
    bank's frames (every second block's first) are never also in the window, and a bank
    of 4 never fills: MemFlow's attention is then exactly a block mask."""
    gen, _, cond, _ = models
    policy, bank = CachePolicy(3, 4, 0), BankPolicy(bank_size=4, record_interval=2)
    want = memflow_reference(gen, cond, 7, interval=2, recent=1, seed=3)

    def run(cache_class, bank=bank):
        engine = MemFlowEngine(copy.deepcopy(gen), policy, bank, cache_class)
        engine.reset()
        return engine.stream(21, (C, H, W), cond, SCHEDULE, torch.Generator().manual_seed(3))

    got = run(MemFlowCache)
    assert (got - want).abs().max().item() < TOL
    assert want.abs().mean().item() > 0.1
    assert (run(LastFrameBank) - want).abs().max().item() > 1e-2  # the last frame recorded
    no_bank = run(MemFlowCache, BankPolicy(bank_size=0, record_interval=2))
    assert (no_bank - want).abs().max().item() > 1e-2  # the bank is attended to
