"""`longvid doctor`: what this machine has, and which presets fit it."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from longvid.cli._ui import guarded


def _ram_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) / 2**20
    except (OSError, KeyError, ValueError):
        return None


def collect() -> dict[str, Any]:
    import diffusers
    import torch
    import transformers

    from longvid import __version__
    from longvid.backends import caps_of
    from longvid.budget import policy_for
    from longvid.errors import ResourceError
    from longvid.mux import ffmpeg_exe
    from longvid.presets import available_presets, load_preset

    info: dict[str, Any] = {
        "longvid": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "diffusers": diffusers.__version__, "transformers": transformers.__version__,
        "ram_available_gib": _ram_gib(), "cuda": torch.cuda.is_available(), "gpu": None,
        "vram_free_gib": None,
    }
    if info["cuda"]:
        free, total = torch.cuda.mem_get_info()
        info["gpu"] = torch.cuda.get_device_name(0)
        info["vram_free_gib"], info["vram_total_gib"] = free / 2**30, total / 2**30
    try:
        info["ffmpeg"] = ffmpeg_exe()
    except ResourceError:
        info["ffmpeg"] = None
    home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    info["hf_cache"] = home
    probe_dir = Path(home) if Path(home).exists() else Path.cwd()
    info["disk_free_gib"] = shutil.disk_usage(probe_dir).free / 2**30
    presets = {}
    for name in available_presets():
        p = load_preset(name)
        entry: dict[str, Any] = {"backend": p.backend, "min_vram_gib": p.min_vram_gib}
        if p.memory is None:
            entry |= {"fits": True, "policy": None}
        elif info["vram_free_gib"] is None:
            entry |= {"fits": False, "policy": None}
        else:
            caps = caps_of(p)
            tokens = caps.max_latents * p.resolution[0] * p.resolution[1] // \
                caps.tokens_per_latent_px
            policy = policy_for(info["vram_free_gib"], p.memory, tokens, p.quantization)
            entry |= {"fits": policy.fits and info["vram_free_gib"] >= p.min_vram_gib,
                      "policy": asdict(policy)}
        presets[name] = entry
    info["presets"] = presets
    return info


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Report versions, GPU and free VRAM, RAM, disk, ffmpeg, cache location and fitting presets."""

    def body() -> None:
        info = collect()
        if as_json:
            print(json.dumps(info, indent=2))
            return
        gpu = (f"{info['gpu']} ({info['vram_free_gib']:.1f} GiB free of "
               f"{info['vram_total_gib']:.1f})" if info["gpu"] else "none (CPU only)")
        ram = info["ram_available_gib"]
        rows = [("longvid", info["longvid"]), ("python", info["python"]),
                ("torch", info["torch"]), ("diffusers", info["diffusers"]),
                ("transformers", info["transformers"]), ("GPU", gpu),
                ("RAM available", f"{ram:.1f} GiB" if ram is not None else "unknown"),
                ("disk free", f"{info['disk_free_gib']:.1f} GiB"),
                ("ffmpeg", info["ffmpeg"] or "NOT FOUND: pip install imageio-ffmpeg"),
                ("Hub cache", info["hf_cache"])]
        for key, value in rows:
            print(f"{key:>14}: {value}")
        for name, p in info["presets"].items():
            need = "CPU ok" if not p["min_vram_gib"] else f"needs {p['min_vram_gib']} GiB VRAM"
            if policy := p["policy"]:
                peak = max(stage["peak_gib"] for stage in policy["stages"])
                need += f", est. peak {peak:.1f} GiB: " + ", ".join(
                    f"{s['name']} {s['storage']} {s['weights_gib']:.1f} GiB on {s['placement']}"
                    for s in policy["stages"][:2])
            print(f"{'preset':>14}: {name:<20} {'fits' if p['fits'] else 'does not fit'} "
                  f"({need})")
        sys.stdout.flush()

    guarded(body, as_json)
