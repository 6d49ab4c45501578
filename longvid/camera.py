"""The camera: its vocabulary, and a position for every generated frame. Pure, no numpy.

`CAMERA_MOVES` is the storyboard's `camera` vocabulary, defined once: what a diffusion
backend reads as a prompt phrase, and how a backend that follows the camera moves.

Only for backends that follow the camera (`BackendCaps.camera`: procworld). The
planner calls `walk` with plain inputs and stores what it returns on each `Take`;
this module knows nothing of storyboards or plans.

A position is (y, x) in camera steps from the world's centre, +x right, +y down; the
view is `view_steps` steps square. A shot moves the camera by its velocity (steps per
frame: the move's step times its speed) on every frame but a take's first;
fractional speeds accumulate and round (speed 0.5: one step every other frame).

- The first take starts at (0, 0). A later take starts where it is told to (the
  end of the shot it `recall`s: the camera returns to the remembered place) or,
  without one, half the range down from where the previous take ended (up, if
  down would leave the range): a new place.
- A crossfade's lead frames move with the incoming take's first shot, its tail
  frames with the outgoing take's last shot.

`new_cells` marks, per frame in generation order, the view cells no earlier frame
of the video has shown: bit i * view_steps + j for the cell in row i, column j.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Position = tuple[int, int]  # (y, x) in camera steps from the world's centre


@dataclass(frozen=True)
class CameraMove:
    phrase: str  # what a diffusion backend reads, folded into the prompt
    step: tuple[int, int] | None  # (dy, dx) per frame at speed 1 for a backend that follows
    # the camera (`walk` below); None: such a backend cannot make this move


CAMERA_MOVES = {  # the camera vocabulary, defined once
    "static": CameraMove("static camera", (0, 0)),
    "pan-left": CameraMove("camera pans left", (0, -1)),
    "pan-right": CameraMove("camera pans right", (0, 1)),
    "tilt-up": CameraMove("camera tilts up", (-1, 0)),
    "tilt-down": CameraMove("camera tilts down", (1, 0)),
    "zoom-in": CameraMove("camera zooms in", None),
    "zoom-out": CameraMove("camera zooms out", None),
    "orbit-left": CameraMove("camera orbits left", None),
    "orbit-right": CameraMove("camera orbits right", None),
}


@dataclass(frozen=True)
class ShotMotion:
    start_frame: int  # timeline frame where the shot starts
    velocity: tuple[float, float]  # (dy, dx) camera steps per frame


@dataclass(frozen=True)
class TakeMotion:
    origin: int  # timeline frame of the take's first generated frame (a crossfade lead)
    end_frame: int  # timeline frame after the take's last shot (its tail comes after)
    generated_frames: int  # lead, shots and tail
    shots: tuple[ShotMotion, ...]  # in timeline order
    shot_ids: tuple[int, ...]  # the shots' indices in the storyboard, for errors
    returns_to: tuple[int, int] | None = None  # (take, timeline frame) to start at, or None


@dataclass(frozen=True)
class TakePath:
    positions: tuple[Position, ...]  # one per generated frame
    new_cells: tuple[int, ...]  # one bitmask per generated frame

    def at(self, take: TakeMotion, frame: int) -> Position:
        return self.positions[frame - take.origin]


class OutOfRange(Exception):
    """The camera of storyboard shot `shot` leaves the world at `position`."""

    def __init__(self, shot: int, position: Position) -> None:
        super().__init__(shot, position)
        self.shot, self.position = shot, position


def walk(takes: list[TakeMotion], view_steps: int, range_steps: int) -> list[TakePath]:
    """Every take's positions and never-seen masks; OutOfRange when a shot leaves
    +-range_steps."""
    seen: set[Position] = set()
    paths: list[TakePath] = []
    for take in takes:
        y0, x0 = _start(take, takes, paths, range_steps)
        y, x = float(y0), float(x0)
        positions: list[Position] = []
        masks: list[int] = []
        for local in range(take.generated_frames):
            frame = take.origin + local
            k = max([i for i, s in enumerate(take.shots) if s.start_frame <= frame] or [0])
            if local:
                y, x = y + take.shots[k].velocity[0], x + take.shots[k].velocity[1]
            pos = (math.floor(y + 0.5), math.floor(x + 0.5))
            if max(abs(pos[0]), abs(pos[1])) > range_steps:
                raise OutOfRange(take.shot_ids[k], pos)
            cells = {(pos[0] + i, pos[1] + j) for i in range(view_steps)
                     for j in range(view_steps)}
            masks.append(sum(1 << ((cy - pos[0]) * view_steps + cx - pos[1])
                             for cy, cx in cells - seen))
            seen |= cells
            positions.append(pos)
        paths.append(TakePath(tuple(positions), tuple(masks)))
    return paths


def _start(take: TakeMotion, takes: list[TakeMotion], done: list[TakePath],
           range_steps: int) -> Position:
    if not done:
        return (0, 0)
    if take.returns_to is not None:  # back to where the remembered shot ended
        index, frame = take.returns_to
        return done[index].at(takes[index], frame)
    prev = len(done) - 1
    y, x = done[prev].at(takes[prev], takes[prev].end_frame - 1)
    jump = range_steps // 2
    return (y + jump if y + jump <= range_steps else y - jump, x)
