"""benchmarks/speed_estimate.py: the FLOP arithmetic behind docs/presets.md's estimated
time per minute of video reproduces the figures it cites, and counts the forwards a
render of the preset really plans."""

from __future__ import annotations

import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from speed_estimate import (  # noqa: E402
    CARDS_TFLOPS,
    REAL_PRESETS,
    WAN_1_3B,
    estimate,
    minute_plan,
    seconds,
    span,
)


def test_wan_1_3b_has_the_1_25_b_block_linear_parameters_of_causal_wan_md():
    dense, _ = WAN_1_3B.forward_flop(tokens=1, keys=0)
    assert dense / 2 == pytest.approx(1.25e9, rel=0.01)


def test_a_causal_forward_is_the_28_tflop_of_causal_wan_md():
    dense, attention = WAN_1_3B.forward_flop(tokens=4680, keys=18720)  # a block, 12 frames
    assert dense == pytest.approx(11.7e12, rel=0.01)
    assert dense + attention == pytest.approx(28.4e12, rel=0.03)


def test_a_skyreels_forward_is_the_audit_s_0_70_pflop_and_20_to_47_s():
    dense, attention = WAN_1_3B.forward_flop(tokens=55080, keys=55080)  # 27 latents x 2040
    assert dense + attention == pytest.approx(0.70e15, rel=0.02)
    assert seconds(dense, attention, CARDS_TFLOPS["RTX 4070-class"]) == pytest.approx(20, abs=1)
    assert seconds(dense, attention, CARDS_TFLOPS["RTX 3060 12GB"]) == pytest.approx(47, abs=1.5)


def test_the_minute_estimates_are_the_audit_s_and_count_the_planned_forwards():
    sky = estimate("skyreels-df-1.3b")
    # audit: 6-14 h with 2 recalled latents in every window; memory is opt-in now, so each
    # window is 2 latents shorter: 5.3-12.3 h
    assert 5.0 * 60 < sky.minutes_per_minute["RTX 4070-class"] < 5.5 * 60
    assert 12.0 * 60 < sky.minutes_per_minute["RTX 3060 12GB"] < 12.5 * 60
    live = estimate("longlive-1.3b")
    _, plan, _ = minute_plan("longlive-1.3b")
    assert plan.duration_s == 60 and live.forwards_per_minute == plan.forwards
    # 960 frames = 241 latents (a take's first latent is one frame): 81 blocks, the last of 1
    assert plan.stream.blocks == 81
    assert live.forwards_per_minute == 81 * 5 + plan.stream.replay_forwards
    fast, slow = (live.minutes_per_minute[c] for c in CARDS_TFLOPS)
    assert slow / fast == pytest.approx(58 / 25)
    assert 3 < fast < slow < 20  # minutes, not hours
    assert live.vram_peak_gib < 12


def test_every_real_preset_has_a_row():
    rows = [estimate(name) for name in REAL_PRESETS]
    assert all(r.vram_peak_gib > 0 and set(r.minutes_per_minute) == set(CARDS_TFLOPS)
               for r in rows)
    assert span(rows[0]).endswith(" h") and span(rows[-1]).endswith(" min")
