"""Most-popular and co-occurrence baselines on tiny hand-made sessions and rows."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from musicrec.baselines import CoOccurrence, MostPopular
from musicrec.config import ConfigError
from musicrec.metrics import binary_metrics, target_ranks

pytestmark = pytest.mark.unit

V = 8  # 0 = padding, 1 = OOV, songs 2..7

SESSIONS = [
    [2, 3, 4],
    [2, 3],
    [5, 2, 3, 0, 0],  # trailing padding is ignored
    [6, 2, 3],
    [1, 3, 6],  # OOV as a predecessor is skipped
]


def sessions_batch(prefixes: list[list[int]], T: int = 4) -> dict[str, torch.Tensor]:
    songs = torch.zeros(len(prefixes), T, dtype=torch.long)
    for i, p in enumerate(prefixes):
        songs[i, : len(p)] = torch.tensor(p)
    return {"songs": songs, "lengths": torch.tensor([len(p) for p in prefixes])}


def test_most_popular_sessions():
    model = MostPopular(V).fit_sessions(SESSIONS)
    # counts: 2 -> 4, 3 -> 5, 4 -> 1, 5 -> 1, 6 -> 2 (OOV 1 counted but masked when scoring)
    np.testing.assert_array_equal(model.counts, [0, 1, 4, 5, 1, 1, 2, 0])
    scores = model.score(sessions_batch([[2], [4, 5]]))
    assert scores.shape == (2, V)
    assert torch.isneginf(scores[:, :2]).all()
    assert target_ranks(scores, torch.tensor([3, 2])).tolist() == [1, 2]
    assert target_ranks(scores, torch.tensor([7, 7])).tolist() == [6, 6]  # never played: last


def test_most_popular_rows_counts_then_smoothed_mean():
    song_idx = np.array([2, 2, 3, 3, 4, 6, 6, 6])
    target = np.array([1, 0, 1, 1, 0, 0, 0, 1])
    model = MostPopular(V, smoothing=1.0).fit(song_idx, target)
    prior = target.mean()
    np.testing.assert_allclose(model.smoothed_target_mean()[[2, 3, 7]], [(1 + prior) / 3, (2 + prior) / 3, prior])
    s = model.score_rows(torch.tensor([6, 3, 2, 4, 7]))
    assert s.shape == (5,)
    assert list(np.argsort(-s)) == [0, 1, 2, 3, 4]  # count 3 > count 2 (mean 0.88) > count 2 (mean 0.54) > 1 > 0
    # the scores are not probabilities, but AUC only needs their order; rows of song 3 (all positive) rank first
    auc = binary_metrics(target, model.score_rows(song_idx))["auc"]
    assert auc == pytest.approx(binary_metrics(target, s_rows := model.score_rows(song_idx))["auc"])
    assert 0.5 < auc <= 1.0 and s_rows[2] > s_rows[0]
    with pytest.raises(ValueError, match="out of range"):
        model.score_rows([V])


def test_cooccurrence_predicts_the_seen_successor():
    model = CoOccurrence(V, window=2).fit(SESSIONS)
    assert sp.issparse(model.matrix) and model.matrix.shape == (V, V)
    row_sums = np.asarray(model.matrix.sum(axis=1)).ravel()
    np.testing.assert_allclose(row_sums[row_sums > 0], 1.0)  # normalized rows
    assert model.matrix[1].nnz == 0  # OOV is no predecessor
    batch = sessions_batch([[2], [5, 2], [6, 2, 3]])
    scores = model.score(batch)
    assert scores.shape == (3, V) and scores.dtype == torch.float32
    assert torch.isneginf(scores[:, :2]).all() and torch.isfinite(scores[:, 2:]).all()
    # after 2 always comes 3 (weight 1 in four sessions), and 4 at distance 2 (weight 1/2) once;
    # after 3 come 4 and 6 once each (weight 1): the popularity fallback breaks the tie for 6 (2 plays vs 1)
    assert target_ranks(scores, torch.tensor([3, 3, 6])).tolist() == [1, 1, 1]
    assert target_ranks(scores, torch.tensor([4, 4, 4])).tolist() == [2, 2, 2]


def test_cooccurrence_hand_weights():
    model = CoOccurrence(V, window=2, normalize=False).fit([[2, 3, 4], [2, 4]])
    dense = model.matrix.toarray()
    assert dense[2, 3] == 1.0 and dense[3, 4] == 1.0
    assert dense[2, 4] == 1.5  # distance 2 in the first session (1/2) + distance 1 in the second (1)
    assert dense.sum() == 3.5


def test_cooccurrence_falls_back_to_popularity_and_history():
    model = CoOccurrence(V, window=1, history=2, history_decay=0.5).fit(SESSIONS)
    # last song 7 was never seen and 4 has no successor: popularity order 3 > 2 > 6 > 4, 5 > 7
    pop_only = model.score(sessions_batch([[7], [4]]))
    assert target_ranks(pop_only, torch.tensor([3, 3])).tolist() == [1, 1]
    assert target_ranks(pop_only, torch.tensor([2, 6])).tolist() == [2, 3]
    # prefix [2, 7]: the unseen last song gives nothing, the one before (weight 0.5) still predicts 3
    with_history = model.score(sessions_batch([[2, 7]]))
    assert int(with_history[0, 2:].argmax()) + 2 == 3
    no_history = CoOccurrence(V, window=1, history=1).fit(SESSIONS).score(sessions_batch([[6, 7]]))
    assert int(no_history[0, 2:].argmax()) + 2 == 3  # pure popularity


def test_cooccurrence_lengths_default_and_range_check():
    model = CoOccurrence(V).fit(SESSIONS)
    batch = sessions_batch([[5, 2]])
    torch.testing.assert_close(model.score({"songs": batch["songs"]}), model.score(batch))
    with pytest.raises(ValueError, match="out of range"):
        CoOccurrence(V).fit([[2, V]])


def test_bad_config_values_are_config_errors():
    with pytest.raises(ConfigError, match="model.smoothing"):
        MostPopular(V, smoothing=0)
    with pytest.raises(ConfigError, match="model.history_decay"):
        CoOccurrence(V, history_decay=1.5)
    with pytest.raises(ConfigError, match="model.window"):
        CoOccurrence(V, window=0)
