"""`extend`: continue an existing clip. The clip's tail becomes the first take's context.

The job is an ordinary render of a one-shot storyboard whose first take continues
from latents encoded from the clip's last frames (and, for a backend whose cache keeps
a take's first latents as a sink, from the clip's first frames as that sink); the clip
itself is re-encoded once with the segment settings and joined in front by stream copy.
Keyframes spread over the clip seed the memory bank: retrieval can bring them back, and the clip's
first frame is the anchor the drift monitor compares the extension with.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

from longvid.backends import caps_of
from longvid.errors import InputError, LongvidError, ResourceError
from longvid.plan import make_plan
from longvid.presets import available_presets, load_preset
from longvid.progress import Progress
from longvid.render import BackendPool, Job, Prefix, RenderResult, run_job
from longvid.rundir import file_sha256
from longvid.storyboard import Storyboard, one_shot
from longvid.timecode import MAX_SECONDS
from longvid.vram import choose_policy
from longvid.yamlsrc import unicode_text

DEFAULT_PROMPT = "the same scene continues"
SHOT_ID = "extend"
CLIP_KEYFRAMES = 8


def generation_size(width: int, height: int, multiple: int, max_side: int) -> tuple[int, int]:
    """The clip's size if the backend takes it, else the nearest size it does (same aspect)."""
    scale = min(1.0, max_side / max(width, height))

    def fit(v: float) -> int:
        return max(multiple, math.floor(v * scale / multiple + 0.5) * multiple)

    return fit(width), fit(height)


def _any_fps_presets() -> list[str]:
    """The presets that generate at whatever frame rate a clip has."""
    names = []
    for name in sorted(available_presets()):
        try:
            if caps_of(load_preset(name)).any_fps:
                names.append(name)
        except LongvidError:  # a user's broken preset is reported where it is used
            continue
    return names


def extend_clip(clip: Path, *, seconds: float, prompt: str | None, preset_name: str,
                output: Path, seed: int, crf: int, fresh: bool, pool: BackendPool,
                progress: Progress, vram_gib: float | None = None) -> RenderResult:
    from longvid.mux import probe

    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_SECONDS:
        raise InputError(f"--seconds must be positive and at most {MAX_SECONDS // 3600} h "
                         f"(a number of seconds), got {seconds:g}",
                         "say how much to add, e.g. --seconds 60")
    if prompt is not None and unicode_text(prompt) is None:
        raise InputError("--prompt is not valid text: it holds bytes that are not UTF-8",
                         "pass the prompt as UTF-8 (check the terminal's or script's "
                         "encoding)")
    prompt = unicode_text(prompt) if prompt is not None else None
    info = probe(clip)
    fps = max(1, round(info.fps))
    if info.fps != fps:  # 30000/1001 (NTSC, phones), 12.5, ...: a stated constant rate
        progress.message(f"warning: {clip.name} runs at {float(info.fps):.3f} fps; the "
                         f"result is at {fps} fps (frames are repeated or dropped to keep "
                         "the clip's timing)")
    preset = load_preset(preset_name)
    caps = caps_of(preset)
    if not caps.takes_context:
        raise InputError(f"preset {preset.name!r} cannot continue from context frames",
                         "choose a preset whose backend takes context (see docs/presets.md)")
    if not caps.any_fps and fps != caps.native_fps:  # the clip's rate is the result's
        raise InputError(f"{clip}: preset {preset.name!r} generates at {caps.native_fps} fps, "
                         f"and the clip runs at {fps}",
                         f"re-time the clip first (ffmpeg -i {clip.name} -r {caps.native_fps} "
                         "retimed.mp4), or choose a preset that takes any frame rate: "
                         + ", ".join(_any_fps_presets()))
    # the result is the clip as shown, in square pixels, to even sides (H.264 in 4:2:0,
    # as longvid encodes, has no odd ones): 33x25 becomes 32x24
    shown = (max(2, info.width - info.width % 2), max(2, info.height - info.height % 2))
    size = generation_size(*shown, caps.size_multiple, caps.max_side)
    clip_sha = file_sha256(clip)
    text = prompt or DEFAULT_PROMPT
    sb = _one_shot(clip, text, seconds, fps, size, seed, clip_sha)
    tail_frames = (caps.context_latents - 1) * caps.latent_stride_t + 1
    sink_frames = (caps.sink.latents - 1) * caps.latent_stride_t + 1 if caps.sink else 0
    # the take began in the clip: its first latents are the cache's sink, as a take's first
    # segment leaves them (a shorter clip's start is in the context)
    clip_sink = caps.sink is not None and info.frames >= sink_frames + tail_frames
    plan = make_plan(sb, preset, caps, continues=True, clip_sink=clip_sink)
    # the segments are scaled to that size from the backend's grid, the clip's re-encode
    # from its stored pixels
    stored_as_shown = shown == (info.width, info.height) and info.sample_aspect == 1
    out_size = None if size == shown and stored_as_shown else shown

    def init_state(backend: Any, segments_dir: Path) -> dict[str, Any]:
        from longvid.mux import read_frames

        _seed_bank(backend, clip, info.frames, size, segments_dir)
        tail = read_frames(clip, size[0], size[1], first=max(0, info.frames - tail_frames))
        if len(tail) < tail_frames:  # a clip shorter than the context: repeat its first frame
            import numpy as np

            tail = np.concatenate([tail[:1].repeat(tail_frames - len(tail), 0), tail])
        state = {"context": backend.encode_frames(tail[-tail_frames:])}
        if clip_sink:
            head = read_frames(clip, size[0], size[1], only=list(range(sink_frames)))
            state["sink"] = backend.encode_frames(head)
        return state

    found: list[LongvidError] = []  # reported with whatever else the preflight finds
    policy = None
    try:
        policy = choose_policy(preset, plan, vram_gib)
    except ResourceError as exc:
        found.append(exc)
    job = Job(plan, preset, output.resolve(),
              audio=(clip.resolve(), 0.0) if info.has_audio else None, policy=policy,
              label=clip.name, prefix=Prefix(clip.resolve(), clip_sha, out_size, init_state))
    return run_job(job, pool, progress, crf=crf, fresh=fresh, found=found)


def _seed_bank(backend: Any, clip: Path, frames: int, size: tuple[int, int],
               segments_dir: Path) -> None:
    """The clip's keyframes, first frame included, as the bank's entries before segment 0."""
    import numpy as np

    from longvid.memory.bank import DEFAULT_CAPACITY
    from longvid.memory.store import memory_path, pick_keyframes, save_keyframes
    from longvid.mux import read_frames

    count = min(frames, CLIP_KEYFRAMES, DEFAULT_CAPACITY // 2)
    as_frames = backend.caps.memory is not None and backend.caps.memory.frames
    numbers = sorted({round(i * (frames - 1) / max(count - 1, 1)) for i in range(count)})
    pictures = read_frames(clip, size[0], size[1], only=numbers)  # (k, H, W, 3)
    keyframes = []
    for n, picture in zip(numbers, pictures, strict=False):
        latent = backend.encode_frames(picture[None])[0].float().numpy()  # (C, 1, h, w)
        keyframes += pick_keyframes(segment=-1, take=0, shot_id=SHOT_ID, prompt="", count=1,
                                    start_frame=n - frames, latents=latent,
                                    frames=np.ascontiguousarray(picture[None]),
                                    continuing=False, stride=1, keep_images=as_frames)
    save_keyframes(memory_path(segments_dir, -1), keyframes)


def _one_shot(clip: Path, text: str, seconds: float, fps: int, size: tuple[int, int],
              seed: int, clip_sha: str) -> Storyboard:
    frames = max(1, round(seconds * fps))
    key = hashlib.sha256(f"{clip_sha}:{text}:{frames}f:{fps}:{size}:{seed}".encode())
    return one_shot(path=str(clip), shot_id=SHOT_ID, title=f"{clip.stem} extended",
                    prompt=text, frames=frames, fps=fps, resolution=size, seed=seed,
                    content_sha256=key.hexdigest())
