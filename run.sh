#!/usr/bin/env bash
# musicrec's front door. Every command first makes sure the environment is set up (scripts/setup.sh, a no-op when
# it already is), then runs inside the profile's venv: .venv/ (default: Horovod + Petastorm) or .venv-current/
# (MUSICREC_PROFILE=current: current pyarrow/numpy/pandas, torch.distributed, the pyarrow reader).
#   ./run.sh demo [--help | options]   set up, then run the main job end to end on the embedded default data
#   ./run.sh test                      set up, then the whole suite (default profile), then CURRENT_TESTS in the
#                                      current profile (set up first): what CI runs (.ci/run)
#   ./run.sh test [pytest options]     set up, then pytest with these options in the profile (MUSICREC_PROFILE)
#   ./run.sh setup [--profile current] only set up (default profile, or MUSICREC_PROFILE / --profile)
#   ./run.sh mlflow-ui [--port N]      the MLflow UI on the project's tracking store, bound to 127.0.0.1
#   ./run.sh python|spark-submit|horovodrun|torchrun|mlflow ARGS...   run a tool from the environment
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
# The tests that also run in the current-dependency profile (the loader, both readers, PySpark's Arrow paths,
# torch.distributed with torchrun and TorchDistributor in local and cluster mode).
CURRENT_TESTS=(tests/test_loader.py tests/test_arrow_reader.py tests/test_current_profile.py
               tests/test_distributed_torch.py)
PROFILE="${MUSICREC_PROFILE:-default}"
case "$PROFILE" in
  default) VENV="$ROOT/.venv" ;;
  current) VENV="$ROOT/.venv-current" ;;
  *) echo "run.sh: MUSICREC_PROFILE='$PROFILE' is not a profile (default or current)" >&2; exit 2 ;;
esac
cmd="${1:-help}"
[[ $# -gt 0 ]] && shift
setup() { MUSICREC_PROFILE="$PROFILE" bash scripts/setup.sh; }
test_all() {  # the default profile's suite, then CURRENT_TESTS in the current profile; fails if either failed
  local status=0
  if [[ "$PROFILE" == default ]]; then
    setup && "$VENV/bin/python" -m pytest || status=$?
    [[ -n "${MUSICREC_PROFILE:-}" ]] && return "$status"  # MUSICREC_PROFILE=default: this profile only
  fi
  bash scripts/setup.sh --profile current && "$ROOT/.venv-current/bin/python" -m pytest "${CURRENT_TESTS[@]}" \
    || status=$?
  return "$status"
}
case "$cmd" in
  setup) exec bash scripts/setup.sh --profile "$PROFILE" "$@" ;;
  demo)  setup && exec "$VENV/bin/python" jobs/pipeline.py "$@" ;;
  test)  if [[ $# -eq 0 ]]; then test_all; else setup && exec "$VENV/bin/python" -m pytest "$@"; fi ;;
  mlflow-ui)
         setup && exec "$VENV/bin/mlflow" ui --backend-store-uri "sqlite:///$ROOT/mlflow.db" \
           --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}" "$@" ;;
  python|spark-submit|horovodrun|torchrun|mlflow|pytest)
         setup
         if [[ ! -x "$VENV/bin/$cmd" ]]; then  # e.g. horovodrun in the current profile, which has no Horovod
           hint=""
           [[ $cmd == horovodrun ]] && hint="; Horovod is only in the default profile: run it without MUSICREC_PROFILE"
           echo "run.sh: $cmd is not installed in the $PROFILE profile ($VENV/bin/$cmd not found)$hint" >&2
           exit 2
         fi
         PATH="$VENV/bin:$PATH" exec "$VENV/bin/$cmd" "$@" ;;
  help|-h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) echo "run.sh: unknown command '$cmd' (try ./run.sh help)" >&2; exit 2 ;;
esac
