"""Storyboard images: `image:` (a shot's first frame) and `refs:` (reference images)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch
from conftest import run_longvid, write

from longvid.backends.base import SegmentRequest, ShotImages
from longvid.images import fit_frame, inspect_image, read_rgb
from longvid.render import load_job
from longvid.storyboard import load_storyboard


def save_png(path, pixels):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def smooth_image(width, height, phase=0.0):
    """A smooth colour field, as photographs mostly are: H.264 keeps it well."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    rgb = [np.sin(6 * x + phase), np.cos(5 * y - phase), np.sin(4 * (x + y) + 1)]
    return ((np.stack(rgb, -1) + 1) * 110 + 15).astype(np.uint8)  # (h, w, 3)


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def test_first_frame_is_scaled_to_cover_then_centre_cropped():
    wide = np.zeros((32, 64, 3), np.uint8)  # left quarter red, middle green, right blue
    wide[:, :16, 0], wide[:, 16:48, 1], wide[:, 48:, 2] = 255, 255, 255
    frame = fit_frame(wide, 32, 32)  # scale 1: the middle 32 columns
    assert frame.shape == (32, 32, 3) and np.array_equal(frame, wide[:, 16:48])
    tall = fit_frame(smooth_image(20, 40), 64, 48)  # scaled x3.2 to 64x128, rows 40..88
    assert tall.shape == (48, 64, 3)
    reference = fit_frame(smooth_image(20, 40), 64, 128)
    assert np.array_equal(tall, reference[40:88])


def test_images_load_with_their_content_hash(tmp_path):
    start = save_png(tmp_path / "img" / "start.png", smooth_image(48, 32))
    save_png(tmp_path / "img" / "hero.png", smooth_image(24, 24, 1.0))
    sb_text = """\
        version: 1
        refs: [img/hero.png]
        shots:
          - {id: a, prompt: sea, duration: 1s, image: img/start.png}
          - {id: b, prompt: sky, duration: 1s, refs: [img/start.png]}
        """
    sb = load_storyboard(write(tmp_path / "s.yaml", sb_text))
    a, b = sb.shots
    assert a.image == inspect_image(start) and (a.image.width, a.image.height) == (48, 32)
    assert [r.path for r in a.refs] == [str((tmp_path / "img" / "hero.png").resolve())]
    assert [r.path for r in b.refs] == [a.refs[0].path, a.image.path]  # the storyboard's first
    save_png(start, smooth_image(48, 32, 2.0))  # same path, other pixels
    again = load_storyboard(tmp_path / "s.yaml")
    assert again.shots[0].image.sha256 != a.image.sha256
    assert again.content_sha256 != sb.content_sha256


def test_tiny_holds_the_image_latent_as_the_takes_first(tiny):
    tiny.prepare(["a red harbour"], "", 1.0)
    first = tiny.encode_frames(smooth_image(32, 32)[None])  # (1, 16, 1, 4, 4)

    def run(images):
        return tiny.generate(SegmentRequest(
            prompt="a red harbour", negative_prompt="", num_latents=3, context=None, width=32,
            height=32, seed=4, steps=3, guidance_scale=1.0, fps=16, images=images),
            lambda i, n: None)

    plain, started = run(None), run(ShotImages(first_latent=first))
    assert started.latents.shape == (1, 16, 3, 4, 4) and started.frames.shape == (9, 32, 32, 3)
    assert torch.equal(started.latents[:, :, :1], first)
    assert (started.latents[:, :, 1:] - plain.latents[:, :, 1:]).abs().max() > 1e-3


def _first_frame(video, size="32x32"):
    from longvid.mux import ffmpeg_exe

    w, h = (int(v) for v in size.split("x"))
    raw = subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(video), "-frames:v", "1",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True,
                         check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(h, w, 3)


@pytest.mark.slow
def test_a_shot_rendered_from_an_image_starts_with_it(cli, tmp_path):
    """`image: start.png` on the first shot of a render on `tiny`: the first frame is the
    image (scaled and centre-cropped) exactly before encoding, and at least 30 dB PSNR
    in the H.264 mp4. A changed image file is a different render."""
    save_png(tmp_path / "start.png", smooth_image(96, 64))  # wider than the 32x32 frame
    sb = write(tmp_path / "i2v.yaml", """\
        version: 1
        preset: tiny
        resolution: 32x32
        shots:
          - {id: a, prompt: a red harbour, duration: 2s, image: start.png}
          - {id: b, prompt: a blue sky, duration: 1s}
        """)
    code, _, err = cli("render", sb, "-o", tmp_path / "i2v.mp4")
    assert code == 0, err
    expected = fit_frame(read_rgb(tmp_path / "start.png"), 32, 32)
    assert psnr(_first_frame(tmp_path / "i2v.mp4"), expected) >= 30
    _, _, plan = load_job(sb, None)
    assert plan.segments[0].image.sha256 == inspect_image(tmp_path / "start.png").sha256
    assert all(s.image is None for s in plan.segments[1:])

    save_png(tmp_path / "start.png", smooth_image(96, 64, 1.5))
    code, _, err = cli("render", sb, "-o", tmp_path / "i2v.mp4")
    assert code == 0, err
    segments = json.loads((tmp_path / "i2v.json").read_text())["segments"]
    assert not any(s["reused"] for s in segments if s["shot"] == "a")


def test_plan_shows_images_and_warns_where_the_preset_cannot_use_them(cli, tmp_path):
    save_png(tmp_path / "start.png", smooth_image(16, 16))
    sb = write(tmp_path / "s.yaml", """\
        version: 1
        preset: tiny
        resolution: 32x32
        shots:
          - {id: a, prompt: sea, duration: 2s, image: start.png, refs: [start.png]}
        """)
    code, out, _ = cli("plan", sb, "--json")
    assert code == 0
    plan = json.loads(out)
    assert plan["segments"][0]["image"]["sha256"] == inspect_image(tmp_path / "start.png").sha256
    assert all(seg["refs"] == [] for seg in plan["segments"])  # tiny takes no refs
    warnings = " | ".join(plan["warnings"])
    assert "takes no reference images (`refs`): ignored for a" in warnings
    assert "16x16 px, smaller than the 32x32 frame: it is upscaled" in warnings


def test_extend_cannot_start_its_first_shot_from_an_image(tmp_path):
    from longvid.backends import caps_of
    from longvid.errors import StoryboardError
    from longvid.plan import make_plan

    save_png(tmp_path / "start.png", smooth_image(32, 32))
    sb_path = write(tmp_path / "s.yaml", """\
        version: 1
        resolution: 32x32
        shots:
          - {id: a, prompt: sea, duration: 1s, image: start.png}
        """)
    sb, preset, _ = load_job(sb_path, None)
    with pytest.raises(StoryboardError, match="`extend` continues the clip into it") as exc:
        make_plan(sb, preset, caps_of(preset), continues=True)
    assert exc.value.line == 4 and exc.value.key == "shots.0.image"


@pytest.mark.parametrize(("orientation", "turn"), [(6, -1), (8, 1), (3, 2), (1, 0)])
def test_a_photo_is_read_as_shown_by_its_exif_orientation(tmp_path, orientation, turn):
    """Cameras store landscape pixels and an EXIF orientation; a portrait phone photo read
    without it was a sideways first frame."""
    from PIL import Image

    stored = smooth_image(64, 32)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.png"
    Image.fromarray(stored).save(path, exif=exif)
    shown = np.rot90(stored, turn)  # 6: turned 90 degrees clockwise to be upright
    assert np.array_equal(read_rgb(path), shown)
    image = inspect_image(path)
    assert (image.width, image.height) == (shown.shape[1], shown.shape[0])


def test_a_16_bit_grey_image_keeps_its_tones(tmp_path):
    from PIL import Image

    grey = (np.arange(32 * 64).reshape(32, 64) * 32).astype(np.uint16)  # 0..65504
    path = tmp_path / "grey16.png"
    Image.fromarray(grey).save(path)
    rgb = read_rgb(path)
    assert rgb.shape == (32, 64, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    expected = np.rint(grey / 65535 * 255).astype(np.uint8)
    assert np.array_equal(rgb[..., 1], expected)  # before: clipped, nearly all white


@pytest.mark.parametrize("size", [(12000, 8000), (20000, 10000)])
def test_an_image_too_large_is_exit_3_without_pillows_own_noise(tmp_path, size):
    """96 megapixels made Pillow print a DecompressionBombWarning; 200 made it raise an
    error that was exit 1."""
    from PIL import Image

    Image.new("1", size).save(tmp_path / "huge.png")  # a 1-bit field: a small file
    sb = write(tmp_path / "s.yaml", """\
        version: 1
        shots:
          - {id: a, duration: 1s, prompt: sea, image: huge.png}
        """)
    done = run_longvid("plan", sb, cwd=tmp_path)  # a process of its own: warnings print
    err = done.stderr
    assert done.returncode == 3 and "huge.png" in err and "more than 64 megapixels" in err, err
    assert "Warning" not in err and "warnings.warn" not in err
