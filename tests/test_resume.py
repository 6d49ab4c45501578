"""Kill a real render at any moment; the same command finishes it with identical frames."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_longvid, write
from mediacheck import frames_of

pytestmark = pytest.mark.slow  # real processes, killed and resumed

LONG = """\
version: 1
resolution: 32x32
seed: 3
shots:
  - id: a
    duration: 6s
    prompts: [{at: 0s, text: dawn}, {at: 3s, text: noon}]
  - {id: b, duration: 2s, prompt: dusk, transition: {type: crossfade, seconds: 0.5}}
"""


def start(sb: Path, cwd: Path) -> subprocess.Popen:
    # as from a terminal: a shell's background job (`cmd &`) would start it with SIGINT ignored
    return subprocess.Popen([sys.executable, "-m", "longvid", "render", str(sb), "-q"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(proc: subprocess.Popen, ready, timeout: float = 120) -> bool:
    """Poll until ready() or the process ends; True if ready() came first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ready():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise TimeoutError("render neither reached the point nor finished")


def test_kill_9_at_several_moments_then_resume_matches_an_uninterrupted_run(tmp_path):
    ref_dir, dir_ = tmp_path / "ref", tmp_path / "killed"
    sb_ref, sb = write(ref_dir / "s.yaml", LONG), write(dir_ / "s.yaml", LONG)
    assert run_longvid("render", sb_ref, "-q", cwd=ref_dir).returncode == 0
    reference = frames_of(ref_dir / "s.mp4")
    total = len(list((ref_dir / "s.run" / "segments").glob("seg_*.json")))
    segs = dir_ / "s.run" / "segments"

    def done_count() -> int:
        return len(list(segs.glob("seg_*.json"))) if segs.exists() else 0

    kill_points = [
        lambda: done_count() >= 2,  # between segments
        # in the middle of writing a file (or, if no write is caught in the act, two segments on)
        lambda: any(segs.glob(".*tmp*")) or done_count() >= 4,
        lambda: done_count() >= 5 and not any(segs.glob(".*tmp*")),
    ]
    stamps: dict[str, int] = {}
    for ready in kill_points:
        proc = start(sb, dir_)
        reached = wait_for(proc, ready)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert 2 <= done_count() < total, "killed after some segments and before the last"
        if reached:
            for rec in segs.glob("seg_*.json"):
                stamps.setdefault(rec.name, rec.stat().st_mtime_ns)
    result = run_longvid("render", sb, "--json", cwd=dir_)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["resumed_segments"] >= 2
    for name, mtime in stamps.items():  # no committed segment was computed again
        assert (segs / name).stat().st_mtime_ns == mtime
    resumed = frames_of(dir_ / "s.mp4")
    assert resumed.shape == reference.shape == (128, 32, 32, 3)
    assert np.array_equal(resumed, reference)
    assert not list(segs.glob(".*tmp*")), "temporary files of killed runs are cleaned up"


def test_ctrl_c_exits_130_and_says_how_to_resume(tmp_path):
    sb = write(tmp_path / "s.yaml", LONG)
    proc = start(sb, tmp_path)
    segs = tmp_path / "s.run" / "segments"
    assert wait_for(proc, lambda: segs.exists() and any(segs.glob("seg_0001.json")))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted" in err and "run the same command again to resume" in err
    assert "Traceback" not in err
    again = run_longvid("render", sb, "--json", cwd=tmp_path)
    assert again.returncode == 0 and json.loads(again.stdout)["resumed_segments"] >= 2


def test_no_partial_output_replaces_a_good_one(tmp_path):
    """The final mp4 is written atomically: a kill during the join leaves the old one."""
    sb = write(tmp_path / "s.yaml", LONG)
    assert run_longvid("render", sb, "-q", cwd=tmp_path).returncode == 0
    before = (tmp_path / "s.mp4").read_bytes()
    proc = start(sb, tmp_path)  # everything is committed: this run only joins
    assert wait_for(proc, lambda: any(tmp_path.glob(".s.*tmp*")), timeout=60)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "s.mp4").read_bytes() == before
    assert run_longvid("render", sb, "-q", cwd=tmp_path).returncode == 0
    assert not list(tmp_path.glob(".s.*tmp*")), "the next run removes the partial join"
    assert os.path.getsize(tmp_path / "s.mp4") > 0
