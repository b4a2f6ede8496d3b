"""Train one model through Spark, with Horovod or torch.distributed (jobs/train.py's ``--backend``; same config,
flags, checkpoints and MLflow run as ``horovodrun`` / ``torchrun``):

- ``--backend horovod`` (what ``auto`` means while Horovod is installed): ``horovod.spark.run`` starts N Horovod
  workers in N Spark tasks;
- ``--backend torch`` (``auto`` without Horovod): Spark's ``TorchDistributor`` runs jobs/train.py under torchrun,
  ``--torch-mode local`` (the default: ``torchrun --standalone --nproc_per_node N`` on the driver) or
  ``--torch-mode cluster`` (one torchrun node per barrier Spark task; needs PySpark's pyarrow >= 18, so not in the
  default Horovod + Petastorm profile, whose pyarrow is 14: refused there in one line; it runs in the
  current-dependency profile, ``MUSICREC_PROFILE=current ./run.sh spark-submit --master spark://...
  jobs/train_on_spark.py --backend torch --torch-mode cluster ...``, tested on a loopback standalone cluster in
  tests/test_current_profile.py).

    ./spark-submit.sh --master local[2] jobs/train_on_spark.py --num-proc 2 --model dnn --data work/features/kkbox
    ./spark-submit.sh --master local[2] jobs/train_on_spark.py --backend torch --num-proc 2 --model dnn \\
        --data work/features/kkbox
    ./spark-submit.sh --master spark://127.0.0.1:7077 --total-executor-cores 2 --executor-cores 1 \\
        jobs/train_on_spark.py --num-proc 2 --model gru --data /data/features/lastfm --epochs 5

Options of this job: ``--num-proc`` (workers; Horovod: Spark tasks running at once; default
``spark.default.parallelism``), ``--start-timeout`` (Horovod: seconds to wait for the N tasks to start, e.g. for
executors to come up), ``--torch-mode`` (above). The workers use the GPU when train.device (``--device``) is cuda, or
auto on a host with CUDA (TorchDistributor then needs ``spark.driver.resource.gpu.amount`` in local mode,
``spark.task.resource.gpu.amount`` in cluster mode). Every other option is jobs/train.py's (see ``--help``), passed
to every worker unchanged except that ``--data``, ``--run-dir``, ``--conf`` and the MLflow tracking URI are made
absolute on the driver: the workers read the Parquet with Petastorm from ``file://`` paths and rank 0 writes the
checkpoints and the MLflow records, so these paths must be visible to the executors (one host, as with
``local[N]`` or a standalone cluster on 127.0.0.1, or a shared file system). The cluster needs N free task slots at
the same time; ``--executor-cores 1`` and ``--total-executor-cores N`` give one worker per core. Each worker uses
cores / (its host's workers) torch threads.

The baselines (pop, cooc, sknn, rate, lightgbm) are not trained by the loop and are refused here: run them with
jobs/train.py.

Failure: a worker that dies makes the others' next collective fail at once (musicrec.distributed.horovod,
musicrec.distributed.torch_dist), every worker exits, and this job prints which rank failed first and exits 1;
``--resume`` continues from rank 0's last checkpoint. Exit status: 0 done, 1 a worker failed, 2 bad arguments / data
/ GPU set-up (before any worker starts). The driver's and the workers' side are ``musicrec.train.on_spark``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from musicrec.data import DataError
from musicrec.distributed.common import WorkerFailure
from musicrec.train import on_spark, run

TRAIN_SCRIPT = Path(__file__).resolve().with_name("train.py")  # what TorchDistributor runs under torchrun


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train_on_spark.py",
        description="Train a musicrec model through Spark with Horovod (horovod.spark.run) or torch.distributed "
                    "(TorchDistributor; --backend torch); every other option is jobs/train.py's.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="options of jobs/train.py (passed to every worker):\n\n" + run.build_parser().format_help(),
    )
    parser.add_argument("--num-proc", type=int, default=None,
                        help="workers (Horovod: Spark tasks running at once); default spark.default.parallelism")
    parser.add_argument("--start-timeout", type=int, default=120,
                        help="Horovod: seconds to wait for the workers' Spark tasks to start (default 120)")
    parser.add_argument("--torch-mode", choices=on_spark.TORCH_MODES, default=None,
                        help="--backend torch: TorchDistributor's local mode (default: torchrun on the driver) or "
                             "cluster mode (barrier Spark tasks; needs pyarrow >= 18, the current-dependency profile)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args, train_argv = build_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    train_args = run.build_parser().parse_args(train_argv)  # bad options: exit 2 here, before Spark starts tasks
    backend = on_spark.spark_backend(train_args.backend)
    try:
        if args.torch_mode is not None and backend != "torch":
            raise ValueError(f"--torch-mode {args.torch_mode} applies to --backend torch, not {backend}")
        on_spark.check_torch_mode(args.torch_mode or "local")
        worker_argv = on_spark.worker_argv(train_argv, train_args)
        use_gpu = backend == "torch" and on_spark.uses_gpu(train_args)
    except (DataError, ValueError) as exc:
        print(f"train_on_spark.py: error: {exc}", file=sys.stderr)
        return 2
    try:
        num_proc = on_spark.train_on_spark(worker_argv, args.num_proc, args.start_timeout, backend=backend,
                                           torch_mode=args.torch_mode or "local", script=TRAIN_SCRIPT, use_gpu=use_gpu)
    except ValueError as exc:  # ConfigError: a GPU set-up TorchDistributor cannot use
        print(f"train_on_spark.py: error: {exc}", file=sys.stderr)
        return 2
    except WorkerFailure as exc:
        print(f"train_on_spark.py: error: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"train_on_spark.py: done: {num_proc} workers finished", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
