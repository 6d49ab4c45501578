"""Storyboard `camera` -> a position for every generated frame. Pure, no numpy.

Only for backends that follow the camera (`BackendCaps.camera_view > 0`: procworld).
A position is (y, x) in camera steps from the world's centre, +x right, +y down; the
view is `camera_view` steps square. Speed 1 moves one step per frame:

- `pan-left` / `pan-right` move x by -/+speed a frame, `tilt-up` / `tilt-down` move y,
  `static` (or no `camera`) holds. A take's first frame does not move; fractional
  speeds accumulate and round (speed 0.5: one step every other frame).
- The first take starts at (0, 0). A take after a `cut` or `crossfade` starts where
  the first shot it `recall`s ended: the camera returns to the remembered place.
  Without `recall` it jumps half the range down (up, if down would leave the range):
  a new place. `recall` on a `continue` shot adds memory but does not move the camera.
- A crossfade's lead frames move with the incoming take's first shot, its tail
  frames with the outgoing take's last shot.

`camera_new` marks, per frame in generation order, the view cells no earlier frame
of the video has shown: bit i * camera_view + j for the cell in row i, column j.
The render loop hands both to the backend (`segment_camera`), so every pose is a
function of the plan and of keyframes' timeline frames on disk, never of process state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from longvid.errors import StoryboardError

if TYPE_CHECKING:
    from longvid.backends.base import BackendCaps
    from longvid.plan import Plan, PlannedShot, Segment, Take
    from longvid.storyboard import Storyboard

Position = tuple[int, int]  # (y, x) in camera steps from the world's centre

MOVES = {"static": (0, 0), "pan-left": (0, -1), "pan-right": (0, 1), "tilt-up": (-1, 0),
         "tilt-down": (1, 0)}


def plan_camera(sb: Storyboard, shots: list[PlannedShot], takes: list[Take],
                caps: BackendCaps) -> list[Take]:
    """The takes with `camera` (a position per generated frame, lead and tail included) and
    `camera_new` filled in; StoryboardError for a move the backend cannot follow or a path
    that leaves the world."""
    if caps.latent_stride_t != 1:
        raise ValueError("a backend that follows the camera must have one frame per latent")
    index = {s.id: i for i, s in enumerate(shots)}
    velocity = [_velocity(sb, i) for i in range(len(shots))]
    reach, seen = caps.camera_range, set()
    out: list[Take] = []
    for take in takes:
        first = index[take.shot_ids[0]]
        origin = take.start_frame - take.lead_frames
        start = _take_start(sb, shots, first, out, index, reach)
        members = [index[sid] for sid in take.shot_ids]
        y, x = float(start[0]), float(start[1])
        positions: list[Position] = []
        masks: list[int] = []
        for local in range(take.end_frame + take.tail_frames - origin):
            frame = origin + local
            shot = max([i for i in members if shots[i].start_frame <= frame] or [first])
            if local:
                y, x = y + velocity[shot][0], x + velocity[shot][1]
            pos = (math.floor(y + 0.5), math.floor(x + 0.5))
            if max(abs(pos[0]), abs(pos[1])) > reach:
                s = sb.shots[shot]
                raise StoryboardError(
                    f"the camera of shot {s.id!r} reaches (y={pos[0]}, x={pos[1]}) steps from "
                    f"the world's centre; this backend keeps it within +-{reach}",
                    "slow the move (`camera: {move: pan-right, speed: 0.5}`), shorten the "
                    "shot, or turn back with a shot that moves the other way",
                    path=sb.path, line=s.line, key=f"shots.{shot}.camera")
            cells = {(pos[0] + i, pos[1] + j) for i in range(caps.camera_view)
                     for j in range(caps.camera_view)}
            masks.append(sum(1 << ((cy - pos[0]) * caps.camera_view + cx - pos[1])
                             for cy, cx in cells - seen))
            seen |= cells
            positions.append(pos)
        out.append(replace(take, camera=tuple(positions), camera_new=tuple(masks)))
    return out


def _velocity(sb: Storyboard, i: int) -> tuple[float, float]:
    shot = sb.shots[i]
    if shot.camera is None:
        return (0.0, 0.0)
    if shot.camera.move not in MOVES:
        raise StoryboardError(
            f"shot {shot.id!r}: this backend cannot follow `camera: {shot.camera.move}`",
            "it moves with " + ", ".join(MOVES) + "; zooms and orbits are only prompt "
            "phrases for diffusion backends", path=sb.path, line=shot.line,
            key=f"shots.{i}.camera")
    dy, dx = MOVES[shot.camera.move]
    return (dy * shot.camera.speed, dx * shot.camera.speed)


def _take_start(sb: Storyboard, shots: list[PlannedShot], first: int, done: list[Take],
                index: dict[str, int], reach: int) -> Position:
    if not done:
        return (0, 0)
    recall = sb.shots[first].recall
    if recall:  # back to where the remembered shot ended
        shot = shots[index[recall[0]]]
        take = done[shot.take]
        return take.camera[shot.end_frame - 1 - (take.start_frame - take.lead_frames)]
    prev = done[-1]
    y, x = prev.camera[prev.end_frame - 1 - (prev.start_frame - prev.lead_frames)]
    jump = reach // 2
    return (y + jump if y + jump <= reach else y - jump, x)


def position_at(plan: Plan, take: int, frame: int) -> Position:
    """The camera position of timeline `frame` as generated in `take`."""
    t = plan.takes[take]
    return t.camera[frame - (t.start_frame - t.lead_frames)]


def segment_camera(plan: Plan, seg: Segment, memory: list[tuple[int, int]]
                   ) -> tuple[tuple[Position, ...] | None, tuple[int, ...] | None]:
    """(positions of [memory | context | new], never-seen masks of the new frames) for a
    segment, or (None, None) when the backend does not follow the camera. `memory`: the
    recalled keyframes' (take, timeline frame), in the order their latents are stacked."""
    take = plan.takes[seg.take]
    if not take.camera:
        return None, None
    lo, hi = seg.first_latent - seg.context_latents, seg.first_latent + seg.num_latents
    positions = tuple(position_at(plan, t, f) for t, f in memory) + take.camera[lo:hi]
    return positions, take.camera_new[seg.first_latent:hi]


def keyframe_distance(plan: Plan, seg: Segment) -> Callable[[Any], int] | None:
    """Steps (Chebyshev) from a keyframe's camera position to the segment's first frame;
    None when the backend does not follow the camera. Keyframes need `take` and `frame`."""
    take = plan.takes[seg.take]
    if not take.camera:
        return None
    y, x = take.camera[seg.first_latent]

    def distance(keyframe: Any) -> int:
        ky, kx = position_at(plan, keyframe.take, keyframe.frame)
        return max(abs(ky - y), abs(kx - x))

    return distance
