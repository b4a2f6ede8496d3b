"""The evaluation protocols: a scorer (a model or a baseline) over every worker's batches -> metrics.

A scorer maps a batch to ``{"scores", "probs", "loss"}``: ``ModelScorer`` for a model, ``BaselineScorer`` for a fitted
non-learned baseline (``musicrec.baselines``). ``evaluate`` runs one protocol (``kind``):

- ``binary`` (KKBOX rows, NCF on KKBOX): AUC and log loss over the predictions of ALL workers (``allgather``);
  rows with a null target (the KKBOX test split) are skipped, so a split without labels has no metrics.
- ``next_song`` (Last.fm sessions): rank of the true next song among ALL songs (padding and OOV masked with -inf)
  -> hr/ndcg/mrr@{1,5,10,20}; per-worker sums are all-reduced. A prefix whose next song is OOV (a rare song, index
  1) stays in the denominator and can never be hit, as with any recommender that cannot name unseen songs.
- ``loo`` (NCF on Last.fm): rank of the held-out song among itself and its sampled negatives (the NCF paper's
  leave-one-out protocol, 99 negatives) -> ``loo_hr@10``, ``loo_ndcg@10``.

``evaluate_baseline`` gives a baseline the same evaluation, printed lines and MLflow records as ``fit`` gives a
model (one "epoch", no training); the lines and the final records both print are here.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from musicrec import metrics as M
from musicrec.columns import CANDIDATES, NEXT_SONG, SONG_IDX, TARGET, USER_IDX
from musicrec.distributed import Backend, SingleProcess
from musicrec.tracking import Tracker
from musicrec.train.config import TrainConfig

KINDS = ("binary", "next_song", "loo")
DEFAULT_METRIC = {"binary": "auc", "next_song": "hr@10", "loo": "loo_hr@10"}

Batch = dict[str, torch.Tensor]


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> Batch:
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) for k, v in batch.items()}


def selection_metric(config: TrainConfig, kind: str) -> str:
    """The validation metric that selects the best epoch: ``train.early_stopping_metric``, ``auto`` = the kind's."""
    return DEFAULT_METRIC[kind] if config.early_stopping_metric == "auto" else config.early_stopping_metric


# ----------------------------------------------------------------------------------------------------------------
# Scorers: a model or a baseline -> {"scores", "probs", "loss"} for one batch
# ----------------------------------------------------------------------------------------------------------------
class ModelScorer:
    """Scores a batch with a model for one evaluation protocol (``kind``)."""

    def __init__(self, model: nn.Module, kind: str, autocast: Callable[[], Any] = contextlib.nullcontext):
        assert kind in KINDS, f"kind must be one of {KINDS}"
        self.model, self.kind, self.autocast = model, kind, autocast

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor | None]:
        if self.kind == "loo":
            cand = batch[CANDIDATES]  # (B, C), column 0 = the held-out song
            B, C = cand.shape
            flat = {USER_IDX: batch[USER_IDX].repeat_interleave(C), SONG_IDX: cand.reshape(-1)}
            with self.autocast():
                logits = self.model(flat)  # (B * C,)
            return {"scores": logits.float().view(B, C), "probs": None, "loss": None}
        with self.autocast():
            logits = self.model(batch)
            loss = self.model.loss(batch, logits) if _has_targets(batch, self.kind) else None
        if self.kind == "next_song":
            return {"scores": M.mask_special(logits), "probs": None, "loss": loss}
        return {"scores": logits.float(), "probs": None, "loss": loss}  # binary: logits


def _has_targets(batch: Batch, kind: str) -> bool:
    if kind == "binary":
        return TARGET in batch and not bool(torch.isnan(batch[TARGET]).any())
    return NEXT_SONG in batch


class BaselineScorer:
    """Scores a batch with a non-learned baseline (``musicrec.baselines``) for one evaluation protocol."""

    def __init__(self, baseline, kind: str):
        assert kind in KINDS, f"kind must be one of {KINDS}"
        self.baseline, self.kind = baseline, kind

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor | None]:
        if self.kind == "binary":
            songs = batch[SONG_IDX].cpu()
            scores = torch.as_tensor(self.baseline.score_rows(songs), dtype=torch.float64)  # (B,), a ranking score
            probs = torch.as_tensor(self.baseline.smoothed_target_mean()[songs.numpy()], dtype=torch.float64)
            return {"scores": scores, "probs": probs, "loss": None}
        if self.kind == "loo":
            cand = batch[CANDIDATES].cpu()  # (B, C)
            scores = self.baseline.score({USER_IDX: batch[USER_IDX].cpu()})  # (B, V)
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
    """Metrics of ``scorer`` over every worker's ``batches`` (see the module docstring for each ``kind``), with
    ``loss`` (the mean over all workers' rows) when the scorer gives one."""
    backend = backend or SingleProcess()
    device = torch.device(device)
    model = getattr(scorer, "model", None)
    was_training = bool(model is not None and model.training)
    if model is not None:
        model.eval()
    try:
        losses = _LossSum()
        if kind == "binary":
            result = _binary(scorer, batches, backend, device, losses)
            if not result:
                return {}  # no labels (KKBOX test): nothing to measure
        elif kind in ("next_song", "loo"):
            result = _ranking(scorer, batches, kind, backend, device, tuple(ks) if kind == "next_song" else (loo_k,),
                              losses)
        else:
            raise ValueError(f"unknown evaluation kind {kind!r}")
        loss = losses.mean(backend)  # distributed: one all-reduce
        if loss is not None:
            result["loss"] = loss
        return result
    finally:
        if was_training:
            model.train()


class _LossSum:
    """Sum over rows of the scorer's mean batch losses, and the rows it covers."""

    def __init__(self):
        self.total = torch.zeros((), dtype=torch.float64)
        self.rows = 0.0

    def add(self, out: Mapping[str, Any], batch: Batch) -> None:
        if out["loss"] is not None:
            n = M.batch_rows(batch)
            self.total += out["loss"].detach().double().cpu() * n
            self.rows += n

    def mean(self, backend: Backend) -> float | None:
        totals = backend.allreduce_sum({"loss_sum": self.total, "count": torch.tensor(self.rows, dtype=torch.float64)})
        return float(totals["loss_sum"]) / float(totals["count"]) if float(totals["count"]) > 0 else None


def _binary(scorer, batches, backend: Backend, device: torch.device, losses: _LossSum) -> dict[str, float]:
    """AUC and log loss over every worker's labelled rows; {} when no row has a label."""
    ys, ss, ps = [], [], []
    for batch in batches:
        batch = to_device(batch, device)
        out = scorer(batch)
        ys.append(batch[TARGET].detach().float().cpu())
        ss.append(out["scores"].detach().double().cpu())
        if out["probs"] is not None:
            ps.append(out["probs"].detach().double().cpu())
        losses.add(out, batch)
    y = backend.allgather(torch.cat(ys) if ys else torch.zeros(0))  # distributed: AUC needs every worker's rows
    s = backend.allgather(torch.cat(ss) if ss else torch.zeros(0, dtype=torch.float64))
    p = backend.allgather(torch.cat(ps)) if ps else None
    labelled = ~torch.isnan(y)
    if not bool(labelled.any()):
        return {}
    result = M.binary_metrics(y[labelled], s[labelled], from_logits=True)
    if p is not None:
        result["logloss"] = M.binary_metrics(y[labelled], p[labelled], from_logits=False)["logloss"]
    return {k: result[k] for k in ("auc", "logloss", "count")}


def _ranking(scorer, batches, kind: str, backend: Backend, device: torch.device, ks: tuple[int, ...],
             losses: _LossSum) -> dict[str, float]:
    """hr/ndcg/mrr@k means over every worker's rows (``loo``: ``loo_hr@k`` and ``loo_ndcg@k``), and ``count``."""
    sums: dict[str, float] = {}
    for batch in batches:
        batch = to_device(batch, device)
        out = scorer(batch)
        scores = out["scores"]
        if kind == "next_song":
            targets = batch[NEXT_SONG].to(scores.device)
        else:  # loo: the held-out song is candidate 0
            targets = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
        for key, value in M.ranking_sums(M.target_ranks(scores, targets), ks).items():
            sums[key] = sums.get(key, 0.0) + value
        losses.add(out, batch)
    if not sums:
        sums = {**{f"{m}@{k}": 0.0 for k in ks for m in ("hr", "ndcg", "mrr")}, "count": 0.0}
    sums = backend.allreduce_sum({k: torch.tensor(v, dtype=torch.float64) for k, v in sums.items()})  # distributed
    result = M.means_from_sums({k: float(v) for k, v in sums.items()})
    if kind == "loo":
        (k,) = ks
        return {f"loo_hr@{k}": result[f"hr@{k}"], f"loo_ndcg@{k}": result[f"ndcg@{k}"], "count": result["count"]}
    return result


def evaluate_split(scorer, eval_loader: Callable[[str], Iterable[Batch]], split: str, kind: str, config: TrainConfig,
                   backend: Backend, device: torch.device | str = "cpu") -> dict[str, float]:
    """``evaluate`` on ``eval_loader(split)`` with the config's cut-offs, without the row count."""
    metrics = evaluate(scorer, eval_loader(split), kind, backend, device, config.ks, config.loo_k)
    metrics.pop("count", None)
    return metrics


# ----------------------------------------------------------------------------------------------------------------
# A baseline's run, and what every run prints and records at its end
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_epoch: int
    best_metric: float | None
    metric: str
    best_valid: dict[str, float]
    test: dict[str, float]
    stopped_early: bool


def evaluate_baseline(
    baseline,
    *,
    eval_loader: Callable[[str], Iterable[Batch]],
    kind: str,
    config: TrainConfig,
    backend: Backend | None = None,
    tracker: Tracker | None = None,
    test_split: str | None = "test",
) -> FitResult:
    """The same evaluation and logging as ``fit`` for a fitted, non-learned baseline (one "epoch", no training)."""
    backend = backend or SingleProcess()
    tracker = tracker or Tracker()
    metric = selection_metric(config, kind)
    scorer = BaselineScorer(baseline, kind)
    started = time.perf_counter()
    valid = evaluate(scorer, eval_loader("valid"), kind, backend, "cpu", config.ks, config.loo_k)
    record = {"epoch": 1, "eval_time_s": time.perf_counter() - started}
    record.update({f"valid_{k}": v for k, v in valid.items() if k != "count"})
    test = evaluate_split(scorer, eval_loader, test_split, kind, config, backend) if test_split else {}
    if backend.is_root:
        tracker.log_epoch(1, record)
        print(format_epoch_line(record, metric), flush=True)
        tracker.log_final(final_metrics(record, test, best_epoch=1))
        if test:
            print(format_test_line(test), flush=True)
    return FitResult(history=[record], best_epoch=1, best_metric=valid.get(metric), metric=metric, best_valid=record,
                     test=test, stopped_early=False)


def final_metrics(best_valid: Mapping[str, float], test: Mapping[str, float], best_epoch: int) -> dict[str, float]:
    """A run's final MLflow metrics: ``best_valid_*`` (the best epoch's validation metrics), ``test_*``, ``best_epoch``."""
    final = {f"best_{k}": v for k, v in best_valid.items() if k.startswith("valid_")}
    final.update({f"test_{k}": v for k, v in test.items()})
    final["best_epoch"] = best_epoch
    return final


def format_test_line(test: Mapping[str, float]) -> str:
    shown = [k for k in sorted(test) if k in ("auc", "logloss", "loss") or k.endswith("@10")]
    return "test: " + "  ".join(f"{k}={test[k]:.4f}" for k in shown)


def format_epoch_line(record: Mapping[str, float], metric: str) -> str:
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
    "DEFAULT_METRIC",
    "FitResult",
    "KINDS",
    "ModelScorer",
    "evaluate",
    "evaluate_baseline",
    "evaluate_split",
    "final_metrics",
    "format_epoch_line",
    "format_test_line",
    "selection_metric",
    "to_device",
]
