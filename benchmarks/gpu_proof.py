"""The 12 GiB proof: every Hub preset at real size, random weights, under a hard cap.

    python benchmarks/gpu_proof.py --group 1 --json proof-1.json   # about 4.8 min, one H100
    python benchmarks/gpu_proof.py --group 2 --json proof-2.json   # about 4.7 min
    python benchmarks/gpu_proof.py --group 3 --json proof-3.json   # about 3.8 min
    python benchmarks/gpu_proof.py --group 4 --json proof-4.json   # about 4.6 min
    python benchmarks/gpu_proof.py --all --jobs 3 --json proof.json # every preset, 3 at once
    python benchmarks/gpu_proof.py --list                          # the groups, estimates
    python benchmarks/gpu_proof.py --tiny                          # CPU, tiny models, all
    python benchmarks/gpu_proof.py --preset NAME [--tiny]          # one preset, this process

Covers every preset with a `hub:` section, found through the preset list, so a preset
added later is in it. A preset whose backend has no random-weight recipe in
checkpoints.py is named in the table and the JSON as NOT COVERED (today: none), never
silently left out; groups hold only the presets it can build. For the causal-wan
presets the recipe writes the Wan2.1 snapshot and the upstream generator `.pt` (and
LongLive's PEFT LoRA) in the layout causal_weights.py reads, so their load includes
the one-time conversion to safetensors. For each preset, in a process of its own:

1. builds the models on the meta device and fills them in place on the GPU (no CPU
   random init), and writes only the files the preset's load path reads (no GGUF
   preset's transformer safetensors) into a Hub cache on RAM-backed storage
   (/dev/shm when it has room), weight blobs named without SHA-256 (configs and
   tokenizers are hashed, as longvid checks them); the work folder is deleted
   when the preset is done, whatever happens;
2. caps PyTorch's allocator at CAP_GIB (12 GiB less the CUDA context and a desktop),
   plans with that cap exactly as `render --vram 11.4` does, with the allocator set as
   the CLI sets it (budget.ALLOCATOR_CONF), and checks once that the cap is enforced;
3. loads through the real `backend.load`, then `prepare` encodes the prompts where the
   plan puts the text encoder, with the transformer and VAE already resident;
4. renders two windows of PROOF_STEPS steps (a few-step preset: its own steps): a
   take's first full window, then a full window with context and the planned maximum
   of memory latents (the plan's largest sequence), and a causal preset's sink;
5. times a bare transformer forward on the second window for the overhead ratio.

Per stage (load, text encoder, transformer, vae) it reports the allocator's allocated
and reserved peaks, the driver-level peak (sampled `mem_get_info`: the CUDA context,
kernels and library handles the cap does not see), allocator retries and OOMs. The
transformer stage runs to the last step's callback, so for wan-vace it includes the
VAE encode of the control video before the first step. Seconds per step are the
median of steps 2-3 of the second window (the few-step presets: every chunk step
after the first); `window_s_at_preset_steps` extrapolates them to the preset's steps.

Estimated seconds per preset on one H100 (import ~10, build/write ~10 of which UMT5
~8, load ~15, prompts ~5, two windows and decodes, bare forward, cleanup):
    anyflow-far-1.3b          170  (compile of the repeated blocks ~60-120 of it)
    skyreels-df-1.3b           85  (55k tokens: 3 steps x 2 forwards x ~1.4 s a window)
    skyreels-df-1.3b-gguf-q8   95  (Q8_0 quantized on the GPU, ~3)
    skyreels-df-1.3b-lowvram   95  (bitsandbytes quantizes UMT5 while loading, ~10)
    wan-vace-1.3b              95  (36k tokens, 2 control encodes per window)
    longlive-1.3b             120  (.pt + LoRA written ~5, converted on the CPU ~25;
                                    11 blocks x 4 steps of 4.7k tokens a window)
    self-forcing-1.3b         110  (as longlive-1.3b without the LoRA)
    memflow-1.3b              130  (as longlive-1.3b, plus the bank's retrieval)
    mag-1.3b                  170  (two transformers written and converted; a
                                    window replays 21 context blocks through the
                                    streamed memory model)
A preset without an entry counts DEFAULT_ESTIMATE_S. Groups are packed from these,
largest first, into GROUP_BUDGET_S each, so one failing command loses no other; with
today's presets (1080 s in all, so four commands): group 1 = anyflow-far-1.3b,
longlive-1.3b (~290 s), group 2 = mag-1.3b, self-forcing-1.3b (~280 s), group 3 =
memflow-1.3b, skyreels-df-1.3b-gguf-q8 (~225 s), group 4 = skyreels-df-1.3b-lowvram,
wan-vace-1.3b, skyreels-df-1.3b (~275 s).
Measured on one H100 with four presets at once (2026-11-27): skyreels-df-1.3b and
skyreels-df-1.3b-lowvram took 154 and 153 s whole; the causal presets reached their
first block in 56-82 s; on 2026-11-28, four at once, the seven others took 89-196 s
whole (mag-1.3b the longest, anyflow-far-1.3b 177-183 s with its compiling). Give each
command `timeout_s` 330,
and run each group right after the one before (the machine idles out in 30 s).

`--jobs N` runs N presets at once on the one GPU (with `--all`: every preset, longest
first), for a lent GPU whose time will not hold the groups one after another. Each
process keeps its own 11.4 GiB cap, so the allocator peaks are what they are alone; the
driver-level peak is the process's own where NVML lists it, else it is left out; CPU
threads are split between the processes; the presets take RAM-backed storage while it
has room for them (and the host RAM their loads need), the temp dir otherwise. Seconds
per step are then measured with N-1 other presets on the GPU and the CPU: each row
says how many ran beside it, and those timings are upper bounds, not the card's speed.

`--tiny` runs the same code with tiny models (2-layer configs, 32x32) on the CPU in
under 3 minutes for all presets; memory figures are reported only on CUDA. On a GPU
machine without diffusers, bitsandbytes or gguf, carry the wheels that
benchmarks/gpu_wheels.sh builds (the exact device commands: docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proof_report import Meter, table, worst  # noqa: E402

CAP_GIB = 11.4  # a 12 GiB card less ~0.6 GiB of CUDA context and desktop
FIT_GIB = 11.5  # what a preset's every peak must stay under
CARD_GIB = 12.0  # the cap for a preset planned over CAP_GIB: the whole card, no desktop
PROOF_STEPS = 3  # the peak is at the first forward; steps 2-3 give s/step
FEW_STEP_PRESET = 4  # presets of at most this many steps run all of them
ESTIMATE_S = {"anyflow-far-1.3b": 170, "skyreels-df-1.3b": 85, "skyreels-df-1.3b-gguf-q8": 95,
              "skyreels-df-1.3b-lowvram": 95, "wan-vace-1.3b": 95, "longlive-1.3b": 120,
              "self-forcing-1.3b": 110, "memflow-1.3b": 130, "mag-1.3b": 170}
DEFAULT_ESTIMATE_S = 150
GROUP_BUDGET_S = 290  # under 5 minutes per command
SHM = Path("/dev/shm")
# real size: UMT5 11.4 GB + a transformer 2.9-4.3 GB (causal-wan: .pt, LoRA and the
# converted safetensors, 6.3 GB) + VAE + headroom
WORK_GIB = 22
GIB = 2**30


def hub_presets() -> list[Any]:
    """Every preset that downloads from the Hub, by name."""
    from longvid.presets import available_presets, load_preset

    return [p for p in (load_preset(n) for n in available_presets()) if p.hub is not None]


def not_covered(preset: Any) -> str | None:
    """Why the proof cannot build `preset`'s models with random weights, or None."""
    from checkpoints import FAMILIES

    if preset.backend in FAMILIES:
        return None
    return (f"NOT COVERED: no random-weight recipe for backend {preset.backend!r} in "
            "benchmarks/checkpoints.py (FAMILIES, REAL_TRANSFORMER, TINY_TRANSFORMER)")


def groups(names: list[str]) -> list[list[str]]:
    """First-fit decreasing by estimated seconds into groups of GROUP_BUDGET_S."""
    packed: list[list[str]] = []
    for name in sorted(names, key=lambda n: (-ESTIMATE_S.get(n, DEFAULT_ESTIMATE_S), n)):
        cost = ESTIMATE_S.get(name, DEFAULT_ESTIMATE_S)
        for group in packed:
            if sum(ESTIMATE_S.get(n, DEFAULT_ESTIMATE_S) for n in group) + cost <= GROUP_BUDGET_S:
                group.append(name)
                break
        else:
            packed.append([name])
    return packed


def work_root(tiny: bool) -> Path:
    """RAM-backed storage when it has room for a preset's files, else the temp dir."""
    need = 0.1 if tiny else WORK_GIB
    if SHM.is_dir() and shutil.disk_usage(SHM).free >= need * GIB:
        return SHM
    return Path(tempfile.gettempdir())


def shm_slots(jobs: int, tiny: bool) -> int:
    """How many of `jobs` concurrent presets RAM-backed storage can hold: its free space,
    and the host RAM left once every process has its loaded weights (~16 GiB each)."""
    if tiny or not SHM.is_dir():
        return jobs if SHM.is_dir() else 0
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text()
                      .splitlines())
        available_gib = int(fields["MemAvailable"].split()[0]) / 2**20
    except (OSError, KeyError, ValueError):
        return 1
    by_ram = int((available_gib - 16 * jobs) // WORK_GIB)
    return max(0, min(jobs, int(shutil.disk_usage(SHM).free / GIB // WORK_GIB), by_ram))


def tiny_preset(preset: Any, work: Path) -> Any:
    """The preset at test size: same backend, hub sources, quantization and steps."""
    import yaml

    from longvid.presets import load_preset

    data = yaml.safe_load(Path(preset.source).read_text())
    data.update(resolution="32x32", min_vram_gib=0)
    data["options"] = data.get("options", {}) | {"max_sequence_length": 16, "max_latents": 5,
                                                 "context_latents": 2}
    path = work / f"{preset.name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_preset(str(path))


def proof_plan(preset: Any, work: Path) -> Any:
    """The plan of two full windows, a take's first and a continuation, as `render` makes
    it: its largest sequence (context, new and memory latents) is the one the proof runs."""
    from longvid.backends import caps_of
    from longvid.render import load_job

    caps = caps_of(preset)
    latents = caps.max_latents + (caps.max_latents - caps.context_latents)
    storyboard = work / "proof.yaml"
    storyboard.write_text("version: 1\nshots: [{id: a, prompt: a harbour at dusk, "
                          f"duration: {caps.latent_stride_t * (latents - 1) + 1}f}}]\n")
    return load_job(storyboard, str(preset.source))[2]


def bare_forward(backend: Any, request: Any) -> Any:
    """The backend's transformer called on `request`'s whole window as one step calls it;
    None where no stand-alone call does a step's work (a causal chunk against a KV cache)."""
    import torch

    m = 0 if request.memory is None else request.memory.shape[2]
    window = m + request.context.shape[2] + request.num_latents
    h, w = request.height // 8, request.width // 8
    dev, dtype, model = backend.device, backend.dtype, backend.transformer
    emb = backend.prompts[request.prompt].to(dev, dtype)
    x = torch.randn(1, 16, window, h, w, device=dev, dtype=dtype)
    if backend.name == "skyreels-df":
        ts = torch.full((1, window), 500, dtype=torch.long, device=dev)
        return lambda: model(x, timestep=ts, encoder_hidden_states=emb,
                             enable_diffusion_forcing=True, fps=[1], return_dict=False)
    if backend.name == "wan-vace":
        control = torch.randn(1, model.config.vace_in_channels, window, h, w, device=dev,
                              dtype=dtype)
        scale = torch.ones(len(model.config.vace_layers), device=dev, dtype=dtype)
        t = torch.tensor([500.0], device=dev)
        return lambda: model(hidden_states=x, timestep=t, encoder_hidden_states=emb,
                             control_hidden_states=control, control_hidden_states_scale=scale,
                             return_dict=False)
    return None


def measure(name: str, tiny: bool, root: Path | None = None, jobs: int = 1) -> dict:
    """One preset, in this process; its work folder is gone when this returns."""
    work = Path(tempfile.mkdtemp(prefix=f"longvid-proof-{name}-", dir=root or work_root(tiny)))
    try:
        os.environ.update(HF_HUB_CACHE=str(work / "hub"), HF_HUB_OFFLINE="1",
                          LONGVID_HOME=str(work / "home"))
        return _measure(name, tiny, work, jobs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(name: str, tiny: bool, work: Path, jobs: int) -> dict:
    import torch
    from checkpoints import install_preset, storage_of

    from longvid.backends import backend_class, caps_of
    from longvid.backends.base import SegmentRequest
    from longvid.presets import load_preset
    from longvid.vram import choose_policy, plan_policy

    if jobs > 1:  # the CPU shared with the other presets' processes
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))
    preset = load_preset(name)
    if gap := not_covered(preset):
        raise RuntimeError(gap)
    if tiny:
        preset = tiny_preset(preset, work)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"

    # 1. random weights, built on the device, written where the load path reads them
    t0 = time.perf_counter()
    (work / "hub").mkdir()
    install_preset(work / "hub", preset, tiny=tiny, device=device, work=work)
    build_s = time.perf_counter() - t0

    # 2. the plan, as render makes it; the cap, checked once
    caps = caps_of(preset)
    window, ctx, mem = caps.max_latents, caps.context_latents, caps.memory_latents
    plan = proof_plan(preset, work)
    cap = CAP_GIB
    planned = plan_policy(preset, plan, cap)  # the figures `plan --vram 11.4` prints
    assert planned is not None  # every Hub preset has `memory:` figures
    if cuda and not planned.fits:  # planned over the proof's cap (mag-1.3b): measured on a
        cap = CARD_GIB  # whole 12 GiB card, and the table says it does not fit 11.4
        planned = plan_policy(preset, plan, cap)
        assert planned is not None
    cap_enforced = None
    if cuda:
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(cap * GIB / total)
        try:
            torch.empty(int((cap + 0.25) * GIB), dtype=torch.uint8, device="cuda")
            cap_enforced = False
        except torch.cuda.OutOfMemoryError:
            cap_enforced = True
        torch.cuda.empty_cache()
    # render would stop with exit 4 where the plan does not fit even 12 GiB (mag-1.3b at
    # 480p): the proof measures its leanest placement under the cap all the same
    policy = (choose_policy(preset, plan, cap) if planned.fits else planned) if cuda else None

    meter, stages = Meter(cuda, shared=jobs > 1), {}
    base = {
        "benchmark": "gpu_proof", "date": time.strftime("%Y-%m-%d"), "preset": name,
        "backend": preset.backend, "tiny": tiny,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__, "cap_gib": cap if cuda else None,
        "cap_enforced": cap_enforced, "work_dir": str(work.parent),
        "concurrent": jobs, "driver_scope": meter.scope if cuda else None,
        "quantization": {"text_encoder": preset.quantization.text_encoder,
                         "transformer": preset.quantization.transformer_storage},
        "resolution": f"{plan.width}x{plan.height}", "window_tokens": plan.max_tokens,
        "memory_latents": mem, "preset_steps": preset.steps, "build_s": round(build_s, 1),
        "policy": {"text_encoder": planned.text_encoder, "transformer": planned.transformer,
                   "stages_gib": {s.name: round(s.peak_gib, 2) for s in planned.stages}},
    }
    stage = ["load"]  # the stage running now, for a failure's row
    try:
        # 3. load, then the prompts with the transformer and VAE resident
        backend = backend_class(preset.backend)()
        meter.start()
        t0 = time.perf_counter()
        backend.load(preset, policy)
        load_s = time.perf_counter() - t0
        stages["load"] = meter.stop()
        prompts = ["a harbour at dusk", "the harbour at night, lanterns on the water"]
        stage[0] = "text encoder"
        meter.start()
        t0 = time.perf_counter()
        backend.prepare(prompts, plan.negative_prompt, preset.guidance_scale)
        prepare_s = time.perf_counter() - t0
        stages["text encoder"] = meter.stop()

        # 4. two windows: a take's first, then context + the planned memory
        steps = preset.steps if preset.steps <= FEW_STEP_PRESET else PROOF_STEPS
        out, window_s, marks, transformer, vae = None, [], [], None, None
        requests = []
        for k, prompt in enumerate(prompts):
            context = None if out is None else out.latents[:, :, -ctx:]
            memory = None  # as the loop passes recalled keyframes: latents, or frames
            if out is not None and mem:
                memory = tuple(out.frames[:mem]) if caps.memory and caps.memory.frames else \
                    out.latents[:, :, :mem]
            # the take's first latents, as the render loop carries them for a cache's sink
            sink = out.latents[:, :, :min(caps.sink.latents, window - ctx)] \
                if out is not None and caps.sink is not None else None
            request = SegmentRequest(
                prompt=prompt, negative_prompt=plan.negative_prompt,
                num_latents=window - (ctx if context is not None else 0), context=context,
                width=plan.width, height=plan.height, seed=k, steps=steps,
                guidance_scale=preset.guidance_scale, fps=plan.fps, memory=memory, sink=sink)
            requests.append(request)
            marks = []
            peaks: dict[str, Any] = {}

            def on_step(i: int, n: int, marks: list = marks, peaks: dict = peaks) -> None:
                if cuda:
                    torch.cuda.synchronize()
                marks.append(time.perf_counter())
                if i == n:
                    peaks["transformer"], peaks["n"] = meter.stop(), n
                    stage[0] = "vae"
                    meter.start()

            stage[0] = "transformer"
            meter.start()
            t0 = time.perf_counter()
            out = backend.generate(request, on_step)
            window_s.append(time.perf_counter() - t0)
            transformer, vae = worst(transformer, peaks["transformer"]), worst(vae, meter.stop())
        stages |= {"transformer": transformer, "vae": vae}
        per_step = [b - a for a, b in zip(marks, marks[1:], strict=False)]
        step_s = statistics.median(per_step) if per_step else window_s[-1] / steps

        # 5. the bare transformer on the second window, once warm
        bare_s = None
        if forward := bare_forward(backend, requests[-1]):
            with torch.no_grad():
                forward()
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                forward()
                if cuda:
                    torch.cuda.synchronize()
            bare_s = (time.perf_counter() - t0) * (2 if preset.guidance_scale > 1 else 1)
    except Exception as exc:  # on a GPU a stage's failure is a result: its peak, its cause
        if not cuda:
            raise
        traceback.print_exc()
        stages[stage[0]] = meter.stop()  # the peak up to the failure
        cause = exc.__context__ if exc.__suppress_context__ and exc.__context__ else exc
        oom = isinstance(cause, torch.cuda.OutOfMemoryError)
        what = "out of memory" if oom else f"{type(cause).__name__}: {str(cause)[:200]}"
        return base | {"stages": stages, "fits": False if oom else None,
                       "error": f"{stage[0]} stage: {what} (reserved "
                                f"{stages[stage[0]]['reserved_gib']} GiB at the failure)",
                       "cause": str(cause)[:2000]}
    finally:
        meter.close()
    worst_gib = max((v for s in stages.values() for k, v in s.items()
                     if k in ("reserved_gib", "driver_gib") and v is not None), default=None)
    return base | {
        "transformer_storage": storage_of(backend.transformer), "steps_run": steps,
        "stages": stages, "load_s": round(load_s, 1),
        "prepare_s": round(prepare_s, 2), "window_s": [round(s, 2) for s in window_s],
        "s_per_step": round(step_s, 4),
        "window_s_at_preset_steps": round(step_s * peaks["n"] * preset.steps / steps, 3),
        "bare_s_per_step": round(bare_s, 4) if bare_s else None,
        "overhead_ratio": round(step_s / bare_s, 3) if bare_s else None,
        "peak_gib": worst_gib, "fits": None if worst_gib is None else worst_gib < FIT_GIB,
    }


def run_child(name: str, tiny: bool, timeout_s: float, root: Path | None = None,
              jobs: int = 1) -> dict:
    """One preset in a fresh process: no allocator state or peak carried over. Its stderr
    is printed when it ends, whole, so concurrent presets' logs do not interleave."""
    with tempfile.TemporaryDirectory() as tmp:
        out, log = Path(tmp) / "run.json", Path(tmp) / "stderr.log"
        cmd = [sys.executable, __file__, "--preset", name, "--json", str(out),
               "--jobs", str(jobs)] + (["--tiny"] if tiny else [])
        cmd += ["--work-root", str(root)] if root else []
        t0 = time.perf_counter()
        with log.open("w") as err:
            try:
                done = subprocess.run(cmd, timeout=timeout_s, stdout=subprocess.DEVNULL,
                                      stderr=err)
                code = done.returncode
            except subprocess.TimeoutExpired:
                code = None
        text = log.read_text(errors="replace")
        print(f"--- {name}: {time.perf_counter() - t0:.0f} s, "
              f"{'timed out' if code is None else f'exit {code}'}", flush=True)
        if text.strip():
            print(text.rstrip()[-6000:], file=sys.stderr, flush=True)
        if code is None:
            return {"preset": name, "error": f"timed out after {timeout_s:.0f} s"}
        if code == 0:
            return json.loads(out.read_text())
        return {"preset": name, "error": f"exit {code} (traceback above)"}


def run_all(chosen: list[str], tiny: bool, jobs: int, on_done: Any = None,
            ordered: bool = False) -> dict[str, dict]:
    """`chosen` presets, `jobs` at a time, longest first; each in its own process.
    `on_done(results so far)` after each, so a command stopped at its limit keeps them."""
    from concurrent.futures import ThreadPoolExecutor

    order = chosen if ordered else sorted(chosen, key=lambda n: -ESTIMATE_S.get(
        n, DEFAULT_ESTIMATE_S))
    lock, free_shm = threading.Lock(), [shm_slots(jobs, tiny)]
    results: dict[str, dict] = {}

    def one(name: str) -> dict:
        with lock:
            in_shm = free_shm[0] > 0
            free_shm[0] -= in_shm
        root = SHM if in_shm else Path(tempfile.gettempdir())
        slow = 1 + 0.5 * (jobs - 1)  # sharing the GPU and the CPU
        budget = 170 if tiny else 2 * ESTIMATE_S.get(name, DEFAULT_ESTIMATE_S) * slow
        try:
            run = run_child(name, tiny, budget, root if jobs > 1 else None, jobs)
        except Exception as exc:  # noqa: BLE001 - one preset's failure is a row of the table
            traceback.print_exc()
            run = {"preset": name, "error": f"{type(exc).__name__}: {exc}"}
        with lock:
            free_shm[0] += in_shm
            results[name] = run
            if on_done:
                on_done(dict(results))
        return run

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return dict(zip(order, pool.map(one, order), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", type=int, help="run one group of presets (see --list)")
    parser.add_argument("--preset", help="run one preset in this process")
    parser.add_argument("--tiny", action="store_true", help="tiny models, every preset")
    parser.add_argument("--list", action="store_true", help="print the groups and exit")
    parser.add_argument("--all", action="store_true", help="every preset (with --jobs)")
    parser.add_argument("--presets", help="these presets, comma-separated, in this order")
    parser.add_argument("--jobs", type=int, default=1,
                        help="presets at once on the one GPU (see the docstring)")
    parser.add_argument("--work-root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    from longvid.budget import ALLOCATOR_CONF

    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", ALLOCATOR_CONF)  # as the CLI sets it
    if args.preset:
        result = measure(args.preset, args.tiny, args.work_root, args.jobs)
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        return
    presets = hub_presets()
    gaps = {p.name: gap for p in presets if (gap := not_covered(p))}
    names = [p.name for p in presets]
    packed = groups([n for n in names if n not in gaps])
    if args.list:
        for k, group in enumerate(packed, 1):
            cost = sum(ESTIMATE_S.get(n, DEFAULT_ESTIMATE_S) for n in group)
            print(f"group {k} (~{cost} s): {', '.join(group)}")
        for name, gap in gaps.items():
            print(f"{name}: {gap}")
        return
    if args.group is None and not (args.tiny or args.all or args.presets):
        parser.error("choose --group N (see --list), --all, --presets A,B, --preset NAME "
                     "or --tiny")
    picked = list(dict.fromkeys(args.presets.split(","))) if args.presets else None
    if picked and (unknown := set(picked) - set(names)):
        parser.error(f"not a Hub preset: {', '.join(sorted(unknown))}")
    if args.group is not None and not 1 <= args.group <= len(packed):
        parser.error(f"--group must be 1 to {len(packed)} (see --list)")
    chosen = picked or ([n for n in names if n not in gaps] if args.group is None
                        else packed[args.group - 1])

    def rows(done: dict[str, dict]) -> list[dict]:
        runs = []
        for name in names:  # in the preset list's order, every Hub preset named
            if name in gaps:  # named in the table and the JSON, never silently left out
                runs.append({"preset": name, "error": gaps[name]})
            elif name not in chosen:
                group = next(k for k, g in enumerate(packed, 1) if name in g)
                runs.append({"preset": name, "error": f"not run: in group {group}"})
            else:
                runs.append(done.get(name, {"preset": name, "error": "unfinished"}))
        return runs

    def save(done: dict[str, dict]) -> None:
        if args.json:  # replaced whole, so a stopped command leaves a readable file
            tmp = args.json.with_name(args.json.name + ".tmp")
            tmp.write_text(json.dumps(dict(result, runs=rows(done)), indent=2) + "\n")
            os.replace(tmp, args.json)

    result = {"benchmark": "gpu_proof", "tiny": args.tiny, "group": args.group,
              "jobs": args.jobs, "cap_gib": CAP_GIB, "runs": rows({})}
    save({})
    result["runs"] = runs = rows(run_all(chosen, args.tiny, args.jobs, save, bool(picked)))
    print(table(runs))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if any("error" in r and not r["error"].startswith(("not run", "NOT COVERED"))
           for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
