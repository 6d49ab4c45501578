"""The arithmetic of one take: where its latents, frames and model windows fall. Pure.

A take is generated as one latent sequence, so everything here counts in *local frames*
(0 is the take's first generated frame, a crossfade lead included) and *latent
boundaries* (boundary j is where latent j starts). At a fresh take start the first latent
holds one frame and every later one `stride` (Wan's causal VAE), so boundary j > 0 is
local frame stride*j - (stride - 1); a take that continues from given latents has
`stride` frames in every latent, so boundary j is local frame stride*j.

This module knows nothing of storyboards, prompts or backends: `plan.py` asks it where
things fall and turns the answers into segments.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from itertools import pairwise


def ceil_div(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded up, in integers (denominator > 0)."""
    return -(-numerator // denominator)


@dataclass(frozen=True)
class Window:
    """Latents [first_latent, first_latent + num_latents) of a take, generated in one call."""
    first_latent: int
    num_latents: int
    switch: int  # boundary of the prompt switch whose prompt it renders
    mixed_switch: int | None = None  # ... and of the one mixed into it during a fade
    mixed_weight: float = 0.0  # the mixed prompt's share


@dataclass(frozen=True)
class WindowFrames:
    """What a window's latents come to in frames (see `plan.Segment`)."""
    context_latents: int  # latents it is given from before its first one
    start_frame: int  # timeline frame of its first new frame
    num_frames: int  # new frames
    blend_frames: int  # first frames dissolved with the previous take's held tail
    emit_frames: int  # frames written to the video
    hold_frames: int  # frames kept back for the next take's crossfade


@dataclass(frozen=True)
class TakeGeometry:
    """Where one take's frames and latents fall."""
    origin: int  # timeline frame of local frame 0
    lead_frames: int  # generated before the take's first shot, for the crossfade in
    tail_frames: int  # generated after its last shot, for the crossfade out
    fade_in_frames: int  # the whole crossfade in: its first frames, dissolved
    fade_out_frames: int  # the whole crossfade out: its last frames, held back
    generated_frames: int
    stride: int  # frames per latent, except a fresh take's first latent (1 frame)
    continues: bool  # continues from given latents, so its first latent is a full one too

    @classmethod
    def spanning(cls, start_frame: int, end_frame: int, fade_in_frames: int,
                 fade_out_frames: int, stride: int, continues: bool) -> TakeGeometry:
        """The take covering timeline frames [start_frame, end_frame). A crossfade of x
        frames is centred on its cut: x - x//2 of them come before the cut, x//2 after."""
        lead = fade_in_frames - fade_in_frames // 2
        tail = fade_out_frames // 2
        return cls(origin=start_frame - lead, lead_frames=lead, tail_frames=tail,
                   fade_in_frames=fade_in_frames, fade_out_frames=fade_out_frames,
                   generated_frames=end_frame - start_frame + lead + tail, stride=stride,
                   continues=continues)

    @property
    def first_latent_shortfall(self) -> int:
        """Frames the take's first latent holds fewer than a full one."""
        return 0 if self.continues else self.stride - 1

    @property
    def num_latents(self) -> int:
        return self.latents_to_cover(self.generated_frames)

    @property
    def held_from(self) -> int:
        """Local frame where the frames held back for the crossfade out start."""
        return self.generated_frames - self.fade_out_frames

    def local_frame(self, boundary: int) -> int:
        """Local frame where latent `boundary` starts."""
        return self.stride * boundary - self.first_latent_shortfall if boundary else 0

    def latents_to_cover(self, frames: int) -> int:
        """The fewest latents from the take's start that yield at least `frames` frames."""
        return ceil_div(frames + self.first_latent_shortfall, self.stride)

    def boundary_at_or_before(self, frame: int) -> int:
        """The last latent boundary at or before local `frame` (frame >= 0)."""
        return (frame + self.first_latent_shortfall) // self.stride

    def switch_range(self) -> tuple[int, int]:
        """The first and the last boundary a prompt switch may move to: a switch cannot
        land inside a dissolve, so it stays after the crossfade in and at or before the
        frames held back for the crossfade out."""
        first = (min(self.num_latents, self.latents_to_cover(self.fade_in_frames))
                 if self.fade_in_frames else 0)
        last = min(self.num_latents - 1, max(0, self.boundary_at_or_before(self.held_from)))
        return first, last

    def snap(self, frame: int) -> int:
        """The boundary a prompt switch asked for at local `frame` takes effect on: the
        nearest one inside `switch_range`; boundary 0 up to the take's first shot."""
        if frame <= self.lead_frames:
            return 0
        nearest = math.floor((frame + self.first_latent_shortfall) / self.stride + 0.5)
        if not nearest:
            return 0
        first, last = self.switch_range()
        return max(min(nearest, last), min(first, last))

    def frames_of(self, window: Window, context_latents: int) -> WindowFrames:
        """Frame accounting for one window; `context_latents`: what the backend carries
        from one window into the next (0 if it takes none)."""
        start = self.local_frame(window.first_latent)
        end = self.local_frame(window.first_latent + window.num_latents)
        opens_take = window.first_latent == 0
        hold = max(0, min(end, self.generated_frames) - max(start, self.held_from))
        assert not (opens_take and end < self.fade_in_frames
                    or (hold and hold != self.fade_out_frames)), "window split is off"
        return WindowFrames(
            context_latents=(context_latents if self.continues
                             else min(context_latents, window.first_latent)),
            start_frame=self.origin + start, num_frames=end - start,
            blend_frames=self.fade_in_frames if opens_take else 0,
            emit_frames=max(0, min(end, self.held_from) - start), hold_frames=hold)


@dataclass(frozen=True)
class PromptFade:
    """A prompt switch at boundary `switch` that mixes in over latents
    [switch - half_latents, switch + half_latents), out of the prompt of `from_switch`."""
    switch: int
    half_latents: int
    from_switch: int
    steps: tuple[int, ...]  # extra window boundaries, so the mix changes in steps

    def weight_of_new(self, first_latent: int, num_latents: int) -> float | None:
        """The new prompt's share in a window (taken at its middle), None outside the fade."""
        fade_start = self.switch - self.half_latents
        if (first_latent + num_latents <= fade_start
                or first_latent >= self.switch + self.half_latents):
            return None
        middle = first_latent + num_latents / 2
        return min(1.0, max(0.0, (middle - fade_start) / (2 * self.half_latents)))


def prompt_fade(geometry: TakeGeometry, switches: list[int], switch: int,
                fade_frames: int) -> PromptFade | None:
    """A fade of `fade_frames` centred on `switch`, one of the take's sorted `switches`
    (never the first): cut into steps of about two latents on each side, each with its
    own mix, kept between the neighbouring switches. None if under a latent each side."""
    half = round(fade_frames / (2 * geometry.stride))
    if half < 1:
        return None
    at = bisect_left(switches, switch)  # switches are sorted and hold `switch`
    before = switches[at - 1]
    after = switches[at + 1] if at + 1 < len(switches) else geometry.num_latents
    first_free, last_free = geometry.switch_range()
    lowest = max(before + 1, first_free, switch - half)
    highest = min(after - 1, last_free, switch + half)
    count = max(1, half // 2)
    left = {switch - half + round(k * half / count) for k in range(count)}
    right = {switch + round(k * half / count) for k in range(1, count + 1)}
    steps = tuple(sorted(j for j in left | right if lowest <= j <= highest and j != switch))
    return PromptFade(switch, half, before, steps)


def split_windows(geometry: TakeGeometry, switches: list[int], fades: tuple[PromptFade, ...],
                  max_latents: int, new_latents: int) -> list[Window] | None:
    """Cut the take at every prompt switch (sorted, 0 first) and fade step, and each span
    into windows: a fresh take's first window holds up to `max_latents`, every other one
    `new_latents` after its context. The first window must hold the crossfade in, the last
    one the frames held back for the crossfade out. Inside a fade, a window mixes in the
    prompt on the other side of it. None if the crossfades do not fit."""
    latents = geometry.num_latents
    cuts = sorted(set(switches) | {j for fade in fades for j in fade.steps}) + [latents]
    min_first = (geometry.latents_to_cover(geometry.fade_in_frames)
                 if geometry.fade_in_frames else 1)
    min_last = latents - geometry.boundary_at_or_before(geometry.held_from)
    windows: list[Window] = []
    mixer = _Mixer(fades)
    for span_start, span_end in pairwise(cuts):
        first_cap = new_latents if span_start or geometry.continues else max_latents
        sizes = _windows(span_end - span_start, first_cap, new_latents,
                         min_first if span_start == 0 else 1,
                         min_last if span_end == latents and geometry.fade_out_frames else 1)
        if sizes is None:
            return None
        switch = switches[bisect_right(switches, span_start) - 1]
        first_latent = span_start
        for size in sizes:
            windows.append(Window(first_latent, size, switch, *mixer(first_latent, size)))
            first_latent += size
    return windows


class _Mixer:
    """The switch whose prompt a window mixes into its own, and that prompt's weight: a
    window before a fade's switch mixes in the new prompt, one after it the old one. Where
    fades overlap, the later one wins. Fades are in switch order; only those whose switch
    lies within the widest fade of the window are looked at, so a take of thousands of
    prompts plans in linear time."""

    def __init__(self, fades: tuple[PromptFade, ...]) -> None:
        self.fades = fades
        self.switches = [fade.switch for fade in fades]
        self.reach = max((fade.half_latents for fade in fades), default=0)

    def __call__(self, first_latent: int, num_latents: int) -> tuple[int | None, float]:
        lo = bisect_right(self.switches, first_latent - self.reach)
        hi = bisect_left(self.switches, first_latent + num_latents + self.reach)
        mixed_switch, mixed_weight = None, 0.0
        for fade in self.fades[lo:hi]:
            new_share = fade.weight_of_new(first_latent, num_latents)
            if new_share is not None:
                after = first_latent >= fade.switch
                mixed_switch = fade.from_switch if after else fade.switch
                mixed_weight = round(1 - new_share if after else new_share, 4)
        return mixed_switch, mixed_weight


def _windows(num_latents: int, first_cap: int, new_latents: int, min_first: int,
             min_last: int) -> list[int] | None:
    """Split `num_latents` into window sizes greedily, as diffusion forcing does: the first
    up to `first_cap`, then full windows of `new_latents`, the remainder last. The first
    must be >= min_first; a last window below min_last borrows from the ones before it.
    None if impossible."""
    sizes = [min(num_latents, first_cap)]
    covered = sizes[0]
    while covered < num_latents:
        sizes.append(min(new_latents, num_latents - covered))
        covered += sizes[-1]
    if sizes[0] < min_first:
        return None
    need = min_last - sizes[-1] if len(sizes) > 1 else 0
    for i in range(len(sizes) - 2, -1, -1):
        if need <= 0:
            break
        give = min(need, sizes[i] - (min_first if i == 0 else 1))
        sizes[i] -= give
        sizes[-1] += give
        need -= give
    largest = new_latents if len(sizes) > 1 else first_cap
    return None if need > 0 or sizes[-1] > largest else sizes
