"""One render job, from storyboard file to mp4: the effects around the pure core.

load storyboard -> preset -> plan -> run directory -> segment loop -> concat + audio
-> sidecar JSON. `extend` is the same job with a clip in front and its tail as the
first take's context. Backends are loaded once per process and reused across jobs.
"""

from __future__ import annotations

import glob
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import longvid
from longvid.backends import backend_class, caps_of
from longvid.budget import LoadPolicy
from longvid.errors import InputError, LongvidError, ResourceError, StoryboardError
from longvid.identity import depends_on, rerolled, run_key, segment_identities
from longvid.output import Sidecar, claim_outputs, default_output, sidecar_path
from longvid.plan import Plan, make_plan
from longvid.presets import Preset, load_preset
from longvid.progress import Progress
from longvid.rundir import (
    Manifest,
    RunDir,
    atomic_write_text,
    readable,
    recorded_rerolls,
    run_dir_for,
)
from longvid.storyboard import Storyboard, load_storyboard
from longvid.timecode import MAX_SECONDS
from longvid.vram import choose_policy
from longvid.yamlsrc import source_id, source_label


@dataclass
class BackendPool:
    """Loaded backends by preset, so a batch loads each model once."""

    loaded: dict[tuple[str, LoadPolicy | None], Any] = field(default_factory=dict)

    def get(self, preset: Preset, policy: LoadPolicy | None = None) -> Any:
        key = (preset.sha256, policy)
        if key not in self.loaded:
            backend = backend_class(preset.backend)()
            backend.load(preset, policy)
            self.loaded[key] = backend
        return self.loaded[key]


@dataclass(frozen=True)
class RenderResult:
    source: str
    output: Path
    run_dir: Path
    frames: int
    duration_s: float
    segments: int
    resumed_segments: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"status": "ok", "source": self.source, "output": str(self.output),
                "run_dir": str(self.run_dir), "frames": self.frames,
                "duration_s": round(self.duration_s, 3), "segments": self.segments,
                "resumed_segments": self.resumed_segments, "seconds": round(self.seconds, 2)}


@dataclass(frozen=True)
class Prefix:
    """A clip that goes in front of the generated frames (`extend`)."""

    clip: Path
    clip_sha256: str  # part of the run's identity: another clip is another run
    output_size: tuple[int, int] | None  # (W, H) the segments are scaled to; None: as made
    # (backend, segments dir) -> the state segment 0 starts from: the clip's tail latents
    init_state: Callable[[Any, Path], dict[str, Any]]


@dataclass(frozen=True)
class Job:
    """Everything one render needs, resolved: what to make, with what, and where to."""

    plan: Plan
    preset: Preset
    output: Path  # absolute
    audio: tuple[Path, float] | None  # (file, offset_s) muxed under the video
    policy: LoadPolicy | None
    label: str  # how progress and results name the job: the storyboard's or clip's name
    prefix: Prefix | None = None
    rerolls: tuple[str, ...] = ()  # shots to render again with a new seed (`--reroll`)


def load_job(path: Path, preset_name: str | None, seed: int | None = None
             ) -> tuple[Storyboard, Preset, Plan]:
    """`seed`: replaces the storyboard's `seed` (`render --seed`)."""
    sb = load_storyboard(path)
    if seed is not None:
        sb = replace(sb, seed=seed)
    name = preset_name or sb.preset
    if preset_name is None and name.endswith((".yaml", ".yml")):
        name = str(Path(sb.path).parent / name)  # a preset file named by the storyboard
    try:
        preset = load_preset(name)
    except InputError as exc:
        if preset_name is not None or isinstance(exc, StoryboardError):
            raise
        raise StoryboardError(exc.message, exc.hint, path=sb.path, line=sb.line_of("preset"),
                              key="preset") from None
    _check_length(sb, sb.fps or preset.fps)
    return sb, preset, make_plan(sb, preset, caps_of(preset))


def _check_length(sb: Storyboard, fps: int) -> None:
    """The storyboard's timeline fits the length ceiling, checked before any per-frame work."""
    lengths = [s.duration.to_seconds(fps) for s in sb.shots if s.duration is not None]
    marks = [t.to_seconds(fps) for s in sb.shots for t in (s.start, s.end) if t is not None]
    if sum(lengths) + max(marks, default=0.0) > MAX_SECONDS:
        raise StoryboardError(
            f"the shots add up to more than {MAX_SECONDS // 3600} h, the longest storyboard "
            "longvid renders", "split it into several storyboards (render takes many at once)",
            path=sb.path, line=sb.line_of("shots"), key="shots")


def render_storyboard(path: Path, *, output: Path | None, preset_name: str | None, crf: int,
                      fresh: bool, pool: BackendPool, progress: Progress,
                      vram_gib: float | None = None, preview: bool = False,
                      seed: int | None = None, rerolls: tuple[str, ...] = ()) -> RenderResult:
    sb, preset, plan = load_job(path, preset_name, seed)
    out = (output or default_output(sb)).resolve()
    audio = (sb.audio.path, sb.audio.offset.to_seconds(plan.fps)) if sb.audio else None
    policy, found = None, []
    try:
        policy = choose_policy(preset, plan, vram_gib)
    except ResourceError as exc:
        found.append(exc)  # reported with whatever else the preflight finds
    job = Job(plan, preset, out, audio, policy, label=source_label(Path(path)), rerolls=rerolls)
    return run_job(job, pool, progress, crf=crf, fresh=fresh, found=found, preview=preview)


@dataclass(frozen=True)
class RunReuse:
    """What a render of a plan would reuse from the run directory already there."""

    run_dir: Path
    resumable: bool  # same run key; False: the render needs --fresh (and reuses nothing)
    rerolls: dict[str, int]  # the run's `--reroll` counts, which the render keeps
    reused: tuple[bool, ...]  # per segment of the plan: committed with the same identity

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "resumable": self.resumable,
                "rerolls": self.rerolls, "reused_segments": sum(self.reused)}


def reuse_of(plan: Plan, preset: Preset, output: Path) -> tuple[Plan, RunReuse | None]:
    """(the plan with the run's rerolls, what a render would reuse), reading the existing
    run directory of `output` (None if there is none) without locking or changing it.
    A segment counts as reused when its record holds its identity; a render still
    checks its files first. Assumes the CRF the run was made with."""
    run = RunDir(run_dir_for(output))
    try:
        manifest = json.loads((run.root / "manifest.json").read_text(encoding="utf-8"))
        key, crf = manifest["run_key"], int(manifest["crf"])
    except (OSError, ValueError, KeyError, TypeError):
        return plan, None
    if key != run_key(plan, preset.sha256, crf):
        return plan, RunReuse(run.root, False, {}, (False,) * len(plan.segments))
    rerolls = recorded_rerolls(run.root)
    plan = rerolled(plan, rerolls)
    same = run.reusable(segment_identities(plan)) if run.segments.is_dir() else {}
    kept = readable({i for i, ok in same.items() if ok},
                    [depends_on(plan, s.index) for s in plan.segments])
    return plan, RunReuse(run.root, True, rerolls, tuple(s.index in kept for s in plan.segments))


def _rerolls(job: Job, run: RunDir, fresh: bool) -> dict[str, int]:
    """The run's rerolls (kept from render to render, so a reroll stays), plus this one's."""
    shots = [s.id for s in job.plan.shots]
    for shot in job.rerolls:
        if shot not in shots:
            raise InputError(f"--reroll {shot}: the storyboard has no shot {shot!r}",
                             "name a shot id: " + ", ".join(shots))
    counts = {} if fresh else recorded_rerolls(run.root)
    for shot in dict.fromkeys(job.rerolls):
        counts[shot] = counts.get(shot, 0) + 1
    return counts


def run_job(job: Job, pool: BackendPool, progress: Progress, *, crf: int, fresh: bool,
            found: list[LongvidError] | None = None, preview: bool = False) -> RenderResult:
    """Generate (or resume) every segment of the job's plan, then write its mp4 and sidecar.
    `found`: problems met while preparing the job, reported with the preflight's;
    `preview`: keep the live preview beside the output (longvid/preview.py)."""
    from longvid import preflight
    from longvid.generate import render_segments
    from longvid.mux import concat
    from longvid.preview import LivePreview, claim_preview, discard_preview

    out, prefix = job.output, job.prefix
    t0 = time.perf_counter()
    run = RunDir(run_dir_for(out))
    rerolls = _rerolls(job, run, fresh)
    plan = rerolled(job.plan, rerolls)
    identities = segment_identities(plan)
    reusable = run.reusable(identities)
    # before the run directory is bound: a refused render writes nothing
    warnings = preflight.check(
        plan, job.preset, out, run.root, audio=job.audio,
        generates=fresh or not all(reusable.get(s.index) for s in plan.segments),
        found=found or [], more=[lambda: claim_outputs(out, _inputs(job))] + (
            [lambda: claim_preview(out, _inputs(job))] if preview else []),
        policy=job.policy)
    for warning in warnings:  # before any model loads: a RAM warning is about the load too
        progress.message(f"warning: {warning}")
    manifest = Manifest(
        longvid=longvid.__version__,
        run_key=run_key(plan, job.preset.sha256, crf, prefix.clip_sha256 if prefix else ""),
        storyboard=plan.storyboard, content_sha256=plan.content_sha256,
        preset=job.preset.name, preset_sha256=job.preset.sha256, backend=plan.backend,
        crf=crf, fps=plan.fps, output=str(out), rerolls=rerolls)
    done_before = run.open(manifest.to_dict(), identities=identities, fresh=fresh,
                           reads=[depends_on(plan, s.index) for s in plan.segments])
    for stale in out.parent.glob(f".{glob.escape(out.stem)}.*.tmp.mp4"):
        stale.unlink()  # a join killed midway; the lock makes this run the only writer
    output_size = prefix.output_size if prefix else None
    try:
        prefix_video = None
        if prefix is not None:
            from longvid.mux import reencode_video

            prefix_video = run.root / "clip.mp4"
            if not run.sealed(prefix_video):
                reencode_video(prefix.clip, prefix_video, plan.fps, crf, size=output_size)
                run.seal_file(prefix_video)
        backend, versions = None, run.root / "versions.json"
        if not all(run.is_done(s.index) for s in plan.segments):  # no model just to re-join
            backend = pool.get(job.preset, job.policy)
            atomic_write_text(versions, json.dumps(
                {"longvid": longvid.__version__} | backend.versions(), indent=2))
            if prefix is not None and not run.has_init():
                run.commit_init(prefix.init_state(backend, run.segments))
        progress.start(plan, job.label)
        if done_before:
            progress.message(f"resuming {run.root}: {done_before} of {len(plan.segments)} "
                             "segments already done")
        records = []
        live = LivePreview(out, run, plan, prefix_video, progress) if preview else None
        for done in render_segments(plan, backend, run, crf=crf, output_size=output_size,
                                    on_start=progress.segment_start, on_step=progress.step):
            if live is not None:
                live.committed(done)
            progress.segment_done(done.segment, done.skipped, done.seconds)
            record = run.record(done.segment.index)
            record.pop("files", None)  # the run directory's own bookkeeping
            records.append(record | {"reused": done.skipped})
        progress.finish()
        segment_videos = [run.video(s.index) for s in plan.segments if s.emit_frames]
        videos = ([prefix_video] if prefix_video else []) + segment_videos
        total_frames = _prefix_frames(prefix_video) + plan.total_frames
        concat(videos, out, fps=plan.fps, total_frames=total_frames,
               audio=job.audio, list_file=run.root / "concat.txt",
               metadata={"title": plan.title, "comment": f"longvid {longvid.__version__} "
                         f"seed={plan.seed} storyboard_sha256={plan.content_sha256}",
                         "longvid_seed": str(plan.seed),
                         "longvid_storyboard_sha256": plan.content_sha256})
        discard_preview(out)
        seconds = time.perf_counter() - t0
        sidecar = Sidecar(
            title=plan.title, storyboard=plan.storyboard,
            storyboard_sha256=plan.content_sha256, preset=job.preset.name,
            backend=plan.backend, seed=plan.seed, rerolls=rerolls, fps=plan.fps,
            width=plan.width, height=plan.height, steps=plan.steps,
            guidance_scale=plan.guidance_scale, crf=crf,
            frames=total_frames, duration_s=total_frames / plan.fps,
            audio=str(job.audio[0]) if job.audio else None,
            versions=_versions(versions),
            timings={"wall_s": round(seconds, 3),
                     "generate_s": round(sum(r["seconds"] for r in records), 3)},
            segments=tuple(records))
        atomic_write_text(sidecar_path(out), json.dumps(sidecar.to_dict(), indent=2))
        return RenderResult(source_id(Path(plan.storyboard)), out, run.root, total_frames,
                            total_frames / plan.fps, len(plan.segments), done_before, seconds)
    finally:
        run.close()

def _versions(path: Path) -> dict[str, str]:
    """What the run that loaded the model recorded; this version alone if that is gone."""
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = None
    return recorded if isinstance(recorded, dict) else {"longvid": longvid.__version__}


def _inputs(job: Job) -> list[tuple[Path, str]]:
    """The files the job reads, which its outputs must never replace."""
    inputs = [(Path(job.plan.storyboard), "the storyboard" if job.prefix is None
               else "the clip itself")]
    if job.preset.source:
        inputs.append((Path(job.preset.source), "the preset file"))
    if job.audio is not None:
        inputs.append((job.audio[0], "the audio file"))
    if job.prefix is not None:
        inputs.append((job.prefix.clip, "the clip itself"))
    return inputs


def _prefix_frames(video: Path | None) -> int:
    if video is None:
        return 0
    from longvid.mux import probe

    return probe(video).frames
