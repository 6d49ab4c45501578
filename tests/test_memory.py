"""The memory bank, recall, retrieval, prompt blending and the drift monitor.

Pure parts are tested on synthetic keyframes whose right answer is known; the loop
parts on real renders with the tiny backend.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import Spy, write

from longvid.generate import render_segments
from longvid.memory.bank import Keyframe, MemoryBank
from longvid.memory.descriptor import describe, thumbnail
from longvid.memory.drift import correct_frames, correct_latents, read_drift
from longvid.memory.recall import choose_memory, stack_latents
from longvid.memory.store import replay_bank
from longvid.plan import make_plan
from longvid.presets import load_preset
from longvid.rundir import RunDir
from longvid.storyboard import load_storyboard

RNG = np.random.default_rng(0)
PLACES = {name: (RNG.normal(size=(16, 6, 8)).astype(np.float32),  # a place's latent
                 RNG.integers(0, 256, size=3))  # and its dominant colour
          for name in ("harbour", "market", "forest", "desert", "city")}


def view(place: str, segment: int, *, shot: str | None = None, take: int = 0, noise=0.1,
         sharp: float = 1.0) -> Keyframe:
    """A keyframe of `place`: its latent plus noise, a thumbnail in its colour."""
    base, colour = PLACES[place]
    rng = np.random.default_rng(segment * 7 + len(place))
    latent = (base + noise * rng.normal(size=base.shape)).astype(np.float32)
    thumb = np.clip(colour + rng.normal(0, 12, size=(64, 64, 3)), 0, 255).astype(np.uint8)
    return Keyframe(segment=segment, take=take, shot_id=shot or place, frame=segment * 10,
                    prompt=place, latent=latent, thumb=thumb,
                    descriptor=describe(latent, thumb), sharpness=sharp)


# --- bank -----------------------------------------------------------------------------


def test_the_bank_keeps_its_budget_and_forgets_near_duplicates_first():
    bank = MemoryBank(capacity=4)
    bank.add([view("harbour", 0), view("harbour", 1, noise=0.01)])
    bank.add([view("market", 2), view("harbour", 3, noise=0.01)])
    assert len(bank.entries) == 4
    bank.add([view("forest", 4)])
    assert len(bank.entries) == 4  # the budget, not the video's length
    keys = [e.key for e in bank.entries]
    assert (0, 0) in keys, "a shot's first keyframe (its anchor) is never evicted"
    assert (2, 20) in keys and (4, 40) in keys, "distinct places stay"
    assert keys.count((1, 10)) + keys.count((3, 30)) == 1, "one near-duplicate went"
    assert [e.key for e in bank.last] == [(4, 40)]


def test_eviction_is_deterministic_so_a_replay_rebuilds_the_same_bank():
    views = [view(p, i) for i, p in enumerate(["harbour", "market", "harbour", "forest",
                                                "harbour", "desert", "city", "market"])]
    a, b = MemoryBank(capacity=5), MemoryBank(capacity=5)
    for v in views:
        a.add([v])
    b.add(views[:3])
    for v in views[3:]:
        b.add([v])
    assert [e.key for e in a.entries] == [e.key for e in b.entries]


# --- recall and retrieval --------------------------------------------------------------


def test_recall_by_id_gives_the_named_shots_sharpest_keyframe():
    bank = MemoryBank()
    bank.add([view("harbour", 0, sharp=1.0), view("harbour", 1, sharp=5.0)])
    bank.add([view("market", 2, take=1), view("market", 3, take=1)])
    picks = choose_memory(bank, segment=4, take=2, shot_id="again", recall=("harbour",),
                          continuing=False, budget=2)
    assert [(p.reason, p.keyframe.segment) for p in picks] == [("recall", 1)]
    assert choose_memory(bank, segment=4, take=2, shot_id="again", recall=("harbour",),
                         continuing=False, budget=0) == []


def test_automatic_retrieval_finds_the_place_seen_long_ago():
    bank = MemoryBank()
    for i, place in enumerate(["harbour", "market", "forest", "desert", "city", "market"]):
        bank.add([view(place, i, shot="long", take=0)])
    bank.add([view("forest", 6, shot="long", noise=0.3)])  # the camera is back in the forest
    picks = choose_memory(bank, segment=7, take=0, shot_id="long", recall=(), continuing=True,
                          budget=2)
    autos = [p for p in picks if p.reason == "auto"]
    assert [p.keyframe.segment for p in autos] == [2], picks
    assert [p.reason for p in picks] == ["anchor", "auto"]  # the shot's start, then the forest


def test_no_retrieval_for_a_place_never_seen_and_no_near_duplicates():
    bank = MemoryBank()
    for i, place in enumerate(["harbour", "harbour", "market"]):
        bank.add([view(place, i, shot="s", noise=0.001)])
    bank.add([view("city", 3, shot="s")])
    picks = choose_memory(bank, segment=4, take=0, shot_id="s", recall=(), continuing=True,
                          budget=3)
    assert [p.reason for p in picks] == ["anchor"]  # nothing looks like the city
    bank.add([view("harbour", 4, shot="s", noise=0.001)])
    picks = choose_memory(bank, segment=9, take=0, shot_id="t", recall=(), continuing=True,
                          budget=3)
    assert [p.keyframe.segment for p in picks] in ([0], [1]), "0 and 1 are duplicates"
    latents = stack_latents(picks)
    assert latents.shape == (1, 16, 1, 6, 8)


# --- the drift monitor ------------------------------------------------------------------


def drifting_frames(step: int) -> np.ndarray:
    """A scene whose colours warm up by `step` per segment: uint8 (4, 32, 32, 3)."""
    rng = np.random.default_rng(1)
    base = rng.integers(40, 200, size=(4, 32, 32, 3)).astype(np.int16)
    return np.clip(base + np.array([step, 0, -step]), 0, 255).astype(np.uint8)


def test_drift_readings_grow_with_a_drifting_sequence_and_the_correction_pulls_back():
    frames0 = drifting_frames(0)
    latent0 = np.random.default_rng(2).normal(size=(16, 1, 4, 4)).astype(np.float32)
    anchor = Keyframe(segment=0, take=0, shot_id="s", frame=0, prompt="p", latent=latent0[:, 0],
                      thumb=thumbnail(frames0[2]), descriptor=np.zeros(4, np.float32),
                      sharpness=1.0)
    readings = [read_drift(latent0 + 0.2 * k, drifting_frames(12 * k), anchor) for k in range(6)]
    colour = [r.colour_shift_de for r in readings]
    assert [r.colour_chi2 for r in readings] == sorted(r.colour_chi2 for r in readings)
    shift = [r.latent_mean_dist for r in readings]
    assert colour == sorted(colour) and colour[-1] > 5 * max(colour[0], 1e-3)
    assert shift == sorted(shift) and shift[0] < 1e-6
    assert not readings[0].drifted() and readings[-1].drifted()
    assert read_drift(latent0, frames0, None).colour_chi2 is None  # no anchor: nothing to compare

    fixed = correct_frames(drifting_frames(60), anchor)
    before = read_drift(latent0, drifting_frames(60), anchor)
    after = read_drift(latent0, fixed, anchor)
    assert after.colour_shift_de < 0.6 * before.colour_shift_de
    assert after.colour_chi2 < before.colour_chi2
    moved = (latent0 + 1.0)[None]  # (1, 16, 1, 4, 4), every channel shifted
    pulled = correct_latents(moved, anchor)
    assert abs(pulled.mean() - latent0.mean()) < abs(moved.mean() - latent0.mean())
    detail = lambda z: z - z.mean(axis=(-2, -1), keepdims=True)  # noqa: E731
    assert np.allclose(detail(pulled), detail(moved), atol=0.35), "details are left alone"


# --- in the loop ---------------------------------------------------------------------------

RETURN = """\
version: 1
resolution: 32x32
seed: 5
shots:
  - {id: harbour, duration: 3s, prompt: a harbour}
  - {id: market, duration: 2s, prompt: a market, transition: cut}
  - {id: back, duration: 2s, prompt: the harbour again, transition: cut, recall: [harbour]}
"""


def render(tmp_path, text, tiny, name="run", stop_after=None):
    sb = write(tmp_path / f"{name}.yaml", text)
    plan = make_plan(load_storyboard(sb), load_preset("tiny"), tiny.caps)
    run = RunDir(tmp_path / name)
    run.open({"run_key": "k"})
    spy = Spy(tiny)
    for done in render_segments(plan, spy, run, crf=0):
        if stop_after is not None and done.segment.index == stop_after:
            break
    run.close()
    return plan, run, spy


@pytest.fixture(scope="module")
def returned(tmp_path_factory, tiny):
    """RETURN rendered once, for the tests that only read its run directory."""
    return render(tmp_path_factory.mktemp("return"), RETURN, tiny)


def test_a_cut_keeps_the_bank_and_recall_puts_the_recalled_shot_in_the_window(returned,
                                                                                tmp_path, tiny):
    plan, run, spy = returned
    back = [k for k, s in enumerate(plan.segments) if s.shot_id == "back"]
    first = spy.requests[back[0]]
    assert first.context is None, "a cut drops the recent context"
    record = run.record(back[0])
    assert [(m["reason"], m["shot"]) for m in record["memory"]] == [("recall", "harbour")]
    harbour = replay_bank(run.segments, back[0], 64).of_shot("harbour")
    recalled = next(k for k in harbour if k.segment == record["memory"][0]["segment"]
                    and k.frame == record["memory"][0]["frame"])
    assert torch.equal(first.memory, torch.from_numpy(recalled.latent[None, :, None]))

    _, _, plain = render(tmp_path, RETURN.replace(", recall: [harbour]", ""), tiny, "plain")
    assert plain.requests[back[0]].memory is None
    assert not np.array_equal(plain.outputs[back[0]].frames, spy.outputs[back[0]].frames), \
        "the recalled keyframe changes what is generated"


def test_the_bank_after_a_resume_is_the_bank_of_an_uninterrupted_run(returned, tmp_path, tiny):
    plan, whole, _ = returned
    _, part, _ = render(tmp_path, RETURN, tiny, "part", stop_after=2)
    assert not part.is_done(3)
    _, part, spy = render(tmp_path, RETURN, tiny, "part")  # resume
    assert spy.requests[0].seed == plan.segments[3].seed  # the resume starts at segment 3
    assert len(spy.requests) == len(plan.segments) - 3
    n = len(plan.segments)
    a, b = replay_bank(whole.segments, n, 64), replay_bank(part.segments, n, 64)
    assert [e.key for e in a.entries] == [e.key for e in b.entries] and len(a.entries) == 2 * n
    for x, y in zip(a.entries, b.entries, strict=True):
        assert np.array_equal(x.latent, y.latent) and np.array_equal(x.thumb, y.thumb)
        assert np.array_equal(x.descriptor, y.descriptor)
    for k in range(n):
        assert whole.record(k)["memory"] == part.record(k)["memory"]
        assert whole.record(k)["drift"] == part.record(k)["drift"]


BLEND = """\
version: 1
resolution: 32x32
seed: 2
shots:
  - {id: a, duration: 3s, prompt: a red sky}
  - {id: b, duration: 3s, prompt: a blue sea, transition: {type: continue, seconds: 2}}
"""


def test_a_continue_transition_mixes_the_prompts_step_by_step(tmp_path, tiny):
    plan, _, spy = render(tmp_path, BLEND, tiny)
    mix = [(s.first_latent, s.shot_id, s.blend_weight) for s in plan.segments if s.blend_prompt]
    share_of_b = [w if shot == "a" else 1 - w for _, shot, w in mix]
    assert len(mix) >= 4 and share_of_b == sorted(share_of_b), mix
    assert 0 < share_of_b[0] < 0.5 < share_of_b[-1] < 1
    req = next(r for r in spy.requests if r.blend_prompt)
    expected = ((1 - req.blend_weight) * tiny._embed(req.prompt)
                + req.blend_weight * tiny._embed(req.blend_prompt))
    assert torch.allclose(req.conditioning(tiny._embed), expected)
    assert not torch.allclose(req.conditioning(tiny._embed), tiny._embed(req.prompt))

    hard = make_plan(load_storyboard(write(tmp_path / "hard.yaml", BLEND.replace(
        "seconds: 2", "seconds: 0"))), load_preset("tiny"), tiny.caps)
    assert not any(s.blend_prompt for s in hard.segments)


def test_plan_warns_when_recall_will_be_ignored(tmp_path, tiny):
    from dataclasses import replace

    sb = load_storyboard(write(tmp_path / "r.yaml", RETURN))
    plan = make_plan(sb, load_preset("tiny"), tiny.caps)
    assert plan.warnings == () and plan.segments[-1].recall == ("harbour",)
    deaf = make_plan(sb, load_preset("tiny"), replace(tiny.caps, memory=None))
    assert "recall" in deaf.warnings[0] and "back" in deaf.warnings[0]


@pytest.mark.parametrize("anti_drift", [True, False])
def test_drift_readings_are_recorded_and_the_switch_is_honoured(request, tmp_path, tiny,
                                                                 anti_drift):
    if anti_drift:
        _, run, _ = request.getfixturevalue("returned")
    else:
        _, run, _ = render(tmp_path, RETURN.replace("seed: 5", "seed: 5\nanti_drift: false"),
                           tiny)
    records = [run.record(k) for k in range(len(list(run.segments.glob("seg_*.json"))))]
    assert all(set(r["drift"]) >= {"colour_shift_de", "colour_chi2", "latent_mean_dist",
                                   "sharpness", "flicker", "corrected"} for r in records)
    corrected = [k for k, r in enumerate(records) if r["drift"]["corrected"]]
    if anti_drift:
        assert 1 in corrected, "the harbour drifts from its anchor by segment 1 and is pulled back"
    else:
        assert corrected == []
    json.dumps(records)  # plain JSON for `longvid report`
