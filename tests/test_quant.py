"""Quantized checkpoints: bitsandbytes nf4/int8 text encoder, fp8 and GGUF transformers.

Tiny SkyReels-V2 checkpoints at sizes where the quantizers really pack weights sit in
a local Hub cache under the real repo ids (the official diffusers snapshot, and a
GGUF Q8_0 file of its transformer under the community repo id), and the shipped
presets, shrunk to 32x32 and 3 steps, load them offline through the path a real
download takes. Checked: what got loaded really is quantized, renders stay close to
the unquantized one (and differ from it), the GGUF source is covered by the Hub
commands, and the VRAM plan uses the stored sizes.
"""

from __future__ import annotations

import json

import bitsandbytes  # noqa: E402, F401 - the `test` extra installs both: never skip these
import gguf  # noqa: E402, F401
import pytest
import torch
import yaml
from conftest import HARBOUR, REPO, Spy, write
from hubfixture import (
    GGUF_FILE,
    GGUF_REPO,
    SKYREELS_REPO,
    install_tiny_gguf,
    install_tiny_skyreels,
    offline_env,
    storage_of,
)

from longvid.backends.skyreels_df import SkyReelsDFBackend
from longvid.budget import Quantization, policy_for
from longvid.generate import render_segments
from longvid.presets import load_preset
from longvid.render import load_job
from longvid.rundir import RunDir

STORY = """\
version: 1
seed: 5
negative_prompt: blurry
shots:
  - id: a
    duration: 37f
    prompts: [{at: 0, text: a harbour at dawn}, {at: 20f, text: a storm}]
  - {id: b, duration: 13f, prompt: a pier, transition: cut}
"""
MEM = load_preset("skyreels-df-1.3b").memory
WINDOW_TOKENS = 25 * (544 // 16) * (960 // 16)


def install_both(cache):
    install_tiny_skyreels(cache, block_aligned=True)
    install_tiny_gguf(cache)
    return cache


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """Read-only for the tests that use it; a test that deletes makes its own."""
    return install_both(tmp_path_factory.mktemp("hf") / "hub")


@pytest.fixture
def hub_cache(shared_cache, tmp_path, monkeypatch):
    offline_env(monkeypatch, shared_cache, tmp_path / "home")
    return shared_cache


def shrunk(tmp_path, name, **changes):
    """The shipped preset `name` at test size: same hub sources and quantization."""
    data = yaml.safe_load((REPO / "presets" / f"{name}.yaml").read_text())
    data.update(resolution="32x32", steps=3, min_vram_gib=0, **changes)
    data["options"] |= {"max_sequence_length": 16, "max_latents": 5, "context_latents": 2}
    return write(tmp_path / f"{name}.yaml", yaml.safe_dump(data))


def render_latents(tmp_path, preset_path, tag):
    """Every window's latents, rendered through longvid's loop; and the loaded backend."""
    _, preset, plan = load_job(write(tmp_path / "story.yaml", STORY), str(preset_path))
    backend = SkyReelsDFBackend()
    backend.load(preset)
    spy = Spy(backend)
    run = RunDir(tmp_path / f"run-{tag}")
    run.open({"run_key": tag})
    list(render_segments(plan, spy, run, crf=18))
    assert len(spy.outputs) >= 3  # two shots, a prompt switch: several windows
    return torch.cat([o.latents for o in spy.outputs], dim=2), backend


def relative_error(ours, reference):
    return ((ours - reference).norm() / reference.norm()).item()


@pytest.fixture(scope="module")
def reference(shared_cache, tmp_path_factory):
    """The unquantized preset's render of STORY, on the same tiny weights."""
    tmp = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as env:
        offline_env(env, shared_cache, tmp / "home")
        latents, _ = render_latents(tmp, shrunk(tmp, "skyreels-df-1.3b"), "bf16")
    return latents


@pytest.mark.parametrize(("preset", "text_encoder", "transformer", "max_error"), [
    ("skyreels-df-1.3b-lowvram", "Params4bit", "torch.float8_e4m3fn", 0.1),
    ("skyreels-df-1.3b-gguf-q8", "Params4bit", "GGUF Q8_0", 0.06),
])
def test_quantized_preset_loads_quantized_weights_and_renders_close(
        reference, hub_cache, tmp_path, preset, text_encoder, transformer, max_error):
    latents, backend = render_latents(tmp_path, shrunk(tmp_path, preset), preset)
    tr = storage_of(backend.transformer)
    assert tr[transformer] >= 10, tr  # every block's attention and FFN matrices
    encoder = backend._text_pipeline().text_encoder
    te = storage_of(encoder)
    assert te[text_encoder] == 2 * (4 + 2), te  # q k v o, wi_0 wi_1 in both layers
    wo = encoder.encoder.block[0].layer[1].DenseReluDense.wo.weight
    assert type(wo).__name__ == "Parameter" and wo.dtype == backend.dtype  # never quantized
    assert latents.shape == reference.shape
    error = relative_error(latents, reference)
    assert 1e-4 < error < max_error, error  # quantized for real, and still the same video


def test_int8_text_encoder_is_bitsandbytes_int8(hub_cache, tmp_path):
    path = shrunk(tmp_path, "skyreels-df-1.3b", quantization={"text_encoder": "int8"})
    backend = SkyReelsDFBackend()
    backend.load(load_preset(str(path)))
    encoder = backend._text_pipeline().text_encoder
    assert storage_of(encoder)["Int8Params"] == 12
    assert storage_of(backend.transformer) == {"torch.float32": len(
        list(backend.transformer.parameters()))}


def test_gguf_with_original_keys_loads_the_same_weights(hub_cache, tmp_path, monkeypatch):
    """Community GGUFs are converted from the original SkyReels-V2 checkpoint: its key
    names, the fps MLP included, are mapped to diffusers' on load."""
    path = shrunk(tmp_path, "skyreels-df-1.3b-gguf-q8")
    diffusers_keyed = SkyReelsDFBackend()
    diffusers_keyed.load(load_preset(str(path)))
    other = tmp_path / "other" / "hub"
    install_tiny_skyreels(other, block_aligned=True)
    install_tiny_gguf(other, original_keys=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(other))
    original = SkyReelsDFBackend()
    original.load(load_preset(str(path)))
    ours = dict(diffusers_keyed.transformer.named_parameters())
    theirs = dict(original.transformer.named_parameters())
    assert ours.keys() == theirs.keys()
    for name, p in ours.items():
        assert torch.equal(p.data, theirs[name].data), name
    assert type(theirs["fps_projection.net.2.weight"]).__name__ == "GGUFParameter"


def test_every_quantized_preset_renders_end_to_end_with_the_cli(hub_cache, tmp_path, cli):
    for name in ("skyreels-df-1.3b-lowvram", "skyreels-df-1.3b-gguf-q8"):
        preset = shrunk(tmp_path, name)
        sb = write(tmp_path / f"{name}-story.yaml", STORY.replace(
            "seed: 5", f"seed: 5\npreset: {preset.name}"))
        code, out, err = cli("render", sb, "--json")
        assert code == 0, err
        result = json.loads(out)
        assert result["frames"] == 50 and result["segments"] >= 3
        versions = json.loads(sb.with_suffix(".json").read_text())["versions"]
        assert versions["weights"].startswith(SKYREELS_REPO + "@")
        if "gguf" in name:
            assert versions["transformer_gguf"].startswith(GGUF_REPO + "@")
            assert versions["transformer_gguf"].endswith("/" + GGUF_FILE)


def test_gguf_file_not_cached_while_offline_is_exit_4_naming_its_repo(tmp_path, cli,
                                                                        monkeypatch):
    cache = tmp_path / "hf" / "hub"
    install_tiny_skyreels(cache, block_aligned=True)  # the snapshot, but not the GGUF
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    preset = shrunk(tmp_path, "skyreels-df-1.3b-gguf-q8")
    sb = write(tmp_path / "s.yaml", "version: 1\nshots: [{id: a, prompt: x, duration: 1s}]\n")
    code, _, err = cli("render", sb, "--preset", preset)
    assert code == 4 and f"({GGUF_REPO}@main) are not in the Hub cache" in err
    assert f"longvid models pull {preset}" in err


def test_a_gguf_of_another_type_than_declared_is_refused(hub_cache, tmp_path, cli,
                                                         monkeypatch):
    cache = tmp_path / "q4"
    install_tiny_skyreels(cache, block_aligned=True)
    install_tiny_gguf(cache, qtype="Q4_0")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    preset = shrunk(tmp_path, "skyreels-df-1.3b-gguf-q8")
    sb = write(tmp_path / "s.yaml", "version: 1\nshots: [{id: a, prompt: x, duration: 1s}]\n")
    code, _, err = cli("render", sb, "--preset", preset)
    assert code == 3 and "holds Q4_0 tensors, but the preset says quant_type Q8_0" in err


def test_models_commands_cover_the_gguf_source(tmp_path, cli, monkeypatch):
    hub_cache = install_both(tmp_path / "hf" / "hub")  # this test deletes from it
    offline_env(monkeypatch, hub_cache, tmp_path / "home")
    name = "skyreels-df-1.3b-gguf-q8"
    rows = {r["preset"]: r for r in json.loads(cli("models", "list", "--json")[1])}
    sources = rows[name]["sources"]
    assert [(s["role"], s["repo"], s["cached"], s["verified"]) for s in sources] == [
        ("weights", SKYREELS_REPO, True, True), ("transformer gguf", GGUF_REPO, True, False)]
    assert rows[name]["verified"] is False and rows[name]["bytes"] == sum(
        s["bytes"] for s in sources)
    code, out, _ = cli("models", "list")
    assert code == 0 and f"+ transformer gguf: {GGUF_REPO}@main  cached  (repo id unverified)" \
        in out
    code, out, _ = cli("models", "pull", name, "--json")
    pulled = json.loads(out)
    assert code == 0 and pulled["already_cached"] and len(pulled["sources"]) == 2
    code, out, _ = cli("models", "pull", name, "--dry-run", "--json")
    files = {(f["repo"], f["file"]) for f in json.loads(out)["files"]}
    assert (GGUF_REPO, GGUF_FILE) in files and (SKYREELS_REPO, "transformer/config.json") in files
    assert not any(f.startswith("transformer/diffusion_pytorch_model") for _, f in files)
    code, out, _ = cli("models", "pull", name, "--dry-run")
    assert f"{GGUF_REPO}: {GGUF_FILE}" in out and f"+ {GGUF_REPO}@main" in out
    code, out, _ = cli("models", "rm", name)
    assert code == 0 and f"removed {SKYREELS_REPO}" in out and f"removed {GGUF_REPO}" in out
    assert not list(hub_cache.glob("models--*"))
    code, _, err = cli("models", "pull", name)
    assert code == 4 and f"longvid models pull {name}" in err


def test_presets_show_and_list_flag_the_unverified_gguf_repo(cli):
    code, out, _ = cli("presets", "show", "skyreels-df-1.3b-gguf-q8")
    assert code == 0 and f"transformer gguf repo id '{GGUF_REPO}' could not be verified" in out
    code, out, _ = cli("presets", "show", "skyreels-df-1.3b-lowvram")
    assert code == 0 and "could not be verified" not in out
    listing = cli("presets", "list")[1].splitlines()
    assert [line.endswith("[unverified repo id]") for line in listing
            if line.startswith("skyreels")] == [False, True, False]


GGUF_ON = {"quantization": {"transformer": "gguf"}}


@pytest.mark.parametrize(("change", "message"), [
    (GGUF_ON, "go together"),
    ({"transformer_gguf": {"repo": GGUF_REPO, "file": "x.gguf", "quant_type": "Q8_0"}},
     "go together"),
    ({"quantization": {"transformer": "nf4"}}, "Input should be 'bf16', 'fp8' or 'gguf'"),
    (GGUF_ON | {"transformer_gguf": {"repo": GGUF_REPO, "file": "model.bin",
                                     "quant_type": "Q8_0"}}, "should match pattern"),
    (GGUF_ON | {"transformer_gguf": {"repo": GGUF_REPO, "file": "x.gguf",
                                     "quant_type": "Q4_K_X"}}, "Input should be"),
])
def test_preset_quantization_errors_are_exit_3(tmp_path, cli, change, message):
    data = yaml.safe_load((REPO / "presets" / "skyreels-df-1.3b.yaml").read_text()) | change
    preset = write(tmp_path / "bad.yaml", yaml.safe_dump(data))
    code, _, err = cli("presets", "show", preset)
    assert code == 3 and message in err and "docs/presets.md" in err


def test_gguf_needs_the_transformer_config_from_the_snapshot(tmp_path, cli):
    data = yaml.safe_load((REPO / "presets" / "skyreels-df-1.3b-gguf-q8.yaml").read_text())
    data["hub"]["files"].remove("transformer/*.json")
    code, _, err = cli("presets", "show", write(tmp_path / "bad.yaml", yaml.safe_dump(data)))
    assert code == 3 and "add `transformer/*.json` to `hub.files`" in err


@pytest.mark.parametrize(("quant", "text_encoder_gib", "transformer_gib"), [
    (Quantization(), 10.6, 2.67),
    (Quantization("nf4", "fp8"), 5.74, 1.335),  # diffusers-facts §10/§12: ~5.7, 1.34
    (Quantization("int8", "gguf", "Q8_0"), 7.22, 1.418),  # ~7.2; 8.5 bits per weight
    (Quantization("bf16", "gguf", "Q4_0"), 10.6, 0.751),
])
def test_plan_uses_the_stored_sizes(quant, text_encoder_gib, transformer_gib):
    stages = {s.name: s for s in policy_for(24, MEM, WINDOW_TOKENS, quant).stages}
    assert stages["text encoder"].weights_gib == pytest.approx(text_encoder_gib, abs=0.01)
    assert stages["transformer"].weights_gib == pytest.approx(transformer_gib, abs=0.001)
    act = WINDOW_TOKENS * MEM.act_bytes_per_token / 2**30
    assert stages["transformer"].peak_gib == pytest.approx(transformer_gib + act + MEM.vae_gib
                                                           + 1, abs=0.001)
    assert stages["text encoder"].storage == quant.text_encoder


def test_at_8_gib_every_text_encoder_runs_on_the_gpu_beside_what_is_resident(cli):
    """bf16 streams through the GPU; nf4 (bitsandbytes, not streamable) stays resident
    beside the VAE. At 960x544 the transformer's activations (measured: 6.5 GiB) leave
    no room for any of them resident, so the transformer streams too."""
    story = HARBOUR
    placements = {}
    for name in ("skyreels-df-1.3b", "skyreels-df-1.3b-lowvram", "skyreels-df-1.3b-gguf-q8"):
        code, out, _ = cli("plan", story, "--preset", name, "--vram", "8", "--json")
        policy = json.loads(out)["policy"]
        assert code == 0 and policy["stages"][0]["peak_gib"] <= 8
        placements[name] = [(s["storage"], s["placement"]) for s in policy["stages"]]
    assert placements == {
        "skyreels-df-1.3b": [("bf16", "group offload"), ("bf16", "group offload"),
                             ("fp32", "gpu")],
        "skyreels-df-1.3b-lowvram": [("nf4", "gpu"), ("fp8", "group offload"),
                                     ("fp32", "gpu")],
        "skyreels-df-1.3b-gguf-q8": [("nf4", "gpu"), ("gguf Q8_0", "group offload"),
                                     ("fp32", "gpu")],
    }
    code, out, _ = cli("plan", story, "--preset", "skyreels-df-1.3b-lowvram", "--vram", "8")
    assert "text encoder (nf4, 5.7 GiB) on gpu" in " ".join(out.split())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_text_encoder_streamed_through_the_gpu_gives_the_resident_ones_embeddings(
        hub_cache, tmp_path):
    from diffusers import SkyReelsV2DiffusionForcingPipeline

    from longvid.backends import wan_parts

    backend = SkyReelsDFBackend()
    backend.load(load_preset(str(shrunk(tmp_path, "skyreels-df-1.3b"))))
    cuda, texts = torch.device("cuda"), ["a harbour at dusk", "a pier"]
    embeds = {}
    for streamed in (False, True):
        pipe = wan_parts.text_pipeline(SkyReelsV2DiffusionForcingPipeline, backend.folder,
                                       Quantization(), torch.bfloat16, cuda, streamed=streamed)
        embeds[streamed] = pipe.encode_prompt(prompt=texts, do_classifier_free_guidance=False,
                                              max_sequence_length=16, device=cuda)[0]
        assert str(pipe.text_encoder.device) == ("cpu" if streamed else "cuda:0")
    torch.testing.assert_close(embeds[True], embeds[False])


@pytest.mark.parametrize("name", ["skyreels-df-1.3b", "skyreels-df-1.3b-lowvram",
                                  "skyreels-df-1.3b-gguf-q8"])
def test_prompts_encode_without_autograd_and_no_loaded_weight_asks_for_a_gradient(
        hub_cache, tmp_path, name):
    """The first GPU run ran out of memory in every preset's text-encoder stage: the prompt
    cache called `encode_prompt` outside the pipeline's no_grad `__call__`, and autograd
    kept UMT5's activations (~8 GiB at 4 x 512 tokens). Prompts encode with autograd off,
    and every weight the load path loads (bf16, nf4, fp8, GGUF) is frozen."""
    backend = SkyReelsDFBackend()
    backend.load(load_preset(str(shrunk(tmp_path, name))))
    seen: list[tuple[bool, bool]] = []
    real = backend._text_pipeline

    def watched() -> object:  # the real pipeline, with a hook that records the mode
        pipe = real()
        pipe.text_encoder.register_forward_hook(lambda m, i, o: seen.append(
            (torch.is_grad_enabled(), any(p.requires_grad for p in m.parameters()))))
        return pipe

    backend._text_pipeline = watched  # type: ignore[method-assign]
    backend.prepare([f"a pier seen in {tmp_path.name}", "the same pier at night"], "", 1.0)
    assert seen == [(False, False)]  # one pass for both prompts, no graph, frozen
    for module in (backend.transformer, backend.vae.model):
        assert not any(p.requires_grad for p in module.parameters())


@pytest.mark.parametrize("name", ["skyreels-df-1.3b-lowvram", "skyreels-df-1.3b-gguf-q8"])
def test_lora_on_a_quantized_transformer(hub_cache, tmp_path, name):
    """fp8 storage and GGUF Q8_0 take a LoRA too (its adapters stay float32), and weight 0
    is still the quantized model's own output, bit for bit."""
    from diffusers import SkyReelsV2Transformer3DModel
    from loratools import write_lora_for

    from longvid.backends.base import LoraWeight, SegmentRequest

    backend = SkyReelsDFBackend()
    backend.load(load_preset(str(shrunk(tmp_path, name))))
    backend.prepare(["a pier"], "", 1.0)
    twin = SkyReelsV2Transformer3DModel.from_pretrained(backend.folder, subfolder="transformer")
    path = str(write_lora_for(twin, tmp_path / "style.safetensors"))

    def run(weight):
        loras = None if weight is None else (LoraWeight("style", path, "style", weight),)
        return backend.generate(SegmentRequest(
            prompt="a pier", negative_prompt="", num_latents=3, context=None, width=32,
            height=32, seed=4, steps=3, guidance_scale=1.0, fps=24, loras=loras),
            lambda i, n: None).latents

    base = run(None)
    assert (run(1.0) - base).abs().max() > 1e-3
    assert torch.equal(run(0.0), base)
