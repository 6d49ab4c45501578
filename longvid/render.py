"""One render job, from storyboard file to mp4: the effects around the pure core.

load storyboard -> preset -> plan -> run directory -> segment loop -> concat + audio
-> sidecar JSON. `extend` is the same job with a clip in front and its tail as the
first take's context. Backends are loaded once per process and reused across jobs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import longvid
from longvid.backends import backend_class, caps_of
from longvid.budget import LoadPolicy, policy_for
from longvid.errors import InputError, ResourceError, StoryboardError
from longvid.plan import Plan, make_plan
from longvid.presets import Preset, load_preset
from longvid.progress import Progress
from longvid.rundir import RunDir, atomic_write_text
from longvid.storyboard import Storyboard, load_storyboard


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


def default_output(sb: Storyboard) -> Path:
    return sb.output if sb.output is not None else Path.cwd() / f"{Path(sb.path).stem}.mp4"


def run_dir_for(output: Path) -> Path:
    """`out.mp4` -> `out.run/` beside it, or under $LONGVID_HOME/runs/ when that is set."""
    output = output.resolve()
    if home := os.environ.get("LONGVID_HOME"):
        tag = hashlib.sha256(str(output).encode()).hexdigest()[:8]
        return Path(home) / "runs" / f"{output.stem}-{tag}"
    return output.with_suffix(".run")


def load_job(path: Path, preset_name: str | None) -> tuple[Storyboard, Preset, Plan]:
    sb = load_storyboard(path)
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
    return sb, preset, make_plan(sb, preset, caps_of(preset))


def detected_vram_gib() -> float | None:
    """Free VRAM of the first CUDA device, or None without one (imports torch)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.mem_get_info()[0] / 2**30


def choose_policy(preset: Preset, plan: Plan, vram_gib: float | None) -> LoadPolicy | None:
    """The load policy for `vram_gib` (default: the free VRAM); exit 4 if the GPU is too small."""
    if preset.memory is None:
        return None
    vram = vram_gib if vram_gib is not None else detected_vram_gib()
    if vram is None:
        return None  # no GPU: the backend says so plainly when it loads
    policy = policy_for(vram, preset.memory, plan.max_tokens, preset.quantization)
    if vram < preset.min_vram_gib or not policy.fits:
        worst = max(policy.stages, key=lambda s: s.peak_gib)
        raise ResourceError(
            f"preset {preset.name!r} needs at least {max(preset.min_vram_gib, policy.peak_gib):.1f}"
            f" GiB of GPU memory ({worst.name} stage) and {vram:.1f} GiB is available",
            "free GPU memory (close other programs), lower the resolution, or choose a smaller "
            "preset (`longvid doctor` lists what fits)")
    return policy


def render_storyboard(path: Path, *, output: Path | None, preset_name: str | None, crf: int,
                      fresh: bool, pool: BackendPool, progress: Progress,
                      vram_gib: float | None = None) -> RenderResult:
    sb, preset, plan = load_job(path, preset_name)
    policy = choose_policy(preset, plan, vram_gib)
    out = (output or default_output(sb)).resolve()
    audio = (sb.audio.path, sb.audio.offset.to_seconds(plan.fps)) if sb.audio else None
    return _run_job(plan, preset, out, crf=crf, fresh=fresh, pool=pool, progress=progress,
                    seed=sb.seed, audio=audio, label=Path(path).name, policy=policy)


def _run_key(plan: Plan, preset: Preset, crf: int, extra: str = "") -> str:
    data = plan.to_dict()
    for volatile in ("title", "storyboard", "content_sha256"):
        data.pop(volatile)
    text = json.dumps(data, sort_keys=True) + preset.sha256 + f"crf={crf}" + extra
    return hashlib.sha256(text.encode()).hexdigest()


def _run_job(plan: Plan, preset: Preset, out: Path, *, crf: int, fresh: bool, pool: BackendPool,
             progress: Progress, seed: int, audio: tuple[Path, float] | None, label: str,
             prefix: tuple[Path, str] | None = None, output_size: tuple[int, int] | None = None,
             init_state: Any = None, policy: LoadPolicy | None = None) -> RenderResult:
    """Generate (or resume) every segment of `plan`, then write `out` and its sidecar."""
    from longvid.generate import render_segments
    from longvid.mux import concat, ffmpeg_exe

    ffmpeg_exe()  # fail with exit 4 before any model loads
    t0 = time.perf_counter()
    run = RunDir(run_dir_for(out))
    manifest = {"longvid": longvid.__version__, "run_key": _run_key(plan, preset, crf,
                                                                     prefix[1] if prefix else ""),
                "storyboard": plan.storyboard, "content_sha256": plan.content_sha256,
                "preset": preset.name, "preset_sha256": preset.sha256, "backend": plan.backend,
                "crf": crf, "fps": plan.fps, "output": str(out)}
    done_before = run.open(manifest, fresh=fresh)
    for stale in out.parent.glob(f".{out.stem}.*.tmp.mp4"):
        stale.unlink()  # a join killed midway; the lock makes this run the only writer
    try:
        prefix_video = None
        if prefix is not None:
            from longvid.mux import reencode_video

            prefix_video = run.root / "clip.mp4"
            if not prefix_video.exists():
                reencode_video(prefix[0], prefix_video, plan.fps, crf, size=output_size)
        backend, versions = None, run.root / "versions.json"
        if not all(run.is_done(s.index) for s in plan.segments):  # no model just to re-join
            backend = pool.get(preset, policy)
            atomic_write_text(versions, json.dumps(
                {"longvid": longvid.__version__} | backend.versions(), indent=2))
            if init_state is not None and not run.state_path(-1).exists():
                run.save_state(-1, init_state(backend, run.segments))
        progress.start(plan, label)
        if done_before:
            progress.message(f"resuming {run.root}: {done_before} of {len(plan.segments)} "
                             "segments already done")
        records = []
        for done in render_segments(plan, backend, run, crf=crf, output_size=output_size,
                                    on_start=progress.segment_start, on_step=progress.step):
            progress.segment_done(done.segment, done.skipped, done.seconds)
            records.append(run.record(done.segment.index))
        progress.finish()
        segment_videos = [run.video(s.index) for s in plan.segments if s.emit_frames]
        videos = ([prefix_video] if prefix_video else []) + segment_videos
        prefix_frames = _prefix_frames(prefix_video)
        concat(videos, out, fps=plan.fps, total_frames=prefix_frames + plan.total_frames,
               audio=audio, list_file=run.root / "concat.txt",
               metadata={"title": plan.title, "comment": f"longvid {longvid.__version__} "
                         f"seed={seed} storyboard_sha256={plan.content_sha256}",
                         "longvid_seed": str(seed),
                         "longvid_storyboard_sha256": plan.content_sha256})
        seconds = time.perf_counter() - t0
        sidecar = {"title": plan.title, "storyboard": plan.storyboard,
                   "storyboard_sha256": plan.content_sha256, "preset": preset.name,
                   "backend": plan.backend, "seed": seed, "fps": plan.fps,
                   "width": plan.width, "height": plan.height, "steps": plan.steps,
                   "guidance_scale": plan.guidance_scale, "crf": crf,
                   "frames": prefix_frames + plan.total_frames,
                   "duration_s": (prefix_frames + plan.total_frames) / plan.fps,
                   "audio": str(audio[0]) if audio else None,
                   "versions": json.loads(versions.read_text()) if versions.exists()
                   else {"longvid": longvid.__version__},
                   "timings": {"wall_s": round(seconds, 3),
                               "generate_s": round(sum(r["seconds"] for r in records), 3)},
                   "segments": records}
        atomic_write_text(out.with_suffix(".json"), json.dumps(sidecar, indent=2))
        return RenderResult(label, out, run.root, prefix_frames + plan.total_frames,
                            (prefix_frames + plan.total_frames) / plan.fps, len(plan.segments),
                            done_before, seconds)
    finally:
        run.close()


def _prefix_frames(video: Path | None) -> int:
    if video is None:
        return 0
    from longvid.mux import probe

    return probe(video).frames


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_output(path: Path) -> Path:
    if path.suffix.lower() != ".mp4":
        raise InputError(f"output {path} is not an .mp4 file", "name the output like `out.mp4`")
    return path
