"""`tiny`: the real diffusers Wan classes at a tiny size, weights from a fixed seed.

WanTransformer3DModel + AutoencoderKLWan + a T5 encoder with a byte-level tokenizer
built in memory: no download, CPU, about a second per segment. Its pictures are
coloured texture, not imagery; it exists so the whole path runs anywhere and so
tests exercise real diffusers code.

Continuation inside a take is diffusion-forcing style: the context latents (the
tail of the previous segment) sit at the head of the window and are re-imposed at
every step at the current noise level, then restored exactly, so context never
leaves latent space. Recalled keyframes from the memory bank go in front of the
context the same way: window = [memory | context | new]. Each segment is decoded
with the context as warm-up for the VAE's causal cache, and the warm-up frames are
dropped; the memory is not decoded.

A shot that starts from an image (`request.images.first_latent`) is clean history
in the same way: the encoded image is the take's first latent, re-imposed at every
step like context and returned exactly; the loop then shows the image itself as
the first frame. LoRAs go through longvid/backends/lora.py, as on the Hub models.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from pydantic import Field

from longvid.backends.base import (
    BackendCaps,
    BackendOptions,
    ImageCaps,
    LoraCaps,
    MemoryCaps,
    SegmentOutput,
    SegmentRequest,
    StepCallback,
)

_TEXT_TOKENS = 128  # byte-level tokens per prompt
_SPECIALS = ("<pad>", "</s>", "<unk>")


class TinyWanBackend:
    name: ClassVar[str] = "tiny"
    caps: ClassVar[BackendCaps] = BackendCaps(
        native_fps=16, any_fps=True, latent_stride_t=4, max_latents=9, context_latents=2,
        size_multiple=16, max_side=512, takes_context=True, tokens_per_latent_px=8 * 8 * 2 * 2,
        memory=MemoryCaps(latents=2), images=ImageCaps(first_frame=True),
        lora=LoraCaps(family="wan"),
    )

    class Options(BackendOptions):
        weights_seed: int = Field(0, description="seed of the random weights (another seed, "
                                                 "another tiny model)")
        flow_shift: float = Field(3.0, gt=0, description="flow-matching timestep shift of the "
                                                         "scheduler")

    def __init__(self) -> None:
        self._embeddings: dict[str, Any] = {}
        self.options = self.Options()

    # -- models --------------------------------------------------------------------------

    def load(self, preset: Any, policy: Any = None) -> None:
        import torch
        from diffusers import (
            AutoencoderKLWan,
            FlowMatchEulerDiscreteScheduler,
            WanTransformer3DModel,
        )
        from transformers import T5Config, T5EncoderModel

        from longvid.backends.lora import LoraStack

        self.options = preset.options
        seed = self.options.weights_seed
        self.tokenizer = _byte_tokenizer()
        torch.manual_seed(seed)
        self.text_encoder = T5EncoderModel(T5Config(
            vocab_size=len(self.tokenizer), d_model=32, d_ff=64, d_kv=8, num_heads=4,
            num_layers=2, relative_attention_num_buckets=8, feed_forward_proj="relu",
            pad_token_id=0, eos_token_id=1)).eval()
        torch.manual_seed(seed + 1)
        self.transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16,
            out_channels=16, text_dim=32, freq_dim=64, ffn_dim=64, num_layers=2,
            cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=64).eval()
        self.loras = LoraStack(self.transformer)
        torch.manual_seed(seed + 2)
        self.vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1],
                                    num_res_blocks=1, temperal_downsample=[False, True, True]
                                    ).eval()
        self.scheduler_config = FlowMatchEulerDiscreteScheduler(
            shift=self.options.flow_shift).config
        mean = torch.tensor(self.vae.config.latents_mean).view(1, 16, 1, 1, 1)
        std = torch.tensor(self.vae.config.latents_std).view(1, 16, 1, 1, 1)
        self._mean, self._std = mean, std

    def versions(self) -> dict[str, str]:
        import diffusers
        import torch
        import transformers

        return {"diffusers": diffusers.__version__, "torch": torch.__version__,
                "transformers": transformers.__version__,
                "tiny_weights_seed": str(self.options.weights_seed)}

    # -- text ------------------------------------------------------------------------------

    def prepare(self, prompts: list[str], negative_prompt: str, guidance_scale: float) -> None:
        for text in prompts + ([negative_prompt] if guidance_scale > 1 else []):
            self._embed(text)

    def _embed(self, text: str) -> Any:
        import torch

        if text not in self._embeddings:
            ids = self.tokenizer(text, padding="max_length", max_length=_TEXT_TOKENS,
                                 truncation=True, return_tensors="pt")
            with torch.no_grad():
                out = self.text_encoder(ids.input_ids, attention_mask=ids.attention_mask)
            mask = ids.attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
            self._embeddings[text] = out.last_hidden_state * mask  # (1, L, 32), zero past EOS
        return self._embeddings[text]

    # -- generation --------------------------------------------------------------------------

    def generate(self, request: SegmentRequest, on_step: StepCallback) -> SegmentOutput:
        import torch
        from diffusers import FlowMatchEulerDiscreteScheduler

        t0 = time.perf_counter()
        self.loras.apply(request.loras)
        cond = request.conditioning(self._embed)
        uncond = self._embed(request.negative_prompt) if request.guidance_scale > 1 else None
        first = request.images.first_latent if request.images is not None else None
        # clean latents at the head of the window: [memory | context | first], re-imposed
        parts = [x for x in (request.memory, request.context, first) if x is not None]
        clean = torch.cat(parts, dim=2).float() if parts else None  # (1, 16, k, h, w)
        m = 0 if request.memory is None else request.memory.shape[2]
        c = 0 if request.context is None else request.context.shape[2]
        k = 0 if clean is None else clean.shape[2]
        h, w = request.height // 8, request.width // 8
        generator = torch.Generator().manual_seed(request.seed)
        noise = torch.randn((1, 16, c + request.num_latents, h, w), generator=generator)
        if m:  # drawn after, so the same seed gives the same noise with or without memory
            noise = torch.cat([torch.randn((1, 16, m, h, w), generator=generator), noise], dim=2)
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(request.steps)
        latents = noise.clone()  # (1, 16, m + c + n, h, w)
        with torch.no_grad():
            for i, t in enumerate(scheduler.timesteps):
                if k:  # re-impose the clean latents at this step's noise level
                    sigma = scheduler.sigmas[i]
                    latents[:, :, :k] = (1 - sigma) * clean + sigma * noise[:, :, :k]
                step_t = t.expand(1)
                velocity = self.transformer(latents, timestep=step_t,
                                            encoder_hidden_states=cond, return_dict=False)[0]
                if uncond is not None:
                    base = self.transformer(latents, timestep=step_t,
                                            encoder_hidden_states=uncond, return_dict=False)[0]
                    velocity = base + request.guidance_scale * (velocity - base)
                latents = scheduler.step(velocity, t, latents, return_dict=False)[0]
                on_step(i + 1, request.steps)
            if k:
                latents[:, :, :k] = clean
            t1 = time.perf_counter()
            # the memory is not part of this take's picture: not decoded
            frames = self._decode(latents[:, :, m:], drop=4 * c - 3 if c else 0)
        t2 = time.perf_counter()
        return SegmentOutput(latents=latents[:, :, m + c:].clone(), frames=frames,
                             seconds={"denoise": t1 - t0, "decode": t2 - t1})

    def _decode(self, latents: Any, drop: int) -> Any:
        """Normalized latents (1, 16, T, h, w) -> uint8 frames (4T-3-drop, H, W, 3)."""
        video = self.vae.decode(latents * self._std + self._mean, return_dict=False)[0]
        video = video[0, :, drop:]  # (3, F, H, W) in [-1, 1]
        pixels = ((video.clamp(-1, 1) + 1) * 127.5).round().byte()
        return pixels.permute(1, 2, 3, 0).contiguous().numpy()

    def encode_frames(self, frames: Any) -> Any:
        import torch

        video = torch.from_numpy(frames.copy()).float().permute(3, 0, 1, 2).unsqueeze(0) / 127.5 - 1
        with torch.no_grad():
            z = self.vae.encode(video).latent_dist.mode()  # (1, 16, k+1, h, w)
        return (z - self._mean) / self._std


def _byte_tokenizer() -> Any:
    """A byte-level BPE tokenizer with no merges: every string encodes, offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(_SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                       special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>")
