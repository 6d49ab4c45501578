"""The retention curve as a PNG, drawn with Pillow (no plotting library).

x: frames since the entering region was last seen (out-and-back: 2 per returned
frame); y: PSNR against ground truth. Solid: each variant on the long out-and-back
(gaps up to 64; the 16-step revisit set when a result has no long set); dashed:
the window's novel control at the same generated-frame index, for reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

WIDTH_PX, HEIGHT_PX = 720, 420
MARGIN_PX = {"left": 60, "right": 190, "top": 40, "bottom": 50}
Y_MIN_DB, Y_MAX_DB = 5.0, 40.0
COLOURS = {"window": (214, 96, 40), "retrieval-oracle": (40, 110, 200),
           "retrieval-descriptor": (60, 160, 60), "pfp": (150, 70, 180), "mag": (200, 40, 120),
           "malt": (120, 120, 120)}
GRID = (225, 225, 225)


def _dashed(draw: Any, points: list[tuple[float, float]], fill: tuple[int, ...],
            dash_px: float = 6.0) -> None:
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        length = max(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5, 1e-9)
        n = max(int(length // dash_px), 1)
        for i in range(0, n, 2):
            a, b = i / n, min((i + 1) / n, 1.0)
            draw.line([(x0 + (x1 - x0) * a, y0 + (y1 - y0) * a),
                       (x0 + (x1 - x0) * b, y0 + (y1 - y0) * b)], fill=fill, width=2)


def draw_retention(result: dict[str, Any], path: Path) -> Path:
    """Write the retention curve of a `procmem.run` result to `path` (PNG)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (WIDTH_PX, HEIGHT_PX), "white")
    draw = ImageDraw.Draw(img)
    left, top = MARGIN_PX["left"], MARGIN_PX["top"]
    right, bottom = WIDTH_PX - MARGIN_PX["right"], HEIGHT_PX - MARGIN_PX["bottom"]
    variants = result.get("variants") or {"window": result["window"],
                                          "retrieval-oracle": result["memory"]}
    region = "long" if "long" in result["window"] else "revisit"
    n_frames = len(result["window"][region]["psnr_per_frame"])
    max_gap = 2 * n_frames

    def xy(gap: float, db: float) -> tuple[float, float]:
        db = min(max(db, Y_MIN_DB), Y_MAX_DB)
        return (left + (right - left) * gap / max_gap,
                bottom - (bottom - top) * (db - Y_MIN_DB) / (Y_MAX_DB - Y_MIN_DB))

    for db in range(int(Y_MIN_DB), int(Y_MAX_DB) + 1, 5):
        draw.line([xy(0, db), xy(max_gap, db)], fill=GRID)
        draw.text((left - 28, xy(0, db)[1] - 6), f"{db}", fill="black")
    for gap in range(0, max_gap + 1, 4 if max_gap <= 32 else 8):
        draw.line([xy(gap, Y_MIN_DB), xy(gap, Y_MAX_DB)], fill=GRID)
        draw.text((xy(gap, Y_MIN_DB)[0] - 5, bottom + 6), f"{gap}", fill="black")
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((left, bottom + 26), "frames since the entering region was last seen "
              "(novel: 2 x generated-frame index)", fill="black")
    draw.text((6, top - 28), "PSNR (dB) vs exact ground truth, held-out ProcMem worlds",
              fill="black")

    legend_y = top + 4
    lines = [(name, region, False) for name in variants] + [("window", "novel", True)]
    for name, reg, dashed in lines:
        colour = COLOURS.get(name, (0, 0, 0))
        series = variants[name][reg]["psnr_per_frame"]
        points = [xy(2 * (f + 1), db) for f, db in enumerate(series)]
        sample = [(right + 10, legend_y + 6), (right + 40, legend_y + 6)]
        if dashed:
            _dashed(draw, points, colour)
            _dashed(draw, sample, colour)
        else:
            draw.line(points, fill=colour, width=3)
            for x, y in points:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
            draw.line(sample, fill=colour, width=3)
        draw.text((right + 46, legend_y), f"{name}{' novel' if dashed else ''}", fill="black")
        legend_y += 18
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
