"""Progress: plain lines in logs, rich bars on a terminal, an ETA from measured segments."""

from __future__ import annotations

from conftest import HARBOUR

from longvid.progress import PlainProgress, RichProgress, make_progress
from longvid.render import load_job


def _plan():
    return load_job(HARBOUR, None)[2]


def test_eta_is_measured_time_per_frame_times_frames_left():
    plan = _plan()
    progress = PlainProgress(quiet=True)
    progress.start(plan, "q")
    assert progress.eta_s() is None  # nothing measured yet: no made-up ETA
    first, second = plan.segments[:2]
    progress.segment_done(first, skipped=True, seconds=0.0)  # resumed: not a measurement
    assert progress.eta_s() is None
    progress.segment_done(second, skipped=False, seconds=2.0)
    left = sum(s.num_frames for s in plan.segments[2:])
    assert progress.eta_s() == left * 2.0 / second.num_frames


def test_plain_lines_go_to_stderr(capsys):
    plan = _plan()
    progress = PlainProgress()
    progress.start(plan, "quickstart.yaml")
    progress.segment_done(plan.segments[0], skipped=False, seconds=1.5)
    progress.segment_done(plan.segments[1], skipped=True, seconds=0.0)
    out, err = capsys.readouterr()
    assert out == ""
    lines, n = err.splitlines(), len(plan.segments)
    assert lines[0].startswith(f"[quickstart.yaml] segment 1/{n} shot harbour 0:00.00 1.5s, ETA ")
    assert f"segment 2/{n}" in lines[1] and "resumed (already done)" in lines[1]


def test_rich_bars_track_segments_and_steps():
    plan = _plan()
    progress = RichProgress()
    progress.start(plan, "q")
    progress.segment_start(plan.segments[0])
    progress.step(2, 4)
    assert progress.bars.tasks[1].completed == 2 and progress.bars.tasks[1].total == 4
    progress.segment_done(plan.segments[0], skipped=False, seconds=1.0)
    assert progress.bars.tasks[0].completed == 1
    assert progress.bars.tasks[0].fields["eta"].startswith("ETA 0:")
    progress.finish()


def test_non_tty_and_quiet_get_plain_progress():
    assert isinstance(make_progress(quiet=True), PlainProgress)
    assert isinstance(make_progress(quiet=False), PlainProgress)  # pytest's stderr is no TTY
