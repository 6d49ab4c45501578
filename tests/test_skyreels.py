"""The skyreels-df backend on a tiny SkyReels-V2 checkpoint in a local Hub cache.

The checkpoint is written in the Hub's own cache layout under the real repo id and
loaded offline through exactly the code path a real download takes. The loop is
checked numerically against diffusers' SkyReelsV2DiffusionForcingPipeline.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import Spy, run_longvid, write
from hubfixture import (
    SKYREELS_REPO,
    assert_frames_close,
    install_tiny_skyreels,
    offline_env,
    pipeline_frames,
    replace_cached_file,
)

from longvid.backends.skyreels_df import SkyReelsDFBackend
from longvid.generate import render_segments
from longvid.presets import load_preset
from longvid.render import load_job
from longvid.rundir import RunDir

TEST_PRESET = """\
name: skyreels-test
backend: skyreels-df
fps: 24
resolution: 32x32
steps: 3
guidance_scale: %(guidance)s
min_vram_gib: 0
options:
  flow_shift: 8.0
  addnoise_condition: %(addnoise)s
  max_sequence_length: 16
  max_latents: 5
  context_latents: 2
  memory_latents: %(memory)s
hub:
  repo: %(repo)s
  revision: main
  verified: true
  files: [model_index.json, scheduler/*.json, tokenizer/*, text_encoder/*.json,
          text_encoder/*.safetensors*, transformer/*.json, transformer/*.safetensors*,
          vae/*.json, vae/*.safetensors*]
"""


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf" / "hub"
    install_tiny_skyreels(cache)
    offline_env(monkeypatch, cache, tmp_path / "home")
    return cache


def preset_file(tmp_path, guidance=1.0, addnoise=0, repo=SKYREELS_REPO, memory=2):
    return write(tmp_path / "skyreels-test.yaml", TEST_PRESET % {
        "guidance": guidance, "addnoise": addnoise, "repo": repo, "memory": memory})


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_loop_matches_diffusers_skyreels_pipeline(hub_cache, tmp_path, guidance):
    """One prompt, same seeds, memory and anti-drift off: longvid's windows ==
    SkyReelsV2DiffusionForcingPipeline."""
    from diffusers import SkyReelsV2DiffusionForcingPipeline

    sb_path = write(tmp_path / "one.yaml", """\
        version: 1
        seed: 11
        anti_drift: false
        negative_prompt: blurry
        shots: [{id: a, prompt: a lighthouse in fog, duration: 37f}]
        """)
    _, preset, plan = load_job(sb_path, str(preset_file(tmp_path, guidance, memory=0)))
    assert [(s.context_latents, s.num_latents) for s in plan.segments] == [(0, 5), (2, 3),
                                                                            (2, 2)]
    backend = SkyReelsDFBackend()
    backend.load(preset)
    spy = Spy(backend)
    run = RunDir(tmp_path / "run")
    run.open({"run_key": "k"})
    list(render_segments(plan, spy, run, crf=18))
    ours = torch.cat([o.latents for o in spy.outputs], dim=2)  # (1, 16, 10, 4, 4)

    pipe = SkyReelsV2DiffusionForcingPipeline.from_pretrained(backend.folder)
    seeds = [s.seed for s in plan.segments]
    generator = torch.Generator().manual_seed(seeds[0])
    window = {"k": 0}

    def reseed_per_window(pipe_, i, t, kwargs):  # longvid seeds each window on its own
        if i == preset.steps - 1 and window["k"] + 1 < len(seeds):
            window["k"] += 1
            generator.manual_seed(seeds[window["k"]])
        return {}

    theirs = pipe(prompt="a lighthouse in fog", negative_prompt="blurry", height=32, width=32,
                  num_frames=37, num_inference_steps=3, guidance_scale=guidance,
                  generator=generator, output_type="latent", max_sequence_length=16,
                  base_num_frames=17, overlap_history=5, addnoise_condition=0, fps=24,
                  callback_on_step_end=reseed_per_window).frames
    assert theirs.shape == ours.shape == (1, 16, 10, 4, 4)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_render_end_to_end_offline_with_timed_prompts(hub_cache, tmp_path, cli):
    preset = preset_file(tmp_path, addnoise=20)
    sb = write(tmp_path / "story.yaml", f"""\
        version: 1
        preset: {preset.name}
        seed: 3
        shots:
          - id: a
            duration: 1.5s
            prompts: [{{at: 0, text: a harbour}}, {{at: 0.75s, text: a storm}}]
          - {{id: b, duration: 0.5s, prompt: a pier, transition: cut}}
        """)
    code, out, err = cli("render", sb, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["frames"] == 48 and result["segments"] >= 3
    sidecar = json.loads((tmp_path / "story.json").read_text())
    assert sidecar["versions"]["weights"].startswith(SKYREELS_REPO + "@")
    cached = list((tmp_path / "home" / "cache" / "prompt-embeddings").glob("*.safetensors"))
    assert len(cached) == 3  # each distinct prompt encoded once, kept on disk
    code, out, _ = cli("render", sb, "--json")
    assert code == 0 and json.loads(out)["resumed_segments"] == result["segments"]


def test_not_cached_while_offline_is_exit_4_with_the_pull_command(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    preset = preset_file(tmp_path)  # a CPU-capable preset, so the cache check is reached
    sb = write(tmp_path / "s.yaml", "version: 1\nshots: [{id: a, prompt: x, duration: 1s}]\n")
    code, _, err = cli("render", sb, "--preset", preset)
    assert code == 4 and "are not in the Hub cache" in err
    assert f"longvid models pull {preset}" in err and "HF_HUB_OFFLINE is set" in err


def test_pickle_checkpoints_are_refused(hub_cache, tmp_path, cli):
    text = preset_file(tmp_path).read_text().replace("vae/*.safetensors*", "vae/model.bin")
    bad = write(tmp_path / "pickled.yaml", text)
    sb = write(tmp_path / "s.yaml", "version: 1\nshots: [{id: a, prompt: x, duration: 1s}]\n")
    code, _, err = cli("render", sb, "--preset", bad)
    assert code == 3 and "pickle checkpoint" in err and "safetensors" in err


def test_real_preset_needs_a_gpu_on_a_cpu_machine(hub_cache, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    backend = SkyReelsDFBackend()
    with pytest.raises(Exception, match="runs on a CUDA GPU") as info:
        backend.load(load_preset("skyreels-df-1.3b"))
    assert info.value.code == 4 and "--preset tiny" in info.value.hint


def test_models_list_pull_and_rm_against_the_local_cache(hub_cache, cli):
    code, out, _ = cli("models", "list", "--json")
    rows = {r["preset"]: r for r in json.loads(out)}
    assert code == 0 and rows["skyreels-df-1.3b"]["cached"] and rows["skyreels-df-1.3b"]["bytes"]
    code, out, _ = cli("models", "pull", "skyreels-df-1.3b", "--json")
    assert code == 0 and json.loads(out)["already_cached"] is True
    code, out, _ = cli("models", "pull", "skyreels-df-1.3b", "--dry-run", "--json")
    listing = json.loads(out)
    names = {f["file"] for f in listing["files"]}
    assert code == 0 and "transformer/diffusion_pytorch_model.safetensors" in names
    assert listing["bytes"] == sum(f["bytes"] for f in listing["files"]) > 0
    code, out, _ = cli("models", "rm", "skyreels-df-1.3b")
    assert code == 0 and out.startswith(f"removed {SKYREELS_REPO}")
    assert not list(hub_cache.glob("models--Skywork--*"))
    code, _, err = cli("models", "pull", "skyreels-df-1.3b")  # offline, no longer cached
    assert code == 4 and "longvid models pull skyreels-df-1.3b" in err


def test_pull_of_a_cached_preset_reports_each_file_as_cached(hub_cache, cli):
    code, out, err = cli("models", "pull", "skyreels-df-1.3b", "--json")
    result = json.loads(out)
    files = {f["file"]: f for f in result["files"]}
    assert code == 0 and result["already_cached"] and "fetching" not in err
    assert {"model_index.json", "transformer/diffusion_pytorch_model.safetensors",
            "vae/config.json"} <= files.keys()
    assert {(f["repo"], f["state"]) for f in files.values()} == {(SKYREELS_REPO, "cached")}
    assert result["bytes"] == sum(f["bytes"] for f in files.values()) > 0
    code, out, err = cli("models", "pull", "skyreels-df-1.3b")
    first, *rows = out.splitlines()
    assert code == 0 and first.startswith(f"skyreels-df-1.3b: {SKYREELS_REPO} already in ")
    assert len(rows) == len(files) and all(r.split()[2] == "cached" for r in rows)
    index = next(r for r in rows if r.endswith("  model_index.json"))
    assert float(index.split()[0]) * 2**20 == pytest.approx(files["model_index.json"]["bytes"],
                                                            abs=0.06 * 2**20)
    assert "fetching" not in err  # nothing missing: the Hub is never asked


def test_pull_of_a_builtin_preset_says_there_is_nothing_to_pull(cli):
    code, _, err = cli("models", "pull", "tiny")
    assert code == 3 and "no weights to download" in err


def test_presets_list_and_show(cli, tmp_path):
    code, out, _ = cli("presets", "list", "--json")
    names = [p["name"] for p in json.loads(out)]
    assert code == 0 and {"tiny", "skyreels-df-1.3b"} <= set(names)
    code, out, _ = cli("presets", "show", "skyreels-df-1.3b", "--json")
    shown = json.loads(out)
    assert shown["hub"]["repo"] == SKYREELS_REPO and shown["resolution"] == "960x544"
    unverified = write(tmp_path / "community.yaml", TEST_PRESET % {
        "guidance": 1, "addnoise": 0, "repo": "someone/Wan-1.3B-GGUF", "memory": 2}).read_text()
    path = write(tmp_path / "community.yaml", unverified.replace("verified: true",
                                                                 "verified: false"))
    code, out, _ = cli("presets", "show", path)
    assert code == 0 and "could not be verified" in out


def test_recalled_keyframes_enter_as_clean_history_and_are_not_decoded(hub_cache, tmp_path):
    from longvid.backends.base import SegmentRequest

    _, preset, _ = load_job(write(tmp_path / "s.yaml", "shots: [{id: a, prompt: x, "
                                  "duration: 1s}]\n"), str(preset_file(tmp_path, addnoise=20)))
    backend = SkyReelsDFBackend()
    backend.load(preset)
    backend.prepare(["a harbour"], "", 1.0)
    ask = {"prompt": "a harbour", "negative_prompt": "", "num_latents": 3,
           "context": None, "width": 32, "height": 32, "seed": 5, "steps": 3,
           "guidance_scale": 1.0, "fps": 24}
    plain = backend.generate(SegmentRequest(**ask), lambda i, n: None)
    memory = torch.randn((1, 16, 2, 4, 4), generator=torch.Generator().manual_seed(1))
    recalled = backend.generate(SegmentRequest(**ask, memory=memory), lambda i, n: None)
    assert recalled.latents.shape == plain.latents.shape == (1, 16, 3, 4, 4)
    assert recalled.frames.shape == plain.frames.shape == (9, 32, 32, 3)
    assert not torch.allclose(recalled.latents, plain.latents), "memory reaches the transformer"


@pytest.mark.parametrize("stage", ["transformer", "vae"])
def test_gpu_out_of_memory_names_the_stage_and_a_lower_vram(hub_cache, tmp_path, stage):
    """A full GPU (injected: the stage raises CUDA's own OOM) is exit 4 with what to try."""
    from longvid.backends.base import SegmentRequest
    from longvid.budget import LoadPolicy
    from longvid.errors import ExitCode, ResourceError

    _, preset, _ = load_job(write(tmp_path / "s.yaml", "shots: [{id: a, prompt: x, "
                                  "duration: 1s}]\n"), str(preset_file(tmp_path)))
    backend = SkyReelsDFBackend()
    backend.load(preset, LoadPolicy(vram_gib=12.0, text_encoder="gpu", transformer="gpu",
                                    stages=()))
    backend.prepare(["a harbour"], "", 1.0)

    def full(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    if stage == "transformer":
        backend.transformer.forward = full
    else:
        backend.vae.decode = full
    request = SegmentRequest(prompt="a harbour", negative_prompt="", num_latents=2,
                             context=None, width=32, height=32, seed=5, steps=2,
                             guidance_scale=1.0, fps=24)
    with pytest.raises(ResourceError) as caught:
        backend.generate(request, lambda i, n: None)
    assert caught.value.code == ExitCode.MISSING_RESOURCE
    assert f"out of memory in the {stage} stage under the policy for 12.0 GiB" in str(caught.value)
    assert "--vram 10" in caught.value.hint and "resumes" in caught.value.hint


def half_second_story(tmp_path):
    """A storyboard of one half-second shot on the test preset, beside it."""
    return write(tmp_path / "story.yaml", f"""\
        version: 1
        preset: {preset_file(tmp_path).name}
        shots: [{{id: a, duration: 0.5s, prompt: a harbour}}]
        """)


@pytest.mark.parametrize(("stage", "component", "method"), [
    ("load", "AutoencoderKLWan", "from_pretrained"),
    ("text encoder", "UMT5EncoderModel", "forward"),
    ("transformer", "SkyReelsV2Transformer3DModel", "forward"),
    ("vae", "AutoencoderKLWan", "decode"),
])
def test_out_of_memory_in_every_stage_is_exit_4_naming_it(hub_cache, tmp_path, cli, monkeypatch,
                                                          stage, component, method):
    """CUDA's own OOM raised by the library component a stage runs (load and prompt
    encoding included) reaches the user as exit 4 with the stage, never exit 1."""
    import diffusers
    import transformers

    def full(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    library = transformers if component == "UMT5EncoderModel" else diffusers
    monkeypatch.setattr(getattr(library, component), method, full)
    code, _, err = cli("render", half_second_story(tmp_path))
    assert code == 4, err
    assert f"out of memory in the {stage} stage" in err and "--vram" in err


@pytest.mark.parametrize(("key", "value"), [("prediction_type", "epsilon"),
                                            ("use_flow_sigmas", False),
                                            ("_class_name", "DDIMScheduler")])
def test_a_snapshot_whose_scheduler_disagrees_is_exit_3_naming_the_setting(
        hub_cache, tmp_path, cli, key, value):
    config = next(hub_cache.glob("models--*/snapshots/*/scheduler/scheduler_config.json"))
    data = json.loads(config.read_text())
    replace_cached_file(config, json.dumps(data | {key: value}).encode())
    code, _, err = cli("render", half_second_story(tmp_path))
    assert code == 3, err
    assert f"the scheduler's {key} is {value!r}" in " ".join(err.split())


def record_inputs(transformer):
    """Every forward's (hidden_states, timestep), recorded by a hook on the diffusers
    module; returns the list and the hook's handle."""
    calls = []

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        calls.append((hidden.detach().clone(), kwargs["timestep"].detach().clone()))

    return calls, transformer.register_forward_pre_hook(hook, with_kwargs=True)


def test_addnoise_condition_matches_the_pipelines_timesteps_and_noise_scale(hub_cache,
                                                                           tmp_path):
    """The presets' conditioning noise (addnoise_condition 20): the history latents enter
    every forward at timestep 20 as 0.98 x history + 0.02 x N(0, 1), as in diffusers'
    SkyReelsV2DiffusionForcingPipeline (which draws that noise unseeded, so the noise is
    checked by its statistics)."""
    from diffusers import SkyReelsV2DiffusionForcingPipeline

    sb_path = write(tmp_path / "one.yaml", """\
        version: 1
        seed: 11
        shots: [{id: a, prompt: a lighthouse in fog, duration: 37f}]
        """)
    _, preset, plan = load_job(sb_path, str(preset_file(tmp_path, addnoise=20, memory=0)))
    backend = SkyReelsDFBackend()
    backend.load(preset)
    spy = Spy(backend)
    ours, handle = record_inputs(backend.transformer)
    run = RunDir(tmp_path / "run")
    run.open({"run_key": "k"})
    list(render_segments(plan, spy, run, crf=18))
    handle.remove()
    history = spy.requests[1].context  # window 2's clean history: window 1's tail
    assert history.shape == (1, 16, 2, 4, 4)

    pipe = SkyReelsV2DiffusionForcingPipeline.from_pretrained(backend.folder)
    theirs, handle = record_inputs(pipe.transformer)
    pipe(prompt="a lighthouse in fog", height=32, width=32, num_frames=37,
         num_inference_steps=3, guidance_scale=1.0,
         generator=torch.Generator().manual_seed(plan.segments[0].seed), output_type="latent",
         max_sequence_length=16, base_num_frames=17, overlap_history=5,
         addnoise_condition=20, fps=24)
    handle.remove()

    def window_2(calls):  # the 3 steps of the first window with history
        return [(h, t) for h, t in calls if t.shape[1] == 5 and t[0, 0] != t[0, -1]][:3]

    for (our_h, our_t), (their_h, their_t) in zip(window_2(ours), window_2(theirs),
                                                  strict=True):
        torch.testing.assert_close(our_t, their_t, rtol=0, atol=0)
        assert our_t[0, :2].tolist() == [20, 20]
        for hidden in (our_h, their_h):
            noise = (hidden[:, :, :2] - 0.98 * history) / 0.02  # the drawn N(0, 1)
            assert abs(noise.mean().item()) < 0.2 and 0.8 < noise.std().item() < 1.2


def test_recalled_keyframes_sit_before_the_context_as_clean_history(hub_cache, tmp_path):
    from longvid.backends.base import SegmentRequest

    _, preset, _ = load_job(write(tmp_path / "s.yaml", "shots: [{id: a, prompt: x, "
                                  "duration: 1s}]\n"), str(preset_file(tmp_path)))
    backend = SkyReelsDFBackend()
    backend.load(preset)
    backend.prepare(["a harbour"], "", 1.0)
    g = torch.Generator().manual_seed(1)
    memory, context = torch.randn((1, 16, 2, 4, 4), generator=g), torch.randn((1, 16, 2, 4, 4),
                                                                            generator=g)
    calls, handle = record_inputs(backend.transformer)
    backend.generate(SegmentRequest(
        prompt="a harbour", negative_prompt="", num_latents=3, context=context, width=32,
        height=32, seed=5, steps=3, guidance_scale=1.0, fps=24, memory=memory),
        lambda i, n: None)
    handle.remove()
    assert len(calls) == 3
    for hidden, timestep in calls:  # window = [memory | context | new]
        assert hidden.shape[2] == 2 + 2 + 3
        torch.testing.assert_close(hidden[:, :, :2], memory)
        torch.testing.assert_close(hidden[:, :, 2:4], context)
        assert timestep[0, :4].tolist() == [0, 0, 0, 0] and (timestep[0, 4:] > 0).all()


def test_segment_frames_are_the_pipelines_decode_of_the_window_less_the_context(hub_cache,
                                                                               tmp_path):
    """Each segment's frames are what diffusers' pipeline would decode from the window's
    latents ([context | new], de-normalized, postprocessed to uint8), less the context's
    leading frames: the last 4n frames, never the first."""
    from diffusers import SkyReelsV2DiffusionForcingPipeline

    sb_path = write(tmp_path / "one.yaml", """\
        version: 1
        seed: 4
        shots: [{id: a, prompt: a lighthouse in fog, duration: 37f}]
        """)
    _, preset, plan = load_job(sb_path, str(preset_file(tmp_path, memory=0)))
    backend = SkyReelsDFBackend()
    backend.load(preset)
    spy = Spy(backend)
    run = RunDir(tmp_path / "run")
    run.open({"run_key": "k"})
    list(render_segments(plan, spy, run, crf=18))
    pipe = SkyReelsV2DiffusionForcingPipeline.from_pretrained(backend.folder)
    for request, output in zip(spy.requests, spy.outputs, strict=True):
        assert_frames_close(output.frames, pipeline_frames(pipe, request.context,
                                                           output.latents))


def test_first_frame_image_matches_diffusers_skyreels_image_to_video(hub_cache, tmp_path):
    """A shot's image enters as the take's first latent, clean (timestep 0) and returned
    exactly: the window equals SkyReelsV2DiffusionForcingImageToVideoPipeline's."""
    import numpy as np
    from diffusers import SkyReelsV2DiffusionForcingImageToVideoPipeline
    from PIL import Image

    from longvid.backends.base import SegmentRequest, ShotImages

    backend = SkyReelsDFBackend()
    backend.load(load_preset(str(preset_file(tmp_path))))
    backend.prepare(["a lighthouse in fog"], "", 1.0)
    y, x = np.mgrid[0:32, 0:32]
    image = np.stack([x * 7, y * 7, 255 - x * 4], -1).astype(np.uint8)  # (32, 32, 3)
    first = backend.encode_frames(image[None])  # (1, 16, 1, 4, 4)

    def run(images):
        return backend.generate(SegmentRequest(
            prompt="a lighthouse in fog", negative_prompt="", num_latents=3, context=None,
            width=32, height=32, seed=4, steps=3, guidance_scale=1.0, fps=24,
            images=images), lambda i, n: None)

    plain, started = run(None), run(ShotImages(first_latent=first))
    assert started.latents.shape == (1, 16, 3, 4, 4) and started.frames.shape[0] == 9
    assert torch.equal(started.latents[:, :, :1], first.float())
    assert (started.latents[:, :, 1:] - plain.latents[:, :, 1:]).abs().max() > 1e-4

    pipe = SkyReelsV2DiffusionForcingImageToVideoPipeline.from_pretrained(backend.folder)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(image=Image.fromarray(image), prompt="a lighthouse in fog", height=32,
                  width=32, num_frames=9, num_inference_steps=3, guidance_scale=1.0,
                  generator=torch.Generator().manual_seed(4), output_type="latent",
                  max_sequence_length=16, addnoise_condition=0, fps=24).frames
    torch.testing.assert_close(started.latents, theirs, rtol=1e-5, atol=1e-5)


def test_lora_applies_and_weight_zero_is_the_models_own_output(hub_cache, tmp_path):
    from loratools import write_lora_for

    from longvid.backends.base import LoraWeight, SegmentRequest

    backend = SkyReelsDFBackend()
    backend.load(load_preset(str(preset_file(tmp_path))))
    backend.prepare(["a lighthouse in fog"], "", 1.0)
    path = str(write_lora_for(backend.transformer, tmp_path / "style.safetensors"))

    def run(weight):
        loras = None if weight is None else (LoraWeight("style", path, "style", weight),)
        return backend.generate(SegmentRequest(
            prompt="a lighthouse in fog", negative_prompt="", num_latents=3, context=None,
            width=32, height=32, seed=4, steps=3, guidance_scale=1.0, fps=24, loras=loras),
            lambda i, n: None).latents

    base = run(None)
    assert (run(1.0) - base).abs().max() > 1e-4
    assert torch.equal(run(0.0), base)


@pytest.mark.slow
def test_a_quiet_render_of_a_hub_preset_prints_nothing(hub_cache, tmp_path, monkeypatch):
    """No "Loading weights" bars from transformers or diffusers in a cluster job's log
    (huggingface_hub's download bars are left on, as a user has them)."""
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    done = run_longvid("render", half_second_story(tmp_path), "-q", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
