"""`anyflow-far`: NVIDIA AnyFlow-FAR (causal Wan2.1 1.3B, few steps) from the Hub.

AnyFlow-FAR generates a window chunk by chunk (3 latents a chunk, the first latent
of a take alone), each chunk attending to the KV cache of the chunks before it:
the 3 newest at full resolution, older ones through a 4x4-compressed patch
embedding (its "far" history). Each segment is one call of diffusers'
`AnyFlowFARPipeline` with `output_type="latent"`, driven with cached prompt
embeddings and longvid's own noise, chunk partition and per-segment decode.

Context and memory are prefix chunks in `video_latents`: [memory | context | new].
Recalled keyframe latents come first, one chunk each, so they soon sit in the
compressed far history; the context latents (the previous segment's tail) follow
as chunks of 1 + 3 like the start of a take. Prefix chunks are never denoised: the
pipeline KV-encodes them under the *current* prompt before generating the first
new chunk. So a prompt switch re-encodes the carried context under the new prompt
(LongLive's "KV re-cache"), and a prompt blend (`blend_prompt`, `blend_weight`:
mixed cached embeddings) applies to the carried context too.

Text: prompts are encoded once (`prepare`), cached on disk and the text encoder is
released before the transformer runs. The checkpoint is distilled with guidance
fused in: the preset keeps guidance at 1 (one forward per step).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from pydantic import Field

from longvid.backends.base import (
    BackendCaps,
    MemoryCaps,
    OptInMemoryOptions,
    SegmentOutput,
    SegmentRequest,
    StepCallback,
)
from longvid.backends.wan_hub import WanHubBackend, WanHubOptions
from longvid.errors import ResourceError

NATIVE_FPS = 16
VAE_STRIDE_T = 4  # pixel frames per latent frame (the first latent of a take holds 1)
VAE_STRIDE_PX = 8  # pixels per latent side


def chunk_partition(memory: int, context: int, new: int, chunk: int) -> list[int]:
    """Latents per causal chunk for [memory | context | new]: one chunk per recalled
    keyframe, then the context and the new latents each as a take starts (1, then
    `chunk` at a time, the remainder last), except that new latents continuing a
    context go straight to full chunks."""

    def split(count: int, lone_first: bool) -> list[int]:
        head = [1] if lone_first and count else []
        rest = count - len(head)
        return head + [chunk] * (rest // chunk) + ([rest % chunk] if rest % chunk else [])

    return [1] * memory + split(context, True) + split(new, context == 0)


FUSED_PROBE_TOKENS = 256  # above the kernel's block sizes, so its real tiling compiles
# Graphs one compiled block may need: cache prefill and denoising, chunks of 1, 2 and 3
# latents against a cache that grows chunk by chunk, with and without memory and context.
# Dynamo's default of 8 ran out in the second window on an H100 (2026-11-28); past its
# limit dynamo quietly runs the block eagerly, where flex attention materializes its
# score matrices (3 GiB more at 480p, out of memory at 11.4 GiB). docs/performance.md.
COMPILED_VARIANTS = 64


def check_fused_attention(device: Any, dtype: Any, head_dim: int) -> None:
    """Compile flex attention once, at the model's head size and dtype, on `device`: a
    GPU whose shared memory is too small for the kernel's tiling (consumer cards before
    Hopper, with torch's default configs), a missing Triton or a compiler failure is
    exit 4 now, not an out-of-memory error when a window runs it uncompiled."""
    import torch
    from torch.nn.attention.flex_attention import flex_attention

    q = torch.zeros(1, 1, FUSED_PROBE_TOKENS, head_dim, device=device, dtype=dtype)
    try:
        torch.compile(flex_attention)(q, q, q)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as exc:  # noqa: BLE001 - whatever stops the compiler stops the preset
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ResourceError(
            "anyflow-far needs torch.compile's fused flex attention, and it cannot run here "
            f"({type(exc).__name__}: {first_line})",
            "use skyreels-df-1.3b or wan-vace-1.3b on this GPU (uncompiled, anyflow-far "
            "holds ~10 GiB attention score matrices: set the option `compile_blocks: false` "
            "only on a card with 24 GiB or more)") from None


def compile_blocks(transformer: Any, **compile_kwargs: Any) -> None:
    """torch.compile each repeated block, allowing COMPILED_VARIANTS graphs and never a
    quiet eager fallback: a block that needs more is a `recompile_limit` error, which
    `generate` turns into exit 4. `compile_kwargs` go to torch.compile (tests: a cheap
    dynamo backend)."""
    import torch._dynamo

    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, COMPILED_VARIANTS)
    if hasattr(config, "fail_on_recompile_limit_hit"):  # torch >= 2.6
        config.fail_on_recompile_limit_hit = True
    transformer.compile_repeated_blocks(fullgraph=False, **compile_kwargs)


def compiler_gave_up(exc: BaseException) -> ResourceError:
    return ResourceError(
        f"anyflow-far's compiled blocks needed more than {COMPILED_VARIANTS} graphs, and "
        f"uncompiled flex attention would not fit ({type(exc).__name__})",
        "use skyreels-df-1.3b or wan-vace-1.3b on this GPU, and report this with "
        "`longvid doctor --json` so the limit can be raised")


class AnyFlowFARBackend(WanHubBackend):
    name: ClassVar[str] = "anyflow-far"
    text_pipeline_class: ClassVar[str] = "AnyFlowFARPipeline"
    caps: ClassVar[BackendCaps] = BackendCaps(
        native_fps=NATIVE_FPS, any_fps=False, latent_stride_t=VAE_STRIDE_T, max_latents=21,
        context_latents=4, size_multiple=16, max_side=1280, takes_context=True,
        tokens_per_latent_px=8 * 8 * 2 * 2, memory=MemoryCaps(latents=2, opt_in=True),
    )  # 81-frame windows (chunks 1+3+...+3+2, as trained); 13 frames of context as 1+3

    class Options(OptInMemoryOptions, WanHubOptions):
        compile_blocks: bool = Field(False, description="torch.compile each transformer block "
                                                        "on a GPU (fused flex attention)")

    # -- models --------------------------------------------------------------------------

    def load(self, preset: Any, policy: Any = None) -> None:
        from diffusers import (
            AnyFlowFARPipeline,
            AnyFlowFARTransformer3DModel,
            FlowMapEulerDiscreteScheduler,
        )

        from longvid.backends import wan_parts

        transformer = self._load_models(preset, policy, AnyFlowFARTransformer3DModel)
        wan_parts.check_scheduler(self.folder, "FlowMapEulerDiscreteScheduler", {})
        scheduler = FlowMapEulerDiscreteScheduler.from_pretrained(self.folder,
                                                                  subfolder="scheduler")
        with self.on_gpu("load"):
            wan_parts.place_transformer(transformer, self.device, policy)
        if self.device.type == "cuda" and self.options.compile_blocks:
            # FAR attention runs through flex_attention, which uncompiled materializes fp32
            # score matrices (~5 GiB each for a 480p chunk against its cache); compiled
            # blocks use the fused kernel. Not on the CPU: compiling takes minutes there.
            check_fused_attention(self.device, self.dtype,
                                  transformer.config.attention_head_dim)
            compile_blocks(transformer)
        # the pipeline without its text encoder: it runs on cached embeddings
        self.pipe = AnyFlowFARPipeline(tokenizer=None, text_encoder=None,
                                       transformer=transformer, vae=self.vae.model,
                                       scheduler=scheduler)
        self.pipe.set_progress_bar_config(disable=True)
        self.chunk_latents = max(transformer.config.chunk_partition)  # 3

    @property
    def transformer(self) -> Any:
        return self.pipe.transformer

    # -- generation --------------------------------------------------------------------------

    def generate(self, request: SegmentRequest, on_step: StepCallback) -> SegmentOutput:
        import torch

        t0 = time.perf_counter()
        context = request.context  # (1, 16, c, h, w) or None
        memory = request.memory  # (1, 16, m, h, w) or None
        c = 0 if context is None else context.shape[2]
        m = 0 if memory is None else memory.shape[2]
        n = request.num_latents
        # a lone one-latent take: the pipeline cannot size its KV cache for one chunk, so
        # one more latent is generated and dropped; causal chunks never see later ones
        spare = int(m + c == 0 and n == 1)
        partition = chunk_partition(m, c, n + spare, self.chunk_latents)
        z = self.vae.z_dim
        h, w = request.height // VAE_STRIDE_PX, request.width // VAE_STRIDE_PX
        generator = torch.Generator().manual_seed(request.seed)
        noise = torch.randn((1, z, c + n + spare, h, w), generator=generator)
        if m:  # drawn after, so a seed gives the same noise with or without memory
            noise = torch.cat([torch.randn((1, z, m, h, w), generator=generator), noise], dim=2)
        parts = [x.float().cpu() for x in (memory, context) if x is not None]
        # the pipeline's layout for prefix latents: (1, m+c, 16, h, w)
        prefix = torch.cat(parts, dim=2).permute(0, 2, 1, 3, 4) if parts else None
        cond, uncond = self.prompts.conditioning(request)
        total = (len(partition) - len(chunk_partition(m, c, 0, self.chunk_latents))) \
            * request.steps
        done = [0]

        def progress(pipe: Any, i: int, t: Any, kwargs: dict) -> dict:
            done[0] += 1
            on_step(done[0], total)
            return {}

        import torch._dynamo.exc

        gave_up = getattr(torch._dynamo.exc, "FailOnRecompileLimitHit", ())  # torch >= 2.6
        with self.on_gpu("transformer"):
            try:
                latents = self._denoise(prefix, noise, cond, uncond, partition, request,
                                        progress)
            except gave_up as exc:
                raise compiler_gave_up(exc) from None
        new = latents[:, :, m + c:m + c + n].float().cpu()  # (1, 16, n, h, w)
        t1 = time.perf_counter()
        head = new if context is None else torch.cat([context.float().cpu(), new], dim=2)
        with self.on_gpu("vae"):
            frames = self.vae.decode(head, drop=VAE_STRIDE_T * c - 3 if c else 0)
        return SegmentOutput(latents=new.clone(), frames=frames,
                             seconds={"denoise": t1 - t0, "decode": time.perf_counter() - t1})

    def _denoise(self, prefix: Any, noise: Any, cond: Any, uncond: Any, partition: list[int],
                 request: SegmentRequest, progress: Any) -> Any:
        """One pipeline call over the chunks: latents (1, 16, m+c+n, h, w) on the GPU."""
        return self.pipe(
            prompt_embeds=cond.to(self.device),
            negative_prompt_embeds=None if uncond is None else uncond.to(self.device),
            video_latents=None if prefix is None else prefix.to(self.device),
            height=request.height, width=request.width,
            num_frames=VAE_STRIDE_T * sum(partition) - 3,
            num_inference_steps=request.steps, guidance_scale=request.guidance_scale,
            latents=noise.to(self.device), output_type="latent",
            chunk_partition=partition, callback_on_step_end=progress).frames

    def encode_frames(self, frames: Any) -> Any:
        return self.vae.encode_frames(frames)
