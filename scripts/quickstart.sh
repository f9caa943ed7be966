#!/usr/bin/env bash
# The quickstart pipeline on the embedded gym. Usage: scripts/quickstart.sh [path/to/tlmoe]
# Every output goes under runs/quickstart/. Re-running starts the training runs afresh; the
# adaptation sweeps are resumable, so they are restarted too (their folders are removed).
# Every stage must succeed: the first failure stops the script with its exit code.
#
# The tables end up in one generated results file, runs/quickstart/results.md, with the commit,
# machine, CPU and date in its header; it is also copied to $QUICKSTART_RESULTS (default
# docs/results/quickstart.md, the file docs/results.md reads; set it empty to skip the copy).
set -euo pipefail
tlmoe="${1:-build/tlmoe}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=runs/quickstart
results_copy="${QUICKSTART_RESULTS-docs/results/quickstart.md}"
cfg=configs/quickstart.yaml
vcfg=configs/quickstart_vanilla.yaml
mkdir -p "$out"
t0=$(date +%s)
step() { echo; echo "== $1 ($(( $(date +%s) - t0 )) s) =="; }

step "1/8 tlmoe gym: the embedded benchmark"
"$tlmoe" gym --out "$out/gym" --seed 42

step "2/8 tlmoe preprocess: tokenizer and token caches"
"$tlmoe" preprocess --config "$vcfg"

step "3/8 tlmoe train: the vanilla multi-task baseline (m = 1)"
rm -rf "$out/vanilla" "$out/tlmoe" "$out/adapt" "$out/zeroshot" "$out/analysis"
"$tlmoe" train --config "$vcfg" --run-dir "$out/vanilla" --plain

step "4/8 tlmoe train: TL-MoE (m = 3, layer MLP router on TextEmb of the vanilla model, straight-through gumbel)"
"$tlmoe" train --config "$cfg" --run-dir "$out/tlmoe" --plain

step "5/8 tlmoe adapt: few-shot fine-tuning on the unseen (test) tasks"
"$tlmoe" adapt --config "$vcfg" --from-scratch --out "$out/adapt/direct" --plain
"$tlmoe" adapt --config "$vcfg" --checkpoint "$out/vanilla/best" --out "$out/adapt/vanilla" --plain
"$tlmoe" adapt --config "$cfg" --checkpoint "$out/tlmoe/best" --out "$out/adapt/tlmoe" --plain

step "6/8 tlmoe eval: zero-shot on the unseen tasks (no training)"
"$tlmoe" eval --config "$vcfg" --checkpoint "$out/vanilla/best" --out "$out/zeroshot/vanilla" > /dev/null
"$tlmoe" eval --config "$cfg" --checkpoint "$out/tlmoe/best" --out "$out/zeroshot/tlmoe" > /dev/null

step "7/8 tlmoe analyze-routes: what the router learned"
"$tlmoe" analyze-routes --config "$cfg" --checkpoint "$out/tlmoe/best" --out "$out/analysis"

step "8/8 results"
echo "Few-shot (dev-selected test score, mean over k-shot splits; ARG in %):"
"$tlmoe" eval table direct="$out/adapt/direct" vanilla="$out/adapt/vanilla" tlmoe="$out/adapt/tlmoe" \
  --markdown "$out/fewshot.md"
echo
echo "Zero-shot (test score without training):"
"$tlmoe" eval table vanilla="$out/zeroshot/vanilla" tlmoe="$out/zeroshot/tlmoe" --markdown "$out/zeroshot.md"
python3 scripts/write_results.py "$tlmoe" "$out" "$(( $(date +%s) - t0 ))" > "$out/results.md.tmp"
mv "$out/results.md.tmp" "$out/results.md"
if [ -n "$results_copy" ]; then
  mkdir -p "$(dirname "$results_copy")"
  cp "$out/results.md" "$results_copy.tmp" && mv "$results_copy.tmp" "$results_copy"
fi
echo
echo "quickstart done in $(( $(date +%s) - t0 )) s. Outputs under $out/:"
echo "  vanilla/ tlmoe/            training runs (best/ last/ checkpoints, metrics.jsonl, routes/)"
echo "  adapt/{direct,vanilla,tlmoe}/  results.csv and summary.json of the few-shot sweeps"
echo "  zeroshot/{vanilla,tlmoe}/  summary.json and predictions/ of the zero-shot evaluation"
echo "  fewshot.md zeroshot.md     the tables above as Markdown"
echo "  analysis/report.md         the routing analysis"
echo "  results.md                 every table above, with commit, machine and date${results_copy:+ (copied to $results_copy)}"
