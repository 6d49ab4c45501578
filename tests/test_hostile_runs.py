"""Faults around a render: SIGTERM, a full disk, folders the system refuses, damaged run
files, file names and titles ffmpeg chokes on. Never exit 1, never a traceback, and a
later run finishes the job."""

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
from test_verify_outputs import limited_writes

from longvid.mux import probe

STORY = """\
version: 1
resolution: 32x32
seed: 3
title: %s
shots:
  - {id: a, duration: 3s, prompt: dawn}
  - {id: b, duration: 1s, prompt: dusk, transition: cut}
"""
FRAMES = 64


def story(folder: Path, title: str = "hostile") -> Path:
    return write(folder / "s.yaml", STORY % json.dumps(title))


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
    proc = subprocess.run([sys.executable, "-c", DRIVER, "twice", str(sb)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
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


def test_a_render_prints_nothing_but_its_own_messages(tmp_path):
    """A library's warning (bitsandbytes asks at import for a `kernels` download on a CPU
    with AVX-512-BF16) does not reach the user; LONGVID_DEBUG=1 shows it."""
    plain = run_longvid("render", story(tmp_path / "plain"), "-q", cwd=tmp_path)
    assert plain.returncode == 0 and plain.stderr == "", plain.stderr
    driver = """
import logging, sys
import longvid.generate as g
real = g.encode_frames

def library(*args, **kwargs):  # a library that logs while the render runs
    logging.getLogger("somelib").warning("please pip install kernels")
    return real(*args, **kwargs)

g.encode_frames = library
sys.argv = ["longvid", "render", *sys.argv[1:], "-q"]
from longvid.cli import main
main()
"""
    sb = story(tmp_path / "lib")
    quiet = subprocess.run([sys.executable, "-c", driver, str(sb)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    shown = subprocess.run([sys.executable, "-c", driver, str(sb), "--fresh"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300,
                           env={**os.environ, "LONGVID_DEBUG": "1"})
    assert shown.returncode == 0 and "somelib: please pip install kernels" in shown.stderr


def test_a_full_disk_while_rendering_is_exit_4_and_the_next_run_finishes(tmp_path):
    ref = tmp_path / "ref"
    assert run_longvid("render", story(ref), "-q", cwd=ref).returncode == 0
    sb = story(tmp_path / "full")
    proc = subprocess.run([sys.executable, "-m", "longvid", "render", str(sb), "-q"],
                          cwd=sb.parent, capture_output=True, text=True, timeout=300,
                          preexec_fn=limited_writes(1500))
    assert proc.returncode == 4, proc.stderr
    assert str(sb.parent / "s.run") in proc.stderr and "Traceback" not in proc.stderr
    assert not (sb.parent / "s.mp4").exists()
    again = run_longvid("render", sb, "-q", cwd=sb.parent)
    assert again.returncode == 0, again.stderr
    assert np.array_equal(frames_of(sb.parent / "s.mp4"), frames_of(ref / "s.mp4"))


def test_longvid_home_that_is_a_file_is_exit_4_naming_it(cli, tmp_path, monkeypatch):
    (tmp_path / "home").write_text("not a folder")
    monkeypatch.setenv("LONGVID_HOME", str(tmp_path / "home"))
    code, _, err = cli("render", story(tmp_path))
    assert code == 4 and str(tmp_path / "home") in err and "Traceback" not in err


def test_a_folder_the_system_refuses_is_exit_4_naming_it(cli, tmp_path, monkeypatch):
    refused = Path("/sys/longvid-test")
    try:
        refused.mkdir()
    except OSError:
        pass
    else:
        refused.rmdir()
        pytest.skip("this system lets us write under /sys")
    monkeypatch.setenv("LONGVID_HOME", str(refused))
    code, _, err = cli("render", story(tmp_path))
    assert code == 4 and str(refused) in err


@pytest.mark.parametrize("name", ["it's here/o'k.mp4", "new\nline.mp4", "semi;colon $HOME.mp4"])
def test_any_legal_output_name_works(cli, tmp_path, name):
    code, _, err = cli("render", story(tmp_path), "-o", tmp_path / name, "-q")
    assert code == 0, err
    assert probe(tmp_path / name).frames == FRAMES


@pytest.mark.parametrize("title", ["nul\x00in the title", "x" * 300_000, "line\nbreak"])
def test_titles_ffmpeg_cannot_take_are_cleaned(cli, tmp_path, title):
    code, _, err = cli("render", story(tmp_path, title), "-q")
    assert code == 0, err
    tag = probe(tmp_path / "s.mp4").tags["title"]
    assert "\x00" not in tag and len(tag) <= 1024


def test_a_damaged_manifest_is_exit_3_with_the_command_that_recovers(cli, tmp_path):
    sb = story(tmp_path)
    assert cli("render", sb, "-q")[0] == 0
    manifest = tmp_path / "s.run" / "manifest.json"
    manifest.write_text(manifest.read_text()[:40])
    code, _, err = cli("render", sb, "-q")
    assert code == 3 and str(manifest) in err and "--fresh" in err
    manifest.unlink()
    code, _, err = cli("render", sb, "-q")
    assert code == 3 and str(manifest) in err and "--fresh" in err
    code, _, err = cli("render", sb, "-q", "--fresh")
    assert code == 0, err


def test_damaged_versions_and_sidecar_of_a_finished_run_are_rewritten(cli, tmp_path):
    sb = story(tmp_path)
    assert cli("render", sb, "-q")[0] == 0
    (tmp_path / "s.run" / "versions.json").write_text("{trunc")
    (tmp_path / "s.json").write_text("{trunc")
    code, _, err = cli("render", sb, "-q")
    assert code == 0, err
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == FRAMES


def test_report_on_a_damaged_run_names_the_file(cli, tmp_path):
    sb = story(tmp_path)
    assert cli("render", sb, "-q")[0] == 0
    segs = tmp_path / "s.run" / "segments"
    for damaged in (segs / "seg_0001.json", segs / "seg_0000.memory.safetensors"):
        good = damaged.read_bytes()
        damaged.write_bytes(good[:len(good) // 2])
        code, _, err = cli("report", tmp_path / "s.mp4")
        assert code == 3 and str(damaged) in err and "longvid render" in err, err
        damaged.write_bytes(good)
    assert cli("report", tmp_path / "s.mp4")[0] == 0


@pytest.mark.parametrize("args", [["plan", "STORY", "--json"], ["plan", "STORY"],
                                  ["presets", "list"], ["--version"], ["--help"],
                                  ["render", "STORY", "--json", "-q"]])
def test_a_reader_that_has_gone_ends_the_command_quietly_with_141(tmp_path, args):
    """`longvid ... | head -1` or `| grep -q`: stdout's reader exits. Not a bug (exit 1,
    "BrokenPipeError", or Python's "Exception ignored" at exit): 141, as for a Unix tool
    killed by SIGPIPE, and nothing on stderr. A render's video is complete."""
    sb = story(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "longvid",
                             *[str(sb) if a == "STORY" else a for a in args]],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first write
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141, err
    assert err == ""
    if args[0] == "render":
        assert probe(tmp_path / "s.mp4").frames == FRAMES


def _close_stdio() -> None:  # as `>&- 2>&- <&-` in a shell
    for fd in (0, 1, 2):
        os.close(fd)


def test_closed_standard_streams_get_dev_null_before_any_file_takes_their_number(tmp_path):
    """With fd 2 closed the next file opened would be fd 2, and a C library's or a child's
    writes to stderr would land in it; Python's own sys.stderr would be None."""
    code = ("import os, sys; from longvid.terminal import open_std_streams; "
            "open_std_streams(); f = open('probe.txt', 'w'); "
            "os.write(os.open('fds.txt', os.O_WRONLY | os.O_CREAT), "
            "f'{f.fileno()} {sys.stdout is None} {sys.stderr is None}'.encode())")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, timeout=60,
                          preexec_fn=_close_stdio)
    assert done.returncode == 0
    fileno, stdout_none, stderr_none = (tmp_path / "fds.txt").read_text().split()
    assert int(fileno) > 2 and stdout_none == stderr_none == "False"


@pytest.mark.parametrize("args", [["plan", "STORY"], ["plan", "STORY", "--json"],
                                  ["render", "STORY"]])
def test_a_command_with_its_standard_streams_closed_does_its_work(tmp_path, args):
    sb = story(tmp_path)
    done = subprocess.run([sys.executable, "-m", "longvid",
                           *[str(sb) if a == "STORY" else a for a in args]],
                          cwd=tmp_path, timeout=300, preexec_fn=_close_stdio)
    assert done.returncode == 0
    if args[0] == "render":
        assert probe(tmp_path / "s.mp4").frames == FRAMES
        assert json.loads((tmp_path / "s.json").read_text())["frames"] == FRAMES
