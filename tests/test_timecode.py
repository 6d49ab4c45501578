from fractions import Fraction

import pytest

from longvid.timecode import Time, parse_time, timecode


@pytest.mark.parametrize(("text", "fps", "frames"), [
    (6, 16, 96), ("6s", 16, 96), ("1.5s", 16, 24), ("48f", 16, 48), ("48f", 24, 48),
    ("0:06.5", 16, 104), ("1:00", 24, 1440), ("1:00:00", 1, 3600), (0.25, 24, 6),
    ("0.03s", 16, 0), ("0.0313s", 16, 1),  # 0.5008 frames rounds up, 0.48 down
    ("1.03125s", 16, 17),  # exactly 16.5 frames: half rounds up
])
def test_times_resolve_to_exact_frames(text, fps, frames):
    assert parse_time(text).to_frames(fps) == frames


def test_seconds_stay_exact_fractions():
    assert parse_time("1.1s").seconds == Fraction(11, 10)
    assert parse_time(-2).to_frames(16) == -32  # negative times survive to a clear plan error


@pytest.mark.parametrize("bad", ["two", "4 frames", "1:2:3:4", "", True, None, [1], "-1s"])
def test_bad_times_name_the_accepted_forms(bad):
    with pytest.raises(ValueError, match='"48f"'):
        parse_time(bad)


def test_timecode_and_str():
    assert timecode(104, 16) == "0:06.50"
    assert timecode(16 * 61, 16) == "1:01.00"
    assert str(Time(frames=3)) == "3f" and str(parse_time("1.5s")) == "1.5s"
