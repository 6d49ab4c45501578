"""Shared fixtures: a hermetic LONGVID_HOME, tiny storyboards, the tiny backend, CLI runners."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
HARBOUR = REPO / "tests" / "data" / "harbour.yaml"  # three takes on `tiny`: the plan/CLI fixture

# A small but complete storyboard: a timed prompt, a continue, a cut and a crossfade,
# at 32x32 so a render takes a few seconds on a laptop CPU.
SMALL = """\
version: 1
title: small
preset: tiny
resolution: 32x32
seed: 7
shots:
  - id: a
    duration: 2s
    prompts:
      - {at: 0s, text: a red harbour}
      - {at: 1s, text: a blue harbour}
  - id: b
    duration: 1.5s
    prompt: a green pier
  - id: c
    duration: 1s
    transition: cut
    prompt: a market
  - id: d
    duration: 1s
    transition: {type: crossfade, seconds: 0.5}
    prompt: the harbour again
"""


@pytest.fixture(autouse=True)
def _hermetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LONGVID_HOME", raising=False)
    monkeypatch.delenv("LONGVID_FFMPEG", raising=False)
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def small(tmp_path: Path) -> Path:
    return write(tmp_path / "small.yaml", SMALL)


@pytest.fixture(scope="session")
def tiny():
    from longvid.backends.tiny import TinyWanBackend
    from longvid.presets import load_preset

    backend = TinyWanBackend()
    backend.load(load_preset("tiny"))
    return backend


@pytest.fixture
def cli():
    """In-process CLI: returns (exit_code, stdout, stderr)."""
    from longvid.cli import app

    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    return run


def run_longvid(*args: str, cwd: Path, env: dict[str, str] | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess:
    """The CLI in a real process, as users and shell scripts run it."""
    return subprocess.run([sys.executable, "-m", "longvid", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def ffmpeg_make_clip(path: Path, *, seconds: float, size: str = "32x32", fps: int = 16,
                     audio: bool = False) -> Path:
    """An ffmpeg-generated test clip (testsrc2 pattern, optional sine audio)."""
    from longvid.mux import ffmpeg_exe

    args = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
            f"testsrc2=size={size}:rate={fps}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    args += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "10"]
    if audio:
        args += ["-c:a", "aac", "-shortest"]
    subprocess.run(args + [str(path)], check=True)
    return path


def make_wav(path: Path, seconds: float) -> Path:
    from longvid.mux import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"sine=frequency=220:duration={seconds}", str(path)], check=True)
    return path


class Spy:
    """Wraps a loaded backend and records each request (the real seam, not a mock)."""

    def __init__(self, inner):
        self.inner, self.requests, self.outputs = inner, [], []
        self.name, self.caps = inner.name, inner.caps

    def prepare(self, prompts, negative_prompt, guidance_scale):
        self.prepared = prompts
        self.inner.prepare(prompts, negative_prompt, guidance_scale)

    def encode_frames(self, frames):
        return self.inner.encode_frames(frames)

    def generate(self, req, on_step):
        out = self.inner.generate(req, on_step)
        self.requests.append(req)
        self.outputs.append(out)
        return out


@pytest.fixture
def fake_hub(tmp_path: Path):
    """The tiny SkyReels-V2 DF pipeline served as its real repo id by a Hub on the loopback
    interface (tests/fakehub.py); point a process at it with fakehub.online_env."""
    from diffusers import SkyReelsV2DiffusionForcingPipeline
    from fakehub import FakeHub
    from hubfixture import SKYREELS_REPO, tiny_skyreels_components

    SkyReelsV2DiffusionForcingPipeline(**tiny_skyreels_components()).save_pretrained(
        tmp_path / "upstream", safe_serialization=True)
    with FakeHub() as served:
        served.add(SKYREELS_REPO, tmp_path / "upstream")
        yield served
