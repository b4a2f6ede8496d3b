#!/usr/bin/env bash
# A class-data-sharing archive (JDK AppCDS) of the classes a local Spark driver loads, so that later drivers map them
# from the archive instead of loading, parsing and verifying them each time: a demo-size feature job
# runs 7-18 s sooner (benchmarks/RESULTS_lastfm.md, "AppCDS"). spark-submit.sh uses the archive for a
# local master when it exists; nothing else depends on it.
#
#   bash scripts/jvm_archive.sh           make the archive if this Java + PySpark has none (one small Last.fm job
#                                         run with -XX:ArchiveClassesAtExit, about a minute); a no-op otherwise
#   source scripts/jvm_archive.sh         (spark-submit.sh) defines jvm_archive_path
#
# The archive lives at .venv/jvm/spark-driver-KEY.jsa (or in $MUSICREC_JVM_ARCHIVE_DIR); KEY names the Java runtime
# (its resolved path, size and mtime) and the Spark jars, since an archive only fits the JVM build and class path
# that wrote it (the JVM refuses a mismatched one with a warning; a truncated one can crash it, so the archive is
# written under another name and renamed when complete). An archive of another KEY is removed when a new one is made.

# jvm_archive_path ROOT: the archive's path for this Java runtime and ROOT's .venv (printed; nothing is checked).
jvm_archive_path() {
  local root="$1" java_bin jars key
  # the java Spark's launcher runs: $JAVA_HOME/bin/java, else the one on PATH
  if [[ -n "${JAVA_HOME:-}" ]]; then java_bin="$JAVA_HOME/bin/java"; else java_bin="$(command -v java || echo none)"; fi
  java_bin="$(readlink -f "$java_bin" 2>/dev/null || echo "$java_bin")"
  jars="$(ls "$root"/.venv/lib/python*/site-packages/pyspark/jars 2>/dev/null || true)"
  key="$( { echo "$java_bin"; stat -c '%s %Y' "$java_bin" 2>/dev/null || true; echo "$jars"; } | sha256sum)"
  key="${key:0:16}"
  echo "${MUSICREC_JVM_ARCHIVE_DIR:-$root/.venv/jvm}/spark-driver-$key.jsa"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then  # run as a command: make the archive when missing
  set -euo pipefail
  ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  archive="$(jvm_archive_path "$ROOT")"
  if [[ -f "$archive" ]]; then
    exit 0
  fi
  log() { printf '[jvm_archive] %s\n' "$*" >&2; }
  log "making the Spark driver's class archive $archive (one small Last.fm feature job, about a minute)"
  work="$(mktemp -d "${TMPDIR:-/tmp}/musicrec-jvm-archive.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  "$ROOT/.venv/bin/python" -m musicrec.datagen lastfm --scale 0.0005 --out "$work/in" --quiet
  if MUSICREC_JVM_ARCHIVE=create "$ROOT/spark-submit.sh" "$ROOT/jobs/features.py" lastfm --input "$work/in" \
      --output "$work/out" >"$work/job.log" 2>&1 && [[ -f "$archive" ]]; then
    find "$(dirname "$archive")" -name 'spark-driver-*.jsa' ! -path "$archive" -delete
    log "ready: $archive ($(du -h "$archive" | cut -f1))"
  else
    # No archive is not an error: spark-submit.sh then runs without one, only slower to start.
    log "could not make the archive (spark-submit.sh runs without it); the job's log ends with:"
    tail -n 20 "$work/job.log" >&2
  fi
fi
