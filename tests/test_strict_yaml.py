"""Strict YAML, bounded cost: YAML 1.1 surprises are errors, hostile files answer fast,
and no mutation of a valid storyboard gives exit 1 or a traceback."""

from __future__ import annotations

import json
import random
import time

import pytest
from conftest import write

VALID = """\
version: 1
title: t
resolution: 32x32
seed: 3
shots:
  - id: a
    duration: 2s
    prompts: [{at: 0s, text: dawn}, {at: 1s, text: noon}]
  - {id: b, duration: 1s, prompt: dusk, transition: {type: crossfade, seconds: 0.5}}
  - {id: c, duration: 1s, prompt: night, transition: cut, recall: [a]}
"""
BOMB = ("version: 1\na: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n"
                  for p, n in zip("abcdefg", "bcdefgh", strict=True)))


def one_shot(top: str = "", duration: str = "1s") -> str:
    return (f"version: 1\nresolution: 32x32\n{top}\n"
            f"shots: [{{id: a, prompt: x, duration: {duration}}}]\n")


@pytest.mark.parametrize(("text", "message"), [
    (one_shot("fps: true"), "fps: expected a number, got true"),
    (one_shot("seed: yes"), "(got 'yes')"),
    (one_shot("seed: no"), "(got 'no')"),
    (one_shot(duration="010"), "010 has a leading zero"),
    (one_shot(duration="'1:75'"), "below 60"),
    (one_shot(duration="1:75"), "below 60"),
    (one_shot(duration="1:02:60"), "below 60"),
    (one_shot(duration=".nan"), "expected a time like"),
    (one_shot(duration="-.inf"), "expected a time like"),
    (one_shot(duration=".inf"), "expected a time like"),
    (one_shot(duration="1e12"), "longer than 24 h"),
    (one_shot(duration="99999999999999999999f"), "longer than 24 h"),
    (one_shot("title: &t [x]\nstyle: *t"), "title"),
    (BOMB + "shots: *h\n", "shots"),
    (BOMB + "shots: [{id: a, prompt: x, duration: 1s, recall: *h}]\n", "recall"),
    ("version: 1\nshots: " + "[" * 3000 + "]" * 3000 + "\n", "nested"),
    ("version: 1\nshots: " + "[" * 100 + "]" * 100 + "\n", "nested more than"),
    ("version: 1\nshots:\n" + "".join(f"  - {{id: s{i}, prompt: x, duration: 23:59:59}}\n"
                                      for i in range(3)), "more than 24 h"),
])
def test_surprises_and_bombs_are_exit_3_at_once(cli, tmp_path, text, message):
    sb = write(tmp_path / "s.yaml", text)
    start = time.perf_counter()
    code, out, err = cli("plan", sb)
    assert time.perf_counter() - start < 2.0
    assert code == 3 and message in err, err
    assert len(err) < 2000  # a bomb is not printed back


def test_clock_times_and_quoted_words_still_work(cli, tmp_path):
    sb = write(tmp_path / "s.yaml", one_shot("anti_drift: no\ntitle: 'yes'", "0:01.5"))
    code, out, err = cli("plan", sb, "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["total_frames"] == 24 and plan["title"] == "yes" and not plan["anti_drift"]


def mutations(rng: random.Random, text: str) -> str:
    lines = text.splitlines()
    i = rng.randrange(len(lines))
    kind = rng.randrange(8)
    junk = rng.choice(["true", "yes", "~", "010", "1e400", ".nan", "-1", "!!python/none ''",
                       "*x", "&x [1]", "{a: {b: {c: [[[]]]}}}", "'\x00'", "\"\\u0000\"",
                       "é̃ü", "9" * 40, "[" * 50, "]", ": :", "- - -", "'", "\t"])
    if kind == 0:  # replace a value
        head, _, _ = lines[i].partition(":")
        lines[i] = f"{head}: {junk}"
    elif kind == 1:  # duplicate a line
        lines.insert(i, lines[i])
    elif kind == 2:  # delete a line
        del lines[i]
    elif kind == 3:  # insert junk
        lines.insert(i, junk)
    elif kind == 4:  # change the indentation
        lines[i] = " " * rng.randrange(6) + lines[i].lstrip()
    elif kind == 5:  # truncate
        lines = lines[:i] + [lines[i][:rng.randrange(len(lines[i]) + 1)]]
    elif kind == 6:  # a huge number in place of a digit
        lines[i] = lines[i].replace("1", "1" + "0" * rng.randrange(1, 30), 1)
    else:  # a tag on a value
        head, _, value = lines[i].partition(":")
        lines[i] = f"{head}: !!{rng.choice(['str', 'int', 'float', 'binary', 'set'])} {value}"
    return "\n".join(lines) + "\n"


def test_mutated_storyboards_never_exit_1(cli, tmp_path):
    rng = random.Random(14)
    for n in range(150):
        text = VALID
        for _ in range(rng.randrange(1, 4)):
            text = mutations(rng, text)
        sb = write(tmp_path / f"m{n}.yaml", "")
        sb.write_text(text)
        start = time.perf_counter()
        code, _, err = cli("plan", sb)
        assert time.perf_counter() - start < 2.0, text
        assert code in (0, 3), f"{text}\n{err}"
        assert "Traceback" not in err


def test_control_characters_and_markup_never_reach_the_terminal_raw(cli, tmp_path):
    sb = write(tmp_path / "s.yaml", 'version: 1\ntitle: "[/] \\e[31mred\\a"\nresolution: 32x32\n'
               'shots: [{id: a, prompt: "[bold]x\\e]0;owned\\a", duration: 1s}]\n')
    code, out, err = cli("plan", sb)
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out
    assert "[/] \\x1b[31mred\\x07" in out and "[bold]x\\x1b]0;owned\\x07" in out
