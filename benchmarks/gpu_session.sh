#!/usr/bin/env bash
# What a session with a lent GPU owes issue 13's follow-ups, as device calls that each
# fit one call's 10 minutes (run them back to back: the machine goes back after 30 s
# idle). Build the wheels here first (`bash benchmarks/gpu_wheels.sh`), then on the
# device, with carry [".whl"]:
#
#     bash benchmarks/gpu_session.sh blocks   # timeout_s 570 (~6 min): 300 bf16 blocks,
#                                             # their drift from fp32 over 60; GPU tests
#     bash benchmarks/gpu_session.sh proof    # timeout_s 570 (~7 min): the proof of
#                                             # 2026-11-28 again, 7 presets 4 at once
#     bash benchmarks/gpu_session.sh timings  # timeout_s 570 (~7 min): the default preset
#                                             # and the three SkyReels ones, one at a time
#
# `proof` ran on 2026-11-28 (docs/performance.md); rerun it after a change to a preset's
# placement or memory figures. Results go to $OUT (the device tool's folder;
# /tmp/gpu-out elsewhere): proof.json and proof.log, timings.json and timings.log,
# blocks-fp8.json, blocks-bf16.json, blocks.log, tests.log. Each step has a timeout of its own, so one that hangs leaves
# the others' files. The estimates assume an H100: a bf16 block ~0.45 s (measured), an
# fp32 reference block ~2.8 s (from its FLOPs at ~50 TFLOPS without TF32).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/gpu-out}"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
case "${1:-}" in
proof)
    # the presets the first run could not finish (each alone under the 11.4 GiB cap;
    # timings are shared by four, so upper bounds): about 5 minutes
    timeout 420 python3 benchmarks/gpu_proof.py --jobs 4 --json "$out/proof.json" \
        --presets anyflow-far-1.3b,mag-1.3b,memflow-1.3b,longlive-1.3b,self-forcing-1.3b,wan-vace-1.3b,skyreels-df-1.3b-gguf-q8 \
        2>&1 | tee "$out/proof.log"
    # what fp8 keys/values add to bf16's error, block by block: about 1.5 minutes
    timeout 130 python3 benchmarks/causal_blocks.py --real --blocks 80 \
        --kv-dtype float8_e4m3fn --reference model-kv --json "$out/blocks-fp8.json" \
        2>&1 | tee -a "$out/blocks.log"
    ;;
blocks)
    # block 300 against block 10, host RSS, and bf16's drift from fp32 over the first 60
    # blocks (each stream committing its own): about 5 minutes
    timeout 420 python3 benchmarks/causal_blocks.py --real --blocks 300 --reference fp32 \
        --reference-blocks 60 --json "$out/blocks-bf16.json" 2>&1 | tee -a "$out/blocks.log"
    # MemFlow's prompt keys of a generator streamed onto the GPU come out there, equal
    timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_causal_memory.py \
        -k "computed_where_the_model_computes or bank_holds" 2>&1 | tail -5 | tee "$out/tests.log"
    ;;
timings)
    # alone on the GPU, so seconds per step are the card's (an H100's, not a consumer
    # card's); each preset's figures are saved as it ends: about 6.5 minutes
    timeout 480 python3 benchmarks/gpu_proof.py --json "$out/timings.json" \
        --presets longlive-1.3b,skyreels-df-1.3b,skyreels-df-1.3b-lowvram,skyreels-df-1.3b-gguf-q8 \
        2>&1 | tee "$out/timings.log"
    ;;
*)
    echo "usage: bash benchmarks/gpu_session.sh proof|blocks|timings" >&2
    exit 2
    ;;
esac
