"""The 12 GB proof: a preset at real size with random weights, under a 12 GiB allocator cap.

    python benchmarks/vram_12gb.py [--preset skyreels-df-1.3b] [--vram 12] [--segments 2]
                                   [--json out.json] [--tiny]

Builds the preset's models from their real configs with random weights (values
change neither memory nor FLOPs), writes them into a temporary Hugging Face cache
in the Hub's own layout, and loads them through exactly the path a real download
takes. On a CUDA GPU it caps PyTorch's allocator at `--vram` GiB minus 0.6 GiB
(CUDA context and desktop of a real card), plans the VRAM policy for that budget,
renders `--segments` windows at the preset's default resolution, and reports the
peak reserved memory of each stage (text encoder, transformer, VAE), seconds per
denoising step, and the same transformer's bare forward time for comparison.

`--tiny` runs the same code on tiny configs (CPU is fine): the test suite uses it.
Memory figures are reported only on CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
CONTEXT_GIB = 0.6

# Real configs of SkyReels-V2-DF-1.3B-540P (transformer) and UMT5-XXL (text encoder).
REAL = {
    "transformer": dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128,
                        in_channels=16, out_channels=16, text_dim=4096, freq_dim=256,
                        ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                        qk_norm="rms_norm_across_heads", eps=1e-6, inject_sample_info=True),
    "text_encoder": dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24,
                         relative_attention_num_buckets=32, relative_attention_max_distance=128,
                         feed_forward_proj="gated-gelu", vocab_size=256384),
    "vae": {},  # AutoencoderKLWan's defaults are Wan 2.1's VAE
}
TINY = {
    "transformer": dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                        in_channels=16, out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32,
                        num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                        rope_max_seq_len=32, inject_sample_info=True),
    "text_encoder": dict(d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2,
                         relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
                         vocab_size=300),
    "vae": dict(base_dim=3, dim_mult=[1, 1, 1, 1], num_res_blocks=1),
}


def build_checkpoint(cache: Path, repo: str, configs: dict) -> Path:
    import torch
    from diffusers import (
        AutoencoderKLWan,
        SkyReelsV2DiffusionForcingPipeline,
        SkyReelsV2Transformer3DModel,
        UniPCMultistepScheduler,
    )
    from hubcache import write_hub_snapshot
    from transformers import UMT5Config, UMT5EncoderModel

    from longvid.backends.tiny import _byte_tokenizer

    torch.manual_seed(0)
    tokenizer = _byte_tokenizer()  # the real UMT5 vocabulary is not needed for memory
    te_config = dict(configs["text_encoder"], pad_token_id=0, eos_token_id=1,
                     decoder_start_token_id=0)
    pipe = SkyReelsV2DiffusionForcingPipeline(
        tokenizer=tokenizer,
        text_encoder=UMT5EncoderModel(UMT5Config(**te_config)).to(torch.bfloat16),
        transformer=SkyReelsV2Transformer3DModel(**configs["transformer"]).to(torch.bfloat16),
        vae=AutoencoderKLWan(**configs["vae"]),
        scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction",
                                          use_flow_sigmas=True, flow_shift=8.0))
    with tempfile.TemporaryDirectory(dir=cache.parent) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        del pipe
        return write_hub_snapshot(cache, repo, Path(tmp))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="skyreels-df-1.3b")
    parser.add_argument("--vram", type=float, default=12.0)
    parser.add_argument("--segments", type=int, default=2)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    import torch

    from longvid.backends.skyreels_df import SkyReelsDFBackend
    from longvid.budget import policy_for
    from longvid.presets import load_preset
    from longvid.render import load_job

    cuda = torch.cuda.is_available()
    if cuda:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction((args.vram - CONTEXT_GIB) * 2**30 / total)
        torch.backends.cuda.enable_math_sdp(False)  # flash/mem-efficient attention only

    work = Path(tempfile.mkdtemp(prefix="longvid-vram-"))
    os.environ.update(HF_HUB_CACHE=str(work / "hub"), HF_HUB_OFFLINE="1",
                      LONGVID_HOME=str(work / "home"))
    preset = load_preset(args.preset)
    if args.tiny:  # same code, tiny shapes, any device
        text = Path(preset.source).read_text().replace("min_vram_gib: 8", "min_vram_gib: 0")
        tiny_preset = work / "tiny-preset.yaml"
        tiny_preset.write_text(text.replace("resolution: 960x544", "resolution: 32x32")
                               .replace("steps: 30", "steps: 2")
                               .replace("max_sequence_length: 512", "max_sequence_length: 16\n"
                                        "  max_latents: 5\n  context_latents: 2"))
        preset = load_preset(str(tiny_preset))
    t0 = time.perf_counter()
    build_checkpoint(work / "hub", preset.hub.repo, TINY if args.tiny else REAL)
    build_s = time.perf_counter() - t0

    storyboard = work / "bench.yaml"
    caps_window = preset.options.get("max_latents", 25)
    ctx = preset.options.get("context_latents", 5)
    latents = caps_window + (args.segments - 1) * (caps_window - ctx)
    frames = 4 * latents - 3
    storyboard.write_text("version: 1\nshots: [{id: a, prompt: a harbour at dusk, "
                          f"duration: {frames}f}}]\n")
    _, preset, plan = load_job(storyboard, str(preset.source))
    policy = policy_for(args.vram, preset.memory, plan.max_tokens, preset.quantization) \
        if cuda else None

    def reset() -> None:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak() -> float | None:
        return torch.cuda.max_memory_reserved() / 2**30 if cuda else None

    backend = SkyReelsDFBackend()
    backend.load(preset, policy)
    stages: dict[str, float | None] = {}
    reset()
    t0 = time.perf_counter()
    backend.prepare(sorted({s.prompt for s in plan.segments}), "", preset.guidance_scale)
    prepare_s = time.perf_counter() - t0
    stages["text encoder"] = peak()

    from longvid.backends.base import SegmentRequest

    context, step_s, seg_s, transformer_peak, vae_peak = None, [], [], [], []
    for seg in plan.segments:
        marks = [time.perf_counter()]

        def on_step(i: int, n: int, marks: list = marks) -> None:
            if cuda:
                torch.cuda.synchronize()
            marks.append(time.perf_counter())
            if i == n:  # the transformer stage ends here; the VAE decode follows
                transformer_peak.append(peak())
                reset()

        reset()
        t0 = time.perf_counter()
        out = backend.generate(SegmentRequest(
            index=seg.index, prompt=seg.prompt, negative_prompt="",
            num_latents=seg.num_latents, context=context, width=plan.width,
            height=plan.height, seed=seg.seed, steps=plan.steps,
            guidance_scale=plan.guidance_scale, fps=plan.fps), on_step)
        seg_s.append(time.perf_counter() - t0)
        vae_peak.append(peak())
        step_s += [b - a for a, b in zip(marks, marks[1:], strict=False)]
        context = out.latents[:, :, -plan.context_latents:]
    stages["transformer"] = max(transformer_peak) if cuda else None
    stages["vae"] = max(vae_peak) if cuda else None

    # the same transformer alone, on one full window, as the floor for a step's time
    window = plan.segments[-1].context_latents + plan.segments[-1].num_latents
    x = torch.randn(1, 16, window, plan.height // 8, plan.width // 8,
                    device=backend.device, dtype=backend.dtype)
    emb = backend.prompts[plan.segments[0].prompt].to(backend.device, backend.dtype)
    ts = torch.full((1, window), 500, dtype=torch.long, device=backend.device)
    forwards = 2 if plan.guidance_scale > 1 else 1
    with torch.no_grad():
        backend.transformer(x, timestep=ts, encoder_hidden_states=emb,
                            enable_diffusion_forcing=True, fps=[1], return_dict=False)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(3):
            backend.transformer(x, timestep=ts, encoder_hidden_states=emb,
                                enable_diffusion_forcing=True, fps=[1], return_dict=False)
        if cuda:
            torch.cuda.synchronize()
    bare_step_s = (time.perf_counter() - t0) / 3 * forwards
    last_steps = step_s[-plan.steps:]
    result = {
        "benchmark": "vram_12gb", "date": time.strftime("%Y-%m-%d"), "preset": args.preset,
        "tiny": args.tiny, "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "vram_cap_gib": args.vram if cuda else None,
        "resolution": f"{plan.width}x{plan.height}", "window_tokens": plan.max_tokens,
        "segments": len(plan.segments), "steps": plan.steps,
        "policy": {"text_encoder": policy.text_encoder, "transformer": policy.transformer,
                   "estimated_peak_gib": round(policy.peak_gib, 2)} if policy else None,
        "peak_reserved_gib": {k: (round(v, 2) if v is not None else None)
                              for k, v in stages.items()},
        "checkpoint_build_s": round(build_s, 1), "prepare_s": round(prepare_s, 2),
        "segment_s": [round(s, 2) for s in seg_s],
        "s_per_step": round(sum(last_steps) / len(last_steps), 4),
        "bare_transformer_s_per_step": round(bare_step_s, 4),
    }
    result["step_overhead_pct"] = round(100 * (result["s_per_step"] / bare_step_s - 1), 1)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
