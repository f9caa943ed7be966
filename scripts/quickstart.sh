#!/usr/bin/env bash
# The quickstart pipeline on the embedded gym. Usage: scripts/quickstart.sh [path/to/tlmoe]
# Each step's output goes under runs/quickstart/. Re-running starts the training runs afresh.
set -euo pipefail
tlmoe="${1:-build/tlmoe}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=runs/quickstart
cfg=configs/quickstart.yaml
mkdir -p "$out"
t0=$(date +%s)

echo "== 1/4 tlmoe gym: the embedded benchmark =="
"$tlmoe" gym --out "$out/gym" --seed 42

echo
echo "== 2/4 tlmoe preprocess: tokenizer and token caches =="
"$tlmoe" preprocess --config "$cfg"

echo
echo "== 3/4 tlmoe train: the vanilla multi-task baseline (m = 1) =="
rm -rf "$out/vanilla" "$out/tlmoe"
"$tlmoe" train --config "$cfg" --set model.experts=1 --run-dir "$out/vanilla"

echo
echo "== 4/4 tlmoe train: TL-MoE (m = 3, layer-specific MLP router, straight-through gumbel) =="
"$tlmoe" train --config "$cfg" --run-dir "$out/tlmoe"

echo
dev_loss() { grep '"dev_loss"' "$1/metrics.jsonl" | sed 's/.*"dev_loss":\([0-9.eE+-]*\).*/\1/' | sort -g | head -1; }
echo "best dev loss per target token: vanilla $(dev_loss "$out/vanilla"), TL-MoE $(dev_loss "$out/tlmoe")"
last_routes=$(ls "$out/tlmoe/routes" | tail -1)
echo "TL-MoE routes of every task: $out/tlmoe/routes/$last_routes"
echo
echo "quickstart done in $(( $(date +%s) - t0 )) s. Outputs: $out/gym (data and caches), $out/vanilla, $out/tlmoe"
echo "(checkpoints best/ last/, metrics.jsonl, routes/)."
echo "What comes next (not built yet, see the open issues): tlmoe adapt / eval (few-shot and zero-shot"
echo "on the gym's test tasks, ARG), tlmoe analyze-routes (route figures and statistics)."
