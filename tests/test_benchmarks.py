"""The benchmark scripts run (at tiny size on the CPU) and report what they claim to."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow  # each test runs a benchmark script in its own process

# preset -> (backend, text encoder storage, the transformer's quantized parameter kind)
TWELVE_GB = {
    "skyreels-df-1.3b": ("skyreels-df", "bf16", None),
    "skyreels-df-1.3b-lowvram": ("skyreels-df", "nf4", "torch.float8_e4m3fn"),
    "skyreels-df-1.3b-gguf-q8": ("skyreels-df", "nf4", "GGUF Q8_0"),
    "wan-vace-1.3b": ("wan-vace", "bf16", None),
    "anyflow-far-1.3b": ("anyflow-far", "bf16", None),
}


def test_vram_12gb_covers_every_12_gb_preset_at_tiny_size(tmp_path):
    out = tmp_path / "vram.json"
    # one thread: the CPU may be shared, and spinning OpenMP workers distort tiny timings
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "vram_12gb.py"), "--tiny",
                           "--preset", "all", "--json", str(out)], capture_output=True,
                          text=True, timeout=600, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    runs = {r["preset"]: r for r in json.loads(out.read_text())["runs"]}
    assert runs.keys() == TWELVE_GB.keys()
    for name, (backend, text_encoder, packed) in TWELVE_GB.items():
        run = runs[name]
        assert run["backend"] == backend and run["tiny"] and run["device"] == "cpu"
        assert run["quantization"]["text_encoder"] == text_encoder
        assert set(run["peak_reserved_gib"]) == {"text encoder", "transformer", "vae"}
        assert run["segments"] == 2 and len(run["segment_s"]) == 2
        assert all(s > 0 for s in run["segment_s"]) and run["s_per_step"] > 0
        storage = run["transformer_storage"]
        if packed:  # the quantized file or casting was really loaded, for most weights
            assert storage[packed] >= sum(storage.values()) / 3, storage
        else:
            assert set(storage) == {"torch.float32"}, storage
        if backend == "anyflow-far":  # a step runs against the pipeline's KV cache
            assert run["bare_transformer_s_per_step"] is None
        else:
            assert run["bare_transformer_s_per_step"] > 0
        assert f"| {name} | {text_encoder} / " in done.stdout  # its row in the table
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
