"""Storyboard -> Plan: exact frame math, takes and model-sized segments. Pure.

A *take* is a run of shots joined by `continue`: it is generated as one latent
sequence, segment after segment, each conditioned on the tail latents of the one
before. `cut` and `crossfade` start a new take. A crossfade of x frames is centred
on the cut: the take before it generates x//2 frames past its end, the take after
it x - x//2 frames before its start, and the two are blended; so the output always
has exactly the storyboard's frame count.

Inside a take, the first segment of n latents yields 4n-3 frames and every later
one 4n frames (Wan's causal VAE). Prompt switches snap to these latent boundaries,
at most two frames from where the storyboard asked; `plan` shows both. The arithmetic
inside one take (latent boundaries, snapping, model windows) is in `takes.py`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

from longvid.backends.base import BackendCaps
from longvid.camera import plan_camera
from longvid.errors import StoryboardError
from longvid.presets import Preset
from longvid.storyboard import Shot, Storyboard
from longvid.takes import PromptFade, TakeGeometry, Window, ceil_div, prompt_fade, split_windows
from longvid.timecode import timecode

CAMERA_PHRASES = {
    "static": "static camera", "pan-left": "camera pans left", "pan-right": "camera pans right",
    "tilt-up": "camera tilts up", "tilt-down": "camera tilts down", "zoom-in": "camera zooms in",
    "zoom-out": "camera zooms out", "orbit-left": "camera orbits left",
    "orbit-right": "camera orbits right",
}


@dataclass(frozen=True)
class PlannedShot:
    id: str
    start_frame: int
    end_frame: int
    take: int
    transition: str
    transition_frames: int
    recall: tuple[str, ...]


@dataclass(frozen=True)
class PromptSwitch:
    shot_id: str
    text: str
    requested_frame: int
    frame: int  # where it takes effect, on a latent boundary
    dropped: bool  # True when a later switch snapped onto the same boundary


@dataclass(frozen=True)
class Take:
    index: int
    shot_ids: tuple[str, ...]
    start_frame: int  # timeline, inclusive
    end_frame: int  # timeline, exclusive
    lead_frames: int  # generated before start_frame for a crossfade in
    tail_frames: int  # generated after end_frame for a crossfade out
    num_latents: int
    # backends that follow the camera only (see camera.py), per generated frame:
    camera: tuple[tuple[int, int], ...] = ()  # (y, x) position, lead and tail included
    camera_new: tuple[int, ...] = ()  # bitmask of view cells no earlier frame showed


@dataclass(frozen=True)
class Segment:
    index: int
    take: int
    shot_id: str
    first_latent: int  # take-local index of its first new latent
    num_latents: int  # new latents
    context_latents: int  # latents carried in from the previous segment (0 at a take start)
    start_frame: int  # timeline frame of its first new frame (negative only in a crossfade lead)
    num_frames: int  # new frames the backend returns
    blend_frames: int  # first frames dissolved with the held tail of the previous take
    emit_frames: int  # frames written to the video (blended ones included)
    hold_frames: int  # frames kept back for the next take's crossfade
    prompt: str
    seed: int
    blend_prompt: str | None = None  # mixed into `prompt` during a `continue` transition
    blend_weight: float = 0.0  # weight of blend_prompt's embeddings
    recall: tuple[str, ...] = ()  # shots whose keyframes this segment is given (`recall`)


@dataclass(frozen=True)
class Plan:
    title: str
    storyboard: str
    content_sha256: str
    preset: str
    backend: str
    fps: int
    width: int
    height: int
    steps: int
    guidance_scale: float
    negative_prompt: str
    total_frames: int
    shots: tuple[PlannedShot, ...]
    takes: tuple[Take, ...]
    segments: tuple[Segment, ...]
    switches: tuple[PromptSwitch, ...]
    context_latents: int  # latents carried between the segments of a take
    latent_stride_t: int  # frames per latent (after a take's first)
    memory_latents: int  # recalled keyframes a segment may be given (the backend's budget)
    anti_drift: bool
    forwards: int  # transformer forward passes, the unit of work
    max_tokens: int  # largest transformer sequence of one forward, memory included
    warnings: tuple[str, ...] = ()
    seed: int = 0  # the storyboard's seed (procworld: which world)

    @property
    def duration_s(self) -> float:
        return self.total_frames / self.fps

    def to_dict(self) -> dict:
        return asdict(self) | {"duration_s": self.duration_s}


def segment_seed(base_seed: int, index: int) -> int:
    """A 63-bit seed per segment: stable across runs, machines and Python versions."""
    digest = hashlib.sha256(f"longvid:{base_seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def compose_prompt(text: str, shot: Shot, style: str) -> str:
    parts = [text.strip()]
    if shot.camera is not None:
        parts.append(CAMERA_PHRASES[shot.camera.move])
    if style.strip():
        parts.append(style.strip())
    return ", ".join(parts)


def make_plan(sb: Storyboard, preset: Preset, caps: BackendCaps, *,
              continues: bool = False) -> Plan:
    """`continues`: the first take continues from given context latents (`extend`)."""
    fps, (width, height) = _check_format(sb, preset, caps)
    shots = _place_shots(sb, fps)
    takes, switches = [], []
    segments: list[Segment] = []
    for t, group in enumerate(_take_groups(shots)):
        take, segs, sw = _plan_take(sb, shots, group, len(segments), caps, fps,
                                    continues=continues and t == 0)
        takes.append(take)
        segments += segs
        switches += sw
    if caps.camera_view:
        takes = plan_camera(sb, shots, takes, caps)
    total = shots[-1].end_frame
    assert sum(s.emit_frames for s in segments) == total, "frame accounting is off"
    cfg = 2 if preset.guidance_scale > 1 else 1
    tokens_per_latent = width * height // caps.tokens_per_latent_px
    warnings = []
    recalling = [s.id for s in sb.shots if s.recall]
    if recalling and caps.memory_latents == 0:
        warnings.append(f"backend {preset.backend!r} takes no memory: `recall` of shot(s) "
                        f"{', '.join(recalling)} will be ignored")
    if not caps.reads_prompts:
        warnings.append(f"backend {preset.backend!r} ignores prompts: the storyboard's seed "
                        "picks its world and `camera` moves through it")
    return Plan(
        title=sb.title, storyboard=sb.path, content_sha256=sb.content_sha256,
        preset=preset.name, backend=preset.backend, fps=fps, width=width, height=height,
        steps=preset.steps, guidance_scale=preset.guidance_scale,
        negative_prompt=sb.negative_prompt, total_frames=total,
        shots=tuple(shots), takes=tuple(takes), segments=tuple(segments),
        switches=tuple(switches), context_latents=caps.context_latents,
        latent_stride_t=caps.latent_stride_t, memory_latents=caps.memory_latents,
        anti_drift=sb.anti_drift and caps.corrects_drift,
        forwards=(sum(s.num_latents for s in segments) if caps.tokens_per_forward
                  else len(segments)) * preset.steps * cfg,
        max_tokens=caps.tokens_per_forward or (
            max((s.context_latents + s.num_latents) for s in segments) * tokens_per_latent
            + caps.memory_latents * tokens_per_latent),
        warnings=tuple(warnings), seed=sb.seed,
    )


def _err(sb: Storyboard, line: int | None, key: str, message: str, hint: str) -> StoryboardError:
    return StoryboardError(message, hint, path=sb.path, line=line, key=key)


def _check_format(sb: Storyboard, preset: Preset, caps: BackendCaps) -> tuple[int, tuple[int, int]]:
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


def _place_shots(sb: Storyboard, fps: int) -> list[PlannedShot]:
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


def _take_groups(shots: list[PlannedShot]) -> list[list[int]]:
    """The indices of each take's shots, in order, as `_place_shots` numbered them."""
    groups: list[list[int]] = [[] for _ in range(shots[-1].take + 1)]
    for i, shot in enumerate(shots):
        groups[shot.take].append(i)
    return groups


@dataclass(frozen=True)
class _TimedPrompt:
    """One timed prompt of a take, on the latent boundary where it takes effect."""
    shot: int  # index into sb.shots
    prompt: int  # index into that shot's prompts
    requested_frame: int  # timeline frame the storyboard asked for
    boundary: int  # latent boundary where it takes effect
    fade_frames: int  # a `continue` into its shot mixes it in over these frames (first prompt)

    def text(self, sb: Storyboard) -> str:
        return sb.shots[self.shot].prompts[self.prompt].text

    def composed(self, sb: Storyboard) -> str:
        return compose_prompt(self.text(sb), sb.shots[self.shot], sb.style)


def _plan_take(sb: Storyboard, shots: list[PlannedShot], group: list[int], first_index: int,
               caps: BackendCaps, fps: int, continues: bool
               ) -> tuple[Take, list[Segment], list[PromptSwitch]]:
    """The take of shots `group`, its segments numbered from `first_index`."""
    first, last = shots[group[0]], shots[group[-1]]
    take_index = first.take
    following = shots[group[-1] + 1] if group[-1] + 1 < len(shots) else None
    fade_out = (following.transition_frames
                if following is not None and following.transition == "crossfade" else 0)
    geometry = TakeGeometry.spanning(first.start_frame, last.end_frame, first.transition_frames,
                                     fade_out, caps.latent_stride_t, continues)

    # 1. prompt switches, snapped to latent boundaries
    timed = _snap_switches(sb, shots, group, geometry, fps)
    by_boundary = {p.boundary: p for p in timed}  # a later switch on the same boundary wins
    switches = [PromptSwitch(sb.shots[p.shot].id, p.text(sb), p.requested_frame,
                             geometry.origin + geometry.local_frame(p.boundary),
                             dropped=by_boundary[p.boundary] is not p) for p in timed]

    # 2. split each prompt span into windows that fit the backend
    if not caps.takes_context and geometry.num_latents > caps.max_latents:
        raise _err(sb, sb.shots[group[0]].line, f"shots.{group[0]}",
                   f"the take starting at shot {first.id!r} is {geometry.generated_frames} "
                   f"frames; this backend cannot continue a take beyond {caps.max_frames} frames",
                   "shorten the shots or separate them with `transition: cut`")
    # nothing to mix for a backend that ignores prompts
    fades = _prompt_fades(geometry, timed, by_boundary) if caps.reads_prompts else ()
    new_latents = caps.max_latents - caps.context_latents  # per window after the first
    windows = split_windows(geometry, sorted(by_boundary), fades, caps.max_latents, new_latents)
    if windows is None:
        raise _err(sb, sb.shots[group[0]].transition.line, f"shots.{group[0]}.transition",
                   f"the crossfades around shot {first.id!r} are longer than one model "
                   f"window ({geometry.stride * new_latents} frames)", "shorten the crossfade")

    # 3. frame accounting for each segment
    segments = _account_frames(sb, caps, geometry, windows, by_boundary, take=take_index,
                               first_index=first_index)
    if geometry.held_from < geometry.fade_in_frames:
        raise _err(sb, sb.shots[group[0]].line, f"shots.{group[0]}",
                   f"take {take_index} is too short for its crossfades",
                   "lengthen the shots or the crossfades' neighbours, or shorten the crossfades")
    take = Take(take_index, tuple(shots[i].id for i in group), first.start_frame, last.end_frame,
                geometry.lead_frames, geometry.tail_frames, geometry.num_latents)
    return take, segments, switches


def _snap_switches(sb: Storyboard, shots: list[PlannedShot], group: list[int],
                   geometry: TakeGeometry, fps: int) -> list[_TimedPrompt]:
    """Every timed prompt of the take, in order, on the boundary where it takes effect."""
    timed = []
    for shot_i in group:
        # only a `continue` mixes two shots' prompts, never the cut or crossfade into a take
        shot = sb.shots[shot_i]
        continue_frames = shot.transition.length.to_frames(fps) if shot_i != group[0] else 0
        for prompt_i, prompt in enumerate(shot.prompts):
            requested = shots[shot_i].start_frame + prompt.at.to_frames(fps)
            timed.append(_TimedPrompt(shot_i, prompt_i, requested,
                                      geometry.snap(requested - geometry.origin),
                                      continue_frames if prompt_i == 0 else 0))
    return timed


def _prompt_fades(geometry: TakeGeometry, timed: list[_TimedPrompt],
                  by_boundary: dict[int, _TimedPrompt]) -> tuple[PromptFade, ...]:
    """Where a `continue` has `seconds`, the two prompts' embeddings are mixed across the
    windows around the switch (unless the switch was dropped or opens the take)."""
    switches = sorted(by_boundary)
    fades = []
    for p in timed:
        if p.fade_frames and p.boundary and by_boundary[p.boundary] is p:
            fade = prompt_fade(geometry, switches, p.boundary, p.fade_frames)
            if fade is not None:
                fades.append(fade)
    return tuple(fades)


def _account_frames(sb: Storyboard, caps: BackendCaps, geometry: TakeGeometry,
                    windows: list[Window], by_boundary: dict[int, _TimedPrompt], *,
                    take: int, first_index: int) -> list[Segment]:
    """One segment per window: its frames, its prompt (and the one mixed in), its seed."""
    carried = caps.context_latents if caps.takes_context else 0
    segments: list[Segment] = []
    for index, window in enumerate(windows, start=first_index):
        frames = geometry.frames_of(window, carried)
        own = by_boundary[window.switch]
        shot = sb.shots[own.shot]
        within_shot = sum(1 for s in segments if s.shot_id == shot.id)
        seed = (segment_seed(shot.seed, within_shot) if shot.seed is not None
                else segment_seed(sb.seed, index))
        segments.append(Segment(
            index=index, take=take, shot_id=shot.id, first_latent=window.first_latent,
            num_latents=window.num_latents, context_latents=frames.context_latents,
            start_frame=frames.start_frame, num_frames=frames.num_frames,
            blend_frames=frames.blend_frames, emit_frames=frames.emit_frames,
            hold_frames=frames.hold_frames, prompt=own.composed(sb), seed=seed,
            blend_prompt=(None if window.mixed_switch is None
                          else by_boundary[window.mixed_switch].composed(sb)),
            blend_weight=window.mixed_weight, recall=shot.recall))
    return segments
