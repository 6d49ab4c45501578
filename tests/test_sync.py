"""Audio and picture stay in sync over many segments whose length is not a whole
number of milliseconds (31 frames at 24 fps = 1291.67 ms)."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
from conftest import make_wav
from mediacheck import audio_seconds

from longvid.mux import concat, encode_frames, ffmpeg_exe

FPS, FRAMES, SEGMENTS = 24, 31, 100


def test_a_long_join_of_odd_length_segments_does_not_drift(tmp_path):
    videos = []
    for i in range(SEGMENTS):
        path = tmp_path / f"seg_{i:04d}.mp4"
        encode_frames(np.full((FRAMES, 16, 16, 3), i * 2, np.uint8), path, FPS, 18)
        videos.append(path)
    total = SEGMENTS * FRAMES
    out = tmp_path / "out.mp4"
    concat(videos, out, fps=FPS, total_frames=total, list_file=tmp_path / "list.txt",
           audio=(make_wav(tmp_path / "a.wav", total / FPS + 5), 0.0))
    log = subprocess.run([ffmpeg_exe(), "-i", str(out), "-vf", "showinfo", "-f", "null", "-"],
                         capture_output=True, text=True).stderr
    stamps = [float(t) for t in re.findall(r"pts_time:([\d.]+)", log)]
    assert len(stamps) == total
    assert stamps[-1] == pytest.approx((total - 1) / FPS, abs=0.5 / FPS)
    assert audio_seconds(out) == pytest.approx(total / FPS, abs=1 / FPS)
