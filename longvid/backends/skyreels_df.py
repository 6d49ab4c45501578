"""`skyreels-df`: SkyReels-V2 diffusion forcing from the Hub, driven by longvid's loop.

Each segment is one diffusion-forcing window: the context latents (the previous
window's tail) sit clean at its head with timestep 0 (or lightly noised with
timestep `addnoise_condition`), every other latent frame is denoised with its own
scheduler. This is the synchronous schedule of diffusers'
`SkyReelsV2DiffusionForcingPipeline` (ar_step 0, causal block 1), written out here
so that prompts can change per window and every window can be committed and
resumed; tests check it against that pipeline numerically.

Memory: prompts are encoded once (`prepare`), cached on disk, and the text encoder
is released before the transformer runs; each window is decoded on its own (VAE
tiling on a GPU) and streamed to the encoder, so nothing holds the whole video.
"""

from __future__ import annotations

import copy
import time
from typing import Any, ClassVar

from longvid.backends.base import BackendCaps, SegmentOutput, SegmentRequest, StepCallback
from longvid.backends.prompt_cache import PromptCache
from longvid.errors import ResourceError

NATIVE_FPS = 24


class SkyReelsDFBackend:
    name: ClassVar[str] = "skyreels-df"
    caps: ClassVar[BackendCaps] = BackendCaps(
        native_fps=NATIVE_FPS, any_fps=False, frame_multiple=4, frame_offset=1,
        latent_stride_t=4, max_latents=25, context_latents=5, size_multiple=16,
        max_side=1280, takes_context=True, tokens_per_latent_px=8 * 8 * 2 * 2,
        memory_latents=2,
    )  # windows of 97 frames with 17 frames of history: the 540P model's training setup

    # -- models --------------------------------------------------------------------------

    def load(self, preset: Any, policy: Any = None) -> None:
        import torch
        from diffusers import (
            SkyReelsV2Transformer3DModel,
            UniPCMultistepScheduler,
        )

        from longvid.backends import wan_parts

        self.preset, self.policy = preset, policy
        self.options = {"flow_shift": None, "addnoise_condition": 0,
                        "max_sequence_length": 512} | dict(preset.options)
        cuda = torch.cuda.is_available()
        if preset.min_vram_gib > 0 and not cuda:  # before any download
            raise ResourceError(
                f"preset {preset.name!r} runs on a CUDA GPU (at least {preset.min_vram_gib:g} "
                "GiB) and this machine has none", "try the tool on the CPU with --preset tiny")
        wan_parts.check_installed(preset.quantization, SkyReelsV2Transformer3DModel)
        self.weights = wan_parts.Weights.resolve(preset)
        self.folder = self.weights.folder
        self.device = torch.device("cuda" if cuda else "cpu")
        self.dtype = torch.bfloat16 if cuda else torch.float32
        self.transformer = wan_parts.load_transformer(
            SkyReelsV2Transformer3DModel, self.weights, preset.quantization, self.dtype).eval()
        self.vae = wan_parts.WanVAE(self.folder, self.device)
        scheduler = UniPCMultistepScheduler.from_pretrained(self.folder, subfolder="scheduler")
        if self.options["flow_shift"] is not None:
            scheduler = UniPCMultistepScheduler.from_config(
                scheduler.config, flow_shift=float(self.options["flow_shift"]))
        self.scheduler = scheduler
        wan_parts.place_transformer(self.transformer, self.device, policy)

    def versions(self) -> dict[str, str]:
        import diffusers
        import torch
        import transformers

        return {"diffusers": diffusers.__version__, "torch": torch.__version__,
                "transformers": transformers.__version__} | self.weights.versions(self.preset)

    # -- text: encode once, cache on disk, free the encoder ---------------------------------

    def prepare(self, prompts: list[str], negative_prompt: str, guidance_scale: float) -> None:
        texts = prompts + ([negative_prompt] if guidance_scale > 1 else [])
        self.prompts = PromptCache(self.weights.prompt_cache_key(
            self.preset, int(self.options["max_sequence_length"])))
        self.prompts.prepare(texts, int(self.options["max_sequence_length"]), self._text_pipeline)

    def _text_pipeline(self) -> Any:
        import torch
        from diffusers import SkyReelsV2DiffusionForcingPipeline

        from longvid.backends import wan_parts

        on_gpu = self.policy is None or self.policy.text_encoder == "gpu"
        # else it encodes on the CPU, once per prompt
        return wan_parts.text_pipeline(SkyReelsV2DiffusionForcingPipeline, self.folder,
                                       self.preset.quantization, self.dtype,
                                       self.device if on_gpu else torch.device("cpu"))

    # -- generation --------------------------------------------------------------------------

    def generate(self, request: SegmentRequest, on_step: StepCallback) -> SegmentOutput:
        import torch

        t0 = time.perf_counter()
        context = request.context  # (1, 16, c, h, w) or None
        memory = request.memory  # (1, 16, m, h, w) recalled keyframes, or None
        c = 0 if context is None else context.shape[2]
        m = 0 if memory is None else memory.shape[2]
        z = self.vae.z_dim
        shape = (1, z, c + request.num_latents, request.height // 8, request.width // 8)
        generator = torch.Generator().manual_seed(request.seed)
        latents = torch.randn(shape, generator=generator, dtype=torch.float32)
        if c:
            latents[:, :, :c] = context
        if m:  # window = [memory | context | new]; memory is clean history like the context
            latents = torch.cat([memory.float(), latents], dim=2)
        try:
            latents = self._denoise(latents.to(self.device), m + c, request, generator, on_step)
        except torch.cuda.OutOfMemoryError:
            raise self._out_of_memory("transformer") from None
        t1 = time.perf_counter()
        try:  # the memory is not part of this take's picture: not decoded
            frames = self.vae.decode(latents[:, :, m:], drop=4 * c - 3 if c else 0)
        except torch.cuda.OutOfMemoryError:
            raise self._out_of_memory("vae") from None
        return SegmentOutput(latents=latents[:, :, m + c:].cpu().clone(), frames=frames,
                             seconds={"denoise": t1 - t0, "decode": time.perf_counter() - t1})

    def _out_of_memory(self, stage: str) -> ResourceError:
        vram = self.policy.vram_gib if self.policy is not None else None
        budget = f" under the policy for {vram:.1f} GiB" if vram is not None else ""
        lower = f"--vram {max(vram - 2, 1):.0f}" if vram is not None else "a lower --vram"
        return ResourceError(
            f"the GPU ran out of memory in the {stage} stage{budget}",
            f"rerun the same command with {lower} (a leaner placement) or a lower resolution; "
            "committed segments are kept and the render resumes")

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
        noise_level = float(self.options["addnoise_condition"])
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
