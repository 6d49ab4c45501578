"""`mag`: per block of BLOCK_FRAMES frames, keep one frame's tokens, plus a sink.

MAG's rule (docs/causal-wan.md §2.3) at this model's size: a memory model runs once
over each completed block (full attention over the block's frames) and writes only
the tokens of the block's *last* frame into a slot; it is trained to reconstruct
every frame of the block from that slot alone (FrameDecoder, index = frame in
block). At the 256-token budget the generator sees the sink (frame 0, 64 tokens),
the newest slot (64 tokens) and the 2 recent frames (128 tokens): one slot, where
MAG-1.3B keeps 21.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from longvid.backends.procworld.variants.common import (
    TOKENS_PER_FRAME,
    WIDTH,
    FrameDecoder,
    FrameEmbed,
)

BLOCK_FRAMES = 8


def newest_block(t: int) -> int | None:
    """Index of the newest block fully before frame t (frames [b * 8, b * 8 + 8)), or None."""
    return t // BLOCK_FRAMES - 1 if t >= BLOCK_FRAMES else None


class MemoryModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = FrameEmbed()
        self.index = nn.Embedding(BLOCK_FRAMES, WIDTH)
        layer = nn.TransformerEncoderLayer(WIDTH, 4, 4 * WIDTH, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.empty = nn.Parameter(torch.randn(TOKENS_PER_FRAME, WIDTH) * 0.02)
        self.sink = FrameEmbed()
        self.decoder = FrameDecoder(BLOCK_FRAMES)

    def slot(self, patches: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        """One block: patches (B, 8, 64, 48), motion (B, 8, 2) -> slot (B, 64, WIDTH),
        the encoded tokens of the block's last frame."""
        b, f = patches.shape[:2]
        x = self.embed(patches, motion) + self.index.weight[:f, None]
        x = self.encoder(x.reshape(b, f * TOKENS_PER_FRAME, WIDTH))
        return x[:, -TOKENS_PER_FRAME:]

    def forward(self, sink_patches: torch.Tensor, slot: torch.Tensor | None,
                batch: int) -> torch.Tensor:
        """-> memory (B, 128, WIDTH): [sink ‖ slot]; an empty slot is a learned filler."""
        sink = self.sink(sink_patches[:, None], sink_patches.new_zeros(batch, 1, 2))[:, 0]
        if slot is None:
            slot = self.empty.expand(batch, -1, -1)
        return torch.cat([sink, slot], dim=1)

    def recon_loss(self, slot: torch.Tensor, patches: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
        """MSE of a random frame of the block (B, 8, 64, 48) rebuilt from its slot."""
        b = slot.shape[0]
        idx = torch.randint(0, BLOCK_FRAMES, (b,), generator=generator)
        return F.mse_loss(self.decoder(slot, idx), patches[torch.arange(b), idx])
