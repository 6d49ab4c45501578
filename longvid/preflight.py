"""Before a render binds its run directory: everything it will need, every problem at once.

A refused render changes nothing on disk, and a user fixes all that is wrong in one
round instead of meeting the problems one run at a time: ffmpeg, a GPU and cached
weights for what is still to generate, the output folder, free disk, the audio file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from longvid.budget import LoadPolicy
from longvid.errors import ExitCode, LongvidError, ResourceError
from longvid.plan import Plan
from longvid.presets import Preset
from longvid.vram import available_ram_gib

MIN_FREE_BYTES = 64 * 2**20  # headroom beyond the estimate: records, states, the sidecar
# H.264 at the default CRF keeps well under 1/20 of the raw RGB bytes; segments and the
# joined copy are both on disk at the end
ENCODED_FRACTION = 1 / 20


class Problems(LongvidError):
    """Several reasons a render cannot start; exit 4 if any is a missing resource."""

    def __init__(self, problems: list[LongvidError]) -> None:
        if len(problems) == 1:
            super().__init__(problems[0].message, problems[0].hint)
        else:
            super().__init__(
                f"{len(problems)} problems, nothing was written:\n" + "\n".join(
                    f"  - {p.message}" for p in problems),
                "; ".join(f"({i}) {p.hint}" for i, p in enumerate(problems, 1) if p.hint))
        self.code = (ExitCode.MISSING_RESOURCE if any(p.code == ExitCode.MISSING_RESOURCE
                                                      for p in problems)
                     else ExitCode.INVALID_INPUT)
        self.problems = problems


def check(plan: Plan, preset: Preset, output: Path, run_root: Path, *,
          audio: tuple[Path, float] | None, generates: bool,
          found: Sequence[LongvidError] = (),
          more: Sequence[Callable[[], object]] = (),
          policy: LoadPolicy | None = None) -> list[str]:
    """Raise Problems naming everything that would stop this render; return warnings.
    `generates`: some segment is still to be made (a re-join needs no GPU and no
    weights); `found`: problems the caller met already; `more`: its own checks;
    `policy`: where the components will live (its host RAM is checked)."""
    warnings: list[str] = []
    if generates and policy is not None:
        warnings += host_ram_warnings(policy, available_ram_gib())
    checks: list[Callable[[], object]] = [_ffmpeg,
                                          lambda: _ffmpeg_names(output, run_root, audio),
                                          lambda: _writable(output.parent),
                                          lambda: _writable(run_root.parent),
                                          lambda: _disk(plan, output, run_root), *more]
    if audio is not None:
        checks.append(lambda: _audio(*audio, warnings))
    if generates:
        checks += [lambda: _gpu(preset), lambda: _weights(preset)]
    problems = list(found)
    for run_check in checks:
        try:
            run_check()
        except LongvidError as exc:
            problems.append(exc)
    if problems:
        raise Problems(problems)
    return warnings


def host_ram_warnings(policy: LoadPolicy, available_gib: float | None) -> list[str]:
    """A warning when the weights a placement keeps in host RAM (the streamed components)
    exceed what the system has available: the render would swap, or be killed by the
    system (it resumes). A warning, not a refusal: swap and freed memory may cover it."""
    need = policy.host_weights_gib
    if available_gib is None or need <= available_gib:
        return []
    names = [s.name for s in policy.streamed]
    way_out = ("choose a preset with a quantized text encoder (`-lowvram`), which stays on "
               "the GPU" if "text encoder" in names else
               "give the render more VRAM (--vram), so that less is streamed")
    return [f"this placement keeps {need:.1f} GiB of weights in host RAM ("
            f"{', '.join(names)} streamed through the GPU) and {available_gib:.1f} GiB is "
            "available: expect heavy swapping, or the system stopping the render (run it "
            f"again to resume); close other programs, or {way_out}"]


def _ffmpeg() -> None:
    from longvid.mux import ffmpeg_exe

    ffmpeg_exe()


def _ffmpeg_names(output: Path, run_root: Path, audio: tuple[Path, float] | None) -> None:
    """Every path ffmpeg will be given has a UTF-8 name (segment files live in the run
    directory), checked before the first segment is generated, not at its encode."""
    from longvid.mux import ffmpeg_path

    for path in (output, run_root / "segments", *([audio[0]] if audio else [])):
        ffmpeg_path(path.absolute())


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable(folder: Path) -> None:
    there = _existing(folder)
    if not there.is_dir():
        raise ResourceError(f"cannot create {folder}: {there} is a file, not a folder",
                            "choose another output (-o) or LONGVID_HOME")
    if not os.access(there, os.W_OK | os.X_OK):
        raise ResourceError(f"{there} is not writable, so {folder} cannot be written",
                            "choose a writable place (-o, LONGVID_HOME) or fix the permissions")


def _disk(plan: Plan, output: Path, run_root: Path) -> None:
    raw = plan.total_frames * plan.width * plan.height * 3
    need = int(2 * raw * ENCODED_FRACTION) + MIN_FREE_BYTES
    for folder in (output.parent, run_root.parent):
        there = _existing(folder)
        if there.is_dir() and (free := shutil.disk_usage(there).free) < need:
            raise ResourceError(
                f"{folder}: its disk has {free / 2**20:.0f} MiB free and this render needs "
                f"about {need / 2**20:.0f} MiB", "free disk space, or write elsewhere "
                "(-o, LONGVID_HOME)")


def _audio(path: Path, offset_s: float, warnings: list[str]) -> None:
    from longvid.mux import probe_audio

    length_s = probe_audio(path)
    if offset_s >= length_s:
        warnings.append(f"audio offset {offset_s:g}s is past the end of {path} "
                        f"({length_s:.2f}s): the video will be silent")


def _gpu(preset: Preset) -> None:
    if preset.min_vram_gib <= 0:
        return  # no torch import for a CPU preset
    from longvid.vram import detected_vram_gib

    preset.check_gpu(detected_vram_gib() is not None)


def _weights(preset: Preset) -> None:
    """Offline, every Hub source must be cached; checked by the loader's own function, so
    the message (and its `longvid models pull` command) is the one loading would give."""
    from longvid.hub import is_offline, refuse_pickles, resolve

    for _, src in preset.hub_sources:
        refuse_pickles(src)  # exit 3 whether or not the files are here
    if not preset.hub_sources or not is_offline():
        return  # online, a missing file is downloaded when the model loads
    for _, source in preset.hub_sources:
        resolve(source, preset.cli_name, download=False)
    from longvid.backends.causal_wan import preset_checkpoint
    from longvid.backends.causal_weights import hub_file

    ckpt = preset_checkpoint(preset)  # a causal preset's upstream .pt generator
    for name in ckpt.files if ckpt is not None else ():
        hub_file(ckpt, name, preset.cli_name)  # offline: found in the cache, or exit 4
