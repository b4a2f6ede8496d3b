#!/usr/bin/env bash
# Set up everything musicrec needs, idempotently: Java (if missing), a virtual environment at .venv/, the pinned
# package set from requirements/constraints.txt, and Horovod 0.28.1 built with PyTorch + Gloo (its wheel cached
# under ~/.cache/musicrec so a second machine set-up takes seconds). Re-running on a ready machine changes nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
CONSTRAINTS="$ROOT/requirements/constraints.txt"
HOROVOD_VERSION=0.28.1
TORCH_VERSION=$(sed -n 's/^torch==\(.*\)$/\1/p' "$CONSTRAINTS")
CACHE="${MUSICREC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/musicrec}"

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# The stamp records what was installed; when setup.py and the constraints are unchanged, set-up is a no-op.
stamp_value() { cat "$ROOT/setup.py" "$CONSTRAINTS" "$ROOT/scripts/setup.sh" | sha256sum | cut -d' ' -f1; }
STAMP="$VENV/.musicrec-setup"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp_value)" ]]; then
  log "environment is up to date ($VENV)"
  exit 0
fi

# --- system prerequisites: Python >= 3.10 with venv, and a Java runtime for Spark -------------------------------
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || die "python3 not found; install Python 3.10 or newer"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "Python >= 3.10 is required ($("$PYTHON" --version))"
if ! command -v java >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    log "installing a Java runtime for Spark (openjdk-17-jre-headless)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  else
    die "Spark needs Java 17: install a JDK/JRE 17 (for example 'apt-get install openjdk-17-jre-headless')"
  fi
fi

# --- virtual environment ------------------------------------------------------------------------------------------
if [[ ! -x "$PY" ]]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$PY" -m pip --disable-pip-version-check --no-input)
log "installing build tools"
"${PIP[@]}" install -q -c "$CONSTRAINTS" pip setuptools wheel "cmake<4"
# torch first, on its own, so pip takes the CPU build named in the constraints instead of a multi-GB CUDA one.
log "installing torch==$TORCH_VERSION"
"${PIP[@]}" install -q -c "$CONSTRAINTS" "torch==$TORCH_VERSION"

# --- Horovod: build once per (horovod, torch, python) and cache the wheel -------------------------------------------
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
WHEEL_DIR="$CACHE/wheels/horovod-$HOROVOD_VERSION-torch$TORCH_VERSION-$PYTAG"
if ! "$PY" -c "import horovod.torch" >/dev/null 2>&1; then
  if ! ls "$WHEEL_DIR"/horovod-*.whl >/dev/null 2>&1; then
    log "building Horovod $HOROVOD_VERSION with PyTorch + Gloo (one time, about 6 minutes on 2 cores)"
    BUILD=$(mktemp -d)
    trap 'rm -rf "$BUILD"' EXIT
    "${PIP[@]}" download -q --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$BUILD"
    tar -xzf "$BUILD/horovod-$HOROVOD_VERSION.tar.gz" -C "$BUILD"
    SRC="$BUILD/horovod-$HOROVOD_VERSION"
    # torch >= 2.1 headers need C++17; Horovod 0.28.1 forces C++14 in two CMake files.
    sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$SRC/CMakeLists.txt" "$SRC/horovod/torch/CMakeLists.txt"
    grep -q 'CMAKE_CXX_STANDARD 17' "$SRC/horovod/torch/CMakeLists.txt" || die "could not patch Horovod's C++ standard"
    mkdir -p "$WHEEL_DIR"
    (cd "$SRC" && HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITH_GLOO=1 \
      HOROVOD_WITHOUT_MPI=1 HOROVOD_CPU_OPERATIONS=gloo CMAKE_POLICY_VERSION_MINIMUM=3.5 MAKEFLAGS="-j$(nproc)" \
      "${PIP[@]}" wheel -q --no-build-isolation --no-deps -w "$WHEEL_DIR.partial" .) || die "Horovod build failed"
    mv "$WHEEL_DIR.partial"/horovod-*.whl "$WHEEL_DIR"/ && rm -rf "$WHEEL_DIR.partial"
  else
    log "using cached Horovod wheel from $WHEEL_DIR"
  fi
  "${PIP[@]}" install -q -c "$CONSTRAINTS" "$WHEEL_DIR"/horovod-*.whl
fi

# --- the project and the rest of the pinned set ---------------------------------------------------------------------
log "installing musicrec and the pinned dependency set"
"${PIP[@]}" install -q -c "$CONSTRAINTS" -e ".[test]"
"${PIP[@]}" check >/dev/null || { "${PIP[@]}" check; die "pip check failed"; }
"$VENV/bin/horovodrun" --check-build | grep -q '\[X\] PyTorch' || die "Horovod was built without PyTorch"
"$VENV/bin/horovodrun" --check-build | grep -q '\[X\] Gloo' || die "Horovod was built without Gloo"

stamp_value >"$STAMP"
log "ready: $VENV (torch $TORCH_VERSION, horovod $HOROVOD_VERSION with PyTorch + Gloo)"
