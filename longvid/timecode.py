"""Times as users write them (`6`, "6s", "1.5s", "48f", "0:06.5") and frame math.

Pure: no I/O. Seconds are kept as exact fractions so that "1.5s" at 16 fps is
exactly 24 frames; rounding happens once, when a time meets a frame rate.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

_SECONDS = re.compile(r"^(\d+(?:\.\d+)?)\s*s?$")
_FRAMES = re.compile(r"^(\d+)\s*f$")
_CLOCK = re.compile(r"^(?:(\d+):)?(\d+):(\d{1,2}(?:\.\d+)?)$")

TIME_FORMS = '6, "6s", "1.5s", "48f" (frames) or "0:06.5" (m:ss.s)'
MAX_SECONDS = 24 * 3600  # the longest time or storyboard: checked before any per-frame work
MAX_FRAMES = MAX_SECONDS * 120  # at the highest frame rate a storyboard may ask for


@dataclass(frozen=True)
class Time:
    """A point or length on the timeline: exact seconds, or a whole number of frames."""

    seconds: Fraction | None = None
    frames: int | None = None

    def to_frames(self, fps: int) -> int:
        if self.frames is not None:
            return self.frames
        assert self.seconds is not None
        exact = self.seconds * fps
        return math.floor(exact + Fraction(1, 2))  # round half up, never banker's rounding

    def to_seconds(self, fps: int) -> float:
        return self.frames / fps if self.frames is not None else float(self.seconds or 0)

    def __str__(self) -> str:
        if self.frames is not None:
            return f"{self.frames}f"
        return f"{float(self.seconds or 0):g}s"


def parse_time(value: object) -> Time:
    """Parse one time value; raise ValueError with the accepted forms on failure."""
    time = _parse(value)
    if (time.seconds or 0) > MAX_SECONDS or (time.frames or 0) > MAX_FRAMES:
        raise ValueError(f"{_shown(value)} is longer than 24 h, the longest time a "
                         "storyboard may name")
    return time


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _parse(value: object) -> Time:
    wrong = ValueError(f"expected a time like {TIME_FORMS}, got {_shown(value)}")
    if isinstance(value, bool):
        raise wrong
    if isinstance(value, int):
        return Time(seconds=Fraction(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise wrong
        return Time(seconds=Fraction(str(value)))
    if isinstance(value, str):
        text = value.strip()
        if m := _FRAMES.match(text):
            return Time(frames=int(m.group(1)))
        if m := _SECONDS.match(text):
            return Time(seconds=Fraction(m.group(1)))
        if m := _CLOCK.match(text):
            hours, minutes, seconds = int(m.group(1) or 0), int(m.group(2)), Fraction(m.group(3))
            if seconds >= 60 or (m.group(1) is not None and minutes >= 60):
                raise ValueError(f"{_shown(value)}: minutes and seconds of a clock time are "
                                 f"below 60 (write {TIME_FORMS})")
            return Time(seconds=hours * 3600 + minutes * 60 + seconds)
    raise wrong


def timecode(frame: int, fps: int) -> str:
    """Frame index -> "m:ss.ss" for tables and messages."""
    seconds = frame / fps
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}:{rest:05.2f}"
