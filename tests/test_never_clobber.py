"""A render writes only its mp4, its sidecar and its run directory, and never replaces
a file it did not make. Each case asserts the exit code, the message and that nothing
was written or replaced."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import ffmpeg_make_clip, write

from longvid.mux import probe

ONE_SHOT = "version: 1\nresolution: 32x32\nshots: [{id: a, prompt: %s, duration: 0.5s}]\n"


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` with its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
            for p in sorted(folder.rglob("*"))}


def test_a_json_storyboard_is_not_replaced_by_its_sidecar(cli, tmp_path):
    sb = write(tmp_path / "story.json", json.dumps(
        {"version": 1, "resolution": "32x32", "shots": [{"id": "a", "prompt": "x",
                                                         "duration": "0.5s"}]}))
    before = tree(tmp_path)
    code, _, err = cli("render", sb)
    assert code == 3, err
    assert "story.json" in err and "sidecar" in err and "-o" in err
    assert tree(tmp_path) == before


def test_a_sidecar_name_held_by_another_file_is_refused(cli, tmp_path):
    sb = write(tmp_path / "s.yaml", ONE_SHOT % "sea")
    (tmp_path / "package.json").write_text('{"name": "mine"}')
    before = tree(tmp_path)
    code, _, err = cli("render", sb, "-o", tmp_path / "package.mp4")
    assert code == 3 and "package.json" in err and "not written by longvid" in err
    assert tree(tmp_path) == before


def test_an_existing_video_longvid_did_not_write_is_kept(cli, tmp_path):
    sb = write(tmp_path / "s.yaml", ONE_SHOT % "sea")
    ffmpeg_make_clip(tmp_path / "holiday.mp4", seconds=1)
    before = tree(tmp_path)
    code, _, err = cli("render", sb, "-o", tmp_path / "holiday.mp4")
    assert code == 3 and "holiday.mp4" in err and "not written by longvid" in err
    assert tree(tmp_path) == before


def test_longvids_own_outputs_are_replaced_on_a_second_render(cli, tmp_path):
    sb = write(tmp_path / "s.yaml", ONE_SHOT % "sea")
    assert cli("render", sb, "-q")[0] == 0
    sb.write_text(ONE_SHOT % "sky")
    code, _, err = cli("render", sb, "-q", "--fresh")
    assert code == 0, err
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == 8


@pytest.mark.parametrize("output", [
    "victim.txt", "../outside.mp4", "/tmp/longvid-abs-output.mp4", "sub/../../up.mp4",
    "folder/", "clip.MOV", "a\nb.mp4", "link/escaped.mp4",
])
def test_storyboard_output_stays_in_its_folder_and_is_an_mp4(cli, tmp_path, output):
    home = tmp_path / "project"
    (tmp_path / "elsewhere").mkdir()
    (home / "link").parent.mkdir(parents=True)
    (home / "link").symlink_to(tmp_path / "elsewhere")
    (home / "victim.txt").write_text("keep me")
    sb = write(home / "s.yaml", ONE_SHOT % "sea" + f"output: {json.dumps(output)}\n")
    before_home, before_all = tree(home), tree(tmp_path)
    code, _, err = cli("render", sb)
    assert code == 3, err
    assert "(output)" in err and "s.yaml" in err
    assert tree(tmp_path) == before_all and tree(home) == before_home
    assert not Path("/tmp/longvid-abs-output.mp4").exists()


def test_storyboard_output_below_its_folder_is_honoured(cli, tmp_path):
    sb = write(tmp_path / "s.yaml", ONE_SHOT % "sea" + "output: renders/take1.mp4\n")
    code, _, err = cli("render", sb, "-q")
    assert code == 0, err
    assert probe(tmp_path / "renders" / "take1.mp4").frames == 8


def test_dash_o_overrides_a_bad_storyboard_output(cli, tmp_path):
    sb = write(tmp_path / "s.yaml", ONE_SHOT % "sea" + "output: ../victim.txt\n")
    code, _, err = cli("render", sb, "-o", tmp_path / "mine.mp4", "-q")
    assert code == 0, err
    assert probe(tmp_path / "mine.mp4").frames == 8


@pytest.mark.parametrize("name", ["out.txt", "out.mov", "out.json", "scene.yaml"])
def test_dash_o_with_another_extension_is_an_error(cli, tmp_path, name):
    sb = write(tmp_path / "s.yaml", ONE_SHOT % "sea")
    before = tree(tmp_path)
    code, _, err = cli("render", sb, "-o", tmp_path / name)
    assert code == 3 and name in err and ".mp4" in err
    assert tree(tmp_path) == before


def test_dash_o_may_name_an_existing_folder(cli, tmp_path):
    sb = write(tmp_path / "s.yaml", ONE_SHOT % "sea")
    (tmp_path / "renders.v2").mkdir()
    code, _, err = cli("render", sb, "-o", tmp_path / "renders.v2", "-q")
    assert code == 0, err
    assert probe(tmp_path / "renders.v2" / "s.mp4").frames == 8


def test_a_folder_named_like_an_mp4_is_a_folder(cli, tmp_path):
    sb = write(tmp_path / "s.yaml", ONE_SHOT % "sea")
    (tmp_path / "odd.mp4").mkdir()
    (tmp_path / "odd.mp4" / "keep").write_text("x")
    code, _, err = cli("render", sb, "-o", tmp_path / "odd.mp4", "-q")
    assert code == 0, err
    assert probe(tmp_path / "odd.mp4" / "s.mp4").frames == 8
    assert (tmp_path / "odd.mp4" / "keep").read_text() == "x"
    clip = tmp_path / "odd.mp4" / "s.mp4"
    code, _, err = cli("extend", clip, "-s", "0.5", "-o", tmp_path / "odd.mp4")
    assert code == 3 and "is a folder" in err


def test_a_run_directory_name_held_by_other_files_is_refused(cli, tmp_path):
    sb = write(tmp_path / "s.yaml", ONE_SHOT % "sea")
    (tmp_path / "s.run").mkdir()
    (tmp_path / "s.run" / "notes.txt").write_text("mine")
    before = tree(tmp_path)
    code, _, err = cli("render", sb)
    assert code == 3 and "s.run" in err and "not a longvid run directory" in err
    assert tree(tmp_path) == before


def test_extend_refuses_to_write_over_its_clip(cli, tmp_path):
    clip = ffmpeg_make_clip(tmp_path / "clip.mp4", seconds=1)
    os.link(clip, tmp_path / "same.mp4")
    before = tree(tmp_path)
    for out in (clip, tmp_path / "sub" / ".." / "clip.mp4", tmp_path / "same.mp4"):
        code, _, err = cli("extend", clip, "-s", "0.5", "-o", out)
        assert code == 3 and "the clip itself" in err, err
    assert tree(tmp_path) == before


@pytest.mark.parametrize("with_output", [True, False])
def test_a_batch_whose_outputs_collide_is_refused_before_any_work(cli, tmp_path, with_output):
    x = write(tmp_path / "x" / "scene.yaml", ONE_SHOT % "sea")
    y = write(tmp_path / "y" / "scene.yaml", ONE_SHOT % "sky")
    before = tree(tmp_path)
    args = ["-o", tmp_path / "out"] if with_output else []
    code, out, err = cli("render", x, y, *args, "--json")
    assert code == 2, err
    error = json.loads(out)["error"]
    assert error["code"] == 2 and str(x) in error["message"] and str(y) in error["message"]
    assert "scene.mp4" in error["message"]
    assert tree(tmp_path) == before


def test_batch_json_lines_name_the_full_source_path(cli, tmp_path):
    x = write(tmp_path / "x" / "scene.yaml", ONE_SHOT % "sea")
    y = write(tmp_path / "y" / "other.yaml", ONE_SHOT % "sky")
    code, out, err = cli("render", x, y, "-o", tmp_path / "out", "--json")
    assert code == 0, err
    assert [json.loads(line)["source"] for line in out.splitlines()] == [str(x), str(y)]


def test_report_pictures_do_not_replace_a_users_png(cli, tmp_path):
    sb = write(tmp_path / "s.yaml", ONE_SHOT % "sea")
    (tmp_path / "s.drift.png").write_bytes(b"\x89PNG not longvid's")
    code, out, err = cli("render", sb, "--report", "--json")
    assert code == 3, err
    line = json.loads(out)
    assert line["status"] == "error" and "s.drift.png" in line["error"]["message"]
    assert (tmp_path / "s.drift.png").read_bytes() == b"\x89PNG not longvid's"
    assert not (tmp_path / "s.contact.png").exists()
    (tmp_path / "s.drift.png").unlink()
    for _ in range(2):  # longvid's own pictures are redrawn
        code, _, err = cli("report", tmp_path / "s.mp4")
        assert code == 0, err
