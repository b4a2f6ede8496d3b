#!/usr/bin/env bash
# musicrec's front door. Every command first makes sure the environment is set up (scripts/setup.sh, a no-op when
# it already is), then runs inside .venv/.
#   ./run.sh demo [--help | options]   set up, then run the main job end to end on the embedded default data
#   ./run.sh test [pytest options]     set up, then run the test suite
#   ./run.sh setup                     only set up
#   ./run.sh mlflow-ui [--port N]      the MLflow UI on the project's tracking store, bound to 127.0.0.1
#   ./run.sh python|spark-submit|horovodrun|torchrun|mlflow ARGS...   run a tool from the environment
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
cmd="${1:-help}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
  setup) exec bash scripts/setup.sh ;;
  demo)  bash scripts/setup.sh && exec "$ROOT/.venv/bin/python" jobs/pipeline.py "$@" ;;
  test)  bash scripts/setup.sh && exec "$ROOT/.venv/bin/python" -m pytest "$@" ;;
  mlflow-ui)
         bash scripts/setup.sh && exec "$ROOT/.venv/bin/mlflow" ui --backend-store-uri "sqlite:///$ROOT/mlflow.db" \
           --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}" "$@" ;;
  python|spark-submit|horovodrun|torchrun|mlflow|pytest)
         bash scripts/setup.sh && PATH="$ROOT/.venv/bin:$PATH" exec "$ROOT/.venv/bin/$cmd" "$@" ;;
  help|-h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) echo "run.sh: unknown command '$cmd' (try ./run.sh help)" >&2; exit 2 ;;
esac
