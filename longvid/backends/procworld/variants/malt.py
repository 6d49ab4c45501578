"""`malt`: a fixed set of MEMORY_TOKENS memory tokens, updated after every frame.

The update is the only way the memory changes: the memory tokens attend over
[memory ‖ the new frame's tokens] (one cross-attention + MLP block) and the result
replaces them. Training runs the update through the whole history with truncated
backpropagation (gradients stop every TBPTT_FRAMES updates) and Gaussian noise
on the memory (MEMORY_NOISE), as MALT trains its recurrent memory latents.
"""

from __future__ import annotations

import torch
from torch import nn

from longvid.backends.procworld.variants.common import (
    MEMORY_TOKENS,
    WIDTH,
    CrossBlock,
    FrameEmbed,
)

TBPTT_FRAMES = 8
MEMORY_NOISE = 0.05


class RecurrentMemory(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = FrameEmbed()
        self.init = nn.Parameter(torch.randn(MEMORY_TOKENS, WIDTH) * 0.02)
        self.update_block = CrossBlock()

    def initial(self, batch: int) -> torch.Tensor:
        return self.init.expand(batch, -1, -1)

    def update(self, memory: torch.Tensor, patches: torch.Tensor,
               motion: torch.Tensor) -> torch.Tensor:
        """memory (B, M, W), one frame's patches (B, 64, 48), its motion (B, 2) -> memory."""
        frame = self.embed(patches[:, None], motion[:, None])[:, 0]
        return self.update_block(memory, torch.cat([memory, frame], dim=1))

    def forward(self, patches: torch.Tensor, motion: torch.Tensor, valid: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Run the update over a history (B, T, 64, 48), left-padded (valid (B, T)).

        generator given = training: noise on the memory, gradients cut every TBPTT_FRAMES.
        """
        memory = self.initial(patches.shape[0])
        for i in range(patches.shape[1]):
            if generator is not None:
                if i % TBPTT_FRAMES == 0 and i:
                    memory = memory.detach()
                memory = memory + MEMORY_NOISE * torch.randn(memory.shape, generator=generator)
            new = self.update(memory, patches[:, i], motion[:, i])
            memory = torch.where(valid[:, i, None, None], new, memory)
        if generator is not None:  # the generator, too, is trained on a noisy memory
            memory = memory + MEMORY_NOISE * torch.randn(memory.shape, generator=generator)
        return memory
