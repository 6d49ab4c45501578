"""`causal-wan` on tiny checkpoints written in the upstream layouts, in a local Hub cache.

The Wan2.1 diffusers snapshot (text encoder, tokenizer, VAE, transformer config) and
the causal generators' pickle `.pt` files are written under the real repo ids, in
the layouts the official files use: LongLive's `generator` dict plus a PEFT LoRA
under `generator_lora`, Self-Forcing's `generator_ema`, keys `model.`-prefixed in
the original Wan naming. Everything loads offline through the real code path.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write
from hubfixture import offline_env, tiny_skyreels_components, write_hub_snapshot

from longvid.backends.base import SegmentRequest
from longvid.backends.causal_wan import CausalWanBackend
from longvid.presets import load_preset

WAN_REPO = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
LONGLIVE_REPO = "Efficient-Large-Model/LongLive-1.3B"
SELF_FORCING_REPO = "gdhe17/Self-Forcing"
# diffusers name -> original Wan name (the inverse of diffusers' Wan converter)
TO_ORIGINAL = [("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
               ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
               ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
               ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
               ("condition_embedder.time_proj", "time_projection.1"),
               ("attn1", "self_attn"), ("attn2", "cross_attn"), (".to_out.0.", ".o."),
               (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."),
               ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"), (".norm2.", ".norm3."),
               ("proj_out", "head.head")]
LORA_MODULES = ["self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q",
                "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2"]


def original_key(name: str) -> str:
    if name == "scale_shift_table":
        return "head.modulation"
    for ours, theirs in TO_ORIGINAL:
        name = name.replace(ours, theirs)
    return name.replace("scale_shift_table", "modulation")


def tiny_wan_transformer(seed: int):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
        out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=64).eval()


def install_wan(cache: Path) -> None:
    """The Wan2.1 diffusers snapshot: tiny UMT5, tokenizer, VAE and a transformer."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    parts = tiny_skyreels_components()
    pipe = WanPipeline(tokenizer=parts["tokenizer"], text_encoder=parts["text_encoder"],
                       transformer=tiny_wan_transformer(seed=1), vae=parts["vae"],
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0))
    with tempfile.TemporaryDirectory() as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        write_hub_snapshot(cache, WAN_REPO, Path(tmp))


def install(cache: Path) -> dict:
    """The Wan snapshot and both upstream checkpoints; returns what the tests compare."""
    install_wan(cache)
    longlive, self_forcing = tiny_wan_transformer(seed=2), tiny_wan_transformer(seed=3)
    torch.manual_seed(4)
    lora = {}
    for n in range(2):
        for module in LORA_MODULES:
            weight = longlive.state_dict()[original_to_ours(f"blocks.{n}.{module}.weight")]
            out_f, in_f = weight.shape
            lora[f"base_model.model.blocks.{n}.{module}.lora_A.weight"] = torch.randn(4, in_f)
            lora[f"base_model.model.blocks.{n}.{module}.lora_B.weight"] = torch.randn(out_f, 4)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "models").mkdir()
        torch.save({"generator": upstream(longlive), "step": 3000},
                   Path(tmp) / "models" / "longlive_base.pt")
        torch.save({"generator_lora": lora}, Path(tmp) / "models" / "lora.pt")
        write_hub_snapshot(cache, LONGLIVE_REPO, Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "checkpoints").mkdir()
        state = {k.replace("model.", "model._fsdp_wrapped_module.", 1): v
                 for k, v in upstream(self_forcing).items()}
        torch.save({"generator_ema": state}, Path(tmp) / "checkpoints" / "self_forcing_dmd.pt")
        write_hub_snapshot(cache, SELF_FORCING_REPO, Path(tmp))
    return {"longlive": longlive, "self_forcing": self_forcing, "lora": lora}


def upstream(model) -> dict:
    """The original layout: `model.`-prefixed Wan keys, fp32."""
    return {"model." + original_key(k): v.clone() for k, v in model.state_dict().items()}


def original_to_ours(original: str) -> str:
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    return next(iter(convert_wan_transformer_to_diffusers({original: 0})))


PRESET = """\
name: {name}
backend: causal-wan
fps: 16
resolution: 32x32
steps: 4
{quantization}
options:
  max_sequence_length: 16
  checkpoint_repo: {repo}
  checkpoint_file: {file}
  {lora}
  state_keys: [{keys}]
hub:
  repo: Wan-AI/Wan2.1-T2V-1.3B-Diffusers
  files: [model_index.json, tokenizer/*, text_encoder/*.json, text_encoder/*.safetensors*,
          transformer/config.json, vae/*.json, vae/*.safetensors*]
"""


def preset(tmp_path: Path, which: str, quantization: str = "") -> Path:
    fields = {"longlive": {"name": "ll", "repo": LONGLIVE_REPO, "file": "models/longlive_base.pt",
                               "lora": "lora_file: models/lora.pt", "keys": "generator"},
              "self_forcing": {"name": "sf", "repo": SELF_FORCING_REPO,
                                   "file": "checkpoints/self_forcing_dmd.pt",
                                   "lora": "lora_file: null",
                                   "keys": "generator_ema"}}[which]
    return write(tmp_path / f"{which}.yaml", PRESET.format(quantization=quantization, **fields))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf") / "hub"
    return cache, install(cache)


@pytest.fixture
def offline(installed, tmp_path, monkeypatch):
    cache, models = installed
    offline_env(monkeypatch, cache, tmp_path / "home")
    return models


def loaded(tmp_path: Path, which: str, quantization: str = "") -> CausalWanBackend:
    backend = CausalWanBackend()
    backend.load(load_preset(str(preset(tmp_path, which, quantization))))
    return backend


def test_self_forcing_s_ema_generator_converts_completely(offline, tmp_path):
    backend = loaded(tmp_path, "self_forcing")
    want = offline["self_forcing"].state_dict()
    got = backend.transformer.state_dict()
    assert set(got) == set(want)
    for k, v in want.items():  # stored in bf16
        assert torch.equal(got[k], v.to(torch.bfloat16).float()), k
    files = sorted(p.name for p in (backend.converted / "transformer").iterdir())
    assert files == ["config.json", "diffusion_pytorch_model.safetensors",
                     "longvid-conversion.json"]


def test_longlive_s_lora_is_merged_as_running_with_the_adapter(offline, tmp_path):
    backend = loaded(tmp_path, "longlive")
    base, lora = offline["longlive"].state_dict(), offline["lora"]
    got = backend.transformer.state_dict()
    x = torch.randn(5, base["blocks.0.attn1.to_q.weight"].shape[1])
    for n in range(2):
        for module in LORA_MODULES:
            ours = original_to_ours(f"blocks.{n}.{module}.weight")
            a = lora[f"base_model.model.blocks.{n}.{module}.lora_A.weight"]
            b = lora[f"base_model.model.blocks.{n}.{module}.lora_B.weight"]
            if a.shape[1] != x.shape[1]:
                assert torch.equal(got[ours], (base[ours] + b @ a).to(torch.bfloat16).float())
                continue  # the FFN's second layer takes ffn_dim inputs
            assert torch.equal(got[ours], (base[ours] + b @ a).to(torch.bfloat16).float())
            with_adapter = x @ base[ours].T + (x @ a.T) @ b.T  # PEFT: base + B(A x), alpha/r 1
            merged = x @ got[ours].T
            scale = with_adapter.abs().max()
            assert (merged - with_adapter).abs().max() < 0.01 * scale, ours  # bf16 storage
            assert (merged - x @ base[ours].T).abs().max() > 0.1 * scale  # the LoRA counts
    untouched = "blocks.0.norm2.weight"
    assert torch.equal(got[untouched], base[untouched].to(torch.bfloat16).float())


def test_the_conversion_happens_once_and_later_loads_read_safetensors(offline, tmp_path):
    first = loaded(tmp_path, "self_forcing").converted
    stamp = (first / "transformer" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    second = loaded(tmp_path, "self_forcing")
    assert second.converted == first
    assert (first / "transformer" / "diffusion_pytorch_model.safetensors"
            ).stat().st_mtime_ns == stamp


def test_a_segment_streams_from_the_converted_generator(offline, tmp_path):
    backend = loaded(tmp_path, "longlive")
    backend.prepare(["a harbour"], "", 1.0)
    req = SegmentRequest(prompt="a harbour", negative_prompt="", num_latents=4,
                         context=None, width=32, height=32, seed=1, steps=4,
                         guidance_scale=1.0, fps=16)
    out = backend.generate(req, lambda i, n: None)
    assert out.latents.shape == (1, 16, 4, 4, 4) and out.frames.shape == (13, 32, 32, 3)
    assert out.frames.dtype == np.uint8 and out.frames.std() > 0


def test_a_take_from_an_image_streams_after_its_clean_latent(offline, tmp_path):
    """The same engine path as tiny-causal: the encoded image is the first latent, kept."""
    from test_images import smooth_image

    from longvid.backends.base import ShotImages

    backend = loaded(tmp_path, "self_forcing")
    assert backend.caps.images is not None and backend.caps.images.first_frame
    backend.prepare(["a harbour"], "", 1.0)
    first = backend.encode_frames(smooth_image(32, 32)[None])  # (1, 16, 1, 4, 4)
    req = SegmentRequest(prompt="a harbour", negative_prompt="", num_latents=4,
                         context=None, width=32, height=32, seed=1, steps=4,
                         guidance_scale=1.0, fps=16)
    plain = backend.generate(req, lambda i, n: None)
    started = backend.generate(replace(req, images=ShotImages(first_latent=first)),
                               lambda i, n: None)
    assert started.latents.shape == (1, 16, 4, 4, 4) and started.frames.shape == (13, 32, 32, 3)
    assert torch.equal(started.latents[:, :, :1], first.float().cpu())
    assert (started.latents[:, :, 1:] - plain.latents[:, :, 1:]).abs().max() > 1e-3


def test_fp8_storage_applies_to_the_converted_generator(offline, tmp_path):
    backend = loaded(tmp_path, "longlive", "quantization: {transformer: fp8}")
    to_q = backend.transformer.blocks[0].attn1.to_q.weight
    assert to_q.dtype == torch.float8_e4m3fn
    backend.prepare(["a harbour"], "", 1.0)
    req = SegmentRequest(prompt="a harbour", negative_prompt="", num_latents=3, context=None,
                         width=32, height=32, seed=1, steps=4, guidance_scale=1.0, fps=16)
    out = backend.generate(req, lambda i, n: None)
    assert torch.isfinite(out.latents).all() and out.frames.shape == (9, 32, 32, 3)


class RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path, monkeypatch,
                                                                  cli):
    cache = tmp_path / "hf"
    install_evil(cache, tmp_path / "pwned")
    offline_env(monkeypatch, cache, tmp_path / "home")
    sb = write(tmp_path / "s.yaml", "version: 1\nshots: [{id: a, prompt: x, duration: 1s}]\n")
    code, _, err = cli("render", sb, "--preset", preset(tmp_path, "self_forcing"))
    assert code == 3, err
    assert "refused" in err and "Traceback" not in err
    assert not (tmp_path / "pwned").exists()


def install_evil(cache: Path, marker: Path) -> None:
    install_wan(cache)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "checkpoints").mkdir()
        torch.save({"generator_ema": RunsCode(marker)},
                   Path(tmp) / "checkpoints" / "self_forcing_dmd.pt")
        write_hub_snapshot(cache, SELF_FORCING_REPO, Path(tmp))


def test_offline_and_not_cached_is_exit_4_with_the_pull_command(tmp_path, monkeypatch, cli):
    sb = write(tmp_path / "s.yaml", "version: 1\nshots: [{id: a, prompt: x, duration: 1s}]\n")
    cache = tmp_path / "hf"
    offline_env(monkeypatch, cache, tmp_path / "home")
    for missing in ("the Wan snapshot", "the generator"):
        if missing == "the generator":
            install_wan(cache)
        code, _, err = cli("render", sb, "--preset", preset(tmp_path, "longlive"))
        assert code == 4, (missing, err)
        assert "longvid models pull" in err and "Traceback" not in err
    assert f"hf download {LONGLIVE_REPO} models/longlive_base.pt" in err
