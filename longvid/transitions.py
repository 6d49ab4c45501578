"""Pixel-space transitions between takes. Pure array functions."""

from __future__ import annotations

from typing import Any


def crossfade(outgoing: Any, incoming: Any) -> Any:
    """Dissolve two uint8 clips of equal shape (x, H, W, 3): the incoming weight rises
    linearly from 1/(x+1) to x/(x+1), so neither end frame is a copy of the other clip."""
    import numpy as np

    if outgoing.shape != incoming.shape:
        raise ValueError(f"crossfade needs equal shapes, got {outgoing.shape} and {incoming.shape}")
    x = outgoing.shape[0]
    weight = (np.arange(1, x + 1, dtype=np.float32) / (x + 1)).reshape(x, 1, 1, 1)
    mixed = outgoing.astype(np.float32) * (1 - weight) + incoming.astype(np.float32) * weight
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
