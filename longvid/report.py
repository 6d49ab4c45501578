"""`longvid report`: a contact sheet and a drift plot of a run, as PNGs people look at.

Both are drawn from the run directory alone (keyframe thumbnails in the memory
files, drift readings in the segment records), with Pillow and numpy: no torch,
no model, and a run still in progress can be reported on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from longvid.errors import InputError
from longvid.memory.bank import Keyframe
from longvid.memory.drift import COLOUR_LIMIT, LATENT_LIMIT
from longvid.memory.store import load_keyframes, memory_path
from longvid.timecode import timecode

THUMB_PX = 96  # drawn size of a keyframe
MAX_PER_ROW = 10
_BG, _FG, _GRID = (24, 24, 28), (230, 230, 230), (70, 70, 80)


@dataclass(frozen=True)
class Report:
    contact_sheet: Path
    drift_plot: Path


_REPAIR = ("run the same `longvid render` again: it checks the run directory and renders "
           "what is damaged again; then report")


def _damaged(path: Path) -> InputError:
    return InputError(f"{path} is damaged or unreadable", _REPAIR)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise _damaged(path) from None
    if not isinstance(data, dict):
        raise _damaged(path)
    return data


def write_report(run: Path, out_dir: Path | None = None) -> Report:
    manifest = _read_json(run / "manifest.json")
    fps = int(manifest.get("fps") or 16)
    stem = Path(manifest.get("output") or run.with_suffix(".mp4")).stem
    out_dir = out_dir or Path(manifest.get("output") or run).parent
    records = _records(run)
    if not records:
        raise InputError(f"{run} has no finished segment yet",
                         "report after the render has committed at least one segment")
    keyframes: list[Keyframe] = []
    for k in [-1, *sorted(records)]:
        path = memory_path(run / "segments", k)
        if path.exists():
            try:
                keyframes += load_keyframes(path)
            except Exception:  # noqa: BLE001 - safetensors raises its own error types
                raise _damaged(path) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report(out_dir / f"{stem}.contact.png", out_dir / f"{stem}.drift.png")
    for picture in (report.contact_sheet, report.drift_plot):
        if picture.exists() and not _drawn_by_longvid(picture):
            raise InputError(f"{picture} exists and was not drawn by longvid",
                             "move that file away, or pass --out-dir to `longvid report`")
    _save(contact_sheet(keyframes, fps, manifest.get("storyboard", "")), report.contact_sheet)
    _save(drift_plot([records[k] for k in sorted(records)]), report.drift_plot)
    return report


def _records(run: Path) -> dict[int, dict]:
    out = {}
    for path in (run / "segments").glob("seg_*.json"):
        record = _read_json(path)
        if not isinstance(record.get("index"), int):
            raise _damaged(path)
        out[record["index"]] = record
    return out


def _drawn_by_longvid(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return getattr(image, "text", {}).get("Software") == "longvid"
    except (OSError, ValueError):
        return False


def _save(image, path: Path) -> None:  # noqa: ANN001 - a PIL image
    import os

    from PIL.PngImagePlugin import PngInfo

    mark = PngInfo()
    mark.add_text("Software", "longvid")  # so a later report knows it may replace this file
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    image.save(tmp, format="PNG", pnginfo=mark)
    os.replace(tmp, path)


def contact_sheet(keyframes: list[Keyframe], fps: int, title: str):  # noqa: ANN201
    """One row per shot, in order of appearance; keyframes with their timecodes."""
    from PIL import Image, ImageDraw

    rows: dict[str, list[Keyframe]] = {}
    for k in sorted(keyframes, key=lambda k: (k.frame, k.segment)):
        rows.setdefault(k.shot_id, []).append(k)
    label_w, pad, text_h = 120, 6, 14
    cols = min(MAX_PER_ROW, max(len(v) for v in rows.values()))
    width = label_w + cols * (THUMB_PX + pad) + pad
    height = 28 + len(rows) * (THUMB_PX + text_h + pad) + pad
    sheet = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 8), f"{Path(title).name}: one row per shot, keyframes with timecodes",
              fill=_FG)
    y = 28
    for shot_id, frames in rows.items():
        draw.text((pad, y + THUMB_PX // 2 - 6), shot_id[:18], fill=_FG)
        picks = [frames[round(i * (len(frames) - 1) / max(cols - 1, 1))]
                 for i in range(min(cols, len(frames)))]
        for c, k in enumerate(picks):
            x = label_w + c * (THUMB_PX + pad)
            thumb = Image.fromarray(k.thumb).resize((THUMB_PX, THUMB_PX), Image.BILINEAR)
            sheet.paste(thumb, (x, y))
            stamp = timecode(k.frame, fps) if k.frame >= 0 else "clip"
            draw.text((x, y + THUMB_PX + 1), stamp, fill=_FG)
        y += THUMB_PX + text_h + pad
    return sheet


def drift_plot(records: list[dict]):  # noqa: ANN201
    """Colour and latent drift per segment against their limits; corrected segments red."""
    from PIL import Image, ImageDraw

    panels = (("colour drift (mean Lab delta E)", "colour_shift_de", COLOUR_LIMIT),
              ("latent drift (mean shift, anchor std)", "latent_mean_dist", LATENT_LIMIT),
              ("flicker (mean frame difference)", "flicker", None))
    w, ph, left, pad = 640, 150, 56, 24
    img = Image.new("RGB", (w, pad + len(panels) * (ph + pad)), _BG)
    draw = ImageDraw.Draw(img)
    n = len(records)
    xs = [left + (i + 0.5) * (w - left - pad) / n for i in range(n)]
    for p, (title, key, limit) in enumerate(panels):
        top = pad + p * (ph + pad)
        values = [r.get("drift", {}).get(key) for r in records]
        known = [v for v in values if v is not None]
        vmax = max(known + [limit or 0.0, 1e-6]) * 1.15
        ypos = lambda v, top=top, vmax=vmax: top + ph - v / vmax * ph  # noqa: E731
        draw.rectangle((left, top, w - pad, top + ph), outline=_GRID)
        draw.text((left + 4, top + 2), title, fill=_FG)
        draw.text((4, top), f"{vmax:.2f}", fill=_FG)
        draw.text((4, top + ph - 12), "0", fill=_FG)
        if limit is not None:
            y = ypos(limit)
            for x in range(left, w - pad, 8):
                draw.line((x, y, min(x + 4, w - pad), y), fill=(200, 160, 40))
        last = None
        for i, (x, v) in enumerate(zip(xs, values, strict=True)):
            if i and records[i].get("shot") != records[i - 1].get("shot"):
                bx = (xs[i - 1] + x) / 2
                draw.line((bx, top, bx, top + ph), fill=_GRID)
            if v is None:
                last = None
                continue
            point = (x, ypos(v))
            if last is not None:
                draw.line((*last, *point), fill=(90, 170, 250), width=2)
            fixed = records[i].get("drift", {}).get("corrected")
            r = 3
            draw.ellipse((point[0] - r, point[1] - r, point[0] + r, point[1] + r),
                         fill=(230, 70, 60) if fixed else (90, 170, 250))
            last = point
        draw.text((left, top + ph + 4), "segments ->  (red: corrected; dashed: limit; "
                  "grey lines: shot changes)" if p == len(panels) - 1 else "", fill=_FG)
    return img

