"""`skyreels-df`: SkyReels-V2 diffusion forcing from the Hub, driven by longvid's loop.

Each segment is one diffusion-forcing window: the context latents (the previous
window's tail) sit clean at its head with timestep 0 (or lightly noised with
timestep `addnoise_condition`), every other latent frame is denoised with its own
scheduler. This is the synchronous schedule of diffusers'
`SkyReelsV2DiffusionForcingPipeline` (ar_step 0, causal block 1), written out here
so that prompts can change per window and every window can be committed and
resumed; tests check it against that pipeline numerically.

A shot that starts from an image (`request.images.first_latent`) enters the same
way as context: the encoded image is the take's first latent, clean at timestep 0,
never stepped, and returned as the first new latent: one window is then that of
diffusers' `SkyReelsV2DiffusionForcingImageToVideoPipeline` (tests check it).

Memory: prompts are encoded once (`prepare`), cached on disk, and the text encoder
is released before the transformer runs; each window is decoded on its own (VAE
tiling on a GPU) and streamed to the encoder, so nothing holds the whole video.
"""

from __future__ import annotations

import copy
import time
from typing import Any, ClassVar

from pydantic import Field

from longvid.backends.base import (
    BackendCaps,
    ImageCaps,
    LoraCaps,
    MemoryCaps,
    OptInMemoryOptions,
    SegmentOutput,
    SegmentRequest,
    StepCallback,
)
from longvid.backends.wan_hub import WanHubBackend, WanHubOptions

NATIVE_FPS = 24


class SkyReelsDFBackend(WanHubBackend):
    name: ClassVar[str] = "skyreels-df"
    text_pipeline_class: ClassVar[str] = "SkyReelsV2DiffusionForcingPipeline"
    caps: ClassVar[BackendCaps] = BackendCaps(
        native_fps=NATIVE_FPS, any_fps=False, latent_stride_t=4, max_latents=25,
        context_latents=5, size_multiple=16, max_side=1280, takes_context=True,
        tokens_per_latent_px=8 * 8 * 2 * 2, memory=MemoryCaps(latents=2, opt_in=True),
        images=ImageCaps(first_frame=True), lora=LoraCaps(family="wan"),
    )  # windows of 97 frames with 17 frames of history: the 540P model's training setup

    class Options(OptInMemoryOptions, WanHubOptions):
        flow_shift: float | None = Field(None, gt=0, description="flow-matching timestep shift; "
                                         "unset: the checkpoint scheduler's")
        addnoise_condition: int = Field(0, ge=0, le=1000, description="timestep of the "
                                          "noise put on the context latents (0: clean)")

    # -- models --------------------------------------------------------------------------

    def load(self, preset: Any, policy: Any = None) -> None:
        from diffusers import SkyReelsV2Transformer3DModel

        from longvid.backends import wan_parts

        self.transformer = self._load_models(preset, policy, SkyReelsV2Transformer3DModel)
        self.scheduler = wan_parts.unipc_scheduler(self.folder, self.options.flow_shift)
        with self.on_gpu("load"):
            wan_parts.place_transformer(self.transformer, self.device, policy)

    # -- generation --------------------------------------------------------------------------

    def generate(self, request: SegmentRequest, on_step: StepCallback) -> SegmentOutput:
        import torch

        t0 = time.perf_counter()
        self.lora_stack.apply(request.loras)
        context = request.context  # (1, 16, c, h, w) or None
        memory = request.memory  # (1, 16, m, h, w) recalled keyframes, or None
        first = request.images.first_latent if request.images is not None else None
        f = 0 if first is None else 1  # the shot's image: the first new latent, kept clean
        c = 0 if context is None else context.shape[2]
        m = 0 if memory is None else memory.shape[2]
        z = self.vae.z_dim
        shape = (1, z, c + request.num_latents, request.height // 8, request.width // 8)
        generator = torch.Generator().manual_seed(request.seed)
        latents = torch.randn(shape, generator=generator, dtype=torch.float32)
        if c:
            latents[:, :, :c] = context
        if f:
            latents[:, :, c:c + 1] = first.float()
        if m:  # window = [memory | context | new]; memory is clean history like the context
            latents = torch.cat([memory.float(), latents], dim=2)
        with self.on_gpu("transformer"):
            latents = self._denoise(latents.to(self.device), m + c + f, request, generator,
                                    on_step)
        t1 = time.perf_counter()
        with self.on_gpu("vae"):  # the memory is not part of this take's picture: not decoded
            frames = self.vae.decode(latents[:, :, m:], drop=4 * c - 3 if c else 0)
        return SegmentOutput(latents=latents[:, :, m + c:].cpu().clone(), frames=frames,
                             seconds={"denoise": t1 - t0, "decode": time.perf_counter() - t1})

    def _denoise(self, latents: Any, c: int, request: SegmentRequest, generator: Any,
                 on_step: StepCallback) -> Any:
        """Synchronous diffusion forcing over one window; the first c latents are clean."""
        import torch

        scheduler = copy.deepcopy(self.scheduler)
        scheduler.set_timesteps(request.steps, device=self.device)
        frames = latents.shape[2]
        per_frame = []  # one multistep scheduler per latent frame, as the pipeline keeps
        for _ in range(frames):
            s = copy.deepcopy(scheduler)
            s.set_timesteps(request.steps, device=self.device)
            per_frame.append(s)
        cond, uncond = self.prompts.conditioning(request)  # mixed during a transition
        cond = cond.to(self.device, self.dtype)
        cfg = uncond is not None
        uncond = uncond.to(self.device, self.dtype) if cfg else None
        fps_flag = [0 if request.fps == 16 else 1]
        noise_level = float(self.options.addnoise_condition)
        with torch.no_grad():
            for i, step_t in enumerate(scheduler.timesteps):
                t = torch.full((frames,), int(step_t), dtype=torch.long, device=self.device)
                t[:c] = 0
                model_in = latents.to(self.dtype).clone()
                timestep = t.expand(1, -1).clone()
                if noise_level > 0 and c:
                    f = 0.001 * noise_level
                    noise = torch.randn(model_in[:, :, :c].shape, generator=generator)
                    model_in[:, :, :c] = model_in[:, :, :c] * (1 - f) + noise.to(model_in) * f
                    timestep[:, :c] = int(noise_level)
                with self.transformer.cache_context("cond"):
                    pred = self.transformer(model_in, timestep=timestep,
                                            encoder_hidden_states=cond,
                                            enable_diffusion_forcing=True, fps=fps_flag,
                                            return_dict=False)[0]
                if cfg:
                    with self.transformer.cache_context("uncond"):
                        base = self.transformer(model_in, timestep=timestep,
                                                encoder_hidden_states=uncond,
                                                enable_diffusion_forcing=True, fps=fps_flag,
                                                return_dict=False)[0]
                    pred = base + request.guidance_scale * (pred - base)
                for k in range(c, frames):
                    latents[:, :, k] = per_frame[k].step(pred[:, :, k], t[k], latents[:, :, k],
                                                         return_dict=False)[0]
                on_step(i + 1, request.steps)
        return latents

    def encode_frames(self, frames: Any) -> Any:
        return self.vae.encode_frames(frames)
