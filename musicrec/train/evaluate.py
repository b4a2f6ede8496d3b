"""The evaluation protocols: a scorer (a model or a baseline) over every worker's batches -> metrics.

A scorer maps a batch to ``{"scores", "probs", "loss"}`` (or, for ``next_song``, ``{"ranks", "loss"}``):
``ModelScorer`` for a model, ``BaselineScorer`` for a fitted non-learned baseline (``musicrec.baselines``).
``evaluate`` runs one protocol (``kind``):

- ``binary`` (KKBOX rows, NCF on KKBOX): AUC and log loss over the predictions of ALL workers (``allgather``);
  rows with a null target (the KKBOX test split) are skipped, so a split without labels has no metrics.
- ``next_song`` (Last.fm sessions): rank of the true next song among ALL songs (padding and OOV are no candidates)
  -> hr/ndcg/mrr@{1,5,10,20}; per-worker sums are all-reduced. A prefix whose next song is OOV (a rare song, index
  1) stays in the denominator and can never be hit, as with any recommender that cannot name unseen songs. The
  ranks are counted chunk by chunk over the vocabulary (``metrics.chunked_target_ranks``): a model's session
  vectors (``encode``) against ``chunk_size`` output rows at a time (``logits(h, songs)``), so memory is bounded by
  a (batch, chunk) block and never by V; the baselines count ranks from their own structures (``musicrec.baselines``).
- ``loo`` (NCF on Last.fm): rank of the held-out song among itself and its sampled negatives (the NCF paper's
  leave-one-out protocol, 99 negatives) -> ``loo_hr@10``, ``loo_ndcg@10``.

Every result has ``examples``: how many examples were evaluated over all workers (the split, or the fixed sample
of ``eval.max_examples``, ``EvalConfig``), recorded and printed beside the metrics.

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
from musicrec.config import require
from musicrec.distributed import Backend, SingleProcess
from musicrec.tracking import Tracker
from musicrec.train.config import TrainConfig

KINDS = ("binary", "next_song", "loo")
DEFAULT_METRIC = {"binary": "auc", "next_song": "hr@10", "loo": "loo_hr@10"}
# songs scored at once: a (512, 4096) float32 block is 8 MiB. Measured on the 2-core CPU at 478,978 songs (one thread,
# 2,048 prefixes, conf/gru.yaml): 4.4 / 4.6 / 5.6 / 7.9 / 9.1 ms per prefix with chunks of 2k / 4k / 8k / 16k / 32k
# songs, 9.9 ms for the full (B, V) scores
DEFAULT_CHUNK_SIZE = 4096
# eval.max_examples "auto" on a CPU: examples per split for each protocol (0 = all), so that one evaluation at the real
# size takes minutes on the 2-core machine: 20,000 prefixes x 4.5 ms = 90 s per split at 478,978 songs (all ~1.5M
# prefixes of a split: ~2 h); a leave-one-out split is ~900 users x 100 candidates, a KKBOX split (1.5M rows) TBD;
# on a GPU "auto" is every example
AUTO_CPU_MAX_EXAMPLES = {"next_song": 20_000, "loo": 0, "binary": 0}

Batch = dict[str, torch.Tensor]


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> Batch:
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) for k, v in batch.items()}


def selection_metric(config: TrainConfig, kind: str) -> str:
    """The validation metric that selects the best epoch: ``train.early_stopping_metric``, ``auto`` = the kind's."""
    return DEFAULT_METRIC[kind] if config.early_stopping_metric == "auto" else config.early_stopping_metric


def metric_names(config: TrainConfig, kind: str, learned: bool = True) -> list[str]:
    """The validation metrics an evaluation of ``kind`` reports (``loss`` only for a learned model's binary and
    next-song evaluations): what ``train.early_stopping_metric`` may name."""
    if kind == "binary":
        names = ["auc", "logloss"]
    elif kind == "loo":
        names = [f"loo_hr@{config.loo_k}", f"loo_ndcg@{config.loo_k}"]
    else:
        names = [f"{m}@{k}" for k in config.ks for m in ("hr", "ndcg", "mrr")]
    return names + (["loss"] if learned and kind != "loo" else [])


def check_selection_metric(config: TrainConfig, kind: str, learned: bool = True) -> None:
    """A ``ConfigError`` before any training when ``train.early_stopping_metric`` is not a metric of this run."""
    names = metric_names(config, kind, learned)
    require(config.early_stopping_metric == "auto" or config.early_stopping_metric in names,
            "train.early_stopping_metric", config.early_stopping_metric, f"must be auto or one of {', '.join(names)}")


@dataclass(frozen=True)
class EvalConfig:
    """The ``eval:`` section of a run config (conf/*.yaml has one comment per key)."""

    max_examples: int | str = "auto"  # per evaluated split: a fixed sample; 0 = all; auto: AUTO_CPU_MAX_EXAMPLES

    def check(self) -> None:
        """The values ``typed`` cannot check from the types alone; a ``ConfigError`` names the key."""
        value = self.max_examples
        require(value == "auto" or (isinstance(value, int) and value >= 0), "eval.max_examples", value,
                "must be an integer >= 0 (0 = every example) or auto")

    def examples_for(self, kind: str, device: torch.device | str) -> int:
        """The sample size of one evaluated split (0 = every example): ``max_examples``, or for ``auto`` every
        example on a GPU and ``AUTO_CPU_MAX_EXAMPLES[kind]`` on a CPU. The sample itself depends only on the data
        (``musicrec.data.sample``), so every model evaluated with the same size sees the same examples."""
        if self.max_examples != "auto":
            return int(self.max_examples)
        return 0 if torch.device(device).type == "cuda" else AUTO_CPU_MAX_EXAMPLES[kind]


# ----------------------------------------------------------------------------------------------------------------
# Scorers: a model or a baseline -> {"scores", "probs", "loss"} (next_song: {"ranks", "loss"}) for one batch
# ----------------------------------------------------------------------------------------------------------------
class ModelScorer:
    """Scores a batch with a model for one evaluation protocol (``kind``).

    ``next_song``: the model's session vectors ``h = model.encode(batch)`` (B, D) against ``chunk_size`` output rows
    at a time (``model.logits(h, slice)``) -> the target ranks and the full-softmax loss (log-sum-exp over all V
    minus the target's logit), never a (B, V) matrix. A model without ``encode``/``logits`` (a tiny test model) is
    scored from its full logits ``model(batch)`` by the same count."""

    def __init__(self, model: nn.Module, kind: str, autocast: Callable[[], Any] = contextlib.nullcontext,
                 chunk_size: int = DEFAULT_CHUNK_SIZE):
        assert kind in KINDS, f"kind must be one of {KINDS}"
        self.model, self.kind, self.autocast, self.chunk_size = model, kind, autocast, int(chunk_size)

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor | None]:
        if self.kind == "loo":
            cand = batch[CANDIDATES]  # (B, C), column 0 = the held-out song
            B, C = cand.shape
            flat = {USER_IDX: batch[USER_IDX].repeat_interleave(C), SONG_IDX: cand.reshape(-1)}
            with self.autocast():
                logits = self.model(flat)  # (B * C,)
            return {"scores": logits.float().view(B, C), "probs": None, "loss": None}
        if self.kind == "next_song":
            return self._next_song(batch)
        with self.autocast():
            logits = self.model(batch)
            loss = self.model.loss(batch, logits) if _has_targets(batch, self.kind) else None
        return {"scores": logits.float(), "probs": None, "loss": loss}  # binary: logits

    def _next_song(self, batch: Batch) -> dict[str, torch.Tensor | None]:
        target = batch[NEXT_SONG]  # (B,)
        with self.autocast():
            if hasattr(self.model, "encode") and hasattr(self.model, "logits"):
                h = self.model.encode(batch)  # (B, D)
                target_scores = torch.diagonal(self.model.logits(h, target)).float()  # (B,)
                ranks, lse = M.chunked_target_ranks(lambda songs: self.model.logits(h, songs), target_scores, target,
                                                    self.model.n_songs, self.chunk_size, logsumexp=True)
                return {"ranks": ranks, "loss": (lse - target_scores).mean()}
            logits = self.model(batch)  # (B, V)
            loss = self.model.loss(batch, logits)
        scores = logits.float()
        ranks, _ = M.chunked_target_ranks(lambda songs: scores[:, songs], scores.gather(1, target[:, None]).squeeze(1),
                                          target, scores.shape[1], self.chunk_size)
        return {"ranks": ranks, "loss": loss}


def _has_targets(batch: Batch, kind: str) -> bool:
    if kind == "binary":
        return TARGET in batch and not bool(torch.isnan(batch[TARGET]).any())
    return NEXT_SONG in batch


class BaselineScorer:
    """Scores a batch with a non-learned baseline (``musicrec.baselines``) for one evaluation protocol; for
    ``next_song`` the baseline counts the target ranks itself (``target_ranks(batch, targets)``), without (B, V)
    scores."""

    def __init__(self, baseline, kind: str):
        assert kind in KINDS, f"kind must be one of {KINDS}"
        self.baseline, self.kind = baseline, kind

    def __call__(self, batch: Batch) -> dict[str, torch.Tensor | None]:
        if self.kind == "binary":  # (B,) ranking scores and probabilities from the row's columns (pop, rate, lightgbm)
            return self.baseline.score_batch({k: v.cpu() for k, v in batch.items()})
        if self.kind == "loo":
            cand = batch[CANDIDATES].cpu()  # (B, C)
            return {"scores": self.baseline.score_candidates(cand), "probs": None, "loss": None}
        cpu_batch = {k: v.cpu() for k, v in batch.items()}
        return {"ranks": self.baseline.target_ranks(cpu_batch, cpu_batch[NEXT_SONG]), "loss": None}


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
    """AUC and log loss over every worker's labelled rows, their ``count`` and ``examples``; {} when no row has a
    label."""
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
    return {**{k: result[k] for k in ("auc", "logloss", "count")}, "examples": result["count"]}


def _ranking(scorer, batches, kind: str, backend: Backend, device: torch.device, ks: tuple[int, ...],
             losses: _LossSum) -> dict[str, float]:
    """hr/ndcg/mrr@k means over every worker's rows (``loo``: ``loo_hr@k`` and ``loo_ndcg@k``), ``count`` and
    ``examples``. The scorer gives the ranks (``next_song``) or scores to rank the target among (``loo``: the
    held-out song is candidate 0)."""
    sums: dict[str, float] = {}
    for batch in batches:
        batch = to_device(batch, device)
        out = scorer(batch)
        if "ranks" in out:
            ranks = out["ranks"]
        else:
            scores = out["scores"]
            targets = (batch[NEXT_SONG].to(scores.device) if kind == "next_song"
                       else torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device))
            ranks = M.target_ranks(scores, targets)
        for key, value in M.ranking_sums(ranks, ks).items():
            sums[key] = sums.get(key, 0.0) + value
        losses.add(out, batch)
    if not sums:
        sums = {**{f"{m}@{k}": 0.0 for k in ks for m in ("hr", "ndcg", "mrr")}, "count": 0.0}
    sums = backend.allreduce_sum({k: torch.tensor(v, dtype=torch.float64) for k, v in sums.items()})  # distributed
    result = M.means_from_sums({k: float(v) for k, v in sums.items()})
    result["examples"] = result["count"]
    if kind == "loo":
        (k,) = ks
        return {f"loo_hr@{k}": result[f"hr@{k}"], f"loo_ndcg@{k}": result[f"ndcg@{k}"], "count": result["count"],
                "examples": result["count"]}
    return result


def evaluate_split(scorer, eval_loader: Callable[[str], Iterable[Batch]], split: str, kind: str, config: TrainConfig,
                   backend: Backend, device: torch.device | str = "cpu") -> dict[str, float]:
    """``evaluate`` on ``eval_loader(split)`` with the config's cut-offs, without the row count (``examples``
    stays)."""
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
    return "test: " + "  ".join(f"{k}={test[k]:.4f}" for k in shown) + _examples_note(test.get("examples"))


def format_epoch_line(record: Mapping[str, float], metric: str) -> str:
    """One short line per epoch: losses, the selection metric and the @10 metrics, throughput, the examples
    evaluated."""
    shown = ["train_loss", "valid_loss", f"valid_{metric}", "valid_auc", "valid_logloss"]
    shown += [k for k in record if k.startswith("valid_") and k.endswith("@10")]
    parts = [f"epoch {record['epoch']}"]
    for key in dict.fromkeys(shown):
        if key in record:
            parts.append(f"{key}={record[key]:.4f}")
    if "samples_per_s" in record:
        parts.append(f"{record['samples_per_s']:,.0f} samples/s")
    return "  ".join(parts) + _examples_note(record.get("valid_examples"))


def _examples_note(examples: float | None) -> str:
    return "" if examples is None else f"  ({int(examples):,} examples)"


__all__ = [
    "BaselineScorer",
    "AUTO_CPU_MAX_EXAMPLES",
    "check_selection_metric",
    "metric_names",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_METRIC",
    "EvalConfig",
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
