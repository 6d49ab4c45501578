"""Stop signals around a render: SIGTERM and Ctrl-C exit 143 and 130 and the render
resumes, wherever the signal lands (a library that mangles or swallows it), and a
second stop leaves at once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_longvid, write
from test_hostile_runs import FRAMES, STORY, story

from longvid.mux import probe


def test_sigterm_stops_like_ctrl_c_and_the_render_resumes(tmp_path):
    sb = story(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "longvid", "render", str(sb), "-q"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    segs = tmp_path / "s.run" / "segments"
    while not (segs / "seg_0000.json").exists():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated" in err and "run the same command again to resume" in err
    assert "Traceback" not in err
    again = run_longvid("render", sb, "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["resumed_segments"] >= 1
    assert probe(tmp_path / "s.mp4").frames == FRAMES


# A stop signal lands wherever the main thread is, also inside a C or Rust extension
# calling back into Python. Such a library can turn the exception into an error of its own
# (CI once saw "ValueError: could not determine the shape of object type
# 'torch.storage.UntypedStorage'" and exit 1) or swallow it. The driver below plays that
# library in the segment loop's write of segment 0.
DRIVER = """
import os, signal, sys, time
import longvid.generate as g
real, calls, mode = g.encode_frames, [], sys.argv[1]

def library(*args, **kwargs):
    calls.append(1)
    if len(calls) == 1:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # the handler raises here
        except KeyboardInterrupt:
            if mode == "mangles":
                raise ValueError("could not determine the shape of object type") from None
            if mode == "twice":
                raise
    return real(*args, **kwargs)

g.encode_frames = library
sys.argv = ["longvid", "render", *sys.argv[2:], "-q"]
import longvid.cli.render as r
report = r.report

def impatient(*args, **kwargs):  # Ctrl-C again while the first stop is reported
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(30)
    return report(*args, **kwargs)

if mode == "twice":
    r.report = impatient
from longvid.cli import main
main()
"""


def test_a_second_stop_while_the_first_unwinds_leaves_at_once_with_the_first_code(tmp_path):
    """Without it the second KeyboardInterrupt escapes the rim, and click exits 130 without
    a word after a SIGTERM."""
    sb = story(tmp_path)
    # as from a terminal: a shell's background job (`cmd &`) would start it with SIGINT
    # ignored, and longvid leaves an ignored SIGINT ignored
    proc = subprocess.run([sys.executable, "-c", DRIVER, "twice", str(sb)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.returncode == 143, proc.stderr
    assert "stopped again; run the same command again to resume" in proc.stderr
    assert "Aborted" not in proc.stderr and "Traceback" not in proc.stderr
    again = run_longvid("render", sb, "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert probe(tmp_path / "s.mp4").frames == FRAMES


@pytest.mark.parametrize("library", ["mangles", "swallows"])
def test_sigterm_a_library_mangled_or_swallowed_still_stops_the_batch_with_143(tmp_path,
                                                                              library):
    first = write(tmp_path / "one.yaml", STORY % '"one"')
    second = write(tmp_path / "two.yaml", STORY % '"two"')
    proc = subprocess.run([sys.executable, "-c", DRIVER, library, str(first), str(second)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 143, proc.stderr
    assert "terminated" in proc.stderr and "run the same command again" in proc.stderr
    assert "ValueError" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "two.run").exists()  # the batch stopped at the first
    # swallowed: segment 0 was committed and the stop came at segment 1's start
    committed = sorted(p.name for p in (tmp_path / "one.run" / "segments").glob("*.json"))
    assert committed == ([] if library == "mangles" else ["seg_0000.json"])
    again = run_longvid("render", first, "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["resumed_segments"] == len(committed)
    assert probe(tmp_path / "one.mp4").frames == FRAMES
