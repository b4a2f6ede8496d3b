"""Bounded evaluation: ranks counted chunk by chunk equal the ranks on the full (B, V) scores (the GRU and both
baselines), the GRU's evaluation never computes its full output, and ``eval.max_examples`` keeps a fixed sample of the
asked size, the same for every model, seed and number of shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicrec.baselines import CoOccurrence, MostPopular
from musicrec.config import ConfigError, typed
from musicrec.data import Data, DataConfig
from musicrec.data.sample import EvalSample
from musicrec.metrics import chunked_target_ranks, mask_special, ranking_metrics, target_ranks
from musicrec.models import build_model
from musicrec.train.evaluate import AUTO_CPU_MAX_EXAMPLES, BaselineScorer, EvalConfig, ModelScorer, evaluate

pytestmark = pytest.mark.unit

V = 37
MANIFEST = {"dataset": "lastfm", "vocab_sizes": {"user": 5, "song": V, "tag": 8},
            "features": {"categorical": {"user_idx": "user"}, "multi_valued": {"songs": "song", "song_tags": "tag"},
                         "numeric": [], "target": None}, "top_k_tags": 3}
GRU = {"song_dim": 8, "tag_dim": 4, "hidden": 8, "attention_dim": 6, "dropout": 0.0}


def prefixes(B: int, T: int, seed: int, with_special: bool = True) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    valid = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
    songs = torch.randint(2, V, (B, T), generator=gen).masked_fill(~valid, 0)
    tags = torch.randint(0, 8, (B, T, 3), generator=gen).masked_fill(~valid.unsqueeze(-1), 0)
    target = torch.randint(0 if with_special else 2, V, (B,), generator=gen)  # padding / OOV targets included
    return {"songs": songs, "song_tags": tags, "lengths": lengths, "next_song": target}


# ---------------------------------------------------------------------------------------------------------------
# chunked ranks == ranks on the masked full scores
# ---------------------------------------------------------------------------------------------------------------
def test_chunked_ranks_equal_full_ranks_with_ties_and_special_targets():
    gen = torch.Generator().manual_seed(0)
    for trial in range(20):
        scores = torch.randint(0, 4, (6, V), generator=gen).float() if trial % 2 else torch.randn(6, V, generator=gen)
        targets = torch.randint(0, V, (6,), generator=gen)
        targets[:2] = torch.tensor([0, 1])  # padding and OOV targets
        full = target_ranks(mask_special(scores), targets)
        assert full[:2].tolist() == [V - 1, V - 1], "a padding / OOV target ranks behind every real song"
        for chunk in (1, 3, 16, V, 4 * V):
            ranks, lse = chunked_target_ranks(lambda songs: scores[:, songs], scores[torch.arange(6), targets], targets,
                                              V, chunk, logsumexp=True)
            assert torch.equal(ranks, full), (trial, chunk)
            torch.testing.assert_close(lse, torch.logsumexp(scores, dim=1))


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_gru_chunked_evaluation_equals_the_full_scores_and_never_computes_them(chunk):
    torch.manual_seed(0)
    model = build_model("gru", MANIFEST, GRU).eval()
    batch = prefixes(9, 5, seed=1)
    with torch.no_grad():
        logits = model(batch)  # (B, V), the reference
        expected_ranks = target_ranks(mask_special(logits), batch["next_song"])
        expected_loss = model.loss(batch, logits)

    def refuse(*args, **kwargs):
        raise AssertionError("evaluation computed the full (B, V) output")

    model.forward = refuse
    model.out.forward = refuse  # logits(h, None) is the full projection
    with torch.no_grad():
        out = ModelScorer(model, "next_song", chunk_size=chunk)(batch)
    assert torch.equal(out["ranks"], expected_ranks)
    torch.testing.assert_close(out["loss"], expected_loss)
    metrics = evaluate(ModelScorer(model, "next_song", chunk_size=chunk), [batch], "next_song", ks=(1, 10))
    assert metrics["examples"] == 9 and metrics["hr@10"] == ranking_metrics(expected_ranks, (10,))["hr@10"]


def test_baselines_count_the_same_ranks_as_their_full_scores():
    rng = np.random.default_rng(3)
    sessions = [rng.integers(0, V, size=int(rng.integers(1, 9))) for _ in range(60)]  # padding / OOV included
    baselines = [MostPopular(V).fit_sessions(sessions), CoOccurrence(V).fit(sessions),
                 CoOccurrence(V, window=2, history=3, history_decay=1.0, normalize=False).fit(sessions),
                 CoOccurrence(V, popularity_weight=0.0).fit(sessions)]
    for seed in range(5):
        batch = prefixes(11, 4, seed)
        for baseline in baselines:
            full = target_ranks(baseline.score(batch), batch["next_song"])
            assert torch.equal(baseline.target_ranks(batch, batch["next_song"]), full), (seed, type(baseline))
            assert torch.equal(BaselineScorer(baseline, "next_song")(batch)["ranks"], full)
    candidates = torch.from_numpy(rng.integers(2, V, size=(4, 6)))
    pop = baselines[0]
    torch.testing.assert_close(pop.score_candidates(candidates), pop.score({"x": candidates}).gather(1, candidates))


# ---------------------------------------------------------------------------------------------------------------
# eval.max_examples: the config and the fixed sample
# ---------------------------------------------------------------------------------------------------------------
def test_eval_config_values_and_auto():
    assert typed(EvalConfig, {}, "eval").max_examples == "auto"
    assert typed(EvalConfig, {"max_examples": 500}, "eval").examples_for("next_song", "cpu") == 500
    auto = EvalConfig()
    assert auto.examples_for("next_song", "cpu") == AUTO_CPU_MAX_EXAMPLES["next_song"] > 0
    assert auto.examples_for("next_song", torch.device("cuda")) == 0, "auto evaluates everything on a GPU"
    for bad in (-1, "all", 1.5):
        with pytest.raises(ConfigError, match="eval.max_examples"):
            typed(EvalConfig, {"max_examples": bad}, "eval")


def test_sample_has_the_asked_size_and_splits_exactly_over_shards():
    rng = np.random.default_rng(0)
    keys = (rng.permutation(5000).astype(np.int64), rng.integers(0, 3, 5000))
    sample = EvalSample.choose(keys, 700)
    chosen = sample.selected(keys)
    assert chosen.sum() == 700
    parts = [sample.selected(tuple(k[i::3] for k in keys)).sum() for i in range(3)]
    assert sum(parts) == 700, "each shard keeps exactly its share"
    assert EvalSample.choose(keys, 0) is None and EvalSample.choose(keys, 5000) is None
    reordered = EvalSample.choose(tuple(k[::-1] for k in keys), 700)
    assert np.array_equal(reordered.selected(keys), chosen), "the sample does not depend on the order of the rows"


def _examples(loader, *cols):
    return sorted(zip(*[np.concatenate([b[c].numpy() for b in loader]).tolist() for c in cols]))


def test_eval_sample_is_the_same_for_every_seed_shard_and_view(lastfm_dir, kkbox_dir):
    small = DataConfig(eval_batch_size=7)
    data = Data(lastfm_dir, "next_song", small, seed=0)
    everything = _examples(data.eval_loader("valid"), "session_id", "lengths")
    assert len(everything) > 40
    sample = _examples(data.eval_loader("valid", max_examples=40), "session_id", "lengths")
    assert len(sample) == 40 and set(sample) <= set(everything)
    assert _examples(Data(lastfm_dir, "next_song", small, seed=9).eval_loader("valid", max_examples=40),
                     "session_id", "lengths") == sample, "the run's seed does not change the sample"
    shards = [Data(lastfm_dir, "next_song", small, seed=5, cur_shard=r, shard_count=2).eval_loader("valid", 40)
              for r in (0, 1)]
    both = _examples(shards[0], "session_id", "lengths") + _examples(shards[1], "session_id", "lengths")
    assert sorted(both) == sample, "the shards share out the same sample"
    assert _examples(data.eval_loader("valid", max_examples=10 ** 6), "session_id", "lengths") == everything

    users = _examples(data.loo_loader("valid", max_examples=5), "user_idx")
    assert len(users) == 5
    ncf = Data(lastfm_dir, "ncf", small, seed=3)
    assert _examples(ncf.eval_loader("valid", max_examples=5), "user_idx") == users, "NCF and popularity: the same users"

    rows = Data(kkbox_dir, "rows", small)
    assert len(_examples(rows.eval_loader("valid", max_examples=33), "row_id")) == 33
