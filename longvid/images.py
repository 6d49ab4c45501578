"""Storyboard images (`image:`, `refs:`): checked when the storyboard loads, read when a
segment needs them.

Pillow and numpy are imported inside the functions, so `longvid plan` stays light
(it checks the files but never imports torch). A shot's first frame is its image
scaled (Lanczos) until it covers the frame, then centre-cropped to the frame: the
aspect ratio is kept and the overhanging sides are cut off equally.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longvid.yamlsrc import YamlDoc

MIN_SIDE_PX = 16  # smaller images carry too little to condition a shot on
MAX_PIXELS = 64 * 2**20  # Pillow's decompression-bomb guard sits near here too
_ORIENTATION = 0x0112  # the EXIF tag a camera sets instead of turning the pixels
_QUARTER_TURNS = frozenset({5, 6, 7, 8})  # orientations that swap the sides


@dataclass(frozen=True)
class ImageFile:
    path: str  # absolute
    sha256: str  # of the file's bytes: a changed image is a different render
    width: int
    height: int


class ImageProblem(ValueError):
    """Why a file cannot be used as a storyboard image: (message, hint)."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


def inspect_image(path: Path) -> ImageFile:
    """Check that `path` exists, decodes as an image and has a usable size."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        what = "path is a folder" if path.is_dir() else "file not found"
        raise ImageProblem(f"image {what}: {path}",
                           "image paths are relative to the storyboard file")
    data = path.read_bytes()
    too_big = (f"more than {MAX_PIXELS // 2**20} megapixels",
               "scale it down; a frame is at most a few hundred pixels a side")
    try:
        with warnings.catch_warnings():  # Pillow's bomb warning: the limit below says more
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if img.getexif().get(_ORIENTATION, 1) in _QUARTER_TURNS:
                    width, height = height, width  # shown upright, as read_rgb reads it
                if width * height > MAX_PIXELS:
                    raise ImageProblem(f"image {path.name} is {width}x{height} px, {too_big[0]}",
                                       too_big[1])
                img.load()  # decodes the pixels: a truncated file fails here
    except ImageProblem:
        raise
    except Image.DecompressionBombError:  # too large for Pillow even to open
        raise ImageProblem(f"image {path.name} has {too_big[0]}", too_big[1]) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageProblem(f"cannot decode {path.name} as an image ({exc})",
                           "use a PNG, JPEG or WebP file") from None
    if min(width, height) < MIN_SIDE_PX:
        raise ImageProblem(f"image {path.name} is {width}x{height} px; at least {MIN_SIDE_PX} "
                           "px a side are needed", "use a larger image")
    return ImageFile(str(path.resolve()), hashlib.sha256(data).hexdigest(), width, height)


def checked_image(doc: YamlDoc, loc: tuple[str | int, ...], path: Path) -> ImageFile:
    """`inspect_image`, its problem as an error at the storyboard key `loc` (exit 3)."""
    try:
        return inspect_image(path)
    except ImageProblem as exc:
        raise doc.error(loc, exc.message, exc.hint) from None


def read_rgb(path: str | Path) -> Any:
    """The image as shown, uint8 (H, W, 3): turned upright by its EXIF orientation (a
    phone photo), an alpha channel dropped, greyscale expanded, 16-bit greys scaled to
    8 bits (Pillow would clip them to white)."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        upright = ImageOps.exif_transpose(img)
        if upright.mode in ("I;16", "I;16B", "I;16L", "I"):
            grey = np.asarray(upright, dtype=np.float64)  # (H, W), 0..65535
            eight = np.clip(np.rint(grey * 255 / 65535), 0, 255).astype(np.uint8)
            return np.repeat(eight[..., None], 3, axis=2)
        return np.asarray(upright.convert("RGB")).copy()


def fit_frame(image: Any, width: int, height: int) -> Any:
    """uint8 (h, w, 3) -> uint8 (height, width, 3): scaled to cover, centre-cropped."""
    import numpy as np
    from PIL import Image

    h, w = image.shape[:2]
    scale = max(width / w, height / h)
    sw, sh = max(width, round(w * scale)), max(height, round(h * scale))
    scaled = Image.fromarray(image).resize((sw, sh), Image.Resampling.LANCZOS)
    left, top = (sw - width) // 2, (sh - height) // 2
    return np.asarray(scaled.crop((left, top, left + width, top + height))).copy()
