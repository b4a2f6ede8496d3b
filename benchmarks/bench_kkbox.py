"""Time the KKBOX feature job at full size on local[2]: wall time, peak memory and a per-step profile.

    .venv/bin/python benchmarks/bench_kkbox.py [--data data/bench/kkbox-s1.0] [--scale 1.0] [--seed 0]
                                              [--out /tmp/bench-kkbox-out] [--record]

Generates the input with ``python -m musicrec.datagen kkbox --scale S --seed N`` when ``--data`` is missing (scale 1.0
= the real sizes: 7,377,418 train / 2,556,790 test rows, 2,296,320 songs, 34,403 members; about 9 minutes), then runs
exactly what users run::

    ./spark-submit.sh --conf spark.eventLog.enabled=true ... jobs/features.py kkbox --input DATA --output OUT

while a sampler adds up the RSS of the whole spark-submit process tree (bash, the driver JVM and any Python worker)
with psutil every ``--interval`` seconds. The profile comes from two places: the job's own summary (wall seconds per
driver step, printed by ``musicrec.features.kkbox.run_job``) and Spark's event log (task run time and CPU time per
step, from the job descriptions "kkbox: <step>" the job sets). The machine is shared: the load average before and
after the run and the CPU seconds the run itself used are recorded so that noise can be judged.

``--record`` appends the figures and the exact command to benchmarks/RESULTS_kkbox.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import event_log_profile, run_measured  # a sibling of this script

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "RESULTS_kkbox.md"


def generate(data: Path, scale: float, seed: int) -> None:
    command = [sys.executable, "-m", "musicrec.datagen", "kkbox", "--out", str(data), "--scale", str(scale),
               "--seed", str(seed)]
    print("[bench] generating:", shlex.join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True)


def run(args: argparse.Namespace) -> dict:
    data = Path(args.data)
    if not (data / "train.csv").is_file():
        generate(data, args.scale, args.seed)
    event_dir = Path(tempfile.mkdtemp(prefix="bench-kkbox-events-"))
    command = [str(REPO / "spark-submit.sh"), "--master", args.master,
               "--conf", "spark.eventLog.enabled=true", "--conf", f"spark.eventLog.dir=file://{event_dir}",
               "--conf", "spark.eventLog.compress=false", "--conf", "spark.eventLog.rolling.enabled=false",
               "--conf", "spark.ui.showConsoleProgress=false", *args.spark_option,
               "jobs/features.py", "kkbox", "--input", str(data), "--output", str(args.out)]
    env = dict(os.environ, MUSICREC_DRIVER_MEMORY=args.driver_memory)
    print(f"[bench] load average before: {os.getloadavg()}", flush=True)
    print("[bench] running:", f"MUSICREC_DRIVER_MEMORY={args.driver_memory}", shlex.join(command), flush=True)
    run = run_measured(command, cwd=REPO, env=env, stderr_path=Path(args.log), interval=args.interval)
    stdout = run["output"]
    Path(args.log).with_suffix(".stdout").write_text(stdout, encoding="utf-8")
    if run["returncode"] != 0:
        raise SystemExit(f"[bench] the job failed with exit status {run['returncode']}; see {args.log}")
    summary = json.loads(stdout[stdout.rindex("\n{") + 1:]) if "\n{" in stdout else {}  # the last JSON block
    return {
        "bench_command": shlex.join([".venv/bin/python", "benchmarks/bench_kkbox.py", *args.argv]),
        "command": f"MUSICREC_DRIVER_MEMORY={args.driver_memory} {shlex.join(command)}",
        "wall_s": round(run["seconds"], 1),
        "peak_rss_gib": round(run["peak_rss"] / 2**30, 2),
        "cpu_s": round(run["cpu_seconds"], 1),
        "load_before": [round(x, 2) for x in run["load_before"]],
        "load_after": [round(x, 2) for x in run["load_after"]],
        "cpus": os.cpu_count(),
        "system_cpu_s": {k: round(v, 1) for k, v in run["system"].items()},
        "disk_read_gib": round(run["disk_read"] / 2**30, 2),
        "disk_written_gib": round(run["disk_written"] / 2**30, 2),
        "processes": run["processes"],
        "steps_s": summary.get("seconds", {}),
        "row_counts": summary.get("row_counts", {}),
        "vocab_sizes": summary.get("vocab_sizes", {}),
        "profile": {step: {k: round(v, 1) for k, v in entry.items()} for step, entry in event_log_profile(event_dir).items()},
        "input_bytes": {p.name: p.stat().st_size for p in sorted(data.glob("*.csv"))},
    }


def markdown(result: dict, note: str) -> str:
    lines = [
        f"### Run of {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC",
        "",
        f"- reproduce: `{result['bench_command']}` (from the repository root)",
        f"- command: `{result['command']}`",
        f"- wall time: **{result['wall_s']:.1f} s** (target 180 s); peak RSS of the spark-submit process tree: "
        f"**{result['peak_rss_gib']:.2f} GiB**; CPU time of the tree: {result['cpu_s']:.0f} s "
        f"on {result['cpus']} cores",
        f"- load average (1/5/15 min) before: {result['load_before']}, after: {result['load_after']}",
        f"- machine-wide CPU during the run ({result['wall_s'] * result['cpus']:.0f} core-seconds available): "
        f"the job's tree {result['cpu_s']:.0f} s, other processes "
        f"{max(result['system_cpu_s']['busy'] - result['cpu_s'], 0):.0f} s, iowait "
        f"{result['system_cpu_s']['iowait']:.0f} s, idle {result['system_cpu_s']['idle']:.0f} s; disk read "
        f"{result['disk_read_gib']:.2f} GiB, written {result['disk_written_gib']:.2f} GiB",
        f"- rows: {result['row_counts']}",
        f"- input: {', '.join(f'{k} {v / 2**20:,.0f} MiB' for k, v in result['input_bytes'].items())}",
    ]
    if note:
        lines.append(f"- note: {note}")
    lines += ["", "| step | wall s | stages | tasks | task run s | task CPU s | JVM GC s | shuffle write MiB | spill MiB |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for step, seconds in result["steps_s"].items():
        prof = result["profile"].get(f"kkbox: {step}", {})
        lines.append(f"| {step} | {seconds:.1f} | {prof.get('stages', 0):.0f} | {prof.get('tasks', 0):.0f} | "
                     f"{prof.get('task_run_s', 0):.1f} | {prof.get('task_cpu_s', 0):.1f} | {prof.get('gc_s', 0):.1f} | "
                     f"{prof.get('shuffle_write_mb', 0):.0f} | {prof.get('spill_mb', 0):.0f} |")
    other = {desc: prof for desc, prof in result["profile"].items()
             if desc.removeprefix("kkbox: ") not in result["steps_s"]}
    for desc, prof in other.items():  # Spark jobs outside the timed steps (e.g. no description)
        lines.append(f"| {desc} (not a timed step) | | {prof.get('stages', 0):.0f} | {prof.get('tasks', 0):.0f} | "
                     f"{prof.get('task_run_s', 0):.1f} | {prof.get('task_cpu_s', 0):.1f} | {prof.get('gc_s', 0):.1f} | "
                     f"{prof.get('shuffle_write_mb', 0):.0f} | {prof.get('spill_mb', 0):.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO / "data" / "bench" / "kkbox-s1.0"), help="input folder")
    parser.add_argument("--scale", type=float, default=1.0, help="datagen scale when --data must be generated")
    parser.add_argument("--seed", type=int, default=0, help="datagen seed when --data must be generated")
    parser.add_argument("--out", default="/tmp/bench-kkbox-out", help="job output folder (replaced)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between RSS samples")
    parser.add_argument("--log", default="/tmp/bench-kkbox.log", help="spark-submit's stderr (stdout next to it)")
    parser.add_argument("--spark-option", action="append", default=[], metavar="ARG",
                        help="extra spark-submit argument, repeatable, e.g. --spark-option=--driver-java-options "
                             "--spark-option=-XX:+UseParallelGC")
    parser.add_argument("--note", default="", help="free text for the results entry")
    parser.add_argument("--record", action="store_true", help=f"append the results to {RESULTS.relative_to(REPO)}")
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    result = run(args)
    print(json.dumps(result, indent=2))
    text = markdown(result, args.note)
    print(text)
    if args.record:
        header = "" if RESULTS.exists() else "# KKBOX feature job at full size (benchmarks/bench_kkbox.py)\n"
        with open(RESULTS, "a", encoding="utf-8") as handle:
            handle.write(header + "\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
