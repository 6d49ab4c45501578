"""Does it fit the GPU: one derivation for `plan`, `render` and `doctor`.

The figure is always `budget.policy_for` of a plan's largest transformer sequence
(`Plan.max_tokens`: context, new and recalled latents, or a per-frame forward).
`doctor` asks it of a plan that fills the preset's whole window, the largest any
storyboard can need, so its estimate for a preset is the one `plan --vram` prints
for a storyboard of one full window, and the one `render` refuses with.
"""

from __future__ import annotations

from longvid.backends import caps_of
from longvid.budget import KVCacheBudget, LoadPolicy, SecondTransformer, policy_for
from longvid.errors import ResourceError
from longvid.plan import Plan, make_plan
from longvid.presets import Preset
from longvid.storyboard import one_shot


def detected_vram_gib() -> float | None:
    """Free VRAM of the first CUDA device, or None without one (imports torch)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.mem_get_info()[0] / 2**30


def available_ram_gib() -> float | None:
    """The host RAM the kernel says is available (Linux MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) / 2**20
    except (OSError, KeyError, ValueError):
        return None


def plan_policy(preset: Preset, plan: Plan, vram_gib: float) -> LoadPolicy | None:
    """Where each component lives for `plan` within `vram_gib`; None for a preset without
    `memory:` figures (a CPU backend)."""
    if preset.memory is None:
        return None
    return policy_for(vram_gib, preset.memory, plan.max_tokens, preset.quantization,
                      kv_cache_budget(preset, plan), second_transformer(preset))


def second_transformer(preset: Preset) -> SecondTransformer | None:
    """MAG's memory model (a preset with `memory_offload` among its options), or None."""
    offload = getattr(preset.options, "memory_offload", None)
    return None if offload is None else SecondTransformer("memory model", offload)


def kv_cache_budget(preset: Preset, plan: Plan) -> KVCacheBudget | None:
    """A streaming backend's KV cache at the plan's size (None for other backends)."""
    caps = caps_of(preset)
    if caps.stream is None:
        return None
    tokens_per_latent = plan.width * plan.height // caps.tokens_per_latent_px
    decoder = 0.0 if caps.decode is None else caps.decode.cache_bytes(
        (plan.width // 8) * (plan.height // 8)) / 2**30
    return KVCacheBudget(caps.stream.kv_bytes(tokens_per_latent) / 2**30,
                         caps.stream.cached_latents, caps.stream.kv_storage, decoder,
                         "" if caps.decode is None else
                         {2: "bf16", 4: "fp32"}[caps.decode.gpu_bytes_per_element])


def window_plan(preset: Preset) -> Plan:
    """The plan of one shot that fills the preset's window: the largest forward it runs."""
    caps = caps_of(preset)
    sb = one_shot(path=f"<{preset.name} window>", shot_id="window", title=preset.name,
                  prompt="", frames=caps.max_frames, fps=preset.fps,
                  resolution=preset.resolution, seed=0, content_sha256="")
    return make_plan(sb, preset, caps)


def preset_policy(preset: Preset, vram_gib: float) -> LoadPolicy | None:
    return plan_policy(preset, window_plan(preset), vram_gib)


def choose_policy(preset: Preset, plan: Plan, vram_gib: float | None) -> LoadPolicy | None:
    """The load policy for `vram_gib` (default: the free VRAM); exit 4 if the GPU is too small."""
    if preset.memory is None:
        return None
    vram = vram_gib if vram_gib is not None else detected_vram_gib()
    if vram is None:
        return None  # no GPU: the backend says so plainly when it loads
    policy = plan_policy(preset, plan, vram)
    assert policy is not None
    if vram < preset.min_vram_gib or not policy.fits:
        worst = max(policy.stages, key=lambda s: s.peak_gib)
        raise ResourceError(
            f"preset {preset.name!r} needs at least {max(preset.min_vram_gib, policy.peak_gib):.1f}"
            f" GiB of GPU memory ({worst.name} stage) and {vram:.1f} GiB is available",
            "free GPU memory (close other programs), lower the resolution, or choose a smaller "
            f"preset (`longvid plan {plan.storyboard} --vram {vram:g}` shows this estimate per "
            f"stage; `longvid doctor --vram {vram:g}` lists the presets that fit)")
    return policy
