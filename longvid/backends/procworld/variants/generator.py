"""The generator of the learned-memory variants: today's WorldModel plus a memory.

Context per generated frame (256 tokens, as today): the 2 recent frames (2 x 64
tokens, RoPE at their offsets relative to the target from the last 2 camera
motions) and MEMORY_TOKENS memory tokens from pfp / mag / malt, projected to the
generator's width. Memory tokens carry no pose: their RoPE position is the patch
grid of a frame at offset (0, 0) (tokens 0-63 and 64-127 each on the 8 x 8 grid),
plus a learned "memory" embedding. The target sits at (0, 0). Nothing here reads an
absolute camera position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from longvid.backends.procworld.model import ModelConfig, WorldModel
from longvid.backends.procworld.variants import mag, malt, pfp
from longvid.backends.procworld.variants.common import MEMORY_TOKENS, TOKENS_PER_FRAME, WIDTH

LEARNED = ("pfp", "mag", "malt")


class History:
    """The past of each batch item, left-padded to a common length T.

    patches float (B, T, 64, 48) in [-1, 1], motion float (B, T, 2) (pose[i] - pose[i-1],
    0 for a trajectory's first frame), valid bool (B, T)."""

    def __init__(self, patches: torch.Tensor, motion: torch.Tensor, valid: torch.Tensor) -> None:
        self.patches, self.motion, self.valid = patches, motion, valid

    @classmethod
    def from_frames(cls, frames: list[torch.Tensor], motions: list[torch.Tensor]) -> History:
        """frames[i] (T_i, 3, 32, 32), motions[i] (T_i, 2) -> padded History."""
        length = max(len(f) for f in frames)
        b = len(frames)
        patches = torch.zeros(b, length, TOKENS_PER_FRAME, 48)
        motion = torch.zeros(b, length, 2)
        valid = torch.zeros(b, length, dtype=torch.bool)
        for i, (f, m) in enumerate(zip(frames, motions, strict=True)):
            n = len(f)
            patches[i, length - n:] = WorldModel.patchify(f[None])[0].view(n, TOKENS_PER_FRAME, 48)
            motion[i, length - n:] = m.float()
            valid[i, length - n:] = True
        return cls(patches, motion, valid)


class MemoryWorldModel(nn.Module):
    def __init__(self, kind: str, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        if kind not in LEARNED:
            raise ValueError(f"unknown memory kind {kind!r}; choose one of {', '.join(LEARNED)}")
        self.kind = kind
        self.gen = WorldModel(cfg)
        d = self.gen.cfg.dim
        self.memory: nn.Module = {"pfp": pfp.Compressor, "mag": mag.MemoryModel,
                                  "malt": malt.RecurrentMemory}[kind]()
        self.proj = nn.Sequential(nn.Linear(WIDTH, d), nn.LayerNorm(d))
        self.mem_type = nn.Parameter(torch.zeros(d))

    # -- memory ------------------------------------------------------------------------
    def build_memory(self, hist: History, generator: torch.Generator | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (memory (B, 128, WIDTH), auxiliary loss (0-d; 0 at inference)).

        generator given = training (malt's noise, pfp's / mag's reconstruction target)."""
        zero = hist.patches.new_zeros(())
        if self.kind == "pfp":
            mem = self.memory(hist.patches, hist.motion, hist.valid)
            aux = (self.memory.recon_loss(mem, hist.patches, hist.valid, generator)
                   if generator is not None else zero)
            return mem, aux
        if self.kind == "malt":
            return self.memory(hist.patches, hist.motion, hist.valid, generator), zero
        return self._mag_memory(hist, generator)

    def _mag_memory(self, hist: History, generator: torch.Generator | None,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, length = hist.valid.shape
        n = hist.valid.sum(dim=1).tolist()  # each item's own history length
        first = [length - k for k in n]
        sink = hist.patches[torch.arange(b), torch.tensor(first)]  # (B, 64, 48)
        blocks = [mag.newest_block(k) for k in n]
        with_block = [i for i, blk in enumerate(blocks) if blk is not None]
        aux = hist.patches.new_zeros(())
        slot = None
        if with_block:
            idx = torch.tensor([[first[i] + blocks[i] * mag.BLOCK_FRAMES + j  # type: ignore[operator]
                                 for j in range(mag.BLOCK_FRAMES)] for i in with_block])
            rows = torch.tensor(with_block)[:, None]
            block_patches = hist.patches[rows, idx]  # (B', 8, 64, 48)
            written = self.memory.slot(block_patches, hist.motion[rows, idx])
            if generator is not None:
                aux = self.memory.recon_loss(written, block_patches, generator)
            slot = self.memory.empty.expand(b, -1, -1).clone()
            slot[torch.tensor(with_block)] = written
        return self.memory(sink, slot, b), aux

    # -- generator ---------------------------------------------------------------------
    def encode(self, recent: torch.Tensor, recent_offsets: torch.Tensor, memory: torch.Tensor,
               ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """recent (B, 2, 3, 32, 32), recent_offsets (B, 2, 2) relative to the target,
        memory (B, 128, WIDTH) -> the generator's per-block (k, v) over 256 tokens."""
        g = self.gen
        rec = g.ctx_in(g.patchify(recent))  # (B, 128, D)
        mem = self.proj(memory) + self.mem_type  # (B, 128, D)
        b = recent.shape[0]
        mem_coords = g.world_coords(recent_offsets.new_zeros(b, MEMORY_TOKENS // TOKENS_PER_FRAME,
                                                             2))
        coords = torch.cat([mem_coords, g.world_coords(recent_offsets)], dim=1)
        return g.encode_tokens(torch.cat([mem, rec], dim=1), coords)

    def loss(self, x1: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
             cache: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Flow-matching MSE of the target x1 (B, 3, 32, 32) at the origin pose."""
        x_t = (1 - t)[:, None, None, None] * noise + t[:, None, None, None] * x1
        v = self.gen.velocity(x_t, t, x1.new_zeros(x1.shape[0], 2), cache)
        return F.mse_loss(v, x1 - noise)

    @torch.no_grad()
    def sample(self, hist: History, recent: torch.Tensor, recent_offsets: torch.Tensor,
               euler_steps: int, generator: torch.Generator) -> torch.Tensor:
        """One new frame per batch item, (B, 3, 32, 32) in [-1, 1]."""
        memory, _ = self.build_memory(hist)
        cache = self.encode(recent, recent_offsets, memory)
        pose = recent.new_zeros(recent.shape[0], 2)
        return self.gen.sample_cached(cache, pose, euler_steps, generator)
