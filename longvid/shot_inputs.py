"""Which storyboard images and LoRA weights each segment of a plan gets. Pure.

A shot's `image:` goes to the first segment of its take (the shot starts the take:
the storyboard checks that), its `refs:` (the storyboard's first) to every segment
of the shot, and every LoRA of the preset and the storyboard to every segment, at
the shot's `lora_weights:` or the LoRA's own weight. A backend gets only what its
caps say it takes; the rest is named in a plan warning.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from longvid.backends.base import BackendCaps, ImageCaps
from longvid.errors import StoryboardError
from longvid.loras import LoraRef
from longvid.presets import Preset
from longvid.storyboard import Storyboard


def attach_inputs(sb: Storyboard, preset: Preset, caps: BackendCaps, takes: list[Any],
                  segments: list[Any], frame: tuple[int, int], *, continues: bool
                  ) -> tuple[list[Any], tuple[LoraRef, ...], list[str]]:
    """(segments with their images and LoRA weights, the plan's LoRAs, warnings).
    `takes` and `segments` are plan.Take and plan.Segment (typed loosely: plan imports
    this module); `frame` is (width, height)."""
    loras = _loras(sb, preset)
    images = caps.images or ImageCaps()
    if continues and sb.shots[0].image is not None:
        shot = sb.shots[0]
        raise StoryboardError(f"shot {shot.id!r} starts from an image, but `extend` continues "
                              "the clip into it", "remove its `image:` (or render the "
                              "storyboard on its own)", path=sb.path,
                              line=shot.line_of("image"), key="shots.0.image")
    warnings = []
    unused = [("a shot's first frame from an image (`image`)", not images.first_frame,
               [s.id for s in sb.shots if s.image]),
              ("reference images (`refs`)", not images.refs, [s.id for s in sb.shots if s.refs]),
              ("LoRAs (`loras`)", caps.lora is None, [lora.name for lora in loras])]
    for what, missing, users in unused:
        if missing and users:
            warnings.append(f"backend {preset.backend!r} takes no {what}: ignored for "
                            + ", ".join(users))
    shots = {s.id: s for s in sb.shots}
    out = []
    for seg in segments:
        shot = shots[seg.shot_id]
        first_shot = shots[takes[seg.take].shot_ids[0]]
        own = dict(shot.lora_weights)
        out.append(replace(
            seg,
            image=first_shot.image if images.first_frame and seg.first_latent == 0 else None,
            refs=shot.refs if images.refs else (),
            lora_weights=tuple(own.get(lo.name, lo.weight) for lo in loras)
            if caps.lora else ()))
    width, height = frame
    for shot in sb.shots:
        image = shot.image
        if image is not None and images.first_frame and (image.width < width
                                                         or image.height < height):
            warnings.append(f"the image of shot {shot.id!r} is {image.width}x{image.height} px, "
                            f"smaller than the {width}x{height} frame: it is upscaled")
    return out, loras if caps.lora else (), warnings


def _loras(sb: Storyboard, preset: Preset) -> tuple[LoraRef, ...]:
    """The preset's LoRAs, then the storyboard's; a shot's `lora_weights` names them."""
    loras = preset.loras + sb.loras
    names = {lora.name for lora in loras}
    for lora in sb.loras:
        if any(p.name == lora.name for p in preset.loras):
            raise StoryboardError(f"the storyboard's LoRA {lora.name!r} has the name of one of "
                                  f"preset {preset.name!r}'s", "give it another `name:`",
                                  path=sb.path, line=sb.line_of("loras"), key="loras")
    for i, shot in enumerate(sb.shots):
        for name, _ in shot.lora_weights:
            if name not in names:
                raise StoryboardError(
                    f"shot {shot.id!r} sets the weight of LoRA {name!r}, which neither the "
                    f"storyboard nor preset {preset.name!r} names",
                    "LoRAs: " + (", ".join(sorted(names)) or "(none)") + "; name one in "
                    "`loras:` first", path=sb.path, line=shot.line_of("lora_weights"),
                    key=f"shots.{i}.lora_weights")
    return loras
