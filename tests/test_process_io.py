"""The process around the CLI: closed or unreadable standard streams, terminals that
cannot encode a title, names and text that are not valid Unicode, library chatter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ffmpeg_make_clip, run_longvid, write
from test_hostile_runs import FRAMES, STORY, story

from longvid.mux import probe


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


@pytest.mark.parametrize("args", [["plan", "STORY"], ["render", "STORY"],
                                  ["plan", "STORY", "--preset", "nosuch-préset"]])
def test_a_terminal_that_cannot_encode_a_title_shows_it_escaped(tmp_path, args):
    """An ASCII or Latin-1 terminal (or PYTHONIOENCODING) and a title or prompt outside
    it: the text is escaped, never a UnicodeEncodeError and exit 1."""
    sb = write(tmp_path / "s.yaml", STORY % json.dumps("Café 😀 — ü"))
    done = run_longvid(*[sb if a == "STORY" else a for a in args], cwd=tmp_path,
                       env={"PYTHONIOENCODING": "ascii"})
    assert done.returncode == (3 if "nosuch-préset" in args else 0), done.stderr
    assert "UnicodeEncodeError" not in done.stderr
    if args == ["plan", "STORY"]:
        assert "Caf\\xe9 \\U0001f600 \\u2014 \\xfc" in done.stdout
    if "nosuch-préset" in args:
        assert "unknown preset 'nosuch-pr\\xe9set'" in done.stderr


def test_a_file_name_whose_bytes_are_not_utf8_is_exit_3_before_any_work(tmp_path):
    """ffmpeg-python cannot take such a name (Python holds its bytes as lone surrogates):
    the default output and run directory are refused up front, naming the path; with a
    UTF-8 output the render works, its title (the file name) with U+FFFD for the byte."""
    raw = os.fsencode(tmp_path) + b"/n\xffm.yaml"
    Path(os.fsdecode(raw)).write_text(STORY % '""')
    done = subprocess.run([sys.executable, "-m", "longvid", "render", raw, "-q"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr
    assert "n\\xffm.mp4: the name holds bytes that are not UTF-8" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.glob("*.run"))  # nothing made
    done = subprocess.run([sys.executable, "-m", "longvid", "render", raw, "-q", "-o", "ok.mp4"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert probe(tmp_path / "ok.mp4").tags["title"] == "n\ufffdm"


def test_text_in_json_style_escapes_reads_as_its_characters_and_half_a_pair_is_exit_3(cli,
                                                                                      tmp_path):
    """JSON is YAML, and JSON writers escape an emoji as a UTF-16 pair ("\\ud83d\\ude00"),
    which PyYAML keeps as two lone surrogates that no file or video can hold."""
    sb = tmp_path / "s.yaml"
    sb.write_text(STORY % json.dumps("sun \U0001f600 set"))  # json.dumps writes the pair
    assert "\\ud83d\\ude00" in sb.read_text()
    code, _, err = cli("render", sb, "-q")
    assert code == 0, err
    assert probe(tmp_path / "s.mp4").tags["title"] == "sun \U0001f600 set"
    half = tmp_path / "half.yaml"
    half.write_text(STORY % '"sun \\ud83d set"')
    code, _, err = cli("render", half, "-q")
    assert code == 3 and f"{half}:4: this string holds a lone UTF-16 surrogate" in err
    assert "\\UXXXXXXXX" in err and not (tmp_path / "half.run").exists()


def test_an_extend_prompt_whose_bytes_are_not_utf8_is_exit_3(tmp_path):
    clip = ffmpeg_make_clip(tmp_path / "clip.mp4", seconds=1)
    done = subprocess.run([sys.executable, "-m", "longvid", "extend", clip, "--seconds", "1",
                           "--prompt", b"a \xff b", "-q"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 3 and "--prompt is not valid text" in done.stderr, done.stderr
    assert not (tmp_path / "clip_extended.mp4").exists()
