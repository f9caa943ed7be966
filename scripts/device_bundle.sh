#!/usr/bin/env bash
# Builds tlmoe for the GPU machine and assembles a self-contained bundle folder that runs every
# CUDA test and benchmark in one unattended call (docs/gpu.md).
#
#   scripts/device_bundle.sh [--out DIR] [--build-dir DIR] [--jobs N] [--arch LIST]
#
#   --out DIR        the bundle (default device-bundle/, ignored by git; at most 48 MiB)
#   --build-dir DIR  the build folder (default build-device/)
#   --arch LIST      CUDA architectures, TORCH_CUDA_ARCH_LIST syntax (default "9.0+PTX": machine
#                    code for the H100/H200 and PTX that later GPUs compile at load time)
#
# The GPU machine's image has torch TLMOE_DEVICE_TORCH_VERSION (scripts/versions.env) and none of
# yaml-cpp, SentencePiece, Cairo, CLI11 or Catch2, so tlmoe is built here against that torch (a
# second virtualenv, scripts/setup.sh --device), and the bundle carries everything the binaries
# load that is neither torch, CUDA, glibc nor the C++ runtime. The bundle holds
#   run.sh             the check (scripts/device_run.sh): ./run.sh --help
#   bundle.json        commit, torch, CUDA architectures, build date, size
#   bin/               tlmoe and the test executables (stripped; RUNPATH $ORIGIN/../lib)
#   lib/               the shared libraries they need beside torch's (found with ldd)
#   fonts/             the font the figures use and a fontconfig file for it
#   src/               configs/, data/, docs/config.md, tests/golden/check_export.py: what the tests read
#   golden/            the Hugging Face golden files (made here with the main virtualenv's transformers)
#   tests/             the CPU suite as a ctest file (paths filled in by run.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"
# shellcheck source=versions.env
source scripts/versions.env

out=device-bundle
build=build-device
jobs="$(nproc)"
arch="9.0+PTX"
max_mib=48
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift ;;
    --build-dir) build="$2"; shift ;;
    --jobs) jobs="$2"; shift ;;
    --arch) arch="$2"; shift ;;
    -h | --help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "device_bundle.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
log() { echo "[bundle] $*" >&2; }
t0=$(date +%s)

# ---- the two torches: the device's to build against, the main one's transformers for golden files
dev_py="$(scripts/setup.sh --device --print)"
main_py="$(scripts/setup.sh --print)"
command -v nvcc >/dev/null || { echo "device_bundle.sh: nvcc is needed to compile kernels/*.cu" >&2; exit 2; }
command -v patchelf >/dev/null || { echo "device_bundle.sh: patchelf is missing; run scripts/setup.sh" >&2; exit 2; }

# ---- build ----------------------------------------------------------------------------------
log "building in $build against torch $TLMOE_DEVICE_TORCH_VERSION ($dev_py), CUDA architectures $arch"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTLMOE_CUDA=ON -DTLMOE_PYTHON="$dev_py" \
  -DTLMOE_TORCH_PIN="$TLMOE_DEVICE_TORCH_VERSION" -DTORCH_CUDA_ARCH_LIST="$arch" >/dev/null
targets=(tlmoe tlmoe_tests tlmoe_cli_tests tlmoe_gpu_tests tlmoe_hf_tests)
cmake --build "$build" -j "$jobs" --target "${targets[@]}"
t_build=$(( $(date +%s) - t0 ))

# ---- assemble -------------------------------------------------------------------------------
rm -rf "$out"
mkdir -p "$out"/{bin,lib,fonts,src/docs,src/tests/golden,golden,tests}
out="$(cd "$out" && pwd)"
for t in "${targets[@]}"; do
  bin="$(find "$build" -maxdepth 2 -type f -name "$t" -perm -u+x | head -n 1)"
  [ -n "$bin" ] || { echo "device_bundle.sh: $t was not built" >&2; exit 1; }
  cp "$bin" "$out/bin/$t"
  strip --strip-unneeded "$out/bin/$t"
  patchelf --set-rpath '$ORIGIN/../lib' "$out/bin/$t"
done

# Shared libraries: everything ldd resolves for the binaries except torch and CUDA (the image's
# torch brings them), glibc and the C++ runtime (every Linux has them; newer ones serve).
torch_lib="$("$dev_py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
site="$(dirname "$(dirname "$torch_lib")")"
nvidia_libs="$(find "$site/nvidia" -maxdepth 3 -type d -name lib | tr '\n' ':')"
LD_LIBRARY_PATH="$torch_lib:$nvidia_libs" ldd "$out"/bin/* | awk '/=>/ && $3 ~ /^\// {print $3}' | sort -u |
  while read -r lib; do
    case "$lib" in "$site"/* | /usr/local/cuda*) continue ;; esac
    case "$(basename "$lib")" in
      libc.so* | libm.so* | libmvec.so* | libpthread.so* | libdl.so* | librt.so* | libresolv.so* | libutil.so* | \
        ld-linux*.so* | libanl.so* | libnsl.so* | libstdc++.so* | libgcc_s.so* | libcuda.so* | libnvidia*) continue ;;
    esac
    cp -L "$lib" "$out/lib/"
  done
for so in "$out"/lib/*; do
  strip --strip-unneeded "$so" 2>/dev/null || true
  patchelf --set-rpath '$ORIGIN' "$so"
done

# Fonts: the figures ask for sans-serif; fontconfig is pointed at these by run.sh.
for f in DejaVuSans.ttf DejaVuSans-Bold.ttf; do
  src="$(fc-match -f '%{file}' "DejaVu Sans:style=$([ "$f" = DejaVuSans.ttf ] && echo Book || echo Bold)")"
  cp "$src" "$out/fonts/$f"
done
cat >"$out/fonts/fonts.conf.in" <<'EOF'
<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig>
  <dir>@FONTS@</dir>
  <cachedir>@CACHE@</cachedir>
  <alias><family>sans-serif</family><prefer><family>DejaVu Sans</family></prefer></alias>
</fontconfig>
EOF

# What the tests read from the source tree, and the golden files (python of the main virtualenv).
cp -r configs data "$out/src/"
cp docs/config.md "$out/src/docs/"
cp tests/golden/*.py "$out/src/tests/golden/"
log "making the Hugging Face golden files with $main_py"
HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error OMP_NUM_THREADS=1 "$main_py" tests/golden/make_golden.py "$out/golden" >/dev/null
HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error OMP_NUM_THREADS=1 "$main_py" tests/golden/make_golden_tokenizers.py "$out/golden/tokenizers" >/dev/null

# The CPU suite as ctest sees it in the build (catch_discover_tests' names, timeouts, environment),
# with the bundle's path left as @BUNDLE@ and the scratch folder as @WORK@ for run.sh.
ctest_file="$out/tests/CTestTestfile.cmake.in"
echo "# The CPU suite of tlmoe (made by scripts/device_bundle.sh); run.sh replaces @BUNDLE@ and @WORK@." >"$ctest_file"
add_suite() {  # PREFIX EXE TIMEOUT ENV
  local prefix="$1" exe="$2" limit="$3" env="$4" name esc
  # (Catch2's --list-test-names-only exits with the number of tests it listed)
  { LD_LIBRARY_PATH="$torch_lib:$nvidia_libs" "$out/bin/$exe" --list-test-names-only || true; } | sed '/^$/d' |
    while IFS= read -r name; do
      esc="$(sed -e 's/\\/\\\\/g' -e 's/,/\\,/g' -e 's/\[/\\[/g' -e 's/\]/\\]/g' <<<"$name")"
      printf 'add_test([==[%s: %s]==] "@BUNDLE@/bin/%s" [==[%s]==] --warn NoTests)\n' "$prefix" "$name" "$exe" "$esc"
      printf 'set_tests_properties([==[%s: %s]==] PROPERTIES TIMEOUT %s WORKING_DIRECTORY "@WORK@" ENVIRONMENT "%s")\n' \
        "$prefix" "$name" "$limit" "$env"
    done >>"$ctest_file"
}
add_suite unit tlmoe_tests 600 "OMP_NUM_THREADS=1"
add_suite cli tlmoe_cli_tests 900 "OMP_NUM_THREADS=1"
add_suite hf tlmoe_hf_tests 600 "OMP_NUM_THREADS=1;HF_HUB_OFFLINE=1;TRANSFORMERS_VERBOSITY=error"

cp scripts/device_run.sh "$out/run.sh"
chmod +x "$out/run.sh"
cat >"$out/README.md" <<EOF
# tlmoe GPU bundle

Built by scripts/device_bundle.sh from commit $(git rev-parse --short=12 HEAD) against torch
$TLMOE_DEVICE_TORCH_VERSION. On a machine with a CUDA GPU whose python3 has that torch:

    ./run.sh --require-gpu          # results in ./tlmoe-gpu-results (or \$OUT)

\`./run.sh --help\` lists the steps; docs/gpu.md in the repository explains them.
EOF

size_kib="$(du -sk "$out" | cut -f1)"
n_tests="$(grep -c '^add_test' "$ctest_file")"
cat >"$out/bundle.json" <<EOF
{
  "commit": "$(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- . ':!device-bundle' 2>/dev/null || echo '+dirty')",
  "torch": "$TLMOE_DEVICE_TORCH_VERSION",
  "cuda_arch": "$arch",
  "nvcc": "$(nvcc --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')",
  "built": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "build_seconds": "$t_build",
  "size_kib": "$size_kib",
  "cpu_tests": "$n_tests"
}
EOF
size_mib=$(( (size_kib + 1023) / 1024 ))
log "bundle $out: $size_mib MiB, $n_tests CPU tests, built in $t_build s, assembled in $(( $(date +%s) - t0 - t_build )) s"
if [ "$size_mib" -gt "$max_mib" ]; then
  echo "device_bundle.sh: the bundle is $size_mib MiB, over the $max_mib MiB it may take" >&2
  du -sk "$out"/* "$out"/bin/* | sort -rn | head -n 12 >&2
  exit 1
fi
