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
# The zip lives in a temporary folder for this call only, removed when spark-submit ends (so spark-submit runs as a
# child, not through exec, which would skip the EXIT trap); INT/TERM/HUP are passed on to it.
ZIP_DIR="$(mktemp -d "${TMPDIR:-/tmp}/musicrec-submit.XXXXXX")"
trap 'rm -rf "$ZIP_DIR" ${jvm_archive_part:+"$jvm_archive_part"}' EXIT  # and an unfinished class archive
ZIP="$ZIP_DIR/musicrec.zip"
(cd "$ROOT" && "${PYSPARK_PYTHON:-python3}" -c "
import sys, zipfile, pathlib
with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:
    for p in sorted(pathlib.Path('musicrec').rglob('*.py')):
        z.write(p)
" "$ZIP")
# One pass over the arguments: the master, whether the caller set the driver's JVM flags or AQE, and the job's --input.
master="${MUSICREC_SPARK_MASTER:-local[2]}"
has_master=0 has_java_opts=0 has_aqe=0 input=""
prev=""
for arg in "$@"; do
  [[ "$arg" == spark.sql.adaptive.enabled=* || "$arg" == --conf=spark.sql.adaptive.enabled=* ]] && has_aqe=1
  [[ "$prev" == "--master" ]] && master="$arg"
  [[ "$arg" == --master=* ]] && master="${arg#--master=}"
  [[ "$arg" == "--master" || "$arg" == --master=* ]] && has_master=1
  [[ "$arg" == --driver-java-options || "$arg" == --driver-java-options=* ]] && has_java_opts=1
  [[ "$prev" == "--input" ]] && input="$arg"
  [[ "$arg" == --input=* ]] && input="${arg#--input=}"
  prev="$arg"
done
extra=()
[[ $has_master == 1 ]] || extra+=(--master "$master")
# A local master has no executors elsewhere: bind the driver, and so its web UI (port 4040), to loopback instead of
# every interface. Set SPARK_LOCAL_IP yourself to choose another address.
[[ "$master" == local* ]] && export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"
# Settings of a local driver, which is also the executor, so they decide the job's speed (benchmarks/
# RESULTS_lastfm.md and RESULTS_kkbox.md, 2026-12-02): the throughput collector (ParallelGC) instead of G1 (full-size
# Last.fm job 5-9% less wall and CPU time); for an --input folder under 64 MiB (a small input) also the JIT's quick
# compiler only (TieredStopAtLevel=1: demo-size jobs 0-23% sooner with 30-45% less CPU, as C2 compiles cost more than
# they return in a short run; at full size the same flag makes the job 2.7x slower) and no adaptive query execution
# (spark.sql.adaptive.enabled=false: AQE submits every shuffle stage as a job of its own and re-plans after it, a
# fixed cost per stage that a few MiB of data never pays back; demo-size Last.fm job 40.3 / 40.8 s -> 37.2 / 33.3 s,
# KKBOX within noise, RESULTS_lastfm.md "AQE off for small inputs").
# MUSICREC_DRIVER_JAVA_OPTS (even empty) or --driver-java-options replace the JVM flags, a --conf
# spark.sql.adaptive.enabled=... the AQE setting.
java_opts="" small_input=0
if [[ "$master" == local* ]]; then
  input_bytes="$( [[ -d "$input" ]] && du -sbL "$input" 2>/dev/null | cut -f1 || true)"  # empty: no such folder
  [[ -n "$input_bytes" ]] && (( input_bytes < 64 * 1024 * 1024 )) && small_input=1
fi
# A local driver also maps its classes from the class-data-sharing archive of scripts/jvm_archive.sh when there is one
# (made by ./run.sh setup; demo-size jobs 7-18 s sooner, RESULTS_lastfm.md "AppCDS"); MUSICREC_JVM_ARCHIVE=create
# writes it instead (under another name, renamed when the job succeeded).
jvm_archive="" jvm_archive_part=""
if [[ -n "${MUSICREC_DRIVER_JAVA_OPTS+set}" ]]; then
  java_opts="$MUSICREC_DRIVER_JAVA_OPTS"
elif [[ "$master" == local* ]]; then
  java_opts="-XX:+UseParallelGC"
  [[ $small_input == 1 ]] && java_opts+=" -XX:TieredStopAtLevel=1"
  source "$ROOT/scripts/jvm_archive.sh"
  jvm_archive="$(jvm_archive_path "$ROOT")"  # empty: no archive for this installation
  if [[ -n "$jvm_archive" && "${MUSICREC_JVM_ARCHIVE:-}" == create ]]; then
    mkdir -p "$(dirname "$jvm_archive")"
    jvm_archive_part="$jvm_archive.part.$$"
    java_opts+=" -XX:ArchiveClassesAtExit=$jvm_archive_part"
  elif [[ -f "$jvm_archive" ]]; then
    java_opts+=" -XX:SharedArchiveFile=$jvm_archive"
  fi
fi
[[ $small_input == 1 && $has_aqe == 0 ]] && extra+=(--conf spark.sql.adaptive.enabled=false)
[[ $has_java_opts == 0 && -n "$java_opts" ]] && extra+=(--driver-java-options "$java_opts")
exec 3<&0  # the child gets this script's stdin (a background job would get /dev/null)
"$SPARK_SUBMIT" "${extra[@]}" --py-files "$ZIP" --driver-memory "${MUSICREC_DRIVER_MEMORY:-6g}" "$@" <&3 3<&- &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' INT TERM HUP
status=0
while :; do
  wait "$child" && status=0 || status=$?
  kill -0 "$child" 2>/dev/null || break  # wait returned for a trapped signal: keep waiting for the child
done
if [[ -n "$jvm_archive_part" && $status == 0 && -s "$jvm_archive_part" ]]; then
  mv -f "$jvm_archive_part" "$jvm_archive" || echo "spark-submit.sh: could not keep the class archive $jvm_archive" >&2
fi
exit "$status"
