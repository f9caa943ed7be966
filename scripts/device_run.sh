#!/usr/bin/env bash
# run.sh of the GPU bundle (made by scripts/device_bundle.sh, which copies this file into it): the
# GPU check of tlmoe, unattended, on any x86-64 Linux machine whose Python has the torch the
# bundle was built against. Run it from anywhere; it never writes into the bundle.
#
#   [OUT=DIR] [PYTHON=python3] [JOBS=N] [PEAK_TFLOPS=P] ./run.sh [--require-gpu] [--only STEP,...]
#
# Steps (each writes STEP.json and STEP.log; bench steps also their report):
#   env         nvidia-smi, torch and CUDA versions, tlmoe --version
#   gpu_tests   the GPU tests: dispatch parity in every dtype, CUDA ops vs CPU ops, model logits and
#               greedy/beam tokens CUDA vs CPU, bf16 autocast training with peak memory, NCCL
#   cpu_suite   the whole CPU test suite (unit, command line, Hugging Face) with the same binaries
#   dispatch    tlmoe bench dispatch: the default shapes and the large bf16 ones of the MoE
#               kernel literature (4096 x top-2 of 8 x 4096, 2048 x top-2 x 4096, 16384 x top-4 of 8 x 1024)
#   train       tlmoe bench train, BART-base (configs/bench/bart_base.yaml) in bf16, 512 + 64 tokens,
#               vanilla / dense / sparse, MFU against PEAK_TFLOPS (989 on an H100 or H200 by default)
#   generate    tlmoe bench generate, BART-base
#   pipeline    a short quickstart on CUDA: gym, preprocess, train vanilla and TL-MoE, adapt, eval,
#               analyze-routes
# Without a CUDA device the GPU steps are skipped (a failure with --require-gpu);
# PIPELINE_DEVICE=cpu runs the pipeline step on the CPU instead (to check the script itself).
#
# Results: DIR (default ./tlmoe-gpu-results) gets log.txt (everything), summary.json (one entry per
# step) and results.tar.gz (every step's JSON, log and report). Exit status: 0 when no step
# failed; 1 otherwise, after running every step; 2 for a bundle that cannot run here.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${OUT:-$PWD/tlmoe-gpu-results}"
require_gpu=0
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --require-gpu) require_gpu=1 ;;
    --only) only=",$2,"; shift ;;
    -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

fail() { echo "run.sh: $*" >&2; exit 2; }
[ -f "$here/bundle.json" ] || fail "$here is not a tlmoe bundle (no bundle.json); make one with scripts/device_bundle.sh"
mkdir -p "$out" || fail "cannot create the results folder $out"
work="$(mktemp -d "${TMPDIR:-/tmp}/tlmoe-gpu-run.XXXXXX")" || fail "cannot create a scratch folder"
steps="$work/steps"
mkdir -p "$steps"
: >"$steps/order.txt"
log="$out/log.txt"
: >"$log"
say() { echo "$*" | tee -a "$log"; }

# ---- the torch the bundle loads ------------------------------------------------------------------
bundle_field() { sed -n "s/^  \"$1\": \"\\(.*\\)\",\{0,1\}$/\\1/p" "$here/bundle.json"; }
want_torch="$(bundle_field torch)"
py="${PYTHON:-python3}"
torch_info="$("$py" -c 'import glob, os, torch
print(torch.__version__.split("+")[0]); print(os.path.join(os.path.dirname(torch.__file__), "lib"))
print(torch.version.cuda or "none")
site = os.path.dirname(os.path.dirname(torch.__file__))
print(":".join(sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib")) + glob.glob(os.path.join(site, "nvidia", "*", "*", "lib")))))' 2>/dev/null)" ||
  fail "$py cannot import torch; set PYTHON to the python that has torch $want_torch"
got_torch="$(sed -n 1p <<<"$torch_info")"
torch_lib="$(sed -n 2p <<<"$torch_info")"
torch_cuda="$(sed -n 3p <<<"$torch_info")"
nvidia_libs="$(sed -n 4p <<<"$torch_info")"  # the CUDA runtime and NCCL of the torch wheel
[ "$got_torch" = "$want_torch" ] ||
  fail "the bundle was built against torch $want_torch but $py has torch $got_torch (set PYTHON to another python, or rebuild the bundle)"

export LD_LIBRARY_PATH="$here/lib:$torch_lib${nvidia_libs:+:$nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FONTCONFIG_FILE="$work/fonts.conf"  # the bundle's fonts: figures as on the build machine
mkdir -p "$work/fontcache"
sed -e "s|@FONTS@|$here/fonts|" -e "s|@CACHE@|$work/fontcache|" "$here/fonts/fonts.conf.in" >"$FONTCONFIG_FILE"
export TLMOE_TEST_BINARY="$here/bin/tlmoe" TLMOE_TEST_SOURCE_DIR="$here/src" TLMOE_TEST_GOLDEN_DIR="$here/golden"
export TLMOE_TEST_PYTHON="${TLMOE_TEST_PYTHON:-$py}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-}"
[ -n "$OMP_NUM_THREADS" ] || unset OMP_NUM_THREADS
tlmoe="$here/bin/tlmoe"
jobs="${JOBS:-$(nproc)}"

gpu=0
if "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then gpu=1; fi
gpu_name=""
if [ $gpu = 1 ] && command -v nvidia-smi >/dev/null 2>&1; then
  gpu_name="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)"
fi
peak="${PEAK_TFLOPS:-}"
case "$gpu_name" in *H100* | *H200* | *H800* | *H20*) [ -n "$peak" ] || peak=989 ;; esac

# ---- steps ----------------------------------------------------------------------------------------
failed=0
t_start=$(date +%s)
json_str() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | tr '\n\t' '  '; }

# record STEP STATUS RC SECONDS NOTE
record() {
  printf '{"step": "%s", "status": "%s", "exit_code": %s, "seconds": %s, "note": "%s"}\n' \
    "$1" "$2" "$3" "$4" "$(json_str "$5")" >"$steps/$1.json"
  echo "$1" >>"$steps/order.txt"
  say "== $1: $2 (exit $3, $4 s)${5:+ — $5}"
  [ "$2" = fail ] && failed=1
  return 0
}

# run_step NAME TIMEOUT_S NOTE COMMAND...: status pass / fail from the exit code (77: skipped)
run_step() {
  local name="$1" limit="$2" note="$3"
  shift 3
  if [ -n "$only" ] && [[ "$only" != *",$name,"* ]]; then return 0; fi
  say ""
  say "== $name: $*"
  local t0=$(date +%s) rc
  # a separate bash, so that the step functions (exported below) run under timeout too
  timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" >"$steps/$name.log" 2>&1
  rc=$?
  cat "$steps/$name.log" >>"$log"
  tail -n 25 "$steps/$name.log"
  local secs=$(( $(date +%s) - t0 )) status=pass
  if [ $rc = 77 ]; then status=skipped
  elif [ $rc = 124 ] || [ $rc = 137 ]; then status=fail; note="timed out after $limit s; $note"
  elif [ $rc != 0 ]; then status=fail
  fi
  record "$name" "$status" "$rc" "$secs" "$note"
}

skip_step() {  # NAME REASON
  if [ -n "$only" ] && [[ "$only" != *",$1,"* ]]; then return 0; fi
  if [ $require_gpu = 1 ]; then record "$1" fail 1 0 "$2 (--require-gpu)"; else record "$1" skipped 77 0 "$2"; fi
}

step_env() {
  echo "bundle: $(tr -d '\n' <"$here/bundle.json")"
  echo "python: $py; torch $got_torch (CUDA $torch_cuda) from $torch_lib"
  "$py" -c 'import torch
print("torch.cuda.is_available():", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device 0:", p.name, f"{p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs, sm_{p.major}{p.minor}")
    print("cuDNN", torch.backends.cudnn.version(), "NCCL", ".".join(map(str, torch.cuda.nccl.version())))'
  if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi; else echo "nvidia-smi: not found"; fi
  echo "cores: $(nproc); uname: $(uname -srm)"
  "$tlmoe" --version
}

step_cpu_suite() {
  command -v ctest >/dev/null 2>&1 || { echo "ctest (CMake) is not on PATH"; return 1; }
  mkdir -p "$work/ctest/run"
  sed -e "s|@BUNDLE@|$here|g" -e "s|@WORK@|$work/ctest/run|g" "$here/tests/CTestTestfile.cmake.in" \
    >"$work/ctest/CTestTestfile.cmake"
  # Tests that run transformers / CTranslate2 at test time need them in TLMOE_TEST_PYTHON (the
  # GPU image has neither): without them they are left out, and the log says so.
  local exclude=()
  if ! "$TLMOE_TEST_PYTHON" -c "import transformers, ctranslate2" >/dev/null 2>&1; then
    echo "cpu_suite: $TLMOE_TEST_PYTHON has no transformers/ctranslate2: the Hugging Face tests that run them are left out"
    exclude=(-E "hf cli|hf round trip|CTranslate2|save_hf_files")
  fi
  cd "$work/ctest" && ctest --output-on-failure --timeout 900 -j "$jobs" "${exclude[@]}" --output-junit "$steps/cpu_suite.junit.xml"
}

step_pipeline() {
  # The quickstart's stages at a few hundred steps, on CUDA, from a scratch folder (its configs
  # use paths relative to the working directory).
  local d="$work/pipeline" s="--set device=$pipeline_device"
  mkdir -p "$d" && cp -r "$here/src/configs" "$d/" && cd "$d" || return 1
  local v=configs/quickstart_vanilla.yaml c=configs/quickstart.yaml q=runs/quickstart short="--set train.steps=300 --set train.eval_every=150"
  set -e
  "$tlmoe" gym --out $q/gym --seed 42
  "$tlmoe" preprocess --config $v $s
  "$tlmoe" train --config $v $s $short --run-dir $q/vanilla --plain
  "$tlmoe" train --config $c $s $short --run-dir $q/tlmoe --plain
  "$tlmoe" adapt --config $c $s --set "adapt.splits=[13]" --checkpoint $q/tlmoe/best --out $q/adapt --plain
  "$tlmoe" eval --config $c $s --checkpoint $q/tlmoe/best --out $q/zeroshot
  "$tlmoe" analyze-routes --config $c $s --checkpoint $q/tlmoe/best --out $q/analysis
  grep -o '"device": *"[^"]*"' $q/tlmoe/best/meta.json $q/adapt/summary.json 2>/dev/null | head -n 4 || true
  cp $q/adapt/summary.json "$steps/pipeline_adapt_summary.json"
  cp $q/zeroshot/summary.json "$steps/pipeline_zeroshot_summary.json"
  cp $q/analysis/report.md "$steps/pipeline_routes_report.md"
}

pipeline_device="${PIPELINE_DEVICE:-cuda}"
export here py got_torch torch_lib torch_cuda tlmoe work steps jobs pipeline_device
export -f step_env step_cpu_suite step_pipeline

say "tlmoe GPU check from $here -> $out ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
run_step env 60 "" step_env
if [ $gpu = 1 ]; then
  run_step gpu_tests 300 "" "$here/bin/tlmoe_gpu_tests" --durations yes
else
  skip_step gpu_tests "no CUDA device"
fi
run_step cpu_suite 420 "" step_cpu_suite
if [ $gpu = 1 ]; then
  run_step dispatch 150 "" "$tlmoe" bench dispatch --set device=cuda --rounds 3 --min-seconds 0.3 \
    --shapes "8,64,256,3,1;32,128,512,3,1;32,512,768,3,1;32,512,768,3,3;64,512,1024,8,2;4096,1,4096,8,2;2048,1,4096,8,2;16384,1,1024,8,4" \
    --out "$steps/dispatch_report.json"
  run_step train 240 "peak ${peak:-unknown} TFLOP/s" "$tlmoe" bench train --config "$here/src/configs/bench/bart_base.yaml" \
    --set device=cuda --src-len 512 --tgt-len 64 --warmup 3 --steps 10 --rounds 3 ${peak:+--peak-tflops "$peak"} \
    --out "$steps/train_report.json"
  run_step generate 150 "" "$tlmoe" bench generate --config "$here/src/configs/bench/bart_base.yaml" --set device=cuda \
    --batches 4 --rounds 3 --out "$steps/generate_report.json"
  run_step pipeline 300 "on $pipeline_device" step_pipeline
else
  for s in dispatch train generate; do skip_step $s "no CUDA device"; done
  if [ "$pipeline_device" = cpu ]; then run_step pipeline 1200 "on cpu" step_pipeline
  else skip_step pipeline "no CUDA device"; fi
fi

# ---- results -------------------------------------------------------------------------------------
total=$(( $(date +%s) - t_start ))
{
  printf '{"bundle": %s,\n "finished": "%s", "seconds": %s, "failed": %s, "gpu": "%s",\n "steps": [\n' \
    "$(tr -d '\n' <"$here/bundle.json")" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$total" \
    "$([ $failed = 1 ] && echo true || echo false)" "$(json_str "${gpu_name:-none}")"
  first=1
  while read -r name; do
    [ $first = 1 ] || printf ',\n'
    first=0
    printf '  %s' "$(tr -d '\n' <"$steps/$name.json")"
  done <"$steps/order.txt"
  printf '\n ]}\n'
} >"$out/summary.json"
tar -C "$work" -czf "$out/results.tar.gz" steps
say ""
say "done in $total s: $(grep -c '"status": "pass"' "$steps"/*.json | awk -F: '{s+=$2} END {print s}') passed, failed: $failed; results in $out"
rm -rf "$work"
exit $failed
