"""The 12 GB proof: each 12 GB preset at real size with random weights, under a 12 GiB cap.

    python benchmarks/vram_12gb.py [--preset NAME|all] [--vram 12] [--segments 2]
                                   [--json out.json] [--tiny]

Builds the preset's models from the released checkpoints' configs with random
weights (values change neither memory nor FLOPs; checkpoints.py), writes them into
a temporary Hugging Face cache in the Hub's layout holding just the files the preset
downloads (for the GGUF preset a Q8_0 file of the transformer, in its community
repo), and loads them through exactly the path a real download takes, quantization
included (bitsandbytes nf4 UMT5, fp8 layerwise casting, GGUF). On a CUDA GPU it caps
PyTorch's allocator at `--vram` GiB minus 0.6 GiB (CUDA context and desktop of a
real card), plans the VRAM policy for that budget, renders `--segments` windows at
the preset's resolution, and reports the peak reserved memory of each stage (text
encoder, transformer, VAE decode), the median seconds between denoising steps, and
the same transformer's bare forward on that window for comparison. For wan-vace
the transformer stage includes the VAE encode of the control video that precedes
the first step. For anyflow-far a step denoises one causal chunk against a KV cache
the pipeline builds and fills between chunks, so there is no stand-alone forward to
compare with (its transformer's cache-less path is a training rollout): its bare
figure is null (the cache fill after each chunk falls between two of its steps; the
median step time leaves it out).

`--preset all` runs every preset in presets/ that targets a 12 GB GPU (on a GPU each
in a fresh process, so none inherits another's allocator state) and prints one
table. `--tiny` runs the same code on tiny configs on any device (the tests use it);
memory figures are reported only on CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
CONTEXT_GIB = 0.6
TWELVE_GIB = 12


def twelve_gb_presets() -> list[str]:
    """Built-in presets with Hub weights that need a GPU of at most 12 GiB."""
    from checkpoints import FAMILIES

    from longvid.presets import available_presets, load_preset

    presets = [load_preset(name) for name in available_presets()]
    return [p.name for p in presets if p.hub is not None and p.backend in FAMILIES
            and 0 < p.min_vram_gib <= TWELVE_GIB]


def tiny_preset(preset: Any, work: Path) -> Any:
    """The preset at test size: same backend, hub sources and quantization."""
    import yaml

    from longvid.presets import load_preset

    data = yaml.safe_load(Path(preset.source).read_text())
    data.update(resolution="32x32", steps=2, min_vram_gib=0)
    data["options"] = data.get("options", {}) | {"max_sequence_length": 16, "max_latents": 5,
                                                 "context_latents": 2}
    path = work / f"{preset.name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_preset(str(path))


def bare_forward(backend: Any, plan: Any) -> Any:
    """A call of the backend's transformer on the last window, as one step makes it; None
    where no stand-alone call does a step's work."""
    import torch

    seg = plan.segments[-1]
    window = seg.context_latents + seg.num_latents
    h, w = plan.height // 8, plan.width // 8
    dev, dtype = backend.device, backend.dtype
    emb = backend.prompts[seg.prompt].to(dev, dtype)
    model = backend.transformer
    if backend.name == "skyreels-df":
        x = torch.randn(1, 16, window, h, w, device=dev, dtype=dtype)
        ts = torch.full((1, window), 500, dtype=torch.long, device=dev)
        return lambda: model(x, timestep=ts, encoder_hidden_states=emb,
                             enable_diffusion_forcing=True, fps=[1], return_dict=False)
    if backend.name == "wan-vace":
        x = torch.randn(1, 16, window, h, w, device=dev, dtype=dtype)
        control = torch.randn(1, model.config.vace_in_channels, window, h, w, device=dev,
                              dtype=dtype)
        scale = torch.ones(len(model.config.vace_layers), device=dev, dtype=dtype)
        t = torch.tensor([500.0], device=dev)
        return lambda: model(hidden_states=x, timestep=t, encoder_hidden_states=emb,
                             control_hidden_states=control, control_hidden_states_scale=scale,
                             return_dict=False)
    return None  # anyflow-far: a step is one chunk against the pipeline's KV cache


def run_one(name: str, vram: float, segments: int, tiny: bool) -> dict:
    import torch
    from checkpoints import install_preset, storage_of

    from longvid.backends import backend_class, caps_of
    from longvid.backends.base import SegmentRequest
    from longvid.budget import policy_for
    from longvid.presets import load_preset
    from longvid.render import load_job

    cuda = torch.cuda.is_available()
    if cuda:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction((vram - CONTEXT_GIB) * 2**30 / total)
        torch.backends.cuda.enable_math_sdp(False)  # flash/mem-efficient attention only

    work = Path(tempfile.mkdtemp(prefix="longvid-vram-"))
    os.environ.update(HF_HUB_CACHE=str(work / "hub"), HF_HUB_OFFLINE="1",
                      LONGVID_HOME=str(work / "home"))
    preset = load_preset(name)
    if tiny:  # same code, tiny shapes, any device
        preset = tiny_preset(preset, work)
    t0 = time.perf_counter()
    (work / "hub").mkdir()
    install_preset(work / "hub", preset, tiny=tiny)
    build_s = time.perf_counter() - t0

    # 1. a storyboard of exactly `segments` full windows
    backend = backend_class(preset.backend)()
    caps = caps_of(preset)
    window, ctx = caps.max_latents, caps.context_latents
    latents = window + (segments - 1) * (window - ctx)
    storyboard = work / "bench.yaml"
    storyboard.write_text("version: 1\nshots: [{id: a, prompt: a harbour at dusk, "
                          f"duration: {4 * latents - 3}f}}]\n")
    _, preset, plan = load_job(storyboard, str(preset.source))
    policy = policy_for(vram, preset.memory, plan.max_tokens, preset.quantization) \
        if cuda else None

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def reset() -> None:
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak() -> float | None:
        return torch.cuda.max_memory_reserved() / 2**30 if cuda else None

    # 2. load, encode the prompts (text encoder stage)
    backend.load(preset, policy)
    storage = storage_of(backend.transformer)  # what really got loaded
    reset()
    t0 = time.perf_counter()
    backend.prepare(sorted({s.prompt for s in plan.segments}), "", preset.guidance_scale)
    prepare_s = time.perf_counter() - t0
    stages: dict[str, float | None] = {"text encoder": peak()}

    # 3. the windows (transformer stage until the last step, then the VAE decode)
    context, seg_s, transformer_peak, vae_peak = None, [], [], []
    marks: list[float] = []
    for seg in plan.segments:
        marks = []

        def on_step(i: int, n: int, marks: list = marks) -> None:
            sync()
            marks.append(time.perf_counter())
            if i == n:
                transformer_peak.append(peak())
                reset()

        reset()
        t0 = time.perf_counter()
        out = backend.generate(SegmentRequest(
            prompt=seg.prompt, negative_prompt="",
            num_latents=seg.num_latents, context=context, width=plan.width,
            height=plan.height, seed=seg.seed, steps=plan.steps,
            guidance_scale=plan.guidance_scale, fps=plan.fps), on_step)
        seg_s.append(time.perf_counter() - t0)
        vae_peak.append(peak())
        context = out.latents[:, :, -plan.context_latents:]
    stages["transformer"] = max(transformer_peak) if cuda else None
    stages["vae"] = max(vae_peak) if cuda else None
    steps = [b - a for a, b in zip(marks, marks[1:], strict=False)]  # the last window's

    # 4. the bare transformer, as the floor for a step's time
    step_s, bare_step_s = statistics.median(steps), None
    if forward := bare_forward(backend, plan):
        with torch.no_grad():
            forward()  # warm-up
            sync()
            t0 = time.perf_counter()
            for _ in range(3):
                forward()
            sync()
        forwards = 2 if plan.guidance_scale > 1 else 1  # CFG: two separate calls per step
        bare_step_s = (time.perf_counter() - t0) / 3 * forwards
    return {
        "benchmark": "vram_12gb", "date": time.strftime("%Y-%m-%d"), "preset": name,
        "backend": preset.backend, "tiny": tiny,
        "quantization": {"text_encoder": preset.quantization.text_encoder,
                         "transformer": preset.quantization.transformer_storage},
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "vram_cap_gib": vram if cuda else None,
        "resolution": f"{plan.width}x{plan.height}", "window_tokens": plan.max_tokens,
        "segments": len(plan.segments), "steps": plan.steps,
        "policy": {"text_encoder": policy.text_encoder, "transformer": policy.transformer,
                   "estimated_peak_gib": round(policy.peak_gib, 2)} if policy else None,
        "transformer_storage": storage,
        "peak_reserved_gib": {k: (round(v, 2) if v is not None else None)
                              for k, v in stages.items()},
        "checkpoint_build_s": round(build_s, 1), "prepare_s": round(prepare_s, 2),
        "segment_s": [round(s, 2) for s in seg_s],
        "s_per_step": round(step_s, 4),
        "bare_transformer_s_per_step": round(bare_step_s, 4) if bare_step_s else None,
        "step_overhead_pct": round(100 * (step_s / bare_step_s - 1), 1) if bare_step_s
        else None,
    }


def run_all(args: argparse.Namespace) -> dict:
    """Every 12 GB preset. On a GPU each in a fresh process, so that no preset inherits
    another's allocator state or peak statistics; on a CPU (nothing to isolate) here."""
    import torch

    runs = []
    for name in twelve_gb_presets():
        if torch.cuda.is_available():
            runs.append(run_in_child(name, args))
            continue
        try:
            runs.append(run_one(name, args.vram, args.segments, args.tiny))
        except Exception as exc:  # noqa: BLE001 - one preset's failure is a row of the table
            traceback.print_exc()
            runs.append({"preset": name, "error": f"{type(exc).__name__}: {exc}"})
    return {"benchmark": "vram_12gb", "tiny": args.tiny, "runs": runs}


def run_in_child(name: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        cmd = [sys.executable, __file__, "--preset", name, "--vram", str(args.vram),
               "--segments", str(args.segments), "--json", str(out)]
        done = subprocess.run(cmd + (["--tiny"] if args.tiny else []),
                              stdout=subprocess.DEVNULL)
        return json.loads(out.read_text()) if done.returncode == 0 \
            else {"preset": name, "error": f"exit {done.returncode}"}


def table(runs: list[dict]) -> str:
    def gib(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    lines = ["| preset | storage (TE / DiT) | TE GiB | DiT GiB | VAE GiB | planned GiB "
             "| s/step | bare s/step | overhead |", "|---" * 9 + "|"]
    for r in runs:
        if "error" in r:
            lines.append(f"| {r['preset']} | failed: {r['error']} |" + " |" * 7)
            continue
        q, p = r["quantization"], r["peak_reserved_gib"]
        planned = gib(r["policy"]["estimated_peak_gib"]) if r["policy"] else "-"
        overhead = "-" if r["step_overhead_pct"] is None else f"{r['step_overhead_pct']} %"
        lines.append(f"| {r['preset']} | {q['text_encoder']} / {q['transformer']} | "
                     f"{gib(p['text encoder'])} | {gib(p['transformer'])} | {gib(p['vae'])} | "
                     f"{planned} | {r['s_per_step']} | {r['bare_transformer_s_per_step'] or '-'} | "
                     f"{overhead} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="skyreels-df-1.3b", help="a preset name, or all")
    parser.add_argument("--vram", type=float, default=12.0)
    parser.add_argument("--segments", type=int, default=2)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    if args.preset == "all":
        result = run_all(args)
        print(table(result["runs"]))
    else:
        result = run_one(args.preset, args.vram, args.segments, args.tiny)
        print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if any("error" in r for r in result.get("runs", [])):
        sys.exit(1)


if __name__ == "__main__":
    main()
