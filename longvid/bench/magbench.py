"""The effects of `bench revisit`: MAG-Bench folders in, presets run through `extend`.

A MAG-Bench folder holds .mp4 clips and a CSV with the columns `video_path`,
`raw_caption` and `duration(sec)` (MAG's `datasets/datasets.py::mag_bench_dataset`);
other columns are ignored. A preset continues a clip's context exactly as
`longvid extend` continues a clip (longvid/extend.py): the context frames are written
to an mp4 (lossless H.264), extended by the generated frames' duration, and the
continuation is read back.
"""

from __future__ import annotations

import csv
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np

from longvid.bench.revisit import BENCH_CRF, Clip, ClipSource, Continuation, Split
from longvid.errors import InputError

COLUMNS = ("video_path", "raw_caption", "duration(sec)")
CSV_HINT = "MAG-Bench's CSV has the header video_path,raw_caption,duration(sec)"


def find_csv(folder: Path, given: Path | None) -> Path:
    """`given`, else the only .csv in `folder`."""
    if given is not None:
        if not given.is_file():
            raise InputError(f"{given}: file not found", "pass the MAG-Bench CSV with --csv")
        return given
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder", "pass the folder of MAG-Bench clips")
    found = sorted(folder.glob("*.csv"))
    if len(found) != 1:
        what = "no .csv file" if not found else f"{len(found)} .csv files"
        raise InputError(f"{folder}: {what}", "name the clips' CSV with --csv")
    return found[0]


def read_csv(path: Path, folder: Path) -> list[tuple[Path, str, float]]:
    """(video file, caption, duration_s) per row; bad input is an InputError naming the
    file, the line and the column. Video paths are relative to `folder` unless absolute."""
    rows = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise InputError(f"{path}:1: empty file", CSV_HINT)
            header = [h.strip() for h in header]
            for column in COLUMNS:
                if column not in header:
                    raise InputError(f"{path}:1: no column {column!r} in the header "
                                     f"({', '.join(header)})", CSV_HINT)
            at = {c: header.index(c) for c in COLUMNS}
            for fields in reader:
                line = reader.line_num
                if not any(v.strip() for v in fields):
                    continue  # a blank line
                if len(fields) != len(header):
                    raise InputError(f"{path}:{line}: {len(fields)} fields, the header has "
                                     f"{len(header)}", "quote captions that hold commas")
                video, caption, text = (fields[at[c]].strip() for c in COLUMNS)
                file = Path(video) if Path(video).is_absolute() else folder / video
                if not video or not file.is_file():
                    raise InputError(f"{path}:{line}: column video_path: {video!r} not found "
                                     f"in {folder}", "paths are relative to the clips' folder")
                try:
                    duration_s = float(text)
                except ValueError:
                    duration_s = math.nan
                if not math.isfinite(duration_s) or duration_s <= 0:
                    raise InputError(f"{path}:{line}: column duration(sec): {text!r} is not a "
                                     "positive number of seconds", CSV_HINT)
                rows.append((file, caption, duration_s))
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})", CSV_HINT) from None
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: {exc}", CSV_HINT) from None
    if not rows:
        raise InputError(f"{path}: no clips listed", CSV_HINT)
    return rows


def folder_clips(folder: Path, csv_path: Path | None, limit: int | None = None
                 ) -> list[ClipSource]:
    """The folder's clips as the CSV lists them (the first `limit`), decoded when used."""
    rows = read_csv(find_csv(folder, csv_path), folder)[:limit]

    def loader(file: Path, caption: str, duration_s: float) -> ClipSource:
        def load() -> Clip:
            from longvid.mux import probe, read_frames

            info = probe(file)
            frames = read_frames(file, info.width, info.height)  # native size, as MAG reads
            return Clip(file.stem, frames, max(1, round(info.fps)), duration_s, caption)

        return ClipSource(file.stem, load)

    return [loader(*row) for row in rows]


def preset_continuation(preset: str, seed: int) -> Continuation:
    """The preset's continuation of a clip's context: `extend`'s own path, in a temporary
    folder (its run directory is removed as well; the models stay loaded across clips)."""
    from longvid.render import BackendPool

    pool = BackendPool()

    def continue_clip(clip: Clip, cut: Split) -> np.ndarray:
        from longvid.extend import extend_clip
        from longvid.mux import encode_frames, read_frames
        from longvid.progress import PlainProgress

        height, width = clip.frames.shape[1:3]
        with tempfile.TemporaryDirectory(prefix="longvid-revisit-") as tmp:
            context = Path(tmp) / f"{clip.name}.mp4"
            encode_frames(clip.frames[:cut.switch], context, clip.fps, BENCH_CRF)
            result = extend_clip(context, seconds=(cut.frames - cut.switch) / clip.fps,
                                 prompt=clip.caption or None, preset_name=preset,
                                 output=Path(tmp) / "continued.mp4", seed=seed, crf=BENCH_CRF,
                                 fresh=True, pool=pool, progress=PlainProgress(quiet=True))
            try:
                generated: np.ndarray = read_frames(result.output, width, height,
                                                    first=cut.switch)
                return generated
            finally:
                shutil.rmtree(result.run_dir, ignore_errors=True)

    return continue_clip
