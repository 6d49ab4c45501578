"""Read rendered files back with ffmpeg, independently of longvid.mux's writers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from longvid.mux import ffmpeg_exe, probe, read_frames


def frames_of(path: Path) -> np.ndarray:
    info = probe(path)
    return read_frames(path, info.width, info.height)


def audio_seconds(path: Path, rate: int = 8000) -> float:
    """Duration of the first audio stream, by decoding it to raw samples."""
    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac",
                          "1", "-ar", str(rate), "-f", "s16le", "-"], capture_output=True,
                         check=True).stdout
    return len(raw) / 2 / rate


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)
