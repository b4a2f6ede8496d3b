"""The training loop on tiny generated data: it learns, evaluates each protocol, stops early, clips (sparse gradients
too), runs under AMP (a GradScaler over the composite optimizer too), stops at ``train.max_steps``, and a run killed
after one epoch and resumed reaches exactly the weights of an uninterrupted run (dense Adam, and the GRU with the
sampled softmax and sparse tables: SparseAdam next to Adam)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from musicrec.checkpoint import CheckpointError, Checkpointer, load
from musicrec.config import ConfigError, typed
from musicrec.data import Data, DataConfig, manifest_fingerprint
from musicrec.distributed import SingleProcess, get_backend
from musicrec.seeding import derive_seed, seed_everything
from musicrec.train import TrainConfig, evaluate, fit
from musicrec.train.loop import _steps_in_sync, set_epoch_lr
import fakedata

pytestmark = pytest.mark.unit


@dataclass
class TinyConfig:
    dim: int = 8
    dropout: float = 0.2


class TinyBinary(nn.Module):
    """user . song + source bias + linear(numeric): enough for the fake KKBOX target."""

    def __init__(self, manifest, config: TinyConfig):
        super().__init__()
        self.config = config
        sizes = manifest["vocab_sizes"]
        self.user = nn.Embedding(sizes["user"], config.dim)
        self.song = nn.Embedding(sizes["song"], config.dim)
        self.source = nn.Embedding(sizes["source_type"], 1)
        self.numeric = nn.Linear(len(manifest["features"]["numeric"]), 1)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, batch):
        dot = (self.drop(self.user(batch["user_idx"])) * self.song(batch["song_idx"])).sum(-1)  # (B,)
        return dot + self.source(batch["source_type_idx"]).squeeze(-1) + self.numeric(batch["numeric"]).squeeze(-1)

    def loss(self, batch, logits):
        return F.binary_cross_entropy_with_logits(logits, batch["target"])

    def training_loss(self, batch):
        return self.loss(batch, self(batch))


class TinyNext(nn.Module):
    """Embedding of the last song of the prefix -> logits over all songs."""

    def __init__(self, manifest, config: TinyConfig):
        super().__init__()
        self.config = config
        V = manifest["vocab_sizes"]["song"]
        self.emb = nn.Embedding(V, config.dim, padding_idx=0)
        self.out = nn.Linear(config.dim, V)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, batch):
        last = batch["songs"].gather(1, (batch["lengths"] - 1).unsqueeze(1)).squeeze(1)  # (B,)
        return self.out(self.drop(self.emb(last)))  # (B, V)

    def loss(self, batch, logits):
        return F.cross_entropy(logits, batch["next_song"])

    def training_loss(self, batch):
        return self.loss(batch, self(batch))


@pytest.fixture(scope="module")
def kkbox_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("kkbox")
    fakedata.write_kkbox(out, n_users=20, n_songs=30, n_train=1500, n_test=40, row_group_size=200)
    return out


@pytest.fixture(scope="module")
def lastfm_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("lastfm")
    fakedata.write_lastfm(out, n_songs=150, row_group_size=16)
    return out


def _setup(data_dir, view, model_cls, seed=0, **train):
    seed_everything(seed)
    data = Data(data_dir, view, DataConfig(batch_size=64, eval_batch_size=256, shuffle_buffer=300), seed=seed)
    model = model_cls(data.manifest, TinyConfig())
    config = TrainConfig(seed=seed, device="cpu", progress=False, **{"epochs": 3, "lr": 0.02, "patience": 0, **train})
    return data, model, config


def test_fit_learns_kkbox_rows(kkbox_dir):
    data, model, config = _setup(kkbox_dir, "rows", TinyBinary, epochs=6)
    result = fit(model, train_loader=data.train_loader, eval_loader=data.eval_loader, kind="binary", config=config)
    assert [r["epoch"] for r in result.history] == list(range(1, 7))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best_metric == max(r["valid_auc"] for r in result.history) > 0.65
    assert {"valid_auc", "valid_logloss", "valid_loss", "samples_per_s"} <= set(result.history[0])
    assert result.test == {}, "the KKBOX test split has no labels, so it has no metrics"


def test_fit_next_song_metrics_against_all_songs(lastfm_dir):
    data, model, config = _setup(lastfm_dir, "next_song", TinyNext, epochs=4, lr=0.05)
    result = fit(model, train_loader=data.train_loader, eval_loader=data.eval_loader, kind="next_song", config=config)
    keys = {f"valid_{m}@{k}" for m in ("hr", "ndcg", "mrr") for k in (1, 5, 10, 20)}
    assert keys <= set(result.history[0])
    assert result.history[-1]["valid_hr@10"] > result.history[0]["valid_hr@10"]
    assert {f"{m}@{k}" for m in ("hr", "ndcg", "mrr") for k in (1, 5, 10, 20)} <= set(result.test)
    assert 0 < result.test["hr@10"] <= 1


class _Killed(Exception):
    pass


def _kill_after_first_epoch(epoch, state):
    if epoch == 1:
        raise _Killed()


def _resume_case(name):
    if name == "tiny-rows":
        return "kkbox", "rows", "binary", TinyBinary, {}
    from musicrec.models import build_model

    small = {"song_dim": 8, "tag_dim": 4, "hidden": 8, "attention_dim": 8}
    if name == "gru-sampled-sparse":
        small.update(sampled_softmax=16, sampler="popularity", in_batch_negatives=True, sparse=True)

    def gru(manifest, config):  # the real model: dropout, gradient clipping (and SparseAdam next to Adam)
        model = build_model("gru", manifest, small)
        if model.config.sampler == "popularity":
            model.set_sampling_counts(torch.arange(manifest["vocab_sizes"]["song"], dtype=torch.float64) % 5)
        return model

    extra = {"lr": 0.01, "lr_decay": 0.5} if name == "gru-sampled-sparse" else {"lr": 0.01}  # resume keeps the schedule
    return "lastfm", "next_song", "next_song", gru, extra


@pytest.mark.parametrize("case", ["tiny-rows", "gru-sessions", "gru-sampled-sparse"])
def test_resume_after_kill_gives_identical_weights(case, kkbox_dir, lastfm_dir, tmp_path):
    dataset, view, kind, model_cls, extra = _resume_case(case)
    data_dir = kkbox_dir if dataset == "kkbox" else lastfm_dir

    def run(run_dir, **kwargs):
        data, model, config = _setup(data_dir, view, model_cls, **extra)
        fp = manifest_fingerprint(data.manifest)
        result = fit(model, train_loader=data.train_loader, eval_loader=data.eval_loader, kind=kind, config=config,
                     checkpointer=Checkpointer(run_dir), model_name=case, fingerprint=fp, **kwargs)
        return model, result

    straight, straight_result = run(tmp_path / "a")
    with pytest.raises(_Killed):
        run(tmp_path / "b", callbacks=[_kill_after_first_epoch])
    after_one = load(tmp_path / "b" / "last.pt")
    torch.manual_seed(12345)  # whatever happened in between, the resumed run restores its RNG state
    np.random.seed(12345)
    resumed, resumed_result = run(tmp_path / "b", resume_from=after_one)

    assert resumed_result.history == straight_result.history or [
        {k: v for k, v in r.items() if "time" not in k and "per_s" not in k} for r in resumed_result.history
    ] == [{k: v for k, v in r.items() if "time" not in k and "per_s" not in k} for r in straight_result.history]
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), f"{name} differs after resume"
    last_a, last_b = load(tmp_path / "a" / "last.pt"), load(tmp_path / "b" / "last.pt")
    for name, a in last_a["model_state"].items():
        assert torch.equal(a, last_b["model_state"][name]), f"{name} of the last epoch differs after resume"
    assert any(not torch.equal(a, after_one["model_state"][k]) for k, a in last_a["model_state"].items())
    if case == "gru-sampled-sparse":  # both parts of the composite optimizer were saved and restored
        assert set(after_one["optimizer_state"]) == {"dense", "sparse"}
        assert after_one["optimizer_state"]["sparse"]["state"], "SparseAdam's moments are in the checkpoint"


def test_lr_decay_follows_the_epoch_number_for_every_group():
    w = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.Adam([{"params": [w], "lr": 0.1}, {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.4}])
    seen = []
    for epoch in (0, 1, 2, 1):
        set_epoch_lr(optimizer, 0.5, epoch)
        seen.append([group["lr"] for group in optimizer.param_groups])
    assert seen == [[0.1, 0.4], [0.05, 0.2], [0.025, 0.1], [0.05, 0.2]]
    restored = torch.optim.Adam([{"params": [w], "lr": 99.0}, {"params": [nn.Parameter(torch.zeros(1))]}])
    restored.load_state_dict(optimizer.state_dict())  # a checkpoint carries initial_lr, so the rule goes on
    set_epoch_lr(restored, 0.5, 3)
    assert [group["lr"] for group in restored.param_groups] == [0.0125, 0.05]
    constant = torch.optim.SGD([w], lr=0.3)
    set_epoch_lr(constant, 1.0, 5)
    assert constant.param_groups[0]["lr"] == 0.3 and "initial_lr" not in constant.param_groups[0]
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ConfigError, match=r"train\.lr_decay"):
            typed(TrainConfig, {"lr_decay": bad}, "train")


def test_refuses_to_resume_another_dataset_or_config(kkbox_dir, tmp_path):
    data, model, config = _setup(kkbox_dir, "rows", TinyBinary, epochs=1)
    fp = manifest_fingerprint(data.manifest)
    fit(model, train_loader=data.train_loader, eval_loader=data.eval_loader, kind="binary", config=config,
        checkpointer=Checkpointer(tmp_path), model_name="tiny", fingerprint=fp)
    ckpt = Checkpointer(tmp_path).load_last()
    with pytest.raises(CheckpointError, match="fingerprint"):
        fit(model, train_loader=data.train_loader, eval_loader=data.eval_loader, kind="binary", config=config,
            model_name="tiny", fingerprint="other", resume_from=ckpt)
    other = TinyBinary(data.manifest, TinyConfig(dim=4))
    with pytest.raises(CheckpointError, match=r"model config differs .*dim: 8 -> 4"):
        fit(other, train_loader=data.train_loader, eval_loader=data.eval_loader, kind="binary", config=config,
            model_name="tiny", fingerprint=fp, resume_from=ckpt)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")], "atomic writes leave no temporary files"


def test_early_stopping_and_best_weights(kkbox_dir):
    data, model, config = _setup(kkbox_dir, "rows", TinyBinary, epochs=10, lr=0.0, patience=2)
    result = fit(model, train_loader=data.train_loader, eval_loader=data.eval_loader, kind="binary", config=config)
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1


def test_amp_bf16_on_cpu_and_gradient_clipping(kkbox_dir):
    data, model, config = _setup(kkbox_dir, "rows", TinyBinary, epochs=1, amp=True, clip_grad_norm=0.5)
    result = fit(model, train_loader=data.train_loader, eval_loader=data.eval_loader, kind="binary", config=config)
    assert np.isfinite(result.history[0]["train_loss"])

    param = nn.Parameter(torch.zeros(4))
    optimizer = torch.optim.SGD([param], lr=1.0)
    param.grad = torch.full((4,), 100.0)
    SingleProcess().optimizer_step(optimizer, None, [param], clip_grad_norm=0.5)
    assert float(param.detach().norm()) == pytest.approx(0.5, rel=1e-4)


def test_clipping_and_grad_scaler_with_sparse_gradients():
    """Sparse gradients (duplicate rows included) are clipped to the same values as the dense gradients of the same
    model; a GradScaler (power-of-two scale) over the composite optimizer gives the unscaled step's weights."""
    from musicrec.models import build_model
    from musicrec.optim import CompositeOptimizer, clip_grad_norm, make_optimizer

    manifest = {"vocab_sizes": {"user": 6, "song": 9}}
    batch = {"user_idx": torch.tensor([2, 2, 3, 5]), "song_idx": torch.tensor([4, 4, 4, 7]),
             "target": torch.tensor([1.0, 0.0, 1.0, 1.0])}
    torch.manual_seed(0)
    sparse = build_model("ncf", manifest, {"factors": 3, "mlp_layers": [4, 2], "sparse": True})
    dense = build_model("ncf", manifest, {"factors": 3, "mlp_layers": [4, 2]})
    dense.load_state_dict(sparse.state_dict())
    norms = []
    for model in (sparse, dense):
        model.training_loss(batch).backward()
        norms.append(clip_grad_norm(model.parameters(), 1e-3))
    torch.testing.assert_close(norms[0], norms[1])
    for (name, a), b in zip(sparse.named_parameters(), dense.parameters()):
        assert a.grad.is_sparse == ("emb" in name or "user" in name or "item" in name)
        torch.testing.assert_close(a.grad.to_dense(), b.grad, msg=name)
    clipped = torch.linalg.vector_norm(torch.stack([b.grad.norm() for b in dense.parameters()]))
    assert float(clipped) == pytest.approx(1e-3, rel=1e-3)

    weights = []
    for scale in (None, 2.0**10):
        torch.manual_seed(0)
        model = build_model("ncf", manifest, {"factors": 3, "mlp_layers": [4, 2], "sparse": True})
        optimizer = make_optimizer(model, TrainConfig(lr=0.1))
        assert isinstance(optimizer, CompositeOptimizer)
        scaler = torch.amp.GradScaler("cpu", init_scale=scale) if scale else None
        for _ in range(3):
            optimizer.zero_grad()
            loss = model.training_loss(batch)
            (scaler.scale(loss) if scaler else loss).backward()
            SingleProcess().optimizer_step(optimizer, scaler, model.parameters(), clip_grad_norm=0.5)
        weights.append(model.state_dict())
    for name, a in weights[0].items():
        torch.testing.assert_close(a, weights[1][name], msg=name)


def test_sparse_adamw_decays_the_touched_rows_as_adamw_and_leaves_the_others():
    """train.optimizer adamw + weight_decay with sparse tables: SparseAdamW. On rows every step touches it gives
    torch's AdamW to float precision; a row no step touches keeps its value (the decay is lazy)."""
    from musicrec.optim import CompositeOptimizer, SparseAdamW, make_optimizer

    torch.manual_seed(0)
    sparse = nn.Embedding(5, 3, sparse=True)
    dense = nn.Embedding(5, 3)
    dense.load_state_dict(sparse.state_dict())
    opts = [SparseAdamW(sparse.parameters(), lr=0.05, weight_decay=0.5),
            torch.optim.AdamW(dense.parameters(), lr=0.05, weight_decay=0.5)]
    rows = torch.tensor([0, 1, 2, 3, 3])  # row 4: never touched
    for step in range(4):
        for table, opt in zip((sparse, dense), opts):
            opt.zero_grad()
            (table(rows).pow(2).sum() * (step + 1)).backward()
            opt.step()
    torch.testing.assert_close(sparse.weight[:4], dense.weight[:4])
    assert not torch.equal(dense.weight[4], sparse.weight[4])  # AdamW decays every row, SparseAdamW only touched ones
    torch.manual_seed(0)
    assert torch.equal(sparse.weight[4], nn.Embedding(5, 3).weight[4])
    # re-created from its param_groups (as Horovod does), and from a state_dict, it keeps its decay
    assert SparseAdamW(opts[0].param_groups).param_groups[0]["weight_decay"] == 0.5
    plain = torch.optim.SparseAdam(sparse.parameters(), lr=0.05)
    fresh = SparseAdamW(sparse.parameters(), lr=0.05, weight_decay=0.5)
    fresh.load_state_dict(plain.state_dict())  # a SparseAdam checkpoint: its groups have no weight_decay
    assert fresh.param_groups[0]["weight_decay"] == 0.5
    empty = torch.sparse_coo_tensor(torch.zeros(1, 0, dtype=torch.long), torch.zeros(0, 3), (5, 3))
    sparse.weight.grad, before = empty, sparse.weight.detach().clone()
    fresh.step()  # an empty gradient (a worker without a batch): nothing changes
    assert torch.equal(sparse.weight, before)

    from musicrec.models import build_model
    manifest = {"vocab_sizes": {"user": 6, "song": 9}}
    model = build_model("ncf", manifest, {"factors": 3, "mlp_layers": [4, 2], "sparse": True})
    optimizer = make_optimizer(model, TrainConfig(optimizer="adamw", weight_decay=0.01))
    assert isinstance(optimizer, CompositeOptimizer) and isinstance(optimizer.parts["sparse"], SparseAdamW)
    assert isinstance(optimizer.parts["dense"], torch.optim.AdamW)
    with pytest.raises(ConfigError, match="train.optimizer: adamw"):
        make_optimizer(model, TrainConfig(optimizer="adam", weight_decay=0.01))


def test_max_steps_stops_the_run_and_resumes_exactly(kkbox_dir, tmp_path):
    """train.max_steps = one epoch + 3 steps: two epochs are booked (the second of 3 steps), then the test runs; a
    run killed after epoch 1 and resumed takes the same 3 steps and reaches the same weights."""
    data, _, _ = _setup(kkbox_dir, "rows", TinyBinary)
    per_epoch = sum(1 for _ in data.train_loader(0))
    budget = per_epoch + 3

    def run(run_dir, **kwargs):
        data, model, config = _setup(kkbox_dir, "rows", TinyBinary, epochs=5, max_steps=budget)
        steps = []
        fit(model, train_loader=data.train_loader, eval_loader=data.eval_loader, kind="binary", config=config,
            checkpointer=Checkpointer(run_dir), model_name="tiny", fingerprint="fp",
            on_batch=lambda epoch, step, batch: steps.append(epoch), **kwargs)
        return model, steps

    straight, steps = run(tmp_path / "a")
    assert steps == [0] * per_epoch + [1] * 3
    state = json.loads(load(tmp_path / "a" / "last.pt")["loop_state"])
    assert [r["epoch"] for r in state["history"]] == [1, 2] and state["global_step"] == budget
    with pytest.raises(_Killed):
        run(tmp_path / "b", callbacks=[_kill_after_first_epoch])
    resumed, steps = run(tmp_path / "b", resume_from=load(tmp_path / "b" / "last.pt"))
    assert steps == [1] * 3
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after resume"
    again, steps = run(tmp_path / "b", resume_from=load(tmp_path / "b" / "last.pt"))  # the budget is spent
    assert steps == []
    with pytest.raises(ConfigError, match="train.max_steps"):
        typed(TrainConfig, {"max_steps": -1}, "train")


def test_evaluate_protocols_with_known_scores():
    V = 30
    batches = [{"next_song": torch.tensor([2, 5, 7]), "songs": torch.tensor([[3], [4], [5]]), "lengths": torch.ones(3, dtype=torch.long)}]

    def perfect(batch):
        scores = torch.zeros(len(batch["next_song"]), V)
        scores[torch.arange(len(batch["next_song"])), batch["next_song"]] = 1.0
        return {"scores": scores, "probs": None, "loss": None}

    m = evaluate(perfect, batches, "next_song", ks=(1, 10))
    assert m["hr@1"] == m["ndcg@10"] == m["mrr@10"] == 1.0 and m["count"] == 3

    loo = [{"user_idx": torch.tensor([2, 3]), "candidates": torch.arange(2, 202).view(2, 100)}]
    prefers_first = lambda b: {"scores": -torch.arange(100.0).repeat(2, 1), "probs": None, "loss": None}  # noqa: E731
    prefers_last = lambda b: {"scores": torch.arange(100.0).repeat(2, 1), "probs": None, "loss": None}  # noqa: E731
    assert evaluate(prefers_first, loo, "loo")["loo_hr@10"] == 1.0
    assert evaluate(prefers_last, loo, "loo")["loo_hr@10"] == 0.0

    rows = [{"target": torch.tensor([1.0, 0.0, 1.0, 0.0])}]
    score = lambda b: {"scores": torch.tensor([2.0, -1.0, 1.0, 0.5]), "probs": None, "loss": None}  # noqa: E731
    m = evaluate(score, rows, "binary")
    assert m["auc"] == 1.0 and 0 < m["logloss"] < 1
    assert evaluate(score, [{"target": torch.full((4,), float("nan"))}], "binary") == {}


class _TwoWorkers(SingleProcess):
    """Pretends to be rank 0 of 2; the other worker has ``other`` batches of one row."""

    def __init__(self, other):
        self.other = other

    @property
    def size(self):
        return 2

    def allreduce_sum(self, x):
        if isinstance(x, dict):
            return x
        have = 1.0 if self.other > 0 else 0.0
        self.other -= 1
        return x + have


def test_steps_go_on_while_any_worker_has_a_batch():
    two_rows = [{"target": torch.zeros(2)}] * 2
    steps = list(_steps_in_sync(two_rows, _TwoWorkers(other=4)))
    assert [(batch is None, n_step) for batch, n_step in steps] == [(False, 3), (False, 3), (True, 1), (True, 1)]
    assert [n for _, n in _steps_in_sync(two_rows * 2, _TwoWorkers(other=1))] == [3, 2, 2, 2]
    assert [n for _, n in _steps_in_sync(two_rows, SingleProcess())] == [2, 2]
    assert isinstance(get_backend("auto"), SingleProcess)


def test_epoch_seed_is_the_one_seed_derivation():
    """The loop's per-epoch torch seed (derive_seed(seed, epoch, 0x7EA1, bits=32)) is the former epoch_seed."""
    for seed, epoch in ((42, 0), (0, 3), (2**33 + 5, 7)):
        former = int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, 0x7EA1]).generate_state(1)[0])
        assert derive_seed(seed, epoch, 0x7EA1, bits=32) == former
