"""Storyboard -> Plan: exact frame math, takes and model-sized segments. Pure.

A *take* is a run of shots joined by `continue`: it is generated as one latent
sequence, segment after segment, each conditioned on the tail latents of the one
before. `cut` and `crossfade` start a new take. A crossfade of x frames is centred
on the cut: the take before it generates x//2 frames past its end, the take after
it x - x//2 frames before its start, and the two are blended; so the output always
has exactly the storyboard's frame count.

Inside a take, the first segment of n latents yields 4n-3 frames and every later
one 4n frames (Wan's causal VAE). Prompt switches snap to these latent boundaries,
at most two frames from where the storyboard asked; `plan` shows both.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, replace

from longvid import camera
from longvid.backends.base import BackendCaps, CameraCaps
from longvid.errors import StoryboardError
from longvid.presets import Preset
from longvid.storyboard import CAMERA_MOVES, Shot, Storyboard
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
    # backends that follow the camera only (longvid/camera.py), per generated frame:
    camera: tuple[tuple[int, int], ...] = ()  # (y, x) position, lead and tail included
    camera_new: tuple[int, ...] = ()  # bitmask of view cells no earlier frame showed

    @property
    def origin(self) -> int:
        """Timeline frame of the take's first generated frame (a crossfade lead included)."""
        return self.start_frame - self.lead_frames

    def position(self, frame: int) -> tuple[int, int]:
        """The camera position (y, x) of timeline `frame` as generated in this take."""
        return self.camera[frame - self.origin]


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
        parts.append(CAMERA_MOVES[shot.camera.move].phrase)
    if style.strip():
        parts.append(style.strip())
    return ", ".join(parts)


def make_plan(sb: Storyboard, preset: Preset, caps: BackendCaps, *,
              continues: bool = False) -> Plan:
    """`continues`: the first take continues from given context latents (`extend`)."""
    fps, (width, height) = _check_format(sb, preset, caps)
    shots = _place_shots(sb, fps)
    takes, segments, switches = [], [], []
    groups: list[list[int]] = []
    for i, shot in enumerate(sb.shots):
        if i == 0 or shot.transition.kind != "continue":
            groups.append([])
        groups[-1].append(i)
    for t, group in enumerate(groups):
        take, segs, sw = _plan_take(sb, shots, group, t, len(segments), caps, fps,
                                    continues=continues and t == 0)
        takes.append(take)
        segments += segs
        switches += sw
    if caps.camera is not None:
        takes = _plan_camera(sb, shots, takes, caps.camera, caps.latent_stride_t)
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
        forwards=(sum(s.num_latents for s in segments) if caps.per_frame
                  else len(segments)) * preset.steps * cfg,
        max_tokens=caps.per_frame.tokens_per_forward if caps.per_frame else (
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
            lo, hi = max(m, value // m * m), min(caps.max_side, -(-value // m) * m)
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
        end = start + shot.duration.to_frames(fps) if shot.duration else shot.end.to_frames(fps)
        key = "duration" if shot.duration else "end"
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


def _plan_take(sb: Storyboard, shots: list[PlannedShot], group: list[int], t: int,
               first_index: int, caps: BackendCaps, fps: int, continues: bool
               ) -> tuple[Take, list[Segment], list[PromptSwitch]]:
    first, last = shots[group[0]], shots[group[-1]]
    x_in = first.transition_frames
    nxt = shots[group[-1] + 1] if group[-1] + 1 < len(shots) else None
    x_out = nxt.transition_frames if nxt is not None and nxt.transition == "crossfade" else 0
    lead, tail = x_in - x_in // 2, x_out // 2
    origin = first.start_frame - lead  # timeline frame of the take's local frame 0
    gen = last.end_frame - first.start_frame + lead + tail
    stride = caps.latent_stride_t
    # smallest L whose frames cover gen: (L-1)*stride+1 at a take start, L*stride continuing
    latents = -(-gen // stride) if continues else -(-(gen + stride - 1) // stride)

    # 1. prompt switches, snapped to latent boundaries (local frame stride*j - (stride-1))
    def local_frame(j: int) -> int:
        if continues:
            return stride * j
        return 0 if j == 0 else stride * j - (stride - 1)

    # a switch cannot land inside a dissolve: keep it after the crossfade in and before
    # the frames held back for the crossfade out
    j_min = next(j for j in range(latents + 1) if j == latents or local_frame(j) >= x_in)
    j_max = max(j for j in range(latents) if j == 0 or local_frame(j) <= gen - x_out)
    wanted: list[tuple[int, int, int, int]] = []  # (boundary j, shot index, prompt index, frame)
    for i in group:
        for pi, p in enumerate(sb.shots[i].prompts):
            requested = shots[i].start_frame + p.at.to_frames(fps)
            local = requested - origin
            shift = 0 if continues else stride - 1
            j = 0 if local <= lead else math.floor((local + shift) / stride + 0.5)
            if j:
                j = max(min(j, j_max), min(j_min, j_max))
            wanted.append((max(j, 0), i, pi, requested))
    starts = {j: (i, pi) for j, i, pi, _ in wanted}  # a later switch on the same boundary wins
    switches = [PromptSwitch(sb.shots[i].id, sb.shots[i].prompts[pi].text, requested,
                             origin + local_frame(j), dropped=starts[j] != (i, pi))
                for j, i, pi, requested in wanted]

    # 2. split each prompt span into windows that fit the backend; the first window must
    # hold the crossfade in, the last one the frames held for the crossfade out
    if not caps.takes_context and latents > caps.max_latents:
        raise _err(sb, sb.shots[group[0]].line, f"shots.{group[0]}",
                   f"the take starting at shot {first.id!r} is {gen} frames; this backend cannot "
                   f"continue a take beyond {caps.max_frames} frames",
                   "shorten the shots or separate them with `transition: cut`")
    blends = _blend_spans(sb, shots, group, starts, wanted, j_min, j_max, stride, fps,
                          latents) if caps.reads_prompts else []  # nothing to mix otherwise
    bounds = sorted(set(starts) | {j for span in blends for j in span.bounds}) + [latents]
    room = caps.max_latents - caps.context_latents  # new latents per window after the first
    min_head = -(-(x_in + stride - 1) // stride) if x_in else 1
    held_from = gen - x_out  # local frame where the held frames start
    min_last = latents - (held_from + (0 if continues else stride - 1)) // stride
    chunks: list[tuple[int, int, int]] = []  # (first latent, count, span start boundary)
    for a, b in zip(bounds, bounds[1:], strict=False):
        head_cap = room if a or continues else caps.max_latents
        sizes = _windows(b - a, head_cap, room, min_head if a == 0 else 1,
                         min_last if b == latents and x_out else 1)
        if sizes is None:
            raise _err(sb, sb.shots[group[0]].transition.line, f"shots.{group[0]}.transition",
                       f"the crossfades around shot {first.id!r} are longer than one model "
                       f"window ({stride * room} frames)", "shorten the crossfade")
        pos = a
        for count in sizes:
            chunks.append((pos, count, max(j for j in starts if j <= a)))
            pos += count

    # 3. frame accounting for each segment
    segments: list[Segment] = []
    for k, (a, n, span) in enumerate(chunks):
        s_f, e_f = local_frame(a), local_frame(a + n)
        emit = max(0, min(e_f, gen - x_out) - s_f)
        hold = max(0, min(e_f, gen) - max(s_f, gen - x_out))
        assert not (a == 0 and e_f < x_in or (hold and hold != x_out)), "window split is off"
        index = first_index + k
        shot_i, prompt_i = starts[span]
        shot = sb.shots[shot_i]
        within_shot = sum(1 for s in segments if s.shot_id == shot.id)
        seed = (segment_seed(shot.seed, within_shot) if shot.seed is not None
                else segment_seed(sb.seed, index))
        blend_prompt, blend_weight = None, 0.0
        for span in blends:
            weight = span.weight_of_b(a, n)
            if weight is not None:
                after = a >= span.j0
                other = span.prompt_a if after else span.prompt_b
                blend_prompt = compose_prompt(other[1], sb.shots[other[0]], sb.style)
                blend_weight = round(1 - weight if after else weight, 4)
        segments.append(Segment(
            index=index, take=t, shot_id=shot.id, first_latent=a, num_latents=n,
            context_latents=(caps.context_latents if continues else min(caps.context_latents, a))
            if caps.takes_context else 0,
            start_frame=origin + s_f, num_frames=e_f - s_f,
            blend_frames=x_in if a == 0 else 0, emit_frames=emit, hold_frames=hold,
            prompt=compose_prompt(shot.prompts[prompt_i].text, shot, sb.style), seed=seed,
            blend_prompt=blend_prompt, blend_weight=blend_weight, recall=shot.recall))
    if gen - x_out < x_in:
        raise _err(sb, sb.shots[group[0]].line, f"shots.{group[0]}",
                   f"take {t} is too short for its crossfades", "lengthen the shots or the "
                   "crossfades' neighbours, or shorten the crossfades")
    take = Take(t, tuple(shots[i].id for i in group), first.start_frame, last.end_frame,
                lead, tail, latents)
    return take, segments, switches


@dataclass(frozen=True)
class _BlendSpan:
    """A `continue` transition: prompt A fades into prompt B over latents [j0 - h, j0 + h)."""
    j0: int
    h: int
    bounds: tuple[int, ...]  # extra window boundaries, so the fade has steps
    prompt_a: tuple[int, str]  # (shot index, text)
    prompt_b: tuple[int, str]

    def weight_of_b(self, a: int, n: int) -> float | None:
        """B's share for a window of latents [a, a + n), None outside the transition."""
        if a + n <= self.j0 - self.h or a >= self.j0 + self.h:
            return None
        mid = a + n / 2
        return min(1.0, max(0.0, (mid - (self.j0 - self.h)) / (2 * self.h)))


def _blend_spans(sb: Storyboard, shots: list[PlannedShot], group: list[int],
                 starts: dict[int, tuple[int, int]], wanted: list[tuple[int, int, int, int]],
                 j_min: int, j_max: int, stride: int, fps: int, latents: int
                 ) -> list[_BlendSpan]:
    """Where a `continue` has `seconds`, the two prompts' embeddings are mixed across the
    windows around the switch: the switch window is cut into steps of about two latents
    on each side, each with its own mix, centred on the switch."""
    spans = []
    keys = sorted(starts)
    for j0, i, pi, _ in wanted:
        if i == group[0] or pi != 0 or starts.get(j0) != (i, 0) or j0 == 0:
            continue
        x = sb.shots[i].transition.length.to_frames(fps)
        h = round(x / (2 * stride))
        if h < 1:
            continue
        prev = max(j for j in keys if j < j0)
        nxt = min([j for j in keys if j > j0] + [latents])
        lo, hi = max(prev + 1, j_min, j0 - h), min(nxt - 1, j_max, j0 + h)
        steps = max(1, h // 2)
        left = {j0 - h + round(k * h / steps) for k in range(steps)}
        right = {j0 + round(k * h / steps) for k in range(1, steps + 1)}
        bounds = tuple(sorted(j for j in left | right if lo <= j <= hi and j != j0))
        ai, api = starts[prev]
        spans.append(_BlendSpan(j0, h, bounds, (ai, sb.shots[ai].prompts[api].text),
                                (i, sb.shots[i].prompts[0].text)))
    return spans


def _windows(n: int, head_cap: int, room: int, min_head: int, min_last: int) -> list[int] | None:
    """Split n latents into windows greedily, as diffusion forcing does: the first up to
    head_cap, then full windows of `room`, the remainder last. The first must be >= min_head;
    a last window below min_last borrows from the ones before it. None if impossible."""
    sizes = [min(n, head_cap)]
    while sum(sizes) < n:
        sizes.append(min(room, n - sum(sizes)))
    if sizes[0] < min_head:
        return None
    need = min_last - sizes[-1] if len(sizes) > 1 else 0
    for i in range(len(sizes) - 2, -1, -1):
        if need <= 0:
            break
        give = min(need, sizes[i] - (min_head if i == 0 else 1))
        sizes[i] -= give
        sizes[-1] += give
        need -= give
    return None if need > 0 or sizes[-1] > (room if len(sizes) > 1 else head_cap) else sizes


def _plan_camera(sb: Storyboard, shots: list[PlannedShot], takes: list[Take], cam: CameraCaps,
                 stride: int) -> list[Take]:
    """The takes with a camera position and a never-seen mask per generated frame."""
    if stride != 1:
        raise ValueError("a backend that follows the camera must have one frame per latent")
    index = {s.id: i for i, s in enumerate(shots)}
    velocity = [_velocity(sb, i) for i in range(len(shots))]
    motions = []
    for take in takes:
        members = [index[sid] for sid in take.shot_ids]
        recall = sb.shots[members[0]].recall
        returns_to = None
        if recall and take.index:  # back to where the remembered shot ended
            remembered = shots[index[recall[0]]]
            returns_to = (remembered.take, remembered.end_frame - 1)
        motions.append(camera.TakeMotion(
            origin=take.origin, end_frame=take.end_frame,
            generated_frames=take.end_frame + take.tail_frames - take.origin,
            shots=tuple(camera.ShotMotion(shots[i].start_frame, velocity[i]) for i in members),
            shot_ids=tuple(members), returns_to=returns_to))
    try:
        paths = camera.walk(motions, cam.view_steps, cam.range_steps)
    except camera.OutOfRange as exc:
        s = sb.shots[exc.shot]
        raise _err(sb, s.line, f"shots.{exc.shot}.camera",
                   f"the camera of shot {s.id!r} reaches (y={exc.position[0]}, "
                   f"x={exc.position[1]}) steps from the world's centre; this backend keeps "
                   f"it within +-{cam.range_steps}",
                   "slow the move (`camera: {move: pan-right, speed: 0.5}`), shorten the "
                   "shot, or turn back with a shot that moves the other way") from None
    return [replace(take, camera=path.positions, camera_new=path.new_cells)
            for take, path in zip(takes, paths, strict=True)]


def _velocity(sb: Storyboard, i: int) -> tuple[float, float]:
    """Camera steps per frame (dy, dx) of storyboard shot i."""
    shot = sb.shots[i]
    if shot.camera is None:
        return (0.0, 0.0)
    step = CAMERA_MOVES[shot.camera.move].step
    if step is None:
        followed = [m for m, move in CAMERA_MOVES.items() if move.step is not None]
        raise _err(sb, shot.line, f"shots.{i}.camera",
                   f"shot {shot.id!r}: this backend cannot follow `camera: {shot.camera.move}`",
                   "it moves with " + ", ".join(followed) + "; zooms and orbits are only "
                   "prompt phrases for diffusion backends")
    return (step[0] * shot.camera.speed, step[1] * shot.camera.speed)
