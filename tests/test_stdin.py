"""A storyboard from standard input (`-`) or a pipe (`<(command)`), as scripts make them:
read once however often the command needs it, its relative paths from the current
folder, its video and title named `stdin`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import write
from test_images import save_png, smooth_image

from longvid.mux import probe

STORY = """\
version: 1
resolution: 32x32
seed: 5
shots:
  - {id: a, duration: 0.5s, prompt: a harbour, image: pictures/start.png}
"""


def longvid(*args, cwd, stdin=None):
    return subprocess.run([sys.executable, "-m", "longvid", *map(str, args)], cwd=cwd,
                          input=stdin, capture_output=True, text=True, timeout=300)


def test_plan_and_render_read_the_storyboard_from_stdin_and_resume(tmp_path):
    save_png(tmp_path / "pictures" / "start.png", smooth_image(48, 32))
    plan = longvid("plan", "-", "--json", cwd=tmp_path, stdin=STORY)
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["title"] == "stdin"
    done = longvid("render", "-", "--json", cwd=tmp_path, stdin=STORY)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["source"] == "-" and result["output"] == str(tmp_path / "stdin.mp4")
    assert probe(tmp_path / "stdin.mp4").frames == 8
    again = longvid("render", "-", "--json", "-o", tmp_path / "stdin.mp4", cwd=tmp_path,
                    stdin=STORY)
    assert json.loads(again.stdout)["resumed_segments"] == result["segments"]


def test_a_pipe_is_read_once_and_its_errors_name_stdin(tmp_path):
    broken = longvid("plan", "-", cwd=tmp_path, stdin="version: 1\n")
    assert broken.returncode == 3 and "<stdin>:1 (shots): missing required key" in broken.stderr
    # bash's <(...) hands the command /dev/fd/N, a pipe that can be read only once
    script = f"{sys.executable} -m longvid render <(cat story.txt) -q -o piped.mp4"
    write(tmp_path / "story.txt", STORY.replace(", image: pictures/start.png", ""))
    piped = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300, env=os.environ.copy())
    assert piped.returncode == 0, piped.stderr
    assert probe(tmp_path / "piped.mp4").frames == 8


def test_a_folder_where_a_file_is_named_is_called_a_folder(tmp_path):
    (tmp_path / "shots.yaml").mkdir()
    done = longvid("plan", "shots.yaml", cwd=tmp_path)
    assert done.returncode == 3 and "a folder, not a storyboard file" in done.stderr
    (tmp_path / "pic.png").mkdir()
    (tmp_path / "sound.wav").mkdir()
    shot = "shots:\n  - {id: a, duration: 1s, prompt: sea%s}\n"
    for story, said in ((f"version: 1\n{shot % ', image: pic.png'}", "image path is a folder"),
                        (f"version: 1\naudio: sound.wav\n{shot % ''}", "audio path is a folder")):
        done = longvid("plan", "-", cwd=tmp_path, stdin=story)
        assert done.returncode == 3 and said in done.stderr, done.stderr
