#!/usr/bin/env bash
# A class-data-sharing archive (JDK AppCDS) of the classes a local Spark driver loads, so that later drivers map them
# from the archive instead of loading, parsing and verifying them each time: a demo-size feature job runs 7-18 s
# sooner (benchmarks/RESULTS_lastfm.md, "AppCDS"). spark-submit.sh uses the archive for a local master when it
# exists; nothing else depends on it.
#
#   bash scripts/jvm_archive.sh           make the archive if this Java + PySpark has none (one small Last.fm job
#                                         run with -XX:ArchiveClassesAtExit, about a minute); a no-op otherwise
#   source scripts/jvm_archive.sh         (spark-submit.sh) defines jvm_archive_path
#
# The archive lives at .venv/jvm/spark-driver-KEY.jsa (or in $MUSICREC_JVM_ARCHIVE_DIR). An archive only fits the
# JVM build and the class path (each jar's size and mtime) that wrote it, and the JVM silently ignores one that does
# not fit, so KEY names both: the Java runtime (the resolved java and libjvm.so, their sizes and mtimes) and the
# Spark jars (names, sizes, mtimes). A truncated archive can crash the JVM, so it is written under another name and
# renamed when complete. Making it replaces archives of other KEYs; when it fails, a KEY.failed marker stops
# set-up from retrying on every command (delete the marker to retry).

# jvm_archive_path ROOT: the archive's path for this Java runtime and ROOT's .venv; empty when .venv has no PySpark
# or the path holds whitespace (Spark's launcher splits --driver-java-options on it). Nothing else is checked.
jvm_archive_path() {
  local root="$1" java_bin jars key path
  jars=("$root"/.venv/lib/python*/site-packages/pyspark/jars/*.jar)
  [[ -f "${jars[0]}" ]] || return 0
  # the java Spark's launcher runs: $JAVA_HOME/bin/java, else the one on PATH
  if [[ -n "${JAVA_HOME:-}" ]]; then java_bin="$JAVA_HOME/bin/java"; else java_bin="$(command -v java || echo none)"; fi
  java_bin="$(readlink -f "$java_bin" 2>/dev/null || echo "$java_bin")"
  key="$( { stat -c '%n %s %Y' "$java_bin" "$(dirname "$java_bin")/../lib/server/libjvm.so" "${jars[@]}" \
           2>/dev/null || true; } | sha256sum)"
  path="${MUSICREC_JVM_ARCHIVE_DIR:-$root/.venv/jvm}/spark-driver-${key:0:16}.jsa"
  [[ "$path" == *[[:space:]]* ]] || echo "$path"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then  # run as a command: make the archive when missing
  set -euo pipefail
  ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  archive="$(jvm_archive_path "$ROOT")"
  if [[ -z "$archive" || -f "$archive" || -f "$archive.failed" ]]; then
    exit 0
  fi
  log() { printf '[jvm_archive] %s\n' "$*" >&2; }
  log "making the Spark driver's class archive $archive (one small Last.fm feature job, about a minute)"
  dir="$(dirname "$archive")"
  mkdir -p "$dir"
  work="$(mktemp -d "${TMPDIR:-/tmp}/musicrec-jvm-archive.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  # a local driver with spark-submit.sh's own JVM flags, whatever the caller's environment says
  if "$ROOT/.venv/bin/python" -m musicrec.datagen lastfm --scale 0.0005 --out "$work/in" --quiet \
      && env -u MUSICREC_DRIVER_JAVA_OPTS MUSICREC_SPARK_MASTER='local[2]' MUSICREC_JVM_ARCHIVE=create \
         "$ROOT/spark-submit.sh" "$ROOT/jobs/features.py" lastfm --input "$work/in" --output "$work/out" \
         >"$work/job.log" 2>&1 \
      && [[ -f "$archive" ]]; then
    find "$dir" -maxdepth 1 \( -name 'spark-driver-*.jsa' -o -name 'spark-driver-*.jsa.failed' \) \
      ! -name "${archive##*/}" -delete
    log "ready: $archive ($(du -h "$archive" | cut -f1))"
  else
    # No archive is not an error: spark-submit.sh then runs without one, only slower to start.
    touch "$archive.failed"
    log "could not make the archive (spark-submit.sh runs without it; delete $archive.failed to retry); the log ends:"
    tail -n 20 "$work/job.log" >&2 || true
  fi
fi
