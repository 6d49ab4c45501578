"""The live preview: `<output stem>.partial.mp4` beside the output, the segments committed
so far joined by stream copy (nothing is encoded again).

`render --preview` refreshes it after each segment it commits (a long one less often:
`refresh_due`); `longvid preview` makes it from a run directory in progress or
interrupted, without the run's lock: it joins only segments whose record (written last)
exists and whose video has the size and SHA-256 the record sealed, in order from the
first, and stops at the first that is missing or does not match. Like every output it is
written to a temporary name and moved into place, so a player never opens half a file.
When the final video is written the preview is removed.

What it shows: exactly the first frames of the final video (the same encoded
segments), without audio. Around a crossfade the outgoing shot's last frames are
held back and dissolved into the next take's first segment, so they appear only
once that segment is committed.

It never replaces a file longvid did not make as a preview: an existing
`<stem>.partial.mp4` without the `longvid_preview` tag (a user's file, or another
render's video of that name), a folder of that name, or one of the job's inputs is
refused with exit 3 before any work.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from longvid.errors import InputError, LongvidError
from longvid.output import has_tag, same_file
from longvid.rundir import RunDir, find_run, intact

if TYPE_CHECKING:
    from longvid.generate import SegmentDone
    from longvid.plan import Plan
    from longvid.progress import Progress

PREVIEW_TAG = "longvid_preview"  # metadata every preview carries; only such a file is replaced
_SUFFIX = ".partial.mp4"
FULL_REFRESH_SEGMENTS = 50  # a preview of up to this many segment videos: after each one


def refresh_due(joined: int, since_last: int) -> bool:
    """Whether `render --preview` refreshes a preview of `joined` segment videos after a
    segment `since_last` segments after its last refresh. A refresh copies the whole
    preview, so refreshing after every segment costs quadratic time in a long render:
    after every segment up to FULL_REFRESH_SEGMENTS, then every ceil(joined / 50)
    segments, which keeps each segment's share to about one 50-segment copy (0.1-0.2 s
    at 2.5 MB a segment): linear in the render's length."""
    return since_last >= -(-joined // FULL_REFRESH_SEGMENTS)


def preview_path(output: Path) -> Path:
    """`scene.mp4` -> `scene.partial.mp4` beside it."""
    return output.with_name(output.stem + _SUFFIX)


@dataclass(frozen=True)
class Committed:
    """What a preview joins: videos in order (an `extend` clip first) and their frames."""

    videos: tuple[Path, ...]
    frames: int
    segments: int = 0  # committed segments (one that only holds frames has no video)


def claim_preview(output: Path, inputs: list[tuple[Path, str]]) -> None:
    """Refuse, before any work, a preview that would replace one of the job's inputs
    (path, what it is), a folder, or a file longvid did not write as a preview."""
    path = preview_path(output)
    for source, what in inputs:
        if same_file(path, source):
            raise InputError(f"the preview {path} is {what}",
                             "choose another output with -o, or render without --preview")
    if path.is_dir():
        raise InputError(f"the preview {path} would replace a folder",
                         "move that folder away, choose another output with -o, or render "
                         "without --preview")
    if path.exists() and not has_tag(path, PREVIEW_TAG):
        raise InputError(f"{path} exists and was not written by longvid as a preview; the "
                         "preview would replace it", "move that file away, choose another "
                         "output with -o, or render without --preview")


def discard_preview(output: Path) -> None:
    """Remove the preview of `output` once the final video is written (only longvid's)."""
    path = preview_path(output)
    if path.is_file() and has_tag(path, PREVIEW_TAG):
        path.unlink(missing_ok=True)


def committed(run_root: Path) -> Committed:
    """The segment videos a run has committed, checked against their seals, in order up to
    the first segment that is not (yet) committed or does not match; read-only, no lock."""
    run = RunDir(run_root)
    videos: list[Path] = []
    frames = 0
    clip = run_root / "clip.mp4"  # `extend`'s clip, joined in front
    if run.sealed(clip):
        videos.append(clip)
        frames += _frames(clip)
    index = 0
    while True:
        try:
            record = json.loads(run.record_path(index).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            break
        count = record.get("frames") if isinstance(record, dict) else None
        if not isinstance(count, int) or count < 0:  # not a record longvid wrote
            break
        if count:  # a segment that only holds frames for a crossfade writes no video
            video = run.video(index)
            sealed = record.get("files")
            if not (intact(run.segments, {video.name: sealed[video.name]})
                    if isinstance(sealed, dict) and video.name in sealed
                    else _frames(video, missing=0) == count):
                break
            videos.append(video)
            frames += count
        index += 1
    return Committed(tuple(videos), frames, segments=index)


def write_preview(output: Path, run_root: Path, done: Committed, *, fps: int,
                  tags: dict[str, str]) -> Path:
    """Join `done` into the preview of `output` (atomically); return its path."""
    from longvid.mux import concat

    path = preview_path(output)
    list_file = run_root / f".preview.{os.getpid()}.tmp.txt"
    try:
        concat(list(done.videos), path, fps=fps, total_frames=done.frames,
               metadata=tags | {PREVIEW_TAG: "1"}, list_file=list_file)
    finally:
        list_file.unlink(missing_ok=True)
    return path


def preview_run(target: Path) -> tuple[Path, Path, Committed]:
    """`longvid preview`: (run directory, preview path, what it joins) for a run directory
    or the output video a render is writing (its run directory is found as render finds
    it). Exit 3 when there is no run or no committed segment yet."""
    run_root = find_run(target)
    try:
        manifest = json.loads((run_root / "manifest.json").read_text(encoding="utf-8"))
        output, fps = Path(manifest["output"]), int(manifest["fps"])
        sha = str(manifest["content_sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"{run_root / 'manifest.json'} is damaged (not a longvid manifest)",
                         "run the render again with --fresh to start over") from None
    source = manifest.get("storyboard")
    claim_preview(output, [(Path(source), "the render's input")] if source else [])
    done = committed(run_root)
    if not done.segments or not done.frames:
        raise InputError(f"{run_root} has no committed segment yet",
                         "run `longvid preview` again once the render has finished its "
                         "first segment")
    try:
        path = write_preview(output, run_root, done, fps=fps,
                             tags={"longvid_storyboard_sha256": sha})
    except (RuntimeError, LongvidError) as exc:
        raise InputError(f"the committed segments of {run_root} could not be joined into "
                         f"{preview_path(output)} ({exc})",
                         "if a render of it has just started over (--fresh) or is repairing "
                         "it, run `longvid preview` again in a moment") from None
    return run_root, path, done


class LivePreview:
    """`render --preview`: the preview kept current while the segment loop runs."""

    def __init__(self, output: Path, run: RunDir, plan: Plan, prefix_video: Path | None,
                 progress: Progress) -> None:
        self.output, self.run, self.plan, self.progress = output, run, plan, progress
        self.videos = [] if prefix_video is None else [prefix_video]
        self.frames = 0 if prefix_video is None else _frames(prefix_video)
        self.since_refresh = 0  # segments committed since the preview was last written
        progress.message(f"preview: {preview_path(output)} (the segments done so far, "
                         "refreshed after each)")

    def committed(self, done: SegmentDone) -> None:
        """After segment `done` (the loop yields them in order) is committed: join it in.
        The preview is written after each segment generated now (once it is long, as
        `refresh_due` says), and after one an earlier run committed when the next is to
        be generated; not after the last segment, which the final video follows at once."""
        seg = done.segment
        self.since_refresh += 1
        if seg.emit_frames:
            self.videos.append(self.run.video(seg.index))
            self.frames += seg.emit_frames
        if seg.index == len(self.plan.segments) - 1:
            return
        if (not done.skipped or not self.run.is_done(seg.index + 1)) and refresh_due(
                len(self.videos), self.since_refresh):
            self._write()

    def _write(self) -> None:
        if not self.frames:
            return
        self.since_refresh = 0
        tags = {"title": self.plan.title, "longvid_storyboard_sha256": self.plan.content_sha256}
        try:
            write_preview(self.output, self.run.root, Committed(tuple(self.videos), self.frames),
                          fps=self.plan.fps, tags=tags)
        except (LongvidError, RuntimeError, OSError) as exc:
            # the preview is a view of the run, not part of it: the render goes on
            self.progress.message(f"warning: the preview {preview_path(self.output)} could "
                                  f"not be refreshed ({exc})")


def _frames(video: Path, missing: int | None = None) -> int:
    from longvid.mux import probe

    try:
        return probe(video).frames
    except InputError:
        if missing is None:
            raise
        return missing


