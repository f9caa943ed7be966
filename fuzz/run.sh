#!/usr/bin/env bash
# Runs the libFuzzer targets of build-fuzz (docs/fuzzing.md) and prints, per target, the
# executions, the coverage (cov: and ft: of libFuzzer's last status line) and what it found.
#
#   fuzz/run.sh [-s SECONDS] [-j JOBS] [-k | -r] [TARGET...]   (default: every target, 20 s, 1 job)
#     -s SECONDS  fuzzing time per target
#     -j JOBS     targets run at once (each is one process; a 2-core machine takes 2)
#     -k          keep going after a finding (libFuzzer's -fork=1 -ignore_crashes/timeouts/ooms),
#                 to collect several findings in one run; the default stops at the first
#     -r          no fuzzing: run every input saved in build-fuzz/findings/<target> again and group
#                 them by what they trigger now ("did not reproduce alone" once it is fixed)
#   TARGET: tsv config task_meta token_cache bpe bpe_load safetensors checkpoint_meta
#
# Corpora grow in build-fuzz/corpus/<target>, seeded from fuzz/seeds/<target>; findings (crash-*,
# leak-*, timeout-*, oom-*) land in build-fuzz/findings/<target>/, logs in build-fuzz/logs/.
# Environment: FUZZ_BUILD_DIR (build-fuzz), FUZZ_NICE (10), FUZZ_ARGS (more libFuzzer flags).
# Exit status 1 when a target found something in this run (with -r: when a saved input still
# triggers something).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=20 jobs=1 keep_going=0 replay=0
all_targets=(tsv config task_meta token_cache bpe bpe_load safetensors checkpoint_meta)
while getopts "s:j:kr" opt; do
  case $opt in
    s) seconds=$OPTARG ;;
    j) jobs=$OPTARG ;;
    k) keep_going=1 ;;
    r) replay=1 ;;
    *) sed -n '2,17p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
  [ -x "$build/fuzz_$t" ] || { echo "fuzz/run.sh: no $build/fuzz_$t (make fuzz-build)" >&2; exit 2; }
done

# Scratch files of the targets (every input is written to a file) on tmpfs when there is one;
# removed at the end, also what a crashed target left behind.
shm=/dev/shm
[ -d "$shm" ] && [ -w "$shm" ] || shm=${TMPDIR:-/tmp}
scratch=$(mktemp -d "$shm/tlmoe-fuzz-run.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# Sanitizer options (docs/fuzzing.md): UBSan reports (which abort: -fno-sanitize-recover) with a stack.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
export OMP_NUM_THREADS=1  # LibTorch's thread pool: one thread per fuzzing process

mkdir -p "$build/logs"
start_stamp="$build/logs/.start-$$"
touch "$start_stamp"
trap 'rm -rf "$scratch" "$start_stamp"' EXIT

run_one() {
  local t=$1 corpus="$build/corpus/$1" findings="$build/findings/$1" log="$build/logs/$1.log"
  mkdir -p "$corpus" "$findings" "$scratch/$t"
  local args=(-max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
              -artifact_prefix="$findings/")
  [ -f "$root/fuzz/dict/$t.dict" ] && args+=(-dict="$root/fuzz/dict/$t.dict")
  [ "$keep_going" = 1 ] && args+=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  local dirs=("$corpus")
  [ -d "$root/fuzz/seeds/$t" ] && dirs+=("$root/fuzz/seeds/$t")
  # shellcheck disable=SC2086
  (cd "$scratch/$t" && TLMOE_FUZZ_TMPDIR="$scratch/$t" nice -n "${FUZZ_NICE:-10}" \
     "$build/fuzz_$t" "${args[@]}" ${FUZZ_ARGS:-} "${dirs[@]}") >"$log" 2>&1 || true
}

summary() {
  local t=$1 log="$build/logs/$1.log" findings="$build/findings/$1"
  local execs="" cov="" ft="" found=""
  # libFuzzer's status lines: "#N <event> cov: C ft: F ..." (or "#N: cov: C ft: F ..." with -fork)
  local last=""
  [ "$replay" = 1 ] || last=$(grep -aE '^#[0-9]+:?[[:space:]]+([A-Z]+[[:space:]]+)?cov: ' "$log" | tail -1 || true)
  [ "$replay" = 1 ] || execs=$(grep -aoE 'stat::number_of_executed_units: [0-9]+' "$log" | tail -1 | awk '{print $2}' || true)
  [ -n "$execs" ] || execs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$last")
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
  local newer=(-newer "$start_stamp")
  [ "$replay" = 1 ] && newer=()
  found=$(find "$findings" -maxdepth 1 -type f "${newer[@]}" \
            \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
  local dash=?; [ "$replay" = 1 ] && dash=-
  printf '%-16s %12s %7s %8s  ' "$t" "${execs:-$dash}" "${cov:-$dash}" "${ft:-$dash}"
  if [ -n "$found" ]; then
    echo "FOUND $(wc -l <<<"$found") input(s); by kind (each reproduced once):"
    # Each finding is run again alone: its message (ASan/UBSan summary, an uncaught exception, a
    # broken invariant, a timeout or an OOM) and its first stack frame in lib/ name the kind.
    local f out msg frame rows
    rows=$(while read -r f; do
      out=$(cd "$scratch" && TLMOE_FUZZ_TMPDIR="$scratch/$t" timeout 120 \
              "$build/fuzz_$t" -timeout=10 -rss_limit_mb=2048 "$f" 2>&1 || true)
      msg=$( { grep -aA1 '^terminate called after throwing' <<<"$out" | tr '\n' ' ' \
                 | sed -nE "s/^terminate called after throwing an instance of '([^']*)' +what\(\): +/uncaught \1: /p"
               grep -aE '==tlmoe-fuzz== FINDING|^SUMMARY: |runtime error:|ERROR: libFuzzer: (timeout|out-of-memory)' <<<"$out" \
                 | grep -av 'SUMMARY: libFuzzer: deadly signal'; } | head -1 \
              | sed -E "s/^==[0-9]+== ?//; s/ +$//; s/'[^']{12,}'/'...'/g; s/^(.{240}).*/\\1.../")
      frame=$(grep -aE '^ +#[0-9]+ 0x[0-9a-f]+ in .* [^ ]*/lib/[a-z_]+/[a-z_]+\.(cpp|h):[0-9]+' <<<"$out" | head -1 \
              | sed -E 's/^ +#[0-9]+ 0x[0-9a-f]+ in //; s/\([^()]*(\([^()]*\)[^()]*)*\)//g; s/ [^ ]*\/lib\// lib\//')
      printf '%s\t%s\t%s\n' "${msg:-(did not reproduce alone)}" "${frame:--}" "${f#"$root/"}"
    done <<<"$(head -n 50 <<<"$found")")
    sort <<<"$rows" | awk -F'\t' '
      { n[$1 FS $2]++; if (!($1 FS $2 in ex)) ex[$1 FS $2] = $3 }
      END { for (k in n) { split(k, p, FS); printf "    %d x %s\n        at %s\n        e.g. %s\n", n[k], p[1], p[2], ex[k] } }'
    grep -qv '^(did not reproduce alone)' <<<"$rows" && return 1
    return 0
  fi
  echo "nothing"
}

if [ "$replay" = 1 ]; then
  echo "replaying the saved findings of ${targets[*]}"
  for t in "${targets[@]}"; do mkdir -p "$build/findings/$t" "$scratch/$t"; done
else
  echo "fuzzing ${targets[*]}: ${seconds} s each, ${jobs} at a time (logs: ${build#"$root/"}/logs)"
  running=0
  for t in "${targets[@]}"; do
    if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
    run_one "$t" &
    running=$((running + 1))
  done
  wait
fi

status=0
printf '%-16s %12s %7s %8s  %s\n' target execs cov ft findings
for t in "${targets[@]}"; do summary "$t" || status=1; done
exit $status
