"""`longvid extend` on clips made by ffmpeg."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ffmpeg_make_clip
from mediacheck import audio_seconds, frames_of, psnr

from longvid.extend import generation_size
from longvid.mux import probe


def test_extend_appends_a_continuation_and_keeps_the_clip(cli, tmp_path):
    clip = ffmpeg_make_clip(tmp_path / "clip.mp4", seconds=2, audio=True)
    source = frames_of(clip)
    code, out, err = cli("extend", clip, "--seconds", "1", "--prompt", "waves", "--json")
    assert code == 0, err
    result = json.loads(out)
    output = tmp_path / "clip_extended.mp4"
    assert result["output"] == str(output) and result["frames"] == 48
    info = probe(output)
    assert (info.width, info.height, info.fps, info.frames) == (32, 32, 16, 48)
    frames = frames_of(output)
    assert psnr(frames[:32], source) > 35  # the clip itself is visually unchanged
    assert psnr(frames[32:], np.repeat(source[-1:], 16, 0)) < 25  # something new follows
    assert info.has_audio and audio_seconds(output) == pytest.approx(3.0, abs=0.05)
    again = json.loads(cli("extend", clip, "--seconds", "1", "--prompt", "waves", "--json")[1])
    assert again["resumed_segments"] == again["segments"]


def test_extend_keeps_an_odd_frame_size(cli, tmp_path):
    clip = ffmpeg_make_clip(tmp_path / "odd.mp4", seconds=1, size="40x24", fps=12)
    code, _, err = cli("extend", clip, "-s", "0.5", "-o", tmp_path / "x.mp4", "-q")
    assert code == 0, err
    info = probe(tmp_path / "x.mp4")
    assert (info.width, info.height, info.fps, info.frames) == (40, 24, 12, 18)


def test_generation_size_rounds_to_the_backend_grid():
    assert generation_size(832, 480, 16, 512) == (512, 288)
    assert generation_size(40, 24, 16, 512) == (48, 32)  # halves round up
    assert generation_size(160, 96, 16, 512) == (160, 96)


@pytest.mark.parametrize(("content", "message"), [
    (None, "file not found"), (b"", "empty file"),
    (b"\x00garbage" * 100, "no readable video stream"), ("folder", "a folder, not a video file"),
])
def test_bad_clips_are_explained(cli, tmp_path, content, message):
    clip = tmp_path / "bad.mp4"
    if content == "folder":
        clip.mkdir()
    elif content is not None:
        clip.write_bytes(content)
    code, _, err = cli("extend", clip, "--seconds", "1")
    assert code == 3 and message in err and "Traceback" not in err


def test_extend_needs_a_positive_length(cli, tmp_path):
    clip = ffmpeg_make_clip(tmp_path / "c.mp4", seconds=1)
    code, _, err = cli("extend", clip, "--seconds", "0")
    assert code == 3 and "--seconds must be positive" in err


def test_a_clip_at_a_rate_the_preset_cannot_make_is_exit_3_saying_how_to_retime_it(
        cli, tmp_path):
    """The clip's rate is the result's, so the storyboard's "set `fps:`" cannot help: the
    hint says how to re-time the clip, and which presets take any rate."""
    clip = ffmpeg_make_clip(tmp_path / "c.mp4", seconds=1, fps=8)
    code, _, err = cli("extend", clip, "--seconds", "1", "--preset", "skyreels-df-1.3b")
    assert code == 3, err
    assert "generates at 24 fps, and the clip runs at 8" in err
    assert "ffmpeg -i c.mp4 -r 24 retimed.mp4" in err and "`fps:" not in err
    assert "tiny, tiny-causal" in err and "skyreels" not in err.split("any frame rate")[1]
    assert not (tmp_path / "c_extended.run").exists()


def test_the_clip_seeds_the_memory_bank_and_its_first_frame_is_the_anchor(cli, tmp_path):
    from longvid.memory.store import load_keyframes

    clip = ffmpeg_make_clip(tmp_path / "clip.mp4", seconds=2)
    code, out, err = cli("extend", clip, "--seconds", "3", "--json")
    assert code == 0, err
    run = tmp_path / "clip_extended.run" / "segments"
    seeded = load_keyframes(run / "init.memory.safetensors")
    assert [k.frame for k in seeded][0] == -32 and len(seeded) == 8  # the clip's 32 frames
    assert [k.frame for k in seeded] == sorted(k.frame for k in seeded)
    first = frames_of(clip)[0]
    assert np.abs(seeded[0].thumb.astype(int).mean(axis=(0, 1)) - first.mean(axis=(0, 1))
                  ).max() < 8, "the anchor is the clip's first frame"
    records = [json.loads(p.read_text()) for p in sorted(run.glob("seg_*.json"))]
    assert len(records) >= 2
    assert records[0]["drift"]["colour_shift_de"] is not None  # measured against the clip
    assert {"reason": "anchor", "segment": -1, "frame": -32}.items() <= \
        records[1]["memory"][0].items()


@pytest.mark.parametrize("seconds", ["nan", "inf", "-inf", "-1", "1e9"])
def test_extend_refuses_a_length_that_is_not_one_at_once(cli, tmp_path, seconds):
    clip = ffmpeg_make_clip(tmp_path / "c.mp4", seconds=1)
    code, _, err = cli("extend", clip, "--seconds", seconds)
    assert code == 3 and "--seconds must be positive" in err
    assert not (tmp_path / "c_extended.run").exists()


def test_extend_continues_an_ntsc_rate_clip_at_the_nearest_whole_rate(cli, tmp_path):
    import subprocess

    from longvid.mux import ffmpeg_exe

    clip = tmp_path / "ntsc.mp4"
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=32x32:rate=30000/1001:duration=1", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", str(clip)], check=True)
    assert probe(clip).fps != 30
    code, _, err = cli("extend", clip, "-s", "0.5", "-o", tmp_path / "out.mp4")
    assert code == 0, err
    assert "warning: ntsc.mp4 runs at 29.970 fps; the result is at 30 fps" in err
    info = probe(tmp_path / "out.mp4")
    assert info.fps == 30 and info.frames == 30 + 15


def test_extend_takes_a_gpu_budget_as_render_does(cli, tmp_path):
    clip = ffmpeg_make_clip(tmp_path / "clip.mp4", seconds=1, fps=24)  # the preset's rate
    code, _, err = cli("extend", clip, "-s", "1", "--preset", "skyreels-df-1.3b", "--vram", "3")
    assert code == 4 and "needs at least 8.0 GiB of GPU memory" in err
    assert not (tmp_path / "clip_extended.mp4").exists()


def test_extend_report_draws_the_pictures_beside_the_video(cli, tmp_path):
    clip = ffmpeg_make_clip(tmp_path / "clip.mp4", seconds=1)
    code, out, err = cli("extend", clip, "-s", "0.5", "--report", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["contact_sheet"] == str(tmp_path / "clip_extended.contact.png")
    assert result["drift_plot"] == str(tmp_path / "clip_extended.drift.png")
    for picture in (result["contact_sheet"], result["drift_plot"]):
        with open(picture, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    code, _, err = cli("extend", clip, "-s", "0.5", "--report")
    assert code == 0 and f"report: {result['contact_sheet']} {result['drift_plot']}" in err


def test_a_sink_backend_continues_a_clip_with_its_first_latents_as_the_sink(cli, tmp_path):
    """tiny-causal's cache keeps a take's first 3 latents as its sink. Continuing a clip, the
    take began in the clip: segment 0 gets the clip's first 9 frames, encoded, as the sink
    (as a take's later segments get its first latents) and carries them on."""
    import torch
    from safetensors.torch import load_file

    from longvid.backends.base import SegmentRequest
    from longvid.backends.tiny_causal import TinyCausalBackend
    from longvid.memory.store import load_keyframes
    from longvid.mux import read_frames
    from longvid.presets import load_preset

    clip = ffmpeg_make_clip(tmp_path / "clip.mp4", seconds=3)  # 48 frames: 9 + 33 of tail
    code, out, err = cli("extend", clip, "--seconds", "0.75", "--prompt", "waves",
                         "--preset", "tiny-causal", "--json")
    assert code == 0, err
    segments = tmp_path / "clip_extended.run" / "segments"
    init = load_file(segments / "init.state.safetensors")
    preset = load_preset("tiny-causal")
    backend = TinyCausalBackend()
    backend.load(preset)
    head = read_frames(clip, 32, 32, only=list(range(9)))
    torch.testing.assert_close(init["sink"], backend.encode_frames(head))
    first = load_file(segments / "seg_0000.state.safetensors")
    torch.testing.assert_close(first["sink"], init["sink"])  # carried through the take

    # segment 0 was generated with it: its keyframes (the middle and last of its 3 new
    # latents, stored before anti-drift touches the carried ones) are those latents
    record = json.loads((segments / "seg_0000.json").read_text())
    assert record["frames"] == 12
    backend.prepare(["waves"], "", 1.0)
    ask = {"prompt": "waves", "negative_prompt": "", "num_latents": 3,
           "context": init["context"], "width": 32, "height": 32, "seed": record["seed"],
           "steps": preset.steps, "guidance_scale": 1.0, "fps": 16}
    with_sink = backend.generate(SegmentRequest(**ask, sink=init["sink"]), lambda i, k: None)
    kept = torch.from_numpy(np.stack([k.latent for k in load_keyframes(
        segments / "seg_0000.memory.safetensors")], axis=1))  # (C, 2, h, w)
    torch.testing.assert_close(kept, with_sink.latents[0, :, 1:])
    without = backend.generate(SegmentRequest(**ask), lambda i, k: None)
    assert (without.latents - with_sink.latents).abs().max() > 1e-4


def shown_size(path, *, from_end: bool) -> tuple[int, int]:
    """A frame's size as a player shows it: decoded by ffmpeg, not scaled."""
    import subprocess

    from PIL import Image

    from longvid.mux import ffmpeg_exe

    png = path.with_name(f"{path.stem}.{'last' if from_end else 'first'}.png")
    seek = ["-sseof", "-0.2"] if from_end else []
    subprocess.run([ffmpeg_exe(), "-v", "error", *seek, "-i", str(path), "-frames:v", "1",
                    "-y", str(png)], check=True)
    return Image.open(png).size


def upright(flat, clip):
    """The clip as a phone held upright records it: landscape pixels, turned a quarter by
    the display matrix (older ffmpeg: the `rotate` tag)."""
    import subprocess

    from longvid.mux import ffmpeg_exe

    for how in (["-display_rotation", "90", "-i", str(flat)],
                ["-i", str(flat), "-metadata:s:v:0", "rotate=90"]):
        made = subprocess.run([ffmpeg_exe(), "-v", "error", *how, "-c", "copy", "-y", str(clip)])
        if made.returncode == 0 and shown_size(clip, from_end=False) == (24, 40):
            return clip
    raise AssertionError("this ffmpeg cannot write a display rotation")


def extended_as_shown(cli, clip, size):
    """`clip` extended by 0.5 s: the result is `size` as probed and as a player shows its
    first and last frames."""
    out = clip.with_name("x.mp4")
    code, _, err = cli("extend", clip, "-s", "0.5", "-o", out, "-q")
    assert code == 0, err
    assert (probe(out).width, probe(out).height) == size
    assert shown_size(out, from_end=False) == shown_size(out, from_end=True) == size
    return out


def anamorphic(wide, clip):
    """The clip as DV, broadcast or some phones store it: pixels that are not square
    (here 30x24 stored, 4:3 pixels, shown 40x24), as the sample aspect ratio says."""
    import subprocess

    from longvid.mux import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(wide), "-vf",
                    "scale=30:24,setsar=4/3", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-crf", "10", "-y", str(clip)], check=True)
    return clip


def test_a_clip_of_wide_pixels_is_continued_as_shown(cli, tmp_path):
    """A clip whose pixels are not square is shown wider than it is stored. Before, its
    continuation was made at the stored size and the join kept the clip's pixels: the
    video changed shape where the continuation began. Now both are square pixels at the
    size the clip is shown."""
    from longvid.mux import read_frames

    clip = anamorphic(ffmpeg_make_clip(tmp_path / "wide.mp4", seconds=1, size="40x24"),
                      tmp_path / "dv.mp4")
    assert shown_size(clip, from_end=False) == (30, 24)  # stored so; players widen it
    assert (probe(clip).width, probe(clip).height) == (40, 24)
    out = extended_as_shown(cli, clip, (40, 24))
    # the clip, widened (re-encoded at the render's crf: about 30 dB on a 40x24 pattern)
    assert psnr(frames_of(out)[:16], read_frames(clip, 40, 24)) > 25


def test_a_clip_of_odd_sides_is_continued_at_the_even_size_below(cli, tmp_path):
    """H.264 in 4:2:0 has no odd sides: a 33x25 clip (4:4:4, square pixels) failed at its
    re-encode with exit 1. probe reports it as it is; the result is 32x24 throughout."""
    import subprocess

    from longvid.mux import ffmpeg_exe

    clip = tmp_path / "odd.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=40x24:rate=16:duration=1", "-vf", "scale=33:25,setsar=1",
                    "-c:v", "libx264", "-pix_fmt", "yuv444p", "-y", str(clip)], check=True)
    assert (probe(clip).width, probe(clip).height, probe(clip).sample_aspect) == (33, 25, 1)
    extended_as_shown(cli, clip, (32, 24))


def test_a_clip_shown_upright_is_continued_upright(cli, tmp_path):
    """Phone clips carry their orientation in a display matrix that ffmpeg applies when it
    decodes. Before, the continuation was made at the stored (landscape) size from
    squashed frames and joined to the upright clip: a video whose frames change shape."""
    clip = upright(ffmpeg_make_clip(tmp_path / "flat.mp4", seconds=1, size="40x24"),
                   tmp_path / "phone.mp4")
    assert (probe(clip).width, probe(clip).height) == (24, 40)
    out = extended_as_shown(cli, clip, (24, 40))
    assert psnr(frames_of(out)[:16], frames_of(clip)) > 35  # the clip itself, upright


def test_a_clip_a_few_pixels_wide_is_read_not_called_corrupt(tmp_path):
    """Sizes of one digit (a 4x4 clip, or a 40x24 one of 1:8 pixels, shown 4 px wide
    after its re-encode) were "no readable video stream (corrupt or not a video)"."""
    small = ffmpeg_make_clip(tmp_path / "small.mp4", seconds=0.5, size="4x4")
    info = probe(small)
    assert (info.width, info.height, info.frames) == (4, 4, 8)
