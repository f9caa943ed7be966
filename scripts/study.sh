#!/usr/bin/env bash
# The study: the paper's comparisons on the embedded gym, with several seeds of upstream training.
# Usage: scripts/study.sh [path/to/tlmoe]        (make study)
#
# Methods (configs/study/): direct fine-tuning (no upstream), vanilla multi-task, TL-MoE (the
# quickstart's router), average routing, task-level random routing, instance-level random routing,
# and the two-stage recipe (stage 2 under the same seed's TL-MoE router). For every seed: upstream
# training of each method, few-shot adaptation on the gym's unseen (test) tasks, zero-shot
# evaluation, and the routing analysis of TL-MoE (seeds after the first also compared with the
# first: expert alignment). Everything goes under runs/study/; the tables end up in one generated
# file, runs/study/results.md (copied to $STUDY_RESULTS, default docs/results/study.md; empty: no copy).
#
# Resumable stage by stage: a finished step leaves {its folder}/.done and is skipped when the study
# is run again; an interrupted training run resumes from its last/ checkpoint.
#
# Settings (environment):
#   STUDY_SEEDS   upstream seeds (default "1 2 3")
#   STUDY_JOBS    steps run at once, one thread each (default: the number of cores)
#   STUDY_OUT     output folder (default runs/study)
#   STUDY_SET     extra --set items for every command, e.g. "train.steps=40 adapt.steps=4" (a smoke run)
#   STUDY_METHODS the upstream methods to run (default all: "vanilla tlmoe average task_random
#                 instance_random stage2"); tlmoe needs vanilla, stage2 needs tlmoe. Direct
#                 fine-tuning always runs; the routing analysis runs when tlmoe does.
set -euo pipefail
tlmoe="$(realpath "${1:-build/tlmoe}")"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seeds=(${STUDY_SEEDS:-1 2 3})
jobs_max="${STUDY_JOBS:-$(nproc)}"
out="${STUDY_OUT:-runs/study}"
results_copy="${STUDY_RESULTS-docs/results/study.md}"
cfg=configs/study
sets=(--set "data.dir=$out/gym")
for s in ${STUDY_SET:-}; do sets+=(--set "$s"); done
all_methods=(vanilla tlmoe average task_random instance_random stage2)
methods=()
for m in ${STUDY_METHODS:-${all_methods[*]}}; do
  case " ${all_methods[*]} " in *" $m "*) methods+=("$m") ;;
    *) echo "study: unknown method '$m' in STUDY_METHODS (expected some of: ${all_methods[*]})" >&2; exit 2 ;; esac
done
has() { case " ${methods[*]} " in *" $1 "*) return 0 ;; esac; return 1; }
if has tlmoe && ! has vanilla; then echo "study: STUDY_METHODS: tlmoe needs vanilla (its TextEmb source)" >&2; exit 2; fi
if has stage2 && ! has tlmoe; then echo "study: STUDY_METHODS: stage2 needs tlmoe (its router)" >&2; exit 2; fi
mkdir -p "$out/logs"
t0=$(date +%s)
times="$out/logs/stages.tsv"   # stage, seconds: appended by every invocation; results.md sums them

# ---- helpers -------------------------------------------------------------------------------------

# run_step NAME DIR CMD...: runs CMD (output in logs/NAME.log) unless DIR/.done exists; marks DIR done.
run_step() {
  local name="$1" dir="$2"; shift 2
  if [ -e "$dir/.done" ]; then return 0; fi
  if ! OMP_NUM_THREADS=1 "$@" > "$out/logs/$name.log" 2>&1; then
    echo "study: $name failed; its log: $out/logs/$name.log" >&2
    tail -5 "$out/logs/$name.log" >&2
    return 1
  fi
  mkdir -p "$dir" && touch "$dir/.done"
}

# A pool of at most $jobs_max background steps; pool_wait fails when any of them failed.
pids=()
pool_add() {
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
  run_step "$@" &
  pids+=($!)
}
pool_wait() {
  local failed=0
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
  pids=()
  return "$failed"
}

stage() {  # stage NAME: the seconds since the previous stage go to stages.tsv
  local now; now=$(date +%s)
  [ -n "${stage_name:-}" ] && printf '%s\t%s\n' "$stage_name" "$(( now - stage_t ))" >> "$times"
  stage_name="$1"; stage_t=$now
  [ "$1" = end ] || echo "== $1 ($(( now - t0 )) s)"
}

# train_step METHOD SEED: upstream training into $out/s$SEED/$METHOD (resumes an interrupted run).
train_step() {
  local m="$1" s="$2" dir="$out/s$2/$1"
  local extra=(--set "train.seed=$s")
  case "$m" in
    tlmoe|stage2) extra+=(--set "task_rep.source_checkpoint=$out/s$s/vanilla/best"
                          --set "task_rep.path=$out/s$s/textemb.safetensors") ;;
  esac
  [ "$m" = stage2 ] && extra+=(--set "routing.init_from=$out/s$s/tlmoe/best")
  local resume=()
  if [ -e "$dir/last" ]; then resume=(--resume); elif [ -e "$dir" ]; then rm -rf "$dir"; fi
  pool_add "train_s${s}_$m" "$dir" "$tlmoe" train --config "$cfg/$m.yaml" "${sets[@]}" "${extra[@]}" \
    --run-dir "$dir" --plain "${resume[@]}"
}

# ---- the stages ------------------------------------------------------------------------------------

stage "gym and preprocess"
[ -e "$out/gym/.done" ] || { "$tlmoe" gym --out "$out/gym" --seed 42 > "$out/logs/gym.log"; touch "$out/gym/.done"; }
"$tlmoe" preprocess --config "$cfg/vanilla.yaml" "${sets[@]}" > "$out/logs/preprocess.log"

stage "upstream: vanilla, average, task_random, instance_random"
for s in "${seeds[@]}"; do for m in vanilla average task_random instance_random; do
  if has "$m"; then train_step "$m" "$s"; fi
done; done
pool_wait

stage "upstream: TL-MoE (TextEmb of the same seed's vanilla model)"
if has tlmoe; then for s in "${seeds[@]}"; do train_step tlmoe "$s"; done; fi
pool_wait

stage "upstream: two-stage recipe, stage 2 (under the same seed's TL-MoE router)"
if has stage2; then for s in "${seeds[@]}"; do train_step stage2 "$s"; done; fi
pool_wait

stage "few-shot adaptation on the unseen tasks"
pool_add adapt_direct "$out/adapt/direct" "$tlmoe" adapt --config "$cfg/vanilla.yaml" "${sets[@]}" --from-scratch \
  --out "$out/adapt/direct" --plain
for s in "${seeds[@]}"; do for m in "${methods[@]}"; do
  extra=()
  [ "$m" = tlmoe ] || [ "$m" = stage2 ] && extra=(--set "task_rep.path=$out/s$s/textemb.safetensors")
  pool_add "adapt_s${s}_$m" "$out/adapt/s$s/$m" "$tlmoe" adapt --config "$cfg/$m.yaml" "${sets[@]}" "${extra[@]}" \
    --checkpoint "$out/s$s/$m/best" --out "$out/adapt/s$s/$m" --plain
done; done
pool_wait

stage "zero-shot evaluation on the unseen tasks"
for s in "${seeds[@]}"; do for m in "${methods[@]}"; do
  pool_add "zeroshot_s${s}_$m" "$out/zeroshot/s$s/$m" "$tlmoe" eval --config "$cfg/$m.yaml" "${sets[@]}" \
    --checkpoint "$out/s$s/$m/best" --out "$out/zeroshot/s$s/$m"
done; done
pool_wait

stage "routing analysis of TL-MoE per seed (and agreement with the first seed)"
first="${seeds[0]}"
for s in "${seeds[@]}"; do
  has tlmoe || break
  compare=()
  [ "$s" = "$first" ] || compare=(--compare "$out/s$first/tlmoe/best")
  pool_add "analysis_s$s" "$out/analysis/s$s" "$tlmoe" analyze-routes --config "$cfg/tlmoe.yaml" "${sets[@]}" \
    --checkpoint "$out/s$s/tlmoe/best" --out "$out/analysis/s$s" "${compare[@]}"
done
pool_wait

stage "results"
stage end
STUDY_JOBS="$jobs_max" STUDY_METHODS="${methods[*]}" python3 scripts/write_study.py "$tlmoe" "$out" "$(( $(date +%s) - t0 ))" "${seeds[@]}" > "$out/results.md.tmp"
mv "$out/results.md.tmp" "$out/results.md"
if [ -n "$results_copy" ]; then
  mkdir -p "$(dirname "$results_copy")"
  cp "$out/results.md" "$results_copy.tmp" && mv "$results_copy.tmp" "$results_copy"
fi
echo "study done in $(( $(date +%s) - t0 )) s: $out/results.md${results_copy:+ (copied to $results_copy)}"
