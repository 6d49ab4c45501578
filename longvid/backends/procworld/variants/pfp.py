"""`pfp`: a history compressor (3D convolutions + attention pooling) as the memory.

The history (every frame before the target, newest last; at most HISTORY_FRAMES)
is patch-embedded into (WIDTH, T, 8, 8), run through two 3D convolutions (the
second halves time), then MEMORY_TOKENS learned queries attend over all conv
features: the output has MEMORY_TOKENS tokens whatever the history length.
Pretraining (PFP): reconstruct a frame drawn at random from the last
RECON_FRAMES frames from those tokens alone (FrameDecoder, index = frames back).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from longvid.backends.procworld.variants.common import (
    MEMORY_TOKENS,
    WIDTH,
    CrossBlock,
    FrameDecoder,
    FrameEmbed,
)
from longvid.backends.procworld.world import FRAME_PATCHES

HISTORY_FRAMES = 96  # the compressor reads at most this many past frames
RECON_FRAMES = 32  # pretraining reconstructs a frame drawn from the last 32 (or fewer)


class Compressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = FrameEmbed()
        self.conv1 = nn.Conv3d(WIDTH, WIDTH, 3, padding=1)
        self.conv2 = nn.Conv3d(WIDTH, WIDTH, 3, stride=(2, 1, 1), padding=1)
        self.queries = nn.Parameter(torch.randn(MEMORY_TOKENS, WIDTH) * 0.02)
        self.pool = nn.ModuleList(CrossBlock() for _ in range(2))
        self.decoder = FrameDecoder(HISTORY_FRAMES)

    def forward(self, patches: torch.Tensor, motion: torch.Tensor, valid: torch.Tensor,
                ) -> torch.Tensor:
        """patches (B, T, 64, 48), motion (B, T, 2), valid bool (B, T) (left padding)
        -> memory (B, MEMORY_TOKENS, WIDTH)."""
        patches, motion, valid = (x[:, -HISTORY_FRAMES:] for x in (patches, motion, valid))
        b, t = valid.shape
        # newest frame first, so the strided conv's phase and the padding (now at the end)
        # do not depend on how much padding an item has
        patches, motion, valid = (x.flip(1) for x in (patches, motion, valid))
        mask = valid[:, None, :, None, None]  # (B, 1, T, 1, 1)
        x = self.embed(patches, motion)  # (B, T, 64, W)
        x = x.view(b, t, FRAME_PATCHES, FRAME_PATCHES, WIDTH).permute(0, 4, 1, 2, 3) * mask
        x = F.gelu(self.conv1(x)) * mask
        x = self.conv2(x)  # (B, W, ceil(T/2), 8, 8)
        t2 = x.shape[2]
        feats = x.permute(0, 2, 3, 4, 1).reshape(b, t2 * FRAME_PATCHES ** 2, WIDTH)
        keep = F.pad(valid, (0, 2 * t2 - t)).view(b, t2, 2).any(dim=-1)  # (B, T2)
        pad = ~keep.repeat_interleave(FRAME_PATCHES ** 2, dim=1)
        q = self.queries.expand(b, -1, -1)
        for block in self.pool:
            q = block(q, feats, pad)
        return q

    def recon_loss(self, memory: torch.Tensor, patches: torch.Tensor, valid: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
        """MSE of a frame drawn per item from its last min(RECON_FRAMES, history) frames."""
        b, t = valid.shape
        n_valid = valid.sum(dim=1)  # (B,)
        span = torch.clamp(n_valid, max=RECON_FRAMES)
        back = (torch.rand(b, generator=generator) * span).long()  # 0 = newest
        target = patches[torch.arange(b), t - 1 - back]  # (B, 64, 48)
        return F.mse_loss(self.decoder(memory, back), target)
