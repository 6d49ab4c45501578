"""Verify before replacing: a damaged run directory is repaired by rendering again what
is damaged (and what depends on it), never joined short; a join that cannot be
written or does not hold the planned frames leaves the previous video in place."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL, write
from mediacheck import frames_of

from longvid.errors import LongvidError
from longvid.mux import concat, probe


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """A finished render of SMALL: its folder is copied by each test that damages it."""
    from typer.testing import CliRunner

    from longvid.cli import app

    folder = tmp_path_factory.mktemp("rendered")
    sb = write(folder / "small.yaml", SMALL)
    result = CliRunner().invoke(app, ["render", str(sb), "-q", "-o", str(folder / "small.mp4")])
    assert result.exit_code == 0, result.stderr
    return folder


def copy_of(rendered: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    shutil.copytree(rendered, folder, symlinks=True)
    return folder


def damage(path: Path, how: str) -> None:
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    else:  # one flipped byte, same size
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


@pytest.mark.parametrize(("kind", "how"), [
    ("mp4", "truncate"), ("mp4", "delete"), ("mp4", "flip"),
    ("state.safetensors", "truncate"), ("state.safetensors", "delete"),
    ("memory.safetensors", "flip"), ("memory.safetensors", "delete"),
    ("json", "truncate"), ("json", "delete"),
])
def test_a_damaged_segment_is_rendered_again_with_what_follows(cli, rendered, tmp_path, kind,
                                                                how):
    folder = copy_of(rendered, tmp_path)
    reference = frames_of(folder / "small.mp4")
    segs = folder / "small.run" / "segments"
    count = len(list(segs.glob("seg_*.json")))
    damaged = 2
    kept = {p.name: p.stat().st_mtime_ns for p in segs.glob("seg_*.json")
            if int(p.stem[4:]) < damaged}
    damage(segs / f"seg_{damaged:04d}.{kind}", how)
    code, out, err = cli("render", folder / "small.yaml", "-o", folder / "small.mp4", "--json")
    assert code == 0, err
    result = json.loads(out)
    # segments 3 and 4 continue its take; 5 (the cut to c) and 6 (d, dissolving from c's
    # held frames) read nothing of segment 2, so they are kept
    assert result["frames"] == 88 and result["resumed_segments"] == damaged + 2
    assert len(list(segs.glob("seg_*.json"))) == count
    assert {p.name: p.stat().st_mtime_ns for p in segs.glob("seg_*.json")
            if int(p.stem[4:]) < damaged} == kept  # what came before is kept as it was
    assert np.array_equal(frames_of(folder / "small.mp4"), reference)


def test_a_record_from_an_older_version_is_checked_by_its_files(cli, rendered, tmp_path):
    folder = copy_of(rendered, tmp_path)
    segs = folder / "small.run" / "segments"
    record = json.loads((segs / "seg_0001.json").read_text())
    del record["files"]
    (segs / "seg_0001.json").write_text(json.dumps(record))
    damage(segs / "seg_0001.mp4", "truncate")
    code, out, err = cli("render", folder / "small.yaml", "-o", folder / "small.mp4", "--json")
    assert code == 0, err
    assert json.loads(out)["resumed_segments"] == 3  # 0, and 5 and 6, which read nothing of 1
    assert probe(folder / "small.mp4").frames == 88


def limited_writes(max_bytes: int):
    def apply() -> None:  # runs in the child: files may not grow past max_bytes
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


def test_a_full_disk_at_the_join_keeps_the_old_video_and_exits_4(rendered, tmp_path):
    folder = copy_of(rendered, tmp_path)
    out = folder / "small.mp4"
    before = out.read_bytes()
    assert len(before) > 8192
    proc = subprocess.run(
        [sys.executable, "-m", "longvid", "render", str(folder / "small.yaml"), "-q", "-o",
         str(out)], cwd=folder, capture_output=True, text=True, timeout=300,
        preexec_fn=limited_writes(8192))
    assert proc.returncode == 4, proc.stderr
    assert str(out) in proc.stderr and "Traceback" not in proc.stderr
    assert out.read_bytes() == before
    assert not list(folder.glob(".small.*tmp*"))


def test_a_join_short_of_the_plan_does_not_replace_the_video(rendered, tmp_path):
    folder = copy_of(rendered, tmp_path)
    out = folder / "small.mp4"
    before = out.read_bytes()
    videos = sorted((folder / "small.run" / "segments").glob("seg_*.mp4"))
    with pytest.raises(LongvidError, match="frames"):
        concat(videos[:-1], out, fps=16, total_frames=88, list_file=tmp_path / "list.txt")
    assert out.read_bytes() == before
    assert not list(folder.glob(".small.*tmp*"))


def test_extend_repairs_its_damaged_clip_and_initial_state(cli, tmp_path):
    from conftest import ffmpeg_make_clip

    clip = ffmpeg_make_clip(tmp_path / "clip.mp4", seconds=1)
    assert cli("extend", clip, "-s", "1", "-q")[0] == 0
    out, run = tmp_path / "clip_extended.mp4", tmp_path / "clip_extended.run"
    reference = frames_of(out)
    for damaged, resumed in ((run / "clip.mp4", 1), (run / "segments" / "init.memory.safetensors",
                                                    0)):
        data = damaged.read_bytes()
        damaged.write_bytes(data[:len(data) // 2])
        code, text, err = cli("extend", clip, "-s", "1", "--json")
        assert code == 0, err
        assert json.loads(text)["resumed_segments"] == resumed
        assert np.array_equal(frames_of(out), reference)
