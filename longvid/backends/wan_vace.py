"""`wan-vace`: Wan2.1 VACE from the Hub; continuation through VACE's video + mask inputs.

Each segment is one VACE window of N = 4(c+n)-3 frames. The c context latents (the
previous segment's tail) are decoded, as a continuation, to their last K = 4c-3
frames and given as the kept part of VACE's control video (mask 0); the other 4n
frames are blank and generated (mask 1). This is the continuation recipe of
diffusers' `WanVACEPipeline` (`video` = last K frames + blanks, `mask` = black K +
white), written out here on tensors so the context never round-trips through PIL,
prompts can change per window and a window's new latents feed the next one; tests
check it against the pipeline numerically. The re-synthesized copy of the context
is dropped: the segment returns its n new latents and their 4n frames.

Memory (opt-in, `memory_latents`; off by default): recalled keyframes come as their
full-resolution frames (`request.memory`, caps.memory.frames) and enter exactly as
reference images do (below): each one VAE-encoded as a still, one extra latent frame
in front of the window, in the inactive channels with zero reactive channels and a
zero mask. A still image is the input VACE's reference slot was trained on; a scene
keyframe in it, rather than a subject, is unmeasured. Reference latents are dropped
from the output, as the pipeline drops them.

A shot that starts from an image (`request.images.first_frame`) is VACE's
image-to-video: the image is the control video's first frame, kept (mask 0), the
rest blank and generated; the loop then shows the image itself as the first frame.

Reference images (`refs:` of the storyboard, `request.images.refs`) are VACE's
reference images as trained: each one fitted inside the frame (aspect kept,
bilinear) on a white canvas, VAE-encoded to one latent and placed in front of the
recalled keyframes, exactly as `WanVACEPipeline(reference_images=...)` prepares
them (its `preprocess_conditions` and `prepare_video_latents`).

Text: prompts are encoded once (`prepare`), cached on disk and the text encoder is
released before the transformer runs; `blend_prompt` mixes two cached embeddings.
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

NATIVE_FPS = 16
VAE_STRIDE_T = 4  # pixel frames per latent frame (the first latent of a take holds 1)
VAE_STRIDE_PX = 8  # pixels per latent side


class WanVACEBackend(WanHubBackend):
    name: ClassVar[str] = "wan-vace"
    text_pipeline_class: ClassVar[str] = "WanVACEPipeline"
    caps: ClassVar[BackendCaps] = BackendCaps(
        native_fps=NATIVE_FPS, any_fps=False, latent_stride_t=VAE_STRIDE_T, max_latents=21,
        context_latents=5, size_multiple=16, max_side=1280, takes_context=True,
        tokens_per_latent_px=8 * 8 * 2 * 2,
        memory=MemoryCaps(latents=2, opt_in=True, frames=True),
        images=ImageCaps(first_frame=True, refs=True), lora=LoraCaps(family="wan"),
    )  # windows of 81 frames (the model's training length) keeping 17 frames of context

    class Options(OptInMemoryOptions, WanHubOptions):
        flow_shift: float | None = Field(None, gt=0, description="flow-matching timestep shift; "
                                         "unset: the checkpoint scheduler's")
        conditioning_scale: float = Field(1.0, ge=0, description="weight of the VACE "
                                          "control (context and reference frames)")

    # -- models --------------------------------------------------------------------------

    def load(self, preset: Any, policy: Any = None) -> None:
        from diffusers import WanVACETransformer3DModel

        from longvid.backends import wan_parts

        self.transformer = self._load_models(preset, policy, WanVACETransformer3DModel)
        self.scheduler = wan_parts.unipc_scheduler(self.folder, self.options.flow_shift)
        with self.on_gpu("load"):
            wan_parts.place_transformer(self.transformer, self.device, policy)

    # -- generation --------------------------------------------------------------------------

    def generate(self, request: SegmentRequest, on_step: StepCallback) -> SegmentOutput:
        import torch

        t0 = time.perf_counter()
        self.lora_stack.apply(request.loras)
        context = request.context  # (1, 16, c, h, w) or None
        c = 0 if context is None else context.shape[2]
        # [storyboard refs | recalled keyframes' frames], each a uint8 (h, w, 3) image
        images = (request.images.refs if request.images is not None else ()) + (
            tuple(request.memory) if request.memory is not None else ())
        m = len(images)
        z = self.vae.z_dim
        h, w = request.height // VAE_STRIDE_PX, request.width // VAE_STRIDE_PX
        generator = torch.Generator().manual_seed(request.seed)
        noise = torch.randn((1, z, c + request.num_latents, h, w), generator=generator)
        if m:  # drawn after, so a seed gives the same video noise with or without memory
            refs = torch.randn((1, z, m, h, w), generator=generator)
            noise = torch.cat([refs, noise], dim=2)  # (1, 16, m+c+n, h, w): refs first
        with self.on_gpu("vae"):
            refs = self._references(images, request)  # (1, 16, m, h, w) or None
            first = request.images.first_frame if request.images is not None else None
            control = self._control(context, refs, request, first)  # (1, 96, m+c+n, h, w)
        t1 = time.perf_counter()
        with self.on_gpu("transformer"):
            latents = self._denoise(noise.to(self.device), control, request, on_step)
        new = latents[:, :, m + c:].float().cpu()  # (1, 16, n, h, w)
        t2 = time.perf_counter()
        # decode behind the true context (not VACE's copy of it) so the VAE's causal
        # cache continues from the frames the previous segment showed
        head = new if context is None else torch.cat([context.float().cpu(), new], dim=2)
        with self.on_gpu("vae"):
            frames = self.vae.decode(head, drop=VAE_STRIDE_T * c - 3 if c else 0)
        return SegmentOutput(latents=new.clone(), frames=frames,
                             seconds={"condition": t1 - t0, "denoise": t2 - t1,
                                      "decode": time.perf_counter() - t2})

    def _references(self, images: tuple[Any, ...], request: SegmentRequest) -> Any:
        """Reference images as normalized latents (1, 16, m, h, w), or None. Each image
        (h, w, 3) uint8 is fitted into the frame as the pipeline does."""
        import torch
        from diffusers.video_processor import VideoProcessor
        from PIL import Image

        processor = VideoProcessor(vae_scale_factor=VAE_STRIDE_PX)
        latents = []
        for image in images:
            pixels = processor.preprocess(Image.fromarray(image), None, None)  # (1, 3, H', W')
            ih, iw = pixels.shape[-2:]
            scale = min(request.height / ih, request.width / iw)
            nh, nw = int(ih * scale), int(iw * scale)
            fitted = torch.nn.functional.interpolate(pixels, size=(nh, nw), mode="bilinear",
                                                     align_corners=False)[0]
            canvas = torch.ones(3, request.height, request.width)  # white around the image
            top, left = (request.height - nh) // 2, (request.width - nw) // 2
            canvas[:, top:top + nh, left:left + nw] = fitted
            latents.append(self.vae.encode(canvas[None, :, None]).float().cpu())
        return torch.cat(latents, dim=2) if latents else None

    def _control(self, context: Any, refs: Any, request: SegmentRequest,
                 first: Any = None) -> Any:
        """VACE's control input (1, 96, m+c+n, h, w): [inactive 16 | reactive 16 | mask 64],
        as `WanVACEPipeline.prepare_video_latents` and `prepare_masks` build it. `first`:
        uint8 (H, W, 3), a take's first frame, kept (mask 0) as VACE's image-to-video."""
        import torch

        c = 0 if context is None else context.shape[2]
        kept = VAE_STRIDE_T * c - 3 if c else 0  # K context frames
        num_frames = VAE_STRIDE_T * (c + request.num_latents) - 3  # N = K + 4n (or 4n-3)
        video = torch.zeros(1, 3, num_frames, request.height, request.width)  # [-1, 1]
        mask = torch.ones(1, 1, num_frames, request.height, request.width)  # 1: generate
        if c:
            video[:, :, :kept] = self.context_frames(context)
            mask[:, :, :kept] = 0
        elif first is not None:
            video[0, :, 0] = torch.from_numpy(first).permute(2, 0, 1).float() / 127.5 - 1
            mask[:, :, 0] = 0
        inactive = self.vae.encode(video * (1 - mask))  # (1, 16, c+n, h, w)
        reactive = self.vae.encode(video * mask)
        latents = torch.cat([inactive, reactive], dim=1)  # (1, 32, c+n, h, w)
        p = VAE_STRIDE_PX
        h, w = request.height // p, request.width // p
        mask8 = mask[0, 0].view(num_frames, h, p, w, p).permute(2, 4, 0, 1, 3).flatten(0, 1)
        mask8 = torch.nn.functional.interpolate(  # (64, c+n, h, w), as the pipeline resamples
            mask8.unsqueeze(0), size=(c + request.num_latents, h, w), mode="nearest-exact")
        if refs is not None:  # reference frames: inactive = the still, reactive = 0, mask = 0
            refs = refs.float().cpu()  # (1, 16, m, h, w), in request order
            latents = torch.cat([torch.cat([refs, torch.zeros_like(refs)], dim=1), latents],
                                dim=2)
            mask8 = torch.cat([torch.zeros_like(mask8[:, :, :refs.shape[2]]), mask8], dim=2)
        return torch.cat([latents, mask8], dim=1)

    def context_frames(self, context: Any) -> Any:
        """The last K = 4c-3 frames the c context latents stand for, (1, 3, K, H, W) in
        [-1, 1]. Context latents come from mid-take, 4 frames each; decoded alone, the
        VAE would take the first for a take's 1-frame image latent. A copy of it in front
        warms the VAE's causal cache, so each context latent decodes as a continuation,
        as the previous segment's frames were."""
        import torch

        warm = torch.cat([context[:, :, :1], context], dim=2)  # (1, 16, 1+c, h, w)
        frames = self.vae.decode_float(warm)  # (1, 3, 1+4c, H, W)
        kept = VAE_STRIDE_T * context.shape[2] - 3
        return frames[:, :, -kept:].clamp(-1, 1)

    def _denoise(self, latents: Any, control: Any, request: SegmentRequest,
                 on_step: StepCallback) -> Any:
        import torch

        scheduler = copy.deepcopy(self.scheduler)
        scheduler.set_timesteps(request.steps, device=self.device)
        cond, uncond = self.prompts.conditioning(request)
        cond = cond.to(self.device, self.dtype)
        uncond = uncond.to(self.device, self.dtype) if uncond is not None else None
        control = control.to(self.device, self.dtype)
        layers = len(self.transformer.config.vace_layers)
        scale = torch.tensor([self.options.conditioning_scale] * layers,
                             device=self.device, dtype=self.dtype)

        def velocity(model_in: Any, timestep: Any, embeds: Any, branch: str) -> Any:
            with self.transformer.cache_context(branch):
                return self.transformer(hidden_states=model_in, timestep=timestep,
                                        encoder_hidden_states=embeds,
                                        control_hidden_states=control,
                                        control_hidden_states_scale=scale,
                                        return_dict=False)[0]

        with torch.no_grad():
            for i, t in enumerate(scheduler.timesteps):
                model_in, timestep = latents.to(self.dtype), t.expand(1)
                pred = velocity(model_in, timestep, cond, "cond")
                if uncond is not None:
                    base = velocity(model_in, timestep, uncond, "uncond")
                    pred = base + request.guidance_scale * (pred - base)
                latents = scheduler.step(pred, t, latents, return_dict=False)[0]
                on_step(i + 1, request.steps)
        return latents

    # -- VAE ---------------------------------------------------------------------------------

    def encode_frames(self, frames: Any) -> Any:
        return self.vae.encode_frames(frames)
