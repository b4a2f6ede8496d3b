"""The training loop and the evaluation protocols; knows nothing of Petastorm, Horovod or MLflow.

``fit`` takes a model (``forward(batch) -> logits``, ``loss(batch, logits) -> scalar``), two loader factories
(``train_loader(epoch)`` and ``eval_loader(split)``, each an iterable of ``dict[str, Tensor]``), a ``TrainConfig``, a
``musicrec.distributed.Backend`` and optionally a ``Checkpointer`` and a tracker (``musicrec.tracking.Tracker``).

Evaluation protocols (``kind``):

- ``binary`` (KKBOX rows, NCF on KKBOX): AUC and log loss over the predictions of ALL workers (``allgather``);
  rows with a null target (the KKBOX test split) are skipped, so a split without labels has no metrics.
- ``next_song`` (Last.fm sessions): rank of the true next song among ALL songs (padding and OOV masked with -inf)
  -> hr/ndcg/mrr@{1,5,10,20}; per-worker sums are all-reduced. A prefix whose next song is OOV (a rare song, index
  1) stays in the denominator and can never be hit, as with any recommender that cannot name unseen songs.
- ``loo`` (NCF on Last.fm): rank of the held-out song among itself and its sampled negatives (the NCF paper's
  leave-one-out protocol, 99 negatives) -> ``loo_hr@10``, ``loo_ndcg@10``.

Reproducibility: the caller seeds the model's initialization; at the start of every epoch the loop reseeds torch
from (seed, epoch), and the data side derives its shuffles from (seed, epoch, shard), so an epoch is a function of
the weights it starts from. Checkpoints also hold the loop's RNG states, restored on resume, so a resumed run
reaches the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from musicrec import metrics as M
from musicrec.checkpoint import Checkpointer, check_compatible, make_checkpoint, restore_rng_state
from musicrec.distributed import Backend, SingleProcess

KINDS = ("binary", "next_song", "loo")
DEFAULT_METRIC = {"binary": "auc", "next_song": "hr@10", "loo": "loo_hr@10"}
LOWER_IS_BETTER = ("logloss", "loss")
PAD_INDEX, OOV_INDEX = 0, 1

Batch = dict[str, torch.Tensor]


@dataclass
class TrainConfig:
    """The ``train:`` section of a run config (see conf/*.yaml for one comment per key)."""

    epochs: int = 10
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    clip_grad_norm: float | None = None
    early_stopping_metric: str = "auto"
    early_stopping_mode: str = "auto"
    patience: int = 3
    seed: int = 42
    device: str = "auto"
    amp: bool = False
    progress: bool = True
    ks: tuple[int, ...] = (1, 5, 10, 20)
    loo_k: int = 10
    global_batch: bool = True  # distributed: data.batch_size is the global batch, split over the workers
    lr_scaling: str = "auto"  # distributed: lr x f(workers); see LR_SCALINGS and ``scaled_lr``
    num_threads: int = 1  # CPU: torch intra-op threads per worker; 0 = PyTorch's default (benchmarks/RESULTS_distributed.md, table 2)

    @classmethod
    def from_dict(cls, section: Mapping[str, Any] | None) -> "TrainConfig":
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in the train config (known: {sorted(known)})")
        if "ks" in section:
            section["ks"] = tuple(int(k) for k in section["ks"])
        cfg = cls(**section)
        assert cfg.epochs >= 0, f"epochs must be >= 0, got {cfg.epochs}"
        assert cfg.optimizer in OPTIMIZERS, f"optimizer must be one of {sorted(OPTIMIZERS)}, got {cfg.optimizer!r}"
        assert cfg.early_stopping_mode in ("auto", "max", "min"), "early_stopping_mode must be auto, max or min"
        assert cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:"), f"device {cfg.device!r}?"
        assert cfg.lr_scaling in LR_SCALINGS, f"lr_scaling must be one of {LR_SCALINGS}, got {cfg.lr_scaling!r}"
        assert cfg.num_threads >= 0, f"num_threads must be >= 0 (0 = PyTorch's default), got {cfg.num_threads}"
        return cfg

    def per_worker_batch(self, batch_size: int, workers: int) -> int:
        """The training batch each of ``workers`` workers takes: ``batch_size`` / workers when ``global_batch`` (the
        same global batch, hence the same gradient step, for any number of workers), else ``batch_size``."""
        if not self.global_batch or workers == 1:
            return batch_size
        if batch_size < workers:
            raise ValueError(f"data.batch_size={batch_size} is the global batch (train.global_batch: true) and cannot "
                             f"be split over {workers} workers")
        return batch_size // workers

    def scaled_lr(self, workers: int) -> float:
        """The learning rate for ``workers`` workers: ``lr`` x workers (``linear``, Goyal et al. 2017), x sqrt(workers)
        (``sqrt``) or x 1 (``none``); ``auto`` = ``linear`` when the global batch grows with the workers
        (``global_batch: false``, Horovod's recipe) and ``none`` when it does not."""
        mode = self.lr_scaling
        if mode == "auto":
            mode = "none" if self.global_batch else "linear"
        return self.lr * {"none": 1.0, "linear": float(workers), "sqrt": math.sqrt(workers)}[mode]


OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
LR_SCALINGS = ("auto", "none", "linear", "sqrt")


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return OPTIMIZERS[config.optimizer](params, lr=config.lr, weight_decay=config.weight_decay)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA device is available")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, 0x7EA1]).generate_state(1)[0])


def metric_mode(metric: str, mode: str = "auto") -> str:
    if mode != "auto":
        return mode
    return "min" if metric.split("_")[-1] in LOWER_IS_BETTER else "max"


# ----------------------------------------------------------------------------------------------------------------
# Scorers: a model or a baseline -> {"scores", "probs", "loss"} for one batch
# ----------------------------------------------------------------------------------------------------------------
def batch_size_of(batch: Mapping[str, torch.Tensor]) -> int:
    return int(len(next(iter(batch.values()))))


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> Batch:
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) for k, v in batch.items()}


def mask_special(scores: torch.Tensor) -> torch.Tensor:
    """(B, V) scores with padding (0) and OOV (1) set to -inf: neither can be recommended."""
    scores = scores.float().clone()
    scores[:, PAD_INDEX] = float("-inf")
    scores[:, OOV_INDEX] = float("-inf")
    return scores


class ModelScorer:
    """Scores a batch with a model for one evaluation protocol (``kind``)."""

    def __init__(self, model: nn.Module, kind: str, autocast: Callable[[], Any] = contextlib.nullcontext):
        assert kind in KINDS, f"kind must be one of {KINDS}"
        self.model, self.kind, self.autocast = model, kind, autocast

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor | None]:
        if self.kind == "loo":
            cand = batch["candidates"]  # (B, C), column 0 = the held-out song
            B, C = cand.shape
            flat = {"user_idx": batch["user_idx"].repeat_interleave(C), "song_idx": cand.reshape(-1)}
            with self.autocast():
                logits = self.model(flat)  # (B * C,)
            return {"scores": logits.float().view(B, C), "probs": None, "loss": None}
        with self.autocast():
            logits = self.model(batch)
            loss = self.model.loss(batch, logits) if _has_targets(batch, self.kind) else None
        if self.kind == "next_song":
            return {"scores": mask_special(logits), "probs": None, "loss": loss}
        return {"scores": logits.float(), "probs": None, "loss": loss}  # binary: logits


def _has_targets(batch: Batch, kind: str) -> bool:
    if kind == "binary":
        return "target" in batch and not bool(torch.isnan(batch["target"]).any())
    return "next_song" in batch


class BaselineScorer:
    """Scores a batch with a non-learned baseline (``musicrec.baselines``) for one evaluation protocol."""

    def __init__(self, baseline, kind: str):
        assert kind in KINDS, f"kind must be one of {KINDS}"
        self.baseline, self.kind = baseline, kind

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor | None]:
        if self.kind == "binary":
            songs = batch["song_idx"].cpu()
            scores = torch.as_tensor(self.baseline.score_rows(songs), dtype=torch.float64)  # (B,), a ranking score
            probs = torch.as_tensor(self.baseline.smoothed_target_mean()[songs.numpy()], dtype=torch.float64)
            return {"scores": scores, "probs": probs, "loss": None}
        if self.kind == "loo":
            cand = batch["candidates"].cpu()  # (B, C)
            scores = self.baseline.score({"user_idx": batch["user_idx"].cpu()})  # (B, V)
            return {"scores": scores.gather(1, cand).float(), "probs": None, "loss": None}
        cpu_batch = {k: v.cpu() for k, v in batch.items()}
        return {"scores": self.baseline.score(cpu_batch).float(), "probs": None, "loss": None}


# ----------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(
    scorer: Callable[[Batch], Mapping[str, Any]],
    batches: Iterable[Batch],
    kind: str,
    backend: Backend | None = None,
    device: torch.device | str = "cpu",
    ks: tuple[int, ...] = M.DEFAULT_KS,
    loo_k: int = 10,
) -> dict[str, float]:
    """Metrics of ``scorer`` over every worker's ``batches`` (see the module docstring for each ``kind``)."""
    backend = backend or SingleProcess()
    device = torch.device(device)
    model = getattr(scorer, "model", None)
    was_training = bool(model is not None and model.training)
    if model is not None:
        model.eval()
    try:
        loss_sum = torch.zeros((), dtype=torch.float64)
        loss_count = 0.0
        if kind == "binary":
            ys, ss, ps = [], [], []
            for batch in batches:
                batch = to_device(batch, device)
                out = scorer(batch)
                ys.append(batch["target"].detach().float().cpu())
                ss.append(out["scores"].detach().double().cpu())
                if out["probs"] is not None:
                    ps.append(out["probs"].detach().double().cpu())
                if out["loss"] is not None:
                    n = batch_size_of(batch)
                    loss_sum += out["loss"].detach().double().cpu() * n
                    loss_count += n
            y = backend.allgather(torch.cat(ys) if ys else torch.zeros(0))
            s = backend.allgather(torch.cat(ss) if ss else torch.zeros(0, dtype=torch.float64))
            p = backend.allgather(torch.cat(ps)) if ps else None
            labelled = ~torch.isnan(y)
            if not bool(labelled.any()):
                return {}  # no labels (KKBOX test): nothing to measure
            result = M.binary_metrics(y[labelled], s[labelled], from_logits=True)
            if p is not None:
                result["logloss"] = M.binary_metrics(y[labelled], p[labelled], from_logits=False)["logloss"]
            result = {k: result[k] for k in ("auc", "logloss", "count")}
        elif kind in ("next_song", "loo"):
            sums: dict[str, float] = {}
            use_ks = tuple(ks) if kind == "next_song" else (loo_k,)
            for batch in batches:
                batch = to_device(batch, device)
                out = scorer(batch)
                scores = out["scores"]
                if kind == "next_song":
                    targets = batch["next_song"].to(scores.device)
                else:
                    targets = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
                part = M.ranking_sums(M.target_ranks(scores, targets), use_ks)
                for key, value in part.items():
                    sums[key] = sums.get(key, 0.0) + value
                if out["loss"] is not None:
                    n = batch_size_of(batch)
                    loss_sum += out["loss"].detach().double().cpu() * n
                    loss_count += n
            if not sums:
                sums = {**{f"{m}@{k}": 0.0 for k in use_ks for m in ("hr", "ndcg", "mrr")}, "count": 0.0}
            sums = backend.allreduce_sum({k: torch.tensor(v, dtype=torch.float64) for k, v in sums.items()})
            result = M.means_from_sums({k: float(v) for k, v in sums.items()})
            if kind == "loo":
                result = {f"loo_hr@{loo_k}": result[f"hr@{loo_k}"], f"loo_ndcg@{loo_k}": result[f"ndcg@{loo_k}"],
                          "count": result["count"]}
        else:
            raise ValueError(f"unknown evaluation kind {kind!r}")
        totals = backend.allreduce_sum({"loss_sum": loss_sum, "count": torch.tensor(loss_count, dtype=torch.float64)})
        if float(totals["count"]) > 0:
            result["loss"] = float(totals["loss_sum"]) / float(totals["count"])
        return result
    finally:
        if was_training:
            model.train()


# ----------------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class LoopState:
    """What the loop needs to continue (stored in ``last.pt`` as JSON)."""

    epoch: int = 0  # epochs completed
    best_metric: float | None = None
    best_epoch: int = 0  # 1-based; 0 = none yet
    bad_epochs: int = 0
    stopped_early: bool = False
    global_step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_epoch: int
    best_metric: float | None
    metric: str
    best_valid: dict[str, float]
    test: dict[str, float]
    stopped_early: bool


class _NullTracker:
    run_id = None

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _in_lockstep(batches: Iterable[Batch], backend: Backend) -> Iterator[Batch]:
    """Yield batches while EVERY worker still has one (shards may differ by a few batches; a collective with a
    missing partner would hang). Single process: the batches as they are. ``fit`` no longer uses it: it dropped the
    last batches of the longer shards; ``_steps_in_sync`` trains on every row."""
    if backend.size == 1:
        yield from batches
        return
    it = iter(batches)
    while True:
        batch = next(it, None)
        have = backend.allreduce_sum(torch.tensor([0.0 if batch is None else 1.0]))  # one per worker with data
        if float(have.sum()) < backend.size:
            return
        yield batch


def _steps_in_sync(batches: Iterable[Batch], backend: Backend) -> Iterator[tuple[Batch | None, int]]:
    """(this worker's batch, examples in the step over all workers) for every training step of an epoch.

    Single process: every batch. Several workers: one small all-reduce per step counts the step's examples, and steps
    go on while ANY worker still has a batch (Petastorm shards differ by up to a row group), so every row of every
    shard is trained on once per epoch and no collective misses a partner; a worker whose shard is used up gets
    ``None`` and joins the step's gradient average with zero gradients.
    """
    if backend.size == 1:
        for batch in batches:
            yield batch, batch_size_of(batch)
        return
    it = iter(batches)
    while True:
        batch = next(it, None)
        n = 0 if batch is None else batch_size_of(batch)
        n_step = int(round(float(backend.allreduce_sum(torch.tensor([float(n)], dtype=torch.float64)).sum())))
        if n_step == 0:
            return
        yield batch, n_step


def _is_better(value: float, best: float | None, mode: str) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def fit(
    model: nn.Module,
    *,
    train_loader: Callable[[int], Iterable[Batch]],
    eval_loader: Callable[[str], Iterable[Batch]],
    kind: str,
    config: TrainConfig,
    backend: Backend | None = None,
    device: torch.device | str | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    checkpointer: Checkpointer | None = None,
    tracker=None,
    model_name: str = "model",
    fingerprint: str = "",
    run_config: Mapping[str, Any] | None = None,
    resume_from: Mapping[str, Any] | None = None,
    callbacks: Iterable[Callable[[int, LoopState], None]] = (),
    test_split: str | None = "test",
    on_batch: Callable[[int, int, Batch], None] | None = None,
) -> FitResult:
    """Train ``model`` for ``config.epochs`` epochs with early stopping, then evaluate the best weights on
    ``test_split``. ``resume_from`` is a loaded ``last.pt`` to continue from (checked against the model config and
    ``fingerprint``). ``callbacks(epoch, state)`` run after each epoch's checkpoint; ``on_batch(epoch, step, batch)``
    sees every training batch this worker takes, before it goes to the device (debug output, fault injection).

    Several workers: ``config.lr`` and the loaders' batch size are used as given (the caller scales them, see
    ``TrainConfig.scaled_lr`` / ``per_worker_batch``); each worker's mean loss is weighted by its share of the step's
    examples, so the backend's gradient average is the gradient of the mean over the whole step, even when the
    workers' batches differ in size (the last batch, or a shard that ran out)."""
    assert kind in KINDS, f"kind must be one of {KINDS}, got {kind!r}"
    backend = backend or SingleProcess()
    tracker = tracker or _NullTracker()
    device = torch.device(device) if device is not None else resolve_device(config.device)
    if device.type == "cpu" and config.num_threads > 0:
        torch.set_num_threads(config.num_threads)  # small ops: extra threads mostly wait on each other (and on load)
    model.to(device)
    model_config = asdict(model.config) if hasattr(model, "config") and hasattr(model.config, "__dataclass_fields__") else {}
    metric = DEFAULT_METRIC[kind] if config.early_stopping_metric == "auto" else config.early_stopping_metric
    mode = metric_mode(metric, config.early_stopping_mode)
    clip = config.clip_grad_norm if config.clip_grad_norm is not None else getattr(getattr(model, "config", None), "clip_grad_norm", None)

    optimizer = optimizer or make_optimizer(model, config)
    use_scaler = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler) if use_scaler else None
    amp_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if config.amp else None

    def autocast():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=amp_dtype)

    state = LoopState()
    best_state: dict[str, torch.Tensor] | None = None
    if resume_from is not None:
        check_compatible(resume_from, model_name=model_name, model_config=model_config, fingerprint=fingerprint)
        model.load_state_dict(resume_from["model_state"])
        optimizer.load_state_dict(resume_from["optimizer_state"])
        if scaler is not None and resume_from.get("scaler_state"):
            scaler.load_state_dict(resume_from["scaler_state"])
        state = LoopState(**json.loads(resume_from["loop_state"]))
        restore_rng_state(resume_from["rng_state"])
        if checkpointer is not None and checkpointer.best_path.is_file():
            best_state = checkpointer.load_best()["model_state"]
    backend.broadcast_parameters(model, optimizer)  # distributed: every worker starts from the root's state
    optimizer = backend.wrap_optimizer(optimizer, model)  # distributed: gradients averaged over workers

    scorer = ModelScorer(model, kind, autocast)
    show_progress = config.progress and backend.is_root

    for epoch in range(state.epoch, config.epochs):
        if state.stopped_early:
            break
        torch.manual_seed(epoch_seed(config.seed, epoch) + backend.rank)  # dropout / sampled softmax (distributed: per worker)
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        count = 0
        started = time.perf_counter()
        bar = _progress(show_progress, f"epoch {epoch + 1}/{config.epochs}")
        for step, (batch, n_step) in enumerate(_steps_in_sync(train_loader(epoch), backend)):
            optimizer.zero_grad()  # set_to_none (torch >= 2.0 default); Horovod's DistributedOptimizer takes no argument
            if batch is None:  # distributed: this shard is used up; join the others' gradient average with zeros
                backend.optimizer_step(optimizer, scaler, model.parameters(), clip)
                state.global_step += 1
                continue
            if on_batch is not None:
                on_batch(epoch, step, batch)
            batch = to_device(batch, device)
            n = batch_size_of(batch)
            with autocast():
                logits = model(batch)
                loss = model.loss(batch, logits)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch + 1} step {step}: loss is {float(loss)}; lower train.lr?")
            # distributed: weight by this worker's share of the step, so the gradient average = mean over the step
            objective = loss if backend.size == 1 else loss * (n * backend.size / n_step)
            if scaler is not None:
                scaler.scale(objective).backward()
            else:
                objective.backward()
            backend.optimizer_step(optimizer, scaler, model.parameters(), clip)
            loss_sum += loss.detach().double() * n
            count += n
            state.global_step += 1
            if bar is not None:
                bar.update(n)
                if step % 20 == 0:
                    elapsed = max(time.perf_counter() - started, 1e-9)
                    bar.set_postfix(loss=f"{float(loss_sum) / max(count, 1):.4f}", samples_s=f"{count / elapsed:,.0f}")
        if bar is not None:
            bar.close()
        elapsed = max(time.perf_counter() - started, 1e-9)
        totals = backend.allreduce_sum({"loss_sum": loss_sum.cpu(), "count": torch.tensor(float(count), dtype=torch.float64)})
        n_total = float(totals["count"])
        record = {"epoch": epoch + 1, "train_loss": float(totals["loss_sum"]) / n_total if n_total else math.nan,
                  "samples_per_s": n_total / elapsed, "epoch_time_s": elapsed}

        valid = evaluate(scorer, eval_loader("valid"), kind, backend, device, config.ks, config.loo_k)
        record.update({f"valid_{k}": v for k, v in valid.items() if k != "count"})
        value = valid.get(metric)
        if value is None:
            raise KeyError(f"early-stopping metric {metric!r} is not among the validation metrics {sorted(valid)}")
        if _is_better(value, state.best_metric, mode):
            state.best_metric, state.best_epoch, state.bad_epochs = float(value), epoch + 1, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if checkpointer is not None:
                checkpointer.save_best(best_state, epoch + 1, value, model_name, model_config, fingerprint)
        else:
            state.bad_epochs += 1
        state.epoch = epoch + 1
        state.history.append(record)
        if config.patience and state.bad_epochs >= config.patience:
            state.stopped_early = True
        if backend.is_root:
            tracker.log_epoch(epoch + 1, record)
            print(_epoch_line(record, metric), flush=True)
        if checkpointer is not None:
            checkpointer.save_last(make_checkpoint(
                model=model, optimizer=optimizer, scaler=scaler, model_name=model_name, model_config=model_config,
                fingerprint=fingerprint, loop_state=asdict(state), run_config=run_config,
                mlflow_run_id=getattr(tracker, "run_id", None)))
        backend.barrier()
        for callback in callbacks:
            callback(epoch + 1, state)

    if best_state is not None:
        model.load_state_dict(best_state)
    best_valid = next((dict(r) for r in state.history if r["epoch"] == state.best_epoch), {})
    test = {}
    if test_split:
        test = evaluate(scorer, eval_loader(test_split), kind, backend, device, config.ks, config.loo_k)
        test.pop("count", None)
    if backend.is_root:
        final = {f"best_{k}": v for k, v in best_valid.items() if k.startswith("valid_")}
        final.update({f"test_{k}": v for k, v in test.items()})
        final["best_epoch"] = state.best_epoch
        tracker.log_final(final)
        tracker.log_curves(state.history)
        if test:
            print(_test_line(test), flush=True)
    return FitResult(history=state.history, best_epoch=state.best_epoch, best_metric=state.best_metric,
                     metric=metric, best_valid=best_valid, test=test, stopped_early=state.stopped_early)


def evaluate_baseline(
    baseline,
    *,
    eval_loader: Callable[[str], Iterable[Batch]],
    kind: str,
    config: TrainConfig,
    backend: Backend | None = None,
    tracker=None,
    test_split: str | None = "test",
) -> FitResult:
    """The same evaluation and logging as ``fit`` for a fitted, non-learned baseline (one "epoch", no training)."""
    backend = backend or SingleProcess()
    tracker = tracker or _NullTracker()
    metric = DEFAULT_METRIC[kind] if config.early_stopping_metric == "auto" else config.early_stopping_metric
    scorer = BaselineScorer(baseline, kind)
    started = time.perf_counter()
    valid = evaluate(scorer, eval_loader("valid"), kind, backend, "cpu", config.ks, config.loo_k)
    record = {"epoch": 1, "eval_time_s": time.perf_counter() - started}
    record.update({f"valid_{k}": v for k, v in valid.items() if k != "count"})
    test = evaluate(scorer, eval_loader(test_split), kind, backend, "cpu", config.ks, config.loo_k) if test_split else {}
    test.pop("count", None)
    if backend.is_root:
        tracker.log_epoch(1, record)
        print(_epoch_line(record, metric), flush=True)
        final = {f"best_{k}": v for k, v in record.items() if k.startswith("valid_")}
        final.update({f"test_{k}": v for k, v in test.items()})
        final["best_epoch"] = 1
        tracker.log_final(final)
        if test:
            print(_test_line(test), flush=True)
    return FitResult(history=[record], best_epoch=1, best_metric=valid.get(metric), metric=metric, best_valid=record,
                     test=test, stopped_early=False)


def _progress(enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # disable=None: no bar when stderr is not a terminal (logs of horovodrun, the pipeline, CI)
    return tqdm(desc=desc, unit="ex", unit_scale=True, leave=False, dynamic_ncols=True, mininterval=0.5, disable=None)


def _test_line(test: Mapping[str, float]) -> str:
    shown = [k for k in sorted(test) if k in ("auc", "logloss", "loss") or k.endswith("@10")]
    return "test: " + "  ".join(f"{k}={test[k]:.4f}" for k in shown)


def _epoch_line(record: Mapping[str, float], metric: str) -> str:
    """One short line per epoch: losses, the selection metric and the @10 metrics, throughput."""
    shown = ["train_loss", "valid_loss", f"valid_{metric}", "valid_auc", "valid_logloss"]
    shown += [k for k in record if k.startswith("valid_") and k.endswith("@10")]
    parts = [f"epoch {record['epoch']}"]
    for key in dict.fromkeys(shown):
        if key in record:
            parts.append(f"{key}={record[key]:.4f}")
    if "samples_per_s" in record:
        parts.append(f"{record['samples_per_s']:,.0f} samples/s")
    return "  ".join(parts)


__all__ = [
    "BaselineScorer",
    "FitResult",
    "KINDS",
    "LoopState",
    "ModelScorer",
    "TrainConfig",
    "evaluate",
    "evaluate_baseline",
    "fit",
    "make_optimizer",
    "mask_special",
    "resolve_device",
    "seed_everything",
]
