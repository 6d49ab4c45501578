"""The benchmark scripts run (at tiny size on the CPU) and report what they claim to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow  # each test runs a benchmark script in its own process

# preset -> (backend, text encoder storage, the transformer's quantized parameter kind)
HUB_PRESETS = {
    "skyreels-df-1.3b": ("skyreels-df", "bf16", None),
    "skyreels-df-1.3b-lowvram": ("skyreels-df", "nf4", "torch.float8_e4m3fn"),
    "skyreels-df-1.3b-gguf-q8": ("skyreels-df", "nf4", "GGUF Q8_0"),
    "wan-vace-1.3b": ("wan-vace", "bf16", None),
    "anyflow-far-1.3b": ("anyflow-far", "bf16", None),
    "longlive-1.3b": ("causal-wan", "bf16", None),
    "self-forcing-1.3b": ("causal-wan", "bf16", None),
    "memflow-1.3b": ("causal-memflow", "bf16", None),
    "mag-1.3b": ("causal-mag", "bf16", "torch.float8_e4m3fn"),  # both transformers in fp8
}
# their own 4 steps; a step attends to a KV cache
FEW_STEP = ("anyflow-far", "causal-wan", "causal-memflow", "causal-mag")
BENCHMARKS = REPO / "benchmarks"


def proof_module():
    sys.path.insert(0, str(BENCHMARKS))
    import gpu_proof

    return gpu_proof


def test_gpu_proof_tiny_runs_every_hub_preset_in_its_own_process(tmp_path):
    out = tmp_path / "proof.json"
    # one thread: the CPU may be shared, and spinning OpenMP workers distort tiny timings
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_proof.py"), "--tiny",
                           "--json", str(out)], capture_output=True, text=True, timeout=600,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.perf_counter() - t0 < 180
    runs = {r["preset"]: r for r in json.loads(out.read_text())["runs"]}
    proof = proof_module()
    assert runs.keys() == {p.name for p in proof.hub_presets()}  # every one named
    for preset in proof.hub_presets():  # a preset it cannot build says so, loudly
        if gap := proof.not_covered(preset):
            assert runs[preset.name]["error"] == gap and preset.backend in gap
            assert f"| {preset.name} | NOT COVERED" in done.stdout
    for name, (backend, text_encoder, packed) in HUB_PRESETS.items():
        run = runs[name]
        assert f"| {name} | {text_encoder} / " in done.stdout  # its row in the table
        assert run["backend"] == backend and run["tiny"] and run["device"] == "cpu"
        assert run["quantization"]["text_encoder"] == text_encoder
        assert set(run["stages"]) == {"load", "text encoder", "transformer", "vae"}
        # two windows, the second of context + the planned memory: the plan's largest
        assert len(run["window_s"]) == 2 and all(s > 0 for s in run["window_s"])
        # no memory: untrained injection is opt-in (off) and causal-wan has none (its sink
        # rides in the cache instead); MemFlow and MAG pin up to 2 recalled latents
        trained = backend in ("causal-memflow", "causal-mag")
        assert run["memory_latents"] == (2 if trained else 0)
        # the largest forward: a window of 5 latents, or a streamed block of 3 (4 tokens each)
        assert run["window_tokens"] == (3 if backend in FEW_STEP[1:] else 5) * 4
        assert run["steps_run"] == (4 if backend in FEW_STEP else 3)
        assert run["s_per_step"] > 0 and run["window_s_at_preset_steps"] > 0
        storage = run["transformer_storage"]
        if packed:  # the quantized file or casting was really loaded, for most weights
            assert storage[packed] >= sum(storage.values()) / 3, storage
        else:
            assert set(storage) == {"torch.float32"}, storage
        if backend in FEW_STEP:  # a step runs against a KV cache
            assert run["bare_s_per_step"] is None
        else:
            assert run["bare_s_per_step"] > 0 and run["overhead_ratio"] > 0
        assert not list(Path(run["work_dir"]).glob(f"longvid-proof-{name}-*"))  # cleaned up
    assert runs["skyreels-df-1.3b-gguf-q8"]["quantization"]["transformer"] == "gguf Q8_0"


def test_scaling_runs_and_reports_per_segment_cost_and_peak_rss(tmp_path):
    out = tmp_path / "scaling.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scaling.py"),
                           "--segments", "2", "--json", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = json.loads(out.read_text())["runs"]
    assert run["segments"] >= 2 and run["full_segments"] >= 1
    assert run["first_full_s"] > 0 and run["peak_rss_mib"] > 50
    assert run["keyframes_on_disk"] == 2 * run["segments"]


def test_blas_threads_reports_each_case_with_the_thread_setting_it_ran_under():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "blas_threads.py")],
                          capture_output=True, text=True, timeout=300,
                          env=os.environ | {"OPENBLAS_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["OPENBLAS_NUM_THREADS"] == "1"
    assert set(report["median_ms"]) == {"alone", "after_eviction_product",
                                        "after_colour_product"}
    assert all(ms > 0 for ms in report["median_ms"].values())


def test_text_encoder_cpu_reports_a_full_width_block_in_fp32_and_bf16(tmp_path):
    out = tmp_path / "te.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "text_encoder_cpu.py"),
                           "--tokens", "8", "--json", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["tokens"] == 8 and report["cpu_capability"]
    assert set(report["block_s"]) == set(report["prompt_s_estimate"]) == {"float32", "bfloat16"}
    for dtype, seconds in report["block_s"].items():  # 24 blocks, 512 / 8 times the tokens
        estimate = pytest.approx(seconds * 24 * 64, rel=0.02, abs=1.5)
        assert report["prompt_s_estimate"][dtype] == estimate


def test_commit_cost_fits_the_encode_and_writes_a_real_size_state():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "commit_cost.py"), "--frames",
                           "2", "6", "--repeats", "1"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["size"] == "832x480" and set(data["encode_median_s"]) == {"2", "6"}
    # the fit is the line through the timings (its sign is the machine's noise at one
    # repeat, so the test checks the arithmetic, not the speed)
    fit = data["encode_fit"]
    for frames, median_s in data["encode_median_s"].items():
        line_s = fit["per_segment_s"] + int(frames) * fit["per_frame_ms"] / 1000
        assert line_s == pytest.approx(median_s, abs=0.02), frames
    # 9 + 3 + 38 latents of 16 x 60 x 104 in fp32: 19 MiB, as docs/presets.md says
    assert data["state_mib"] == pytest.approx(50 * 16 * 60 * 104 * 4 / 2**20, abs=0.1)


def test_weights_check_finds_a_wan_sized_snapshot_whole():
    """The snapshot it writes (real headers, sparse weights, hashed small files) passes the
    check, so the time it reports is the check's, not an error's."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / "weights_check.py"), "--runs", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "check of a Wan-sized snapshot (10 files, 14.7 GB of weights): median" in done.stdout
