"""The wan-vace backend on a tiny Wan2.1 VACE checkpoint in a local Hub cache.

The checkpoint is written in the Hub's own cache layout under the real repo id and
loaded offline through the code path a real download takes. One window, with and
without context and recalled keyframes, is checked numerically against diffusers'
WanVACEPipeline driven with its documented continuation recipe.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import write
from hubfixture import (
    VACE_REPO,
    assert_frames_close,
    install_tiny_vace,
    offline_env,
    pipeline_frames,
    storage_of,
    tiny_vace_components,
    write_gguf,
    write_hub_snapshot,
)

from longvid.backends.base import SegmentRequest
from longvid.backends.wan_vace import WanVACEBackend
from longvid.presets import load_preset

TEST_PRESET = """\
name: vace-test
backend: wan-vace
fps: 16
resolution: 32x32
steps: 3
guidance_scale: %(guidance)s
min_vram_gib: 0
options:
  flow_shift: 3.0
  max_sequence_length: 16
  max_latents: 5
  context_latents: 2
%(memory)shub:
  repo: %(repo)s
  revision: main
  verified: true
  files: [model_index.json, scheduler/*.json, tokenizer/*, text_encoder/*.json,
          text_encoder/*.safetensors*, transformer/*.json, transformer/*.safetensors*,
          vae/*.json, vae/*.safetensors*]
"""
PROMPT, OTHER, NEGATIVE = "a lighthouse in fog", "a red sunset", "blurry"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub"
    install_tiny_vace(cache)
    offline_env(monkeypatch, cache, tmp_path / "home")
    return cache


def preset_file(tmp_path, guidance=1.0, memory=None):
    """`memory`: the opt-in `memory_latents` (None: unset, memory off)."""
    line = "" if memory is None else f"  memory_latents: {memory}\n"
    return write(tmp_path / "vace-test.yaml",
                 TEST_PRESET % {"guidance": guidance, "repo": VACE_REPO, "memory": line})


def loaded(tmp_path, guidance=1.0) -> WanVACEBackend:
    backend = WanVACEBackend()
    backend.load(load_preset(str(preset_file(tmp_path, guidance))))
    backend.prepare([PROMPT, OTHER], NEGATIVE, guidance)
    return backend


def request(seed, n, context=None, memory=None, guidance=1.0, **kw) -> SegmentRequest:
    return SegmentRequest(prompt=PROMPT, negative_prompt=NEGATIVE, num_latents=n,
                          context=context, width=32, height=32, seed=seed, steps=3,
                          guidance_scale=guidance, fps=16, memory=memory, **kw)


def no_progress(i, n):
    pass


def differs(a, b) -> bool:
    """Windows are bit-identical for identical inputs (asserted below), so any gap above
    float noise comes from the input that changed; tiny random VACE blocks move the
    output by about 1e-4."""
    return (a - b).abs().max().item() > 1e-5


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_window_matches_diffusers_vace_pipeline(hub_cache, tmp_path, guidance):
    """A take's first window, then a continuation window with two recalled keyframes:
    the same latents as WanVACEPipeline with video = K context frames + blanks,
    mask = 0 on them and 1 elsewhere, reference_images = the keyframes' full-resolution
    frames (what the bank keeps for VACE)."""
    from diffusers import WanVACEPipeline
    from PIL import Image

    backend = loaded(tmp_path, guidance)
    pipe = WanVACEPipeline.from_pretrained(backend.folder)
    pipe.set_progress_bar_config(disable=True)
    vae, mean, std = pipe.vae, backend.vae.mean, backend.vae.std
    common = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "height": 32, "width": 32,
              "num_inference_steps": 3, "guidance_scale": guidance, "output_type": "latent",
              "max_sequence_length": 16}

    first = backend.generate(request(5, 5, guidance=guidance), no_progress)
    assert first.latents.shape == (1, 16, 5, 4, 4) and first.frames.shape == (17, 32, 32, 3)
    theirs = pipe(num_frames=17, generator=torch.Generator().manual_seed(5), **common).frames
    torch.testing.assert_close(first.latents, theirs, rtol=1e-5, atol=1e-5)

    # two distinct keyframes' full-resolution frames, oldest first
    ramp = torch.arange(32, dtype=torch.uint8).mul(8).view(1, 32, 1).expand(32, 32, 3)
    stills = [ramp.numpy().copy(), (255 - ramp.transpose(0, 1)).numpy().copy()]  # (32, 32, 3)
    memory = tuple(stills)
    context = first.latents[:, :, -2:]
    cont = backend.generate(request(6, 3, context, memory, guidance), no_progress)
    assert cont.latents.shape == (1, 16, 3, 4, 4) and cont.frames.shape == (12, 32, 32, 3)

    with torch.no_grad():  # the K = 5 context frames, in [0, 1]: the last 5 of the two
        # context latents' 8, decoded as a continuation (a copy of the first warms the cache)
        warm = torch.cat([context[:, :, :1], context], dim=2)
        kept = vae.decode(warm * std + mean, return_dict=False)[0][:, :, -5:].clamp(-1, 1)
    kept = ((kept + 1) / 2).permute(0, 2, 1, 3, 4)  # (1, 5, 3, 32, 32)
    video = torch.cat([kept, torch.full((1, 12, 3, 32, 32), 0.5)], dim=1)  # 17 frames
    mask = torch.ones_like(video)
    mask[:, :5] = 0
    generator = torch.Generator().manual_seed(6)
    noise = torch.randn((1, 16, 5, 4, 4), generator=generator)
    noise = torch.cat([torch.randn((1, 16, 2, 4, 4), generator=generator), noise], dim=2)
    theirs = pipe(num_frames=17, video=video, mask=mask,
                  reference_images=[Image.fromarray(f) for f in stills[::-1]],  # last first
                  latents=noise, **common).frames
    assert theirs.shape == (1, 16, 7, 4, 4)  # 2 reference latents + 2 context + 3 new
    torch.testing.assert_close(cont.latents, theirs[:, :, 4:], rtol=1e-5, atol=1e-5)


def test_context_and_memory_change_the_window(hub_cache, tmp_path):
    backend = loaded(tmp_path)
    first = backend.generate(request(5, 5), no_progress)
    context = first.latents[:, :, -2:]
    alone = backend.generate(request(6, 3), no_progress).latents  # a fresh take of 3
    cont = backend.generate(request(6, 3, context), no_progress)
    assert cont.frames.shape[0] == 12 and differs(cont.latents, alone)
    again = backend.generate(request(6, 3, context), no_progress)
    torch.testing.assert_close(again.latents, cont.latents)  # deterministic per seed
    other_context = backend.generate(request(9, 2), no_progress).latents
    moved = backend.generate(request(6, 3, other_context), no_progress).latents
    assert differs(moved, cont.latents)

    ramp = torch.arange(32, dtype=torch.uint8).mul(8).view(1, 32, 1).expand(32, 32, 3)
    still, other_still = ramp.numpy().copy(), (255 - ramp.transpose(0, 1)).numpy().copy()
    recalled = backend.generate(request(6, 3, context, (still,)), no_progress)
    assert recalled.latents.shape == (1, 16, 3, 4, 4) and recalled.frames.shape[0] == 12
    assert differs(recalled.latents, cont.latents)
    other = backend.generate(request(6, 3, context, (other_still,)), no_progress)
    assert differs(other.latents, recalled.latents)


def test_blend_prompt_mixes_the_cached_embeddings(hub_cache, tmp_path):
    from diffusers import WanVACEPipeline

    backend = loaded(tmp_path)
    seen = []
    hook = backend.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["encoder_hidden_states"].clone()),
        with_kwargs=True)
    plain = backend.generate(request(5, 2), no_progress)
    blended = backend.generate(request(5, 2, blend_prompt=OTHER, blend_weight=0.25),
                               no_progress)
    hook.remove()
    pipe = WanVACEPipeline.from_pretrained(backend.folder)

    def embeds(text):
        return pipe.encode_prompt(text, do_classifier_free_guidance=False,
                                  max_sequence_length=16, device="cpu")[0]

    expected = 0.75 * embeds(PROMPT) + 0.25 * embeds(OTHER)
    assert len(seen) == 6  # 3 steps per window, no guidance
    torch.testing.assert_close(seen[0], embeds(PROMPT), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(seen[3], expected, rtol=1e-5, atol=1e-6)
    assert differs(blended.latents, plain.latents)


def test_render_end_to_end_offline(hub_cache, tmp_path, cli):
    """With the opt-in memory: shot b's `recall: [a]` reaches VACE as shot a's keyframes'
    full-resolution frames, which the bank keeps beside their latents."""
    from longvid.memory.descriptor import thumbnail
    from longvid.memory.store import load_keyframes

    preset = preset_file(tmp_path, guidance=2.0, memory=2)
    sb = write(tmp_path / "story.yaml", f"""\
        version: 1
        preset: {preset.name}
        seed: 3
        negative_prompt: blurry
        shots:
          - id: a
            duration: 2s
            prompts: [{{at: 0, text: a harbour}}, {{at: 1s, text: a storm}}]
          - {{id: b, duration: 0.5s, prompt: a pier, transition: cut, recall: [a]}}
        """)
    code, out, err = cli("render", sb, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["frames"] == 40 and result["segments"] >= 4
    sidecar = json.loads((tmp_path / "story.json").read_text())
    assert sidecar["versions"]["weights"].startswith(VACE_REPO + "@")
    cached = list((tmp_path / "home" / "cache" / "prompt-embeddings").glob("*.safetensors"))
    assert len(cached) == 4  # three prompts and the negative one, encoded once each
    code, out, _ = cli("render", sb, "--json")
    last = sorted((Path(result["run_dir"]) / "segments").glob("seg_*.json"))[-1]
    recalled = json.loads(last.read_text())["memory"]  # shot b recalls shot a
    assert recalled and {m["shot"] for m in recalled} == {"a"}
    kept = load_keyframes(last.parent / "seg_0000.memory.safetensors")
    for keyframe in kept:  # each keyframe's own frame, at full resolution
        assert keyframe.image is not None and keyframe.image.shape == (32, 32, 3)
        assert (thumbnail(keyframe.image) == keyframe.thumb).all()
    code, out, _ = cli("render", sb, "--json")
    assert code == 0 and json.loads(out)["resumed_segments"] == result["segments"]


QUANTIZED = {  # a GGUF file the test writes: VACE has a single-file mapping in diffusers
    "fp8": "quantization: {text_encoder: nf4, transformer: fp8}\n",
    "gguf": "quantization: {text_encoder: nf4, transformer: gguf}\n"
            "transformer_gguf: {repo: test/vace-gguf, revision: main, file: vace-Q8_0.gguf,\n"
            "                   quant_type: Q8_0, verified: false}\n",
}


@pytest.fixture(scope="module")
def aligned_cache(tmp_path_factory):
    """The VACE checkpoint at sizes where nf4 and Q8_0 really pack weights, and a GGUF
    file of its transformer."""
    cache = tmp_path_factory.mktemp("hf") / "hub"
    install_tiny_vace(cache, block_aligned=True)
    gguf_dir = tmp_path_factory.mktemp("gguf")
    write_gguf(gguf_dir / "vace-Q8_0.gguf",
               tiny_vace_components(block_aligned=True)["transformer"])
    write_hub_snapshot(cache, "test/vace-gguf", gguf_dir)
    return cache


@pytest.mark.parametrize(("transformer", "packed"), [("fp8", "torch.float8_e4m3fn"),
                                                     ("gguf", "GGUF Q8_0")])
def test_preset_quantization_applies_to_vace(aligned_cache, tmp_path, monkeypatch,
                                             transformer, packed):
    """`quantization:` loads UMT5 as bitsandbytes nf4 and the VACE transformer in fp8 or
    from GGUF, through the same loaders as skyreels-df; the window stays close to bf16."""
    monkeypatch.setenv("HF_HUB_CACHE", str(aligned_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LONGVID_HOME", str(tmp_path / "home"))
    windows = {}
    for name, extra in (("bf16", ""), (transformer, QUANTIZED[transformer])):
        preset = write(tmp_path / f"{name}.yaml",
                       TEST_PRESET % {"guidance": 1.0, "repo": VACE_REPO, "memory": ""} + extra)
        backend = WanVACEBackend()
        backend.load(load_preset(str(preset)))
        backend.prepare([PROMPT], NEGATIVE, 1.0)
        windows[name] = backend.generate(request(5, 3), no_progress).latents
    tr = storage_of(backend.transformer)
    assert tr[packed] >= 15, tr  # attention and FFN matrices of the DiT and VACE blocks
    encoder = backend._text_pipeline().text_encoder
    assert storage_of(encoder)["Params4bit"] == 2 * (4 + 2)  # q k v o, wi_0 wi_1 per layer
    if transformer == "gguf":
        assert backend.versions()["transformer_gguf"].startswith("test/vace-gguf@")
    # nf4 embeddings are cached apart from the bf16 ones
    cached = list((tmp_path / "home" / "cache" / "prompt-embeddings").glob("*.safetensors"))
    assert len(cached) == 2
    reference = windows["bf16"]
    error = ((windows[transformer] - reference).norm() / reference.norm()).item()
    assert 1e-4 < error < 0.1, error  # quantized for real, and still the same window


def test_real_preset_needs_a_gpu_on_a_cpu_machine(hub_cache):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(Exception, match="runs on a CUDA GPU") as info:
        WanVACEBackend().load(load_preset("wan-vace-1.3b"))
    assert info.value.code == 4 and "--preset tiny" in info.value.hint


def test_context_frames_decode_as_the_continuation_the_previous_segment_showed(hub_cache,
                                                                              tmp_path):
    """The context is mid-take: decoded as a fresh sequence its first latent would be read
    as a take's 1-frame image latent. Decoded as a continuation, the kept frames are close
    to the frames the previous segment really output."""
    backend = loaded(tmp_path)
    first = backend.generate(request(5, 5), no_progress)
    shown = torch.from_numpy(first.frames[-5:]).float().permute(3, 0, 1, 2)[None] / 127.5 - 1
    context = first.latents[:, :, -2:]
    kept = backend.context_frames(context)  # (1, 3, 5, 32, 32)
    fresh = backend.vae.decode_float(context).clamp(-1, 1)  # a take's start: 1 + 4 frames
    assert kept.shape == fresh.shape == shown.shape == (1, 3, 5, 32, 32)
    error, fresh_error = (kept - shown).abs().mean(), (fresh - shown).abs().mean()
    assert error < fresh_error / 2, (error, fresh_error)
    first_frame = (kept[:, :, 0] - shown[:, :, 0]).abs().mean()
    assert first_frame < (fresh[:, :, 0] - shown[:, :, 0]).abs().mean() / 2


def test_frames_are_the_pipelines_decode_behind_the_true_context(hub_cache, tmp_path):
    """A continuation's frames: diffusers' decode of [the context carried in | the new
    latents], less the context's frames (not decoded behind VACE's re-synthesized copy
    of the context, and the last 4n frames, not the first)."""
    from diffusers import WanVACEPipeline

    backend = loaded(tmp_path)
    pipe = WanVACEPipeline.from_pretrained(backend.folder)
    first = backend.generate(request(5, 5), no_progress)
    assert_frames_close(first.frames, pipeline_frames(pipe, None, first.latents))
    context = first.latents[:, :, -2:]
    cont = backend.generate(request(6, 3, context), no_progress)
    assert_frames_close(cont.frames, pipeline_frames(pipe, context, cont.latents))


def test_reference_images_match_diffusers_vace_pipeline(hub_cache, tmp_path):
    """Storyboard `refs` enter as WanVACEPipeline's `reference_images`: fitted inside the
    frame on a white canvas, one latent each, in front of the window."""
    from diffusers import WanVACEPipeline
    from PIL import Image

    from longvid.backends.base import ShotImages

    backend = loaded(tmp_path)
    pipe = WanVACEPipeline.from_pretrained(backend.folder)
    pipe.set_progress_bar_config(disable=True)
    ys, xs = torch.meshgrid(torch.arange(24), torch.arange(40), indexing="ij")
    wide = torch.stack([xs * 6, ys * 10, 255 - xs * 6], dim=-1).to(torch.uint8)  # 40x24
    tall = wide.transpose(0, 1).flip(0).contiguous()  # 24x40
    refs = (wide.numpy(), tall.numpy())
    ours = backend.generate(request(5, 5, images=ShotImages(refs=refs)), no_progress)
    alone = backend.generate(request(5, 5), no_progress)
    assert ours.latents.shape == (1, 16, 5, 4, 4) and differs(ours.latents, alone.latents)

    generator = torch.Generator().manual_seed(5)
    noise = torch.randn((1, 16, 5, 4, 4), generator=generator)
    noise = torch.cat([torch.randn((1, 16, 2, 4, 4), generator=generator), noise], dim=2)
    theirs = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, height=32, width=32, num_frames=17,
                  num_inference_steps=3, guidance_scale=1.0, output_type="latent",
                  max_sequence_length=16, latents=noise,
                  reference_images=[Image.fromarray(r) for r in refs[::-1]]).frames  # last first
    assert theirs.shape == (1, 16, 7, 4, 4)
    torch.testing.assert_close(ours.latents, theirs[:, :, 2:], rtol=1e-5, atol=1e-5)


def test_first_frame_image_matches_diffusers_vace_image_to_video(hub_cache, tmp_path):
    """A shot's image is VACE's image-to-video: the control video's first frame, kept
    (mask 0), as WanVACEPipeline(video=[image, blanks], mask=[black, white]) does."""
    from diffusers import WanVACEPipeline

    from longvid.backends.base import ShotImages

    backend = loaded(tmp_path)
    pipe = WanVACEPipeline.from_pretrained(backend.folder)
    pipe.set_progress_bar_config(disable=True)
    ys, xs = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    image = torch.stack([xs * 8, ys * 8, 255 - xs * 4], dim=-1).to(torch.uint8)  # (32, 32, 3)
    ours = backend.generate(request(5, 5, images=ShotImages(first_frame=image.numpy())),
                            no_progress)
    alone = backend.generate(request(5, 5), no_progress)
    assert ours.latents.shape == (1, 16, 5, 4, 4) and differs(ours.latents, alone.latents)

    video = torch.full((1, 17, 3, 32, 32), 0.5)  # [0, 1]; blank frames are mid-grey
    video[0, 0] = image.permute(2, 0, 1).float() / 255
    mask = torch.ones_like(video)
    mask[:, 0] = 0
    theirs = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, height=32, width=32, num_frames=17,
                  num_inference_steps=3, guidance_scale=1.0, output_type="latent",
                  max_sequence_length=16, video=video, mask=mask,
                  generator=torch.Generator().manual_seed(5)).frames
    torch.testing.assert_close(ours.latents, theirs, rtol=1e-5, atol=1e-5)


def test_recalled_frames_enter_exactly_as_reference_images(hub_cache, tmp_path):
    """VACE's opt-in memory: a recalled keyframe's frame is a reference image, nothing else
    (the reference path is checked against WanVACEPipeline above)."""
    from longvid.backends.base import ShotImages

    backend = loaded(tmp_path)
    first = backend.generate(request(5, 5), no_progress)
    frame = first.frames[8]  # (32, 32, 3) uint8, as the bank keeps it
    context = first.latents[:, :, -2:]
    recalled = backend.generate(request(6, 3, context, (frame,)), no_progress)
    as_ref = backend.generate(request(6, 3, context, images=ShotImages(refs=(frame,))),
                              no_progress)
    torch.testing.assert_close(recalled.latents, as_ref.latents, rtol=0, atol=0)
    plain = backend.generate(request(6, 3, context), no_progress)
    assert differs(plain.latents, recalled.latents)


def test_memory_is_off_unless_the_preset_opts_in(hub_cache, tmp_path, cli):
    sb = write(tmp_path / "story.yaml", """\
        version: 1
        preset: vace-test.yaml
        shots:
          - {id: a, duration: 1s, prompt: a harbour}
          - {id: b, duration: 1s, prompt: a pier, transition: cut, recall: [a]}
        """)
    preset_file(tmp_path)
    code, out, _ = cli("plan", sb, "--json")
    plan = json.loads(out)
    assert code == 0 and plan["memory_latents"] == 0 and plan["memory"] == "opt-in untrained"
    assert any("keeps memory off" in w and "memory_latents: 2" in w for w in plan["warnings"])
    preset_file(tmp_path, memory=1)
    code, out, _ = cli("plan", sb, "--json")
    plan = json.loads(out)
    assert plan["memory_latents"] == 1 and plan["memory"] == "opt-in untrained"
    assert not any("memory" in w for w in plan["warnings"])
