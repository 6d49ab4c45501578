"""`procworld`: the shipped ProcMem world models walking a procedural world. CPU, seconds.

The model (model.py beside this file) draws one 32x32 frame at a time by flow matching,
conditioned on 4 context frames and their camera poses (RoPE on world coordinates):
the memory variant sees the 2 latest frames plus the 2 older ones that best cover
the target view (greedy field-of-view cover, retrieval.py); the window
variant the 4 latest. What it draws is a view of a seeded world (world.py):
world seed = TEST_SEED_START + the storyboard's `seed`, a held-out range, so no
storyboard world was seen in training. Prompts are ignored.

Poses come from the plan, never from this object: every request carries a
`ViewPath`: the camera position of each memory, context and new frame
(longvid/camera.py), and a mask of the view cells no earlier frame of the video
showed. So a resumed render draws exactly what an uninterrupted one does.

- A frame with nothing relevant in its context (the first of a take, unless a
  recalled keyframe shows its place) is the world's true view: this backend's
  prompt, as an image is an image-to-video model's.
- With `reveal_new` (default on), cells no earlier frame showed are the world's true
  view too, so the model only has to *remember*: everything the camera saw before
  is redrawn by the model from its context. Off: every frame after a take's first
  is the model's own, and new ground is its blurry minimum-error guess.

Latents are the frames themselves, 32x32 in [-1, 1]: (1, 3, T, 32, 32), which is
(1, C, T, H/8, W/8) for the 256x256 output; each frame is quantized to uint8 first,
so the carried latents are exactly the pixels shown. Output frames are the 32x32
frames scaled 8x by pixel repetition: nearest keeps the model's pixels exact (no
invented detail) and puts every model pixel on 8x8 blocks, so H.264's 2x2 chroma
subsampling never mixes two of them.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, ClassVar, Literal

from pydantic import Field

from longvid.backends.base import (
    BackendCaps,
    BackendOptions,
    CameraCaps,
    MemoryCaps,
    PerFrameWork,
    SegmentOutput,
    SegmentRequest,
    StepCallback,
)
from longvid.errors import InputError, ResourceError

SCALE = 8  # output pixels per model pixel, per side: 32x32 -> 256x256
VIEW_PATCHES = 8  # = world.FRAME_PATCHES (kept literal: no numpy at import)
CENTRE_PATCHES = 44  # = world.MAX_POSE // 2: camera position (0, 0) in world patches


class ProcWorldBackend:
    name: ClassVar[str] = "procworld"
    caps: ClassVar[BackendCaps] = BackendCaps(
        native_fps=8, any_fps=False, latent_stride_t=1, max_latents=96, context_latents=64,
        size_multiple=32 * SCALE, max_side=32 * SCALE, takes_context=True,
        tokens_per_latent_px=(32 * SCALE) ** 2 // 64, memory=MemoryCaps(latents=4, trained=True),
        camera=CameraCaps(view_steps=VIEW_PATCHES, range_steps=CENTRE_PATCHES),
        per_frame=PerFrameWork(tokens_per_forward=(4 + 1) * VIEW_PATCHES**2),
        reads_prompts=False, corrects_drift=False,
    )  # 64 carried frames: a take's retrieval pool; 4 recalled keyframes across takes;
    # one frame per forward: its 64 tokens attend to 4 context frames' 64 tokens each

    class Options(BackendOptions):
        variant: Literal["memory", "window"] = Field(
            "memory", description="memory: 2 latest + 2 retrieved frames; window: 4 latest")
        reveal_new: bool = Field(True, description="never-seen ground is the world's true "
                                                   "view (off: the model's guess)")

    def __init__(self) -> None:
        self.options = self.Options()
        self._worlds: dict[int, Any] = {}  # world seed -> uint8 (384, 384, 3), a pure cache

    def load(self, preset: Any, policy: Any = None) -> None:
        from longvid.backends.procworld import world
        from longvid.backends.procworld.model import WEIGHTS_DIR, load_model

        assert (world.FRAME_PATCHES, world.MAX_POSE // 2) == (VIEW_PATCHES, CENTRE_PATCHES)
        self.options = preset.options
        variant = self.options.variant
        self.weights = WEIGHTS_DIR / f"procworld-{variant}.safetensors"
        if not self.weights.is_file():
            raise ResourceError(f"procworld weights not found: {self.weights}",
                                "reinstall longvid, or train them with "
                                "`nice -n 19 python scripts/train_procworld.py`")
        self.model, _ = load_model(self.weights)

    def versions(self) -> dict[str, str]:
        import torch

        digest = hashlib.sha256(self.weights.read_bytes()).hexdigest()[:16]
        return {"torch": torch.__version__, "procworld_weights": f"{self.weights.name} {digest}"}

    def prepare(self, prompts: list[str], negative_prompt: str, guidance_scale: float) -> None:
        """Nothing to encode: prompts are ignored."""

    def encode_frames(self, frames: Any) -> Any:
        raise InputError("procworld cannot continue a clip: it draws its own world, and a "
                         "clip's frames have no camera positions in it",
                         "render a storyboard with `longvid render`, or extend with a "
                         "diffusion preset such as tiny or skyreels-df-1.3b")

    def generate(self, request: SegmentRequest, on_step: StepCallback) -> SegmentOutput:
        import torch

        from longvid.backends.procworld.model import to_model, to_uint8
        from longvid.backends.procworld.world import TEST_SEED_START, crop, make_world

        t0 = time.perf_counter()
        view = request.view
        if view is None:
            raise ValueError("procworld needs the camera path in the request (`view`)")
        world_seed = TEST_SEED_START + view.world_seed
        if world_seed not in self._worlds:
            self._worlds = {world_seed: make_world(world_seed)}
        world = self._worlds[world_seed]
        # the pool: memory frames, then this take's own (context, then generated), each (3, 32, 32)
        held = [x for x in (request.memory, request.context) if x is not None]
        pool = list(torch.cat(held, dim=2)[0].float().unbind(1)) if held else []
        poses = [(CENTRE_PATCHES + y, CENTRE_PATCHES + x) for y, x in view.positions]
        own_start = 0 if request.memory is None else request.memory.shape[2]
        first_new = len(pool)
        generator = torch.Generator().manual_seed(request.seed)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # bit-reproducible, and fastest for this size on a shared CPU
        try:
            for i in range(request.num_latents):
                target = poses[first_new + i]
                noise = torch.randn(1, 3, 32, 32, generator=generator)  # drawn for every frame
                truth = to_model(crop(world, target))  # (3, 32, 32)
                picked = _pick_context(self.options.variant, poses[:len(pool)], own_start,
                                       target)
                if picked:
                    frame = self._sample(noise, [pool[k] for k in picked],
                                         [poses[k] for k in picked], target, request.steps)
                    if self.options.reveal_new:
                        frame = _reveal(frame, truth, view.new_cells[i])
                else:  # nothing in context shows this place: the world's true view
                    frame = truth
                pool.append(to_model(to_uint8(frame)))  # exactly the pixels shown
                on_step(i + 1, request.num_latents)
        finally:
            torch.set_num_threads(threads)
        t1 = time.perf_counter()
        latents = torch.stack(pool[first_new:], dim=1)[None]  # (1, 3, n, 32, 32)
        small = to_uint8(latents[0].movedim(1, 0))  # uint8 (n, 32, 32, 3)
        frames = small.repeat(SCALE, axis=1).repeat(SCALE, axis=2)  # (n, 256, 256, 3)
        return SegmentOutput(latents=latents, frames=frames,
                             seconds={"denoise": t1 - t0, "decode": time.perf_counter() - t1})

    def _sample(self, noise: Any, frames: list[Any], poses: list[tuple[int, int]],
                target: tuple[int, int], steps: int) -> Any:
        """Euler integration of the flow from noise (1, 3, 32, 32) -> frame (3, 32, 32)."""
        import torch

        with torch.no_grad():
            cache = self.model.encode_context(torch.stack(frames)[None],
                                              torch.tensor([poses]))  # (1, 4, 3, 32, 32)
            pose, x = torch.tensor([target]), noise
            for k in range(steps):
                x = x + self.model.velocity(x, torch.full((1,), k / steps), pose, cache) / steps
        return x.clamp(-1.0, 1.0)[0]


def _pick_context(variant: str, poses: list[tuple[int, int]], own_start: int,
                  target: tuple[int, int]) -> list[int]:
    """Indices into `poses` (memory first, the take's own frames from own_start) of the 4
    context frames for the view at `target`, repeated to 4 when fewer exist; [] when
    none of them shows any of the target's view."""
    import numpy as np

    from longvid.backends.procworld.retrieval import (
        CONTEXT_FRAMES,
        RECENT_FRAMES,
        retrieve_by_pose,
    )
    from longvid.backends.procworld.world import overlap_patches

    own = list(range(own_start, len(poses)))
    if variant == "window":
        picked = own[-CONTEXT_FRAMES:]
    else:  # the latest frames, plus the older ones (memory included) that cover the view
        recent = own[-RECENT_FRAMES:]
        bank = list(range(own_start)) + own[:-RECENT_FRAMES]
        chosen = retrieve_by_pose(np.array([poses[k] for k in bank]).reshape(-1, 2),
                                  np.array([poses[k] for k in recent]).reshape(-1, 2),
                                  np.array(target), CONTEXT_FRAMES - len(recent)) if bank else []
        picked = sorted(bank[c] for c in chosen) + recent
    if not any(overlap_patches(np.array(poses[k]), np.array(target)) for k in picked):
        return []
    return [picked[k % len(picked)] for k in range(CONTEXT_FRAMES)]


def _reveal(frame: Any, truth: Any, mask: int) -> Any:
    """frame, truth (3, 32, 32): the cells set in `mask` (bit i * 8 + j) from the truth."""
    out = frame.clone()
    side = 32 // VIEW_PATCHES
    for bit in range(VIEW_PATCHES * VIEW_PATCHES):
        if mask >> bit & 1:
            i, j = divmod(bit, VIEW_PATCHES)
            cell = (slice(None), slice(i * side, (i + 1) * side), slice(j * side, (j + 1) * side))
            out[cell] = truth[cell]
    return out
