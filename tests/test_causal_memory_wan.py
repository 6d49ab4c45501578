"""`causal-memflow` and `causal-mag` on tiny checkpoints in the official layouts, offline.

The Wan2.1 snapshot comes from tests/test_causal_wan.py. MemFlow's repo holds `base.pt`
(LongLive's layout: a `generator` dict of `model.`-prefixed original Wan keys) and
`lora.pt` (PEFT pairs under `generator_lora`); MAG's holds two `from_pretrained` folders
(`generator/`, `memory_model/`) of safetensors in the original Wan key layout. Both load
through the pickle-free conversion under their real repo ids.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write
from hubfixture import offline_env, write_hub_snapshot
from safetensors.torch import save_file
from test_causal_wan import (
    LORA_MODULES,
    WAN_REPO,
    install_wan,
    original_key,
    original_to_ours,
    tiny_wan_transformer,
    upstream,
)

from longvid.backends.base import SegmentRequest
from longvid.backends.causal_memory_wan import CausalMagBackend, CausalMemFlowBackend
from longvid.presets import load_preset

MEMFLOW_REPO = "KlingTeam/MemFlow"
MAG_REPO = "xilluill/MAG"


def install(cache: Path) -> dict:
    install_wan(cache)
    memflow, generator, memory = (tiny_wan_transformer(seed=s) for s in (5, 6, 7))
    torch.manual_seed(8)
    lora = {}
    for n in range(2):
        for module in LORA_MODULES:
            weight = memflow.state_dict()[original_to_ours(f"blocks.{n}.{module}.weight")]
            out_f, in_f = weight.shape
            lora[f"base_model.model.blocks.{n}.{module}.lora_A.weight"] = torch.randn(4, in_f)
            lora[f"base_model.model.blocks.{n}.{module}.lora_B.weight"] = torch.randn(out_f, 4)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"generator": upstream(memflow)}, Path(tmp) / "base.pt")
        torch.save({"generator_lora": lora}, Path(tmp) / "lora.pt")
        write_hub_snapshot(cache, MEMFLOW_REPO, Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        for folder, model in (("generator", generator), ("memory_model", memory)):
            (Path(tmp) / folder).mkdir()
            save_file({original_key(k): v.contiguous() for k, v in model.state_dict().items()},
                      str(Path(tmp) / folder / "diffusion_pytorch_model.safetensors"))
            (Path(tmp) / folder / "config.json").write_text(json.dumps(
                {"_class_name": "CausalWanModel", "dim": 24, "num_layers": 2}))
        write_hub_snapshot(cache, MAG_REPO, Path(tmp))
    return {"memflow": memflow, "lora": lora, "generator": generator, "memory": memory}


PRESET = """\
name: {name}
backend: {backend}
fps: 16
resolution: 32x32
steps: 4
options:
  max_sequence_length: 16
{options}
hub:
  repo: Wan-AI/Wan2.1-T2V-1.3B-Diffusers
  files: [model_index.json, tokenizer/*, text_encoder/*.json, text_encoder/*.safetensors*,
          transformer/config.json, vae/*.json, vae/*.safetensors*]
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf") / "hub"
    return cache, install(cache)


@pytest.fixture
def offline(installed, tmp_path, monkeypatch):
    cache, models = installed
    offline_env(monkeypatch, cache, tmp_path / "home")
    return models


def loaded(tmp_path: Path, which: str):
    backend_cls = {"memflow": CausalMemFlowBackend, "mag": CausalMagBackend}[which]
    options = "  slots: 4" if which == "mag" else ""  # the defaults name the real files
    preset = write(tmp_path / f"{which}.yaml", PRESET.format(
        name=which, backend=backend_cls.name, options=options))
    backend = backend_cls()
    backend.load(load_preset(str(preset)))
    return backend


def bf16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).float()


def test_memflow_s_base_and_lora_convert_completely(offline, tmp_path):
    backend = loaded(tmp_path, "memflow")
    base, lora = offline["memflow"].state_dict(), offline["lora"]
    got = backend.transformer.state_dict()
    assert set(got) == set(base)
    merged = set()
    for n in range(2):
        for module in LORA_MODULES:
            ours = original_to_ours(f"blocks.{n}.{module}.weight")
            a = lora[f"base_model.model.blocks.{n}.{module}.lora_A.weight"]
            b = lora[f"base_model.model.blocks.{n}.{module}.lora_B.weight"]
            assert torch.equal(got[ours], bf16(base[ours] + b @ a)), ours
            merged.add(ours)
    for k in set(base) - merged:
        assert torch.equal(got[k], bf16(base[k])), k
    assert backend.versions()["generator"] == f"{MEMFLOW_REPO}@main/base.pt+lora.pt"


def test_mag_s_two_transformers_convert_completely(offline, tmp_path):
    backend = loaded(tmp_path, "mag")
    for ours, theirs in ((backend.transformer, "generator"), (backend.memory, "memory")):
        want, got = offline[theirs].state_dict(), ours.state_dict()
        assert set(got) == set(want)
        for k, v in want.items():
            assert torch.equal(got[k], bf16(v)), (theirs, k)
    assert backend.converted != backend.memory_converted
    assert backend.engine.memory is backend.memory
    versions = backend.versions()
    assert versions["memory_model"].startswith(f"{MAG_REPO}@main/memory_model/")


@pytest.mark.parametrize("which", ["memflow", "mag"])
def test_a_segment_streams_with_memory_from_the_converted_weights(offline, tmp_path, which):
    backend = loaded(tmp_path, which)
    backend.prepare(["a harbour"], "", 1.0)
    base = {"prompt": "a harbour", "negative_prompt": "", "num_latents": 4, "context": None,
            "width": 32, "height": 32, "seed": 1, "steps": 4, "guidance_scale": 1.0,
            "fps": 16}
    out = backend.generate(SegmentRequest(**base), lambda i, n: None)
    assert out.latents.shape == (1, 16, 4, 4, 4) and out.frames.shape == (13, 32, 32, 3)
    assert out.frames.dtype == np.uint8 and out.frames.std() > 0
    torch.manual_seed(0)
    later = backend.generate(SegmentRequest(**(base | {
        "context": torch.randn(1, 16, 12, 4, 4), "sink": torch.randn(1, 16, 3, 4, 4),
        "memory": torch.randn(1, 16, 2, 4, 4)})), lambda i, n: None)
    assert torch.isfinite(later.latents).all() and later.frames.shape == (16, 32, 32, 3)
    if which == "mag":  # the empty prompt was encoded for the memory model
        assert backend.engine.empty_cond is not None
        assert backend.engine.cache.count[0] == {"sink": 2, "pin": 2, "slot": 2}
    else:
        assert [e.label[0] for e in backend.engine.cache.bank[0]][:2] == ["pin", "pin"]


def test_the_presets_name_the_real_repos_and_mag_s_licence_warns(tmp_path, cli):
    code, out, _ = cli("presets", "list", "--json")
    rows = {p["name"]: p for p in json.loads(out)}
    opts = {name: {o["name"]: o["value"] for o in rows[name]["options"]}
            for name in ("memflow-1.3b", "mag-1.3b")}
    assert opts["memflow-1.3b"]["checkpoint_repo"] == MEMFLOW_REPO
    assert (opts["memflow-1.3b"]["checkpoint_file"], opts["memflow-1.3b"]["lora_file"]) == (
        "base.pt", "lora.pt")
    assert opts["mag-1.3b"]["checkpoint_repo"] == MAG_REPO
    assert rows["mag-1.3b"]["licence"] == "CC BY-NC-SA 4.0" and rows["mag-1.3b"]["non_commercial"]
    assert rows["memflow-1.3b"]["licence"] == "Apache-2.0"
    assert all(rows[n]["hub"]["repo"] == WAN_REPO for n in ("memflow-1.3b", "mag-1.3b"))
    code, out, _ = cli("presets", "show", "mag-1.3b")
    assert code == 0 and "non-commercial" in out
    sb = write(tmp_path / "s.yaml", "version: 1\nshots: [{id: a, prompt: x, duration: 20s}]\n")
    code, out, err = cli("plan", sb, "--preset", "mag-1.3b", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert any("non-commercial" in w for w in plan["warnings"])
    assert plan["context_latents"] == 63 and plan["memory_latents"] == 2
    code, out, _ = cli("plan", sb, "--preset", "memflow-1.3b", "--json")
    assert not any("non-commercial" in w for w in json.loads(out)["warnings"])
