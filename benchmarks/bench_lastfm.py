"""Time the whole Last.fm 1K feature job (Spark, local[2]) against a DuckDB run of its core steps, same input.

    .venv/bin/python benchmarks/bench_lastfm.py [--data-dir data/bench] [--scale 1.0] [--seed 0]
                                               [--input RAW_DIR] [--out /tmp/bench-lastfm] [--record]

1. Times ``--input`` when given (an existing raw folder, e.g. the demo's), else generates the input once with
   ``python -m musicrec.datagen lastfm --scale S --seed N`` into ``DATA_DIR/lastfm-s<S>-seed<N>/`` (scale 1.0 = the
   real 19,098,853 rows, 992 users; about a minute) and reuses it on later runs.
2. Runs exactly what users run, ``./spark-submit.sh --master local[2] jobs/features.py lastfm --input ... --output
   ...``, then ``benchmarks/duckdb_lastfm.py`` (read, drop untracked, dedup, sessionize with the same rule, write one
   row per session) with 2 threads, one after the other. A sampler adds up the RSS of each process tree (bash, the
   driver JVM, Python workers) with psutil and keeps the peak, and the CPU seconds each run used.
3. Checks that both find the same number of sessions (before and after the 6-sessions-per-user filter) and the same
   number of deduplicated plays, and prints (``--record``: appends to benchmarks/RESULTS_lastfm.md) both times,
   their ratio, the peaks, the Spark job's own step timings, a per-step profile from Spark's event log (task CPU,
   JVM GC, shuffle, spill), machine-wide CPU (others' share, iowait) and disk bytes, and the load average before and
   after (the machine is shared, so figures are noisy: CPU seconds are the steadier number).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from measure import event_log_profile, run_measured  # a sibling of this script

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "RESULTS_lastfm.md"
PLAYS_FILE = "userid-timestamp-artid-artname-traid-traname.tsv"


def run_logged(command: list[str], log_path: Path) -> dict:
    """``measure.run_measured`` from the repository root, its output also written to ``log_path``."""
    result = run_measured(command, cwd=REPO)
    log_path.write_text(result["output"])
    return result


def ensure_data(data_dir: Path, scale: float, seed: int) -> Path:
    """The generated input folder for (scale, seed), generated on first use."""
    folder = data_dir / f"lastfm-s{scale:g}-seed{seed}"
    if not (folder / PLAYS_FILE).is_file():
        print(f"[bench] generating {folder} (scale {scale}, seed {seed})", flush=True)
        subprocess.run([sys.executable, "-m", "musicrec.datagen", "lastfm", "--scale", str(scale), "--seed",
                        str(seed), "--out", str(folder)], cwd=REPO, check=True)
    return folder


def last_json(text: str) -> dict:
    """The last top-level JSON object printed (features.py prints its summary last)."""
    start = text.rfind("\n{\n")
    return json.loads(text[start + 1:] if start >= 0 else text[text.index("{"):])


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO / "data" / "bench", help="where generated inputs are kept")
    parser.add_argument("--input", type=Path, default=None,
                        help="an existing raw Last.fm folder to time instead of a generated one (e.g. the demo's "
                             "data/raw/lastfm); --scale and --seed then only label the run")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-lastfm"), help="outputs (replaced)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads")
    parser.add_argument("--spark-conf", action="append", default=[], metavar="K=V", help="extra spark-submit --conf")
    parser.add_argument("--record", action="store_true", help=f"append the figures to {RESULTS.relative_to(REPO)}")
    args = parser.parse_args(argv)

    data = args.input if args.input is not None else ensure_data(args.data_dir, args.scale, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()

    # The event log gives the per-step profile (task CPU, GC, shuffle, spill); uncompressed so it is read as is.
    event_dir = Path(tempfile.mkdtemp(prefix="bench-lastfm-events-"))
    spark_cmd = [str(REPO / "spark-submit.sh"), "--master", args.master, "--conf", "spark.ui.showConsoleProgress=false",
                 "--conf", "spark.eventLog.enabled=true", "--conf", f"spark.eventLog.dir=file://{event_dir}",
                 "--conf", "spark.eventLog.compress=false", "--conf", "spark.eventLog.rolling.enabled=false"]
    for item in args.spark_conf:
        spark_cmd += ["--conf", item]
    spark_cmd += ["jobs/features.py", "lastfm", "--input", str(data), "--output", str(args.out / "spark")]
    print(f"[bench] {shlex.join(spark_cmd)}", flush=True)
    spark = run_logged(spark_cmd, args.out / "spark.log")
    if spark["returncode"] != 0:
        print(spark["output"][-5000:], file=sys.stderr)
        return 1
    summary = last_json(spark["output"])
    steps = [line.split("lastfm: ", 1)[1] for line in spark["output"].splitlines() if line.startswith("[features] lastfm: ")
             and not line.endswith("resolved config:")]

    duck_cmd = [sys.executable, "benchmarks/duckdb_lastfm.py", "--input", str(data / PLAYS_FILE),
                "--output", str(args.out / "duckdb"), "--threads", str(args.threads)]
    print(f"[bench] {shlex.join(duck_cmd)}", flush=True)
    duck = run_logged(duck_cmd, args.out / "duckdb.log")
    if duck["returncode"] != 0:
        print(duck["output"][-5000:], file=sys.stderr)
        return 1
    duck_summary = json.loads(duck["output"].strip().splitlines()[-1])
    load_after = os.getloadavg()
    profile = event_log_profile(event_dir)

    counts = summary["counts"]
    checks = {
        "sessions (before the user filter)": (counts["sessions_before_user_filter"], duck_summary["sessions"]),
        "sessions (users with >= 6)": (counts["sessions"], duck_summary["sessions_after_user_filter"]),
        "plays (users with >= 6)": (counts["plays"], duck_summary["plays_after_user_filter"]),
    }
    same = all(a == b for a, b in checks.values())
    ratio = spark["seconds"] / duck["seconds"]
    cpu_ratio = spark["cpu_seconds"] / max(duck["cpu_seconds"], 1e-9)
    lines = [
        f"## {time.strftime('%Y-%m-%d %H:%M')} " + (f"input {data}" if args.input is not None else
                                                   f"scale {args.scale:g} (seed {args.seed})") + f", {args.master}",
        "",
        f"Machine: {os.cpu_count()} cores, {gib(psutil.virtual_memory().total)} RAM, {platform.platform()}; "
        f"load average (1/5/15 min) before {' / '.join(f'{x:.2f}' for x in load_before)}, after "
        f"{' / '.join(f'{x:.2f}' for x in load_after)} (shared machine: figures are noisy).",
        f"Input: {counts['lines']:,} lines ({gib((data / PLAYS_FILE).stat().st_size)}).",
        "",
        "| run | wall | CPU seconds | peak RSS (process tree) |",
        "| --- | ---: | ---: | ---: |",
        f"| Spark, whole job (`spark-submit jobs/features.py lastfm`) | {spark['seconds']:.1f} s | "
        f"{spark['cpu_seconds']:.0f} | {gib(spark['peak_rss'])} |",
        f"| DuckDB core (read, drop untracked, dedup, sessionize, write sessions), {args.threads} threads | "
        f"{duck['seconds']:.1f} s | {duck['cpu_seconds']:.0f} | {gib(duck['peak_rss'])} |",
        f"| ratio Spark / DuckDB | {ratio:.2f}x | {cpu_ratio:.2f}x | |",
        "",
        "| check | Spark | DuckDB |",
        "| --- | ---: | ---: |",
        *[f"| {name} | {a:,} | {b:,} |" for name, (a, b) in checks.items()],
        "",
        f"Same counts: **{'yes' if same else 'NO'}**. Targets (issue 16): at full size whole job <= 180 s and <= 4x "
        f"DuckDB's CPU seconds: {'met' if spark['seconds'] <= 180 and cpu_ratio <= 4 else 'not met'}; on a demo-size "
        f"input <= 25 s: {'met' if spark['seconds'] <= 25 else 'not met'}.",
        "",
        "Machine-wide CPU and disk while each run ran (all cores; `others` = busy CPU seconds not used by the run's "
        "own process tree, i.e. other users):",
        "",
        "| run | wall | core-seconds available | run's CPU s | others' CPU s | iowait s | idle s | disk read | disk written |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {name} | {r['seconds']:.1f} s | {r['seconds'] * (os.cpu_count() or 1):.0f} | {r['cpu_seconds']:.0f} | "
          f"{max(r['system']['busy'] - r['cpu_seconds'], 0):.0f} | {r['system']['iowait']:.0f} | "
          f"{r['system']['idle']:.0f} | {gib(r['disk_read'])} | {gib(r['disk_written'])} |"
          for name, r in (("Spark", spark), ("DuckDB", duck))],
        "",
        "Spark job steps (cumulative seconds, from the job's log; the last line is features.py's total, which also "
        "counts the SparkSession start):",
        "",
        *[f"- {step}" for step in steps],
        "",
        "Spark per-step profile (event log, summed over tasks; 2 task slots, so task run s / 2 ~ wall s when both "
        "slots are busy):",
        "",
        "| step | stages | tasks | stage wall s | task run s | task CPU s | JVM GC s | shuffle write MiB | spill MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {desc} | {p.get('stages', 0):.0f} | {p.get('tasks', 0):.0f} | {p.get('stage_wall_s', 0):.1f} | "
          f"{p.get('task_run_s', 0):.1f} | {p.get('task_cpu_s', 0):.1f} | {p.get('gc_s', 0):.1f} | "
          f"{p.get('shuffle_write_mb', 0):.0f} | {p.get('spill_mb', 0):.0f} |" for desc, p in profile.items()],
        f"| **total** | {sum(p.get('stages', 0) for p in profile.values()):.0f} | "
        f"{sum(p.get('tasks', 0) for p in profile.values()):.0f} | "
        f"{sum(p.get('stage_wall_s', 0) for p in profile.values()):.1f} | "
        f"{sum(p.get('task_run_s', 0) for p in profile.values()):.1f} | "
        f"{sum(p.get('task_cpu_s', 0) for p in profile.values()):.1f} | "
        f"{sum(p.get('gc_s', 0) for p in profile.values()):.1f} | "
        f"{sum(p.get('shuffle_write_mb', 0) for p in profile.values()):.0f} | "
        f"{sum(p.get('spill_mb', 0) for p in profile.values()):.0f} |",
        "",
        f"DuckDB: sessionize {duck_summary.get('seconds_sessionize', 0):.1f} s, write "
        f"{duck_summary.get('seconds_write', 0):.1f} s (in-process; the wall above also counts Python start and the "
        f"count queries).",
        "",
        "Commands:",
        "",
        "```",
        shlex.join([".venv/bin/python", "benchmarks/bench_lastfm.py", *(argv if argv is not None else sys.argv[1:])]),
        shlex.join(spark_cmd),
        shlex.join(duck_cmd),
        "```",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if args.record:
        header = "" if RESULTS.exists() else "# Last.fm 1K feature job: Spark vs DuckDB (benchmarks/bench_lastfm.py)\n\n"
        with open(RESULTS, "a", encoding="utf-8") as handle:
            handle.write(header + report + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
