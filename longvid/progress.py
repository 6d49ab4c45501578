"""Progress for humans and for logs: rich bars on a TTY, plain lines elsewhere.

Both write to stderr; stdout is kept for `--json` results. The ETA is the mean
wall time per frame of segments generated in this run times the frames left.
"""

from __future__ import annotations

import sys
from typing import Any

from longvid.plan import Plan
from longvid.terminal import console, for_rich, plain
from longvid.timecode import timecode


class Progress:
    """Receives loop events; subclasses decide how to show them."""

    def __init__(self) -> None:
        self.plan: Plan | None = None
        self._frames_done = 0
        self._seconds = 0.0
        self._measured_frames = 0

    def start(self, plan: Plan, label: str) -> None:
        self.plan, self.label = plan, label
        self._frames_done = self._seconds = self._measured_frames = 0

    def eta_s(self) -> float | None:
        if not self._measured_frames or self.plan is None:
            return None
        left = sum(s.num_frames for s in self.plan.segments) - self._frames_done
        return left * self._seconds / self._measured_frames

    def segment_done(self, seg: Any, skipped: bool, seconds: float) -> None:
        self._frames_done += seg.num_frames
        if not skipped:
            self._seconds += seconds
            self._measured_frames += seg.num_frames

    def segment_start(self, seg: Any) -> None: ...
    def step(self, i: int, n: int) -> None: ...
    def finish(self) -> None: ...
    def message(self, text: str) -> None:
        print(plain(text), file=sys.stderr, flush=True)


def _eta_text(eta: float | None) -> str:
    return "ETA ?" if eta is None else f"ETA {int(eta // 60)}:{int(eta % 60):02d}"


class PlainProgress(Progress):
    """One line per segment on stderr: for logs, cluster jobs and `--quiet`."""

    def __init__(self, quiet: bool = False) -> None:
        super().__init__()
        self.quiet = quiet

    def segment_done(self, seg: Any, skipped: bool, seconds: float) -> None:
        super().segment_done(seg, skipped, seconds)
        if self.quiet or self.plan is None:
            return
        n = len(self.plan.segments)
        what = "resumed (already done)" if skipped else f"{seconds:.1f}s"
        print(f"[{plain(self.label)}] segment {seg.index + 1}/{n} shot {seg.shot_id} "
              f"{timecode(max(seg.start_frame, 0), self.plan.fps)} {what}, "
              f"{_eta_text(self.eta_s())}", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if not self.quiet:
            super().message(text)


class RichProgress(Progress):
    """Two bars (segments, denoising steps) with an ETA, for an interactive terminal."""

    def start(self, plan: Plan, label: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bars

        super().start(plan, label)
        self.bars = Bars(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                         TimeElapsedColumn(), TextColumn("{task.fields[eta]}"),
                         console=console(stderr=True), transient=False)
        self.bars.start()
        self.seg_task = self.bars.add_task(f"{for_rich(label)} segments", total=len(plan.segments),
                                           eta="ETA ?")
        self.step_task = self.bars.add_task("  steps", total=plan.steps, eta="")

    def segment_start(self, seg: Any) -> None:
        self.bars.reset(self.step_task, total=self.plan.steps if self.plan else 1,
                        description=f"  shot {seg.shot_id}")

    def step(self, i: int, n: int) -> None:
        self.bars.update(self.step_task, completed=i, total=n)

    def segment_done(self, seg: Any, skipped: bool, seconds: float) -> None:
        super().segment_done(seg, skipped, seconds)
        self.bars.update(self.seg_task, advance=1, eta=_eta_text(self.eta_s()))

    def finish(self) -> None:
        if hasattr(self, "bars"):
            self.bars.stop()

    def message(self, text: str) -> None:
        if hasattr(self, "bars"):
            self.bars.console.print(for_rich(text))
        else:
            super().message(text)


def make_progress(quiet: bool) -> Progress:
    if quiet or not sys.stderr.isatty():
        return PlainProgress(quiet=quiet)
    return RichProgress()
