"""Training through Spark (jobs/train_on_spark.py), with one of two backends (``--backend``, jobs/train.py's flag):

- ``horovod`` (the default while Horovod is installed): ``horovod.spark.run`` starts N Horovod workers in N Spark
  tasks, and each runs ``musicrec.train.run.main`` with jobs/train.py's arguments (the workers import ``musicrec``:
  installed, or shipped by spark-submit.sh);
- ``torch`` (the default without Horovod): Spark's ``TorchDistributor`` runs jobs/train.py under torchrun, in local
  mode (``--torch-mode local``: ``torchrun --standalone --nproc_per_node N`` on the driver) or in cluster mode
  (``--torch-mode cluster``: one torchrun node per barrier Spark task; PySpark runs it as a ``mapInArrow`` job,
  so it needs PySpark's declared pyarrow >= 18, which the default profile's Petastorm rules out: ``check_torch_mode``
  says so in one line before Spark starts).

``worker_argv`` checks those arguments on the driver, before any task starts, and makes every path absolute: the
workers read the Parquet with Petastorm from ``file://`` paths and rank 0 writes the checkpoints and the MLflow
records, so ``--data``, ``--run-dir`` (its default included), ``--conf`` and the tracking URI must name places the
executors see (one host, as with ``local[N]`` or a standalone cluster on 127.0.0.1, or a shared file system).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
from pathlib import Path

from musicrec.data import read_manifest
from musicrec.distributed import horovod, torch_dist
from musicrec.spark import get_spark
from musicrec.tracking import resolve_tracking_uri
from musicrec.train import run

ENV_PREFIXES = ("MUSICREC_", "HOROVOD_", "MLFLOW_")  # driver environment the workers get (debug, fault injection, timeouts)
TORCH_MODES = ("local", "cluster")  # TorchDistributor(local_mode=True / False)


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


def spark_backend(name: str) -> str:
    """jobs/train.py's ``--backend`` on Spark: ``auto`` = ``horovod`` when Horovod is installed, else ``torch``."""
    if name != "auto":
        return name
    return "horovod" if importlib.util.find_spec("horovod") is not None else "torch"


def check_torch_mode(mode: str) -> None:
    """Cluster mode needs PySpark's declared pyarrow (``require_minimum_pyarrow_version``): a ``UsageError`` naming
    the versions when it is not met (the default profile's pyarrow 14, which Petastorm needs)."""
    if mode != "cluster":
        return
    from pyspark.sql.pandas.utils import require_minimum_pyarrow_version

    try:
        require_minimum_pyarrow_version()
    except ImportError as exc:  # PySparkImportError
        raise run.UsageError(f"--torch-mode cluster: TorchDistributor's cluster mode runs a barrier mapInArrow Spark "
                             f"job, which needs PySpark's pyarrow: {exc} (this profile keeps the pyarrow Petastorm "
                             "needs); use --torch-mode local (torchrun on the driver), or the current-dependency "
                             "profile") from None


def uses_gpu(train_args: argparse.Namespace) -> bool:
    """Whether the workers train on CUDA: train.device after ``--device`` (auto = CUDA when this host has it)."""
    device = run.resolve_config(train_args)["train"].get("device", "auto")
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return str(device).startswith("cuda")


def train_on_spark(train_argv: list[str], num_proc: int | None, start_timeout: int, *, backend: str = "horovod",
                   torch_mode: str = "local", script: Path | None = None, use_gpu: bool = False) -> int:
    """Run jobs/train.py's training in ``num_proc`` workers (default ``spark.default.parallelism``) through the Spark
    master of this session; the number of workers. ``horovod``: ``train_fn`` in Spark tasks (``start_timeout``: for
    them to start); ``torch``: ``script`` (jobs/train.py) under TorchDistributor in ``torch_mode``. A failed worker
    -> ``WorkerFailure`` naming the rank that failed first."""
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
    cluster = backend == "torch" and torch_mode == "cluster"
    # cluster mode: the workers run in executors, which get this environment (debug, fault injection) from Spark
    executor_env = {f"spark.executorEnv.{k}": v for k, v in env.items()} if cluster else None
    spark = get_spark("musicrec-train-on-spark", conf=executor_env)
    num_proc = num_proc or spark.sparkContext.defaultParallelism
    master = spark.sparkContext.master
    try:
        if backend == "torch":
            where = "barrier tasks on " + master if cluster else "torchrun on this driver"
            print(f"train_on_spark.py: {num_proc} torch.distributed workers through TorchDistributor ({torch_mode} "
                  f"mode: {where}, use_gpu={use_gpu}); worker argv: {' '.join(train_argv)}", flush=True)
            torch_dist.run_on_spark(str(script), train_argv, num_proc=num_proc, local_mode=not cluster, use_gpu=use_gpu)
        else:
            print(f"train_on_spark.py: {num_proc} Horovod workers on {master}; worker argv: {' '.join(train_argv)}",
                  flush=True)
            horovod.run_on_spark(train_fn, (train_argv, env), num_proc=num_proc, start_timeout=start_timeout, env=env)
    finally:
        spark.stop()
    return num_proc


__all__ = ["ENV_PREFIXES", "TORCH_MODES", "check_torch_mode", "local_path", "spark_backend", "train_fn",
           "train_on_spark", "uses_gpu", "worker_argv"]
