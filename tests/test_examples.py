"""Every example storyboard and every preset stays valid."""

from __future__ import annotations

import pytest
from conftest import REPO

from longvid.backends import backend_class
from longvid.presets import available_presets, load_preset
from longvid.render import load_job

STORYBOARDS = sorted((REPO / "storyboards").glob("*.yaml"))


@pytest.mark.parametrize("path", STORYBOARDS, ids=lambda p: p.stem)
def test_example_storyboards_plan(path):
    _, _, plan = load_job(path, None)
    assert plan.total_frames > 0 and plan.segments


def test_quickstart_meets_its_brief():
    sb, _, plan = load_job(REPO / "storyboards" / "quickstart.yaml", None)
    kinds = {s.transition.kind for s in sb.shots[1:]}
    assert len(sb.shots) >= 3 and plan.duration_s >= 10
    assert {"cut", "continue", "crossfade"} <= kinds


@pytest.mark.parametrize("name", list(available_presets()))
def test_presets_validate_and_name_a_backend(name):
    preset = load_preset(name)
    assert preset.name == name
    caps = backend_class(preset.backend).caps
    width, height = preset.resolution
    assert width % caps.size_multiple == 0 and height % caps.size_multiple == 0
