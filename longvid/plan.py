"""Storyboard -> Plan: exact frame math, takes and model-sized segments. Pure.

A *take* is a run of shots joined by `continue`: it is generated as one latent
sequence, segment after segment, each conditioned on the tail latents of the one
before. `cut` and `crossfade` start a new take. A crossfade of x frames is centred
on the cut: the take before it generates x//2 frames past its end, the take after
it x - x//2 frames before its start, and the two are blended; so the output always
has exactly the storyboard's frame count.

Inside a take, the first segment of n latents yields (n-1)*stride+1 frames and every
later one n*stride (Wan's causal VAE: 4n-3 and 4n). Prompt switches snap to these
latent boundaries, at most two frames from where the storyboard asked; `plan` shows
both. The steps live in four modules: `timeline.py` places the shots in frames,
`takes.py` holds the arithmetic inside one take (latent boundaries, snapping, model
windows), this module builds the segments, prompt switches and camera paths, and
`stream_work.py` counts a streaming backend's forwards over them.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from typing import Any

from longvid import camera
from longvid.backends.base import BackendCaps, CameraCaps
from longvid.camera import CAMERA_MOVES
from longvid.errors import StoryboardError
from longvid.loras import LoraRef
from longvid.presets import Preset
from longvid.segments import Segment
from longvid.shot_inputs import attach_inputs
from longvid.storyboard import Shot, Storyboard
from longvid.stream_work import StreamWork, stream_max_latents, stream_work
from longvid.takes import PromptFade, TakeGeometry, Window, prompt_fade, split_windows
from longvid.timeline import PlannedShot, check_format, place_shots, take_groups


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
    memory: str  # which memory the preset has: one of base.MEMORY_KINDS
    anti_drift: bool
    forwards: int  # transformer forward passes, the unit of work
    max_tokens: int  # largest transformer sequence of one forward, memory included
    warnings: tuple[str, ...] = ()
    seed: int = 0  # the storyboard's seed (procworld: which world)
    loras: tuple[LoraRef, ...] = ()  # the preset's, then the storyboard's
    stream: StreamWork | None = None  # a streaming backend's forwards and KV cache

    @property
    def duration_s(self) -> float:
        return self.total_frames / self.fps

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON data; an optional part (`stream`) only where it applies."""
        data = asdict(self) | {"duration_s": self.duration_s}
        if self.stream is None:
            del data["stream"]
        return data


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
              continues: bool = False, clip_sink: bool = False) -> Plan:
    """`continues`: the first take continues from given context latents (`extend`);
    `clip_sink`: the clip also gives that take its sink (its first latents)."""
    fps, (width, height) = check_format(sb, preset, caps)
    shots = place_shots(sb, fps)
    takes, switches = [], []
    segments: list[Segment] = []
    for t, group in enumerate(take_groups(shots)):
        take, segs, sw = _plan_take(sb, shots, group, len(segments), caps, fps,
                                    continues=continues and t == 0)
        takes.append(take)
        segments += segs
        switches += sw
    if caps.camera is not None:
        takes = _plan_camera(sb, shots, takes, caps.camera, caps.latent_stride_t)
    segments, loras, input_warnings = attach_inputs(sb, preset, caps, takes, segments,
                                                    (width, height), continues=continues)
    total = shots[-1].end_frame
    assert sum(s.emit_frames for s in segments) == total, "frame accounting is off"
    cfg = 2 if preset.guidance_scale > 1 else 1
    tokens_per_latent = width * height // caps.tokens_per_latent_px
    warnings = []
    recalling = [s.id for s in sb.shots if s.recall]
    if recalling and caps.memory_latents == 0:
        warnings.append(_no_recall(preset, caps, recalling))
    if preset.non_commercial:
        warnings.append(f"preset {preset.name!r}: its weights are licensed {preset.licence} "
                        "(non-commercial use only)")
    if not caps.reads_prompts:
        warnings.append(f"backend {preset.backend!r} ignores prompts: the storyboard's seed "
                        "picks its world and `camera` moves through it")
    clip = clip_sink if continues else None  # what the first take's sink comes from
    stream = None if caps.stream is None else stream_work(
        segments, caps, preset.steps, tokens_per_latent, clip)
    if stream is not None:
        forwards = stream.blocks * stream.forwards_per_block + stream.replay_forwards
        max_tokens = stream_max_latents(segments, caps, clip) * tokens_per_latent
    else:
        forwards = (sum(s.num_latents for s in segments) if caps.per_frame
                    else len(segments)) * preset.steps * cfg
        max_tokens = caps.per_frame.tokens_per_forward if caps.per_frame else (
            max((s.context_latents + s.num_latents) for s in segments) * tokens_per_latent
            + (caps.memory_latents + max(len(s.refs) for s in segments)) * tokens_per_latent)
    return Plan(
        title=sb.title, storyboard=sb.path, content_sha256=sb.content_sha256,
        preset=preset.name, backend=preset.backend, fps=fps, width=width, height=height,
        steps=preset.steps, guidance_scale=preset.guidance_scale,
        negative_prompt=negative_prompt_for(sb, preset), total_frames=total,
        shots=tuple(shots), takes=tuple(takes), segments=tuple(segments),
        switches=tuple(switches), context_latents=caps.context_latents,
        latent_stride_t=caps.latent_stride_t, memory_latents=caps.memory_latents,
        memory=caps.memory_kind,
        anti_drift=anti_drift_for(sb, preset) and caps.corrects_drift,
        forwards=forwards, max_tokens=max_tokens,
        warnings=tuple(warnings + input_warnings), seed=sb.seed, loras=loras, stream=stream,
    )


def _no_recall(preset: Preset, caps: BackendCaps, recalling: list[str]) -> str:
    """The warning for `recall` on a preset whose memory is not active, with what to do."""
    shots = ", ".join(recalling)
    if caps.memory_kind == "opt-in untrained":
        return (f"preset {preset.name!r} keeps memory off: `recall` of shot(s) {shots} will "
                "be ignored. Its keyframe injection was never trained or measured; to try "
                "it, copy the preset and add `memory_latents: 2` under its `options:` "
                "(docs/memory.md), or pick a preset with trained memory")
    if caps.stream is not None:  # a causal stream: only its own take's KV cache
        return (f"preset {preset.name!r} has no memory: `recall` of shot(s) {shots} has no "
                "effect, since its causal model was not trained to take recalled frames and "
                "a shot continues only from its own take's KV cache; pick `memflow-1.3b` or "
                "`mag-1.3b` (trained memory), or describe the place again in the prompt")
    return (f"preset {preset.name!r} has no memory: `recall` of shot(s) {shots} will be "
            "ignored; pick a preset with memory (docs/memory.md lists what each has)")


def negative_prompt_for(sb: Storyboard, preset: Preset) -> str:
    """The storyboard's `negative_prompt` if it sets one (even ""), else the preset's."""
    return sb.negative_prompt if sb.negative_prompt is not None else preset.negative_prompt


def anti_drift_for(sb: Storyboard, preset: Preset) -> bool:
    """The storyboard's `anti_drift` if it sets it; else on, except for Hub presets, whose
    real latents its thresholds were never calibrated on."""
    return sb.anti_drift if sb.anti_drift is not None else preset.hub is None


def _err(sb: Storyboard, line: int | None, key: str, message: str, hint: str) -> StoryboardError:
    return StoryboardError(message, hint, path=sb.path, line=line, key=key)


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
    per_shot: dict[str, int] = {}  # segments so far of each shot
    for index, window in enumerate(windows, start=first_index):
        frames = geometry.frames_of(window, carried)
        own = by_boundary[window.switch]
        shot = sb.shots[own.shot]
        within_shot = per_shot.get(shot.id, 0)
        per_shot[shot.id] = within_shot + 1
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
