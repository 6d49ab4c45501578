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
                           str(out)], capture_output=True,
                          text=True, timeout=300, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["blocks"] == 25 and result["device"] == "cpu" and not result["real"]
    assert result["kv_dtype"] == "float8_e4m3fn"
    assert result["median_s_blocks_10_19"] > 0 and result["bare_5_forwards_s"] > 0
    assert set(result["rss_mib"]) == {"10", "25"}
