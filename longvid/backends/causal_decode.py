"""Streaming decode: a take's latents decoded block by block as one causal stream.

The Wan VAE's decoder is causal in time: each of its causal convolutions keeps the
last two input frames of the latent frames before (its feature cache), and decodes
one latent frame at a time. diffusers' `AutoencoderKLWan.decode()` clears that cache on
every call, so decoding a video in pieces would restart the stream at every piece.
`StreamDecoder` drives the same public modules (`post_quant_conv`, then `decoder` once
per latent frame with `feat_cache`, `feat_idx` and `first_chunk`, exactly as `_decode`
does) with a cache of its own that lives from block to block and segment to segment,
so a take's frames equal one `decode()` of all its latents.

Resume: the cache is a pure function of the take's last `history_latents` latent
frames (the decoder's temporal receptive field: after that many frames nothing of
earlier ones is left in it, bit for bit). The loop carries those latents in the run
directory (`caps.decode`). That count is measured, not derived: replaying k latent frames
before a point of a long random stream gives the whole stream's output bit for bit from
k = 38 on for Wan2.1's VAE (2 residual blocks per level) and k = 26 for tiny-causal's
(1 per level); tests/test_causal_decode.py checks both. A decoder that did not just
decode them (a resumed render, another take) replays them and drops their frames. That
costs `history_latents` latent decodes once per resume, instead of writing the cache to
disk at every commit: 3.8 GB in fp32 at 480x832 for the Wan2.1 VAE, against 15 MB for
the 38 latents.

Imports torch at module level: import it only where torch is already needed.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d


class StreamDecoder:
    """Normalized latents in, pixels out, one causal stream per take."""

    def __init__(self, vae: Any, mean: torch.Tensor, std: torch.Tensor,
                 history_latents: int) -> None:
        assert vae.config.patch_size is None, "a Wan2.1-style VAE (no patchified latents)"
        self.vae = vae
        self.mean, self.std = mean, std  # (1, z, 1, 1, 1): raw = latents * std + mean
        self.history_latents = history_latents
        self.convs = sum(isinstance(m, WanCausalConv3d) for m in vae.decoder.modules())
        self.seconds = 0.0  # spent decoding since the caller last zeroed it
        self.reset()

    def reset(self) -> None:
        """A new take: the next latent frame is its first."""
        self.feat_cache: list[Any] = [None] * self.convs
        self.tail: torch.Tensor | None = None  # the last decoded latents (1, z, <=k, h, w)

    def follow(self, history: torch.Tensor | None) -> None:
        """Bring the cache to where it is after decoding `history`, the take's latents
        before this segment (1, z, k, h, w), k <= history_latents (None: a take's start).
        Nothing to do when those are exactly the latents just decoded."""
        if history is None:
            self.reset()
            return
        history = history[:, :, -self.history_latents:].float().cpu()
        if self.tail is not None and self.tail.shape == history.shape \
                and torch.equal(self.tail, history):
            return
        self.reset()
        self.decode(history)  # frames dropped: only the cache is wanted

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalized latents (1, z, n, h, w) -> pixels (1, 3, F, H, W) in [-1, 1] on the
        CPU; F = 4n-3 for a take's first latents, 4n after."""
        t0 = time.perf_counter()
        vae = self.vae
        param = next(vae.parameters())
        raw = latents.float() * self.std + self.mean
        outs = []
        with torch.no_grad():
            x = vae.post_quant_conv(raw.to(param.device, param.dtype))  # kernel 1: no cache
            for i in range(x.shape[2]):
                first = self.tail is None and i == 0
                outs.append(vae.decoder(x[:, :, i:i + 1], feat_cache=self.feat_cache,
                                        feat_idx=[0], first_chunk=first).float().cpu())
        new = latents.float().cpu()
        self.tail = (new if self.tail is None else torch.cat([self.tail, new], dim=2)
                     )[:, :, -self.history_latents:]
        self.seconds += time.perf_counter() - t0
        return torch.cat(outs, dim=2).clamp(-1, 1)


def to_uint8(video: torch.Tensor) -> Any:
    """Pixels (1, 3, F, H, W) in [-1, 1] -> uint8 numpy (F, H, W, 3)."""
    pixels = ((video[0].clamp(-1, 1) + 1) * 127.5).round().byte()
    return pixels.permute(1, 2, 3, 0).contiguous().numpy()
