#!/usr/bin/env bash
# The Python packages benchmarks/gpu_proof.py needs that this project's GPU machines lack
# (their image has torch, transformers, accelerate, safetensors, huggingface_hub, typer,
# rich and pyyaml, but not diffusers, bitsandbytes, gguf, pydantic or ftfy), as wheels in
# .whl/ (git-ignored), at the versions of the environment this runs in, for Python 3.12
# on x86-64. Everything that travels to that machine is limited to 64 MiB, so the
# bitsandbytes wheel keeps only its CUDA 13 libraries (the image's torch is built for
# CUDA 13.0): 43 MB becomes about 5 MB.
#
#     bash benchmarks/gpu_wheels.sh      # here, with network access to PyPI
#
# then, on the GPU machine, with .whl carried (see docs/performance.md):
#     python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
#     export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
cd "$(dirname "$0")/.."
exclude="$(git rev-parse --git-path info/exclude)"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
rm -rf .whl && mkdir .whl
version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
packages=""
for name in diffusers bitsandbytes gguf pydantic pydantic_core annotated_types \
            typing_inspection ftfy wcwidth; do
    packages="$packages $name==$(version "$name")"
done
# shellcheck disable=SC2086 - one argument per package
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $packages
python3 - <<'EOF'
"""Rewrite the bitsandbytes wheel without the libraries of other CUDA versions and ROCm."""
import re
import zipfile
from pathlib import Path

KEEP = re.compile(r"bitsandbytes/libbitsandbytes_(cuda13\d|cpu)\.so$")
DROP = re.compile(r"bitsandbytes/libbitsandbytes_\w+\.so$")
(wheel,) = Path(".whl").glob("bitsandbytes-*.whl")
slim = wheel.with_suffix(".slim")
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
    for item in src.infolist():
        if DROP.search(item.filename) and not KEEP.search(item.filename):
            continue
        data = src.read(item)
        if item.filename.endswith(".dist-info/RECORD"):
            lines = data.decode().splitlines()
            data = "\n".join(line for line in lines if not (
                DROP.search(line.split(",")[0]) and not KEEP.search(line.split(",")[0])))
            data = (data + "\n").encode()
        dst.writestr(item, data)
slim.replace(wheel)
EOF
du -ch .whl/*.whl | tail -1
