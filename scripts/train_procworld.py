"""Train the shipped ProcMem world models (both variants, same seed and budget).

    nice -n 19 python scripts/train_procworld.py            # both variants, ~13 min each
    nice -n 19 python scripts/train_procworld.py --variant memory --steps 50 --out /tmp/w
    nice -n 19 python scripts/train_procworld.py --variant pfp  # retrieval-descriptor, mag, malt

Writes procworld-{variant}.safetensors (fp16, with the run record in its metadata)
and procworld-{variant}.json next to it; the default --out is the package's
weights folder, which `longvid bench memory` reads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from longvid.backends.procworld.model import WEIGHTS_DIR
from longvid.backends.procworld.retrieval import VARIANTS
from longvid.bench.train import TrainConfig, train
from longvid.bench.train_variants import POSE_FREE, train_pose_free


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=[*VARIANTS, *POSE_FREE, "both"], default="both")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--batch", type=int, default=TrainConfig.batch)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--threads", type=int, default=TrainConfig.threads)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args()
    for variant in VARIANTS if args.variant == "both" else (args.variant,):
        cfg = TrainConfig(variant=variant, steps=args.steps, batch=args.batch, seed=args.seed,
                          threads=args.threads)
        run = train_pose_free if variant in POSE_FREE else train
        record = run(cfg, args.out / f"procworld-{variant}.safetensors",
                       log=lambda line: print(line, flush=True))
        tmp = args.out / f"procworld-{variant}.json.tmp"
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(args.out / f"procworld-{variant}.json")


if __name__ == "__main__":
    main()
