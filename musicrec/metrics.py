"""Ranking and binary-classification metrics (torch or numpy inputs).

Ranking:
- ``target_ranks(scores (B, V), targets (B,))``: 1-based rank of each target among ALL V candidates.
  Tie rule (``ties``): "optimistic" (default) rank = 1 + #{candidates with a strictly greater score}, so ties
  count in the target's favour; "pessimistic" rank = #{candidates with a score >= the target's} (the target
  counts itself), so every tie counts against it. Mask what may not be recommended (padding, OOV) with -inf before
  calling; a -inf target then ranks below every finite candidate. NaN scores are an error.
- ``ranking_sums(ranks, ks)``: SUMS of hr@k, ndcg@k = 1/log2(rank+1), mrr@k = 1/rank (each 0 when rank > k) plus
  ``count``, so per-worker sums can be all-reduced exactly; ``means_from_sums`` divides by the count afterwards.
  ``ranking_metrics(ranks, ks)`` gives the means directly.
- ``chunked_target_ranks(score_chunk, target_scores, targets, vocab_size, chunk_size)``: the same ranks as
  ``target_ranks`` on the masked (B, V) scores (optimistic ties, padding and OOV never candidates), from the
  scores of one block of ``chunk_size`` columns at a time, so memory is bounded by a chunk, not by V; with
  ``logsumexp=True`` also the log-sum-exp of every row's raw scores over all V columns (the full-softmax loss).
- ``sampled_ranks(scores_pos, scores_neg)``: the NCF paper's leave-one-out protocol (rank of the held-out positive
  among itself + 99 sampled negatives); ``sampled_hr_ndcg(ranks, k=10)`` -> {"hr@10", "ndcg@10"}.

Binary: ``binary_metrics(y_true, y_score)`` -> {"auc", "logloss", "count", "positive_rate"} with scikit-learn.
AUC is not a sum over rows: in distributed evaluation gather (y_true, y_score) on one worker first.

Batches (what the models, the baselines and the training loop share): ``mask_special(scores)`` puts -inf on the
padding and OOV columns of (..., V) scores, so neither can be recommended; ``batch_rows(batch)`` is the number of
rows of a batch (a mapping of tensors or arrays with the rows on dim 0).
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from musicrec.columns import FIRST_TOKEN_INDEX, OOV_INDEX, PAD_INDEX

DEFAULT_KS = (1, 5, 10, 20)
TIE_RULES = ("optimistic", "pessimistic")


def _as_tensor(x, dtype=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if dtype is None else x.to(dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def mask_special(scores: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
    """(..., V) scores with the padding (0) and OOV (1) columns set to -inf: a float copy, or ``scores`` itself
    changed in place with ``inplace`` (a float tensor the caller owns, e.g. fresh from numpy)."""
    if not inplace:
        scores = scores.float().clone()
    scores[..., PAD_INDEX] = float("-inf")
    scores[..., OOV_INDEX] = float("-inf")
    return scores


def batch_rows(batch: Mapping) -> int:
    """The number of rows of ``batch`` (every value has its rows on dim 0)."""
    for value in batch.values():
        return int(len(value))
    raise ValueError("an empty batch has no rows")


def target_ranks(scores, targets, ties: str = "optimistic") -> torch.Tensor:
    """1-based rank (B,) LongTensor of ``targets[b]`` among all columns of ``scores[b]`` (see the module doc)."""
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, got {ties!r}")
    scores = _as_tensor(scores)  # (B, V)
    targets = _as_tensor(targets, torch.long).to(scores.device)  # (B,)
    assert scores.dim() == 2, f"scores must be (B, V), got {tuple(scores.shape)}"
    assert targets.shape == (scores.shape[0],), f"targets must be ({scores.shape[0]},), got {tuple(targets.shape)}"
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= scores.shape[1]):
        raise ValueError(f"targets must be in [0, {scores.shape[1]}), got [{int(targets.min())}, {int(targets.max())}]")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    target_scores = scores.gather(1, targets.unsqueeze(1))  # (B, 1)
    if ties == "optimistic":
        return 1 + (scores > target_scores).sum(dim=1)  # (B,)
    return (scores >= target_scores).sum(dim=1)  # (B,), the target counts itself


def chunked_target_ranks(
    score_chunk: Callable[[slice], torch.Tensor],
    target_scores: torch.Tensor,
    targets: torch.Tensor,
    vocab_size: int,
    chunk_size: int,
    logsumexp: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(ranks (B,), log-sum-exp (B,) or None): the optimistic ``target_ranks`` of ``targets`` among the real songs
    [2, V), scored ``chunk_size`` columns at a time by ``score_chunk(slice(lo, hi))`` -> (B, hi - lo) (or (1, hi - lo)
    when every row has the same scores); ``target_scores`` (B,) are the targets' raw scores.

    rank = 1 + #{real candidates c != target with score > the target's}; a padding or OOV target ranks behind every
    real song (rank V - 1), as it does against -inf in ``target_ranks``. The target itself is left out of the count
    rather than compared with its own score, so a chunk that computes it a rounding error apart cannot push it down.
    ``logsumexp`` needs the chunks of all V columns, the special ones included, as ``F.cross_entropy`` over the raw
    logits takes them."""
    assert chunk_size >= 1, f"chunk_size must be >= 1, got {chunk_size}"
    targets = targets.to(target_scores.device).long()  # (B,)
    special = targets < FIRST_TOKEN_INDEX  # (B,): padding / OOV targets
    t = torch.where(special, torch.full_like(target_scores, float("-inf")), target_scores).unsqueeze(1)  # (B, 1)
    greater = torch.zeros(targets.shape, dtype=torch.long, device=targets.device)  # (B,)
    lse = torch.full(targets.shape, float("-inf"), dtype=torch.float32, device=targets.device) if logsumexp else None
    for lo in range(0 if logsumexp else FIRST_TOKEN_INDEX, vocab_size, chunk_size):
        hi = min(lo + chunk_size, vocab_size)
        scores = score_chunk(slice(lo, hi)).float()  # (B, C) or (1, C)
        if torch.isnan(scores).any():
            raise ValueError(f"scores of songs [{lo}, {hi}) contain NaN")
        if lse is not None:
            lse = torch.logaddexp(lse, torch.logsumexp(scores, dim=1))
        first = max(FIRST_TOKEN_INDEX - lo, 0)  # the real songs of the chunk start here
        above = scores[:, first:] > t  # (B, C')
        inside = (targets >= lo + first) & (targets < hi)  # (B,): the target is one of these columns
        if bool(inside.any()):  # ``above`` is a fresh (B, C') tensor (broadcast against t)
            rows = inside.nonzero().squeeze(1)
            above[rows, targets[rows] - lo - first] = False  # the target is no candidate of its own
        greater += above.sum(dim=1)
    return 1 + greater, lse


def sampled_ranks(scores_pos, scores_neg, ties: str = "optimistic") -> torch.Tensor:
    """Rank (B,) of each positive among itself and its N sampled negatives (NCF leave-one-out: N = 99).

    ``scores_pos`` (B,) the model's scores of the held-out positives, ``scores_neg`` (B, N) of the negatives.
    Same tie rules as ``target_ranks``.
    """
    pos = _as_tensor(scores_pos).flatten()  # (B,)
    neg = _as_tensor(scores_neg).to(pos.device)  # (B, N)
    assert neg.dim() == 2 and neg.shape[0] == pos.shape[0], f"scores_neg must be (B, N), got {tuple(neg.shape)}"
    scores = torch.cat([pos.unsqueeze(1).to(neg.dtype), neg], dim=1)  # (B, 1 + N), the positive is column 0
    return target_ranks(scores, torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device), ties=ties)


def ranking_sums(ranks, ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """Sums over rows of ``hr@k``, ``ndcg@k``, ``mrr@k`` for each k, and ``count`` (all Python floats)."""
    r = _as_tensor(ranks).detach().to("cpu", torch.float64).flatten()  # (N,)
    if r.numel() and float(r.min()) < 1:
        raise ValueError(f"ranks are 1-based, got a minimum of {float(r.min())}")
    out: dict[str, float] = {}
    for k in ks:
        assert int(k) >= 1, f"k must be >= 1, got {k}"
        hit = r <= k  # (N,)
        out[f"hr@{k}"] = float(hit.sum())
        out[f"ndcg@{k}"] = float(torch.where(hit, 1.0 / torch.log2(r + 1.0), torch.zeros_like(r)).sum())
        out[f"mrr@{k}"] = float(torch.where(hit, 1.0 / r, torch.zeros_like(r)).sum())
    out["count"] = float(r.numel())
    return out


def means_from_sums(sums: dict[str, float]) -> dict[str, float]:
    """Turn ``ranking_sums`` output (possibly all-reduced) into means; ``count`` is kept; NaN when count is 0."""
    count = float(sums["count"])
    return {key: (float(v) / count if count else math.nan) if key != "count" else count for key, v in sums.items()}


def ranking_metrics(ranks, ks: Iterable[int] = DEFAULT_KS) -> dict[str, float]:
    """Means of ``hr@k``, ``ndcg@k``, ``mrr@k`` over rows, plus ``count``."""
    return means_from_sums(ranking_sums(ranks, ks))


def sampled_hr_ndcg(ranks, k: int = 10) -> dict[str, float]:
    """``{"hr@k", "ndcg@k"}`` means from ``sampled_ranks`` (the NCF paper reports k = 10)."""
    m = ranking_metrics(ranks, ks=(k,))
    return {f"hr@{k}": m[f"hr@{k}"], f"ndcg@{k}": m[f"ndcg@{k}"]}


def sample_negative_items(
    rng: np.random.Generator, vocab_size: int, exclude: Sequence[int] | set[int], n: int = 99
) -> np.ndarray:
    """``n`` distinct item indices from the real tokens [2, vocab_size) not in ``exclude`` (a user's items).

    For the leave-one-out protocol: score the held-out positive and these negatives, then ``sampled_ranks``.
    """
    exclude = set(int(i) for i in exclude)
    candidates = vocab_size - 2 - sum(1 for i in exclude if 2 <= i < vocab_size)
    if candidates < n:
        raise ValueError(f"only {candidates} candidate items for {n} negatives (vocab_size={vocab_size})")
    chosen: list[int] = []
    seen: set[int] = set()
    while len(chosen) < n:
        for i in rng.integers(2, vocab_size, size=2 * (n - len(chosen)) + 8):
            i = int(i)
            if i not in exclude and i not in seen:
                seen.add(i)
                chosen.append(i)
                if len(chosen) == n:
                    break
    return np.asarray(chosen, dtype=np.int64)


def binary_metrics(y_true, y_score, from_logits: bool = True, eps: float = 1e-7) -> dict[str, float]:
    """``{"auc", "logloss", "count", "positive_rate"}`` for 1/0 labels and scores.

    ``y_score`` are logits when ``from_logits`` (the models' output), else probabilities. Probabilities are
    clipped to [eps, 1 - eps] for the log loss. With a single class in ``y_true`` AUC is undefined: it is NaN and
    a ``UserWarning`` says why (the log loss is still computed). Empty input gives NaNs.
    """
    from scipy.special import expit
    from sklearn.metrics import log_loss, roc_auc_score

    y = _as_tensor(y_true).detach().to("cpu", torch.float64).numpy().ravel()
    s = _as_tensor(y_score).detach().to("cpu", torch.float64).numpy().ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values but y_score has {s.size}")
    if y.size == 0:
        return {"auc": math.nan, "logloss": math.nan, "count": 0.0, "positive_rate": math.nan}
    if np.isnan(s).any() or np.isnan(y).any():
        raise ValueError("y_true / y_score contain NaN")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must be 0/1")
    prob = expit(s) if from_logits else s
    if not from_logits and ((prob < 0).any() or (prob > 1).any()):
        raise ValueError("from_logits=False but y_score has values outside [0, 1]")
    prob = np.clip(prob, eps, 1.0 - eps)
    if np.unique(y).size < 2:
        warnings.warn(
            f"binary_metrics: y_true has a single class ({int(y[0])}) over {y.size} rows: AUC is undefined, reported as NaN",
            UserWarning,
            stacklevel=2,
        )
        auc = math.nan
    else:
        auc = float(roc_auc_score(y, s))
    return {
        "auc": auc,
        "logloss": float(log_loss(y, prob, labels=[0, 1])),
        "count": float(y.size),
        "positive_rate": float(y.mean()),
    }
