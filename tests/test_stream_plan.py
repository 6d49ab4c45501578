"""What `plan` says of a streaming (causal) backend against what its engine really does:
the transformer forwards of a whole render, counted on the tiny model's forward, and the
KV cache's size, read off the engine's cache; and the KV cache in the VRAM budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import write
from mediacheck import frames_of

from longvid.backends import caps_of
from longvid.backends.base import StreamCaps
from longvid.budget import policy_for
from longvid.presets import load_preset
from longvid.render import load_job
from longvid.vram import plan_policy

# Every way a segment starts: a take's first (no replay), later segments of a long take
# (sink + context replayed), a prompt switch inside a block (a shorter last block), a
# `continue`, a cut, a crossfade (lead and tail frames).
STORYBOARD = """\
version: 1
preset: tiny-causal
resolution: 32x32
seed: 3
shots:
  - id: long
    duration: 8.5s
    prompts: [{at: 0s, text: a harbour}, {at: 6.1s, text: boats leave}]
  - {id: on, duration: 1.5s, prompt: open water}
  - {id: cut, duration: 2s, transition: cut, prompt: a market}
  - {id: fade, duration: 2s, transition: {type: crossfade, seconds: 0.5}, prompt: dusk}
"""


@pytest.mark.parametrize("image", [False, True], ids=["prompts", "image"])
def test_plan_counts_the_forwards_the_engine_runs(tmp_path, image):
    """With `image:` on the cut, that take starts with one clean pass over the image."""
    from test_images import save_png, smooth_image

    from longvid.progress import PlainProgress
    from longvid.render import BackendPool, render_storyboard

    text = STORYBOARD
    if image:
        save_png(tmp_path / "start.png", smooth_image(32, 32))
        text = text.replace("prompt: a market}", "prompt: a market, image: start.png}")
    sb = write(tmp_path / "s.yaml", text)
    _, preset, plan = load_job(sb, None)
    assert plan.stream is not None and plan.stream.replay_forwards > 0
    assert sum(seg.image is not None for seg in plan.segments) == image
    assert any(s.num_latents % plan.stream.block_latents for s in plan.segments)
    pool = BackendPool()
    backend = pool.get(preset)
    seen = []  # latent frames of every forward of the real tiny transformer
    hook = backend.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("hidden_states", args[0] if args
                                                             else None).shape[2]),
        with_kwargs=True)
    try:
        render_storyboard(sb, output=tmp_path / "o.mp4", preset_name=None, crf=18, fresh=True,
                          pool=pool, progress=PlainProgress(quiet=True))
    finally:
        hook.remove()
    assert len(seen) == plan.forwards
    s = plan.stream
    assert plan.forwards == s.blocks * s.forwards_per_block + s.replay_forwards
    tokens_per_latent = plan.width * plan.height // caps_of(preset).tokens_per_latent_px
    assert max(seen) * tokens_per_latent == plan.max_tokens


@pytest.mark.parametrize("preset", ["tiny-mag", "tiny-memflow"])
def test_plan_counts_the_forwards_a_memory_engine_runs(tmp_path, preset):
    """The memory engines on every kind of segment start, with recalled latents pinned
    in a take's first segment and in a later one: the generator's forwards and MAG's
    memory model's (its clean pass, one per block and per pin) are what plan counts;
    MemFlow re-caches at a switch as LongLive does, MAG replays its context by blocks."""
    from longvid.progress import PlainProgress
    from longvid.render import BackendPool, render_storyboard

    text = (STORYBOARD.replace("preset: tiny-causal", f"preset: {preset}")
            .replace("prompt: open water}", "prompt: open water, recall: [long]}")
            .replace("prompt: dusk}", "prompt: dusk, recall: [long, cut]}"))
    sb = write(tmp_path / "s.yaml", text)
    _, loaded, plan = load_job(sb, None)
    assert plan.stream is not None and plan.memory == "untrained"
    bare = write(tmp_path / "bare.yaml", STORYBOARD.replace("preset: tiny-causal",
                                                              f"preset: {preset}"))
    unpinned = load_job(bare, None)[2].stream
    assert unpinned is not None and plan.stream.replay_forwards > unpinned.replay_forwards
    pool = BackendPool()
    backend = pool.get(loaded)
    seen = []  # latent frames of every forward of the real tiny transformers
    models = [backend.transformer] + ([backend.engine.memory] if preset == "tiny-mag" else [])
    hooks = [m.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(args[0].shape[2]),
        with_kwargs=True) for m in models]
    try:
        render_storyboard(sb, output=tmp_path / "o.mp4", preset_name=None, crf=18, fresh=True,
                          pool=pool, progress=PlainProgress(quiet=True))
    finally:
        for hook in hooks:
            hook.remove()
    s = plan.stream
    assert len(seen) == plan.forwards == s.blocks * s.forwards_per_block + s.replay_forwards
    tokens_per_latent = plan.width * plan.height // caps_of(loaded).tokens_per_latent_px
    assert max(seen) * tokens_per_latent == plan.max_tokens


@pytest.mark.parametrize("preset", ["tiny-mag", "tiny-memflow"])
def test_the_planned_kv_cache_holds_a_memory_engine_s_cache(preset):
    """MAG: sink + slots (pins take slots); MemFlow: LongLive's window + the bank, pins
    beyond bank_size added; read off the real caches after a long stream with pins."""
    from longvid.backends import backend_class
    from longvid.backends.causal_engine import FewStepSchedule, SegmentStart, stream_segment

    loaded = load_preset(preset)
    stream = caps_of(loaded).stream
    assert stream is not None
    backend = backend_class(loaded.backend)()
    backend.load(loaded)
    cond = torch.zeros(1, 8, 32)
    if preset == "tiny-mag":
        backend.engine.empty_cond = cond
    pins = torch.randn(1, 16, caps_of(loaded).memory_latents, 4, 4)
    stream_segment(backend.engine, SegmentStart(cond, memory=pins), 24, (16, 4, 4),
                   FewStepSchedule.warped(4, 5.0), seed=0, on_step=lambda i, n: None)
    cache = backend.engine.cache
    tokens = 4 * 4 // 4
    held = [t for t in cache.keys + cache.values if t is not None]
    if preset == "tiny-memflow":
        held += [e.k for bank in cache.bank for e in bank] + [
            e.v for bank in cache.bank for e in bank]
    elements = sum(t.numel() for t in held)
    assert elements * stream.kv_bytes_per_element == (
        stream.cached_latents * stream.kv_bytes_per_latent(tokens))
    assert stream.cached_latents == (2 + 5 if preset == "tiny-mag" else 11 + 3)


@pytest.mark.parametrize("clip_s", ["0.5s", "3s"])
def test_an_extend_plans_the_forwards_the_engine_runs(tmp_path, clip_s):
    """A take continuing a clip replays the clip's first latents as its sink when the clip
    holds them beyond its context (3 s), and none from a shorter clip (0.5 s)."""
    from longvid.extend import extend_clip
    from longvid.progress import PlainProgress
    from longvid.render import BackendPool, render_storyboard

    pool = BackendPool()
    clip_sb = write(tmp_path / "clip.yaml", "version: 1\npreset: tiny-causal\nresolution: "
                    f"32x32\nshots: [{{id: a, prompt: a pier, duration: {clip_s}}}]\n")
    render_storyboard(clip_sb, output=tmp_path / "clip.mp4", preset_name=None, crf=18,
                      fresh=True, pool=pool, progress=PlainProgress(quiet=True))
    backend = next(iter(pool.loaded.values()))
    seen = []
    hook = backend.transformer.register_forward_pre_hook(lambda m, a: seen.append(1))
    progress = PlainProgress(quiet=True)
    try:
        extend_clip(tmp_path / "clip.mp4", seconds=7.0, prompt=None, preset_name="tiny-causal",
                    output=tmp_path / "longer.mp4", seed=1, crf=18, fresh=True, pool=pool,
                    progress=progress)
    finally:
        hook.remove()
    plan = progress.plan
    assert plan is not None and plan.stream is not None and len(plan.segments) >= 2
    assert any(s.first_latent > s.context_latents for s in plan.segments)  # a sink were there one
    assert len(seen) == plan.forwards


def test_the_planned_kv_cache_is_what_the_engine_holds(tmp_path):
    from longvid.backends.causal_engine import FewStepSchedule, SegmentStart, stream_segment
    from longvid.backends.tiny_causal import TinyCausalBackend

    preset = load_preset("tiny-causal")
    stream = caps_of(preset).stream
    assert stream is not None
    backend = TinyCausalBackend()
    backend.load(preset)
    cond = torch.zeros(1, 8, 32)
    stream_segment(backend.engine, SegmentStart(cond), 24, (16, 4, 4),
                   FewStepSchedule.warped(4, 5.0), seed=0, on_step=lambda i, n: None)
    cache = backend.engine.cache
    assert cache.cached_frames == stream.cached_latents == 11
    tokens = 4 * 4 // 4  # (h/2) * (w/2) patches of one latent frame
    elements = sum(t.numel() for t in cache.keys + cache.values if t is not None)
    per_element = stream.kv_bytes_per_element
    assert elements * per_element == stream.cached_latents * stream.kv_bytes_per_latent(tokens)
    assert stream.layers == len(backend.transformer.blocks)
    attn = backend.transformer.blocks[0].attn1
    assert stream.kv_width == attn.to_k.out_features  # heads x head dim


def test_longlive_s_kv_cache_is_287_5_mb_per_latent_frame_at_480p():
    stream = caps_of(load_preset("longlive-1.3b")).stream
    assert stream is not None
    assert stream.kv_bytes_per_latent(832 * 480 // 256) == 287_539_200  # causal-wan.md §3.2
    assert stream.cached_latents == 11 and stream.attended_latents == 12
    assert stream.kv_bytes(1560) == 287_539_200 // 30 * (11 * 30 + 2 * 12)  # 3.39 GB


def test_the_kv_element_size_comes_from_the_options_alone(tmp_path):
    """`kv_dtype: float8_e4m3fn` halves the planned cache, its scales (4 B per head of 128)
    aside, and `plan` names the storage."""
    preset = load_preset("longlive-1.3b")
    base = caps_of(preset).stream
    assert base is not None and base.kv_bytes_per_element == 2 and base.kv_storage == "bf16"
    copy = write(tmp_path / "fp8kv.yaml", Path(preset.source).read_text(encoding="utf-8")
                 .replace("name: longlive-1.3b", "name: fp8kv")
                 .replace("options:", "options:\n  kv_dtype: float8_e4m3fn", 1))
    fp8 = caps_of(load_preset(str(copy))).stream
    assert fp8 is not None and fp8.kv_storage == "fp8"
    assert fp8.kv_bytes_per_latent(1560) == round(287_539_200 / 2 * (1 + 4 / 128))


def test_the_budget_holds_the_kv_cache_beside_the_transformer_and_the_decode(tmp_path):
    """The KV cache and the streaming decoder's feature cache (a take long, bf16 on a GPU:
    151,328 elements per latent pixel, 1.76 GiB at 832x480) stay on the GPU while blocks
    are made and decoded, with the allocator's churn around them (a fifth of both,
    measured on an H100). At 12 GiB the transformer streams: resident, with 1 GiB of
    overhead, longlive-1.3b ran into an 11.4 GiB cap (docs/performance.md)."""
    from longvid.budget import CACHE_CHURN_FRACTION

    sb = write(tmp_path / "s.yaml", "version: 1\nshots: [{id: a, prompt: x, duration: 20s}]\n")
    _, preset, plan = load_job(sb, "longlive-1.3b")
    policy = plan_policy(preset, plan, 80.0)
    assert policy is not None and policy.kv_cache is not None
    decoder_gib = 151_328 * (832 // 8) * (480 // 8) * 2 / 2**30
    assert policy.kv_cache.decoder_gib == pytest.approx(decoder_gib)
    assert policy.kv_cache.decoder_storage == "bf16"
    caches_gib = caps_of(preset).stream.kv_bytes(1560) / 2**30 + decoder_gib
    assert policy.kv_cache.gib + policy.kv_cache.decoder_gib == pytest.approx(caches_gib)
    assert policy.kv_cache.churn_gib == pytest.approx(CACHE_CHURN_FRACTION * caches_gib)
    kv_gib = caches_gib * (1 + CACHE_CHURN_FRACTION)
    without = policy_for(80.0, preset.memory, plan.max_tokens, preset.quantization)
    stages = {s.name: s for s in policy.stages}
    bare = {s.name: s for s in without.stages}
    assert stages["transformer"].peak_gib == pytest.approx(bare["transformer"].peak_gib + kv_gib)
    assert stages["vae"].peak_gib == pytest.approx(bare["vae"].peak_gib + kv_gib)
    assert stages["text encoder"].peak_gib == bare["text encoder"].peak_gib  # before any block
    assert policy.transformer == "gpu"
    at_12 = plan_policy(preset, plan, 12.0)
    assert at_12 is not None and at_12.fits and at_12.transformer == "group offload"
    assert stages["vae"].peak_gib > 11.4  # with the transformer resident, as measured
    # a block is 3 latent frames: its activations, not a 33-latent window's
    assert plan.max_tokens == 3 * 1560


@pytest.mark.parametrize("offload", [True, False])
def test_mag_s_memory_model_is_in_the_budget_and_it_needs_14_gib_at_480p(tmp_path, offload):
    """The memory model is a second fp8 transformer: streamed (memory_offload), it adds
    its blocks in flight to the transformer stage only; resident, its weights to every
    stage. Its cache is sink 2 + 21 slots. With its keys and values in bf16 and the
    streaming decoder's cache beside them, MAG fits 14 GiB only with the memory model
    streamed, and the generator streamed too; not 12 GiB at 480p (measured on an H100:
    10.8 GiB allocated, and a 12 GiB cap the allocator ran into 153 times)."""
    from dataclasses import replace

    from longvid.budget import SecondTransformer, streamed_gib

    sb = write(tmp_path / "s.yaml", "version: 1\nshots: [{id: a, prompt: x, duration: 20s}]\n")
    _, preset, plan = load_job(sb, "mag-1.3b")
    preset = replace(preset, options=preset.options.model_copy(
        update={"memory_offload": offload, "kv_dtype": "model"}))
    fit = plan_policy(preset, plan, 14.0)
    assert fit is not None and fit.transformer == "group offload"
    assert fit.fits == offload and (fit.peak_gib < 14.0) == offload
    at_12 = plan_policy(preset, plan, 12.0)
    assert at_12 is not None and not at_12.fits
    policy = plan_policy(preset, plan, 80.0)  # the same placements with and without it
    assert policy is not None and policy.kv_cache is not None and policy.second is not None
    assert policy.kv_cache.latents == 23 and policy.second.storage == "fp8"
    weights = policy.second.weights_gib
    assert weights == pytest.approx(2.64 / 2)
    share = streamed_gib(weights, 30) if offload else weights
    assert policy.second.peak_gib == pytest.approx(share)
    kv = policy.kv_cache
    bare = policy_for(80.0, preset.memory, plan.max_tokens, preset.quantization, kv)
    assert bare.second is None and bare.transformer == policy.transformer
    stages = {s.name: s.peak_gib for s in policy.stages}
    without = {s.name: s.peak_gib for s in bare.stages}
    assert stages["transformer"] == pytest.approx(without["transformer"] + share)
    resident = 0.0 if offload else weights
    assert stages["vae"] == pytest.approx(without["vae"] + resident)
    assert stages["text encoder"] == pytest.approx(without["text encoder"] + resident)
    assert policy_for(80.0, preset.memory, plan.max_tokens, preset.quantization, kv,
                      SecondTransformer("memory model", offload)) == policy


def test_mag_fits_12_gib_at_480p_with_its_keys_and_values_in_fp8(tmp_path):
    """The preset stores MAG's cache in fp8 with a scale per token and head (1 + 4/128
    bytes an element, not 2): 23 frames are 3.4 GiB, not 6.6, and at 12 GiB the plan
    fits the GPU proof's 11.4 GiB cap with the generator resident."""
    from dataclasses import replace

    sb = write(tmp_path / "s.yaml", "version: 1\nshots: [{id: a, prompt: x, duration: 20s}]\n")
    _, preset, plan = load_job(sb, "mag-1.3b")
    assert preset.options.kv_dtype == "float8_e4m3fn"
    bf16_preset = replace(preset, options=preset.options.model_copy(
        update={"kv_dtype": "model"}))
    fp8, bf16 = plan_policy(preset, plan, 12.0), plan_policy(bf16_preset, plan, 12.0)
    assert fp8 is not None and fp8.kv_cache is not None
    assert bf16 is not None and bf16.kv_cache is not None
    assert (fp8.kv_cache.storage, bf16.kv_cache.storage) == ("fp8", "bf16")
    assert fp8.kv_cache.gib == pytest.approx(bf16.kv_cache.gib * (1 + 4 / 128) / 2)
    assert fp8.fits and not bf16.fits
    assert fp8.peak_gib <= 11.4 and fp8.transformer == "gpu"


def test_plan_shows_the_kv_cache_and_the_stream_s_forwards(tmp_path, cli):
    sb = write(tmp_path / "s.yaml", "version: 1\nshots: [{id: a, prompt: x, duration: 20s}]\n")
    code, out, _ = cli("plan", sb, "--preset", "longlive-1.3b")
    out = " ".join(out.split())  # as read, whatever the terminal's width
    assert code == 0
    assert "KV cache (bf16, 11 latent frames" in out
    assert "x (4 steps + 1 clean pass)" in out and "replay" in out
    code, out, _ = cli("plan", sb, "--preset", "longlive-1.3b", "--json")
    data = json.loads(out)
    assert data["stream"]["cached_latents"] == 11
    assert data["policy"]["kv_cache"]["latents"] == 11
    code, out, _ = cli("plan", sb, "--preset", "skyreels-df-1.3b", "--json")
    assert "stream" not in json.loads(out) and "kv_cache" not in json.loads(out)["policy"]


def test_a_stream_part_without_a_window_caches_the_whole_segment():
    from longvid.backends.tiny_causal import TinyCausalBackend

    options = TinyCausalBackend.Options(window_latents=0)
    shaped = options.stream_caps(StreamCaps(3, 3, 11, 12, 2, 32), 21)
    assert shaped.cached_latents == shaped.attended_latents == 3 + 21


RECALL = """\
version: 1
preset: tiny-causal
resolution: 32x32
seed: 4
shots:
  - {id: pier, duration: 0.5s, prompt: a pier}
  - {id: town, duration: 0.5s, transition: cut, prompt: a town}
  - {id: back, duration: 0.5s, transition: cut, prompt: the pier again%s}
"""


@pytest.mark.parametrize("preset", ["tiny-causal", "longlive-1.3b", "self-forcing-1.3b"])
def test_recall_on_a_causal_preset_is_warned_to_have_no_effect(tmp_path, cli, preset):
    sb = write(tmp_path / "s.yaml", RECALL % ", recall: [pier]")
    code, out, _ = cli("plan", sb, "--preset", preset, "--json")
    [warning] = json.loads(out)["warnings"]
    assert code == 0 and warning.startswith(f"preset {preset!r} has no memory: `recall` of "
                                            "shot(s) back has no effect")
    assert "not trained" in warning and "`memflow-1.3b`" in warning
    code, out, _ = cli("plan", sb, "--preset", "tiny")  # a memory backend: no such warning
    assert code == 0 and "has no effect" not in out


def test_recall_on_a_causal_preset_changes_no_frame(tmp_path):
    from longvid.progress import PlainProgress
    from longvid.render import BackendPool, render_storyboard

    pool, videos = BackendPool(), []
    for name, recall in (("without", ""), ("with", ", recall: [pier]")):
        sb = write(tmp_path / f"{name}.yaml", RECALL % recall)
        render_storyboard(sb, output=tmp_path / f"{name}.mp4", preset_name=None, crf=18,
                          fresh=True, pool=pool, progress=PlainProgress(quiet=True))
        videos.append(frames_of(tmp_path / f"{name}.mp4"))
    assert videos[0].shape == videos[1].shape and (videos[0] == videos[1]).all()
