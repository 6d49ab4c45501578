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
