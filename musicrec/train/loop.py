"""The training loop: ``train_one_epoch`` (one pass over this worker's batches) and ``fit`` (the driver around it:
resume, per-epoch seeds, validation, early stopping, checkpoints, tracking, the test of the best weights).

Knows nothing of Petastorm, Horovod or MLflow. ``fit`` takes a model (``training_loss(batch) -> scalar``, the only
call a training step makes, so a model can compute its loss without its full output, e.g. the GRU's sampled
softmax; ``forward(batch) -> logits`` and ``loss(batch, logits)`` for evaluation), two loader factories
(``train_loader(epoch)`` and ``eval_loader(split)``, each an iterable of ``dict[str, Tensor]``), a ``TrainConfig``,
a ``musicrec.distributed.Backend`` and optionally a ``Checkpointer`` and a tracker (``musicrec.tracking.Tracker``).
The lines that only matter with several workers are marked ``# distributed:``.

``train.max_steps`` bounds the run's optimizer steps over all epochs: the epoch in which the budget runs out ends
there and is validated, checkpointed and booked like any epoch, then the run ends (the test of the best weights
follows). A resumed run counts the steps of the checkpoint's ``global_step``.

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
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from musicrec.checkpoint import Checkpointer, check_compatible, make_checkpoint, restore_rng_state
from musicrec.distributed import Backend, SingleProcess
from musicrec.metrics import batch_rows
from musicrec.optim import make_optimizer
from musicrec.seeding import derive_seed
from musicrec.tracking import Tracker
from musicrec.train.config import TrainConfig
from musicrec.train.evaluate import (
    KINDS,
    Batch,
    FitResult,
    ModelScorer,
    evaluate,
    evaluate_split,
    final_metrics,
    format_epoch_line,
    format_test_line,
    selection_metric,
    to_device,
)

LOWER_IS_BETTER = ("logloss", "loss")
EPOCH_STREAM = 0x7EA1  # derive_seed(seed, epoch, EPOCH_STREAM): the loop's torch seed of an epoch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA device is available")
    return device


def metric_mode(metric: str, mode: str = "auto") -> str:
    if mode != "auto":
        return mode
    return "min" if metric.split("_")[-1] in LOWER_IS_BETTER else "max"


@dataclass
class StepSetup:
    """How a training step runs: the device, mixed precision (autocast dtype, GradScaler) and gradient clipping."""

    device: torch.device
    amp_dtype: torch.dtype | None = None  # None: full precision
    scaler: "torch.amp.GradScaler | None" = None  # fp16 on CUDA only
    clip: float | None = None

    @classmethod
    def for_device(cls, device: torch.device, amp: bool, clip: float | None) -> "StepSetup":
        """AMP: fp16 + GradScaler on CUDA, bf16 autocast on CPU."""
        use_scaler = amp and device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_scaler) if use_scaler else None
        amp_dtype = (torch.float16 if device.type == "cuda" else torch.bfloat16) if amp else None
        return cls(device, amp_dtype, scaler, clip)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


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


# ----------------------------------------------------------------------------------------------------------------
# One epoch
# ----------------------------------------------------------------------------------------------------------------
def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Batch],
    setup: StepSetup,
    backend: Backend | None = None,
    *,
    epoch: int = 0,
    on_batch: Callable[[int, int, Batch], None] | None = None,
    progress: str | None = None,
    max_steps: int | None = None,
) -> tuple[dict[str, float], int]:
    """One pass over this worker's ``batches`` -> ({"train_loss", "samples_per_s", "epoch_time_s"} over all workers,
    the optimizer steps taken), or its first ``max_steps`` steps. ``on_batch(epoch, step, batch)`` sees every batch
    before it goes to the device; ``progress`` is the description of a tqdm bar (None: no bar). A step's loss is
    ``model.training_loss(batch)``.

    Several workers step together while ANY of them has a batch (``_steps_in_sync``); each worker's mean loss is
    weighted by its share of the step's examples, so the backend's gradient average is the gradient of the mean over
    the whole step, even when the workers' batches differ in size (the last batch, or a shard that ran out)."""
    backend = backend or SingleProcess()
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=setup.device)
    count = steps = 0
    started = time.perf_counter()
    bar = _progress(progress)
    for step, (batch, n_step) in enumerate(_steps_in_sync(batches, backend)):
        optimizer.zero_grad()  # set_to_none (torch >= 2.0 default); Horovod's DistributedOptimizer takes no argument
        steps += 1
        if batch is None:  # distributed: this shard is used up; join the others' gradient average with zeros
            backend.optimizer_step(optimizer, setup.scaler, model.parameters(), setup.clip)
            if steps == max_steps:
                break
            continue
        if on_batch is not None:
            on_batch(epoch, step, batch)
        batch = to_device(batch, setup.device)
        n = batch_rows(batch)
        with setup.autocast():
            loss = model.training_loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"epoch {epoch + 1} step {step}: loss is {float(loss)}; lower train.lr?")
        # distributed: weight by this worker's share of the step, so the gradient average = mean over the step
        objective = loss if backend.size == 1 else loss * (n * backend.size / n_step)
        if setup.scaler is not None:
            setup.scaler.scale(objective).backward()
        else:
            objective.backward()
        backend.optimizer_step(optimizer, setup.scaler, model.parameters(), setup.clip)  # distributed: averaged
        loss_sum += loss.detach().double() * n
        count += n
        if bar is not None:
            bar.update(n)
            if step % 20 == 0:
                elapsed = max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(loss=f"{float(loss_sum) / max(count, 1):.4f}", samples_s=f"{count / elapsed:,.0f}")
        if steps == max_steps:  # distributed: every worker counts the same steps, so all stop here together
            break
    if bar is not None:
        bar.close()
    elapsed = max(time.perf_counter() - started, 1e-9)
    # distributed: the epoch's loss and examples over all workers
    totals = backend.allreduce_sum({"loss_sum": loss_sum.cpu(), "count": torch.tensor(float(count), dtype=torch.float64)})
    n_total = float(totals["count"])
    return {"train_loss": float(totals["loss_sum"]) / n_total if n_total else math.nan,
            "samples_per_s": n_total / elapsed, "epoch_time_s": elapsed}, steps


def _steps_in_sync(batches: Iterable[Batch], backend: Backend) -> Iterator[tuple[Batch | None, int]]:
    """(this worker's batch, examples in the step over all workers) for every training step of an epoch.

    Single process: every batch. Several workers: one small all-reduce per step counts the step's examples, and steps
    go on while ANY worker still has a batch (Petastorm shards differ by up to a row group), so every row of every
    shard is trained on once per epoch and no collective misses a partner; a worker whose shard is used up gets
    ``None`` and joins the step's gradient average with zero gradients.
    """
    if backend.size == 1:
        for batch in batches:
            yield batch, batch_rows(batch)
        return
    it = iter(batches)
    while True:
        batch = next(it, None)
        n = 0 if batch is None else batch_rows(batch)
        n_step = int(round(float(backend.allreduce_sum(torch.tensor([float(n)], dtype=torch.float64)).sum())))
        if n_step == 0:
            return
        yield batch, n_step


def _progress(desc: str | None):
    if desc is None:
        return None
    from tqdm.auto import tqdm  # only for an interactive run

    # disable=None: no bar when stderr is not a terminal (logs of horovodrun, the pipeline, CI)
    return tqdm(desc=desc, unit="ex", unit_scale=True, leave=False, dynamic_ncols=True, mininterval=0.5, disable=None)


# ----------------------------------------------------------------------------------------------------------------
# The driver
# ----------------------------------------------------------------------------------------------------------------
def set_epoch_lr(optimizer: torch.optim.Optimizer, decay: float, epoch: int) -> None:
    """Exponential decay by epoch: every parameter group trains epoch ``epoch`` (0-based) at its starting lr x
    ``decay ** epoch`` (``torch.optim.lr_scheduler.ExponentialLR``'s rule, computed from the epoch number alone, so a
    resumed run continues the schedule from its checkpoint's ``initial_lr`` without a scheduler state)."""
    if decay == 1.0:
        return
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])  # the key torch's schedulers keep; saved in the optimizer state
        group["lr"] = group["initial_lr"] * decay ** epoch


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
    tracker: Tracker | None = None,
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
    ``fingerprint``). ``callbacks(epoch, state)`` run after each epoch's checkpoint; ``on_batch`` goes to
    ``train_one_epoch`` (debug output, fault injection). Several workers: ``config.lr`` and the loaders' batch size
    are used as given (the caller scales them, see ``TrainConfig.scaled_lr`` / ``per_worker_batch``)."""
    assert kind in KINDS, f"kind must be one of {KINDS}, got {kind!r}"
    backend = backend or SingleProcess()
    tracker = tracker or Tracker()
    device = torch.device(device) if device is not None else resolve_device(config.device)
    if device.type == "cpu" and config.num_threads > 0:
        torch.set_num_threads(config.num_threads)  # small ops: extra threads mostly wait on each other (and on load)
    model.to(device)
    model_config = asdict(model.config) if hasattr(model, "config") and hasattr(model.config, "__dataclass_fields__") else {}
    metric = selection_metric(config, kind)
    mode = metric_mode(metric, config.early_stopping_mode)
    clip = config.clip_grad_norm if config.clip_grad_norm is not None else getattr(getattr(model, "config", None), "clip_grad_norm", None)
    optimizer = optimizer or make_optimizer(model, config)
    setup = StepSetup.for_device(device, config.amp, clip)
    identity = {"model_name": model_name, "model_config": model_config, "fingerprint": fingerprint}

    state, best_state = LoopState(), None
    if resume_from is not None:
        state, best_state = _resume(resume_from, model, optimizer, setup.scaler, checkpointer, identity)
    backend.broadcast_parameters(model, optimizer)  # distributed: every worker starts from the root's state
    optimizer = backend.wrap_optimizer(optimizer, model)  # distributed: gradients averaged over workers
    scorer = ModelScorer(model, kind, setup.autocast)

    for epoch in range(state.epoch, config.epochs):
        steps_left = config.max_steps - state.global_step if config.max_steps else None
        if state.stopped_early or (steps_left is not None and steps_left <= 0):
            break
        # dropout / sampled softmax; distributed: one stream per worker
        torch.manual_seed(derive_seed(config.seed, epoch, EPOCH_STREAM, bits=32) + backend.rank)
        set_epoch_lr(optimizer, config.lr_decay, epoch)
        progress = f"epoch {epoch + 1}/{config.epochs}" if config.progress and backend.is_root else None
        trained, steps = train_one_epoch(model, optimizer, train_loader(epoch), setup, backend, epoch=epoch,
                                         on_batch=on_batch, progress=progress, max_steps=steps_left)
        state.global_step += steps
        if steps == steps_left and backend.is_root:
            print(f"train.max_steps={config.max_steps} reached in epoch {epoch + 1}: this is the run's last epoch",
                  flush=True)
        record = {"epoch": epoch + 1, **trained}
        started = time.perf_counter()
        valid = evaluate(scorer, eval_loader("valid"), kind, backend, device, config.ks, config.loo_k)
        record.update({f"valid_{k}": v for k, v in valid.items() if k != "count"}, valid_time_s=time.perf_counter() - started)
        value = valid.get(metric)
        if value is None:
            raise KeyError(f"early-stopping metric {metric!r} is not among the validation metrics {sorted(valid)}")
        if _book_epoch(state, record, value, mode, config.patience):  # the best epoch so far
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if checkpointer is not None:
                checkpointer.save_best(best_state, epoch + 1, value, model_name, model_config, fingerprint)
        if backend.is_root:  # distributed: only rank 0 logs
            tracker.log_epoch(epoch + 1, record)
            print(format_epoch_line(record, metric), flush=True)
        if checkpointer is not None:  # distributed: a Checkpointer writes on the root only (enabled=is_root)
            checkpointer.save_last(make_checkpoint(
                model=model, optimizer=optimizer, scaler=setup.scaler, **identity, loop_state=asdict(state),
                run_config=run_config, mlflow_run_id=getattr(tracker, "run_id", None)))
        backend.barrier()  # distributed: the checkpoint is written before any worker goes on
        for callback in callbacks:
            callback(epoch + 1, state)

    if best_state is not None:
        model.load_state_dict(best_state)
    best_valid = next((dict(r) for r in state.history if r["epoch"] == state.best_epoch), {})
    started = time.perf_counter()
    test = evaluate_split(scorer, eval_loader, test_split, kind, config, backend, device) if test_split else {}
    if backend.is_root:
        tracker.log_final({**final_metrics(best_valid, test, state.best_epoch),
                           **({"test_time_s": time.perf_counter() - started} if test else {})})
        tracker.log_curves(state.history)
        if test:
            print(format_test_line(test), flush=True)
    return FitResult(history=state.history, best_epoch=state.best_epoch, best_metric=state.best_metric,
                     metric=metric, best_valid=best_valid, test=test, stopped_early=state.stopped_early)


def _resume(ckpt: Mapping[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, scaler,
            checkpointer: Checkpointer | None, identity: Mapping[str, Any]) -> tuple[LoopState, dict | None]:
    """Load ``ckpt`` (a ``last.pt``, checked against the model name, config and fingerprint in ``identity``) into the
    model, the optimizer, the scaler and the RNGs -> (the loop state, the best weights so far or None)."""
    check_compatible(ckpt, **identity)
    model.load_state_dict(ckpt["model_state"])
    optimizer.load_state_dict(ckpt["optimizer_state"])
    if scaler is not None and ckpt.get("scaler_state"):
        scaler.load_state_dict(ckpt["scaler_state"])
    state = LoopState(**json.loads(ckpt["loop_state"]))
    restore_rng_state(ckpt["rng_state"])
    best_state = None
    if checkpointer is not None and checkpointer.best_path.is_file():
        best_state = checkpointer.load_best()["model_state"]
    return state, best_state


def _book_epoch(state: LoopState, record: dict[str, float], value: float, mode: str, patience: int) -> bool:
    """Add an epoch's ``record`` and its selection-metric ``value`` to ``state`` (best epoch, epochs without
    improvement, early stop); True when it is the best epoch so far."""
    better = _is_better(value, state.best_metric, mode)
    if better:
        state.best_metric, state.best_epoch, state.bad_epochs = float(value), record["epoch"], 0
    else:
        state.bad_epochs += 1
    state.epoch = record["epoch"]
    state.history.append(record)
    if patience and state.bad_epochs >= patience:
        state.stopped_early = True
    return better


def _is_better(value: float, best: float | None, mode: str) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


__all__ = [
    "LoopState",
    "StepSetup",
    "fit",
    "make_optimizer",  # from musicrec.optim
    "metric_mode",
    "resolve_device",
    "set_epoch_lr",
    "train_one_epoch",
]
