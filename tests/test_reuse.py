"""Re-rendering only what an edit touches, on `tiny`: reuse, no stale files, the same
frames as a fresh render of the edited storyboard, `plan` against the run, `--reroll`
and `--seed`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_longvid, write
from mediacheck import frames_of

from longvid.rundir import RunDir, segment_file

KINDS = ("json", "mp4", "state.safetensors", "memory.safetensors")

FOUR = """\
version: 1
preset: tiny
resolution: 32x32
seed: 3
shots:
  - {id: one, prompt: a red harbour, duration: 0.75s}
  - {id: two, prompt: a blue harbour, duration: 0.75s}
  - {id: three, prompt: a market, duration: 0.75s, transition: cut}
  - {id: four, prompt: a pier, duration: 0.75s}
"""


def _sidecar(path):
    return json.loads(path.with_suffix(".json").read_text())


def _segment_files(run):
    return sorted(p.name for p in (run / "segments").iterdir())


def test_an_edit_of_the_last_shot_reuses_the_shots_before_it(cli, tmp_path):
    sb = write(tmp_path / "four.yaml", FOUR)
    out = tmp_path / "four.mp4"
    assert "run" not in json.loads(cli("plan", sb, "--json")[1])  # no run yet: the plan as is
    assert cli("render", sb, "-q")[0] == 0
    first = _sidecar(out)["segments"]
    assert not any(s["reused"] for s in first)
    sb.write_text(FOUR.replace("a pier", "a pier at night"))

    code, text, err = cli("plan", sb, "--json")
    assert code == 0, err
    planned = json.loads(text)
    code, text, err = cli("render", sb, "--json")
    assert code == 0, err
    segments = _sidecar(out)["segments"]
    reused = {s["shot"]: {x["reused"] for x in segments if x["shot"] == s["shot"]}
              for s in segments}
    assert reused["one"] == reused["two"] == {True} and reused["four"] == {False}
    assert [s["reused"] for s in planned["segments"]] == [s["reused"] for s in segments]
    assert planned["run"]["reused_segments"] == json.loads(text)["resumed_segments"] > 0
    for old, new in zip(first, segments, strict=True):  # a reused record is the old one
        assert (old["identity"] == new["identity"]) == new["reused"]

    # the run holds exactly its segments' files, and they are those of a fresh render
    run = out.with_suffix(".run")
    assert _segment_files(run) == sorted(f"seg_{i:04d}.{kind}" for i in range(len(segments))
                                         for kind in KINDS)
    fresh = tmp_path / "fresh.mp4"
    assert cli("render", sb, "-q", "-o", fresh)[0] == 0
    for i in range(len(segments)):
        name = f"segments/seg_{i:04d}.mp4"
        assert (run / name).read_bytes() == (fresh.with_suffix(".run") / name).read_bytes(), i
    assert (frames_of(out) == frames_of(fresh)).all()


def test_a_shorter_storyboard_leaves_no_stale_segment(cli, tmp_path):
    sb = write(tmp_path / "four.yaml", FOUR)
    assert cli("render", sb, "-q")[0] == 0
    run = tmp_path / "four.run"
    before = len(_sidecar(tmp_path / "four.mp4")["segments"])
    sb.write_text(FOUR.replace("duration: 0.75s}\n", "duration: 0.25s}\n"))
    code, _, err = cli("render", sb, "-q")
    assert code == 0, err
    after = _sidecar(tmp_path / "four.mp4")["segments"]
    assert len(after) < before
    assert {p.name[:8] for p in (run / "segments").iterdir()} == {
        f"seg_{i:04d}" for i in range(len(after))}


def test_reroll_renders_one_shot_anew_and_later_renders_keep_it(cli, tmp_path):
    sb = write(tmp_path / "two.yaml", """\
        version: 1
        preset: tiny
        resolution: 32x32
        shots:
          - {id: a, prompt: a red harbour, duration: 0.5s}
          - {id: b, prompt: a market, duration: 0.5s, transition: cut}
        """)
    out = tmp_path / "two.mp4"
    assert cli("render", sb, "-q")[0] == 0
    first, pictures = _sidecar(out), frames_of(out)
    code, _, err = cli("render", sb, "-q", "--reroll", "b")
    assert code == 0, err
    rolled, repictured = _sidecar(out), frames_of(out)
    assert rolled["rerolls"] == {"b": 1}
    for old, new in zip(first["segments"], rolled["segments"], strict=True):
        assert new["reused"] == (new["shot"] == "a")
        assert (new["seed"] == old["seed"]) == (new["shot"] == "a")
    a_frames = sum(s["frames"] for s in first["segments"] if s["shot"] == "a")
    assert (repictured[:a_frames] == pictures[:a_frames]).all()
    assert (repictured[a_frames:] != pictures[a_frames:]).any()

    code, text, _ = cli("plan", sb, "--json")  # the plan shows the rerolled seeds
    planned = json.loads(text)
    assert planned["run"]["rerolls"] == {"b": 1}
    assert [s["seed"] for s in planned["segments"]] == [s["seed"] for s in rolled["segments"]]
    code, text, _ = cli("render", sb, "--json")
    assert code == 0 and json.loads(text)["resumed_segments"] == len(rolled["segments"])
    assert _sidecar(out)["rerolls"] == {"b": 1} and (frames_of(out) == repictured).all()

    code, _, err = cli("render", sb, "-q", "--reroll", "nope")
    assert code == 3 and "no shot 'nope'" in err and "a, b" in err

    code, _, err = cli("render", sb, "-q", "--seed", "11")
    assert code == 0, err
    seeded = _sidecar(out)
    assert seeded["seed"] == 11 and not any(s["reused"] for s in seeded["segments"])


@pytest.mark.slow
def test_killed_while_rendering_an_edit_then_resumed_matches_a_fresh_render(tmp_path):
    sb = write(tmp_path / "four.yaml", FOUR)
    assert run_longvid("render", sb, "-q", cwd=tmp_path).returncode == 0
    segs = tmp_path / "four.run" / "segments"
    total = len(list(segs.glob("seg_*.json")))
    sb.write_text(FOUR.replace("a red harbour", "a grey harbour"))  # the first shot: all again
    proc = subprocess.Popen([sys.executable, "-m", "longvid", "render", str(sb), "-q"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while len(list(segs.glob("seg_*.json"))) == total and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # the stale records are gone, and maybe some files
    proc.wait()
    assert len(list(segs.glob("seg_*.json"))) < total
    result = run_longvid("render", sb, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not any(s["reused"] for s in _sidecar(tmp_path / "four.mp4")["segments"][:2])
    fresh = tmp_path / "fresh.mp4"
    assert run_longvid("render", sb, "-q", "-o", fresh, cwd=tmp_path).returncode == 0
    assert (frames_of(tmp_path / "four.mp4") == frames_of(fresh)).all()
    assert not list(segs.glob(".*tmp*"))


def test_the_run_directory_keeps_what_matches_and_removes_the_rest(tmp_path):
    """RunDir.open on its own (no render): identity mismatch, a segment past a shorter
    plan, a damaged file and a record gone each remove the segment, its files and the
    segments that read it, and nothing else."""
    run = RunDir(tmp_path / "r")
    reads = [((), False), ((0,), False), ((), False), ((2,), False), ((), True)]

    def commit_all(identities):
        run.open({"run_key": "k"}, identities=identities, reads=reads[:len(identities)])
        for i in range(len(identities)):
            if not run.is_done(i):
                for kind in KINDS[1:]:
                    segment_file(run.segments, i, kind).write_bytes(b"%d" % i)
                run.commit(i, {"index": i})
        run.close()

    def reopen(identities):
        run.open({"run_key": "k"}, identities=identities, reads=reads[:len(identities)])
        run.close()
        return [i for i in range(5) if run.is_done(i)]

    def files():
        return sorted(p.name for p in run.segments.iterdir())

    commit_all(("a", "b", "c", "d", "e"))
    assert run.record(3)["identity"] == "d"
    assert reopen(("a", "b", "C", "d")) == [0, 1]  # 3 reads 2; 4 is past the plan
    assert files() == sorted(f"seg_{i:04d}.{k}" for i in (0, 1) for k in KINDS)
    commit_all(("a", "b", "C", "d", "e"))
    segment_file(run.segments, 2, "mp4").write_bytes(b"damaged")
    assert reopen(("a", "b", "C", "d", "e")) == [0, 1]  # 3 reads 2, 4 reads everything
    commit_all(("a", "b", "C", "d", "e"))
    run.record_path(0).unlink()
    assert reopen(("a", "b", "C", "d", "e")) == [2, 3]
    assert not any(p.name.startswith(("seg_0000", "seg_0001", "seg_0004")) for p in
                   run.segments.iterdir())
