#!/usr/bin/env bash
# Set up everything musicrec needs, idempotently, in one of two dependency profiles (README "Two dependency profiles"):
#   default  (scripts/setup.sh, or --profile default): Java (if missing), a virtual environment at .venv/, the pinned
#            package set from requirements/constraints.txt, and Horovod 0.28.1 built with PyTorch + Gloo (its wheel
#            cached under ~/.cache/musicrec so a second machine set-up takes seconds); Petastorm reads the Parquet.
#   current  (--profile current, or MUSICREC_PROFILE=current): Java (if missing), .venv-current/ with the lock
#            requirements/constraints-current.txt (current pyarrow, numpy 2, pandas 2.3, PySpark's [sql] extra met; no
#            Horovod, no Petastorm: the loader reads the Parquet with pyarrow, torch.distributed trains); the project's
#            package is linked into the venv (setup.py declares the default profile's pins).
# Re-running on a ready machine changes nothing (a stamp per venv records what was installed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PROFILE="${MUSICREC_PROFILE:-default}"

log() { printf '[setup %s] %s\n' "$PROFILE" "$*" >&2; }
die() { printf '[setup %s] ERROR: %s\n' "$PROFILE" "$*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --profile) [[ $# -ge 2 ]] || die "--profile needs a value: default or current"; PROFILE="$2"; shift 2 ;;
    --profile=*) PROFILE="${1#--profile=}"; shift ;;
    *) die "unknown option '$1' (usage: scripts/setup.sh [--profile default|current])" ;;
  esac
done
case "$PROFILE" in
  default) VENV="$ROOT/.venv"; CONSTRAINTS="$ROOT/requirements/constraints.txt"; REQUIRES="$ROOT/setup.py" ;;
  current) VENV="$ROOT/.venv-current"; CONSTRAINTS="$ROOT/requirements/constraints-current.txt"
           REQUIRES="$ROOT/requirements/current.in" ;;
  *) die "unknown profile '$PROFILE' (--profile or MUSICREC_PROFILE): default or current" ;;
esac
PY="$VENV/bin/python"
HOROVOD_VERSION=0.28.1
TORCH_VERSION=$(sed -n 's/^torch==\(.*\)$/\1/p' "$CONSTRAINTS")
CACHE="${MUSICREC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/musicrec}"

# The stamp records what was installed; when the profile's requirements (setup.py, or requirements/current.in), its
# lock and this script are unchanged, set-up is a no-op.
stamp_value() { cat "$REQUIRES" "$CONSTRAINTS" "$ROOT/scripts/setup.sh" | sha256sum | cut -d' ' -f1; }
STAMP="$VENV/.musicrec-setup"
# The default profile's local Spark driver also gets its class archive (scripts/jvm_archive.sh: made once per Java
# and PySpark, a no-op when present; without it Spark only starts slower).
jvm_archive() { bash "$ROOT/scripts/jvm_archive.sh" || log "no driver class archive (continuing)"; }
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp_value)" ]]; then
  log "environment is up to date ($VENV)"
  [[ "$PROFILE" == default ]] && jvm_archive
  exit 0
fi

# --- system prerequisites: Python >= 3.10 with venv (the current profile: >= 3.11, which its numpy 2.4 needs), and a
# Java runtime for Spark
PYTHON="${PYTHON:-python3}"
MIN_MINOR=10
[[ "$PROFILE" == current ]] && MIN_MINOR=11
command -v "$PYTHON" >/dev/null || die "python3 not found; install Python 3.$MIN_MINOR or newer"
HOST_PY="$PYTHON"
[[ -x "$VENV/bin/python" ]] && HOST_PY="$VENV/bin/python"  # an existing venv keeps the Python it was made with
"$HOST_PY" -c "import sys; sys.exit(sys.version_info < (3, $MIN_MINOR))" \
  || die "the $PROFILE profile needs Python >= 3.$MIN_MINOR ($("$HOST_PY" --version 2>&1)); set PYTHON to a newer one"
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
  [[ "$PROFILE" == default ]] || echo '*' >"$VENV/.gitignore"  # .gitignore names .venv/ only
fi
PIP=("$PY" -m pip --disable-pip-version-check --no-input)
log "installing build tools"
BUILD_TOOLS=(pip setuptools wheel)
[[ "$PROFILE" == current ]] || BUILD_TOOLS+=("cmake<4")  # cmake: Horovod's build
"${PIP[@]}" install -q -c "$CONSTRAINTS" "${BUILD_TOOLS[@]}"
# torch first, on its own, so pip takes the CPU build named in the constraints instead of a multi-GB CUDA one.
log "installing torch==$TORCH_VERSION"
"${PIP[@]}" install -q -c "$CONSTRAINTS" "torch==$TORCH_VERSION"

# --- the current profile: the lock, the project on the path, PySpark's declared Arrow requirement checked ----------
if [[ "$PROFILE" == current ]]; then
  log "installing the current-dependency set (requirements/current.in, pinned by requirements/constraints-current.txt)"
  "${PIP[@]}" install -q -c "$CONSTRAINTS" -r "$REQUIRES"
  # The project's code, linked into site-packages: without setup.py's default-profile pins (and not the repository
  # root on the path, whose musicrec.egg-info of the default profile's editable install pip check would read).
  SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  ln -sfn "$ROOT/musicrec" "$SITE/musicrec"
  "${PIP[@]}" check >/dev/null || { "${PIP[@]}" check; die "pip check failed"; }
  "$PY" -c 'from pyspark.sql.pandas import utils; utils.require_minimum_pandas_version()
utils.require_minimum_pyarrow_version(); import musicrec' \
    || die "PySpark's declared pandas/pyarrow requirement is not met, or musicrec is not importable"
  ! "$PY" -c 'import petastorm' 2>/dev/null || die "petastorm is installed in the current profile"
  stamp_value >"$STAMP"
  VERSIONS=$("$PY" -c 'import pyarrow as a, numpy as n, pandas as p; print(a.__version__, n.__version__, p.__version__)')
  read -r PA NP PD <<<"$VERSIONS"
  log "ready: $VENV (torch $TORCH_VERSION, pyarrow $PA, numpy $NP, pandas $PD; no Horovod, no Petastorm)"
  exit 0
fi

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
# Captured first: piping into `grep -q` would close the pipe early, and horovodrun's BrokenPipeError fails pipefail.
CHECK_BUILD=$("$VENV/bin/horovodrun" --check-build) || die "horovodrun --check-build failed"
grep -q '\[X\] PyTorch' <<<"$CHECK_BUILD" || die "Horovod was built without PyTorch"
grep -q '\[X\] Gloo' <<<"$CHECK_BUILD" || die "Horovod was built without Gloo"

stamp_value >"$STAMP"
log "ready: $VENV (torch $TORCH_VERSION, horovod $HOROVOD_VERSION with PyTorch + Gloo)"
jvm_archive
