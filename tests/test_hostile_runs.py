"""Faults around a render: a full disk, folders the system refuses, damaged run
files, file names and titles ffmpeg chokes on. Never exit 1, never a traceback, and a
later run finishes the job."""

from __future__ import annotations

import json
import subprocess
import sys
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
