"""Shared pieces of the learned memories (pfp, mag, malt): width, token budget, embeddings.

Every learned memory hands the generator MEMORY_TOKENS tokens of the generator's
width; with the 2 recent frames (2 x 64 tokens) that is 256 context tokens per
generated frame, the same as the 4 frames of `window` and `memory`.
"""

from __future__ import annotations

import torch
from torch import nn

from longvid.backends.procworld.world import FRAME_PATCHES, PATCH_PX

MEMORY_TOKENS = 2 * FRAME_PATCHES ** 2  # 128
TOKENS_PER_FRAME = FRAME_PATCHES ** 2  # 64
WIDTH = 64  # the memory modules' inner width (the generator's is 192)
PATCH_DIM = 3 * PATCH_PX ** 2  # 48


class FrameEmbed(nn.Module):
    """frames (B, T, 64, 48) patches, motion (B, T, 2) -> (B, T, 64, WIDTH).

    A per-patch linear map plus a learned patch-grid embedding plus the frame's camera
    motion (the step from the previous frame; never an absolute position)."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Linear(PATCH_DIM, WIDTH)
        self.grid = nn.Parameter(torch.randn(TOKENS_PER_FRAME, WIDTH) * 0.02)
        self.motion = nn.Linear(2, WIDTH)

    def forward(self, patches: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        return self.patch(patches) + self.grid + self.motion(motion.float())[:, :, None]


class CrossBlock(nn.Module):
    """Pre-norm cross-attention + MLP at WIDTH: queries (B, Q, W) attend to keys (B, K, W)."""

    def __init__(self, heads: int = 4) -> None:
        super().__init__()
        self.norm_q, self.norm_k, self.norm_m = (nn.LayerNorm(WIDTH) for _ in range(3))
        self.attn = nn.MultiheadAttention(WIDTH, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(),
                                 nn.Linear(4 * WIDTH, WIDTH))

    def forward(self, q: torch.Tensor, kv: torch.Tensor,
                pad: torch.Tensor | None = None) -> torch.Tensor:
        """pad bool (B, K): True where a key is padding."""
        k = self.norm_k(kv)
        q = q + self.attn(self.norm_q(q), k, k, key_padding_mask=pad, need_weights=False)[0]
        return q + self.mlp(self.norm_m(q))


class FrameDecoder(nn.Module):
    """Training-only head: memory (B, M, W) + which frame (B,) index -> patches (B, 64, 48).

    Pretraining target of pfp and mag (reconstruct a frame from the memory alone);
    not shipped in the weights file."""

    def __init__(self, n_index: int) -> None:
        super().__init__()
        self.grid = nn.Parameter(torch.randn(TOKENS_PER_FRAME, WIDTH) * 0.02)
        self.index = nn.Embedding(n_index, WIDTH)
        self.blocks = nn.ModuleList(CrossBlock() for _ in range(2))
        self.out = nn.Linear(WIDTH, PATCH_DIM)

    def forward(self, memory: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        q = (self.grid + self.index(index)[:, None]).expand(len(index), -1, -1)
        for block in self.blocks:
            q = block(q, memory)
        return self.out(q)
