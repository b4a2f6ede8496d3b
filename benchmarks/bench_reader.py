"""The pyarrow reader (musicrec/data/arrow_reader.py) against Petastorm 0.12.1 reading the same feature output.

    .venv/bin/python benchmarks/bench_reader.py                       # both readers, default profile, Markdown table
    .venv/bin/python benchmarks/bench_reader.py --record              # ... appended to benchmarks/RESULTS_reader.md
    .venv-current/bin/python benchmarks/bench_reader.py --readers arrow   # the current profile's pyarrow alone

In ONE process, on the same data, alternating the readers ``--repeats`` times (petastorm, arrow, petastorm, ...):
``musicrec.data.reader.iter_row_groups`` (what the loader calls: the columns of the view, one pass over the split,
row groups shuffled, 1 shard and shard 0 of 2; Petastorm with the project's defaults ``reader_pool=thread``,
``workers_count=1``), and a whole training epoch of ``Data.train_loader`` batches with the row-group cache off
(``cache_mb=0``: every epoch reads the Parquet again). Rows/s = rows of the split (or of the shard) / wall seconds,
the median over the repeats; the ratio is arrow / petastorm. The data are bench_distributed.py's tests/fakedata.py
outputs (``KKBOX``, ``LASTFM``: 160,000 KKBOX training rows in 4 files x 4 row groups, 20,000 Last.fm training
sessions in 4 files x 5 row groups), written once under ``--workdir``; the load average before and after is
printed and recorded (void above 3).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from bench_distributed import write_data  # a sibling of this script: the same data as its benchmark
from measure import append_record, cpu_model

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

VIEW = {"kkbox": "rows", "lastfm": "next_song"}
READERS = ("petastorm", "arrow")


def time_row_groups(data, shard_count: int) -> tuple[int, float]:
    """(rows, seconds) of one pass of ``iter_row_groups`` over shard 0 of the training split, shuffled."""
    from musicrec.data.reader import iter_row_groups

    view = data._view
    started = time.perf_counter()
    rows = sum(len(g[view.id_col]) for g in iter_row_groups(view.path("train"), view.columns, view.arrays, seed=1,
                                                            shuffle_row_groups=True, cur_shard=0,
                                                            shard_count=shard_count))
    return rows, time.perf_counter() - started


def time_epoch(data) -> tuple[int, float]:
    """(examples, seconds) of one training epoch of batches (cache off)."""
    started = time.perf_counter()
    examples = sum(len(next(iter(b.values()))) for b in data.train_loader(0))
    return examples, time.perf_counter() - started


def measure(paths: dict[str, Path], readers: tuple[str, ...], repeats: int) -> list[dict]:
    from musicrec.data import Data, DataConfig

    results = []
    for dataset, path in paths.items():
        cases = [("row groups, 1 shard", 1), ("row groups, shard 0 of 2", 2), ("epoch of batches", 0)]
        for label, shards in cases:
            timings: dict[str, list[tuple[int, float]]] = {r: [] for r in readers}
            for _ in range(repeats):
                for name in readers:
                    os.environ["MUSICREC_READER"] = name
                    data = Data(path, VIEW[dataset], DataConfig(batch_size=1024, cache_mb=0), seed=1)
                    timings[name].append(time_epoch(data) if shards == 0 else time_row_groups(data, shards))
            row = {"dataset": dataset, "case": label}
            for name, runs in timings.items():
                counts = {n for n, _ in runs}
                assert len(counts) == 1, f"{name} read different numbers of rows: {counts}"
                row[name] = {"rows": counts.pop(), "s": statistics.median(s for _, s in runs)}
                row[name]["rows_per_s"] = row[name]["rows"] / row[name]["s"]
            if len(readers) == 2:
                assert row["arrow"]["rows"] == row["petastorm"]["rows"]
                row["ratio"] = row["arrow"]["rows_per_s"] / row["petastorm"]["rows_per_s"]
            results.append(row)
            print(row, flush=True)
    return results


def table(results: list[dict], readers: tuple[str, ...]) -> str:
    head = "| data | what | rows | " + " | ".join(f"{r} rows/s (s)" for r in readers)
    head += " | arrow / petastorm |" if len(readers) == 2 else " |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in results:
        cells = " | ".join(f"{r[n]['rows_per_s']:,.0f} ({r[n]['s']:.2f})" for n in readers)
        ratio = f" | **{r['ratio']:.2f}x** |" if "ratio" in r else " |"
        lines.append(f"| {r['dataset']} | {r['case']} | {r[readers[0]]['rows']:,} | {cells}{ratio}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/musicrec-bench-reader"),
                        help="where the generated feature outputs are written once (default %(default)s)")
    parser.add_argument("--readers", nargs="+", choices=READERS, default=list(READERS),
                        help="readers to time (default both: the default profile)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repetitions per case (default 3)")
    parser.add_argument("--record", action="store_true", help="append the report to benchmarks/RESULTS_reader.md")
    args = parser.parse_args(argv)
    import numpy
    import pyarrow

    paths = write_data(args.workdir)
    load_before, started = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M")
    results = measure(paths, tuple(args.readers), args.repeats)
    load_after = os.getloadavg()
    versions = f"pyarrow {pyarrow.__version__}, numpy {numpy.__version__}"
    if "petastorm" in args.readers:
        import petastorm

        versions += f", petastorm {petastorm.__version__}"
    load = f"{', '.join(f'{x:.2f}' for x in load_before)} -> {', '.join(f'{x:.2f}' for x in load_after)}"
    command = " ".join([os.path.relpath(sys.executable, REPO), "benchmarks/bench_reader.py",
                        *(sys.argv[1:] if argv is None else argv)])
    report = (f"## {started}: `{command}`\n\n"
              f"- machine: {os.cpu_count()} cores ({cpu_model()}), Python {platform.python_version()}, {versions}\n"
              f"- load average (1, 5, 15 min) before -> after: {load}"
              f"{' (VOID: above 3)' if max(load_before[0], load_after[0]) > 3 else ''}\n"
              f"- medians of {args.repeats} alternating repeats\n\n{table(results, tuple(args.readers))}\n")
    print("\n" + report)
    if args.record:
        append_record(REPO / "benchmarks" / "RESULTS_reader.md", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
