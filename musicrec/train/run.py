"""One training run, wired together: what ``jobs/train.py`` (and every worker of ``jobs/train_on_spark.py``) runs.

``main(argv)`` parses jobs/train.py's arguments and returns the exit status: 0 done, 2 bad arguments / data / config
/ checkpoint (one ``train.py: error:`` line, no traceback), 3 another worker died or hangs (distributed,
``musicrec.distributed.horovod``). In between, ``train(args)``:

1. reads the manifest of ``--data``, checks the model applies to its dataset, resolves the run config
   (conf/<model>.yaml or ``--conf``, ``--set`` overrides, ``--epochs``/``--max-steps``/``--seed``/``--device``) and
   types its ``data``, ``train`` and ``eval`` sections;
2. picks the distributed backend (``--backend``, default ``auto``: Horovod under horovodrun / horovod.spark.run,
   torch.distributed under torchrun / TorchDistributor, else one process);
3. a baseline (pop, cooc, sknn, rate, lightgbm): ``run_baseline`` fits it and evaluates it on rank 0 alone (the
   other workers exit);
   a model: ``run_model`` shares the host's cores and the global batch among the workers, checks every split has a
   row group per worker, builds the model, prepares the run directory (``--resume`` or a fresh run), opens the
   MLflow run and calls ``musicrec.train.loop.fit`` with the debug / fault-injection hooks
   (``musicrec.train.hooks``).

Evaluation sees the fixed sample of ``eval.max_examples`` examples per split (``EvalConfig.examples_for``: ``auto``
= every example on a GPU, a bound per protocol on a CPU), the same for every model on the same data; the size is
printed, logged as the param ``eval.max_examples`` and counted in the metrics ``valid_examples`` / ``test_examples``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import torch
import yaml

from musicrec import baselines
from musicrec.checkpoint import CheckpointError, Checkpointer, check_compatible
from musicrec.config import ConfigError, apply_overrides, load_config, typed
from musicrec.data import Data, DataConfig, DataError, manifest_fingerprint, read_manifest, view_for
from musicrec.distributed import Backend, SingleProcess, get_backend
from musicrec.distributed.horovod import WORKER_FAILURE_EXIT_CODE, WorkerFailure
from musicrec.models import build_model
from musicrec.seeding import seed_everything
from musicrec.tracking import MlflowTracker, Tracker, check_reachable, resolve_tracking_uri
from musicrec.train.config import TrainConfig
from musicrec.train.evaluate import (BaselineScorer, EvalConfig, FitResult, check_selection_metric, evaluate,
                                     evaluate_baseline)
from musicrec.train.hooks import debug_hooks
from musicrec.train.loop import fit, resolve_device
from musicrec.train.rundir import RunDir

REPO = Path(__file__).resolve().parents[2]
MODELS = ("ncf", "dnn", "gru", "pop", "cooc", "logreg", "sknn", "rate", "lightgbm")
BASELINES = baselines.NAMES  # pop, cooc, sknn, rate, lightgbm: fitted and evaluated by rank 0 alone
SUPPORTED = {"kkbox": ("ncf", "dnn", "logreg", "pop", "rate", "lightgbm"),
             "lastfm": ("gru", "ncf", "pop", "cooc", "sknn")}
KIND_OF_VIEW = {"rows": "binary", "next_song": "next_song", "ncf": "loo"}
SECTIONS = ("model", "train", "data", "eval")


class UsageError(ValueError):
    """A combination of arguments that cannot work (e.g. a model the dataset does not support)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train or evaluate one musicrec model on a feature-job output folder, tracked in MLflow.",
        epilog="KKBOX supports: ncf, dnn, logreg, pop, rate (smoothed song/user target rates), lightgbm. "
               "Last.fm supports: gru, ncf, pop, cooc, sknn (session-kNN).",
    )
    parser.add_argument("--model", required=True, choices=MODELS, help="which model or baseline")
    parser.add_argument("--data", required=True, type=Path, help="feature-job output folder (with _MANIFEST.json)")
    parser.add_argument("--conf", type=Path, default=None, help="YAML config (default: conf/<model>.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable), e.g. --set train.lr=0.01")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--max-steps", type=int, default=None, metavar="N",
                        help="override train.max_steps: stop training after N optimizer steps in all (a bounded run, "
                             "e.g. at the real size on a CPU); 0 = no limit")
    parser.add_argument("--seed", type=int, default=None, help="override train.seed")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                        help="override train.device (auto = CUDA when available)")
    parser.add_argument("--backend", choices=("auto", "torch", "horovod"), default="auto",
                        help="distributed backend (default auto: Horovod under horovodrun / horovod.spark.run, "
                             "torch.distributed under torchrun / TorchDistributor, else one process)")
    fresh_or_not = parser.add_mutually_exclusive_group()
    fresh_or_not.add_argument("--resume", action="store_true",
                              help="continue the run in --run-dir from its last checkpoint")
    fresh_or_not.add_argument("--overwrite", action="store_true",
                              help="start afresh in a --run-dir that holds an earlier run's checkpoints (without it such "
                                   "a run stops with exit 2); they are kept in <run dir>/replaced/ until this run "
                                   "finishes")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="checkpoint folder (default: runs/<dataset>-<model> in the project)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db); "
                             "'none' disables tracking")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return train(args)
    except (DataError, ConfigError, CheckpointError, UsageError) as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2
    except WorkerFailure as exc:  # distributed: a peer died; the launcher names it
        print(f"train.py: error: {exc}", file=sys.stderr, flush=True)
        return WORKER_FAILURE_EXIT_CODE


def train(args: argparse.Namespace) -> int:
    manifest = read_manifest(args.data)
    dataset = manifest["dataset"]
    check_supported(args.model, dataset, f"the {dataset} dataset in {args.data}")
    config = resolve_config(args)
    try:
        data_config = typed(DataConfig, config["data"], "data")
        train_config = typed(TrainConfig, config["train"], "train")
        eval_config = typed(EvalConfig, config["eval"], "eval")
    except ConfigError as exc:
        raise ConfigError(f"{args.conf or f'conf/{args.model}.yaml'}: {exc}") from exc

    uri = resolve_tracking_uri(args.tracking_uri)
    check_reachable(uri)  # an unreachable server: one line within seconds, not minutes of retries
    backend = get_backend(args.backend)  # distributed: auto = the launcher's (horovodrun, torchrun), else one process
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
        return run_baseline(args, manifest, config, data_config, train_config, eval_config, SingleProcess())
    return run_model(args, manifest, config, data_config, train_config, eval_config, backend)


def check_supported(model: str, dataset: str, where: str) -> None:
    if model not in SUPPORTED[dataset]:
        raise UsageError(f"model {model!r} does not apply to {where}; {dataset} supports: {', '.join(SUPPORTED[dataset])}")


def resolve_config(args: argparse.Namespace) -> dict:
    """conf/<model>.yaml (or --conf) + --set overrides + --epochs/--max-steps/--seed/--device, with exactly the
    sections model, train, data and eval (each a mapping)."""
    config = apply_overrides(load_config(args.conf, default_name=args.model), args.overrides)
    for section in SECTIONS:
        value = config.setdefault(section, {})
        if value is None:
            config[section] = {}
        elif not isinstance(value, dict):
            raise ConfigError(f"config section {section!r} must be a mapping")
    unknown = sorted(set(config) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; expected {', '.join(SECTIONS)}")
    for key in ("epochs", "max_steps", "seed", "device"):
        if getattr(args, key) is not None:
            config["train"][key] = getattr(args, key)
    return config


def default_run_dir(dataset: str, model: str) -> Path:
    return REPO / "runs" / f"{dataset}-{model}"


def _data(args, manifest: dict, data_config: DataConfig, train_config: TrainConfig, backend: Backend):
    """The loaders of this worker's shard, and the evaluation protocol of the model's view."""
    view = view_for(manifest["dataset"], args.model)
    data = Data(args.data, view, data_config, seed=train_config.seed, cur_shard=backend.rank,
                shard_count=backend.size, manifest=manifest)
    return data, KIND_OF_VIEW[view]


def _eval_size(config: dict, eval_config: EvalConfig, kind: str, device: torch.device, is_root: bool) -> int:
    """The evaluation sample size of this run (0 = every example), written into the config that is logged, and
    printed once."""
    size = eval_config.examples_for(kind, device)
    config["eval"] = {**config["eval"], "max_examples": size}
    if is_root:
        asked = "auto -> " if eval_config.max_examples == "auto" else ""
        what = (f"a fixed sample of at most {size:,} examples per split, the same for every model on this data" if size
                else "every example of each split")
        print(f"evaluation ({device.type}): eval.max_examples={asked}{size}: {what}", flush=True)
    return size


def _tracker(args, dataset: str, enabled: bool, run_id: str | None = None) -> tuple[Tracker, str]:
    """The MLflow tracker of this run (a no-op ``Tracker`` off the root or with ``--tracking-uri none``), its URI."""
    uri = resolve_tracking_uri(args.tracking_uri)
    if uri.lower() == "none" or not enabled:
        return Tracker(), uri
    run_name = f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    return MlflowTracker(uri, dataset, run_id=run_id, run_name=run_name, enabled=enabled), uri


# ----------------------------------------------------------------------------------------------------------------
# A baseline: fit, evaluate, record (rank 0 alone)
# ----------------------------------------------------------------------------------------------------------------
def run_baseline(args, manifest, config, data_config, train_config, eval_config, backend) -> int:
    seed_everything(train_config.seed)
    data, kind = _data(args, manifest, data_config, train_config, backend)
    try:
        device = resolve_device(train_config.device)  # baselines score on the CPU; "auto" sizes follow the machine
    except RuntimeError as exc:
        raise ConfigError(str(exc)) from exc
    check_selection_metric(train_config, kind, learned=False)
    size = _eval_size(config, eval_config, kind, device, backend.is_root)
    started = time.perf_counter()
    if args.model == "lightgbm" and train_config.max_steps:  # a step budget bounds the boosting: one tree per step
        rounds = min(int(config["model"].get("num_boost_round", train_config.max_steps)), train_config.max_steps)
        config["model"]["num_boost_round"] = rounds
        print(f"train.max_steps={train_config.max_steps}: LightGBM trains at most {rounds} trees", flush=True)
    baseline = _fit_baseline(args.model, config["model"], data, kind, manifest)
    fit_s = time.perf_counter() - started
    fingerprint = manifest_fingerprint(manifest)
    tracker, uri = _tracker(args, manifest["dataset"], backend.is_root)
    tracker.start(config=config, manifest=manifest, model_name=args.model, data_dir=str(Path(args.data).resolve()),
                  fingerprint=fingerprint)
    status = "FAILED"
    try:
        result = evaluate_baseline(baseline, eval_loader=functools.partial(data.eval_loader, max_examples=size),
                                   kind=kind, config=train_config, backend=backend, tracker=tracker)
        tracker.log_final({"fit_time_s": fit_s})
        if args.model == "pop" and kind == "next_song":  # popularity is user-level too: NCF's protocol applies
            _popularity_loo(baseline, data, eval_config.examples_for("loo", device), train_config, backend, tracker)
        tracker.log_baseline(baseline, args.model)
        status = "FINISHED"
    finally:
        tracker.end(status)
    _summary(args, result, tracker, uri, None)
    return 0


def _popularity_loo(baseline, data: Data, size: int, train_config: TrainConfig, backend: Backend, tracker: Tracker):
    """Popularity under NCF's leave-one-out protocol on valid and test (the same users as NCF's), recorded as
    ``best_valid_loo_*`` / ``test_loo_*`` and ``*_loo_examples``."""
    loo, lines = {}, []
    for split, prefix in (("valid", "best_valid_"), ("test", "test_")):
        metrics = evaluate(BaselineScorer(baseline, "loo"), data.loo_loader(split, size), "loo", backend,
                           loo_k=train_config.loo_k)
        examples, _ = metrics.pop("examples"), metrics.pop("count")
        loo.update({prefix + k: v for k, v in metrics.items()})
        loo[prefix + "loo_examples"] = examples
        lines.append(f"{split} " + "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
                     + f"  ({int(examples):,} examples)")
    tracker.log_final(loo)
    print("leave-one-out: " + ";  ".join(lines), flush=True)


def _fit_baseline(model: str, section: dict, data: Data, kind: str, manifest: dict):
    """The baseline ``model`` built from the config's model section and fitted on the training split
    (``musicrec.baselines.fit_baseline``; lightgbm trains, with early stopping on the validation split)."""
    return baselines.fit_baseline(model, section, data, kind, manifest)


# ----------------------------------------------------------------------------------------------------------------
# A model: share the workers' resources, build, train, record
# ----------------------------------------------------------------------------------------------------------------
def run_model(args, manifest, config, data_config, train_config, eval_config, backend) -> int:
    dataset = manifest["dataset"]
    try:
        device = resolve_device(train_config.device)
    except RuntimeError as exc:
        raise ConfigError(str(exc)) from exc
    if device.type == "cuda":
        torch.cuda.set_device(backend.local_rank if device.index is None else device.index)  # distributed: one GPU per worker
    data_config, train_config, distributed = _per_worker(backend, device, data_config, train_config)
    seed_everything(train_config.seed)
    data, kind = _data(args, manifest, data_config, train_config, backend)
    check_selection_metric(train_config, kind)
    size = _eval_size(config, eval_config, kind, device, backend.is_root)
    if backend.size > 1:  # distributed: Petastorm shards by row group
        check_row_groups(data, ["train"] if args.model == "ncf" and dataset == "lastfm" else ["train", "valid", "test"],
                         backend.size)
    model = _build(args.model, manifest, config["model"], data)
    run_dir = (args.run_dir or default_run_dir(dataset, args.model)).resolve()
    checkpointer = Checkpointer(run_dir, enabled=backend.is_root)
    fingerprint = manifest_fingerprint(manifest)
    folder = RunDir(run_dir, enabled=backend.is_root)
    resume_from = _prepare_run_dir(args, folder, checkpointer, model, fingerprint, backend)
    if backend.is_root:
        print(f"run dir: {run_dir}  device: {device}  workers: {backend.size}", flush=True)
        if backend.size > 1:
            print("distributed: " + "  ".join(f"{k}={v}" for k, v in distributed.items()), flush=True)

    run_id = (resume_from or {}).get("mlflow_run_id") or None
    tracker, uri = _tracker(args, dataset, backend.is_root, run_id=run_id)
    tracker.start(config={**config, "distributed": distributed}, manifest=manifest, model_name=args.model,
                  data_dir=str(Path(args.data).resolve()), fingerprint=fingerprint, resumed=resume_from is not None)
    folder.record_run(uri, tracker.run_id)
    on_batch, callbacks = debug_hooks(backend.rank, run_dir)
    status = "FAILED"
    try:
        result = fit(model, train_loader=data.train_loader,
                     eval_loader=functools.partial(data.eval_loader, max_examples=size), kind=kind,
                     config=train_config, backend=backend, device=device, checkpointer=checkpointer,
                     tracker=tracker, model_name=args.model, fingerprint=fingerprint, run_config=config,
                     resume_from=resume_from, on_batch=on_batch, callbacks=callbacks)
        if backend.is_root:
            tracker.log_model(model)
        status = "FINISHED"
        folder.drop_replaced()
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.end(status)
    if backend.is_root:
        _summary(args, result, tracker, uri, run_dir)
    return 0


def _per_worker(backend: Backend, device: torch.device, data_config: DataConfig, train_config: TrainConfig):
    """(data_config, train_config, the ``distributed`` record) for this worker: one worker unchanged; several share
    the host's cores (``share_cores``), split the global batch and scale the learning rate."""
    train_config, threads = share_cores(backend, device, train_config)  # distributed: workers share the host's cores
    distributed = {"backend": backend.name, "workers": backend.size, "global_batch": data_config.batch_size}
    if backend.size > 1:  # distributed: per-worker batch and learning rate
        per_worker = train_config.per_worker_batch(data_config.batch_size, backend.size)
        distributed.update(global_batch=per_worker * backend.size, per_worker_batch=per_worker,
                           lr=train_config.scaled_lr(backend.size), torch_threads=threads)
        data_config = dataclasses.replace(data_config, batch_size=per_worker)
        train_config = dataclasses.replace(train_config, lr=distributed["lr"])
    return data_config, train_config, distributed


def share_cores(backend: Backend, device: torch.device, train_config: TrainConfig) -> tuple[TrainConfig, int | None]:
    """(train_config, torch threads per worker) for N workers on a CPU host: ``train.num_threads`` > 0 is kept (with a
    warning when local workers x threads exceeds the cores: they would oversubscribe them); 0 (PyTorch's default:
    every core, in every worker) becomes cores / local workers, unless OMP_NUM_THREADS is set. One worker or a GPU:
    unchanged."""
    threads = train_config.num_threads
    if backend.size == 1 or device.type != "cpu":
        return train_config, threads or None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = max(1, getattr(backend, "local_size", backend.size))
    if threads == 0:
        if os.environ.get("OMP_NUM_THREADS"):
            return train_config, int(os.environ["OMP_NUM_THREADS"])
        threads = max(1, cores // local)
        train_config = dataclasses.replace(train_config, num_threads=threads)  # fit applies it
    if threads * local > cores and backend.is_root:
        print(f"warning: {local} workers x {threads} torch threads on {cores} cores oversubscribe them; set "
              f"train.num_threads={max(1, cores // local)}", flush=True)
    return train_config, threads


def check_row_groups(data: Data, splits: list[str], workers: int) -> None:
    """Petastorm gives row group i to worker i % N: a split with fewer row groups than workers cannot be sharded."""
    for split in splits:
        path = data.path(split)
        count = sum(fragment.metadata.num_row_groups for fragment in ds.dataset(str(path), format="parquet").get_fragments())
        if count < workers:
            raise DataError(f"{path}: split {split!r} has {count} Parquet row group(s), fewer than the {workers} workers; "
                            "Petastorm shards by row group, so each worker needs at least one: write the split as at "
                            f"least {workers} files / row groups, or run fewer workers")


def _build(name: str, manifest: dict, section: dict, data: Data) -> torch.nn.Module:
    """The model from the config's model section; a popularity sampler gets the training sessions' song counts."""
    try:
        model = build_model(name, manifest, section)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"model section of the {name} config: {exc}") from exc
    if getattr(model.config, "sampler", None) == "popularity" and hasattr(model, "set_sampling_counts"):
        sessions = data.train_sessions()
        counts = np.bincount(np.concatenate(sessions), minlength=data.song_vocab) if sessions else np.zeros(data.song_vocab)
        model.set_sampling_counts(torch.as_tensor(counts))
    return model


def _prepare_run_dir(args, folder: RunDir, checkpointer: Checkpointer, model: torch.nn.Module, fingerprint: str,
                     backend: Backend):
    """Claim the run folder (root) and settle a RUNNING MLflow run a killed training left; then ``--resume``: the
    checked ``last.pt`` to continue from; a fresh run: None, refused where an earlier run's checkpoints are unless
    ``--overwrite`` (they are set aside, never deleted first: ``musicrec.train.rundir``)."""
    folder.claim()
    folder.settle_orphan(resolve_tracking_uri(args.tracking_uri))
    if args.resume:
        if not checkpointer.exists():
            raise CheckpointError(f"--resume: no checkpoint at {checkpointer.last_path}; pass the --run-dir of the run "
                                  "to continue, or drop --resume")
        resume_from = checkpointer.load_last()
        check_compatible(resume_from, model_name=args.model, model_config=dataclasses.asdict(model.config),
                         fingerprint=fingerprint, path=checkpointer.last_path)
        if backend.is_root:
            epoch = json.loads(resume_from["loop_state"]).get("epoch")
            print(f"resuming {checkpointer.last_path} after epoch {epoch}")
        return resume_from
    folder.check_fresh(args.overwrite)
    return None


def _summary(args, result: FitResult, tracker: Tracker, uri: str, run_dir: Path | None) -> None:
    line = f"done: model={args.model} best_epoch={result.best_epoch} {result.metric}={result.best_metric}"
    if tracker.run_id:
        line += f"  mlflow run {tracker.run_id} in {uri}"
    if run_dir is not None:
        line += f"  checkpoints in {run_dir}"
    print(line, flush=True)


__all__ = ["BASELINES", "MODELS", "SUPPORTED", "UsageError", "build_parser", "check_row_groups", "check_supported",
           "default_run_dir", "main", "resolve_config", "run_baseline", "run_model", "share_cores", "train"]
