#!/usr/bin/env bash
# Steps/s of `tlmoe train` on configs/quickstart.yaml: one process (2 and 1 intra-op threads) vs two
# processes on Gloo over localhost (1 thread each; all-reduce overlapped with backward or not), as in
# docs/distributed.md.
#   scripts/bench_dist.sh [build/tlmoe] [workdir]
# Steps/s = (N2 - N1) / (t(N2) - t(N1)): startup (data loading, rendezvous) cancels out. The router
# reads a learned task table (task_rep.kind=learned), so no vanilla run is needed first; dropout
# stays on; runs stop with --stop-after before train.steps, so no evaluation runs at all.
set -euo pipefail
T="$(realpath "${1:-build/tlmoe}")"
W="${2:-runs/bench_dist}"
N1="${N1:-5}"
N2="${N2:-25}"
mkdir -p "$W"
[ -f "$W/gym/splits.json" ] || "$T" gym --out "$W/gym" --seed 42 >/dev/null
SETS=(--set "data.dir=$W/gym" --set task_rep.kind=learned --set task_rep.freeze=false --set train.eval_every=0
      --set train.select_by=loss --set train.log_every=1000 --set train.steps=100000)
"$T" preprocess --config configs/quickstart.yaml "${SETS[@]}" >/dev/null

now() { date +%s.%N; }
one() {  # threads steps -> seconds
  rm -rf "$W/one"
  local t0; t0=$(now)
  OMP_NUM_THREADS=$1 "$T" train --plain --config configs/quickstart.yaml "${SETS[@]}" --stop-after "$2" \
    --run-dir "$W/one" >"$W/one.log" 2>&1
  echo "$(now) - $t0" | bc
}
two() {  # steps [extra --set ...] -> seconds
  rm -rf "$W/two"
  local port=$((29600 + RANDOM % 300)) t0 pids=()
  t0=$(now)
  for r in 0 1; do
    OMP_NUM_THREADS=1 RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      "$T" train --plain --config configs/quickstart.yaml "${SETS[@]}" "${@:2}" --stop-after "$1" \
      --run-dir "$W/two" >"$W/two$r.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  echo "$(now) - $t0" | bc
}
report() { printf '%-30s t(%d)=%6.2f s  t(%d)=%6.2f s  %6.2f steps/s\n' "$1" "$N1" "$2" "$N2" "$3" \
  "$(echo "scale=4; ($N2 - $N1) / ($3 - $2)" | bc)"; }
a=$(one 2 "$N1"); b=$(one 2 "$N2"); report "1 process, 2 threads" "$a" "$b"
a=$(one 1 "$N1"); b=$(one 1 "$N2"); report "1 process, 1 thread" "$a" "$b"
a=$(two "$N1"); b=$(two "$N2"); report "2 processes, 1 thread each" "$a" "$b"
a=$(two "$N1" --set dist.bucket_mb=1); b=$(two "$N2" --set dist.bucket_mb=1)
report "2 processes, 1 MiB buckets" "$a" "$b"
a=$(two "$N1" --set dist.overlap=false); b=$(two "$N2" --set dist.overlap=false)
report "2 processes, no overlap" "$a" "$b"
