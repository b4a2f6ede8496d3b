"""Benchmark of the synthetic data generator at full size (default: Last.fm 1K, scale 1.0 = 19,098,853 rows).

    .venv/bin/python benchmarks/bench_datagen.py [--dataset lastfm|kkbox] [--scale 1.0] [--seed 0] [--tmpdir DIR]

What it measures, in this one process:

* the generator: ``musicrec.datagen.<dataset>.generate`` into a fresh temporary folder (all files; the main file's
  own time, rows, bytes and rows/s are reported separately);
* the reference: ``shutil.copyfile`` of the main file just written to a second name in the same folder (median of
  ``--copies`` runs, dirty pages flushed before each), i.e. the cost of moving the same bytes onto the same disk with
  no generation at all. ``ratio`` = generator seconds for the main file / copy seconds: how far the generator is
  from being I/O bound (1.0 would be "as fast as cp");
* peak RSS of the process (``resource.getrusage``), which shows that the generator streams (bounded memory).

Prints one markdown table row (plus its header) on stdout; progress goes to stderr. The temporary folder is removed
unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from measure import cpu_model  # a sibling of this script

REPO = Path(__file__).resolve().parent.parent
MAIN_FILE = {"lastfm": "userid-timestamp-artid-artname-traid-traname.tsv", "kkbox": "train.csv"}


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(MAIN_FILE), default="lastfm")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the real size (default 1.0 = full)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmpdir", default=None, help="where to make the temporary folder (default: system temp)")
    parser.add_argument("--copies", type=int, default=3, help="reference copies to time; the median is used")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    return parser.parse_args(argv)


def machine() -> str:
    """CPU model, core count and load average, in words."""
    model = cpu_model()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores ({model}), load average {load}"


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reference_copy_seconds(path: Path, copies: int) -> float:
    """Median seconds of ``copies`` plain copies of ``path`` (flushing dirty pages first, untimed, so that the
    generator's pending writes do not slow the copy down)."""
    times = []
    for _ in range(copies):
        os.sync()
        start = time.perf_counter()
        shutil.copyfile(path, path.with_name(path.name + ".copy"))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(args: argparse.Namespace) -> str:
    """Generate, copy, and return the markdown table row."""
    sys.path.insert(0, str(REPO))
    from musicrec.datagen import kkbox, lastfm

    module = {"lastfm": lastfm, "kkbox": kkbox}[args.dataset]
    folder = Path(tempfile.mkdtemp(prefix="bench_datagen_", dir=args.tmpdir))
    try:
        print(f"[bench] machine: {machine()}", file=sys.stderr)
        start = time.perf_counter()
        reports = module.generate(folder, scale=args.scale, seed=args.seed, progress=True)
        total_s = time.perf_counter() - start
        main = next(r for r in reports if r.name == MAIN_FILE[args.dataset])
        rss_mb = peak_rss_mb()
        copy_s = reference_copy_seconds(folder / main.name, args.copies)
        for report in reports:
            print(f"[bench] {report.line()}", file=sys.stderr)
        print(f"[bench] machine after: {machine()}", file=sys.stderr)
        speed = f"{main.rows / main.seconds / 1e3:,.0f}k rows/s, {main.bytes / main.seconds / 1e6:.0f} MB/s"
        return (
            f"| {args.dataset} | {args.scale:g} | {main.name} | {main.rows:,} | {main.bytes / 1e9:.2f} GB | "
            f"{main.seconds:.1f} s ({speed}) | {total_s:.1f} s | {copy_s:.1f} s | {main.seconds / copy_s:.1f}x "
            f"| {rss_mb:,.0f} MiB |"
        )
    finally:
        if args.keep:
            print(f"[bench] kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


HEADER = (
    "| dataset | scale | main file | rows | bytes | main file time | all files | copy (ref) | ratio | peak RSS |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv=None) -> int:
    """Run the benchmark and print the markdown line."""
    args = parse_args(argv)
    row = run(args)
    print(HEADER)
    print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
