"""What a CPU means for the text encoder: one full-width UMT5-XXL block, fp32 vs bf16.

    python benchmarks/text_encoder_cpu.py [--tokens 128] [--json out.json]

Builds one real-width UMT5-XXL encoder block (d_model 4096, d_ff 10240, 64 heads:
1/24 of the encoder's blocks, random weights, a 2-word vocabulary) and times a
forward of `--tokens` tokens in fp32 and in bf16 on this CPU, then extrapolates to
the whole encoder (24 blocks) and one 512-token prompt, the figure a user would
wait per prompt if the encoder ran on this CPU. The CPU's capability (AVX2,
AVX512, AMX) is reported, since PyTorch has a fast bf16 matmul only with
AVX-512-BF16 or AMX.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

UMT5_BLOCKS = 24
PROMPT_TOKENS = 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(vocab_size=2, d_model=4096, d_ff=10240, d_kv=64, num_heads=64,
                        num_layers=1, feed_forward_proj="gated-gelu", pad_token_id=0,
                        eos_token_id=1, decoder_start_token_id=0)
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    ids = torch.ones(1, args.tokens, dtype=torch.long)
    report: dict = {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "threads": torch.get_num_threads(), "tokens": args.tokens,
                    "block_s": {}, "prompt_s_estimate": {}}
    for dtype in (torch.float32, torch.bfloat16):
        model.to(dtype)
        with torch.no_grad():
            model(input_ids=ids[:, :8])  # warm-up
            t0 = time.perf_counter()
            model(input_ids=ids)
            seconds = time.perf_counter() - t0
        name = str(dtype).removeprefix("torch.")
        report["block_s"][name] = round(seconds, 3)
        # the block's matmuls scale with tokens; attention's extra share at 512 is small
        report["prompt_s_estimate"][name] = round(seconds * UMT5_BLOCKS * PROMPT_TOKENS
                                                  / args.tokens, 1)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
