"""Estimated GPU time per minute of video for the real presets: FLOP arithmetic, not a run.

    python benchmarks/speed_estimate.py [--json out.json]

Nothing here touches a GPU. For each preset, longvid plans a one-shot storyboard of 60 s
at the preset's own size and fps (`make_plan`, so the forwards are the ones a render
runs: segments x steps x guidance, or for a causal preset blocks x (steps + 1 clean
pass) plus the cache replays), and each forward's FLOPs come from the transformer's
config (Wan2.1-1.3B: 30 layers of width 1,536, FFN 8,960; VACE adds 15 blocks):
- dense: 2 x tokens x layers x (6 d^2 + 2 d f)  (self-attention q, k, v, o and the
  cross-attention's q, o on every video token; the FFN; 1.25 B parameters for Wan-1.3B);
- self-attention: 4 x tokens x keys x d x layers (keys = tokens for a full window; the
  cached frames a block attends to for a causal preset, at most `attended_latents`);
- cross-attention: 4 x tokens x 512 text tokens x d x layers.
Time = dense / (peak x 0.80) + attention / (peak x 0.55), with bf16 dense tensor-core
peaks (fp32 accumulate) of 58 TFLOPS (RTX 4070-class) and 25 TFLOPS (RTX 3060 12GB):
the assumptions of ../shared/docs/real-path-audit.md §2.4, whose per-forward figures
this reproduces (SkyReels 0.70 PFLOP at 55k tokens, 20-47 s). The VAE decode, prompt
encoding, offload transfers and compile time are left out. `anyflow-far-1.3b` runs
chunked forwards over a compressed far cache that this arithmetic does not model: its
row is the audit's own estimate, marked as such.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TEXT_TOKENS = 512
DENSE_EFFICIENCY = 0.80  # GEMM share of the tensor-core peak
ATTENTION_EFFICIENCY = 0.55  # flash attention's share
CARDS_TFLOPS = {"RTX 4070-class": 58.0, "RTX 3060 12GB": 25.0}  # bf16, fp32 accumulate
MINUTE_S = 60
# real-path-audit.md §2.4: AnyFlow-FAR, ~1.4 PFLOP of chunk forwards and KV passes per
# window of 68 new frames at 16 fps, ~40-90 s per window
ANYFLOW_AUDIT_S_PER_WINDOW = (40.0, 90.0)
ANYFLOW_NEW_FRAMES_PER_WINDOW = 68


@dataclass(frozen=True)
class Network:
    """The transformer's shape, from its config.json."""

    layers: int  # blocks that run on every video token (VACE's included)
    width: int  # d: heads x head dim
    ffn: int  # f

    def forward_flop(self, tokens: int, keys: int) -> tuple[float, float]:
        """(dense, attention) FLOPs of one forward of `tokens` video tokens attending to
        `keys` video keys (and the text)."""
        d, f = self.width, self.ffn
        dense = 2.0 * tokens * self.layers * (6 * d * d + 2 * d * f)
        attention = 4.0 * tokens * (keys + TEXT_TOKENS) * d * self.layers
        return dense, attention


WAN_1_3B = Network(layers=30, width=1536, ffn=8960)
NETWORKS = {"skyreels-df": WAN_1_3B, "causal-wan": WAN_1_3B,
            "wan-vace": Network(layers=30 + 15, width=1536, ffn=8960)}


def seconds(dense: float, attention: float, peak_tflops: float) -> float:
    return dense / (peak_tflops * 1e12 * DENSE_EFFICIENCY) + attention / (
        peak_tflops * 1e12 * ATTENTION_EFFICIENCY)


@dataclass(frozen=True)
class Estimate:
    preset: str
    steps: str  # per window or block, as the preset runs them
    window: str
    forwards_per_minute: int | None
    pflop_per_minute: float | None
    minutes_per_minute: dict[str, float]  # card -> estimated GPU minutes per minute of video
    vram_peak_gib: float
    vram_placement: str
    method: str


def minute_plan(preset_name: str):  # noqa: ANN201 - (Preset, Plan, BackendCaps)
    from longvid.backends import caps_of
    from longvid.plan import make_plan
    from longvid.presets import load_preset
    from longvid.storyboard import one_shot

    preset = load_preset(preset_name)
    caps = caps_of(preset)
    sb = one_shot(path=f"<{preset.name} minute>", shot_id="minute", title=preset.name,
                  prompt="a long take", frames=MINUTE_S * preset.fps, fps=preset.fps,
                  resolution=preset.resolution, seed=0, content_sha256="")
    return preset, make_plan(sb, preset, caps), caps


def forwards_of(plan, caps) -> list[tuple[int, int]]:  # noqa: ANN001
    """(tokens, keys) of every transformer forward the plan runs (upper bounds: memory
    latents counted in every window; a causal block attends to its full window)."""
    tokens_per_latent = plan.width * plan.height // caps.tokens_per_latent_px
    if plan.stream is not None:
        assert caps.stream is not None
        tokens = plan.stream.block_latents * tokens_per_latent
        keys = caps.stream.attended_latents * tokens_per_latent
        return [(tokens, keys)] * plan.forwards
    cfg = 2 if plan.guidance_scale > 1 else 1
    out = []
    for seg in plan.segments:
        window = (seg.context_latents + seg.num_latents + caps.memory_latents) * tokens_per_latent
        out += [(window, window)] * (plan.steps * cfg)
    return out


def estimate(preset_name: str) -> Estimate:
    from longvid.vram import plan_policy

    preset, plan, caps = minute_plan(preset_name)
    policy = plan_policy(preset, plan, 12.0)
    assert policy is not None, f"{preset_name} has no GPU budget"
    placement = f"transformer {policy.transformer}, text encoder {policy.text_encoder}"
    window = (f"{caps.stream.block_latents}-latent blocks (12 frames), cache of "
              f"{caps.stream.attended_latents} latent frames" if caps.stream is not None
              else f"{caps.max_frames} frames ({caps.context_latents} latents of context)")
    cfg = " x 2 (guidance)" if preset.guidance_scale > 1 else ""
    steps = (f"{preset.steps} + 1 clean pass per block" if caps.stream is not None
             else f"{preset.steps}{cfg} per window")
    if preset.backend == "anyflow-far":
        windows = MINUTE_S * preset.fps / ANYFLOW_NEW_FRAMES_PER_WINDOW
        lo, hi = ANYFLOW_AUDIT_S_PER_WINDOW
        return Estimate(preset.name, steps, window, None, None,
                        {"RTX 4070-class": windows * lo / 60, "RTX 3060 12GB": windows * hi / 60},
                        policy.peak_gib, placement,
                        "real-path-audit.md §2.4's per-window estimate (chunked forwards over "
                        "a compressed far cache, not recomputed here)")
    network = NETWORKS[preset.backend]
    flops = [network.forward_flop(t, k) for t, k in forwards_of(plan, caps)]
    dense, attention = sum(d for d, _ in flops), sum(a for _, a in flops)
    scale = MINUTE_S / plan.duration_s
    return Estimate(preset.name, steps, window, round(len(flops) * scale),
                    (dense + attention) * scale / 1e15,
                    {card: seconds(dense, attention, peak) * scale / 60
                     for card, peak in CARDS_TFLOPS.items()},
                    policy.peak_gib, placement, "FLOPs of the planned forwards / throughput")


def span(r: Estimate) -> str:
    """"~5.7-13 min" or "~6.1-14.2 h": the faster card's estimate, then the slower's."""
    fast, slow = (r.minutes_per_minute[c] for c in CARDS_TFLOPS)
    if fast >= 120:
        return f"~{fast / 60:.1f}-{slow / 60:.1f} h"
    return f"~{fast:.1f}-{slow:.1f} min"


REAL_PRESETS = ("skyreels-df-1.3b", "skyreels-df-1.3b-lowvram", "skyreels-df-1.3b-gguf-q8",
                "wan-vace-1.3b", "anyflow-far-1.3b", "longlive-1.3b", "self-forcing-1.3b")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = [estimate(name) for name in REAL_PRESETS]
    print("| preset | steps | window | forwards per min | PFLOP per min | est. GPU min per "
          "min of video (4070 - 3060) | VRAM plan at 12 GiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r.preset}` | {r.steps} | {r.window} | {r.forwards_per_minute or '-'} | "
              f"{'-' if r.pflop_per_minute is None else f'{r.pflop_per_minute:.0f}'} | "
              f"{span(r)} | {r.vram_peak_gib:.1f} GiB ({r.vram_placement}) |")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
