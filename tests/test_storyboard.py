"""The storyboard edge: every invalid storyboard gets its own message, line and exit code 3."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO, write

from longvid.storyboard import load_storyboard

INVALID = sorted((REPO / "tests" / "data" / "invalid").glob("*.yaml"))


def _header(path: Path, key: str) -> str | None:
    m = re.search(rf"^# {key}: (.*)$", path.read_text(), re.M)
    return m.group(1) if m else None


def test_the_corpus_covers_every_issue_item():
    names = {p.stem for p in INVALID}
    for needed in ("unknown_top_key", "wrong_type_fps", "overlap", "gap", "zero_duration",
                   "negative_duration", "duplicate_id", "recall_unknown", "recall_later",
                   "at_outside_shot", "missing_audio", "unknown_preset", "not_yaml",
                   "not_mapping", "python_tag"):
        assert needed in names
    messages = [_header(p, "expect") for p in INVALID]
    assert len(set(messages)) == len(messages), "one file per distinct message"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_storyboard_is_explained(path: Path, cli):
    code, out, err = cli("plan", path)
    assert code == 3, err
    assert out == ""
    assert "Traceback" not in err
    first = err.splitlines()[0]
    assert first.startswith(f"error: {path}"), first  # names the file
    assert _header(path, "expect") in err
    if line := _header(path, "line"):
        assert f"{path}:{line}" in first
    if hint := _header(path, "hint"):
        assert "hint: " in err and hint in err.split("hint: ", 1)[1]


def test_json_errors_have_code_message_hint(cli):
    path = REPO / "tests" / "data" / "invalid" / "gap.yaml"
    code, out, _ = cli("plan", path, "--json")
    import json

    err = json.loads(out)["error"]
    assert code == 3 and err["code"] == 3
    assert "gap of 8 frame(s)" in err["message"] and err["hint"].startswith("set `start:")


def test_missing_file_is_exit_3(cli, tmp_path):
    code, _, err = cli("plan", tmp_path / "nope.yaml")
    assert code == 3 and "storyboard file not found" in err


def test_valid_storyboard_freezes_with_defaults(tmp_path):
    (tmp_path / "music.wav").write_bytes(b"RIFF")
    sb = load_storyboard(write(tmp_path / "s.yaml", """\
        version: 1
        audio: music.wav
        style: film grain
        shots:
          - {id: a, prompt: sea, duration: 48f, camera: {move: pan-left, speed: 2}}
          - {id: b, prompt: sky, duration: 1s, transition: crossfade, recall: [a]}
        """))
    assert sb.title == "s" and sb.preset == "tiny" and sb.fps is None
    assert sb.audio.path == (tmp_path / "music.wav").resolve()
    assert sb.shots[0].transition.kind == "continue"
    assert str(sb.shots[1].transition.length) == "0.5s"  # the crossfade default
    assert sb.shots[0].camera.move == "pan-left" and sb.shots[0].camera.speed == 2
    assert sb.shots[1].recall == ("a",)


def test_hash_ignores_mux_only_fields_and_formatting(tmp_path):
    a = load_storyboard(write(tmp_path / "a.yaml", """\
        version: 1
        title: one
        shots: [{id: a, prompt: sea, duration: 2s}]
        """))
    b = load_storyboard(write(tmp_path / "b.yaml", """\
        # a comment
        version: 1
        title: two
        output: elsewhere.mp4
        shots:
          - id: a
            prompt: sea
            duration: 2s
        """))
    c = load_storyboard(write(tmp_path / "c.yaml", """\
        version: 1
        shots: [{id: a, prompt: sea at night, duration: 2s}]
        """))
    assert a.content_sha256 == b.content_sha256 != c.content_sha256
