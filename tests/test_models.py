"""The PyTorch models on tiny random batches: shapes, gradients, overfitting, padding, configs and NeuMF pretraining."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from musicrec.config import ConfigError
from musicrec.metrics import mask_special
from musicrec.models import MODEL_CONFIGS, build_model, make_config, model_from_config
from musicrec.models.dnn import masked_mean_embedding
from musicrec.models.ncf import NeuMF

pytestmark = pytest.mark.unit

KKBOX_MANIFEST = {
    "dataset": "kkbox",
    "vocab_sizes": {"user": 7, "song": 11, "source_type": 5, "genre": 6, "person": 9},
    "features": {
        "categorical": {"user_idx": "user", "song_idx": "song", "source_type_idx": "source_type"},
        "multi_valued": {"genre_idx": "genre", "artist_idx": "person", "composer_idx": "person"},
        "numeric": ["song_length", "age"],
        "target": "target",
    },
}

LASTFM_MANIFEST = {
    "dataset": "lastfm",
    "vocab_sizes": {"user": 5, "song": 30, "artist": 10, "tag": 8},
    "features": {"categorical": {"user_idx": "user"}, "multi_valued": {"songs": "song", "song_tags": "tag"}, "numeric": [], "target": None},
    "top_k_tags": 3,
}

BINARY_MODELS = ("dnn", "logreg", "ncf")
SMALL = {
    "dnn": {"embedding_dim": 4, "hidden": [16, 8], "dropout": 0.0},
    "logreg": {},
    "ncf": {"factors": 4, "mlp_layers": [8, 8, 4]},
    "gru": {"song_dim": 8, "tag_dim": 4, "hidden": 8, "attention_dim": 6, "dropout": 0.0},
}


def kkbox_batch(B: int, gen: torch.Generator, L: int = 3) -> dict[str, torch.Tensor]:
    """Random KKBOX rows; the target depends on the song only, so every model can fit it."""
    sizes = KKBOX_MANIFEST["vocab_sizes"]
    feats = KKBOX_MANIFEST["features"]
    batch = {col: torch.randint(1, sizes[v], (B,), generator=gen) for col, v in feats["categorical"].items()}
    for col, vocab in feats["multi_valued"].items():
        idx = torch.randint(1, sizes[vocab], (B, L), generator=gen)  # (B, L)
        n_valid = torch.randint(1, L + 1, (B,), generator=gen)  # (B,) never empty, like the feature job
        batch[col] = idx.masked_fill(torch.arange(L).unsqueeze(0) >= n_valid.unsqueeze(1), 0)
    batch["numeric"] = torch.randn(B, len(feats["numeric"]), generator=gen)
    batch["target"] = (batch["song_idx"] % 2 == 0).float()
    return batch


def session_batch(B: int, T: int, gen: torch.Generator, K: int = 3) -> dict[str, torch.Tensor]:
    """Random session prefixes; next_song is a fixed function of the last song, so the GRU can fit it."""
    V, n_tags = LASTFM_MANIFEST["vocab_sizes"]["song"], LASTFM_MANIFEST["vocab_sizes"]["tag"]
    lengths = torch.randint(1, T + 1, (B,), generator=gen)  # (B,)
    valid = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
    songs = torch.randint(2, V, (B, T), generator=gen).masked_fill(~valid, 0)  # (B, T)
    tags = torch.randint(0, n_tags, (B, T, K), generator=gen).masked_fill(~valid.unsqueeze(-1), 0)  # (B, T, K)
    last = songs.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)  # (B,)
    return {
        "songs": songs,
        "song_tags": tags,
        "lengths": lengths,
        "next_song": (last * 7) % (V - 2) + 2,
        "user_idx": torch.randint(2, 5, (B,), generator=gen),
    }


def overfit(model: torch.nn.Module, batch: dict, steps: int = 100, lr: float = 0.03) -> tuple[float, float]:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    first = last = None
    for _ in range(steps):
        opt.zero_grad()
        loss = model.training_loss(batch)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
    return first, last


@pytest.mark.parametrize("name", BINARY_MODELS)
def test_binary_model_forward_backward(name):
    gen = torch.Generator().manual_seed(0)
    model = build_model(name, KKBOX_MANIFEST, SMALL[name])
    assert isinstance(model.config, MODEL_CONFIGS[name])
    batch = kkbox_batch(5, gen)
    logits = model(batch)
    assert logits.shape == (5,)
    assert torch.isfinite(logits).all()
    loss = model.loss(batch, logits)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(g is None or torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", BINARY_MODELS)
def test_binary_model_overfits_32_rows(name):
    torch.manual_seed(0)
    model = build_model(name, KKBOX_MANIFEST, SMALL[name])
    batch = kkbox_batch(32, torch.Generator().manual_seed(1))
    first, last = overfit(model, batch)
    assert last < 0.5 * first, (first, last)


@pytest.mark.parametrize("name", ["dnn", "logreg"])
def test_more_padding_gives_the_same_output(name):
    torch.manual_seed(0)
    model = build_model(name, KKBOX_MANIFEST, SMALL[name]).eval()
    batch = kkbox_batch(6, torch.Generator().manual_seed(2), L=3)
    padded = dict(batch)
    for col in KKBOX_MANIFEST["features"]["multi_valued"]:
        padded[col] = torch.cat([batch[col], torch.zeros(6, 4, dtype=torch.long)], dim=1)  # (B, L + 4)
    with torch.no_grad():
        torch.testing.assert_close(model(batch), model(padded))


def test_dnn_mean_excludes_padding():
    model = build_model("dnn", KKBOX_MANIFEST, {"embedding_dim": 3, "share_embeddings": False}).eval()
    table = model.embeddings.tables[model.embeddings.table_of["genre_idx"]]
    batch = {"genre_idx": torch.tensor([[2, 4, 0, 0]])}
    field = model.embeddings.multi_valued.index("genre_idx")
    got = model.embeddings({**kkbox_batch(1, torch.Generator().manual_seed(0)), **batch})[0, len(model.embeddings.categorical) + field]
    torch.testing.assert_close(got, (table.weight[2] + table.weight[4]) / 2)


def test_dnn_shares_tables_by_vocab():
    shared = build_model("dnn", KKBOX_MANIFEST, {"embedding_dim": 3})
    separate = build_model("dnn", KKBOX_MANIFEST, {"embedding_dim": 3, "share_embeddings": False})
    assert shared.embeddings.table_of["artist_idx"] == shared.embeddings.table_of["composer_idx"]
    assert len(shared.embeddings.tables) == 5  # user, song, source_type, genre, person
    assert len(separate.embeddings.tables) == 6


def test_dnn_batch_norm_and_logreg_starts_at_half():
    batch = kkbox_batch(4, torch.Generator().manual_seed(0))
    dnn = build_model("dnn", KKBOX_MANIFEST, {"batch_norm": True, "hidden": [8]})
    assert dnn(batch).shape == (4,)
    logreg = build_model("logreg", KKBOX_MANIFEST, {})
    torch.testing.assert_close(torch.sigmoid(logreg(batch)), torch.full((4,), 0.5))


def test_gru_forward_backward_and_masked_scores():
    torch.manual_seed(0)
    V = LASTFM_MANIFEST["vocab_sizes"]["song"]
    model = build_model("gru", LASTFM_MANIFEST, SMALL["gru"])
    batch = session_batch(5, 6, torch.Generator().manual_seed(0))
    logits = model(batch)
    assert logits.shape == (5, V)
    assert torch.isfinite(logits).all()
    loss = model.loss(batch, logits)
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.song_emb.weight.grad[0].abs().sum() == 0  # padding row gets no gradient
    with torch.no_grad():
        scores = mask_special(model.eval()(batch))  # what ranking evaluation does
    assert scores.shape == (5, V) and not scores.requires_grad
    assert torch.isneginf(scores[:, :2]).all() and torch.isfinite(scores[:, 2:]).all()
    assert torch.isneginf(mask_special(logits.detach())[:, 1]).all()


def test_gru_overfits_32_sessions():
    torch.manual_seed(0)
    model = build_model("gru", LASTFM_MANIFEST, SMALL["gru"])
    batch = session_batch(32, 5, torch.Generator().manual_seed(3))
    first, last = overfit(model, batch, steps=100, lr=0.02)
    assert last < 0.5 * first, (first, last)


def test_gru_padding_and_junk_past_length_do_not_change_output():
    torch.manual_seed(0)
    model = build_model("gru", LASTFM_MANIFEST, SMALL["gru"]).eval()
    batch = session_batch(6, 4, torch.Generator().manual_seed(4))
    more = dict(batch)
    more["songs"] = torch.cat([batch["songs"], torch.zeros(6, 3, dtype=torch.long)], dim=1)  # (B, T + 3)
    tags = torch.cat([batch["song_tags"], torch.zeros(6, 3, 3, dtype=torch.long)], dim=1)  # (B, T + 3, K)
    more["song_tags"] = torch.cat([tags, torch.zeros(6, 7, 2, dtype=torch.long)], dim=2)  # (B, T + 3, K + 2)
    junk = dict(batch)
    past = torch.arange(4).unsqueeze(0) >= batch["lengths"].unsqueeze(1)  # (B, T)
    junk["songs"] = torch.where(past, torch.full_like(batch["songs"], 9), batch["songs"])
    junk["song_tags"] = torch.where(past.unsqueeze(-1), torch.full_like(batch["song_tags"], 5), batch["song_tags"])
    with torch.no_grad():
        base = model(batch)
        torch.testing.assert_close(model(more), base)
        torch.testing.assert_close(model(junk), base)


def test_gru_last_step_is_the_output_at_each_rows_last_valid_step():
    torch.manual_seed(0)
    model = build_model("gru", LASTFM_MANIFEST, {**SMALL["gru"], "dropout": 0.0}).eval()
    H = model.config.hidden
    batch = session_batch(5, 6, torch.Generator().manual_seed(7))
    with torch.no_grad():
        encoded = model.encode(batch)  # (B, 4H): attention pool, then the last step
        x = torch.cat([model.song_emb(batch["songs"]), masked_mean_embedding(model.tag_emb, batch["song_tags"])], -1)
        out = model.bigru(x, batch["lengths"])  # (B, T, 2H)
    assert encoded.shape == (5, 4 * H)
    for b, length in enumerate(batch["lengths"].tolist()):
        torch.testing.assert_close(encoded[b, 2 * H:], out[b, length - 1])
    plain = build_model("gru", LASTFM_MANIFEST, {**SMALL["gru"], "last_step": False})
    assert plain.out.in_features == 2 * H and plain(batch).shape == model(batch).shape


def test_gru_without_tags():
    model = build_model("gru", {"vocab_sizes": {"song": 12}}, {**SMALL["gru"], "tag_dim": 0})
    batch = session_batch(3, 4, torch.Generator().manual_seed(5))
    batch["songs"] = batch["songs"].clamp(max=11)
    batch.pop("song_tags")
    assert model(batch).shape == (3, 12)


def _sampled_reference(model, batch, neg, in_batch):
    """The sampled-softmax loss written out from the FULL logits: candidates [target, negatives (+ the batch's
    targets)], each logit minus log of its expected count, negatives equal to the row's target dropped."""
    logits = model(batch)  # (B, V)
    target = batch["next_song"]
    B, S, V = len(target), len(neg), model.n_songs
    if model.config.sampler == "uniform":
        q = torch.full((V,), 1.0 / (V - 2))
    else:
        q = torch.exp(model.sampling_log_q)
    count = (S + (B if in_batch else 0)) * q  # (V,)
    cand = torch.cat([target, neg]) if in_batch else neg
    losses = []
    for i in range(B):
        keep = cand[cand != target[i]]
        row = torch.cat([logits[i, target[i]].view(1) - count[target[i]].log(), logits[i, keep] - count[keep].log()])
        losses.append(-torch.log_softmax(row, 0)[0])
    return torch.stack(losses).mean()


@pytest.mark.parametrize("sampler,in_batch", [("uniform", False), ("popularity", False), ("popularity", True)])
def test_gru_sampled_softmax_matches_its_definition(sampler, in_batch):
    torch.manual_seed(0)
    config = {**SMALL["gru"], "sampled_softmax": 6, "sampler": sampler, "in_batch_negatives": in_batch}
    model = build_model("gru", LASTFM_MANIFEST, config).train()
    model.set_sampling_counts(torch.arange(30.0) % 7)  # skewed, some songs never drawn (q = 0: the rarest q)
    batch = session_batch(8, 5, torch.Generator().manual_seed(6))
    batch["next_song"][:3] = 4  # repeated targets: in-batch accidental hits
    torch.manual_seed(1)
    loss = model.training_loss(batch)
    torch.manual_seed(1)
    neg = model._sample(6, torch.device("cpu"))
    torch.testing.assert_close(loss, _sampled_reference(model, batch, neg, in_batch))
    loss.backward()
    assert torch.isfinite(model.out.weight.grad).all()
    model.eval()  # evaluation losses are always the full softmax
    torch.testing.assert_close(model.loss(batch, model(batch)), F.cross_entropy(model(batch), batch["next_song"]))


def test_gru_sampled_softmax_removes_accidental_hits():
    """Every negative is the target (all counts on song 5): only the target's column is left, so the loss is 0."""
    model = build_model("gru", LASTFM_MANIFEST, {**SMALL["gru"], "sampled_softmax": 16, "sampler": "popularity",
                                                 "in_batch_negatives": True}).train()
    counts = torch.zeros(30)
    counts[5] = 3.0
    model.set_sampling_counts(counts)
    batch = session_batch(4, 3, torch.Generator().manual_seed(2))
    batch["next_song"][:] = 5
    assert float(model.training_loss(batch).detach()) == 0.0


def test_gru_log_q_makes_the_sampled_gradient_the_full_softmax_one():
    """With many popularity draws, the log-Q-corrected sampled softmax has the full softmax's gradient on the output
    biases of the songs that are no target in the batch (a target is never its own row's negative, a small, known
    bias); without the correction popular songs get far too much of it."""
    torch.manual_seed(0)
    model = build_model("gru", LASTFM_MANIFEST, {**SMALL["gru"], "sampled_softmax": 100_000, "sampler": "popularity"})
    model.set_sampling_counts(0.85 ** torch.arange(30.0))  # song 2 is drawn 1.4x as often as song 4, ...
    batch = session_batch(8, 4, torch.Generator().manual_seed(3))

    def bias_grad(loss_of):
        model.zero_grad()
        loss_of(batch).backward()
        return model.out.bias.grad.to_dense()

    full = bias_grad(lambda b: F.cross_entropy(model(b), b["next_song"]))  # about 0.04 per song
    corrected = bias_grad(model.training_loss)
    model.sampling_log_q = torch.zeros_like(model.sampling_log_q)  # no correction: q(j) treated as equal
    uncorrected = bias_grad(model.training_loss)
    other = torch.ones(30, dtype=torch.bool)
    other[:2] = other[batch["next_song"]] = False
    assert float((corrected - full)[other].abs().max()) < 0.015  # 0.006-0.008 over seeds 0-2
    assert float((uncorrected - full)[other].abs().max()) > 0.08  # 0.11


def test_gru_sampler_config_errors_and_counts():
    with pytest.raises(ConfigError, match="in_batch_negatives"):
        build_model("gru", LASTFM_MANIFEST, {**SMALL["gru"], "sampled_softmax": 4, "in_batch_negatives": True})
    full = build_model("gru", LASTFM_MANIFEST, {**SMALL["gru"], "sampled_softmax": 0, "in_batch_negatives": True})
    assert full.config.in_batch_negatives  # no sampled softmax: nothing to add the targets to, no error
    model = build_model("gru", LASTFM_MANIFEST, {**SMALL["gru"], "sampled_softmax": 4, "sampler": "popularity"})
    batch = session_batch(4, 3, torch.Generator().manual_seed(7))
    with pytest.raises(RuntimeError, match="set_sampling_counts"):
        model.training_loss(batch)
    model.set_sampling_counts(torch.arange(30, dtype=torch.float32))
    torch.manual_seed(0)
    drawn = model._sample(20_000, torch.device("cpu"))
    assert int(drawn.min()) >= 2, "padding and OOV are never drawn"
    share = torch.bincount(drawn, minlength=30)[2:].double() / len(drawn)
    torch.testing.assert_close(share, torch.arange(2, 30.0, dtype=torch.float64) / sum(range(2, 30)), atol=0.01, rtol=0)
    assert torch.isfinite(model.training_loss(batch))
    assert "sampling_cdf" not in model.state_dict() and "sampling_log_q" not in model.state_dict()


def test_ncf_embedding_l2_adds_the_gathered_rows_squares_and_keeps_gradients_sparse():
    """model.embedding_l2: the training loss is the BCE plus l2 * mean over examples of the squared norms of the
    four rows each example gathers (by hand), and the tables' gradients stay sparse (SparseAdam updates them)."""
    torch.manual_seed(0)
    l2 = 0.5
    model = build_model("ncf", KKBOX_MANIFEST, {**SMALL["ncf"], "sparse": True, "embedding_l2": l2}).train()
    batch = kkbox_batch(5, torch.Generator().manual_seed(3))
    user, song = batch["user_idx"], batch["song_idx"]
    squares = sum(table.weight[idx].pow(2).sum(1) for table, idx in [
        (model.gmf_user, user), (model.gmf_item, song), (model.mlp_user, user), (model.mlp_item, song)])  # (B,)
    expected = model.loss(batch, model(batch)) + l2 * squares.mean()
    loss = model.training_loss(batch)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    for table, idx in [(model.gmf_user, user), (model.mlp_item, song)]:
        assert table.weight.grad.is_sparse
        assert set(table.weight.grad.coalesce().indices()[0].tolist()) == set(idx.tolist())
    plain = build_model("ncf", KKBOX_MANIFEST, {**SMALL["ncf"], "sparse": True})
    plain.load_state_dict(model.state_dict())
    assert float(plain.training_loss(batch)) < float(loss)  # off by default
    with pytest.raises(ConfigError, match="model.embedding_l2"):
        build_model("ncf", KKBOX_MANIFEST, {**SMALL["ncf"], "embedding_l2": -1.0})


@pytest.mark.parametrize("name", ["gru", "ncf", "dnn"])
def test_sparse_step_touches_only_the_batchs_rows(name):
    """One optimizer step with sparse tables changes exactly the rows the batch (and, for the GRU, the sampled
    negatives) used; the other rows and their SparseAdam moments stay as they were."""
    from musicrec.optim import CompositeOptimizer, make_optimizer
    from musicrec.train.config import TrainConfig

    torch.manual_seed(0)
    manifest = LASTFM_MANIFEST if name == "gru" else KKBOX_MANIFEST
    extra = {"sampled_softmax": 5} if name == "gru" else {}
    model = build_model(name, manifest, {**SMALL[name], **extra, "sparse": True}).train()
    optimizer = make_optimizer(model, TrainConfig(lr=0.1))
    assert isinstance(optimizer, CompositeOptimizer)
    gen = torch.Generator().manual_seed(1)
    batch = session_batch(3, 2, gen) if name == "gru" else kkbox_batch(3, gen)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.training_loss(batch).backward()
    sparse = {id(p) for p in model.sparse_parameters()}
    assert sparse and all(p.grad.is_sparse for p in model.parameters() if id(p) in sparse)
    touched = {n: set(p.grad.coalesce().indices()[0].tolist()) for n, p in model.named_parameters() if id(p) in sparse}
    optimizer.step()
    for n, p in model.named_parameters():
        if id(p) not in sparse:
            continue
        changed = set(torch.nonzero((p.detach() != before[n]).reshape(p.shape[0], -1).any(1)).flatten().tolist())
        assert changed <= touched[n], f"{n}: rows {sorted(changed - touched[n])} changed without a gradient"
        assert changed, f"{n}: no row changed"
        assert len(touched[n]) < p.shape[0], f"{n}: the batch touched every row, the test shows nothing"
    if name == "gru":
        rows = set(batch["songs"].flatten().tolist()) - {0}
        assert touched["song_emb.weight"] == rows


def test_neumf_from_pretrained_copies_weights_and_mixes_predictions():
    torch.manual_seed(0)
    gmf = build_model("ncf", KKBOX_MANIFEST, {**SMALL["ncf"], "variant": "gmf"})
    mlp = build_model("ncf", KKBOX_MANIFEST, {**SMALL["ncf"], "variant": "mlp", "factors": 99})
    batch = kkbox_batch(8, torch.Generator().manual_seed(8))
    overfit(gmf, batch, steps=5)
    overfit(mlp, batch, steps=5)
    gmf.eval(), mlp.eval()
    model = NeuMF.from_pretrained(gmf, mlp, alpha=0.3).eval()
    assert model.config.variant == "neumf" and model.config.factors == 4
    torch.testing.assert_close(model.gmf_user.weight, gmf.gmf_user.weight)
    torch.testing.assert_close(model.gmf_item.weight, gmf.gmf_item.weight)
    torch.testing.assert_close(model.mlp_item.weight, mlp.mlp_item.weight)
    for mine, theirs in zip(model.mlp.parameters(), mlp.mlp.parameters()):
        torch.testing.assert_close(mine, theirs)
    with torch.no_grad():
        torch.testing.assert_close(model(batch), 0.3 * gmf(batch) + 0.7 * mlp(batch))
        model.gmf_user.weight.add_(1.0)  # a copy, not an alias
    assert not torch.equal(model.gmf_user.weight, gmf.gmf_user.weight)
    with pytest.raises(AssertionError, match="GMF"):
        NeuMF.from_pretrained(mlp, mlp)


def test_config_round_trip_for_checkpoints():
    for name, manifest in [("ncf", KKBOX_MANIFEST), ("dnn", KKBOX_MANIFEST), ("logreg", KKBOX_MANIFEST), ("gru", LASTFM_MANIFEST)]:
        model = build_model(name, manifest, SMALL[name])
        stored = dataclasses.asdict(model.config)
        again = model_from_config(name, manifest, stored)
        assert again.config == model.config
        again.load_state_dict(model.state_dict())


def test_config_defaults_and_name_key():
    assert make_config("gru", None) == MODEL_CONFIGS["gru"]()
    assert make_config("ncf", {"name": "ncf", "mlp_layers": [32, 16]}).mlp_layers == (32, 16)
    assert make_config("dnn", {"dropout": 0}).dropout == 0.0
    with pytest.raises(ValueError, match="'gru'"):
        make_config("ncf", {"name": "gru"})


def test_build_model_errors():
    with pytest.raises(ValueError, match="hiden"):
        build_model("dnn", KKBOX_MANIFEST, {"hiden": [8]})
    with pytest.raises(ValueError, match="unknown model"):
        build_model("transformer", KKBOX_MANIFEST, {})
    with pytest.raises(ValueError, match="dropout"):
        build_model("dnn", KKBOX_MANIFEST, {"dropout": "high"})
    no_person = {**KKBOX_MANIFEST, "vocab_sizes": {k: v for k, v in KKBOX_MANIFEST["vocab_sizes"].items() if k != "person"}}
    with pytest.raises(ValueError, match="'person'"):
        build_model("dnn", no_person, {})
    with pytest.raises(ValueError, match="'tag'"):
        build_model("gru", {"vocab_sizes": {"song": 10}}, {})
    with pytest.raises(ValueError, match="'user'"):
        build_model("ncf", {"vocab_sizes": {"song": 10}}, {})
    with pytest.raises(ValueError, match="features"):
        build_model("logreg", {"vocab_sizes": {"song": 10}}, {})
    with pytest.raises(ConfigError, match="variant"):
        build_model("ncf", KKBOX_MANIFEST, {"variant": "deep"})


def test_neumf_score_candidates_matches_forward():
    torch.manual_seed(0)
    model = build_model("ncf", KKBOX_MANIFEST, SMALL["ncf"]).eval()
    users = torch.tensor([2, 5])
    candidates = torch.tensor([[3, 4, 9], [2, 2, 10]])  # (B, 1 + N)
    with torch.no_grad():
        scores = model.score_candidates(users, candidates)
        assert scores.shape == (2, 3)
        one = model({"user_idx": torch.tensor([5]), "song_idx": torch.tensor([10])})
    torch.testing.assert_close(scores[1, 2:], one)


def test_gru_training_never_computes_the_full_output_at_a_large_vocabulary():
    """The loop's training step of a GRU with sampled softmax at 2M songs: the full output projection (a (B, V) score
    matrix, 512 MiB for this batch) and ``forward`` are never called, and a step touches only sampled rows."""
    from musicrec.optim import make_optimizer
    from musicrec.train.config import TrainConfig
    from musicrec.train.loop import StepSetup, train_one_epoch

    V = 2_000_000
    manifest = {**LASTFM_MANIFEST, "vocab_sizes": {**LASTFM_MANIFEST["vocab_sizes"], "song": V}}
    model = build_model("gru", manifest, {**SMALL["gru"], "song_dim": 4, "hidden": 4, "sampled_softmax": 64,
                                          "sampler": "uniform", "in_batch_negatives": False, "sparse": True})

    def refuse(*_args, **_kwargs):
        raise AssertionError("the training step computed the full (B, V) output")

    model.out.forward = refuse
    model.forward = refuse
    gen = torch.Generator().manual_seed(3)
    batches = []
    for _ in range(3):
        batch = session_batch(64, 5, gen)
        batch["next_song"] = torch.randint(2, V, (64,), generator=gen)
        batches.append(batch)
    optimizer = make_optimizer(model, TrainConfig(lr=0.01))
    out_before = model.out.weight.detach().clone()
    record, steps = train_one_epoch(model, optimizer, batches, StepSetup.for_device(torch.device("cpu"), False, None))
    assert steps == 3 and math.isfinite(record["train_loss"])
    changed = int((model.out.weight.detach() != out_before).any(1).sum())
    assert 0 < changed <= 3 * (64 + 64), f"{changed} output rows changed: the step was not sampled"
