"""Does a causal block cost the same at block 300 as at block 10? The engine, block by block.

    python benchmarks/causal_blocks.py [--blocks 300] [--real] [--threads 1] [--json out.json]
        [--kv-dtype float8_e4m3fn] [--reference fp32|model-kv] [--reference-blocks N]

Streams `--blocks` blocks of 3 latent frames through longvid's causal engine
(longvid/backends/causal_engine.py) with LongLive's cache policy (window 12, sink 3)
on a random-weight Wan transformer: tiny on the CPU by default; `--real` builds the
1.3B configuration at 480x832 in bf16 on a CUDA GPU. One stream, positions from 0 (the
RoPE table is sized to hold them). Reports:
- seconds per block (4 steps + the clean pass), first and last blocks and the medians
  of blocks 10-19 and of the last 10: with a bounded cache they should be equal;
- the same 5 forwards on the stock transformer (diffusers' own processors, no cache,
  the 3-frame block alone): the ratio is what the cache costs, attention over up to 9
  more frames included, not only bookkeeping;
- the process RSS (host) after block 10 and after the last block: the cache is
  bounded, so it should not grow;
- with `--reference`, how far the stream drifts from a reference stream of the same
  weights and noise, each committing its own blocks (so errors compound as they would
  in a render): `fp32` is the model and its cache in fp32 (the drift bf16 causes),
  `model-kv` the model in its dtype with its cache in that dtype too (what fp8 KV
  adds). Per block: mean |x0 - reference| over mean |reference|, and the largest
  |x0 - reference|; reported at blocks 1, 10, 20, 40, 80, 160, 300 and the last, for
  the first `--reference-blocks` blocks (untimed: block times are the stream's own).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TINY = {"num_attention_heads": 2, "attention_head_dim": 16, "text_dim": 32, "freq_dim": 64,
        "ffn_dim": 64, "num_layers": 2}
REAL = {"num_attention_heads": 12, "attention_head_dim": 128, "text_dim": 4096,
        "freq_dim": 256, "ffn_dim": 8960, "num_layers": 30}


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=300)
    parser.add_argument("--real", action="store_true", help="1.3B at 480x832, CUDA, bf16")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kv-dtype", choices=["model", "float8_e4m3fn"], default="model",
                        help="how the KV cache is stored (the preset option kv_dtype)")
    parser.add_argument("--reference", choices=["fp32", "model-kv"],
                        help="also stream a reference and report the drift from it")
    parser.add_argument("--reference-blocks", type=int,
                        help="compare only the first N blocks (default: all)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch
    from diffusers import WanTransformer3DModel

    from longvid.backends.causal_cache import CachePolicy
    from longvid.backends.causal_engine import CausalEngine, FewStepSchedule

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.real else "cpu")
    dtype = torch.bfloat16 if args.real else torch.float32
    h, w = (60, 104) if args.real else (12, 20)  # latent size: 480x832, or tiny's 160x96
    torch.manual_seed(0)
    config = REAL if args.real else TINY
    model = WanTransformer3DModel(patch_size=(1, 2, 2), in_channels=16, out_channels=16,
                                  cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                  rope_max_seq_len=3 * args.blocks + 3, **config)
    model = (model.to(device, dtype) if args.real else model).eval()  # timing only: the
    # fp32 modules' precision does not matter here
    stock = copy.deepcopy(model)
    policy = CachePolicy(block_latents=3, window_latents=12, sink_latents=3)
    engine = CausalEngine(model, replace(policy, kv_dtype=args.kv_dtype))
    reference = None
    if args.reference:  # the same weights (fp32: the bf16 ones widened), a cache of its own
        ref_model = copy.deepcopy(stock)  # stock stays diffusers' own, for the bare forward
        reference = CausalEngine(ref_model.float() if args.reference == "fp32" else ref_model,
                                 policy)
        reference.reset()
    compared = min(args.reference_blocks or args.blocks, args.blocks)
    drift: list[tuple[float, float]] = []  # per compared block: relative mean, max abs
    cond = torch.randn(1, 512 if args.real else 16, config["text_dim"])
    schedule = FewStepSchedule.warped(4, 5.0)
    generator = torch.Generator().manual_seed(0)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    engine.reset()
    block_s, rss = [], {}
    for b in range(args.blocks):
        sync()
        t0 = time.perf_counter()
        noise = torch.randn((1, 16, 3, h, w), generator=generator)
        state = generator.get_state()  # the reference draws the same step noise
        x0 = engine.denoise_block(noise, cond, schedule, generator)
        engine.commit(x0, cond)
        sync()
        block_s.append(time.perf_counter() - t0)
        if reference is not None and b < compared:
            after = generator.get_state()
            generator.set_state(state)
            ref = reference.denoise_block(noise, cond, schedule, generator).float()
            reference.commit(ref, cond)
            generator.set_state(after)
            diff = (x0.float() - ref).abs()
            drift.append((float(diff.mean() / ref.abs().mean()), float(diff.max())))
        if b + 1 in (10, args.blocks):
            rss[b + 1] = round(rss_mib(), 1)

    x = torch.randn(1, 16, 3, h, w, device=device, dtype=dtype)
    c, bare = cond.to(device, dtype), []
    with torch.no_grad():
        for _ in range(10):
            sync()
            t0 = time.perf_counter()
            for sigma in (*schedule.sigmas, 0.0):
                t = torch.full((1,), 1000.0 * sigma, device=device)
                stock(x, timestep=t, encoder_hidden_states=c, return_dict=False)
            sync()
            bare.append(time.perf_counter() - t0)

    first10 = statistics.median(block_s[10:20]) if args.blocks >= 20 else block_s[-1]
    last10 = statistics.median(block_s[-10:])
    bare_s = statistics.median(bare)
    result = {
        "device": device.type, "real": args.real, "threads": args.threads,
        "kv_dtype": args.kv_dtype,
        "blocks": args.blocks, "latent_hw": [h, w], "first_block_s": round(block_s[0], 5),
        "median_s_blocks_10_19": round(first10, 5), "median_s_last_10": round(last10, 5),
        "last_over_first": round(last10 / first10, 3),
        "bare_5_forwards_s": round(bare_s, 5), "block_over_bare": round(last10 / bare_s, 3),
        "rss_mib": {str(k): v for k, v in rss.items()},
    }
    if reference is not None:
        at = sorted({b for b in (1, 10, 20, 40, 80, 160, 300) if b <= compared} | {compared})
        result["reference"] = {
            "kind": args.reference, "blocks": compared,
            "relative_mean_error": {str(b): round(drift[b - 1][0], 6) for b in at},
            "max_abs_error": {str(b): round(drift[b - 1][1], 5) for b in at},
            "worst_relative_mean_error": round(max(d[0] for d in drift), 6),
        }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
