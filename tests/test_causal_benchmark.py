"""benchmarks/causal_blocks.py runs at tiny size and reports what it claims to."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow  # runs a benchmark script in its own process


def test_the_block_benchmark_reports_block_times_and_rss(tmp_path):
    out = tmp_path / "blocks.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "causal_blocks.py"),
                           "--blocks", "25", "--kv-dtype", "float8_e4m3fn", "--json",
                           str(out), "--reference", "model-kv", "--reference-blocks", "20"],
                          capture_output=True,
                          text=True, timeout=300, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["blocks"] == 25 and result["device"] == "cpu" and not result["real"]
    assert result["kv_dtype"] == "float8_e4m3fn"
    assert result["median_s_blocks_10_19"] > 0 and result["bare_5_forwards_s"] > 0
    assert set(result["rss_mib"]) == {"10", "25"}
    drift = result["reference"]
    assert drift["kind"] == "model-kv" and drift["blocks"] == 20
    errors = drift["relative_mean_error"]
    assert set(errors) == {"1", "10", "20"}
    assert errors["1"] == 0.0  # the first block reads no cache: fp8 cannot show yet
    assert 0 < errors["10"] < 0.01 and 0 < drift["worst_relative_mean_error"] < 0.01


def test_a_reference_of_the_same_precision_streams_the_same_blocks(tmp_path):
    """The reference draws the same noise as the stream: on the CPU in fp32, an fp32
    reference is the stream itself, so any error would be the benchmark's own."""
    out = tmp_path / "blocks.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "causal_blocks.py"),
                           "--blocks", "12", "--reference", "fp32", "--json", str(out)],
                          capture_output=True, text=True, timeout=300,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    drift = json.loads(out.read_text())["reference"]
    assert drift["blocks"] == 12 and set(drift["max_abs_error"]) == {"1", "10", "12"}
    assert drift["worst_relative_mean_error"] == 0.0
