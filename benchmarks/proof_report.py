"""What gpu_proof.py measures per stage and how it prints it.

`Meter`: peak GPU memory of one stage of a render, three ways: what PyTorch's
allocator handed out (allocated), what it held from the driver (reserved), and what
the driver reports in use (sampled on a thread: the CUDA context, kernels and library
handles included, which an allocator cap does not see). The driver figure is this
process's own where NVML lists it (`scope` "process"), else the whole device's
("device"), which means nothing while other processes share the GPU: then it is None.
Inert without CUDA.
`table`: one Markdown row per preset, beside the plan's figures."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

GIB = 2**30


def own_gpu_bytes() -> Callable[[], int | None] | None:
    """A reader of the GPU memory the driver holds for this process (NVML's per-process
    figure: context, kernels, allocator), or None where NVML cannot say."""
    try:
        import pynvml  # nvidia-ml-py: on GPU machines, not a longvid dependency
        import torch

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
    except Exception:  # noqa: BLE001 - no NVML: the device-wide figure instead
        return None
    pid = os.getpid()

    def used() -> int | None:
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == pid and proc.usedGpuMemory is not None:
                return int(proc.usedGpuMemory)
        return None

    try:
        return used if used() is not None else None
    except Exception:  # noqa: BLE001
        return None


class Meter:
    """Peaks of one stage: allocator allocated/reserved, driver-level used (sampled every
    2 ms on a thread), allocator retries and OOMs. Inert without CUDA."""

    def __init__(self, cuda: bool, shared: bool = False) -> None:
        self.cuda, self.driver_peak, self._stop = cuda, 0, threading.Event()
        self._counts = (0, 0)
        self._own = own_gpu_bytes() if cuda else None
        self.scope = "process" if self._own else "device"
        self.blind = shared and self._own is None  # a device figure, others on the GPU
        if cuda:
            threading.Thread(target=self._sample, daemon=True).start()

    def _used(self) -> int:
        import torch

        if self._own is not None and (own := self._own()) is not None:
            return own
        free, total = torch.cuda.mem_get_info()
        return total - free

    def _sample(self) -> None:
        while not self._stop.wait(0.005 if self._own else 0.002):
            self.driver_peak = max(self.driver_peak, self._used())

    def start(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.driver_peak = self._used()
            stats = torch.cuda.memory_stats()  # counters are cumulative: this stage's only
            self._counts = (stats.get("num_alloc_retries", 0), stats.get("num_ooms", 0))

    def stop(self) -> dict[str, float | None]:
        import torch

        if not self.cuda:
            return {"allocated_gib": None, "reserved_gib": None, "driver_gib": None}
        torch.cuda.synchronize()
        driver = max(self.driver_peak, self._used())
        stats = torch.cuda.memory_stats()
        return {"allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 3),
                "reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 3),
                "driver_gib": None if self.blind else round(driver / GIB, 3),
                "alloc_retries": stats.get("num_alloc_retries", 0) - self._counts[0],
                "ooms": stats.get("num_ooms", 0) - self._counts[1]}

    def close(self) -> None:
        self._stop.set()


def worst(a: dict | None, b: dict) -> dict:
    return b if a is None else {k: max(a[k], b[k]) if a[k] is not None else None for k in a}


def table(runs: list[dict]) -> str:
    def gib(stage: dict | None, key: str) -> str:
        v = (stage or {}).get(key)
        return "-" if v is None else f"{v:.2f}"

    def shared(run: dict) -> str:  # timings taken beside other presets' processes
        n = run.get("concurrent", 1)
        return f" ({n} at once)" if n > 1 else ""

    def capped(run: dict) -> str:  # measured under another cap than the others
        cap = run.get("cap_gib")
        return "" if cap is None or cap == min(r.get("cap_gib") or cap for r in runs) \
            else f" (cap {cap} GiB)"

    lines = ["| preset | TE / DiT | plan TE, DiT | TE res/drv GiB | DiT res/drv GiB "
             "| VAE res/drv GiB | planned GiB | s/step | bare | ratio | fits |",
             "|---" * 11 + "|"]
    for r in runs:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['error']} |" + " |" * 9)
            continue
        s, p, q = r["stages"], r["policy"], r["quantization"]
        cells = [f"{gib(s[k], 'reserved_gib')} / {gib(s[k], 'driver_gib')}"
                 for k in ("text encoder", "transformer", "vae")]
        planned = " / ".join(f"{p['stages_gib'][k]:.2f}" for k in p["stages_gib"])
        lines.append(
            f"| {r['preset']}{capped(r)} | {q['text_encoder']} / {q['transformer']} | "
            f"{p['text_encoder']}, {p['transformer']} | {' | '.join(cells)} | {planned} | "
            f"{r['s_per_step']}{shared(r)} | {r['bare_s_per_step'] or '-'} | "
            f"{r['overhead_ratio'] or '-'} "
            f"| {'-' if r['fits'] is None else ('yes' if r['fits'] else 'NO')} |")
    return "\n".join(lines)
