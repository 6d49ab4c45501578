"""`longvid doctor`: what this machine has, and which presets fit it."""

from __future__ import annotations

import json
import platform
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from longvid.cli._ui import guarded


def collect(vram_gib: float | None = None) -> dict[str, Any]:
    """The machine, and each preset's fit in `vram_gib` (default: the free VRAM)."""
    import diffusers
    import torch
    import transformers

    from longvid import __version__
    from longvid.errors import ResourceError
    from longvid.hub import hub_cache_dir
    from longvid.mux import ffmpeg_exe
    from longvid.presets import available_presets, load_preset
    from longvid.vram import available_ram_gib, preset_policy

    info: dict[str, Any] = {
        "longvid": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "diffusers": diffusers.__version__, "transformers": transformers.__version__,
        "ram_available_gib": available_ram_gib(), "cuda": torch.cuda.is_available(), "gpu": None,
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
    cache = hub_cache_dir()
    info["hf_cache"] = str(cache)
    probe_dir = next((d for d in (cache, *cache.parents) if d.exists()), Path.cwd())
    info["disk_free_gib"] = shutil.disk_usage(probe_dir).free / 2**30
    budget = vram_gib if vram_gib is not None else info["vram_free_gib"]
    info["vram_budget_gib"] = budget
    presets = {}
    for name in available_presets():
        p = load_preset(name)
        entry: dict[str, Any] = {"backend": p.backend, "min_vram_gib": p.min_vram_gib}
        if p.memory is None:
            entry |= {"fits": True, "policy": None}
        elif budget is None:
            entry |= {"fits": False, "policy": None}
        else:  # the same figure as `plan --vram` for a storyboard filling one window
            policy = preset_policy(p, budget)
            assert policy is not None
            entry |= {"fits": policy.fits and budget >= p.min_vram_gib,
                      "policy": policy.to_dict()}
        presets[name] = entry
    info["presets"] = presets
    return info


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    vram: Annotated[float | None, typer.Option(
        "--vram", min=1, help="GPU memory to check the presets against, in GiB (default: the "
        "free VRAM).")] = None,
) -> None:
    """Report versions, GPU and free VRAM, RAM, disk, ffmpeg, cache location and fitting presets."""

    def body() -> None:
        info = collect(vram)
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
        if (budget := info["vram_budget_gib"]) is not None:
            rows.append(("presets for", f"{budget:.1f} GiB of VRAM, one full window each"))
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
