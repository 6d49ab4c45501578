"""The live preview: `render --preview` and `longvid preview` on a run in progress or stopped."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from conftest import ffmpeg_make_clip, write
from mediacheck import frames_of

from longvid.mux import ffmpeg_exe, probe
from longvid.preview import PREVIEW_TAG, preview_path
from longvid.progress import PlainProgress
from longvid.render import BackendPool, render_storyboard

# three segments: 33 frames, then 11 (and 8 held back for the crossfade), then 20 (the
# 8 held ones dissolved into the new take's first 8)
TWO_SHOTS = """\
version: 1
preset: tiny
resolution: 32x32
seed: 3
shots:
  - {id: a, duration: 3s, prompt: a red harbour}
  - {id: b, duration: 1s, prompt: a market, transition: {type: crossfade, seconds: 0.5}}
"""


@pytest.fixture(scope="module")
def pool():
    from longvid.presets import load_preset

    pool = BackendPool()
    pool.get(load_preset("tiny"))  # loaded once for the module's renders
    return pool


class Watch(PlainProgress):
    """Looks at the preview as each segment is reported (after its commit), and stops the
    render, as Ctrl-C does, after `stop_after` segments."""

    def __init__(self, output, stop_after=None):
        super().__init__(quiet=True)
        self.preview, self.stop_after, self.seen = preview_path(output), stop_after, []

    def segment_done(self, seg, skipped, seconds):
        super().segment_done(seg, skipped, seconds)
        self.seen.append(frames_of(self.preview) if self.preview.exists() else None)
        if self.stop_after is not None and len(self.seen) == self.stop_after:
            raise KeyboardInterrupt


def render(sb, pool, progress, **kw):
    return render_storyboard(sb, output=None, preset_name=None, crf=18, fresh=False, pool=pool,
                             progress=progress, **kw)


def test_the_preview_plays_after_each_segment_and_goes_with_the_final_video(tmp_path, pool):
    sb = write(tmp_path / "s.yaml", TWO_SHOTS)
    out, partial = tmp_path / "s.mp4", tmp_path / "s.partial.mp4"
    watch = Watch(out)
    render(sb, pool, watch, preview=True)
    final = frames_of(out)
    assert final.shape == (64, 32, 32, 3)
    # after segment 1: its 33 frames; after 2: 44 (the 8 held for the crossfade come later);
    # the last one is followed by the video itself
    assert [None if f is None else len(f) for f in watch.seen] == [33, 44, 44]
    for seen in watch.seen:  # stream copies of the same segments: the final's first frames
        assert np.array_equal(seen, final[:len(seen)])
    assert not partial.exists(), "the preview is removed once the video is written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.mp4", "s.run", "s.yaml"]


def test_an_interrupted_render_leaves_a_playable_preview_and_preview_remakes_it(
        tmp_path, pool, cli):
    sb = write(tmp_path / "s.yaml", TWO_SHOTS)
    out, partial = tmp_path / "s.mp4", tmp_path / "s.partial.mp4"
    with pytest.raises(KeyboardInterrupt):
        render(sb, pool, Watch(out, stop_after=1), preview=True)
    first = frames_of(partial)
    assert first.shape == (33, 32, 32, 3)
    assert PREVIEW_TAG in probe(partial).tags and not list(tmp_path.glob(".*tmp*"))
    segment = frames_of(tmp_path / "s.run" / "segments" / "seg_0000.mp4")
    assert np.array_equal(first, segment)
    plays = subprocess.run([ffmpeg_exe(), "-v", "error", "-xerror", "-i", str(partial), "-f",
                            "null", "-"], capture_output=True, text=True)  # as a player would
    assert plays.returncode == 0 and plays.stderr == ""

    partial.unlink()
    for target in (out, tmp_path / "s.run"):  # the output's name, or the run directory
        code, stdout, err = cli("preview", target)
        assert code == 0, err
        assert stdout.strip() == str(partial)
        assert np.array_equal(frames_of(partial), first)
    code, stdout, _ = cli("preview", out, "--json")
    assert json.loads(stdout) == {"preview": str(partial), "run_dir": str(tmp_path / "s.run"),
                                  "frames": 33, "segments": 1}

    partial.unlink()
    resumed = Watch(out, stop_after=2)
    with pytest.raises(KeyboardInterrupt):  # a resumed render writes it before it generates
        render(sb, pool, resumed, preview=True)
    assert [len(f) for f in resumed.seen] == [33, 44]
    assert np.array_equal(resumed.seen[0], first)
    render(sb, pool, Watch(out))  # resumes without --preview: the preview still goes
    assert not partial.exists()
    assert np.array_equal(frames_of(out)[:44], resumed.seen[1])


def test_preview_joins_only_sealed_segments(tmp_path, pool, cli):
    """A segment whose video no longer matches its record (being rewritten, damaged) ends the
    preview there; the preview needs no lock, so it works beside a running render."""
    sb = write(tmp_path / "s.yaml", TWO_SHOTS)
    out = tmp_path / "s.mp4"
    with pytest.raises(KeyboardInterrupt):
        render(sb, pool, Watch(out, stop_after=2))
    segments = tmp_path / "s.run" / "segments"
    from longvid.rundir import RunDir

    run = RunDir(tmp_path / "s.run")
    run.open(json.loads((tmp_path / "s.run" / "manifest.json").read_text()))  # holds the lock
    try:
        code, stdout, err = cli("preview", out, "--json")
        assert code == 0, err
        assert json.loads(stdout)["frames"] == 44
        video = segments / "seg_0001.mp4"
        video.write_bytes(video.read_bytes()[:-10])  # no longer what the record sealed
        code, stdout, err = cli("preview", out, "--json")
        assert code == 0, err
        assert json.loads(stdout)["frames"] == 33
    finally:
        run.close()


def test_no_run_or_no_committed_segment_is_exit_3(tmp_path, pool, cli):
    code, _, err = cli("preview", tmp_path / "nothing.mp4")
    assert code == 3 and "no run of" in err
    (tmp_path / "folder").mkdir()
    code, _, err = cli("preview", tmp_path / "folder")
    assert code == 3 and "not a longvid run directory" in err

    class StopAtOnce(PlainProgress):
        def segment_start(self, seg):
            raise KeyboardInterrupt

    sb = write(tmp_path / "s.yaml", TWO_SHOTS)
    with pytest.raises(KeyboardInterrupt):
        render(sb, pool, StopAtOnce(quiet=True))
    code, _, err = cli("preview", tmp_path / "s.mp4")
    assert code == 3 and "has no committed segment yet" in err
    assert not (tmp_path / "s.partial.mp4").exists()


def test_the_preview_never_replaces_a_file_longvid_did_not_write_as_one(tmp_path, cli):
    from longvid.mux import concat
    from longvid.output import VIDEO_TAG

    sb = write(tmp_path / "s.yaml", TWO_SHOTS)
    out, partial = tmp_path / "s.mp4", tmp_path / "s.partial.mp4"
    (tmp_path / "clip").mkdir()
    clip = ffmpeg_make_clip(tmp_path / "clip" / "c.mp4", seconds=1)
    # a user's video, and a longvid video named like a preview (`s.partial.yaml`'s output)
    concat([clip], tmp_path / "clip" / "longvid.mp4", fps=16, total_frames=16,
           metadata={VIDEO_TAG: "0" * 64}, list_file=tmp_path / "clip" / "list.txt")
    for made in (clip, tmp_path / "clip" / "longvid.mp4"):
        partial.write_bytes(made.read_bytes())
        code, _, err = cli("render", sb, "--preview", "-q")
        assert code == 3 and "was not written by longvid as a preview" in err
        assert not (tmp_path / "s.run").exists(), "refused before any work"
        assert partial.read_bytes() == made.read_bytes()
    code, _, err = cli("render", sb, "-q")  # without --preview the file is left alone
    assert code == 0, err
    code, _, err = cli("preview", out)
    assert code == 3 and "was not written by longvid as a preview" in err
    assert partial.read_bytes() == (tmp_path / "clip" / "longvid.mp4").read_bytes()

    partial.unlink()
    assert cli("preview", out)[0] == 0 and len(frames_of(partial)) == 64  # a finished run
    code, _, err = cli("render", sb, "--preview")  # only joins again, and removes it
    assert code == 0, err
    assert f"preview: {partial}" in " ".join(err.split())
    assert not partial.exists()


def test_the_preview_of_an_extend_run_starts_with_the_clip(tmp_path, cli):
    clip = ffmpeg_make_clip(tmp_path / "clip.mp4", seconds=1, audio=True)
    code, _, err = cli("extend", clip, "-s", "1", "-q")
    assert code == 0, err
    out = tmp_path / "clip_extended.mp4"
    code, stdout, err = cli("preview", out, "--json")
    assert code == 0, err
    assert json.loads(stdout)["frames"] == 32
    partial = tmp_path / "clip_extended.partial.mp4"
    assert np.array_equal(frames_of(partial), frames_of(out))
    assert not probe(partial).has_audio  # the video's frames, not its sound


def test_a_long_render_refreshes_its_preview_in_linear_time():
    """A refresh copies the whole preview: after every segment up to 50, then every
    ceil(n / 50), so the copying over a 2,000-segment render is linear in its length
    (about 50 segment videos per segment) where a refresh after each would copy 2 million,
    and the preview lags by at most 2 % of what is done."""
    from longvid.preview import FULL_REFRESH_SEGMENTS, refresh_due

    assert all(refresh_due(n, 1) for n in range(1, FULL_REFRESH_SEGMENTS + 1))
    assert not refresh_due(51, 1) and refresh_due(51, 2) and refresh_due(1000, 20)
    copied, since, lag = 0, 0, 0
    for joined in range(1, 2001):
        since += 1
        if refresh_due(joined, since):
            copied, since = copied + joined, 0
        lag = max(lag, since / joined)
    assert copied < 2 * FULL_REFRESH_SEGMENTS * 2000 < 2000 * 2001 // 2 // 10
    assert lag <= 0.02
