#!/usr/bin/env bash
# The quickstart pipeline on the embedded gym. Usage: scripts/quickstart.sh [path/to/tlmoe]
# Each step's output goes under runs/quickstart/.
set -euo pipefail
tlmoe="${1:-build/tlmoe}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=runs/quickstart
mkdir -p "$out"
t0=$(date +%s)

echo "== 1/2 tlmoe gym: the embedded benchmark =="
"$tlmoe" gym --out "$out/gym" --seed 42

echo
echo "== 2/2 tlmoe preprocess: tokenizer and token caches =="
"$tlmoe" preprocess --config configs/quickstart.yaml

echo
echo "quickstart done in $(( $(date +%s) - t0 )) s. Outputs: $out/gym (data), $out/gym/.tlmoe-cache (tokenizer, caches, config.resolved.yaml)."
echo "What comes next (not built yet, see the open issues): tlmoe train (TL-MoE and vanilla on the gym),"
echo "tlmoe adapt / eval (few-shot and zero-shot on the gym's test tasks, ARG), tlmoe analyze-routes."
