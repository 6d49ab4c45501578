"""The drift monitor and its two corrections. Pure numpy.

Each segment is measured against its shot's anchor keyframe:
- latent mean/std distance per channel (how far the picture's statistics moved),
- colour: the distance of mean Lab colours (CIE76 delta E; about 2 is just
  noticeable) and the Lab-histogram chi-squared of a thumbnail,
- sharpness (variance of the Laplacian) and flicker (mean absolute frame difference).
When the readings cross a threshold the loop corrects, only then:
- the segment's pixels: Lab mean/std moved part of the way back to the anchor's;
- the carried context latents: their low-frequency part re-normalized (AdaIN) toward
  the anchor's statistics, so the next segment starts closer and nothing flickers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from longvid.memory.bank import Keyframe
from longvid.memory.colour import chi2, lab_histogram, lab_stats, match_lab_stats
from longvid.memory.descriptor import sharpness, thumbnail

COLOUR_LIMIT = 6.0  # delta E of the mean Lab colour
LATENT_LIMIT = 0.5  # mean per-channel shift, in anchor standard deviations
PIXEL_STRENGTH = 0.5
LATENT_STRENGTH = 0.3
_BLUR_RADIUS = 2  # the low-pass box is 2 * 2 + 1 = 5 latent pixels on a side


@dataclass(frozen=True)
class DriftReading:
    latent_mean_dist: float | None  # None: no anchor yet (the shot's first segment)
    latent_std_dist: float | None
    colour_shift_de: float | None
    colour_chi2: float | None
    sharpness: float
    flicker: float

    def drifted(self) -> bool:
        return ((self.colour_shift_de or 0.0) > COLOUR_LIMIT
                or (self.latent_mean_dist or 0.0) > LATENT_LIMIT)

    def to_dict(self) -> dict[str, float | None]:
        return {k: (None if v is None else round(v, 5)) for k, v in asdict(self).items()}


def read_drift(latents: np.ndarray, frames: np.ndarray, anchor: Keyframe | None) -> DriftReading:
    """latents float (C, T, h, w) new latents; frames uint8 (F, H, W, 3)."""
    mid = frames[len(frames) // 2]
    flick = (float(np.abs(np.diff(frames.astype(np.int16), axis=0)).mean()) / 255
             if len(frames) > 1 else 0.0)
    if anchor is None:
        return DriftReading(None, None, None, None, sharpness(mid), flick)
    mu, sd = _channel_stats(latents)
    amu, asd = _channel_stats(anchor.latent[:, None])
    thumb = thumbnail(mid)
    return DriftReading(
        latent_mean_dist=float(np.mean(np.abs(mu - amu) / (asd + 1e-6))),
        latent_std_dist=float(np.mean(np.abs(np.log((sd + 1e-6) / (asd + 1e-6))))),
        colour_shift_de=float(np.linalg.norm(lab_stats(thumb)[0] - lab_stats(anchor.thumb)[0])),
        colour_chi2=chi2(lab_histogram(thumb), lab_histogram(anchor.thumb)),
        sharpness=sharpness(mid), flicker=flick)


def correct_frames(frames: np.ndarray, anchor: Keyframe,
                   strength: float = PIXEL_STRENGTH) -> np.ndarray:
    mean, std = lab_stats(anchor.thumb)
    return match_lab_stats(frames, mean, std, strength)


def correct_latents(latents: np.ndarray, anchor: Keyframe,
                    strength: float = LATENT_STRENGTH) -> np.ndarray:
    """float (1, C, T, h, w) -> same; only the low frequencies move toward the anchor."""
    z = latents.astype(np.float64)
    low = _blur(z)
    mu, sd = _channel_stats(low[0])
    amu, asd = _channel_stats(_blur(anchor.latent[None, :, None].astype(np.float64))[0])
    shape = (1, -1, 1, 1, 1)
    target = (low - mu.reshape(shape)) / (sd.reshape(shape) + 1e-6) * asd.reshape(shape) \
        + amu.reshape(shape)
    corrected: np.ndarray = (z + strength * (target - low)).astype(np.float32)
    return corrected


def _channel_stats(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, T, h, w) -> per-channel mean (C,), std (C,)."""
    flat = z.reshape(z.shape[0], -1)
    return flat.mean(axis=1), flat.std(axis=1)


def _blur(z: np.ndarray) -> np.ndarray:
    """Separable moving average over 2 * _BLUR_RADIUS + 1 latent pixels, edges repeated:
    (..., h, w)."""
    r = _BLUR_RADIUS
    for axis in (-2, -1):
        pad = [(0, 0)] * z.ndim
        pad[axis] = (r + 1, r)
        c = np.cumsum(np.pad(z, pad, mode="edge"), axis=axis)
        n = z.shape[axis]
        hi = np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis=axis)
        lo = np.take(c, np.arange(0, n), axis=axis)
        z = (hi - lo) / (2 * r + 1)
    return z
