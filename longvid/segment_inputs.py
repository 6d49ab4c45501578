"""The storyboard images and LoRA files a segment hands to its backend (effects).

The plan says which segment gets which image and LoRA weights (longvid/shot_inputs.py);
this reads the images (once each), encodes a shot's first frame through the
backend's own VAE, and finds the LoRA files (a Hub LoRA through the Hub cache,
downloaded there unless offline) before the first segment is generated.
"""

from __future__ import annotations

from typing import Any

from longvid.backends.base import Backend, LoraWeight, ShotImages
from longvid.images import fit_frame, read_rgb
from longvid.loras import local_file
from longvid.plan import Plan, Segment


class SegmentInputs:
    def __init__(self, plan: Plan, backend: Backend) -> None:
        self.plan, self.backend = plan, backend
        self._pixels: dict[str, Any] = {}
        self._lora_files = tuple(str(local_file(ref)) for ref in plan.loras)

    def first_frame(self, seg: Segment) -> Any:
        """uint8 (H, W, 3): the shot's image scaled and centre-cropped to the frame."""
        assert seg.image is not None
        return fit_frame(self._read(seg.image.path), self.plan.width, self.plan.height)

    def images(self, seg: Segment) -> ShotImages | None:
        if seg.image is None and not seg.refs:
            return None
        pixels = self.first_frame(seg) if seg.image is not None else None  # (H, W, 3)
        # one frame -> one latent (1, C, 1, h, w)
        first = self.backend.encode_frames(pixels[None]) if pixels is not None else None
        return ShotImages(first_latent=first, first_frame=pixels,
                          refs=tuple(self._read(r.path) for r in seg.refs))

    def loras(self, seg: Segment) -> tuple[LoraWeight, ...] | None:
        if self.backend.caps.lora is None:
            return None
        return tuple(LoraWeight(ref.name, path, ref.key, weight) for ref, path, weight
                     in zip(self.plan.loras, self._lora_files, seg.lora_weights, strict=True))

    def _read(self, path: str) -> Any:
        if path not in self._pixels:
            self._pixels[path] = read_rgb(path)
        return self._pixels[path]
