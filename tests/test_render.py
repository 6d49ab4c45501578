"""`longvid render` end to end on the tiny backend: the mp4, its audio, metadata and sidecar."""

from __future__ import annotations

import fcntl
import json

import pytest
from conftest import make_wav, write
from mediacheck import audio_seconds, frames_of

from longvid.mux import probe
from longvid.render import run_dir_for

ONE_SHOT = "version: 1\nresolution: 32x32\nshots: [{id: a, prompt: %s, duration: 0.5s}]\n"


def test_render_writes_the_timeline_exactly(small, cli, tmp_path):
    code, out, err = cli("render", small, "-o", tmp_path / "out.mp4", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "ok" and result["frames"] == 88 and result["resumed_segments"] == 0
    info = probe(tmp_path / "out.mp4")
    assert (info.width, info.height, info.fps, info.frames) == (32, 32, 16, 88)  # 5.5 s @ 16
    assert info.duration_s == pytest.approx(5.5, abs=1 / 16)
    assert not info.has_audio
    assert info.tags["title"] == "small" and info.tags["longvid_seed"] == "7"
    sidecar = json.loads((tmp_path / "out.json").read_text())
    assert info.tags["longvid_storyboard_sha256"] == sidecar["storyboard_sha256"]
    assert sidecar["seed"] == 7 and sidecar["frames"] == 88 and sidecar["preset"] == "tiny"
    assert {"longvid", "diffusers", "torch"} <= set(sidecar["versions"])
    assert [s["index"] for s in sidecar["segments"]] == list(range(len(sidecar["segments"])))
    assert all(s["seed"] for s in sidecar["segments"]) and sidecar["timings"]["wall_s"] > 0
    assert (tmp_path / "out.run" / "manifest.json").exists()


@pytest.mark.parametrize("audio_s", [2.0, 9.0])  # shorter: padded; longer: trimmed
def test_audio_is_fitted_to_the_video(small, cli, tmp_path, audio_s):
    make_wav(tmp_path / "music.wav", audio_s)
    text = small.read_text().replace("seed: 7\n",
                                     "seed: 7\naudio: {path: music.wav, offset: 0.5s}\n")
    sb = write(tmp_path / "with_audio.yaml", text)
    code, _, err = cli("render", sb, "-q")
    assert code == 0, err
    info = probe(tmp_path / "with_audio.mp4")
    assert info.has_audio and info.frames == 88
    assert audio_seconds(tmp_path / "with_audio.mp4") == pytest.approx(5.5, abs=0.05)


def test_second_run_resumes_everything_and_changes_nothing(small, cli, tmp_path):
    assert cli("render", small, "-q")[0] == 0
    first = frames_of(tmp_path / "small.mp4")
    code, out, _ = cli("render", small, "--json")
    result = json.loads(out)
    assert code == 0 and result["resumed_segments"] == result["segments"]
    assert (frames_of(tmp_path / "small.mp4") == first).all()


def test_changed_size_refuses_to_resume_until_fresh(small, cli, tmp_path):
    """A changed prompt re-renders what it touches (tests/test_reuse.py); a change to what
    every segment shares asks for --fresh."""
    assert cli("render", small, "-q")[0] == 0
    small.write_text(small.read_text().replace("32x32", "48x32"))
    code, _, err = cli("render", small, "-q")
    assert code == 3 and "holds a render of a different storyboard" in err and "--fresh" in err
    code, out, _ = cli("plan", small, "--json")
    assert code == 0 and json.loads(out)["run"]["resumable"] is False
    assert not any(s["reused"] for s in json.loads(out)["segments"])
    code, out, _ = cli("render", small, "--fresh", "--json")
    assert code == 0 and json.loads(out)["resumed_segments"] == 0


def test_edits_that_do_not_change_frames_still_resume(small, cli, tmp_path):
    assert cli("render", small, "-q")[0] == 0
    small.write_text("# a new comment\n" + small.read_text().replace("title: small", "title: big"))
    code, out, _ = cli("render", small, "--json")
    assert code == 0 and json.loads(out)["resumed_segments"] > 0
    assert probe(tmp_path / "small.mp4").tags["title"] == "big"


def test_second_render_into_a_busy_run_directory_refuses(small, cli, tmp_path):
    run = run_dir_for(tmp_path / "small.mp4")
    run.mkdir(parents=True)
    with open(run / "run.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, _, err = cli("render", small)
    assert code == 4 and "another longvid render is writing to" in err


def test_longvid_home_holds_the_run_directories(small, cli, tmp_path, monkeypatch):
    monkeypatch.setenv("LONGVID_HOME", str(tmp_path / "home"))
    assert cli("render", small, "-q")[0] == 0
    runs = list((tmp_path / "home" / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("small-")
    assert not (tmp_path / "small.run").exists()


def test_missing_ffmpeg_is_exit_4_before_any_model_loads(small, cli, monkeypatch):
    monkeypatch.setenv("LONGVID_FFMPEG", "/nonexistent/ffmpeg")
    code, _, err = cli("render", small)
    assert code == 4 and "is not an executable file" in err


def test_batch_continues_past_a_bad_storyboard_and_reports_the_worst(cli, tmp_path):
    good = write(tmp_path / "good.yaml", ONE_SHOT % "sea")
    bad = write(tmp_path / "bad.yaml", "version: 1\nshots: []\n")
    also = write(tmp_path / "also.yaml", ONE_SHOT % "sky")
    code, out, err = cli("render", bad, good, also, "-o", tmp_path / "out", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 3
    assert [(r["source"], r["status"]) for r in lines] == [
        (str(bad), "error"), (str(good), "ok"), (str(also), "ok")]
    assert lines[0]["error"]["code"] == 3 and "shots must not be empty" in err
    assert probe(tmp_path / "out" / "good.mp4").frames == 8


def test_shards_split_a_batch_disjointly(cli, tmp_path):
    boards = [write(tmp_path / f"b{i}.yaml", ONE_SHOT % f"p{i}") for i in range(5)]
    seen = []
    for i in (1, 2):
        code, out, _ = cli("render", *boards, "--shard", f"{i}/2", "--json", "-o",
                           tmp_path / "o")
        assert code == 0
        seen.append([json.loads(line)["source"] for line in out.splitlines()])
    assert seen == [[str(boards[i]) for i in (0, 2, 4)], [str(boards[i]) for i in (1, 3)]]


@pytest.mark.parametrize("spec", ["0/2", "3/2", "x", "1/0"])
def test_bad_shard_is_a_usage_error(cli, small, spec):
    code, _, err = cli("render", small, "--shard", spec)
    assert code == 2 and "I/N" in err


def test_one_mp4_for_several_storyboards_is_a_usage_error(cli, tmp_path):
    a = write(tmp_path / "a.yaml", ONE_SHOT % "sea")
    code, _, err = cli("render", a, a, "-o", tmp_path / "x.mp4")
    assert code == 2 and "pass a folder with -o" in err


def test_a_finished_run_is_rejoined_without_loading_a_model(small, tmp_path):
    from longvid.progress import PlainProgress
    from longvid.render import BackendPool, render_storyboard

    def render(pool):
        return render_storyboard(small, output=tmp_path / "o.mp4", preset_name=None, crf=18,
                                 fresh=False, pool=pool, progress=PlainProgress(quiet=True))

    first_pool, second_pool = BackendPool(), BackendPool()
    render(first_pool)
    result = render(second_pool)
    assert len(first_pool.loaded) == 1 and second_pool.loaded == {}
    assert result.resumed_segments == result.segments
    sidecar = json.loads((tmp_path / "o.json").read_text())
    assert "diffusers" in sidecar["versions"]  # kept from the run that loaded the model


def test_run_directory_names_are_made_in_one_place(tmp_path):
    from longvid.memory.store import memory_path
    from longvid.rundir import RunDir

    run = RunDir(tmp_path / "r")
    assert [p.name for p in (run.video(7), run.record_path(7), run.state_path(7),
                             memory_path(run.segments, 7))] == [
        "seg_0007.mp4", "seg_0007.json", "seg_0007.state.safetensors",
        "seg_0007.memory.safetensors"]
    assert (run.state_path(-1).name, memory_path(run.segments, -1).name) == (
        "init.state.safetensors", "init.memory.safetensors")
