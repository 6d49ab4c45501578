"""`bench revisit`: MAG-Bench's protocol (GT context, generate the return, find-match).

Per clip (docs/memory.md, "Revisit benchmark"):
1. truncate the clip to (N+3)//12*12-3 frames and put the switch at
   ceil((floor(0.75*duration_s*fps)+3)/12)*12-3, as MAG's `inference_magbench.py` does
   (12 frames = 3 latent blocks of 4 frames, a whole number of latents for every preset);
2. the frames before the switch are ground-truth context: they go through a preset's
   backend exactly as `extend` continues a clip (longvid/extend.py), and the preset
   generates the frames after it;
3. every generated frame is scored against its closest post-switch ground-truth frame
   (find-match): the closest by LPIPS when an LPIPS backbone is available offline, else
   by PSNR (`metric` says which); PSNR and SSIM are reported against the matched frames.

Without a folder of clips, procedural leave-and-return clips stand in (no download):
a camera pans away over a seeded procedural world and comes back along the same path,
so the frames after the switch show what the context's first frames showed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longvid.backends.procworld.world import make_world
from longvid.bench.metrics import psnr_db, ssim
from longvid.errors import InputError

BLOCK_FRAMES = 12  # MAG-Bench's snapping unit: 3 latent blocks x 4 frames
CONTEXT_SHARE = 0.75  # the first 75 % of the clip is context
VIEW_MAX_PX = 128  # longest side of a procedural view before it is scaled to the frame
BENCH_CRF = 0  # context and continuation pass through mp4 (extend's path): near lossless
BENCH_PROMPT = "the camera pans back to where it started"  # procedural clips' caption
# procedural clips: (count, frames); each clip's last 12 or 36 frames are generated
FULL_CLIPS, FULL_FRAMES = 6, 141
QUICK_CLIPS, QUICK_FRAMES = 2, 45


@dataclass(frozen=True)
class Clip:
    name: str
    frames: np.ndarray  # uint8 (N, H, W, 3), the whole clip
    fps: int
    duration_s: float  # as the CSV states it (procedural: N / fps)
    caption: str


@dataclass(frozen=True)
class ClipSource:
    """A clip by name, decoded only when a preset needs it (a folder may be large)."""

    name: str
    load: Callable[[], Clip]


@dataclass(frozen=True)
class Split:
    frames: int  # the clip truncated to this many frames
    switch: int  # frames [0, switch) are context, [switch, frames) are generated


def split(num_frames: int, duration_s: float, fps: int) -> Split:
    """MAG-Bench's truncation and switch frame, generalised from 16 fps to the clip's. On a
    short clip, where MAG's switch would leave nothing to generate, the last 12-frame block
    is generated."""
    unit, lead = BLOCK_FRAMES, 3
    frames = (num_frames + lead) // unit * unit - lead
    if frames < 2 * unit - lead:
        raise ValueError(f"{num_frames} frames leave no {unit}-frame block to generate after "
                         f"the context; a clip needs at least {2 * unit - lead} frames")
    switch = math.ceil((math.floor(CONTEXT_SHARE * duration_s * fps) + lead) / unit) * unit - lead
    return Split(frames, min(max(switch, unit - lead), frames - unit))


# -- scoring ------------------------------------------------------------------------------


def lpips_backbone() -> Any:
    """An LPIPS-Alex scorer if the `lpips` package and its AlexNet weights are on this
    machine (nothing is downloaded), else None: then find-match uses PSNR."""
    import importlib.util

    if importlib.util.find_spec("lpips") is None:
        return None
    import torch

    hub = Path(torch.hub.get_dir()) / "checkpoints"
    if not any(hub.glob("alexnet-owt-*.pth")):
        return None
    import lpips  # type: ignore[import-not-found]

    return lpips.LPIPS(net="alex", verbose=False).eval()


def _lpips(net: Any, a: np.ndarray, b: np.ndarray) -> float:
    import torch

    def t(x: np.ndarray) -> Any:
        return torch.from_numpy(x).permute(2, 0, 1)[None].float() / 127.5 - 1

    with torch.no_grad():
        return float(net(t(a), t(b)).mean())


def find_match(generated: np.ndarray, truth: np.ndarray, lpips_net: Any = None
               ) -> dict[str, float | None]:
    """Mean PSNR/SSIM (and LPIPS) of each generated frame against its closest frame of
    `truth` (uint8 (G, H, W, 3) and (T, H, W, 3)): closest by LPIPS when `lpips_net` is
    given, else by PSNR."""
    psnrs, ssims, lpipss = [], [], []
    for frame in generated:
        if lpips_net is not None:
            dists = [_lpips(lpips_net, frame, gt) for gt in truth]
            best = int(np.argmin(dists))
            lpipss.append(dists[best])
            psnrs.append(psnr_db(frame, truth[best]))
        else:
            scores = [psnr_db(frame, gt) for gt in truth]
            best = int(np.argmax(scores))
            psnrs.append(scores[best])
        ssims.append(ssim(frame, truth[best]))
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)),
            "lpips": float(np.mean(lpipss)) if lpipss else None}


# -- clips --------------------------------------------------------------------------------


def procedural_clips(count: int, num_frames: int, size: tuple[int, int], fps: int,
                     seed: int = 0) -> list[ClipSource]:
    """`count` leave-and-return clips of `num_frames` at `size` (W, H): a view of a seeded
    procedural world pans one view-width away in one of 8 directions, then back along the
    same path, so frame t and frame N-1-t show the same place."""
    width, height = size
    scale = max(1, math.ceil(max(width, height) / VIEW_MAX_PX))
    view_h, view_w = max(1, height // scale), max(1, width // scale)
    rows = np.arange(height) * view_h // height  # nearest-neighbour scaling to the frame
    cols = np.arange(width) * view_w // width
    clips = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        world = make_world(int(rng.integers(2 ** 31)))
        side = world.shape[0]
        angle = rng.integers(8) * math.pi / 4
        reach = min(view_w, side - view_w - 1, side - view_h - 1)  # px away at the turn
        dy, dx = math.sin(angle) * reach, math.cos(angle) * reach
        y0 = rng.integers(max(0, -math.floor(dy)), side - view_h - max(0, math.ceil(dy)) + 1)
        x0 = rng.integers(max(0, -math.floor(dx)), side - view_w - max(0, math.ceil(dx)) + 1)
        half = (num_frames - 1) / 2
        frames = np.empty((num_frames, height, width, 3), np.uint8)
        for t in range(num_frames):
            out = min(t, num_frames - 1 - t) / half  # 0 -> 1 at the turn -> 0
            y, x = int(round(y0 + out * dy)), int(round(x0 + out * dx))
            frames[t] = world[y:y + view_h, x:x + view_w][rows][:, cols]
        clip = Clip(f"procedural-{i:02d}", frames, fps, num_frames / fps, BENCH_PROMPT)
        clips.append(ClipSource(clip.name, lambda clip=clip: clip))  # type: ignore[misc]
    return clips


def procedural_for(preset: Any, quick: bool, limit: int | None = None) -> list[ClipSource]:
    """The procedural clips at the preset's resolution and frame rate."""
    count, frames = (QUICK_CLIPS, QUICK_FRAMES) if quick else (FULL_CLIPS, FULL_FRAMES)
    return procedural_clips(min(count, limit or count), frames, preset.resolution, preset.fps)


# -- the benchmark ------------------------------------------------------------------------

# (clip, split) -> the generated frames, uint8 (split.frames - split.switch, H, W, 3)
Continuation = Callable[[Clip, Split], np.ndarray]


def score_clip(clip: Clip, cut: Split, continue_clip: Continuation, lpips_net: Any = None
               ) -> dict[str, Any]:
    """Generate the part of `clip` after the switch and score it by find-match."""
    generated = continue_clip(clip, cut)
    expected = cut.frames - cut.switch
    if generated.shape != (expected, *clip.frames.shape[1:]):
        raise RuntimeError(f"{clip.name}: the continuation has shape {generated.shape}, "
                           f"expected {(expected, *clip.frames.shape[1:])}")
    return find_match(generated, clip.frames[cut.switch:cut.frames], lpips_net)


def run(clips: list[ClipSource], presets: list[str], make: Callable[[str], Continuation],
        log: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Every preset on every clip -> the JSON-able result. `make(preset)` gives the preset's
    continuation; presets run one after another, so one model is loaded at a time."""
    lpips_net = lpips_backbone()
    result: dict[str, Any] = {
        "metric": "lpips-find-match" if lpips_net is not None else "psnr-find-match",
        "clips": [{"name": c.name} for c in clips], "presets": {}}
    for name in presets:
        t0 = time.perf_counter()
        continue_clip, scores = make(name), []
        for source, row in zip(clips, result["clips"], strict=True):
            clip = source.load()
            try:
                cut = split(len(clip.frames), clip.duration_s, clip.fps)
            except ValueError as exc:
                raise InputError(f"clip {clip.name}: {exc}",
                                 "use longer clips, or check its duration(sec)") from None
            row.update(frames=cut.frames, switch=cut.switch, fps=clip.fps,
                       size=[clip.frames.shape[2], clip.frames.shape[1]])
            scores.append(score_clip(clip, cut, continue_clip, lpips_net))
            row[name] = {k: None if v is None else round(v, 4) for k, v in scores[-1].items()}
            log(f"{name} {clip.name}: {scores[-1]['psnr']:.2f} dB, SSIM "
                f"{scores[-1]['ssim']:.3f} ({time.perf_counter() - t0:.0f} s)")
        result["presets"][name] = {
            "psnr": round(float(np.mean([s["psnr"] for s in scores])), 4),
            "ssim": round(float(np.mean([s["ssim"] for s in scores])), 4),
            "lpips": (round(float(np.mean([s["lpips"] for s in scores])), 4)
                      if lpips_net is not None else None),
            "clips": len(scores), "wall_s": round(time.perf_counter() - t0, 1)}
    return result
