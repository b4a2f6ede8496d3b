"""Train (or, for the baselines, fit and evaluate) one model on one feature-job output, tracked in MLflow.

    python jobs/train.py --model gru --data work/features/lastfm
    python jobs/train.py --model dnn --data work/features/kkbox --set train.lr=0.003 --epochs 5
    python jobs/train.py --model gru --data work/features/lastfm --resume      # continue runs/lastfm-gru/

Models: ncf, dnn, logreg, pop on KKBOX; gru, ncf, pop, cooc on Last.fm. The config is ``conf/<model>.yaml`` (or
``--conf``) with ``--set section.key=value`` overrides, then ``--epochs``/``--seed``/``--device``; the resolved config
is printed once. Checkpoints go to ``--run-dir`` (default ``runs/<dataset>-<model>``): ``last.pt`` every epoch and
``best.pt``; ``--resume`` continues from ``last.pt`` (same MLflow run, same final weights as an uninterrupted run).
Under a multi-worker launcher the distributed backend is picked automatically (``musicrec.distributed``):

    horovodrun -np 2 --gloo -H localhost:2 .venv/bin/python jobs/train.py --model dnn --data work/features/kkbox

Every worker reads its Petastorm shard (row group i goes to rank i % N, so each split needs at least N row groups;
checked before training); ``data.batch_size`` is the GLOBAL batch (``train.global_batch``), split over the workers;
``train.lr_scaling`` scales the learning rate; only rank 0 prints, writes checkpoints and logs the one MLflow run;
on a CPU the workers of a host share its cores (``train.num_threads`` per worker; its "0 = PyTorch's default" becomes
cores / local workers, unless OMP_NUM_THREADS is set, and a warning says when the workers oversubscribe the cores).
The baselines (pop, cooc) are not trained: under a launcher rank 0 evaluates them alone on all the data and the
other workers exit at once. jobs/train_on_spark.py runs the same job on Spark executors.
Exit status: 0 done, 2 bad arguments / data / config / checkpoint (one ``error:`` line, no traceback), 3 another
worker died or hangs (distributed; ``horovodrun`` then names the failed rank and exits 1; the limits are in
musicrec/distributed_horovod.py).

Debugging and fault injection (environment variables, read by every worker):
    MUSICREC_DEBUG_ROWS=1          write the ids of every training example each worker took, per epoch, to
                                   <run dir>/debug_rows/epoch<E>-rank<R>.npz (row_id, session_id, user/song, target)
    MUSICREC_FAULT_RANK=R MUSICREC_FAULT_AT_STEP=K
                                   worker R exits with status 17 (os._exit, no clean-up) when it takes its K-th
                                   training batch (counted from 1 in this process): a crash, to test failure and --resume
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python jobs/train.py` from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

MODELS = ("ncf", "dnn", "gru", "pop", "cooc", "logreg")
BASELINES = ("pop", "cooc")
SUPPORTED = {"kkbox": ("ncf", "dnn", "logreg", "pop"), "lastfm": ("gru", "ncf", "pop", "cooc")}
KIND_OF_VIEW = {"rows": "binary", "next_song": "next_song", "ncf": "loo"}
FAULT_EXIT_CODE = 17  # exit status of a worker killed by MUSICREC_FAULT_RANK / MUSICREC_FAULT_AT_STEP
DEBUG_ROW_COLUMNS = ("row_id", "session_id", "user_idx", "song_idx", "target", "next_song", "lengths")


class UsageError(ValueError):
    """A combination of arguments that cannot work (e.g. a model the dataset does not support)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train or evaluate one musicrec model on a feature-job output folder, tracked in MLflow.",
        epilog="KKBOX supports: ncf, dnn, logreg, pop. Last.fm supports: gru, ncf, pop, cooc.",
    )
    parser.add_argument("--model", required=True, choices=MODELS, help="which model or baseline")
    parser.add_argument("--data", required=True, type=Path, help="feature-job output folder (with _MANIFEST.json)")
    parser.add_argument("--conf", type=Path, default=None, help="YAML config (default: conf/<model>.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable), e.g. --set train.lr=0.01")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--seed", type=int, default=None, help="override train.seed")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                        help="override train.device (auto = CUDA when available)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="checkpoint folder (default: runs/<dataset>-<model> in the project)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db); "
                             "'none' disables tracking")
    return parser


def resolve_config(args, dataset: str) -> dict:
    """conf/<model>.yaml (or --conf) + --set overrides + --epochs/--seed/--device, checked."""
    from musicrec.config import ConfigError, apply_overrides, load_config

    config = apply_overrides(load_config(args.conf, default_name=args.model), args.overrides)
    for section in ("model", "train", "data"):
        value = config.setdefault(section, {})
        if value is None:
            config[section] = {}
        elif not isinstance(value, dict):
            raise ConfigError(f"config section {section!r} must be a mapping")
    unknown = sorted(set(config) - {"model", "train", "data"})
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; expected model, train, data")
    if args.epochs is not None:
        config["train"]["epochs"] = args.epochs
    if args.seed is not None:
        config["train"]["seed"] = args.seed
    if args.device is not None:
        config["train"]["device"] = args.device
    return config


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from musicrec.checkpoint import CheckpointError
    from musicrec.config import ConfigError
    from musicrec.distributed_horovod import WORKER_FAILURE_EXIT_CODE, WorkerFailure
    from musicrec.loader import DataError

    try:
        return run(args)
    except (DataError, ConfigError, CheckpointError, UsageError) as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2
    except WorkerFailure as exc:  # distributed: a peer died; the launcher names it
        print(f"train.py: error: {exc}", file=sys.stderr, flush=True)
        return WORKER_FAILURE_EXIT_CODE


def run(args) -> int:
    from musicrec.config import ConfigError
    from musicrec.loader import DataConfig, read_manifest

    manifest = read_manifest(args.data)
    dataset = manifest["dataset"]
    if args.model not in SUPPORTED[dataset]:
        raise UsageError(f"model {args.model!r} does not apply to the {dataset} dataset in {args.data}; "
                         f"{dataset} supports: {', '.join(SUPPORTED[dataset])}")
    config = resolve_config(args, dataset)
    from musicrec.training import TrainConfig

    try:
        data_config = DataConfig.from_dict(config["data"])
        train_config = TrainConfig.from_dict(config["train"])
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"{args.conf or f'conf/{args.model}.yaml'}: {exc}") from exc

    import yaml

    from musicrec.distributed import get_backend

    backend = get_backend("auto")  # distributed: Horovod under horovodrun / horovod.spark.run, else one process
    if args.model in BASELINES and backend.size > 1 and not backend.is_root:
        print(f"train.py: rank {backend.rank}: {args.model} is a non-learned baseline; rank 0 evaluates it alone, "
              "this worker has nothing to do", flush=True)
        return 0
    if backend.is_root:  # distributed: only rank 0 prints
        print(f"train.py: model={args.model} dataset={dataset} data={Path(args.data).resolve()}")
        print("resolved config:\n" + yaml.safe_dump(config, sort_keys=False).rstrip(), flush=True)
    if args.model in BASELINES:
        if backend.size > 1:
            print(f"note: {args.model} is a non-learned baseline: rank 0 of {backend.size} evaluates it alone on all "
                  "the data (one MLflow run); the other workers exit", flush=True)
        from musicrec.distributed import SingleProcess

        return run_baseline(args, manifest, config, data_config, train_config, SingleProcess())
    return run_model(args, manifest, config, data_config, train_config, backend)


def _make_tracker(args, dataset: str, run_name: str, enabled: bool, run_id: str | None = None):
    from musicrec.tracking import MlflowTracker, Tracker, resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    if uri.lower() == "none" or not enabled:
        return Tracker(), uri
    return MlflowTracker(uri, dataset, run_id=run_id, run_name=run_name, enabled=enabled), uri


def _data(args, manifest, data_config, train_config, backend):
    from musicrec.loader import Data, view_for

    view = view_for(manifest["dataset"], args.model)
    data = Data(args.data, view, data_config, seed=train_config.seed, cur_shard=backend.rank,
                shard_count=backend.size, manifest=manifest)
    return data, KIND_OF_VIEW[view]


def run_baseline(args, manifest, config, data_config, train_config, backend) -> int:
    from musicrec import baselines
    from musicrec.loader import manifest_fingerprint
    from musicrec.training import BaselineScorer, evaluate, evaluate_baseline, seed_everything

    seed_everything(train_config.seed)
    data, kind = _data(args, manifest, data_config, train_config, backend)
    vocab = data.song_vocab
    started = time.perf_counter()
    try:
        if args.model == "pop":
            baseline = baselines.MostPopular(vocab, **config["model"])
            if kind == "binary":
                rows = data.train_rows(["song_idx", manifest["features"]["target"]])
                baseline.fit(rows["song_idx"], rows[manifest["features"]["target"]])
            else:
                baseline.fit_sessions(data.train_sessions())
        else:
            baseline = baselines.CoOccurrence(vocab, **config["model"]).fit(data.train_sessions())
    except TypeError as exc:
        from musicrec.config import ConfigError

        raise ConfigError(f"model section of the {args.model} config: {exc}") from exc
    fit_s = time.perf_counter() - started
    fingerprint = manifest_fingerprint(manifest)
    tracker, uri = _make_tracker(args, manifest["dataset"], f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}",
                                 backend.is_root)
    tracker.start(config=config, manifest=manifest, model_name=args.model, data_dir=str(Path(args.data).resolve()),
                  fingerprint=fingerprint)
    status = "FAILED"
    try:
        result = evaluate_baseline(baseline, eval_loader=data.eval_loader, kind=kind, config=train_config,
                                   backend=backend, tracker=tracker)
        tracker.log_final({"fit_time_s": fit_s})
        if args.model == "pop" and kind == "next_song":  # popularity is user-level too: NCF's protocol applies
            loo = {}
            for split, prefix in (("valid", "best_valid_"), ("test", "test_")):
                metrics = evaluate(BaselineScorer(baseline, "loo"), data.loo_loader(split), "loo", backend,
                                   loo_k=train_config.loo_k)
                loo.update({prefix + k: v for k, v in metrics.items() if k != "count"})
            tracker.log_final(loo)
            print("leave-one-out: " + "  ".join(f"{k}={v:.4f}" for k, v in sorted(loo.items())), flush=True)
        tracker.log_baseline(baseline, args.model)
        status = "FINISHED"
    finally:
        tracker.end(status)
    _summary(args, result, tracker, uri, None)
    return 0


def run_model(args, manifest, config, data_config, train_config, backend) -> int:
    import dataclasses

    import numpy as np
    import torch

    from musicrec.checkpoint import CheckpointError, Checkpointer
    from musicrec.config import ConfigError
    from musicrec.loader import manifest_fingerprint
    from musicrec.models import build_model
    from musicrec.training import fit, resolve_device, seed_everything

    dataset = manifest["dataset"]
    try:
        device = resolve_device(train_config.device)
    except RuntimeError as exc:
        raise ConfigError(str(exc)) from exc
    if device.type == "cuda":
        torch.cuda.set_device(backend.local_rank if device.index is None else device.index)  # distributed: one GPU per worker
    train_config, threads = _share_cores(backend, device, train_config)  # distributed: workers share the host's cores
    distributed = {"backend": backend.name, "workers": backend.size, "global_batch": data_config.batch_size}
    if backend.size > 1:  # distributed: per-worker batch and learning rate
        try:
            per_worker = train_config.per_worker_batch(data_config.batch_size, backend.size)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        distributed.update(global_batch=per_worker * backend.size, per_worker_batch=per_worker,
                           lr=train_config.scaled_lr(backend.size), torch_threads=threads)
        data_config = dataclasses.replace(data_config, batch_size=per_worker)
        train_config = dataclasses.replace(train_config, lr=distributed["lr"])
    seed_everything(train_config.seed)
    data, kind = _data(args, manifest, data_config, train_config, backend)
    if backend.size > 1:  # distributed: Petastorm shards by row group
        _check_row_groups(data, ["train"] if args.model == "ncf" and dataset == "lastfm" else ["train", "valid", "test"],
                          backend.size)
    try:
        model = build_model(args.model, manifest, config["model"])
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"model section of the {args.model} config: {exc}") from exc
    if getattr(model.config, "sampler", None) == "popularity" and hasattr(model, "set_sampling_counts"):
        sessions = data.train_sessions()
        counts = np.bincount(np.concatenate(sessions), minlength=data.song_vocab) if sessions else np.zeros(data.song_vocab)
        model.set_sampling_counts(torch.as_tensor(counts))

    run_dir = (args.run_dir or REPO / "runs" / f"{dataset}-{args.model}").resolve()
    checkpointer = Checkpointer(run_dir, enabled=backend.is_root)
    fingerprint = manifest_fingerprint(manifest)
    resume_from = None
    if args.resume:
        if not checkpointer.exists():
            raise CheckpointError(f"--resume: no checkpoint at {checkpointer.last_path}; pass the --run-dir of the run "
                                  "to continue, or drop --resume")
        resume_from = checkpointer.load_last()
        from dataclasses import asdict

        from musicrec.checkpoint import check_compatible

        check_compatible(resume_from, model_name=args.model, model_config=asdict(model.config),
                         fingerprint=fingerprint, path=checkpointer.last_path)
        if backend.is_root:
            print(f"resuming {checkpointer.last_path} after epoch {_json_field(resume_from['loop_state'], 'epoch')}")
    elif checkpointer.exists() and backend.is_root:
        print(f"note: {run_dir} holds an earlier run's checkpoint; this fresh run replaces it (use --resume to continue)")
        for path in (checkpointer.last_path, checkpointer.best_path):
            path.unlink(missing_ok=True)
    if backend.is_root:
        print(f"run dir: {run_dir}  device: {device}  workers: {backend.size}", flush=True)
        if backend.size > 1:
            print("distributed: " + "  ".join(f"{k}={v}" for k, v in distributed.items()), flush=True)

    run_id = (resume_from or {}).get("mlflow_run_id") or None
    tracker, uri = _make_tracker(args, dataset, f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}", backend.is_root,
                                 run_id=run_id)
    tracker.start(config={**config, "distributed": distributed}, manifest=manifest, model_name=args.model,
                  data_dir=str(Path(args.data).resolve()), fingerprint=fingerprint, resumed=resume_from is not None)
    on_batch, callbacks = _debug_hooks(backend, run_dir)
    status = "FAILED"
    try:
        result = fit(model, train_loader=data.train_loader, eval_loader=data.eval_loader, kind=kind,
                     config=train_config, backend=backend, device=device, checkpointer=checkpointer,
                     tracker=tracker, model_name=args.model, fingerprint=fingerprint, run_config=config,
                     resume_from=resume_from, on_batch=on_batch, callbacks=callbacks)
        if backend.is_root:
            tracker.log_model(model)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.end(status)
    if backend.is_root:
        _summary(args, result, tracker, uri, run_dir)
    return 0


def _share_cores(backend, device, train_config):
    """(train_config, torch threads per worker) for N workers on a CPU host: ``train.num_threads`` > 0 is kept (with a
    warning when local workers x threads exceeds the cores: they would oversubscribe them); 0 (PyTorch's default:
    every core, in every worker) becomes cores / local workers, unless OMP_NUM_THREADS is set. One worker or a GPU:
    unchanged."""
    import dataclasses
    import os

    threads = getattr(train_config, "num_threads", 0)
    if backend.size == 1 or device.type != "cpu":
        return train_config, threads or None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = max(1, getattr(backend, "local_size", backend.size))
    if threads == 0:
        if os.environ.get("OMP_NUM_THREADS"):
            return train_config, int(os.environ["OMP_NUM_THREADS"])
        threads = max(1, cores // local)
        if hasattr(train_config, "num_threads"):
            train_config = dataclasses.replace(train_config, num_threads=threads)  # fit applies it
        else:
            import torch

            torch.set_num_threads(threads)
    if threads * local > cores and backend.is_root:
        print(f"warning: {local} workers x {threads} torch threads on {cores} cores oversubscribe them; set "
              f"train.num_threads={max(1, cores // local)}", flush=True)
    return train_config, threads


def _check_row_groups(data, splits: list[str], workers: int) -> None:
    """Petastorm gives row group i to worker i % N: a split with fewer row groups than workers cannot be sharded."""
    import pyarrow.dataset as ds

    from musicrec.loader import DataError

    for split in splits:
        path = data.path(split)
        count = sum(fragment.metadata.num_row_groups for fragment in ds.dataset(str(path), format="parquet").get_fragments())
        if count < workers:
            raise DataError(f"{path}: split {split!r} has {count} Parquet row group(s), fewer than the {workers} workers; "
                            "Petastorm shards by row group, so each worker needs at least one: write the split as at "
                            f"least {workers} files / row groups, or run fewer workers")


def _debug_hooks(backend, run_dir: Path):
    """(on_batch, callbacks) for ``fit`` from MUSICREC_DEBUG_ROWS and MUSICREC_FAULT_RANK / MUSICREC_FAULT_AT_STEP."""
    import os

    import numpy as np

    debug_rows = os.environ.get("MUSICREC_DEBUG_ROWS", "") not in ("", "0")
    fault_rank = os.environ.get("MUSICREC_FAULT_RANK")
    fault_step = int(os.environ.get("MUSICREC_FAULT_AT_STEP", "0") or 0)
    if not debug_rows and fault_rank is None:
        return None, ()
    seen: dict[str, list] = {}
    taken = 0

    def on_batch(epoch, step, batch):
        nonlocal taken
        taken += 1
        if fault_rank is not None and int(fault_rank) == backend.rank and taken == fault_step:
            print(f"train.py: fault injection: rank {backend.rank} exits with status {FAULT_EXIT_CODE} at its training "
                  f"batch {taken} (epoch {epoch + 1}, step {step}, unix time {time.time():.2f})", file=sys.stderr, flush=True)
            os._exit(FAULT_EXIT_CODE)
        if debug_rows:
            for key in DEBUG_ROW_COLUMNS:
                if key in batch:
                    seen.setdefault(key, []).append(batch[key].numpy().copy())

    def write_rows(epoch, state):
        if debug_rows:
            folder = run_dir / "debug_rows"
            folder.mkdir(parents=True, exist_ok=True)
            np.savez(folder / f"epoch{epoch}-rank{backend.rank}.npz", **{k: np.concatenate(v) for k, v in seen.items()})
            seen.clear()

    return on_batch, (write_rows,)


def _json_field(blob: str, key: str):
    import json

    return json.loads(blob).get(key)


def _summary(args, result, tracker, uri: str, run_dir: Path | None) -> None:
    line = f"done: model={args.model} best_epoch={result.best_epoch} {result.metric}={result.best_metric}"
    if tracker.run_id:
        line += f"  mlflow run {tracker.run_id} in {uri}"
    if run_dir is not None:
        line += f"  checkpoints in {run_dir}"
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
