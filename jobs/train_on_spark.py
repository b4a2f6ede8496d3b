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

Failure: a worker that dies makes the others' next collective fail at once (musicrec.distributed_horovod), every
Horovod process exits, and this job prints which rank failed first and exits 1; ``--resume`` continues from rank 0's
last checkpoint. Exit status: 0 done, 1 a worker failed, 2 bad arguments / data (before any Spark task starts).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ENV_PREFIXES = ("MUSICREC_", "HOROVOD_", "MLFLOW_")  # driver environment the workers get (debug, fault injection, timeouts)


def load_train_job():
    """jobs/train.py as a module (``jobs/`` is not a package); registered with cloudpickle by value, so the
    executors need the ``musicrec`` package but not this checkout's ``jobs/`` folder."""
    spec = importlib.util.spec_from_file_location("musicrec_job_train", Path(__file__).resolve().parent / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def build_parser(train_help: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train_on_spark.py",
        description="Train a musicrec model on Spark executors with Horovod (horovod.spark.run); every other option "
                    "is jobs/train.py's.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="options of jobs/train.py (passed to every worker):\n\n" + train_help,
    )
    parser.add_argument("--num-proc", type=int, default=None,
                        help="Horovod workers (= Spark tasks running at once); default spark.default.parallelism")
    parser.add_argument("--start-timeout", type=int, default=120,
                        help="seconds to wait for the workers' Spark tasks to start (default 120)")
    return parser


def absolute_paths(train_args) -> list[str]:
    """Options appended to the workers' argv (argparse keeps the last value) so every path is absolute."""
    from musicrec.tracking import resolve_tracking_uri

    extra = ["--data", str(local_path(train_args.data, "--data"))]
    if train_args.run_dir is not None:
        extra += ["--run-dir", str(local_path(train_args.run_dir, "--run-dir"))]
    if train_args.conf is not None:
        extra += ["--conf", str(local_path(train_args.conf, "--conf"))]
    uri = resolve_tracking_uri(train_args.tracking_uri)
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        uri = f"sqlite:///{db if db.is_absolute() else (Path.cwd() / db).resolve()}"
    return extra + ["--tracking-uri", uri]


def local_path(value, flag: str) -> Path:
    """A path or ``file://`` URI -> an absolute local path; other schemes are refused (the loader reads local files)."""
    text = str(value)  # argparse's Path has folded "scheme://" to "scheme:/"
    if re.match(r"^file:/", text):
        text = "/" + text[len("file:"):].lstrip("/")
    elif re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:/", text):
        raise ValueError(f"{flag} {value}: only local paths or file:// URIs visible to every executor are supported")
    return Path(text).resolve()


def train_fn(train_main, train_argv: list[str], env: dict[str, str]):
    """Runs in every Horovod worker (a process started by a Spark task): jobs/train.py's ``main``."""
    os.environ.update(env)
    code = train_main(train_argv)
    if code != 0:
        sys.exit(code)  # Horovod reports the failed rank and its exit status to the driver
    return {"exit": 0}


def main(argv: list[str] | None = None) -> int:
    TRAIN = load_train_job()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(TRAIN.build_parser().format_help())
    args, train_argv = parser.parse_known_args(argv)
    train_args = TRAIN.build_parser().parse_args(train_argv)  # bad options: exit 2 here, before Spark starts tasks

    from musicrec.loader import DataError, read_manifest

    try:
        train_argv = train_argv + absolute_paths(train_args)
        manifest = read_manifest(local_path(train_args.data, "--data"))
        if train_args.model in TRAIN.BASELINES:
            raise TRAIN.UsageError(f"{train_args.model} is a non-learned baseline; evaluate it with jobs/train.py "
                                   "(one process), not on Spark executors")
        if train_args.model not in TRAIN.SUPPORTED[manifest["dataset"]]:
            raise TRAIN.UsageError(f"model {train_args.model!r} does not apply to the {manifest['dataset']} dataset; "
                                   f"it supports: {', '.join(TRAIN.SUPPORTED[manifest['dataset']])}")
    except (DataError, ValueError) as exc:
        print(f"train_on_spark.py: error: {exc}", file=sys.stderr)
        return 2

    import cloudpickle
    import horovod.spark

    from musicrec.spark import get_spark

    cloudpickle.register_pickle_by_value(TRAIN)  # the executors get jobs/train.py's code with the function
    spark = get_spark("musicrec-train-on-spark")
    num_proc = args.num_proc or spark.sparkContext.defaultParallelism
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
    print(f"train_on_spark.py: {num_proc} Horovod workers on {spark.sparkContext.master}; worker argv: "
          f"{' '.join(train_argv)}", flush=True)
    try:
        horovod.spark.run(train_fn, args=(TRAIN.main, train_argv, env), num_proc=num_proc, start_timeout=args.start_timeout,
                          use_gloo=True, env=env, verbose=1,
                          stdout=sys.stdout, stderr=sys.stderr)  # the workers' output, prefixed [rank], on the driver
    except Exception as exc:  # Horovod raises RuntimeError naming the first failed process (= rank), or a timeout
        message = str(exc)
        found = re.search(r"Process name: (\d+)\s+Exit code: (-?\d+)", message)
        if found:
            print(f"train_on_spark.py: error: rank {found.group(1)} failed first (exit status {found.group(2)}); the "
                  "other workers were stopped. Its output is above; rerun with --resume to continue from the last "
                  "checkpoint", file=sys.stderr, flush=True)
        else:
            print(f"train_on_spark.py: error: Horovod on Spark failed: {message.strip().splitlines()[-1] if message.strip() else type(exc).__name__}",
                  file=sys.stderr, flush=True)
        return 1
    finally:
        spark.stop()
    print(f"train_on_spark.py: done: {num_proc} workers finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
