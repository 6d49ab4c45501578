"""Segment identities (longvid/identity.py) on random storyboards and random edits: an edit
changes the identity of exactly the segments whose own planned inputs changed and of
everything that reads them. Pure: plans only, no render."""

from __future__ import annotations

import dataclasses
import random

import pytest
import yaml
from conftest import write

from longvid.backends.tiny import TinyWanBackend
from longvid.errors import StoryboardError
from longvid.identity import rerolled, run_key, segment_identities
from longvid.plan import make_plan
from longvid.presets import load_preset
from longvid.storyboard import load_storyboard

PRESET = load_preset("tiny")
WITH_MEMORY = TinyWanBackend.caps
NO_MEMORY = dataclasses.replace(WITH_MEMORY, memory=None)
EDITS = ("prompt", "shot_seed", "duration", "transition", "recall", "camera", "title",
         "seed", "negative_prompt", "style", "nothing")


def _storyboard(rng: random.Random) -> dict:
    shots = []
    for i in range(rng.randint(2, 6)):
        shot = {"id": f"s{i}", "duration": f"{rng.randint(6, 60)}f"}
        if i:
            shot["transition"] = rng.choice(["continue", "cut", "cut", "crossfade"])
            if shot["transition"] == "crossfade":
                shot["transition"] = {"type": "crossfade", "seconds": 0.25}
        if rng.random() < 0.3:
            shot["prompts"] = [{"at": 0, "text": f"p{i}"}, {"at": "4f", "text": f"q{i}"}]
        else:
            shot["prompt"] = f"shot {i}"
        if i and rng.random() < 0.2:
            shot["recall"] = [f"s{rng.randrange(i)}"]
        shots.append(shot)
    return {"version": 1, "title": "t", "seed": rng.randrange(100), "resolution": "32x32",
            "shots": shots}


def _edit(sb: dict, kind: str, rng: random.Random) -> dict:
    sb = yaml.safe_load(yaml.safe_dump(sb))  # a deep copy
    shot = rng.choice(sb["shots"])
    if kind == "prompt":
        if "prompts" in shot:
            shot["prompts"][-1]["text"] += " at night"
        else:
            shot["prompt"] += " at night"
    elif kind == "shot_seed":
        shot["seed"] = rng.randrange(1000)
    elif kind == "duration":
        shot["duration"] = f"{int(shot['duration'][:-1]) + rng.randint(1, 12)}f"
    elif kind == "transition" and shot is not sb["shots"][0]:
        shot["transition"] = "cut" if shot.get("transition") == "continue" else "continue"
    elif kind == "recall" and shot is not sb["shots"][0]:
        shot["recall"] = [sb["shots"][0]["id"]]
    elif kind == "camera":
        shot["camera"] = "pan-left"
    elif kind in ("title", "negative_prompt", "style"):
        sb[kind] = "something else"
    elif kind == "seed":
        sb["seed"] += 1
    return sb


def _plan(tmp_path, name: str, sb: dict, caps):
    return make_plan(load_storyboard(write(tmp_path / name, yaml.safe_dump(sb))), PRESET, caps)


def _expected_changes(old, new, caps) -> set[int]:
    """What must re-render, spelled out independently of identity.py: every segment
    after a storyboard-wide change; else the segments whose planned fields changed (or
    that are new), then, repeatedly, every segment that reads one of them: a later
    segment of its take, the next segment when it dissolves into its held frames, and,
    with memory, every later segment that retrieves (it continues a take) or recalls."""
    wide = ("negative_prompt", "seed", "anti_drift", "loras")  # read by every segment
    if any(getattr(old, name) != getattr(new, name) for name in wide):
        return set(range(len(new.segments)))
    changed = {s.index for s in new.segments
               if s.index >= len(old.segments) or old.segments[s.index] != s}
    memory = caps.memory_latents > 0
    for seg in new.segments:  # in order, so one pass closes the set
        earlier = [s for s in new.segments if s.index < seg.index]
        reads = [s for s in earlier if s.take == seg.take]
        if seg.blend_frames:
            reads.append(earlier[-1])
        if memory and (seg.recall or seg.context_latents):
            reads = earlier
        if any(s.index in changed for s in reads):
            changed.add(seg.index)
    return changed


@pytest.mark.parametrize("caps", [WITH_MEMORY, NO_MEMORY], ids=["memory", "no-memory"])
def test_an_edit_changes_exactly_the_identities_that_read_it(tmp_path, caps):
    rng = random.Random(16)
    checked, partial = 0, 0
    for case in range(120):
        sb = _storyboard(rng)
        kind = EDITS[case % len(EDITS)]
        edited = _edit(sb, kind, rng)
        try:
            old, new = _plan(tmp_path, "a.yaml", sb, caps), _plan(tmp_path, "b.yaml", edited, caps)
        except StoryboardError:
            continue  # a random crossfade that does not fit, or a camera the shot cannot take
        before, after = segment_identities(old), segment_identities(new)
        assert segment_identities(old) == before, "identities are deterministic"
        assert len(set(after)) == len(after), "every segment has its own identity"
        changed = {i for i, ident in enumerate(after) if i >= len(before) or before[i] != ident}
        assert changed == _expected_changes(old, new, caps), (kind, sb, edited)
        if kind in ("title", "nothing"):
            assert not changed, kind
        if kind in ("seed", "negative_prompt", "style"):
            assert changed == set(range(len(after))), kind
        if kind == "prompt":
            assert changed, "a new prompt renders its shot again"
        partial += 0 < len(changed) < len(after)
        checked += 1
    assert checked >= 100
    assert partial >= 20, "edits that reuse part of the video are exercised"


def test_a_reroll_changes_its_shot_and_what_follows_it_only(tmp_path):
    sb = {"version": 1, "resolution": "32x32", "shots": [
        {"id": "a", "prompt": "x", "duration": "30f"},
        {"id": "b", "prompt": "y", "duration": "30f", "transition": "cut"},
        {"id": "c", "prompt": "z", "duration": "30f", "transition": "cut"}]}
    plan = _plan(tmp_path, "s.yaml", sb, NO_MEMORY)
    again = rerolled(plan, {"b": 1})
    twice = rerolled(plan, {"b": 2})
    b = [s.index for s in plan.segments if s.shot_id == "b"]
    before, after = segment_identities(plan), segment_identities(again)
    assert [i for i in range(len(before)) if before[i] != after[i]] == b
    assert all(again.segments[i].seed not in (plan.segments[i].seed, twice.segments[i].seed)
               for i in b)
    assert segment_identities(rerolled(plan, {"b": 1})) == after, "a reroll is reproducible"
    assert rerolled(plan, {"b": 0}) == plan
    assert run_key(again, PRESET.sha256, 18) == run_key(plan, PRESET.sha256, 18)


def test_what_every_segment_shares_is_the_run_key(tmp_path):
    sb = {"version": 1, "resolution": "32x32", "shots": [{"id": "a", "prompt": "x",
                                                          "duration": "30f"}]}
    plan = _plan(tmp_path, "s.yaml", sb, WITH_MEMORY)
    key = run_key(plan, PRESET.sha256, 18)
    edited = _plan(tmp_path, "t.yaml", sb | {"seed": 5, "title": "other"}, WITH_MEMORY)
    assert run_key(edited, PRESET.sha256, 18) == key
    bigger = _plan(tmp_path, "u.yaml", sb | {"resolution": "48x32"}, WITH_MEMORY)
    faster = _plan(tmp_path, "v.yaml", sb | {"fps": 24}, WITH_MEMORY)
    assert len({key, run_key(bigger, PRESET.sha256, 18), run_key(faster, PRESET.sha256, 18),
                run_key(plan, PRESET.sha256, 20), run_key(plan, "other preset", 18)}) == 5
