"""benchmarks/gpu_proof.py's pure parts, in this process: which presets it covers and how
it splits them into commands, and its GGUF Q8_0 writer against gguf-py's."""

from __future__ import annotations

import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_proof  # noqa: E402
from checkpoints import quantize_q8_0  # noqa: E402

HUB_PRESETS = {"skyreels-df-1.3b", "skyreels-df-1.3b-lowvram", "skyreels-df-1.3b-gguf-q8",
               "wan-vace-1.3b", "anyflow-far-1.3b", "longlive-1.3b", "self-forcing-1.3b",
               "memflow-1.3b", "mag-1.3b"}


def test_groups_hold_every_hub_preset_once_within_the_command_budget():
    names = [p.name for p in gpu_proof.hub_presets() if not gpu_proof.not_covered(p)]
    assert set(names) >= HUB_PRESETS  # the rest are named as not covered (test_benchmarks)
    packed = gpu_proof.groups(names)
    assert sorted(n for g in packed for n in g) == sorted(names)
    for group in packed:
        cost = sum(gpu_proof.ESTIMATE_S.get(n, gpu_proof.DEFAULT_ESTIMATE_S) for n in group)
        assert cost <= gpu_proof.GROUP_BUDGET_S < 300
    later = gpu_proof.groups([*names, "a-later-preset"])  # a preset added later gets a place
    assert "a-later-preset" in [n for g in later for n in g]


def test_q8_0_quantized_with_torch_is_byte_identical_to_gguf_py():
    import gguf
    import torch

    x = torch.randn(8, 96, generator=torch.Generator().manual_seed(0)) * 0.02
    x[0, :32] = 0  # an all-zero block: scale 0
    x[1, :32] = torch.linspace(-1.27, 1.27, 32)  # exact halves: rounding away from zero
    ours = quantize_q8_0(x)
    theirs = gguf.quants.quantize(x.numpy(), gguf.GGMLQuantizationType.Q8_0)
    assert ours.shape == theirs.shape == (8, 3 * 34) and (ours == theirs).all()


def test_the_proof_plans_the_figures_plan_and_doctor_show(tmp_path):
    """One figure per stage: the proof's two-window plan gives the policy `doctor` gives
    for the preset's full window (and `plan --vram` for a storyboard of one)."""
    from longvid.vram import plan_policy, preset_policy

    for preset in gpu_proof.hub_presets():
        if gpu_proof.not_covered(preset):
            continue
        plan = gpu_proof.proof_plan(preset, tmp_path)
        assert len(plan.segments) == 2 and plan.segments[1].context_latents > 0
        proof = plan_policy(preset, plan, gpu_proof.CAP_GIB)
        assert proof == preset_policy(preset, gpu_proof.CAP_GIB), preset.name
        assert proof is not None, preset.name
        assert proof.fits, preset.name


def test_every_hub_preset_renders_in_the_gpus_dtype_on_the_cpu(monkeypatch):
    """On a GPU the Wan models compute in bf16, with the modules diffusers keeps wide
    (`scale_shift_table`, norms, the time embedder) in fp32; the CPU tests otherwise run
    fp32 throughout, which hid the dtype bug that stopped four presets at their first
    block on the first GPU run. Here every Hub preset's two tiny windows run through the
    proof's own path (load, prompts, context, memory, sink) in bf16 on the CPU."""
    import torch

    from longvid.backends import wan_parts

    monkeypatch.setattr(wan_parts, "compute_dtype", lambda device: torch.bfloat16)
    for key in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "LONGVID_HOME"):  # measure() sets them
        monkeypatch.setenv(key, "")
    names = [p.name for p in gpu_proof.hub_presets() if not gpu_proof.not_covered(p)]
    assert set(names) >= HUB_PRESETS
    for name in names:
        result = gpu_proof.measure(name, tiny=True)
        assert len(result["window_s"]) == 2 and result["s_per_step"] > 0, name
        assert "torch.bfloat16" in result["transformer_storage"], name
