"""The baselines on tiny hand-made sessions and rows: most popular, co-occurrence, session-kNN (hand-computed
neighbours and scores, and a brute-force V-SKNN on random sessions), the target rate (hand-computed rates), LightGBM
(learns separable toy rows); then ``jobs/train.py --model sknn|rate|lightgbm`` on the fake feature outputs, one
MLflow run each."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from mlflow.tracking import MlflowClient

from musicrec import gbdt
from musicrec.baselines import CoOccurrence, MostPopular, SessionKNN, TargetRate
from musicrec.config import ConfigError, typed
from musicrec.metrics import binary_metrics, target_ranks

REPO = Path(__file__).resolve().parent.parent
unit = pytest.mark.unit

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


@unit
def test_most_popular_sessions():
    model = MostPopular(V).fit_sessions(SESSIONS)
    # counts: 2 -> 4, 3 -> 5, 4 -> 1, 5 -> 1, 6 -> 2 (OOV 1 counted but masked when scoring)
    np.testing.assert_array_equal(model.counts, [0, 1, 4, 5, 1, 1, 2, 0])
    scores = model.score(sessions_batch([[2], [4, 5]]))
    assert scores.shape == (2, V)
    assert torch.isneginf(scores[:, :2]).all()
    assert target_ranks(scores, torch.tensor([3, 2])).tolist() == [1, 2]
    assert target_ranks(scores, torch.tensor([7, 7])).tolist() == [6, 6]  # never played: last


@unit
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


@unit
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


@unit
def test_cooccurrence_hand_weights():
    model = CoOccurrence(V, window=2, normalize=False).fit([[2, 3, 4], [2, 4]])
    dense = model.matrix.toarray()
    assert dense[2, 3] == 1.0 and dense[3, 4] == 1.0
    assert dense[2, 4] == 1.5  # distance 2 in the first session (1/2) + distance 1 in the second (1)
    assert dense.sum() == 3.5


@unit
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


@unit
def test_cooccurrence_lengths_default_and_range_check():
    model = CoOccurrence(V).fit(SESSIONS)
    batch = sessions_batch([[5, 2]])
    torch.testing.assert_close(model.score({"songs": batch["songs"]}), model.score(batch))
    with pytest.raises(ValueError, match="out of range"):
        CoOccurrence(V).fit([[2, V]])


@unit
def test_bad_config_values_are_config_errors():
    with pytest.raises(ConfigError, match="model.smoothing"):
        MostPopular(V, smoothing=0)
    with pytest.raises(ConfigError, match="model.history_decay"):
        CoOccurrence(V, history_decay=1.5)
    with pytest.raises(ConfigError, match="model.window"):
        CoOccurrence(V, window=0)


# ---------------------------------------------------------------------------------------------------------------
# session-kNN
# ---------------------------------------------------------------------------------------------------------------
KNN_SESSIONS = [[2, 3, 4], [3, 5], [2, 6, 3], [7, 5]]  # oldest first: s0 .. s3


def neighbour_dict(model, prefixes):
    """{(row, session): similarity} of ``model.neighbours``."""
    coo = model.neighbours(sessions_batch(prefixes, max(map(len, prefixes)))).tocoo()
    return {(int(r), int(c)): pytest.approx(float(v)) for r, c, v in zip(coo.row, coo.col, coo.data)}


@unit
def test_sknn_hand_computed_neighbours_and_scores():
    # prefix [2, 3], div weights: 2 -> 1/2, 3 -> 2/2; vector similarity = shared weights / 2 distinct songs
    model = SessionKNN(V, k=2, sample_size=10).fit(KNN_SESSIONS)
    assert neighbour_dict(model, [[2, 3]]) == {(0, 0): 0.75, (0, 2): 0.75}  # s1 (0.5) is the third; s3 shares none
    scores = model.score(sessions_batch([[2, 3]]))
    fallback = 1e-6 * np.array([0, 0, 2, 3, 1, 2, 1, 1]) / 3  # plays / max plays
    expected = np.array([0, 0, 1.5, 1.5, 0.75, 0, 0.75, 0]) + fallback
    np.testing.assert_allclose(scores[0, 2:].numpy(), expected[2:].astype(np.float32), rtol=1e-7)
    assert torch.isneginf(scores[0, :2]).all()
    # the prefix's own songs can come again (3 before 2 by popularity); 4 and 6 tie (optimistic ranks); 5 and 7
    # have the fallback alone: 5 (2 plays) before 7 (1 play)
    ranks = model.target_ranks(sessions_batch([[2, 3]] * 6), [3, 2, 4, 6, 5, 7]).tolist()
    assert ranks == target_ranks(scores.expand(6, V), torch.tensor([3, 2, 4, 6, 5, 7])).tolist() == [1, 2, 3, 3, 5, 6]
    # equal similarities: the more recent session wins; k=1 keeps s2 alone, so 4 falls to the fallback
    assert neighbour_dict(SessionKNN(V, k=1).fit(KNN_SESSIONS), [[2, 3]]) == {(0, 2): 0.75}


@unit
def test_sknn_sample_recency_weighting_and_cosine():
    # sample_size=2: the two most recent sessions sharing a song with [2, 3] are s1 and s2
    assert neighbour_dict(SessionKNN(V, sample_size=2).fit(KNN_SESSIONS), [[2, 3]]) == {(0, 1): 0.5, (0, 2): 0.75}
    # start times make s0 the most recent: with sample_size=1 it is the only candidate
    timed = SessionKNN(V, sample_size=1).fit(KNN_SESSIONS, start_times=[40, 30, 20, 10])
    assert neighbour_dict(timed, [[2, 3]]) == {(0, 3): 0.75}  # s0 is row 3 of the sessions ordered oldest first
    # prefix [3, 5, 3]: 3 keeps its latest weight 3/3, 5 gets 2/3
    assert neighbour_dict(SessionKNN(V).fit(KNN_SESSIONS), [[3, 5, 3]]) == {
        (0, 0): 1 / 2, (0, 1): (1 + 2 / 3) / 2, (0, 2): 1 / 2, (0, 3): (2 / 3) / 2}
    # SKNN's cosine (same weights): |s & m| / sqrt(|s| |m|)
    cosine = SessionKNN(V, weighting="same", similarity="cosine").fit(KNN_SESSIONS)
    assert neighbour_dict(cosine, [[2, 3]]) == {(0, 0): 2 / math.sqrt(6), (0, 1): 1 / 2, (0, 2): 2 / math.sqrt(6)}
    # linear: only the last ten positions weigh (2, eleventh from the end, has weight 0); OOV never matches
    assert neighbour_dict(SessionKNN(V, weighting="linear").fit(KNN_SESSIONS), [[2] + [7] * 10]) == {(0, 3): 1 / 2}
    assert neighbour_dict(SessionKNN(V).fit(KNN_SESSIONS + [[1, 4]]), [[1]]) == {}
    # score decay: prefix [3, 2] (weights 1/2, 1); s1 = {3, 5} has only the second-to-last song: 0.25 / 2
    decayed = SessionKNN(V, score_decay="div").fit(KNN_SESSIONS)
    assert neighbour_dict(decayed, [[3, 2]]) == {(0, 0): 0.75, (0, 1): 0.25 / 2, (0, 2): 0.75}


def brute_force_vsknn(sessions, prefix, k, sample_size, weighting, score_decay):
    """{session: weight in the scores} of one prefix, straight from the definition (sessions oldest first)."""
    from musicrec.baselines.sknn import position_weights

    n = len(prefix)
    weights = {s: float(position_weights(p, n, weighting)) for p, s in enumerate(prefix, 1) if s >= 2}
    sets = [set(int(x) for x in m if x >= 2) for m in sessions]
    sharing = [i for i, m in enumerate(sets) if m & set(weights)]
    sample = sorted(sharing, reverse=True)[: sample_size or None]
    sims = {i: sum(weights[s] for s in sets[i] & set(weights)) / len(weights) for i in sample}
    ranked = sorted((i for i in sims if sims[i] > 0), key=lambda i: (-sims[i], -i))[:k]
    if score_decay == "div":
        step = {i: next(j for j, s in enumerate(reversed(prefix), 1) if s in sets[i]) for i in ranked}
        return {i: sims[i] / step[i] for i in ranked}
    return {i: sims[i] for i in ranked}


@unit
@pytest.mark.parametrize("k, sample_size, weighting, score_decay", [
    (3, 5, "same", "none"), (2, 0, "same", "div"), (100, 4, "div", "none"), (100, 0, "log", "div")])
def test_sknn_matches_the_definition_on_random_sessions(k, sample_size, weighting, score_decay):
    """Brute force per prefix vs the vectorized batch; equal-similarity ties need exact sums ("same" weights) or a
    k that keeps every candidate."""
    rng = np.random.default_rng(k + sample_size)
    V_big = 30
    sessions = [rng.integers(1, V_big, size=int(rng.integers(1, 7))) for _ in range(80)]
    model = SessionKNN(V_big, k=k, sample_size=sample_size, weighting=weighting, score_decay=score_decay).fit(sessions)
    prefixes_ = [list(rng.integers(0, V_big, size=int(rng.integers(1, 6)))) for _ in range(40)]
    T = max(map(len, prefixes_))
    got = model.neighbours(sessions_batch(prefixes_, T)).toarray()
    for row, prefix in enumerate(prefixes_):
        expected = brute_force_vsknn(sessions, prefix, k, sample_size, weighting, score_decay)
        assert set(np.nonzero(got[row])[0]) == set(expected), (row, prefix)
        np.testing.assert_allclose([got[row, i] for i in expected], list(expected.values()))
    # the ranks without the (B, V) scores are those of the full scores
    batch = sessions_batch(prefixes_, T)
    targets = torch.from_numpy(rng.integers(0, V_big, size=len(prefixes_)))
    assert torch.equal(model.target_ranks(batch, targets), target_ranks(model.score(batch), targets))


@unit
def test_sknn_bad_config_values_are_config_errors():
    for kwargs, key in [({"k": 0}, "model.k"), ({"sample_size": -1}, "model.sample_size"),
                        ({"weighting": "exp"}, "model.weighting"), ({"similarity": "jaccard"}, "model.similarity"),
                        ({"score_decay": "log"}, "model.score_decay")]:
        with pytest.raises(ConfigError, match=key):
            SessionKNN(V, **kwargs)
    with pytest.raises(ValueError, match="out of range"):
        SessionKNN(V).fit([[2, V]])


# ---------------------------------------------------------------------------------------------------------------
# target rate
# ---------------------------------------------------------------------------------------------------------------
def logit(p):
    return math.log(p / (1 - p))


@unit
def test_target_rate_hand_computed():
    # prior 2/3; song 2: (1 + 1 * 2/3) / (2 + 1) = 5/9, song 3: (1 + 2/3) / 2 = 5/6, unseen song 4: 2/3;
    # user 2: (1 + 2 * 2/3) / (1 + 2) = 7/9, user 3: (1 + 4/3) / (2 + 2) = 7/12
    songs, users, target = np.array([2, 2, 3]), np.array([2, 3, 3]), np.array([1, 0, 1])
    model = TargetRate(6, 5, song_smoothing=1, user_smoothing=2).fit(songs, users, target)
    np.testing.assert_allclose(model.song_rate[[2, 3, 4]], [5 / 9, 5 / 6, 2 / 3])
    np.testing.assert_allclose(model.user_rate[[2, 3, 4]], [7 / 9, 7 / 12, 2 / 3])
    batch = {"song_idx": torch.tensor([2, 4]), "user_idx": torch.tensor([3, 4])}
    out = model.score_batch(batch)
    np.testing.assert_allclose(out["scores"].numpy(), [(logit(5 / 9) + logit(7 / 12)) / 2, logit(2 / 3)])
    torch.testing.assert_close(out["probs"], torch.sigmoid(out["scores"]))
    assert out["loss"] is None
    naive = TargetRate(6, 5, song_smoothing=1, user_smoothing=2, combine="sum").fit(songs, users, target)
    np.testing.assert_allclose(naive.logits([2], [3]), [logit(5 / 9) + logit(7 / 12) - logit(2 / 3)])
    alone = TargetRate(6, 5, song_smoothing=1, combine="song").fit(songs, users, target)
    np.testing.assert_allclose(alone.logits([3, 3], [2, 3]), [logit(5 / 6)] * 2)


@unit
def test_target_rate_orders_rows_where_play_counts_do_not():
    # the most played song is the least re-listened: popularity ranks it first (AUC < 0.5), the rate last
    songs = np.array([2] * 6 + [3] * 3)
    users = np.array([2, 3] * 4 + [2])
    target = np.array([0, 0, 0, 0, 0, 1] + [1, 1, 0])
    rate = TargetRate(5, 4, song_smoothing=1, user_smoothing=100).fit(songs, users, target)
    auc_rate = binary_metrics(target, rate.logits(songs, users))["auc"]
    auc_pop = binary_metrics(target, MostPopular(5).fit(songs, target).score_rows(songs))["auc"]
    assert auc_pop < 0.5 < auc_rate


@unit
def test_target_rate_errors():
    with pytest.raises(ConfigError, match="model.combine"):
        TargetRate(5, 5, combine="max")
    with pytest.raises(ConfigError, match="model.user_smoothing"):
        TargetRate(5, 5, user_smoothing=0)
    with pytest.raises(ValueError, match="target has nulls"):
        TargetRate(5, 5).fit([2], [2], [np.nan])
    with pytest.raises(ValueError, match="user_idx out of range"):
        TargetRate(5, 5).fit([2], [5], [1])


# ---------------------------------------------------------------------------------------------------------------
# LightGBM
# ---------------------------------------------------------------------------------------------------------------
TOY_FEATURES = {"categorical": {"song_idx": "song", "user_idx": "user"}, "multi_valued": {"genre_idx": "genre"},
                "numeric": ["x", "z"]}


def toy_batches(n, seed, batch_size=100):
    """Rows whose target is 1 exactly when the song index is even and x > 0 (a categorical and a numeric split)."""
    rng = np.random.default_rng(seed)
    song = rng.integers(2, 12, size=n)
    numeric = rng.normal(size=(n, 2)).astype(np.float32)
    target = ((song % 2 == 0) & (numeric[:, 0] > 0)).astype(np.float32)
    genre = np.zeros((n, 3), np.int64)
    genre[:, 0] = rng.integers(2, 5, size=n)
    user = rng.integers(2, 9, size=n)
    for start in range(0, n, batch_size):
        part = slice(start, start + batch_size)
        yield {"song_idx": torch.from_numpy(song[part]), "user_idx": torch.from_numpy(user[part]),
               "genre_idx": torch.from_numpy(genre[part]), "numeric": torch.from_numpy(numeric[part]),
               "target": torch.from_numpy(target[part])}


@unit
def test_lightgbm_row_features_by_hand():
    batch = {"song_idx": torch.tensor([5, 6]), "user_idx": torch.tensor([2, 3]),
             "genre_idx": torch.tensor([[3, 4, 0], [7, 0, 0]]), "numeric": torch.tensor([[0.5, 1.0], [-1.0, 2.0]])}
    names, categorical = gbdt.feature_names(TOY_FEATURES)
    assert names == ["song_idx", "user_idx", "genre_idx", "genre_idx_count", "x", "z"]
    assert categorical == ["song_idx", "user_idx", "genre_idx"]
    np.testing.assert_array_equal(gbdt.row_features(batch, TOY_FEATURES),
                                  [[5, 2, 3, 2, 0.5, 1.0], [6, 3, 7, 1, -1.0, 2.0]])


@unit
def test_lightgbm_learns_a_separable_toy_set():
    config = typed(gbdt.LightGBMConfig, {"num_leaves": 8, "min_data_in_leaf": 5, "num_threads": 1, "log_every": 0,
                                         "num_boost_round": 200, "early_stopping_rounds": 10}, "model")
    model = gbdt.LightGBM(TOY_FEATURES, config, seed=1).fit(toy_batches(2000, 0), toy_batches(500, 1))
    assert 1 <= model.best_iteration < 200  # early stopping kept fewer trees than the most
    test = list(toy_batches(500, 2))
    y = torch.cat([b["target"] for b in test])
    outs = [model.score_batch(b) for b in test]
    scores, probs = torch.cat([o["scores"] for o in outs]), torch.cat([o["probs"] for o in outs])
    assert binary_metrics(y, scores, from_logits=True)["auc"] > 0.98  # chance is 0.5
    p = float(y.mean())
    base_rate = -(p * math.log(p) + (1 - p) * math.log(1 - p))  # the log loss of the constant prediction
    assert binary_metrics(y, probs, from_logits=False)["logloss"] < base_rate
    again = gbdt.LightGBM(TOY_FEATURES, config, seed=1).fit(toy_batches(2000, 0), toy_batches(500, 1))
    torch.testing.assert_close(again.score_batch(test[0])["scores"], outs[0]["scores"])  # deterministic for a seed
    # without early stopping every tree is kept, and the probabilities sharpen
    all_trees = dataclasses.replace(config, num_boost_round=60, early_stopping_rounds=0)
    full = gbdt.LightGBM(TOY_FEATURES, all_trees, seed=1).fit(toy_batches(2000, 0), toy_batches(500, 1))
    assert full.best_iteration == 60
    probs = torch.cat([full.score_batch(b)["probs"] for b in test])
    assert binary_metrics(y, probs, from_logits=False)["logloss"] < 0.1


@unit
def test_lightgbm_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="model.num_leaves"):
        typed(gbdt.LightGBMConfig, {"num_leaves": 1}, "model")
    with pytest.raises(ConfigError, match="unknown key model.trees"):
        typed(gbdt.LightGBMConfig, {"trees": 5}, "model")
    with pytest.raises(ValueError, match="no labelled rows"):
        gbdt.LightGBM(TOY_FEATURES, gbdt.LightGBMConfig()).fit(
            [{**b, "target": torch.full_like(b["target"], float("nan"))} for b in toy_batches(10, 0)])


# ---------------------------------------------------------------------------------------------------------------
# jobs/train.py --model sknn | rate | lightgbm on the fake feature outputs: one MLflow run each
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def train_job():
    spec = importlib.util.spec_from_file_location("job_train", REPO / "jobs" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.e2e
@pytest.mark.parametrize("dataset, model, extra", [
    ("lastfm", "sknn", []),
    ("kkbox", "rate", []),
    ("kkbox", "lightgbm", ["model.num_leaves=4", "model.min_data_in_leaf=5", "model.num_threads=1"]),
])
def test_train_cli_fits_evaluates_and_logs_one_run(dataset, model, extra, train_job, kkbox_dir, lastfm_dir, tracking,
                                                   tmp_path, capsys):
    data = {"kkbox": kkbox_dir, "lastfm": lastfm_dir}[dataset]  # conftest.py's fake feature outputs
    args = ["--model", model, "--data", str(data), "--run-dir", str(tmp_path / "run"), "--tracking-uri", tracking]
    for item in extra:
        args += ["--set", item]
    assert train_job.main(args) == 0
    out = capsys.readouterr().out
    assert out.count("resolved config:") == 1 and f"done: model={model}" in out
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(f"musicrec-{dataset}")
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.model = '{model}'")
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    if dataset == "kkbox":
        assert 0 <= metrics["best_valid_auc"] <= 1 and metrics["best_valid_logloss"] > 0
        assert metrics["best_valid_examples"] == 60  # the last 20% of the 300 fake training rows
    else:
        assert 0 <= metrics["test_hr_at_10"] <= 1 and metrics["test_examples"] > 0
    assert [a.path for a in client.list_artifacts(run.info.run_id, "baseline")] == [f"baseline/{model}.pkl"]
    if model == "lightgbm":
        assert int(run.data.params["model.best_iteration"]) >= 1 and run.data.params["model.num_leaves"] == "4"


@pytest.mark.e2e
def test_train_cli_bad_baseline_value_is_one_line(train_job, lastfm_dir, capsys):
    argv = ["--model", "sknn", "--data", str(lastfm_dir), "--set", "model.weighting=exp",
            "--tracking-uri", "none"]
    assert train_job.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train.py: error: model section of the sknn config: model.weighting")
    assert "div, same, linear, log, quadratic" in err[0]


@pytest.mark.e2e
def test_train_cli_max_steps_bounds_the_lightgbm_trees(train_job, kkbox_dir, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = ["--model", "lightgbm", "--data", str(kkbox_dir), "--max-steps", "3", "--tracking-uri", uri,
            "--set", "model.num_leaves=4", "--set", "model.min_data_in_leaf=5", "--set", "model.early_stopping_rounds=0"]
    assert train_job.main(argv) == 0
    assert "train.max_steps=3: LightGBM trains at most 3 trees" in capsys.readouterr().out
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("musicrec-kkbox").experiment_id])
    assert run.data.params["model.num_boost_round"] == "3" and int(run.data.params["model.best_iteration"]) <= 3
