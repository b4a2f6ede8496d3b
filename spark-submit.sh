#!/usr/bin/env bash
# spark-submit with the musicrec package shipped to the executors (as a zip on --py-files), so jobs run unchanged
# on a laptop (local[*]) and on a cluster. Any spark-submit option may be given before the job file, e.g.
#   ./spark-submit.sh --master spark://host:7077 --executor-memory 8g jobs/features.py lastfm --input ... --output ...
# Settings for a GPU cluster (see README "Running on a Spark cluster"):
#   --conf spark.executor.resource.gpu.amount=1 --conf spark.task.resource.gpu.amount=1
#   --conf spark.executor.resource.gpu.discoveryScript=$SPARK_HOME/examples/src/main/scripts/getGpusResources.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -x "$ROOT/.venv/bin/spark-submit" ]]; then
  SPARK_SUBMIT="$ROOT/.venv/bin/spark-submit"
  export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$ROOT/.venv/bin/python}"
  export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$ROOT/.venv/bin/python}"
else
  SPARK_SUBMIT="$(command -v spark-submit || true)"
  [[ -n "$SPARK_SUBMIT" ]] || { echo "spark-submit.sh: no spark-submit found; run ./run.sh setup first" >&2; exit 2; }
fi
# the zip holds only the package: the jobs find the default conf/*.yaml through this variable (musicrec.config)
export MUSICREC_CONF_DIR="${MUSICREC_CONF_DIR:-$ROOT/conf}"
ZIP="$(mktemp -d)/musicrec.zip"
trap 'rm -rf "$(dirname "$ZIP")"' EXIT
(cd "$ROOT" && "${PYSPARK_PYTHON:-python3}" -c "
import sys, zipfile, pathlib
with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:
    for p in sorted(pathlib.Path('musicrec').rglob('*.py')):
        z.write(p)
" "$ZIP")
has_master=0
for arg in "$@"; do [[ "$arg" == "--master" || "$arg" == --master=* ]] && has_master=1; done
extra=()
[[ $has_master == 1 ]] || extra+=(--master "${MUSICREC_SPARK_MASTER:-local[2]}")
exec "$SPARK_SUBMIT" "${extra[@]}" --py-files "$ZIP" --driver-memory "${MUSICREC_DRIVER_MEMORY:-6g}" "$@"
