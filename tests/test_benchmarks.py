"""The benchmark scripts run (at tiny size on the CPU) and report what they claim to."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_vram_12gb_runs_at_tiny_size(tmp_path):
    out = tmp_path / "vram.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "vram_12gb.py"), "--tiny",
                           "--segments", "3", "--json", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["segments"] == 3 and result["preset"] == "skyreels-df-1.3b"
    assert set(result["peak_reserved_gib"]) == {"text encoder", "transformer", "vae"}
    assert len(result["segment_s"]) == 3 and result["s_per_step"] > 0
    assert result["bare_transformer_s_per_step"] > 0


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
