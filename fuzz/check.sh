#!/usr/bin/env bash
# Runs every fuzz target once over its committed inputs, without fuzzing: the seeds
# (fuzz/seeds/<target>) and the inputs that once crashed a reader (fuzz/regressions/<target>,
# one file per fixed finding). Deterministic and quick; `make test` runs it, so a reader that
# breaks again fails CI (docs/fuzzing.md). Exit status 1 when any input triggers a finding.
#   fuzz/check.sh [TARGET...]     (default: every target)   Environment: FUZZ_BUILD_DIR (build-fuzz)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(tsv config task_meta token_cache bpe bpe_load safetensors checkpoint_meta)
export OMP_NUM_THREADS=1 UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
failed=0
for t in "${targets[@]}"; do
  bin="$build/fuzz_$t"
  [ -x "$bin" ] || { echo "fuzz/check.sh: no $bin (make fuzz-build)" >&2; exit 2; }
  inputs=()
  for d in "$root/fuzz/seeds/$t" "$root/fuzz/regressions/$t"; do
    [ -d "$d" ] && while IFS= read -r -d '' f; do inputs+=("$f"); done < <(find "$d" -type f -print0 | sort -z)
  done
  log="$build/logs/check-$t.log"
  mkdir -p "$build/logs"
  if "$bin" -rss_limit_mb=2048 -timeout=10 "${inputs[@]}" > "$log" 2>&1; then
    printf '%-16s %4d inputs  ok\n' "$t" "${#inputs[@]}"
  else
    printf '%-16s %4d inputs  FAILED (see %s)\n' "$t" "${#inputs[@]}" "$log"
    grep -m1 -E "ERROR|terminate called|FINDING|what\(\)" "$log" || true
    failed=1
  fi
done
exit $failed
