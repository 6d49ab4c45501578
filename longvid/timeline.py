"""The storyboard on the timeline, in frames: where each shot starts and ends, which take
it belongs to, and whether the format fits the backend. Pure; the first step of `plan`.

A *take* is a run of shots joined by `continue`; `cut` and `crossfade` start a new one.
"""

from __future__ import annotations

from dataclasses import dataclass

from longvid.backends.base import BackendCaps
from longvid.errors import StoryboardError
from longvid.presets import Preset
from longvid.storyboard import Storyboard
from longvid.takes import ceil_div
from longvid.timecode import timecode


@dataclass(frozen=True)
class PlannedShot:
    id: str
    start_frame: int
    end_frame: int
    take: int
    transition: str
    transition_frames: int
    recall: tuple[str, ...]


def _err(sb: Storyboard, line: int | None, key: str, message: str, hint: str) -> StoryboardError:
    return StoryboardError(message, hint, path=sb.path, line=line, key=key)


def check_format(sb: Storyboard, preset: Preset, caps: BackendCaps) -> tuple[int, tuple[int, int]]:
    fps = sb.fps or preset.fps
    if not caps.any_fps and fps != caps.native_fps:
        raise _err(sb, sb.line_of("fps"), "fps",
                   f"preset {preset.name!r} generates at {caps.native_fps} fps, not {fps}",
                   f"set `fps: {caps.native_fps}` or remove `fps` to use the preset's")
    width, height = sb.resolution or preset.resolution
    m = caps.size_multiple
    for side, value in (("width", width), ("height", height)):
        if value % m or not m <= value <= caps.max_side:
            lo, hi = max(m, value // m * m), min(caps.max_side, ceil_div(value, m) * m)
            raise _err(sb, sb.line_of("resolution"), "resolution",
                       f"{side} {value} does not fit preset {preset.name!r}: it must be a "
                       f"multiple of {m} between {m} and {caps.max_side}",
                       f"use {lo} or {hi} instead of {value}")
    return fps, (width, height)


def place_shots(sb: Storyboard, fps: int) -> list[PlannedShot]:
    placed: list[PlannedShot] = []
    cursor, take = 0, -1
    for i, shot in enumerate(sb.shots):
        start = cursor if shot.start is None else shot.start.to_frames(fps)
        if start != cursor:
            gap = start > cursor
            raise _err(sb, shot.line_of("start"), f"shots.{i}.start",
                       f"shot {shot.id!r} starts at {timecode(start, fps)} but the timeline is at "
                       f"{timecode(cursor, fps)}: that leaves "
                       f"{'a gap' if gap else 'an overlap'} of "
                       f"{abs(start - cursor)} frame(s)",
                       f"set `start: {timecode(cursor, fps)}`, or drop `start` and use `duration`")
        if shot.duration:
            key, end = "duration", start + shot.duration.to_frames(fps)
        else:
            assert shot.end is not None, "the storyboard gives every shot a duration or an end"
            key, end = "end", shot.end.to_frames(fps)
        if end <= start:
            raise _err(sb, shot.line_of(key), f"shots.{i}.{key}",
                       f"shot {shot.id!r} would last {end - start} frame(s) at {fps} fps",
                       "a shot must last at least one frame; give it a positive duration")
        for j, p in enumerate(shot.prompts):
            at = p.at.to_frames(fps)
            if j == 0 and at != 0:
                raise _err(sb, p.line, f"shots.{i}.prompts.0.at",
                           f"the first timed prompt of shot {shot.id!r} starts at {p.at}, "
                           "so nothing is prompted before it", "make the first one `at: 0s`")
            if not 0 <= at < end - start:
                raise _err(sb, p.line, f"shots.{i}.prompts.{j}.at",
                           f"`at: {p.at}` is outside shot {shot.id!r}, which lasts "
                           f"{(end - start) / fps:g}s ({end - start} frames)",
                           "`at` counts from the shot's start; use a time inside the shot")
            if j and at <= shot.prompts[j - 1].at.to_frames(fps):
                raise _err(sb, p.line, f"shots.{i}.prompts.{j}.at",
                           "timed prompts must be in increasing order of `at`",
                           "sort them by time, one prompt per moment")
        kind, x = shot.transition.kind, 0
        if i == 0 or kind != "continue":
            take += 1
        if i and kind == "crossfade":
            x = shot.transition.length.to_frames(fps)
            room = min(placed[-1].end_frame - placed[-1].start_frame, end - start)
            if not 2 <= x <= room:
                raise _err(sb, shot.transition.line, f"shots.{i}.transition",
                           f"a crossfade of {x} frame(s) into {shot.id!r} does not fit: it needs "
                           f"at least 2 frames and at most {room} (the shorter of the two shots)",
                           f"use `seconds:` between {2 / fps:.2f} and {room / fps:.2f}")
        placed.append(PlannedShot(shot.id, start, end, take, kind if i else "start", x,
                                  shot.recall))
        cursor = end
    return placed


def take_groups(shots: list[PlannedShot]) -> list[list[int]]:
    """The indices of each take's shots, in order, as `place_shots` numbered them."""
    groups: list[list[int]] = [[] for _ in range(shots[-1].take + 1)]
    for i, shot in enumerate(shots):
        groups[shot.take].append(i)
    return groups
