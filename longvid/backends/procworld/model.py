"""The tiny ProcMem world model: a pixel-space flow-matching transformer.

32x32x3 frames, patch 4 -> 64 tokens per frame; 4 clean context frames and one
noisy target frame (320 tokens). The camera pose enters only through 2D RoPE on
*world* coordinates (the token's patch position plus the camera offset), so a
token of the target attends most easily to context tokens showing the same place:
that is what lets a model with the right frames in context copy instead of guess.

Only the 64 target tokens run through the transformer blocks. Context tokens
are a patch embedding (a two-layer MLP per patch) that each block projects to
keys and values for the target to attend to: the context does not depend on the
target, so it is encoded once per generated frame, not per Euler step
(`encode_context` then `velocity`), and a training step costs about a third of
full attention over 320 tokens (CPU time is the budget). The target's adaLN
conditioning comes from its noise level. Flow matching: x_t = (1 - t) noise + t x,
the model predicts v = x - noise; sampling integrates t from 0 to 1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from longvid.backends.procworld.world import FRAME_PATCHES, PATCH_PX

CONTEXT_NOISE = 0.02  # std of the noise added to context frames in training ([-1, 1] units)
ROPE_BASE = 100.0  # longest RoPE period ~ 100 patches, a world is 96 patches wide


@dataclass(frozen=True)
class ModelConfig:
    dim: int = 192
    depth: int = 4
    heads: int = 6
    mlp_ratio: int = 4

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _rope_angles(coords: torch.Tensor, head_dim: int) -> torch.Tensor:
    """coords (B, N, 2) world patches -> angles (B, 1, N, head_dim // 2): half y, half x."""
    n_freq = head_dim // 4
    freqs = ROPE_BASE ** (-torch.arange(n_freq, dtype=torch.float32) / n_freq)
    ang = coords.float()[..., None] * freqs  # (B, N, 2, n_freq)
    return ang.flatten(2)[:, None]


def _rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """x (B, H, N, hd), angles (B, 1, N, hd // 2): rotate pairs (x[2i], x[2i+1])."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    cos, sin = angles.cos(), angles.sin()
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


def _time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t (B,) in [0, 1] -> (B, dim) sinusoidal features."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32) / half)
    ang = (t.float() * 1000.0)[:, None] * freqs
    return torch.cat([ang.cos(), ang.sin()], dim=-1)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(cfg.dim, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(cfg.dim, elementwise_affine=False)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.mlp_ratio * cfg.dim), nn.GELU(),
                                 nn.Linear(cfg.mlp_ratio * cfg.dim, cfg.dim))
        self.ada = nn.Linear(cfg.dim, 6 * cfg.dim)
        self.ctx_kv = nn.Linear(cfg.dim, 2 * cfg.dim)  # context tokens -> this block's (k, v)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def context_kv(self, ctx: torch.Tensor, angles: torch.Tensor,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """ctx (B, M, D), angles (B, 1, M, hd // 2) -> (k, v), each (B, H, M, hd)."""
        b, m, d = ctx.shape
        k, v = self.ctx_kv(ctx).view(b, m, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return _rotate(k, angles), v

    def forward(self, x: torch.Tensor, cond: torch.Tensor, angles: torch.Tensor,
                prefix: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x (B, N, D), cond (B, 1, D); prefix = context (k, v), each (B, H, M, hd)."""
        b, n, d = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(F.silu(cond)).chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        q, k, v = self.qkv(h).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = _rotate(q, angles), _rotate(k, angles)
        k, v = torch.cat([prefix[0], k], dim=2), torch.cat([prefix[1], v], dim=2)
        attn = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, hd)
        x = x + gate1 * self.proj(attn.transpose(1, 2).reshape(b, n, d))
        return x + gate2 * self.mlp(self.norm2(x) * (1 + scale2) + shift2)


class WorldModel(nn.Module):
    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ModelConfig()
        d = self.cfg.dim
        self.patch_in = nn.Linear(3 * PATCH_PX ** 2, d)
        self.ctx_in = nn.Sequential(nn.Linear(3 * PATCH_PX ** 2, d), nn.GELU(), nn.Linear(d, d),
                                    nn.LayerNorm(d))
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(Block(self.cfg) for _ in range(self.cfg.depth))
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False)
        self.ada_out = nn.Linear(d, 2 * d)
        self.patch_out = nn.Linear(d, 3 * PATCH_PX ** 2)
        for layer in (self.ada_out, self.patch_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    # -- tokens ------------------------------------------------------------------------
    @staticmethod
    def patchify(frames: torch.Tensor) -> torch.Tensor:
        """(B, F, 3, 32, 32) -> (B, F * 64, 48)."""
        b, f, c, _, _ = frames.shape
        p, n = PATCH_PX, FRAME_PATCHES
        x = frames.reshape(b, f, c, n, p, n, p).permute(0, 1, 3, 5, 2, 4, 6)
        return x.reshape(b, f * n * n, c * p * p)

    @staticmethod
    def unpatchify(tokens: torch.Tensor) -> torch.Tensor:
        """(B, 64, 48) -> (B, 3, 32, 32)."""
        b = tokens.shape[0]
        p, n = PATCH_PX, FRAME_PATCHES
        x = tokens.reshape(b, n, n, 3, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, 3, n * p, n * p)

    @staticmethod
    def world_coords(poses: torch.Tensor) -> torch.Tensor:
        """poses (B, F, 2) in patches -> (B, F * 64, 2) world patch coordinates of tokens."""
        ys, xs = torch.meshgrid(torch.arange(FRAME_PATCHES), torch.arange(FRAME_PATCHES),
                                indexing="ij")
        grid = torch.stack([ys.flatten(), xs.flatten()], dim=-1)  # (64, 2)
        return (poses[:, :, None, :] + grid).flatten(1, 2)

    def _cond(self, t: torch.Tensor) -> torch.Tensor:
        """t (B,) -> (B, 1, D)."""
        return self.time_mlp(_time_embedding(t, self.cfg.dim))[:, None]

    def _angles(self, poses: torch.Tensor) -> torch.Tensor:
        """poses (B, F, 2) -> RoPE angles (B, 1, F * 64, head_dim // 2)."""
        return _rope_angles(self.world_coords(poses), self.cfg.dim // self.cfg.heads)

    # -- the two passes ----------------------------------------------------------------
    def encode_context(self, frames: torch.Tensor, poses: torch.Tensor,
                       ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """frames (B, F, 3, 32, 32) in [-1, 1], poses (B, F, 2) -> per-block (k, v)."""
        ctx = self.ctx_in(self.patchify(frames))  # (B, F * 64, D)
        return self.encode_tokens(ctx, self.world_coords(poses))

    def encode_tokens(self, ctx: torch.Tensor, coords: torch.Tensor,
                      ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """ctx (B, M, D) context tokens, coords (B, M, 2) their RoPE positions -> per-block
        (k, v). The pose-free variants' memory tokens enter here (variants/generator.py)."""
        angles = _rope_angles(coords, self.cfg.dim // self.cfg.heads)
        return [block.context_kv(ctx, angles) for block in self.blocks]

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, pose: torch.Tensor,
                 cache: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """x_t (B, 3, 32, 32), t (B,), pose (B, 2) -> predicted v (B, 3, 32, 32)."""
        x = self.patch_in(self.patchify(x_t[:, None]))  # (B, 64, D)
        cond = self._cond(t)
        angles = self._angles(pose[:, None])
        for block, prefix in zip(self.blocks, cache, strict=True):
            x = block(x, cond, angles, prefix)
        shift, scale = self.ada_out(F.silu(cond)).chunk(2, dim=-1)
        return self.unpatchify(self.patch_out(self.norm_out(x) * (1 + scale) + shift))

    @torch.no_grad()
    def sample(self, ctx_frames: torch.Tensor, ctx_poses: torch.Tensor, pose: torch.Tensor,
               euler_steps: int, generator: torch.Generator) -> torch.Tensor:
        """One new frame per batch item: (B, 3, 32, 32) in [-1, 1] at `pose` (B, 2)."""
        return self.sample_cached(self.encode_context(ctx_frames, ctx_poses), pose,
                                  euler_steps, generator)

    @torch.no_grad()
    def sample_cached(self, cache: list[tuple[torch.Tensor, torch.Tensor]], pose: torch.Tensor,
                      euler_steps: int, generator: torch.Generator) -> torch.Tensor:
        """Euler from noise given an encoded context; -> (B, 3, 32, 32) in [-1, 1]."""
        x = torch.randn(pose.shape[0], 3, FRAME_PATCHES * PATCH_PX, FRAME_PATCHES * PATCH_PX,
                        generator=generator)
        for i in range(euler_steps):
            t = torch.full((x.shape[0],), i / euler_steps)
            x = x + self.velocity(x, t, pose, cache) / euler_steps
        return x.clamp(-1.0, 1.0)


def to_model(frames_u8) -> torch.Tensor:
    """uint8 numpy (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(frames_u8).float().div(127.5).sub(1.0)
    return x.movedim(-1, -3)


def to_uint8(x: torch.Tensor):
    """float (..., 3, H, W) in [-1, 1] -> uint8 numpy (..., H, W, 3)."""
    return x.movedim(-3, -1).add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).numpy()


WEIGHTS_DIR = Path(__file__).with_name("weights")


def save_model(model: WorldModel, path: Path, meta: dict[str, str]) -> None:
    """fp16 safetensors (the model runs in fp32); `meta` goes into the file's metadata."""
    import json

    from safetensors.torch import save_file

    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"config": json.dumps(model.cfg.to_dict()), **meta})


def load_model(path: Path) -> tuple[WorldModel, dict[str, str]]:
    """-> (fp32 model in eval mode, the file's metadata)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    model = WorldModel(ModelConfig(**json.loads(meta["config"])))
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model.eval(), meta
