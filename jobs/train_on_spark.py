"""Train one model on Spark executors: ``horovod.spark.run`` starts N Horovod workers in N Spark tasks, and each
runs jobs/train.py's training (same config, flags, checkpoints and MLflow run as ``horovodrun``).

    ./spark-submit.sh --master local[2] jobs/train_on_spark.py --num-proc 2 --model dnn --data work/features/kkbox
    ./spark-submit.sh --master spark://127.0.0.1:7077 --total-executor-cores 2 --executor-cores 1 \\
        jobs/train_on_spark.py --num-proc 2 --model gru --data /data/features/lastfm --epochs 5

Options of this job: ``--num-proc`` (Horovod workers = Spark tasks running at once; default
``spark.default.parallelism``), ``--start-timeout`` (seconds to wait for the N tasks to start, e.g. for executors to
come up). Every other option is jobs/train.py's (see ``--help``), passed to every worker unchanged except that
``--data``, ``--run-dir``, ``--conf`` and the MLflow tracking URI are made absolute on the driver: the workers read
the Parquet with Petastorm from ``file://`` paths and rank 0 writes the checkpoints and the MLflow records, so these
paths must be visible to the executors (one host, as with ``local[N]`` or a standalone cluster on 127.0.0.1, or a
shared file system). The cluster needs N free task slots at the same time; ``--executor-cores 1`` and
``--total-executor-cores N`` give one worker per core. Each worker uses cores / (its host's workers) torch threads.

The baselines (pop, cooc) are not trained and are refused here: run them with jobs/train.py.

Failure: a worker that dies makes the others' next collective fail at once (musicrec.distributed.horovod), every
Horovod process exits, and this job prints which rank failed first and exits 1; ``--resume`` continues from rank 0's
last checkpoint. Exit status: 0 done, 1 a worker failed, 2 bad arguments / data (before any Spark task starts).
The driver's and the workers' side are ``musicrec.train.on_spark``.
"""

from __future__ import annotations

import argparse
import sys

from musicrec.data import DataError
from musicrec.distributed.horovod import WorkerFailure
from musicrec.train import on_spark, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train_on_spark.py",
        description="Train a musicrec model on Spark executors with Horovod (horovod.spark.run); every other option "
                    "is jobs/train.py's.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="options of jobs/train.py (passed to every worker):\n\n" + run.build_parser().format_help(),
    )
    parser.add_argument("--num-proc", type=int, default=None,
                        help="Horovod workers (= Spark tasks running at once); default spark.default.parallelism")
    parser.add_argument("--start-timeout", type=int, default=120,
                        help="seconds to wait for the workers' Spark tasks to start (default 120)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args, train_argv = build_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    train_args = run.build_parser().parse_args(train_argv)  # bad options: exit 2 here, before Spark starts tasks
    try:
        worker_argv = on_spark.worker_argv(train_argv, train_args)
    except (DataError, ValueError) as exc:
        print(f"train_on_spark.py: error: {exc}", file=sys.stderr)
        return 2
    try:
        num_proc = on_spark.train_on_spark(worker_argv, args.num_proc, args.start_timeout)
    except WorkerFailure as exc:
        print(f"train_on_spark.py: error: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"train_on_spark.py: done: {num_proc} workers finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
