"""Ranking and binary metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from musicrec.metrics import (
    batch_rows,
    binary_metrics,
    mask_special,
    means_from_sums,
    ranking_metrics,
    ranking_sums,
    sample_negative_items,
    sampled_hr_ndcg,
    sampled_ranks,
    target_ranks,
)

pytestmark = pytest.mark.unit


def test_target_ranks_and_tie_rules():
    scores = torch.tensor(
        [
            [0.1, 0.9, 0.5, 0.5],  # target 2 ties with column 3, one candidate above
            [0.3, 0.2, 0.1, 0.0],  # target 0 is the best
            [float("-inf"), float("-inf"), 1.0, 2.0],  # target 3 is the best; masked columns never beat it
            [float("-inf"), float("-inf"), 1.0, 2.0],  # a masked target ranks below every finite candidate
        ]
    )
    targets = torch.tensor([2, 0, 3, 1])
    optimistic = target_ranks(scores, targets)
    assert optimistic.dtype == torch.long
    assert optimistic.tolist() == [2, 1, 1, 3]
    assert target_ranks(scores, targets, ties="pessimistic").tolist() == [3, 1, 1, 4]
    assert target_ranks(np.array([[1.0, 1.0, 1.0]]), [1]).tolist() == [1]  # numpy in; all tied
    assert target_ranks(np.array([[1.0, 1.0, 1.0]]), [1], ties="pessimistic").tolist() == [3]


def test_target_ranks_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(torch.tensor([[0.0, float("nan")]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="targets"):
        target_ranks(torch.zeros(1, 3), torch.tensor([3]))
    with pytest.raises(ValueError, match="ties"):
        target_ranks(torch.zeros(1, 3), torch.tensor([0]), ties="random")


def test_ranking_sums_hand_case():
    sums = ranking_sums(torch.tensor([1, 3, 12]), ks=(1, 5, 10, 20))
    assert sums["count"] == 3.0
    assert sums["hr@1"] == 1.0 and sums["hr@5"] == 2.0 and sums["hr@10"] == 2.0 and sums["hr@20"] == 3.0
    assert sums["ndcg@1"] == pytest.approx(1.0)
    assert sums["ndcg@10"] == pytest.approx(1.0 + 1.0 / math.log2(4))
    assert sums["ndcg@20"] == pytest.approx(1.0 + 0.5 + 1.0 / math.log2(13))
    assert sums["mrr@10"] == pytest.approx(1.0 + 1.0 / 3)
    assert sums["mrr@20"] == pytest.approx(1.0 + 1.0 / 3 + 1.0 / 12)


def test_ranking_metrics_means_hand_case():
    m = ranking_metrics([1, 3, 12], ks=(10,))
    assert m["hr@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3) / 3)
    assert m["count"] == 3.0


def test_sums_from_workers_add_up_to_the_global_means():
    ranks = np.array([1, 2, 7, 30, 4, 11, 1])
    part_a, part_b = ranking_sums(ranks[:3]), ranking_sums(ranks[3:])
    reduced = {k: part_a[k] + part_b[k] for k in part_a}  # what an all-reduce of the sums gives
    expected = ranking_metrics(ranks)
    got = means_from_sums(reduced)
    assert got.keys() == expected.keys()
    for k in expected:
        assert got[k] == pytest.approx(expected[k])
    assert math.isnan(means_from_sums(ranking_sums([]))["hr@10"])
    with pytest.raises(ValueError, match="1-based"):
        ranking_sums([0, 1])


def test_sampled_ranks_leave_one_out():
    pos = torch.tensor([0.5, 0.1])
    neg = torch.tensor([[0.1, 0.7, 0.5], [0.2, 0.3, 0.0]])
    assert sampled_ranks(pos, neg).tolist() == [2, 3]
    assert sampled_ranks(pos, neg, ties="pessimistic").tolist() == [3, 3]
    m = sampled_hr_ndcg([1, 5, 11, 100], k=10)
    assert m == pytest.approx({"hr@10": 0.5, "ndcg@10": (1 + 1 / math.log2(6)) / 4})


def test_sample_negative_items():
    rng = np.random.default_rng(0)
    neg = sample_negative_items(rng, vocab_size=120, exclude={2, 3, 50}, n=99)
    assert len(neg) == 99 and len(set(neg.tolist())) == 99
    assert neg.min() >= 2 and neg.max() < 120
    assert not {2, 3, 50} & set(neg.tolist())
    with pytest.raises(ValueError, match="candidate"):
        sample_negative_items(rng, vocab_size=12, exclude={5}, n=10)


def test_binary_metrics_hand_case():
    y = [0, 0, 1, 1]
    p = np.array([0.1, 0.4, 0.35, 0.8])
    m = binary_metrics(y, p, from_logits=False)
    assert m["auc"] == pytest.approx(0.75)  # 3 of the 4 (positive, negative) pairs are ordered right
    expected_logloss = -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    assert m["logloss"] == pytest.approx(expected_logloss)
    assert m["count"] == 4.0 and m["positive_rate"] == 0.5
    logits = torch.tensor(np.log(p / (1 - p)))
    from_logits = binary_metrics(torch.tensor(y), logits)
    assert from_logits["auc"] == pytest.approx(0.75)
    assert from_logits["logloss"] == pytest.approx(expected_logloss)


def test_binary_metrics_clips_and_handles_one_class():
    m = binary_metrics([1, 0], [0.0, 0.0], from_logits=False, eps=1e-7)
    assert m["logloss"] == pytest.approx((-math.log(1e-7) - math.log(1 - 1e-7)) / 2)
    assert m["auc"] == pytest.approx(0.5)
    with pytest.warns(UserWarning, match="single class"):
        one = binary_metrics([1, 1, 1], [2.0, -1.0, 0.0])
    assert math.isnan(one["auc"]) and math.isfinite(one["logloss"])
    assert math.isfinite(binary_metrics([0, 1], [-1e4, 1e4])["logloss"])
    with pytest.raises(ValueError, match="outside"):
        binary_metrics([0, 1], [-1.0, 2.0], from_logits=False)
    assert math.isnan(binary_metrics([], [])["auc"])


def test_mask_special_and_batch_rows():
    scores = torch.arange(8, dtype=torch.float64).view(2, 4)
    masked = mask_special(scores)
    assert masked.dtype == torch.float32 and torch.isneginf(masked[:, :2]).all()
    assert masked[:, 2:].tolist() == [[2.0, 3.0], [6.0, 7.0]] and scores[0, 0] == 0.0  # a copy
    one = torch.ones(5)
    assert mask_special(one, inplace=True) is one and torch.isneginf(one[:2]).all() and one[2:].tolist() == [1.0] * 3
    assert batch_rows({"songs": torch.zeros(3, 7), "lengths": torch.ones(3)}) == 3
    with pytest.raises(ValueError, match="empty batch"):
        batch_rows({})
