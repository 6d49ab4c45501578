"""The segment loop on the tiny backend: what each segment receives and what it writes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL, Spy, write

from longvid.generate import render_segments
from longvid.mux import encode_frames, read_frames
from longvid.plan import make_plan
from longvid.presets import load_preset
from longvid.rundir import RunDir
from longvid.storyboard import load_storyboard
from longvid.transitions import crossfade


def render(small: Path, run_dir: Path, tiny):
    plan = make_plan(load_storyboard(small), load_preset("tiny"), tiny.caps)
    run = RunDir(run_dir)
    run.open({"run_key": "k"})
    spy = Spy(tiny)
    done = list(render_segments(plan, spy, run, crf=0))
    run.close()
    return plan, run, spy, done


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, tiny):
    """SMALL rendered once for the tests that only read the run; copy `run.root` to change it."""
    root = tmp_path_factory.mktemp("generate")
    return render(write(root / "small.yaml", SMALL), root / "run", tiny)


def reopened(run: RunDir, tmp_path: Path) -> RunDir:
    """A copy of a finished run directory, opened as a new render would open it."""
    copy = RunDir(Path(shutil.copytree(run.root, tmp_path / "run")))
    copy.open({"run_key": "k"})
    return copy


def test_each_segment_gets_the_right_context_prompt_and_seed(rendered):
    plan, run, spy, done = rendered
    assert [d.segment.index for d in done] == list(range(len(plan.segments)))
    assert not any(d.skipped for d in done)
    for k, (seg, req) in enumerate(zip(plan.segments, spy.requests, strict=True)):
        assert (req.prompt, req.seed, req.num_latents) == (seg.prompt, seg.seed, seg.num_latents)
        if seg.context_latents == 0:
            assert req.context is None  # a cut (or the start) carries nothing over
        else:  # within a take: the previous segment's tail latents, untouched unless the
            # drift monitor corrected them (then only their low frequencies moved)
            tail = spy.outputs[k - 1].latents[:, :, -seg.context_latents:]
            assert torch.equal(req.context, run.load_state(k - 1)["context"])
            if run.record(k - 1)["drift"]["corrected"]:
                moved = req.context - tail
                assert moved.abs().max() > 0 and moved.std() < 0.5 * tail.std()
            else:
                assert torch.equal(req.context, tail)
    cut = next(s for s in plan.segments if s.shot_id == "c")
    assert cut.context_latents == 0


def test_timed_prompt_switch_reaches_the_backend(rendered):
    _, _, spy, _ = rendered
    prompts = [r.prompt for r in spy.requests]
    assert prompts.index("a blue harbour") > prompts.index("a red harbour")
    assert "a green pier" in prompts


def test_crossfade_dissolves_the_held_tail_into_the_next_take(rendered, tmp_path):
    plan, run, spy, _ = rendered
    k = next(i for i, s in enumerate(plan.segments) if s.blend_frames)
    seg, before = plan.segments[k], plan.segments[k - 1]
    held = run.load_state(k - 1)["held"].numpy()
    assert held.shape == (before.hold_frames, 32, 32, 3) == (seg.blend_frames, 32, 32, 3)
    raw = spy.outputs[k].frames[:seg.emit_frames]
    expected = raw.copy()
    expected[:seg.blend_frames] = crossfade(held, raw[:seg.blend_frames])
    written = read_frames(run.video(k), 32, 32)
    assert written.shape[0] == seg.emit_frames

    def roundtrip(frames):  # the same encoder settings, so only the pixels can differ
        encode_frames(frames, tmp_path / "check.mp4", plan.fps, crf=0)
        return read_frames(tmp_path / "check.mp4", 32, 32)

    assert np.array_equal(written, roundtrip(expected))  # the dissolve is what was written
    assert not np.array_equal(written[:seg.blend_frames], roundtrip(raw)[:seg.blend_frames])
    assert np.array_equal(written[seg.blend_frames:], roundtrip(raw)[seg.blend_frames:])
    # the held frames were not written by the segment that generated them
    assert read_frames(run.video(k - 1), 32, 32).shape[0] == before.emit_frames


def test_committed_segments_are_skipped(rendered, tmp_path, tiny):
    plan, run, _, _ = rendered
    spy, copy = Spy(tiny), reopened(run, tmp_path)
    done = list(render_segments(plan, spy, copy, crf=0))
    copy.close()
    assert all(d.skipped for d in done) and spy.requests == []


def test_every_prompt_is_prepared_once_before_the_first_segment(rendered, tmp_path, tiny):
    plan, run, spy, _ = rendered
    assert spy.prepared == sorted({s.prompt for s in plan.segments})
    again, copy = Spy(tiny), reopened(run, tmp_path)
    list(render_segments(plan, again, copy, crf=0))
    copy.close()
    assert not hasattr(again, "prepared")  # nothing left to generate: nothing to encode
