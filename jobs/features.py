"""Feature jobs: raw Last.fm 1K or KKBOX files -> Parquet, vocabularies, stats report and manifest.

    spark-submit jobs/features.py lastfm --input DIR --output OUT [--conf conf/lastfm.yaml] [--set k=v ...]
    spark-submit jobs/features.py kkbox  --input DIR --output OUT [--conf conf/kkbox.yaml]  [--set k=v ...]

(or ``./spark-submit.sh jobs/features.py ...``, which also ships the musicrec package to the executors).
Each dataset's pipeline lives in ``musicrec.features.<dataset>`` as small DataFrame -> DataFrame stages; this file
only parses arguments, resolves the configuration and builds the SparkSession.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from musicrec.config import ConfigError, apply_overrides, load_config
from musicrec.io import InputError

DATASETS = ("lastfm", "kkbox")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="features.py",
        description="Turn raw listening logs into training Parquet (run with spark-submit).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Output layout: docs/DATA_CONTRACT.md. Exit codes: 0 ok, 2 bad input or config.",
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
    try:
        config = apply_overrides(load_config(args.conf, default_name=args.dataset), args.overrides)
    except ConfigError as exc:
        print(f"features.py: error: {exc}", file=sys.stderr)
        return 2

    from musicrec.spark import get_spark

    if args.dataset == "lastfm":
        from musicrec.features.lastfm import run_job
    else:
        from musicrec.features.kkbox import run_job

    started = time.time()
    print(f"[features] {args.dataset}: resolved config:\n{json.dumps(config, indent=2, sort_keys=True, default=str)}", flush=True)
    spark = get_spark(f"musicrec-features-{args.dataset}", master=args.master)
    try:
        summary = run_job(spark, args.input, args.output, config)
    except InputError as exc:
        print(f"features.py: error: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"features.py: error: config: {exc}", file=sys.stderr)
        return 2
    finally:
        spark.stop()
    print(f"[features] {args.dataset}: done in {time.time() - started:.1f}s -> {args.output}", flush=True)
    print(json.dumps(summary, indent=2, sort_keys=True, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
