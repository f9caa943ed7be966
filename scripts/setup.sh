#!/usr/bin/env bash
# Installs everything tlmoe needs on a fresh Debian 12 machine. Idempotent: a second run
# checks and does nothing. Versions are pinned in scripts/versions.env.
#
#   scripts/setup.sh                     install what is missing
#   scripts/setup.sh --print             print the virtualenv's python path (after installing)
#   scripts/setup.sh --device [--print]  the same for the GPU machine's torch
#                                        (TLMOE_DEVICE_TORCH_VERSION, for scripts/device_bundle.sh)
#
# LibTorch comes from the PyPI `torch` wheel, installed into a virtualenv kept OUTSIDE the
# checkout, so every clone (and every CI run in a fresh clone) reuses it:
#   ${TLMOE_CACHE:-$HOME/.cache/tlmoe}/venv-torch-<version>
# The --device virtualenv sits beside it and holds torch and numpy only (no test tooling).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

print_only=0
device=0
for arg in "$@"; do
  case "$arg" in
    --print) print_only=1 ;;
    --device) device=1 ;;
    *) echo "[setup] error: unknown argument '$arg' (expected --print and/or --device)" >&2; exit 2 ;;
  esac
done
torch_version="$TLMOE_TORCH_VERSION"
[ $device = 1 ] && torch_version="$TLMOE_DEVICE_TORCH_VERSION"

cache="${TLMOE_CACHE:-$HOME/.cache/tlmoe}"
venv="$cache/venv-torch-$torch_version"
stamp="$venv/.tlmoe-stamp"
want_stamp="torch=$torch_version numpy=$TLMOE_NUMPY_VERSION"

log() { [ $print_only = 1 ] || echo "[setup] $*" >&2; }

# --- Debian packages ---------------------------------------------------------------------
missing=()
for p in $TLMOE_APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
else
  log "Debian packages: all present"
fi

# --- LibTorch (PyPI torch wheel) in a shared virtualenv -----------------------------------
py="${TLMOE_PYTHON:-python3}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_stamp" ] && [ -x "$venv/bin/python" ]; then
  log "LibTorch: torch $torch_version already in $venv"
else
  log "creating $venv (torch $torch_version; several GB on first install)"
  mkdir -p "$cache"
  # The stamp is written last: an interrupted install has none and is redone from scratch.
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >&2
  "$venv/bin/pip" install -q "torch==$torch_version" "numpy==$TLMOE_NUMPY_VERSION" >&2
  echo "$want_stamp" > "$stamp"
  log "LibTorch installed"
fi

# --- transformers (test tooling: golden files of the Hugging Face tests) -------------------
# Installed next to torch in the same virtualenv; tlmoe itself never needs Python at run time.
have_tf=$("$venv/bin/python" -c "import transformers; print(transformers.__version__)" 2>/dev/null || true)
if [ $device = 1 ]; then
  :  # the device's torch is for building the bundle; its tests' golden files come from the main virtualenv
elif [ "$have_tf" != "$TLMOE_TRANSFORMERS_VERSION" ]; then
  log "installing transformers $TLMOE_TRANSFORMERS_VERSION (test tooling) into $venv"
  "$venv/bin/pip" install -q "transformers==$TLMOE_TRANSFORMERS_VERSION" >&2
else
  log "transformers: $TLMOE_TRANSFORMERS_VERSION already in $venv"
fi
if [ $device = 0 ]; then
  # CTranslate2 (the serving check of `tlmoe export`), TensorBoard (the reader of tlmoe's event
  # files) and transformers 4.x (the legacy semantics' reference), all test tooling.
  have_ct2=$("$venv/bin/python" -c "import ctranslate2; print(ctranslate2.__version__)" 2>/dev/null || true)
  if [ "$have_ct2" != "$TLMOE_CTRANSLATE2_VERSION" ]; then
    log "installing ctranslate2 $TLMOE_CTRANSLATE2_VERSION (test tooling) into $venv"
    "$venv/bin/pip" install -q "ctranslate2==$TLMOE_CTRANSLATE2_VERSION" >&2
  fi
  have_tb=$("$venv/bin/python" -c "import tensorboard; print(tensorboard.__version__)" 2>/dev/null || true)
  if [ "$have_tb" != "$TLMOE_TENSORBOARD_VERSION" ]; then
    log "installing tensorboard $TLMOE_TENSORBOARD_VERSION (test tooling) into $venv"
    "$venv/bin/pip" install -q "tensorboard==$TLMOE_TENSORBOARD_VERSION" >&2
  fi
  legacy="$venv/legacy-transformers"
  if [ "$(cat "$legacy/.tlmoe-stamp" 2>/dev/null)" != "$TLMOE_LEGACY_TRANSFORMERS_PINS" ]; then
    log "installing the transformers 4.x reference (test tooling) into $legacy"
    rm -rf "$legacy"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install -q --no-deps --target "$legacy" $TLMOE_LEGACY_TRANSFORMERS_PINS >&2
    echo "$TLMOE_LEGACY_TRANSFORMERS_PINS" > "$legacy/.tlmoe-stamp"
  fi
fi

# --- checks ------------------------------------------------------------------------------
got=$("$venv/bin/python" -c "import torch; print(torch.__version__.split('+')[0])")
if [ "$got" != "$torch_version" ]; then
  echo "[setup] error: $venv holds torch $got, expected $torch_version; delete it and rerun" >&2
  exit 1
fi
if command -v nvcc >/dev/null 2>&1; then
  nv_major=$(nvcc --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
  tc_major=$("$venv/bin/python" -c "import torch; v=torch.version.cuda; print(v.split('.')[0] if v else '')")
  if [ -n "$tc_major" ] && [ "$nv_major" != "$tc_major" ]; then
    log "warning: nvcc is CUDA $nv_major but torch was built for CUDA $tc_major; TLMOE_CUDA=AUTO will skip the .cu kernels"
  fi
fi
if [ $print_only = 1 ]; then
  echo "$venv/bin/python"
fi
