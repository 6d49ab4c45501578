"""ffmpeg at the rim: encode segments once, join by stream copy, mux audio, probe.

Every command is built with ffmpeg-python (argv lists, never a shell string). The
binary is the one on PATH, else the one imageio-ffmpeg ships. Only `ffmpeg` is
needed (no ffprobe): probing parses `ffmpeg -i` and counts frames by stream copy.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import shutil
import signal
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from longvid.errors import InputError, LongvidError, ResourceError

ENCODE_ARGS = {"vcodec": "libx264", "pix_fmt": "yuv420p", "preset": "medium"}
MAX_TAG_CHARS = 1024  # a metadata value; ffmpeg's argv takes at most 128 kB per argument
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# what ffmpeg prints (strerror) when the system refuses a write, and the errno it means
_OS_REFUSALS = {"No space left on device": errno.ENOSPC, "File too large": errno.EFBIG,
                "Disk quota exceeded": errno.EDQUOT, "Read-only file system": errno.EROFS,
                "Permission denied": errno.EACCES, "Not a directory": errno.ENOTDIR,
                "Is a directory": errno.EISDIR}


def ffmpeg_exe() -> str:
    """$LONGVID_FFMPEG if set, else ffmpeg on PATH, else imageio-ffmpeg's binary; the first
    that can encode H.264 (libx264: some distributions' ffmpeg, Fedora's ffmpeg-free for
    one, leave it out, and longvid writes every segment with it)."""
    explicit = os.environ.get("LONGVID_FFMPEG")
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise ResourceError(f"LONGVID_FFMPEG={explicit} is not an executable file",
                                "point it at an ffmpeg binary, or unset it")
        if not _encodes_h264(explicit):
            raise ResourceError(f"LONGVID_FFMPEG={explicit} cannot encode H.264 (it has no "
                                "libx264 encoder)", _NO_X264_HINT)
        return explicit
    found = shutil.which("ffmpeg")
    if found and _encodes_h264(found):
        return found
    try:
        import imageio_ffmpeg

        bundled = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        bundled = None
    if bundled and _encodes_h264(bundled):
        return bundled
    if found:
        raise ResourceError(f"the ffmpeg at {found} cannot encode H.264 (it has no libx264 "
                            "encoder)", _NO_X264_HINT)
    raise ResourceError("ffmpeg not found",
                        "install it (apt install ffmpeg, brew install ffmpeg) or "
                        "`pip install imageio-ffmpeg`")


_NO_X264_HINT = ("install an ffmpeg built with libx264 (the distribution's full ffmpeg, or a "
                 "static build), or `pip install imageio-ffmpeg` (longvid then uses its "
                 "binary), or point LONGVID_FFMPEG at one")


@functools.lru_cache(maxsize=8)
def _encodes_h264(exe: str) -> bool:
    """Whether this ffmpeg lists the libx264 video encoder (asked once per process)."""
    import subprocess

    try:
        listed = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True,
                                text=True, errors="replace", timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return re.search(r"^\s*V\S*\s+libx264\s", listed, re.MULTILINE) is not None


def ffmpeg_path(path: Path) -> str:
    """`path` as ffmpeg-python takes it, or InputError (exit 3) for a name whose bytes are
    not UTF-8 (Python holds them as lone surrogates, which ffmpeg-python cannot encode)."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(text).decode("utf-8", "backslashreplace")
        raise InputError(f"{shown}: the name holds bytes that are not UTF-8, and ffmpeg "
                         "cannot be given it", "rename that file or folder with a UTF-8 name, "
                         "or write elsewhere (-o, LONGVID_HOME)") from None
    return text


def _failed(stderr: bytes, what: str, writing: Path, returncode: int) -> Exception:
    """ffmpeg's failure as an OSError naming `writing` when the system refused the write
    (full disk, read-only, no permission: the CLI's exit 4), else a RuntimeError."""
    if returncode == -signal.SIGXFSZ:  # killed for passing the file-size limit (ulimit -f)
        return OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(writing))
    text = stderr.decode(errors="replace")
    for message, code in _OS_REFUSALS.items():
        if message in text:
            return OSError(code, os.strerror(code), str(writing))
    tail = text.strip().splitlines()[-3:]
    return RuntimeError(f"ffmpeg failed to {what}: " + " | ".join(tail))


def _run(stream: Any, what: str, writing: Path) -> str:
    proc = stream.run_async(cmd=ffmpeg_exe(), pipe_stdout=True, pipe_stderr=True)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise _failed(err, what, writing, proc.returncode)
    return err.decode(errors="replace")


def encode_frames(frames: Any, path: Path, fps: int, crf: int,
                  size: tuple[int, int] | None = None) -> None:
    """uint8 (F, H, W, 3) -> H.264 mp4 at `path` (atomic); `size` (W, H) rescales."""
    import ffmpeg

    count, height, width, _ = frames.shape
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
    stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}",
                          framerate=fps)
    if size is not None and size != (width, height):
        stream = stream.filter("scale", size[0], size[1], flags="bicubic")
    out = stream.output(ffmpeg_path(tmp), crf=crf, r=fps, video_track_timescale=fps * 1000,
                        **ENCODE_ARGS).overwrite_output().global_args("-nostdin")
    proc = out.run_async(cmd=ffmpeg_exe(), pipe_stdin=True, pipe_stderr=True, quiet=True)
    _, err = proc.communicate(input=frames.tobytes())
    if proc.returncode != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        raise _failed(err, f"encode {count} frames", path, proc.returncode)
    os.replace(tmp, path)


def reencode_video(source: Path, path: Path, fps: int, crf: int,
                   size: tuple[int, int] | None = None) -> None:
    """Re-encode a clip with the segment settings so it can be joined by stream copy;
    scaled to `size`, if given, in square pixels."""
    import ffmpeg

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
    stream = ffmpeg.input(ffmpeg_path(source)).video
    if size is not None:
        stream = stream.filter("scale", size[0], size[1], flags="bicubic").filter("setsar", 1)
    out = stream.output(
        ffmpeg_path(tmp), crf=crf, r=fps, video_track_timescale=fps * 1000, **ENCODE_ARGS)
    try:
        _run(out.overwrite_output().global_args("-nostdin"), f"re-encode {source}", path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def concat(videos: list[Path], path: Path, *, fps: int, total_frames: int,
           audio: tuple[Path, float] | None = None, metadata: dict[str, str] | None = None,
           list_file: Path) -> None:
    """Join segment mp4s by stream copy; mux `audio` (path, offset_s) cut or padded to fit.
    The result replaces `path` only once it holds `total_frames` frames."""
    import ffmpeg

    lines = ["ffconcat version 1.0"] + [_concat_entry(v, list_file.parent) for v in videos]
    list_file.write_text("\n".join(lines) + "\n")
    duration = total_frames / fps
    video = ffmpeg.input(ffmpeg_path(list_file), format="concat", safe=0).video
    streams, args = [video], {"c:v": "copy"}
    if audio is not None:
        source, offset_s = audio
        sound = ffmpeg.input(ffmpeg_path(source), ss=offset_s).audio.filter("apad")
        streams.append(sound)
        args |= {"c:a": "aac", "b:a": "192k"}
    for i, (key, value) in enumerate((metadata or {}).items()):
        args[f"metadata:g:{i}"] = f"{key}={_tag(value)}"
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    out = ffmpeg.output(*streams, ffmpeg_path(tmp), t=f"{duration:.6f}",
                        movflags="+faststart+use_metadata_tags", **args)
    try:
        _run(out.overwrite_output().global_args("-nostdin"), f"write {path}", path)
        _check_join(tmp, path, fps, total_frames)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def _tag(value: str) -> str:
    """A metadata value ffmpeg's argv can carry: no control characters (a NUL cannot be
    passed at all), valid UTF-8 (a title taken from a file name whose bytes are not:
    each such byte becomes U+FFFD), at most MAX_TAG_CHARS characters."""
    text = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    clean = _CONTROL.sub(" ", text)
    return clean if len(clean) <= MAX_TAG_CHARS else clean[:MAX_TAG_CHARS - 1] + "…"


def _concat_entry(video: Path, folder: Path) -> str:
    """One `file` line of an ffconcat list. Relative to the list's folder (the run
    directory), so the user's file names never reach it; quoted for any that do."""
    name = os.path.relpath(video.resolve(), folder.resolve())
    if "\n" in name or "\r" in name:
        raise InputError(f"{video}: a line break in a path cannot be joined by ffmpeg",
                         "rename the folder or file without the line break")
    return "file '" + name.replace("'", "'\\''") + "'"


def _check_join(joined: Path, path: Path, fps: int, total_frames: int) -> None:
    """The joined file decodes as a video of exactly the planned frames."""
    keep = f"{path} was left as it was"
    hint = ("run the same command again: the run directory is checked and what is damaged "
            "is rendered again; if this repeats, add --fresh")
    try:
        info = probe(joined)
    except InputError as exc:
        raise LongvidError(f"the joined video is unreadable ({exc.message}); {keep}",
                           hint) from None
    if info.frames != total_frames:
        raise LongvidError(f"the joined video holds {info.frames} frames where the plan has "
                           f"{total_frames}; {keep}", hint)


# -- reading -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaInfo:
    width: int
    height: int
    fps: Fraction
    frames: int
    duration_s: float
    has_audio: bool
    tags: dict[str, str]
    sample_aspect: Fraction = Fraction(1)  # a stored pixel's width over its height


_VIDEO = re.compile(r"Stream #\S+.*?: Video: .*?, (\d{1,5})x(\d{1,5})\b.*?, ([\d.]+(?:/\d+)?) fps")
_DURATION = re.compile(r"Duration: (\d+):(\d+):([\d.]+)")
_FRAME = re.compile(r"frame=\s*(\d+)")
_TAG = re.compile(r"^\s{4}(\w+)\s*: (.*)$")
# a phone clip's orientation: the stream's display matrix, which ffmpeg applies on decode
_ROTATION = re.compile(r"(?i)display ?matrix: rotation of (-?[\d.]+) degrees")
# pixels that are not square (DV, broadcast, some phones): "30x24 [SAR 4:3 DAR 5:3]"
_SAR = re.compile(r"\[SAR (\d+):(\d+) DAR")


def probe(path: Path) -> MediaInfo:
    """What a video file holds, or InputError if it is missing, empty or not a video.
    Width and height are the picture as shown: a clip whose display matrix turns it a
    quarter (a phone held upright) has them swapped, as ffmpeg decodes it upright, and a
    clip of pixels that are not square is as wide as a player shows it.

    One ffmpeg run: the stream header it prints, and the frames it counts while
    stream-copying the video to the null muxer."""
    import ffmpeg

    if not path.is_file() or path.stat().st_size == 0:
        what = ("empty file" if path.is_file() else "a folder, not a video file"
                if path.is_dir() else "file not found")
        raise InputError(f"{path}: {what}", "pass an existing, non-empty video file")
    count = (ffmpeg.input(ffmpeg_path(path)).output("-", format="null", map="0:v:0", c="copy")
             .global_args("-hide_banner", "-nostdin"))
    try:
        _, raw = count.run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as exc:
        raw = exc.stderr or b""
    info = raw.decode(errors="replace")
    m = _VIDEO.search(info)
    if m is None:
        raise InputError(f"{path}: no readable video stream (corrupt or not a video)",
                         "check that the file plays; re-export it as H.264 mp4 if needed")
    frames = [int(x) for x in _FRAME.findall(info)]
    if not frames or frames[-1] == 0:
        raise InputError(f"{path}: the video stream has no frames (corrupt or truncated)",
                         "check that the file plays; re-export it if needed")
    d = _DURATION.search(info)
    duration = int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3)) if d else 0.0
    header = info.split("Stream #", 1)[0]
    tags = {t.group(1).lower(): t.group(2).strip() for t in map(_TAG.match, header.splitlines())
            if t}
    inputs = info.split("Output #", 1)[0]
    width, height = int(m.group(1)), int(m.group(2))
    sar = _SAR.search(m.group(0))
    sample_aspect = Fraction(int(sar.group(1)), int(sar.group(2))) if sar and int(
        sar.group(1)) and int(sar.group(2)) else Fraction(1)  # 0:1 says "unknown"
    if sample_aspect != 1:
        width = max(1, round(width * sample_aspect))  # as wide as a player shows it
    stream = info[m.end():].split("Stream #", 1)[0].split("Output #", 1)[0]
    if (turn := _ROTATION.search(stream)) and round(float(turn.group(1)) / 90) % 2:
        width, height = height, width  # shown (and decoded) upright: portrait stays portrait
    return MediaInfo(width=width, height=height, fps=Fraction(m.group(3)),
                     frames=frames[-1], duration_s=duration, has_audio=" Audio: " in inputs,
                     tags=tags, sample_aspect=sample_aspect)


def probe_audio(path: Path) -> float:
    """Seconds of the first audio stream, which must exist and decode to the end."""
    import ffmpeg

    decode = (ffmpeg.input(ffmpeg_path(path)).output("-", format="null", map="0:a:0")
              .global_args("-hide_banner", "-nostdin"))
    try:
        _, raw = decode.run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as exc:
        tail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
        raise InputError(f"{path}: no audio stream that decodes ({' '.join(tail)})",
                         "give `audio` a sound file (wav, mp3, m4a, ...) that plays") from None
    d = _DURATION.search(raw.decode(errors="replace"))
    return int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3)) if d else 0.0


def read_frames(path: Path, width: int, height: int, first: int = 0,
                only: list[int] | None = None) -> Any:
    """Decode frames [first, end) (or just the frame numbers in `only`) of the video stream
    to uint8 (F, H, W, 3), scaled to width x height when the file's size differs."""
    import ffmpeg
    import numpy as np

    stream = ffmpeg.input(ffmpeg_path(path)).video
    if only is not None:
        stream = stream.filter("select", "+".join(f"eq(n,{n})" for n in sorted(set(only))))
    elif first:
        stream = stream.filter("select", f"gte(n,{first})")
    stream = stream.filter("scale", width, height, flags="bicubic")
    out = stream.output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
    raw, _ = out.global_args("-nostdin").run(cmd=ffmpeg_exe(), capture_stdout=True,
                                             capture_stderr=True)
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)
