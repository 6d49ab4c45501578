"""LoRAs: a tiny LoRA written for the tiny Wan, applied through diffusers' LoRA loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import write
from loratools import write_tiny_lora

from longvid.backends.base import LoraWeight, SegmentRequest
from longvid.errors import InputError
from longvid.presets import load_preset
from longvid.render import load_job


@pytest.fixture(scope="module")
def tiny_own():
    """A tiny backend of its own: adapters loaded here stay out of the shared one."""
    from longvid.backends.tiny import TinyWanBackend

    backend = TinyWanBackend()
    backend.load(load_preset("tiny"))
    backend.prepare(["a red harbour"], "", 1.0)
    return backend


def generate(backend, loras):
    return backend.generate(SegmentRequest(
        prompt="a red harbour", negative_prompt="", num_latents=3, context=None, width=32,
        height=32, seed=4, steps=3, guidance_scale=1.0, fps=16, loras=loras), lambda i, n: None)


def test_lora_changes_the_output_and_weight_zero_restores_it_bit_for_bit(tiny_own, tmp_path):
    path = str(write_tiny_lora(tmp_path / "style.safetensors"))
    style = lambda w: (LoraWeight("style", path, "style-key", w),)  # noqa: E731
    base = generate(tiny_own, None)
    half, full = generate(tiny_own, style(0.5)), generate(tiny_own, style(1.0))
    assert (full.latents - base.latents).abs().max() > 1e-2
    assert (half.latents - base.latents).abs().max() < (full.latents - base.latents).abs().max()
    for off in (style(0.0), ()):  # weight 0, or the LoRA removed: the model's own output
        out = generate(tiny_own, off)
        assert torch.equal(out.latents, base.latents)
        assert np.array_equal(out.frames, base.frames)
    assert torch.equal(generate(tiny_own, style(1.0)).latents, full.latents)  # not reloaded


@pytest.mark.parametrize("broken", [{"in_features": 16}, {"module": "no_such_layer"}])
def test_incompatible_lora_names_the_file(tiny_own, tmp_path, broken):
    path = str(write_tiny_lora(tmp_path / "other-model.safetensors", **broken))
    with pytest.raises(InputError, match=r"LoRA 'other' \(.*other-model.safetensors\) does not "
                                         "fit this model"):
        generate(tiny_own, (LoraWeight("other", path, f"bad-{broken}", 1.0),))
    assert torch.equal(generate(tiny_own, ()).latents, generate(tiny_own, None).latents)


STORYBOARD = """\
version: 1
preset: tiny
resolution: 32x32
anti_drift: false
loras:
  - {path: style.safetensors, weight: %(weight)s}
shots:
  - {id: a, prompt: a red harbour, duration: 1s}
  - {id: b, prompt: a blue sky, duration: 1s, transition: cut, lora_weights: {style: 0}}
"""


def test_plan_carries_loras_with_their_hash_and_per_shot_weights(tmp_path):
    write_tiny_lora(tmp_path / "style.safetensors")
    sb = write(tmp_path / "s.yaml", STORYBOARD % {"weight": 0.8})
    _, _, plan = load_job(sb, None)
    (lora,) = plan.loras
    assert lora.name == "style" and lora.weight == 0.8 and len(lora.key) == 64
    assert [s.lora_weights for s in plan.segments] == [(0.8,), (0.0,)]
    write_tiny_lora(tmp_path / "style.safetensors", seed=1)  # another file, same path
    assert load_job(sb, None)[2].loras[0].key != lora.key


@pytest.mark.slow
def test_render_with_a_lora_and_a_shot_that_switches_it_off(cli, tmp_path):
    """Shot a renders with the LoRA, shot b (a cut, weight 0) exactly as without it."""
    write_tiny_lora(tmp_path / "style.safetensors")
    plain = write(tmp_path / "plain.yaml", (STORYBOARD % {"weight": 0.8}).replace(
        "loras:\n  - {path: style.safetensors, weight: 0.8}\n", "").replace(
        ", lora_weights: {style: 0}", ""))
    styled = write(tmp_path / "styled.yaml", STORYBOARD % {"weight": 0.8})
    for sb in (plain, styled):
        code, _, err = cli("render", sb, "-o", tmp_path / f"{sb.stem}.mp4")
        assert code == 0, err

    def state(name, index):
        from safetensors.torch import load_file

        return load_file(str(tmp_path / f"{name}.run" / "segments" /
                             f"seg_{index:04d}.state.safetensors"))["context"]

    assert not torch.equal(state("plain", 0), state("styled", 0))
    assert torch.equal(state("plain", 1), state("styled", 1))


@pytest.mark.slow
def test_incompatible_lora_in_a_render_is_exit_3(cli, tmp_path):
    write_tiny_lora(tmp_path / "style.safetensors", in_features=16)
    sb = write(tmp_path / "s.yaml", STORYBOARD % {"weight": 1})
    code, _, err = cli("render", sb, "-o", tmp_path / "s.mp4")
    assert code == 3
    assert "style.safetensors) does not fit this model" in err


def test_preset_loras_are_checked_and_part_of_its_identity(tmp_path):
    write_tiny_lora(tmp_path / "style.safetensors")
    preset_text = "name: tiny-styled\nbackend: tiny\nfps: 16\nresolution: 32x32\nsteps: 3\n"
    plain = load_preset(str(write(tmp_path / "plain.yaml", preset_text)))
    styled = load_preset(str(write(tmp_path / "styled.yaml", preset_text +
                                   "loras:\n  - {path: style.safetensors, weight: 0.5}\n")))
    assert plain.loras == () and styled.loras[0].weight == 0.5
    assert styled.sha256 != plain.sha256
    broken = write(tmp_path / "broken.yaml", preset_text + "loras:\n  - {path: gone.safetensors}\n")
    with pytest.raises(InputError, match="LoRA file not found") as exc:
        load_preset(str(broken))
    assert exc.value.path == str(broken) and exc.value.line == 7


def test_hub_lora_comes_from_the_hub_cache_and_offline_is_exit_4(cli, tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from hubcache import write_hub_snapshot
    from hubfixture import offline_env

    cache = tmp_path / "hf" / "hub"
    offline_env(monkeypatch, cache, tmp_path / "home")
    sb = write(tmp_path / "s.yaml", STORYBOARD.replace(
        "{path: style.safetensors, weight: %(weight)s}",
        "{repo: someone/wan-loras, file: style.safetensors, name: style}"))
    code, out, _ = cli("render", sb, "-o", tmp_path / "s.mp4", "--json")
    assert code == 4
    error = json.loads(out.splitlines()[-1])["error"]
    assert "someone/wan-loras@main:style.safetensors" in error["message"]
    assert "HF_HUB_OFFLINE" in error["message"]

    folder = tmp_path / "lora-repo"
    write_tiny_lora(folder / "style.safetensors")
    write_hub_snapshot(cache, "someone/wan-loras", folder)
    code, _, err = cli("render", sb, "-o", tmp_path / "s.mp4")
    assert code == 0, err


def test_plan_warns_where_the_backend_takes_no_loras(cli, tmp_path):
    write_tiny_lora(tmp_path / "style.safetensors")
    sb = write(tmp_path / "s.yaml", (STORYBOARD % {"weight": 1}).replace("resolution: 32x32\n",
                                                                       ""))
    code, out, _ = cli("plan", sb, "--preset", "anyflow-far-1.3b", "--json")
    assert code == 0
    plan = json.loads(out)
    assert "takes no LoRAs (`loras`): ignored for style" in " | ".join(plan["warnings"])
    assert plan["loras"] == [] and all(s["lora_weights"] == [] for s in plan["segments"])


def test_presets_show_lists_a_presets_loras_as_plain_values(cli, tmp_path):
    write_tiny_lora(tmp_path / "style.safetensors")
    preset = write(tmp_path / "styled.yaml", "name: styled\nbackend: tiny\nfps: 16\n"
                   "resolution: 32x32\nsteps: 3\nloras:\n  - {path: style.safetensors}\n")
    code, out, _ = cli("presets", "show", str(preset), "--json")
    assert code == 0
    (lora,) = json.loads(out)["loras"]
    assert lora["name"] == "style" and lora["weight"] == 1.0 and len(lora["key"]) == 64
    code, out, _ = cli("presets", "show", str(preset))
    assert "loras: name=style, weight=1" in " ".join(out.split()) and "LoraRef(" not in out
