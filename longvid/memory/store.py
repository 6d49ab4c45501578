"""Keyframes on disk: one safetensors file per segment in the run directory.

    <run>/segments/seg_0007.memory.safetensors   latents, thumbs, descriptors + JSON metadata
    <run>/segments/init.memory.safetensors       the clip's keyframes, for `extend`

Written atomically before the segment's record, so a committed segment always has
its keyframes and a resumed render rebuilds the bank exactly. numpy only: `report`
reads these without torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from longvid.memory.bank import KEYFRAMES_PER_SEGMENT, Keyframe, MemoryBank
from longvid.memory.descriptor import describe, sharpness, thumbnail
from longvid.rundir import segment_file


def memory_path(segments_dir: Path, index: int) -> Path:
    return segment_file(segments_dir, index, "memory.safetensors")


def pick_keyframes(*, segment: int, take: int, shot_id: str, prompt: str, start_frame: int,
                   latents: np.ndarray, frames: np.ndarray, continuing: bool, stride: int,
                   count: int = KEYFRAMES_PER_SEGMENT, keep_images: bool = False
                   ) -> list[Keyframe]:
    """Keyframes of one segment: the middle and the last of its new latents. `keep_images`:
    each keeps its full-resolution frame (for a backend with caps.memory.frames).

    latents float (C, n, h, w) new latents; frames uint8 (F, H, W, 3) new frames. Latent j
    ends at frame stride*j + stride - 1 when continuing, at stride*j at a take start.
    """
    n = latents.shape[1]
    chosen = sorted({n - 1 - round(k * (n - 1) / count) for k in range(count)} if n > 1
                    else {0})[-count:]
    out = []
    for j in chosen:
        f = min(len(frames) - 1, stride * j + (stride - 1 if continuing else 0))
        thumb = thumbnail(frames[f])
        out.append(Keyframe(segment=segment, take=take, shot_id=shot_id,
                            frame=start_frame + f, prompt=prompt,
                            latent=np.ascontiguousarray(latents[:, j], dtype=np.float32),
                            thumb=thumb, descriptor=describe(latents[:, j], thumb),
                            sharpness=sharpness(frames[f]),
                            image=np.ascontiguousarray(frames[f]) if keep_images else None))
    return out


def save_keyframes(path: Path, keyframes: list[Keyframe]) -> None:
    from safetensors.numpy import save_file

    meta = [{"segment": k.segment, "take": k.take, "shot_id": k.shot_id, "frame": k.frame,
             "prompt": k.prompt, "sharpness": k.sharpness} for k in keyframes]
    tensors = {"latents": np.stack([k.latent for k in keyframes]),  # (k, C, h, w)
               "thumbs": np.stack([k.thumb for k in keyframes]),  # (k, 64, 64, 3)
               "descriptors": np.stack([k.descriptor for k in keyframes])}  # (k, D)
    images = [k.image for k in keyframes if k.image is not None]
    if len(images) == len(keyframes):
        tensors["images"] = np.stack(images)  # (k, H, W, 3) uint8
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}  # raw buffers are written
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.safetensors")
    save_file(tensors, str(tmp), metadata={"keyframes": json.dumps(meta)})
    os.replace(tmp, path)


def load_keyframes(path: Path) -> list[Keyframe]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        meta = json.loads(f.metadata()["keyframes"])
        latents, thumbs, descs = (f.get_tensor(k) for k in ("latents", "thumbs", "descriptors"))
        images = f.get_tensor("images") if "images" in f.keys() else None  # noqa: SIM118
    return [Keyframe(segment=m["segment"], take=m["take"], shot_id=m["shot_id"],
                     frame=m["frame"], prompt=m["prompt"], latent=latents[i], thumb=thumbs[i],
                     descriptor=descs[i], sharpness=m["sharpness"],
                     image=None if images is None else images[i])
            for i, m in enumerate(meta)]


def replay_bank(segments_dir: Path, before: int, capacity: int) -> MemoryBank:
    """The bank as it stood when segment `before` started: every committed segment's
    keyframes (and the clip's), added in order, with the same evictions."""
    bank = MemoryBank(capacity)
    for index in range(-1, before):
        path = memory_path(segments_dir, index)
        if path.exists():
            bank.add(load_keyframes(path))
    return bank
