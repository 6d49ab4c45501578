"""Quality defaults of the Hub presets, as `plan` shows them: the model's own negative
prompt under guidance (a storyboard's wins), anti-drift off unless a storyboard asks."""

from __future__ import annotations

import json

import pytest
from conftest import write

from longvid.presets import available_presets, load_preset
from longvid.storyboard import load_storyboard

# Wan2.1's `sample_neg_prompt` (wan/configs/shared_config.py), SkyReels-V2's too
WAN_NEGATIVE = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，"
                "最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，"
                "画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，"
                "杂乱的背景，三条腿，背景人很多，倒着走")
CFG_HUB = ["skyreels-df-1.3b", "skyreels-df-1.3b-lowvram", "skyreels-df-1.3b-gguf-q8",
           "wan-vace-1.3b"]


def plan_json(cli, storyboard, preset):
    code, out, err = cli("plan", storyboard, "--preset", preset, "--vram", "12", "--json")
    assert code == 0, err
    return json.loads(out)


def test_every_hub_preset_under_guidance_ships_its_models_negative_prompt():
    for name in available_presets():
        preset = load_preset(name)
        if preset.hub is not None and preset.guidance_scale > 1:
            assert name in CFG_HUB
    for name in CFG_HUB:
        assert load_preset(name).negative_prompt == WAN_NEGATIVE


@pytest.mark.parametrize("preset", CFG_HUB)
def test_plan_shows_the_presets_negative_prompt_unless_the_storyboard_sets_one(cli, tmp_path,
                                                                               preset):
    unset = write(tmp_path / "unset.yaml", "shots: [{id: a, prompt: x, duration: 2s}]\n")
    planned = plan_json(cli, unset, preset)
    assert planned["negative_prompt"] == WAN_NEGATIVE
    assert planned["negative_prompt_source"] == "preset"
    for own in ("blurry", ""):  # an empty one is a choice too
        sb = write(tmp_path / "own.yaml", f"negative_prompt: {own!r}\n"
                                          "shots: [{id: a, prompt: x, duration: 2s}]\n")
        planned = plan_json(cli, sb, preset)
        assert planned["negative_prompt"] == own
        assert planned["negative_prompt_source"] == "storyboard"
    code, out, _ = cli("plan", unset, "--preset", preset)
    assert code == 0 and "negative prompt (from the preset): 色调艳丽" in " ".join(out.split())


@pytest.mark.parametrize(("preset", "default"), [
    ("skyreels-df-1.3b", False), ("wan-vace-1.3b", False), ("anyflow-far-1.3b", False),
    ("tiny", True),
])
def test_anti_drift_is_opt_in_for_hub_presets(cli, tmp_path, preset, default):
    unset = write(tmp_path / "unset.yaml", "shots: [{id: a, prompt: x, duration: 2s}]\n")
    assert plan_json(cli, unset, preset)["anti_drift"] is default
    for asked in (True, False):
        sb = write(tmp_path / "asked.yaml", f"anti_drift: {str(asked).lower()}\n"
                                            "shots: [{id: a, prompt: x, duration: 2s}]\n")
        assert plan_json(cli, sb, preset)["anti_drift"] is asked


def test_a_storyboard_keeps_its_hash_when_it_leaves_the_defaults_to_the_preset(tmp_path):
    shots = "shots: [{id: a, prompt: x, duration: 2s}]\n"
    unset = load_storyboard(write(tmp_path / "unset.yaml", shots))
    explicit = load_storyboard(write(tmp_path / "explicit.yaml",
                                     'negative_prompt: ""\nanti_drift: true\n' + shots))
    other = load_storyboard(write(tmp_path / "other.yaml", "anti_drift: false\n" + shots))
    assert unset.content_sha256 == explicit.content_sha256 != other.content_sha256
    assert (unset.negative_prompt, unset.anti_drift) == (None, None)
