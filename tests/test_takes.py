"""A take's geometry against the definitions it encodes, counted out latent by latent."""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import product

import pytest

from longvid.takes import TakeGeometry, ceil_div, split_windows


def test_ceil_div_rounds_up():
    for numerator, denominator in product(range(-20, 21), range(1, 9)):
        assert ceil_div(numerator, denominator) == math.ceil(Fraction(numerator, denominator))


@pytest.mark.parametrize("stride", [1, 2, 4])
@pytest.mark.parametrize("continues", [False, True])
def test_boundaries_match_the_frames_each_latent_holds(stride, continues):
    for frames, fade_in, fade_out in product(range(1, 40), range(0, 9, 3), range(0, 9, 4)):
        geometry = TakeGeometry.spanning(100, 100 + frames, fade_in, fade_out, stride,
                                         continues)
        held = [1 if j == 0 and not continues else stride for j in range(200)]
        assert all(geometry.local_frame(j) == sum(held[:j]) for j in range(50))
        latents = geometry.num_latents
        assert geometry.local_frame(latents) >= geometry.generated_frames
        assert geometry.local_frame(latents - 1) < geometry.generated_frames
        first = next(j for j in range(latents + 1)
                     if j == latents or geometry.local_frame(j) >= fade_in)
        last = max(j for j in range(latents)
                   if j == 0 or geometry.local_frame(j) <= geometry.held_from)
        assert geometry.switch_range() == (first, last)
        assert geometry.origin == 100 - geometry.lead_frames
        assert geometry.lead_frames + geometry.tail_frames == (fade_in + 1) // 2 + fade_out // 2


def test_windows_tile_the_take_and_split_at_every_switch():
    geometry = TakeGeometry.spanning(0, 200, 0, 8, 4, False)
    windows = split_windows(geometry, [0, 20], (), max_latents=9, new_latents=7)
    assert windows is not None
    assert windows[0].first_latent == 0 and windows[0].num_latents == 9
    assert all(w.num_latents <= 7 for w in windows[1:])
    ends = [w.first_latent + w.num_latents for w in windows]
    assert [w.first_latent for w in windows[1:]] == ends[:-1] and ends[-1] == 52
    assert 20 in [w.first_latent for w in windows]
    assert [w.switch for w in windows] == [0 if w.first_latent < 20 else 20 for w in windows]
    frames = [geometry.frames_of(w, 2) for w in windows]
    assert sum(f.emit_frames for f in frames) == 200 - 4  # the crossfade's tail is held
    assert [f.hold_frames for f in frames if f.hold_frames] == [8]
