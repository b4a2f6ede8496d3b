"""Time the whole Last.fm 1K feature job (Spark, local[2]) against a DuckDB run of its core steps, same input.

    .venv/bin/python benchmarks/bench_lastfm.py [--data-dir data/bench] [--scale 1.0] [--seed 0]
                                               [--out /tmp/bench-lastfm] [--record]

1. Generates the input once with ``python -m musicrec.datagen lastfm --scale S --seed N`` into
   ``DATA_DIR/lastfm-s<S>-seed<N>/`` (scale 1.0 = the real 19,098,853 rows, 992 users; about a minute) and reuses
   it on later runs.
2. Runs exactly what users run, ``./spark-submit.sh --master local[2] jobs/features.py lastfm --input ... --output
   ...``, then ``benchmarks/duckdb_lastfm.py`` (read, drop untracked, dedup, sessionize with the same rule, write one
   row per session) with 2 threads, one after the other. A sampler adds up the RSS of each process tree (bash, the
   driver JVM, Python workers) with psutil and keeps the peak, and the CPU seconds each run used.
3. Checks that both find the same number of sessions (before and after the 6-sessions-per-user filter) and the same
   number of deduplicated plays, and prints (``--record``: appends to benchmarks/RESULTS_lastfm.md) both times,
   their ratio, the peaks, the Spark job's own step timings and the load average before and after (the machine is
   shared, so figures are noisy: CPU seconds are the steadier number).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "RESULTS_lastfm.md"
PLAYS_FILE = "userid-timestamp-artid-artname-traid-traname.tsv"


class TreeSampler(threading.Thread):
    """Peak RSS and CPU seconds of a process and all its descendants, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = 0
        self._cpu: dict[int, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss = 0
            for proc in procs:
                try:
                    rss += proc.memory_info().rss
                    times = proc.cpu_times()
                    self._cpu[proc.pid] = times.user + times.system + times.children_user + times.children_system
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak_rss = max(self.peak_rss, rss)
            self.done.wait(self.interval)

    @property
    def cpu_seconds(self) -> float:
        return sum(self._cpu.values())


def run_measured(command: list[str], *, env: dict | None = None, log_path: Path | None = None) -> dict:
    """Run ``command``; return wall seconds, peak tree RSS, CPU seconds, exit code and stdout."""
    started = time.time()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    output = proc.communicate()[0]
    wall = time.time() - started
    sampler.done.set()
    sampler.join()
    if log_path:
        log_path.write_text(output)
    return {"seconds": wall, "peak_rss": sampler.peak_rss, "cpu_seconds": sampler.cpu_seconds,
            "returncode": proc.returncode, "output": output}


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
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-lastfm"), help="outputs (replaced)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads")
    parser.add_argument("--spark-conf", action="append", default=[], metavar="K=V", help="extra spark-submit --conf")
    parser.add_argument("--record", action="store_true", help=f"append the figures to {RESULTS.relative_to(REPO)}")
    args = parser.parse_args(argv)

    data = ensure_data(args.data_dir, args.scale, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()

    spark_cmd = [str(REPO / "spark-submit.sh"), "--master", args.master, "--conf", "spark.ui.showConsoleProgress=false"]
    for item in args.spark_conf:
        spark_cmd += ["--conf", item]
    spark_cmd += ["jobs/features.py", "lastfm", "--input", str(data), "--output", str(args.out / "spark")]
    print(f"[bench] {shlex.join(spark_cmd)}", flush=True)
    spark = run_measured(spark_cmd, log_path=args.out / "spark.log")
    if spark["returncode"] != 0:
        print(spark["output"][-5000:], file=sys.stderr)
        return 1
    summary = last_json(spark["output"])
    steps = [line.split("lastfm: ", 1)[1] for line in spark["output"].splitlines() if line.startswith("[features] lastfm: ")
             and not line.endswith("resolved config:")]

    duck_cmd = [sys.executable, "benchmarks/duckdb_lastfm.py", "--input", str(data / PLAYS_FILE),
                "--output", str(args.out / "duckdb"), "--threads", str(args.threads)]
    print(f"[bench] {shlex.join(duck_cmd)}", flush=True)
    duck = run_measured(duck_cmd, log_path=args.out / "duckdb.log")
    if duck["returncode"] != 0:
        print(duck["output"][-5000:], file=sys.stderr)
        return 1
    duck_summary = json.loads(duck["output"].strip().splitlines()[-1])
    load_after = os.getloadavg()

    counts = summary["counts"]
    checks = {
        "sessions (before the user filter)": (counts["sessions_before_user_filter"], duck_summary["sessions"]),
        "sessions (users with >= 6)": (counts["sessions"], duck_summary["sessions_after_user_filter"]),
        "plays (users with >= 6)": (counts["plays"], duck_summary["plays_after_user_filter"]),
    }
    same = all(a == b for a, b in checks.values())
    ratio = spark["seconds"] / duck["seconds"]
    lines = [
        f"## {time.strftime('%Y-%m-%d %H:%M')} scale {args.scale:g} (seed {args.seed}), {args.master}",
        "",
        f"Machine: {os.cpu_count()} cores, {gib(psutil.virtual_memory().total)} RAM, {platform.platform()}; "
        f"load average before {load_before[0]:.1f} / after {load_after[0]:.1f} (shared machine: figures are noisy).",
        f"Input: {counts['lines']:,} lines ({gib((data / PLAYS_FILE).stat().st_size)}).",
        "",
        "| run | wall | CPU seconds | peak RSS (process tree) |",
        "| --- | ---: | ---: | ---: |",
        f"| Spark, whole job (`spark-submit jobs/features.py lastfm`) | {spark['seconds']:.1f} s | "
        f"{spark['cpu_seconds']:.0f} | {gib(spark['peak_rss'])} |",
        f"| DuckDB core (read, drop untracked, dedup, sessionize, write sessions), {args.threads} threads | "
        f"{duck['seconds']:.1f} s | {duck['cpu_seconds']:.0f} | {gib(duck['peak_rss'])} |",
        f"| ratio Spark / DuckDB | {ratio:.2f}x | {spark['cpu_seconds'] / max(duck['cpu_seconds'], 1e-9):.2f}x | |",
        "",
        "| check | Spark | DuckDB |",
        "| --- | ---: | ---: |",
        *[f"| {name} | {a:,} | {b:,} |" for name, (a, b) in checks.items()],
        "",
        f"Same counts: **{'yes' if same else 'NO'}**. Target (whole job <= 180 s and <= 3x DuckDB): "
        f"{'met' if spark['seconds'] <= 180 and ratio <= 3 else 'not met'}.",
        "",
        "Spark job steps (cumulative seconds, from the job's log):",
        "",
        *[f"- {step}" for step in steps],
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
