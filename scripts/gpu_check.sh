#!/usr/bin/env bash
# The GPU checks of the dispatch work, as one script for a machine with a CUDA device: build the
# CUDA kernels and the GPU tests, run the tests, then the benchmarks; logs and JSON reports go to
# ${OUT:-runs/gpu_check}. Needs what `make build` needs (scripts/setup.sh) plus nvcc and a CUDA
# device; takes about 10 minutes on an H200 machine with 16 cores, most of it the build.
#
#   scripts/gpu_check.sh [BUILD_DIR]        (default build-gpu)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build="${1:-build-gpu}"
out="${OUT:-runs/gpu_check}"
mkdir -p "$out"
py="${TLMOE_PYTHON:-$(scripts/setup.sh --print)}"

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTLMOE_CUDA=ON -DTLMOE_PYTHON="$py" >"$out/configure.log"
cmake --build "$build" -j "$(nproc)" --target tlmoe tlmoe_gpu_tests 2>&1 | tail -n 3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt" || true

status=0
"$build/tests/tlmoe_gpu_tests" 2>&1 | tee "$out/gpu_tests.log" || status=$?

t="$build/tlmoe"
"$t" bench dispatch --set device=cuda --out "$out/dispatch.json" 2>/dev/null | tee "$out/dispatch.txt"
"$t" bench train --config configs/bench/bart_base.yaml --set device=cuda --src-len 512 --tgt-len 64 \
  --steps 10 --rounds 3 --peak-tflops 989 --out "$out/train_bart_base.json" 2>/dev/null | tee "$out/train_bart_base.txt"
"$t" bench train --config configs/quickstart.yaml --set device=cuda --out "$out/train_quickstart.json" 2>/dev/null |
  tee "$out/train_quickstart.txt"
"$t" bench generate --config configs/bench/bart_base.yaml --set device=cuda --out "$out/generate_bart_base.json" \
  2>/dev/null | tee "$out/generate_bart_base.txt"
exit "$status"
