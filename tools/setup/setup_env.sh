#!/usr/bin/env bash
# Creates .venv at the repository root with the pinned OpenMMLab stack and mm_efficientconv (editable).
# Idempotent: every step checks what is already there. The compiled mmcv wheel is cached outside the work
# tree (MMEFF_CACHE, default ~/.cache/mm_efficientconv), keyed by the torch version and the ops flavour
# (cpu / cuda), so a second setup or a fresh clone on the same machine skips the ~20 minute compile.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
CACHE="${MMEFF_CACHE:-$HOME/.cache/mm_efficientconv}"
CONSTRAINTS="$ROOT/tools/setup/constraints.txt"
STAMP="$VENV/.mm_efficientconv_setup"

TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0

say() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- python 3.11 virtual environment
PYTHON_BIN="${PYTHON:-}"
if [ -z "$PYTHON_BIN" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON_BIN="$(command -v "$cand")"; break
    fi
  done
fi
[ -n "$PYTHON_BIN" ] || die "Python 3.11 is required (set PYTHON=/path/to/python3.11); none found on PATH."

if [ ! -x "$PY" ]; then
  say "creating $VENV with $PYTHON_BIN"
  "$PYTHON_BIN" -m venv "$VENV" || die "python -m venv failed (is the venv module installed?)"
fi
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || die "$VENV is not Python 3.11; remove it and rerun."

pip_install() { "${PIP[@]}" install -c "$CONSTRAINTS" "$@"; }

# pip runs out of disk half-way through an install with "[Errno 28] No space left on device"; each step that
# writes gigabytes first checks that the filesystem it writes to has room for it (measured sizes + margin).
need_space() {  # DIR MIB WHAT
  local have
  have="$(df -Pm "$1" 2>/dev/null | awk 'NR == 2 {print $4}')"
  [ -n "$have" ] || return 0  # df cannot tell: let the step try
  [ "$have" -ge "$2" ] || die "$3 needs about $(( ($2 + 1023) / 1024 )) GiB free on the filesystem of $1; \
only $have MiB are free. Free some space (or set TMPDIR / MMEFF_CACHE to a roomier filesystem) and rerun make setup."
}

# Fast path: everything installed by this very script version already.
# the compiled ops' sources are part of the key: an edited kernel is rebuilt by the editable install
SCRIPT_HASH="$(cat "$0" "$CONSTRAINTS" "$ROOT/setup.py" "$ROOT"/mm_efficientconv/csrc/*.cpp 2>/dev/null \
  | sha256sum | cut -c1-16)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SCRIPT_HASH" ] && \
   "$PY" -c 'import torch, mmcv, mmcv.ops, mmengine, mmdet, mmseg, mmpretrain, mm_efficientconv' >/dev/null 2>&1; then
  say "environment is up to date ($VENV)"
  exit 0
fi

say "build tools (setuptools<81 keeps pkg_resources, needed by mmcv's setup.py and mmengine's config bases)"
pip_install -q "pip>=23" wheel ninja "setuptools>=77.0.3,<81"

# ---------------------------------------------------------------- torch
if ! "$PY" -c "import torch, torchvision, sys; sys.exit(not (torch.__version__.startswith('$TORCH_VERSION') and torchvision.__version__.startswith('$TORCHVISION_VERSION')))" >/dev/null 2>&1; then
  need_space "$VENV" 8192 "installing torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION (5.6 GiB in .venv, a CUDA build) and the rest of the stack (~1 GiB)"
  say "installing torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION (several GB on first install)"
  pip_install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi
TORCH_FULL="$("$PY" -c 'import torch; print(torch.__version__)')"

# ---------------------------------------------------------------- mmcv with compiled ops (cached wheel)
if "$PY" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null || [ "${FORCE_CUDA:-0}" = 1 ]; then
  OPS_FLAVOUR=cuda
  command -v nvcc >/dev/null 2>&1 || [ -n "${CUDA_HOME:-}" ] || die "a GPU is visible but no CUDA toolkit (nvcc / CUDA_HOME) to compile mmcv's CUDA ops; install it or set FORCE_CUDA=0 with CUDA_VISIBLE_DEVICES= for a CPU build"
  export FORCE_CUDA=1
else
  OPS_FLAVOUR=cpu
  export FORCE_CUDA=0
fi
WHEEL_DIR="$CACHE/mmcv-$MMCV_VERSION-torch$TORCH_FULL-$OPS_FLAVOUR-py311"
mmcv_ok() { "$PY" -c "import mmcv, sys; from mmcv.ops import nms, RoIAlign; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" >/dev/null 2>&1; }

if ! mmcv_ok; then
  WHEEL="$(ls "$WHEEL_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
  if [ -z "$WHEEL" ]; then
    say "no cached mmcv wheel in $WHEEL_DIR: compiling mmcv $MMCV_VERSION with ops ($OPS_FLAVOUR); ~20 min on 2 cores"
    need_space "${TMPDIR:-/tmp}" 1024 "compiling mmcv (its build directory, ~0.1 GiB, and pip's temporary files)"
    BUILD="$(mktemp -d "${TMPDIR:-/tmp}/mmcv-build.XXXXXX")"
    trap 'rm -rf "$BUILD"' EXIT
    "${PIP[@]}" download --no-deps --no-binary mmcv --no-build-isolation "mmcv==$MMCV_VERSION" -d "$BUILD" -q \
      || die "could not download the mmcv $MMCV_VERSION source distribution from PyPI"
    tar -xzf "$BUILD"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD"
    SRC="$BUILD/mmcv-$MMCV_VERSION"
    # torch >= 2.10 headers need C++20; mmcv 2.1.0 hard-codes -std=c++17 (and c++14 for some flavours).
    sed -i -e 's/-std=c++17/-std=c++20/g' -e 's/-std=c++14/-std=c++20/g' "$SRC/setup.py"
    grep -q 'c++20' "$SRC/setup.py" || die "could not patch the C++ standard in mmcv's setup.py"
    say "compiling (log: $BUILD/build.log)"
    if ! (cd "$SRC" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
          "${PIP[@]}" wheel --no-deps --no-build-isolation -w "$BUILD/dist" . > "$BUILD/build.log" 2>&1); then
      tail -n 40 "$BUILD/build.log" >&2
      die "mmcv compilation failed (full log above, last 40 lines)"
    fi
    mkdir -p "$WHEEL_DIR"
    BUILT="$(ls "$BUILD"/dist/mmcv-*.whl | head -n1)"
    cp "$BUILT" "$WHEEL_DIR/.partial.whl" && mv "$WHEEL_DIR/.partial.whl" "$WHEEL_DIR/$(basename "$BUILT")"
    WHEEL="$WHEEL_DIR/$(basename "$BUILT")"
    say "cached $WHEEL"
  else
    say "using cached mmcv wheel $WHEEL"
  fi
  pip_install -q --no-deps "$WHEEL"
  pip_install -q "mmengine==0.10.7" addict packaging pyyaml yapf opencv-python-headless "numpy<2.5"
  mmcv_ok || die "mmcv $MMCV_VERSION installed but mmcv.ops does not import"
fi

# ---------------------------------------------------------------- codebases and tools
say "installing mmengine, mmdet, mmsegmentation, mmpretrain and test/deploy/benchmark tools"
pip_install -q -r "$ROOT/requirements.txt"

say "installing mm_efficientconv (editable; compiles the optional ops mm_efficientconv._ext, ~2-3 min on 2 cores)"
INSTALL_LOG="$VENV/mm_efficientconv-install.log"
if ! pip_install -v --no-deps --no-build-isolation -e "$ROOT" > "$INSTALL_LOG" 2>&1; then
  tail -n 40 "$INSTALL_LOG" >&2
  die "installing mm_efficientconv failed (last 40 lines above; full log: $INSTALL_LOG)"
fi

"$PY" - <<'PY' || die "post-install check failed"
import mmdet.models, mmseg.models, mmpretrain.models, mm_efficientconv  # noqa: F401
from mmcv.ops import RoIAlign, nms  # noqa: F401
import pkg_resources  # noqa: F401  (mmengine needs it for `mmdet::` config bases)
import mmcv, mmdet, mmseg, mmpretrain, mmengine, torch
print('[setup] ok: torch %s, mmcv %s, mmengine %s, mmdet %s, mmseg %s, mmpretrain %s' % (
    torch.__version__, mmcv.__version__, mmengine.__version__, mmdet.__version__, mmseg.__version__,
    mmpretrain.__version__))
PY
# The compiled op is optional (PyTorch fallback), but whether it was built must be visible.
if EXT_FILE="$("$PY" -c 'import mm_efficientconv._ext as e; print(e.__file__)' 2>/dev/null)"; then
  say "compiled op mm_efficientconv._ext: BUILT ($EXT_FILE)"
else
  if [ "${MMEFF_WITH_OPS:-1}" = 0 ]; then
    say "compiled op mm_efficientconv._ext: NOT BUILT (MMEFF_WITH_OPS=0)"
  else
    say "compiled op mm_efficientconv._ext: NOT BUILT - the compiler's messages (full log: $INSTALL_LOG):"
    grep -E 'mm_efficientconv\._ext|error:' "$INSTALL_LOG" | head -n 20 >&2 || true
  fi
  say "without it, DO-Conv training on the CPU uses the slower PyTorch composition (same results)"
fi
echo "$SCRIPT_HASH" > "$STAMP"
say "done"
