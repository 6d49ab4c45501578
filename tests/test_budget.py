"""The VRAM dial: where components live for a budget, and the estimated peak per stage."""

from __future__ import annotations

import json

import pytest
from conftest import HARBOUR

from longvid.budget import policy_for
from longvid.presets import load_preset

MEM = load_preset("skyreels-df-1.3b").memory
WINDOW_TOKENS = 25 * (544 // 16) * (960 // 16)  # 97 frames at 960x544: 51,000 tokens


def test_stage_peaks_follow_the_planning_formulas():
    policy = policy_for(24, MEM, WINDOW_TOKENS)
    peaks = {s.name: s.peak_gib for s in policy.stages}
    act = WINDOW_TOKENS * MEM.act_bytes_per_token / 2**30
    assert act == pytest.approx(2.38, abs=0.01)  # ~49 KB per token
    assert peaks["transformer"] == pytest.approx(MEM.transformer_gib + act + 1.0)
    assert peaks["text encoder"] == pytest.approx(10.6 + 0.5 + 1.0)
    assert peaks["vae"] == pytest.approx(0.47 + 2.0 + 1.0)


@pytest.mark.parametrize(("vram", "text_encoder", "transformer"), [
    (24, "gpu", "gpu"), (12, "cpu", "gpu"), (8, "cpu", "gpu"), (5, "cpu", "group offload"),
])
def test_less_vram_moves_components_off_the_gpu(vram, text_encoder, transformer):
    policy = policy_for(vram, MEM, WINDOW_TOKENS)
    assert (policy.text_encoder, policy.transformer) == (text_encoder, transformer)
    assert policy.fits and policy.peak_gib <= vram


def test_a_budget_below_every_placement_does_not_fit():
    assert not policy_for(2, MEM, WINDOW_TOKENS).fits


def test_plan_shows_the_policy_without_torch(cli):
    code, out, _ = cli("plan", HARBOUR, "--preset", "skyreels-df-1.3b", "--vram", "12",
                       "--json")
    policy = json.loads(out)["policy"]
    assert code == 0 and policy["vram_gib"] == 12 and policy["text_encoder"] == "cpu"
    assert [s["name"] for s in policy["stages"]] == ["text encoder", "transformer", "vae"]
    code, out, _ = cli("plan", HARBOUR, "--preset", "skyreels-df-1.3b")
    assert "GPU policy for 12 GiB (fits" in out and "x 2 (guidance)" in out
    assert json.loads(cli("plan", HARBOUR, "--json")[1])["policy"] is None  # tiny: CPU


def test_render_with_a_gpu_budget_below_the_preset_exits_4(cli, tmp_path):
    from conftest import write

    sb = write(tmp_path / "s.yaml", "version: 1\nshots: [{id: a, prompt: x, duration: 1s}]\n")
    code, _, err = cli("render", sb, "--preset", "skyreels-df-1.3b", "--vram", "3")
    assert code == 4 and "needs at least 8.0 GiB of GPU memory" in err


@pytest.mark.parametrize(("preset", "window_frames"), [
    ("skyreels-df-1.3b", 97), ("skyreels-df-1.3b-lowvram", 97), ("wan-vace-1.3b", 81),
    ("anyflow-far-1.3b", 81),
])
def test_doctor_and_plan_agree_on_a_full_window(cli, tmp_path, preset, window_frames):
    from conftest import write

    sb = write(tmp_path / "window.yaml", f"version: 1\npreset: {preset}\n"
               f"shots: [{{id: a, prompt: x, duration: {window_frames}f}}]\n")
    code, out, err = cli("plan", sb, "--vram", "12", "--json")
    assert code == 0, err
    planned = json.loads(out)
    assert len(planned["segments"]) == 1  # exactly one window
    code, out, err = cli("doctor", "--vram", "12", "--json")
    assert code == 0, err
    doctor = json.loads(out)["presets"][preset]["policy"]
    assert doctor == planned["policy"]
    # the window's tokens include the recalled latents the backend takes
    assert planned["max_tokens"] > planned["segments"][0]["num_latents"] * \
        planned["width"] * planned["height"] // 256


def test_out_of_vram_names_the_commands_that_show_its_figure(cli, tmp_path):
    from conftest import write

    sb = write(tmp_path / "s.yaml", "version: 1\nshots: [{id: a, prompt: x, duration: 97f}]\n")
    code, _, err = cli("render", sb, "--preset", "skyreels-df-1.3b", "--vram", "5")
    assert code == 4, err
    policy = json.loads(cli("plan", sb, "--preset", "skyreels-df-1.3b", "--vram", "5",
                            "--json")[1])["policy"]
    min_vram = load_preset("skyreels-df-1.3b").min_vram_gib
    peak = max(s["peak_gib"] for s in policy["stages"])
    assert f"needs at least {max(min_vram, peak):.1f} GiB" in err
    assert f"longvid plan {sb} --vram 5" in " ".join(err.split())
    assert "longvid doctor --vram 5" in " ".join(err.split())
