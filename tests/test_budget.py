"""The VRAM dial: where components live for a budget, and the estimated peak per stage."""

from __future__ import annotations

import json
import os

import pytest
from conftest import HARBOUR

from longvid.budget import policy_for
from longvid.presets import load_preset

MEM = load_preset("skyreels-df-1.3b").memory
WINDOW_TOKENS = 25 * (544 // 16) * (960 // 16)  # 97 frames at 960x544: 51,000 tokens


def test_stage_peaks_count_what_is_resident_on_the_gpu_in_each_stage():
    """The transformer and VAE are loaded before the text encoder runs and stay; the
    text encoder is gone before denoising."""
    policy = policy_for(24, MEM, WINDOW_TOKENS)
    peaks = {s.name: s.peak_gib for s in policy.stages}
    act = WINDOW_TOKENS * MEM.act_bytes_per_token / 2**30
    assert act == pytest.approx(6.52, abs=0.01)  # 134 KiB per token, measured on a GPU
    dit, vae = MEM.transformer_gib, MEM.vae_gib
    assert peaks["text encoder"] == pytest.approx(10.6 + 0.5 + dit + vae + 1.0)
    assert peaks["transformer"] == pytest.approx(dit + act + vae + 1.0)
    assert peaks["vae"] == pytest.approx(vae + 2.0 + dit + 1.0)


def test_a_streamed_text_encoder_holds_its_embedding_and_three_blocks():
    policy = policy_for(12, MEM, WINDOW_TOKENS)
    te = policy.stages[0]
    assert (te.placement, te.weights_gib, te.storage) == ("group offload", 10.6, "bf16")
    blocks = 3 * (10.6 - 1.96) / 24
    assert te.peak_gib == pytest.approx(1.96 + blocks + 0.5 + MEM.transformer_gib
                                        + MEM.vae_gib + 1.0)


@pytest.mark.parametrize(("vram", "text_encoder", "transformer"), [
    (24, "gpu", "gpu"), (12, "group offload", "gpu"), (9, "group offload", "group offload"),
])
def test_less_vram_moves_components_off_the_gpu(vram, text_encoder, transformer):
    policy = policy_for(vram, MEM, WINDOW_TOKENS)
    assert (policy.text_encoder, policy.transformer) == (text_encoder, transformer)
    assert policy.fits and policy.peak_gib <= vram


@pytest.mark.parametrize("vram", [1, 2, 4, 6, 8, 12, 16, 24, 48])
def test_no_preset_runs_its_text_encoder_on_the_cpu_at_any_budget(vram):
    from longvid.presets import available_presets

    for name in available_presets():
        preset = load_preset(name)
        if preset.memory is None:
            continue
        policy = policy_for(vram, preset.memory, WINDOW_TOKENS, preset.quantization)
        assert {s.placement for s in policy.stages} <= {"gpu", "group offload"}, name
        if preset.quantization.text_encoder != "bf16":  # bitsandbytes: resident only
            assert policy.text_encoder == "gpu"


def test_a_budget_below_every_placement_does_not_fit():
    assert not policy_for(2, MEM, WINDOW_TOKENS).fits


def test_plan_shows_the_policy_without_torch(cli):
    code, out, _ = cli("plan", HARBOUR, "--preset", "skyreels-df-1.3b", "--vram", "12",
                       "--json")
    policy = json.loads(out)["policy"]
    assert code == 0 and policy["vram_gib"] == 12
    assert policy["text_encoder"] == "group offload"
    assert [s["name"] for s in policy["stages"]] == ["text encoder", "transformer", "vae"]
    code, out, _ = cli("plan", HARBOUR, "--preset", "skyreels-df-1.3b")
    assert "GPU policy for 12 GiB (fits" in out and "x 2 (guidance)" in out
    assert "host RAM: at least 10.6 GiB for the streamed weights" in out  # UMT5 in bf16
    assert json.loads(cli("plan", HARBOUR, "--json")[1])["policy"] is None  # tiny: CPU


def test_render_with_a_gpu_budget_below_the_preset_exits_4(cli, tmp_path):
    from conftest import write

    sb = write(tmp_path / "s.yaml", "version: 1\nshots: [{id: a, prompt: x, duration: 1s}]\n")
    code, _, err = cli("render", sb, "--preset", "skyreels-df-1.3b", "--vram", "3")
    assert code == 4 and "needs at least 8.0 GiB of GPU memory" in err


@pytest.mark.parametrize("user", [None, "backend:cudaMallocAsync"])
def test_cli_sets_the_allocator_config_the_plan_assumes_unless_the_user_did(user):
    import subprocess
    import sys

    from longvid.budget import ALLOCATOR_CONF

    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_CUDA_ALLOC_CONF"}
    if user:
        env["PYTORCH_CUDA_ALLOC_CONF"] = user
    code = ("import os, sys; sys.argv = ['longvid', '--version']\n"
            "from longvid.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(os.environ['PYTORCH_CUDA_ALLOC_CONF'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True)
    assert done.stdout.splitlines()[-1] == (user or ALLOCATOR_CONF)


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
    # the window's tokens: its latents, and none recalled (the untrained memory is off)
    assert planned["memory_latents"] == 0
    assert planned["max_tokens"] == planned["segments"][0]["num_latents"] * \
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


def test_the_weights_a_placement_keeps_in_host_ram_are_its_streamed_components():
    from longvid.budget import text_encoder_weights_gib, transformer_weights_gib
    from longvid.vram import preset_policy

    full = load_preset("skyreels-df-1.3b")
    at_12 = preset_policy(full, 11.4)
    assert at_12.text_encoder == "group offload" and at_12.transformer == "gpu"
    assert at_12.host_weights_gib == pytest.approx(
        text_encoder_weights_gib(full.memory, full.quantization))  # UMT5 in bf16 on the host
    lowvram = load_preset("skyreels-df-1.3b-lowvram")
    assert preset_policy(lowvram, 11.4).host_weights_gib == 0  # nf4 UMT5 stays on the GPU
    mag = load_preset("mag-1.3b")
    streamed = preset_policy(mag, 12)
    assert streamed.second.placement == "group offload"  # MAG's memory model
    assert streamed.second in streamed.streamed
    assert streamed.host_weights_gib == pytest.approx(
        sum(s.weights_gib for s in streamed.streamed))
    assert streamed.host_weights_gib >= transformer_weights_gib(mag.memory, mag.quantization)


def test_a_placement_that_needs_more_host_ram_than_is_available_is_warned_of():
    from longvid.preflight import host_ram_warnings
    from longvid.vram import preset_policy

    policy = preset_policy(load_preset("skyreels-df-1.3b"), 11.4)
    need = policy.host_weights_gib
    (warning,) = host_ram_warnings(policy, need - 1)
    assert f"keeps {need:.1f} GiB of weights in host RAM (text encoder streamed" in warning
    assert f"{need - 1:.1f} GiB is available" in warning and "-lowvram" in warning
    assert host_ram_warnings(policy, need + 1) == []
    assert host_ram_warnings(policy, None) == []  # not Linux: nothing to compare with
    lowvram = preset_policy(load_preset("skyreels-df-1.3b-lowvram"), 11.4)
    assert host_ram_warnings(lowvram, 0.5) == []
    at_8 = preset_policy(load_preset("skyreels-df-1.3b-lowvram"), 8)  # its DiT streams
    assert at_8.streamed and at_8.text_encoder == "gpu"
    (warning,) = host_ram_warnings(at_8, 0.5)
    assert "(transformer streamed" in warning and "more VRAM (--vram)" in warning
    assert "-lowvram" not in warning
