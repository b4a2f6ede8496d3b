"""Training on Spark executors (jobs/train_on_spark.py): ``horovod.spark.run`` starts N Horovod workers in N Spark
tasks, and each runs ``musicrec.train.run.main`` with jobs/train.py's arguments (the workers import ``musicrec``:
installed, or shipped by spark-submit.sh).

``worker_argv`` checks those arguments on the driver, before any task starts, and makes every path absolute: the
workers read the Parquet with Petastorm from ``file://`` paths and rank 0 writes the checkpoints and the MLflow
records, so ``--data``, ``--run-dir`` (its default included), ``--conf`` and the tracking URI must name places the
executors see (one host, as with ``local[N]`` or a standalone cluster on 127.0.0.1, or a shared file system).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from musicrec.data import read_manifest
from musicrec.distributed.horovod import run_on_spark
from musicrec.spark import get_spark
from musicrec.tracking import resolve_tracking_uri
from musicrec.train import run

ENV_PREFIXES = ("MUSICREC_", "HOROVOD_", "MLFLOW_")  # driver environment the workers get (debug, fault injection, timeouts)


def worker_argv(train_argv: list[str], train_args: argparse.Namespace) -> list[str]:
    """``train_argv`` with absolute ``--data``, ``--run-dir``, ``--conf`` and ``--tracking-uri`` appended (argparse
    keeps the last value); a baseline, a model the dataset does not support or a remote path is refused."""
    data = local_path(train_args.data, "--data")
    extra = ["--data", str(data)]
    dataset = read_manifest(data)["dataset"]
    if train_args.model in run.BASELINES:
        raise run.UsageError(f"{train_args.model} is a non-learned baseline; evaluate it with jobs/train.py "
                             "(one process), not on Spark executors")
    run.check_supported(train_args.model, dataset, f"the {dataset} dataset")
    run_dir = train_args.run_dir or run.default_run_dir(dataset, train_args.model)
    extra += ["--run-dir", str(local_path(run_dir, "--run-dir"))]
    if train_args.conf is not None:
        extra += ["--conf", str(local_path(train_args.conf, "--conf"))]
    uri = resolve_tracking_uri(train_args.tracking_uri)
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        uri = f"sqlite:///{db if db.is_absolute() else (Path.cwd() / db).resolve()}"
    return train_argv + extra + ["--tracking-uri", uri]


def local_path(value, flag: str) -> Path:
    """A path or ``file://`` URI -> an absolute local path; other schemes are refused (the loader reads local files)."""
    text = str(value)  # argparse's Path has folded "scheme://" to "scheme:/"
    if re.match(r"^file:/", text):
        text = "/" + text[len("file:"):].lstrip("/")
    elif re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:/", text):
        raise ValueError(f"{flag} {value}: only local paths or file:// URIs visible to every executor are supported")
    return Path(text).resolve()


def train_fn(train_argv: list[str], env: dict[str, str]):
    """Runs in every Horovod worker (a process started by a Spark task): jobs/train.py's ``main``."""
    os.environ.update(env)
    code = run.main(train_argv)
    if code != 0:
        sys.exit(code)  # Horovod reports the failed rank and its exit status to the driver
    return {"exit": 0}


def train_on_spark(train_argv: list[str], num_proc: int | None, start_timeout: int) -> int:
    """Run ``train_fn`` in ``num_proc`` workers (default ``spark.default.parallelism``) on the Spark master of this
    session; the number of workers. A failed worker -> ``WorkerFailure`` (musicrec.distributed.horovod)."""
    spark = get_spark("musicrec-train-on-spark")
    num_proc = num_proc or spark.sparkContext.defaultParallelism
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
    print(f"train_on_spark.py: {num_proc} Horovod workers on {spark.sparkContext.master}; worker argv: "
          f"{' '.join(train_argv)}", flush=True)
    try:
        run_on_spark(train_fn, (train_argv, env), num_proc=num_proc, start_timeout=start_timeout, env=env)
    finally:
        spark.stop()
    return num_proc


__all__ = ["ENV_PREFIXES", "local_path", "train_fn", "train_on_spark", "worker_argv"]
