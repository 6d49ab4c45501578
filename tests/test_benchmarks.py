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
