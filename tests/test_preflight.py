"""A refused render changes nothing, and says everything that is wrong at once."""

from __future__ import annotations

import pytest
from conftest import ffmpeg_make_clip, make_wav, write
from test_never_clobber import tree

from longvid.mux import probe

STORY = "version: 1\nresolution: 32x32\nshots: [{id: a, prompt: sea, duration: 0.5s}]\n"


def no_gpu() -> bool:
    import torch

    return not torch.cuda.is_available()


@pytest.fixture
def offline_empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))


@pytest.mark.skipif(not no_gpu(), reason="needs a machine without a CUDA GPU")
def test_a_gpu_preset_offline_on_a_cpu_says_all_and_writes_nothing(cli, tmp_path,
                                                                   offline_empty_cache):
    sb = write(tmp_path / "s.yaml", STORY)
    (tmp_path / "music.wav").write_bytes(b"RIFF not really a wav")
    sb.write_text(STORY + "audio: music.wav\n")
    before = tree(tmp_path)
    code, _, err = cli("render", sb, "--preset", "skyreels-df-1.3b")
    assert code == 4, err
    assert "3 problems" in err and "nothing was written" in err
    assert "CUDA GPU" in err and "longvid models pull skyreels-df-1.3b" in err
    assert "music.wav: no audio stream that decodes" in err
    assert tree(tmp_path) == before


@pytest.mark.parametrize("make", ["garbage", "video without sound", "empty"])
def test_an_audio_file_that_does_not_play_is_refused_before_any_work(cli, tmp_path, make):
    audio = tmp_path / "sound.m4a"
    if make == "garbage":
        audio.write_bytes(b"\x00\x01garbage" * 50)
    elif make == "empty":
        audio.write_bytes(b"")
    else:
        ffmpeg_make_clip(audio.with_suffix(".mp4"), seconds=1).rename(audio)
    sb = write(tmp_path / "s.yaml", STORY + "audio: sound.m4a\n")
    before = tree(tmp_path)
    code, _, err = cli("render", sb)
    assert code == 3 and "sound.m4a: no audio stream that decodes" in err, err
    assert tree(tmp_path) == before


def test_an_audio_offset_past_the_end_is_a_warning(cli, tmp_path):
    make_wav(tmp_path / "short.wav", 1.0)
    sb = write(tmp_path / "s.yaml", STORY + "audio: {path: short.wav, offset: 5s}\n")
    code, _, err = cli("render", sb)
    assert code == 0, err
    assert "warning: audio offset 5s is past the end" in err
    assert probe(tmp_path / "s.mp4").frames == 8


def test_an_output_folder_under_a_file_is_exit_4_and_writes_nothing(cli, tmp_path):
    sb = write(tmp_path / "s.yaml", STORY)
    (tmp_path / "plain").write_text("a file")
    before = tree(tmp_path)
    code, _, err = cli("render", sb, "-o", tmp_path / "plain" / "deeper" / "out.mp4")
    assert code == 4 and str(tmp_path / "plain") in err and "is a file" in err
    assert tree(tmp_path) == before


def ffmpeg_without_x264(folder):
    """An ffmpeg as some distributions ship it (Fedora's ffmpeg-free): everything but the
    libx264 encoder. A wrapper around the real one that hides it."""
    import imageio_ffmpeg

    wrapper = folder / "ffmpeg"
    folder.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(f"""#!/usr/bin/env bash
real="{imageio_ffmpeg.get_ffmpeg_exe()}"
for a in "$@"; do
  if [ "$a" = libx264 ]; then echo "Unknown encoder 'libx264'" >&2; exit 8; fi
done
for a in "$@"; do
  if [ "$a" = -encoders ]; then "$real" "$@" | grep -v libx264; exit 0; fi
done
exec "$real" "$@"
""")
    wrapper.chmod(0o755)
    return wrapper


def test_an_ffmpeg_without_h264_is_exit_4_before_any_work_and_on_path_is_passed_over(
        tmp_path, monkeypatch):
    """Before, segment 0's encode failed with exit 1 ("this is a bug")."""
    import os

    from conftest import run_longvid

    wrapper = ffmpeg_without_x264(tmp_path / "bin")
    sb = write(tmp_path / "s.yaml", STORY)
    refused = run_longvid("render", sb, cwd=tmp_path, env={"LONGVID_FFMPEG": str(wrapper)})
    assert refused.returncode == 4, refused.stderr
    assert f"LONGVID_FFMPEG={wrapper} cannot encode H.264" in refused.stderr
    assert "pip install imageio-ffmpeg" in " ".join(refused.stderr.split())
    assert set(tree(tmp_path)) == {"bin", "bin/ffmpeg", "s.yaml"}  # nothing written
    monkeypatch.delenv("LONGVID_FFMPEG", raising=False)
    path = f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}"  # found first on PATH
    done = run_longvid("render", sb, "-q", cwd=tmp_path, env={"PATH": path})
    assert done.returncode == 0, done.stderr  # imageio-ffmpeg's binary took over
    assert probe(tmp_path / "s.mp4").frames == 8
