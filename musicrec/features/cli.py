"""The command line of ``jobs/features.py``: its arguments (``build_parser``) and ``main(argv)``.

``main`` resolves the configuration (``conf/<dataset>.yaml`` or ``--conf``, then the checked ``--set`` overrides),
runs the dataset's ``check_job`` (config values and types, input files and headers, OUT writable: all before
Spark starts), prints the config once (``[features] <dataset>: resolved config:``), builds the SparkSession, runs
its ``run_job`` (``musicrec.features.lastfm`` / ``musicrec.features.kkbox``), stops the session and prints
``[features] <dataset>: done in <s>s -> <output>`` and the job's summary as JSON. It returns the exit status:
0 done, 2 bad config, input or output (``features.py: error: <why>`` / ``features.py: error: config: <why>``, one
line, no traceback; docs/FAILURE_MODES.md lists them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from musicrec.config import ConfigError, apply_overrides, load_config
from musicrec.features import kkbox, lastfm
from musicrec.io import InputError
from musicrec.spark import get_spark

RUN_JOB = {"lastfm": lastfm.run_job, "kkbox": kkbox.run_job}
CHECK_JOB = {"lastfm": lastfm.check_job, "kkbox": kkbox.check_job}
DATASETS = tuple(RUN_JOB)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="features.py",
        description="Turn raw listening logs into training Parquet (run with spark-submit).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=("Output layout: docs/DATA_CONTRACT.md. Exit codes: 0 ok, 2 bad input, config or output folder (one "
                "line; docs/FAILURE_MODES.md). More than clean.max_rejected_fraction of an input file's rows rejected "
                "is a bad input."),
    )
    parser.add_argument("dataset", choices=DATASETS, help="which raw format to read")
    parser.add_argument("--input", required=True, type=Path, help="folder with the raw files")
    parser.add_argument("--output", required=True, type=Path, help="output folder (replaced atomically)")
    parser.add_argument("--conf", type=Path, default=None, help="YAML config (default: conf/<dataset>.yaml)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set sessions.gap_seconds=1800 (repeatable)",
    )
    parser.add_argument("--master", default=None, help="Spark master when not run through spark-submit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.time()
    try:
        config = apply_overrides(load_config(args.conf, default_name=args.dataset), args.overrides)
    except ConfigError as exc:
        return _error(str(exc))
    try:
        CHECK_JOB[args.dataset](args.input, args.output, config)  # no Spark yet: a bad input fails in a second
        print(f"[features] {args.dataset}: resolved config:\n{json.dumps(config, indent=2, sort_keys=True, default=str)}",
              flush=True)
        spark = get_spark(f"musicrec-features-{args.dataset}", master=args.master)
        try:
            summary = RUN_JOB[args.dataset](spark, args.input, args.output, config)
        finally:
            spark.stop()
    except InputError as exc:
        return _error(str(exc))
    except ConfigError as exc:
        return _error(f"config: {exc}")
    print(f"[features] {args.dataset}: done in {time.time() - started:.1f}s -> {args.output}", flush=True)
    print(json.dumps(summary, indent=2, sort_keys=True, default=str), flush=True)
    return 0


def _error(message: str) -> int:
    print(f"features.py: error: {message}", file=sys.stderr)
    return 2
