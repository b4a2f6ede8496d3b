"""The fast paths of the training side give the same results as the plain ones (no timings here: see
benchmarks/bench_training.py and bench_step.py): the Bi-GRU's own packed BPTT against ``nn.GRU`` on a
``PackedSequence``, the loader's one-row-per-row-group Petastorm transform, in-memory row-group cache and background
prefetch against uncached, unprefetched epochs, and the thread setting of the training loop. And the GRU's training
step with the sampled softmax never makes a (batch, vocabulary) tensor: neither the full output layer nor ``forward``
is called, and no operation of the forward, backward or optimizer step produces a tensor that large."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from musicrec.config import ConfigError, typed
from musicrec.data import Data, DataConfig, DataError
from musicrec.data.batching import _concat, _prefetched
from musicrec.data.reader import _RowGroupAsOneRow, _unpack_row, pad_lists
from musicrec.models import build_model
from musicrec.models.gru import GRUConfig, SessionGRU
from musicrec.optim import make_optimizer
from musicrec.train import StepSetup, TrainConfig, fit, train_one_epoch

pytestmark = pytest.mark.unit


# ---------------------------------------------------------------------------------------------------------------
# Bi-GRU: own packed BPTT (CPU) == nn.GRU on a PackedSequence (cuDNN's path)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_layers", [1, 2])
def test_own_bptt_matches_packed_gru_outputs_and_gradients(num_layers):
    torch.manual_seed(0)
    model = SessionGRU(GRUConfig(song_dim=5, tag_dim=3, hidden=4, num_layers=num_layers, dropout=0.0), 20, 9).double()
    lengths = torch.tensor([1, 9, 3, 4, 9, 2, 5, 1])  # ties, length 1 and the full width
    B, T = len(lengths), 9
    x = torch.randn(B, T, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(B, T, 8, dtype=torch.float64)  # a loss that weighs every output differently
    params = [x, *model.gru.parameters()]
    ref = model.bigru(x, lengths, own_bptt=False)
    out = model.bigru(x, lengths, own_bptt=True)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    past = torch.arange(T).unsqueeze(0) >= lengths.unsqueeze(1)
    assert bool((out[past] == 0).all()), "outputs past a session's length must be 0, as pad_packed_sequence's"
    grads_ref = torch.autograd.grad((ref * weight).sum(), params)
    grads = torch.autograd.grad((out * weight).sum(), params)
    for name, a, b in zip(["x", *(n for n, _ in model.gru.named_parameters())], grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"gradient of {name}")


def test_own_bptt_is_the_cpu_default_and_trains_like_the_packed_gru():
    torch.manual_seed(0)
    manifest = {"vocab_sizes": {"song": 30, "tag": 8}}
    a = build_model("gru", manifest, {"song_dim": 8, "tag_dim": 4, "hidden": 8, "attention_dim": 6, "dropout": 0.0})
    b = build_model("gru", manifest, dataclasses.asdict(a.config))
    b.load_state_dict(a.state_dict())
    b.bigru = lambda x, lengths, own_bptt=None: SessionGRU.bigru(b, x, lengths, own_bptt=False)  # the packed nn.GRU
    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 7, (16,), generator=gen)
    valid = torch.arange(6).unsqueeze(0) < lengths.unsqueeze(1)
    batch = {"songs": torch.randint(2, 30, (16, 6), generator=gen).masked_fill(~valid, 0),
             "song_tags": torch.randint(0, 8, (16, 6, 3), generator=gen).masked_fill(~valid.unsqueeze(-1), 0),
             "lengths": lengths, "next_song": torch.randint(2, 30, (16,), generator=gen)}
    opts = [torch.optim.Adam(m.parameters(), lr=0.01) for m in (a, b)]
    for _ in range(5):
        for m, opt in zip((a, b), opts):
            opt.zero_grad()
            m.loss(batch, m(batch)).backward()
            opt.step()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


def test_own_bptt_under_bf16_autocast_and_with_dropout_between_layers():
    torch.manual_seed(0)
    model = SessionGRU(GRUConfig(song_dim=4, tag_dim=0, hidden=3, num_layers=2, dropout=0.5), 12, None).train()
    x = torch.randn(3, 4, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.bigru(x, torch.tensor([4, 1, 2]))
    assert out.shape == (3, 4, 6) and out.dtype == torch.float32
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


# ---------------------------------------------------------------------------------------------------------------
# Bi-GRU with the sampled softmax: no (B, V) tensor anywhere in a training step
# ---------------------------------------------------------------------------------------------------------------
class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor (elements held: a sparse tensor's values) that any aten operation produces while
    active: the forward, the backward (autograd runs CPU work on the calling thread) and the optimizer step."""

    def __init__(self):
        super().__init__()
        self.largest = (0, "", ())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                held = t._values().numel() if t.is_sparse else t.numel()
                if held > self.largest[0]:
                    self.largest = (held, str(func), tuple(t.shape))
        return out


def _gru_step_setup(V, B, **model):
    """A GRU over V songs (small dims), its optimizer from TrainConfig and one session batch of B prefixes."""
    torch.manual_seed(0)
    config = {"song_dim": 8, "tag_dim": 4, "hidden": 4, "attention_dim": 4, "dropout": 0.1, **model}
    gru = build_model("gru", {"vocab_sizes": {"song": V, "tag": 50}}, config)
    if gru.config.sampler == "popularity":
        gru.set_sampling_counts(1.0 / torch.arange(1, V + 1, dtype=torch.float64))
    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 9, (B,), generator=gen)
    valid = torch.arange(8).unsqueeze(0) < lengths.unsqueeze(1)
    batch = {"songs": torch.randint(2, V, (B, 8), generator=gen).masked_fill(~valid, 0), "lengths": lengths,
             "song_tags": torch.randint(1, 50, (B, 8, 3), generator=gen).masked_fill(~valid.unsqueeze(-1), 0),
             "next_song": torch.randint(2, V, (B,), generator=gen)}
    return gru, make_optimizer(gru, TrainConfig(lr=0.01)), batch


SAMPLED = {"sampled_softmax": 64, "sampler": "popularity", "in_batch_negatives": True, "sparse": True}


def test_sampled_training_step_never_calls_the_full_output_layer():
    gru, optimizer, batch = _gru_step_setup(V=5_000, B=32, **SAMPLED)

    def refuse(*args, **kwargs):
        raise AssertionError("the training step asked for the full (B, V) logits")

    gru.out.forward = refuse  # self.out(h): every song's logit
    gru.forward = refuse
    before = gru.out.weight.detach().clone()
    trained, steps = train_one_epoch(gru, optimizer, [batch, batch], StepSetup(torch.device("cpu"), clip=5.0))
    assert steps == 2 and np.isfinite(trained["train_loss"])
    assert not torch.equal(before, gru.out.weight), "the sampled output rows were trained"
    with pytest.raises(AssertionError, match="full"):  # the full softmax does take that path (the test can fail)
        full, optimizer, batch = _gru_step_setup(V=5_000, B=32)
        full.out.forward = refuse
        train_one_epoch(full, optimizer, [batch], StepSetup(torch.device("cpu")))


def test_sampled_training_step_makes_no_tensor_of_batch_times_vocabulary():
    """V = 400,000 songs, B = 128: a (B, V) float tensor would be 205 MB. The largest tensor any operation of two
    training steps (sampled softmax, sparse tables, SparseAdam + Adam, clipping) makes is the (V, 16) output table
    (or SparseAdam's moments of it): 16 elements per song, against the full softmax's 128."""
    V, B = 400_000, 128
    gru, optimizer, batch = _gru_step_setup(V=V, B=B, **SAMPLED)
    setup = StepSetup(torch.device("cpu"), clip=5.0)
    train_one_epoch(gru, optimizer, [batch], setup)  # the first step allocates SparseAdam's moments
    with _LargestTensor() as seen:
        train_one_epoch(gru, optimizer, [batch, batch], setup)
    held, op, shape = seen.largest
    assert held <= 16 * V < B * V // 4, f"{op} made a tensor of shape {shape}"
    full, optimizer, batch = _gru_step_setup(V=20_000, B=B)  # the full softmax: the same check fails
    with _LargestTensor() as seen:
        train_one_epoch(full, optimizer, [batch], StepSetup(torch.device("cpu")))
    assert seen.largest[0] >= B * 20_000


# ---------------------------------------------------------------------------------------------------------------
# Loader pieces: padding, the one-row transform, concatenation of parts of different widths
# ---------------------------------------------------------------------------------------------------------------
def _reference_pad(values):
    lens = [0 if v is None else len(v) for v in values]
    width = max(max(lens, default=0), 1)
    return np.array([list(v if v is not None else []) + [0] * (width - n) for v, n in zip(values, lens)],
                    dtype=np.int32).reshape(len(values), width), np.array(lens, np.int32)


@pytest.mark.parametrize("values", [
    [np.array([3, 4]), None, np.array([], np.int32), np.array([7, 8, 9])],
    [None, None],
    [np.array([5])],
    [],
])
def test_pad_lists_matches_a_per_row_reference(values):
    values = np.array(values + [None], dtype=object)[:-1] if values else np.empty(0, dtype=object)
    padded, lens = pad_lists(values)
    ref_padded, ref_lens = _reference_pad(list(values))
    np.testing.assert_array_equal(lens, ref_lens)
    np.testing.assert_array_equal(padded, ref_padded)
    assert padded.dtype == np.int32 and lens.dtype == np.int32


def test_row_group_as_one_row_round_trips_columns():
    df = pd.DataFrame({
        "row_id": np.array([10, 11, 12], np.int64),
        "target": [1.0, np.nan, 0.0],  # a nullable int column as pandas hands it over
        "genre_idx": [np.array([2, 3], np.int32), np.array([4], np.int32), None],
    })
    one = _RowGroupAsOneRow(["row_id", "target", "genre_idx"], ["genre_idx"])(df)
    assert len(one) == 1
    chunk = _unpack_row(one.iloc[0].to_dict(), ["row_id", "target", "genre_idx"], ["genre_idx"])
    np.testing.assert_array_equal(chunk["row_id"], [10, 11, 12])
    np.testing.assert_array_equal(chunk["target"], [1.0, np.nan, 0.0])
    np.testing.assert_array_equal(chunk["genre_idx"], [[2, 3], [4, 0], [0, 0]])
    np.testing.assert_array_equal(chunk["genre_idx__len"], [2, 1, 0])


def test_concat_pads_parts_of_different_widths_with_zeros():
    a = {"x": np.array([[1, 2]], np.int32), "y": np.array([1.5]), "t": np.ones((1, 1, 2), np.int64)}
    b = {"x": np.array([[3], [4]], np.int32), "y": np.array([2.5, 3.5]), "t": np.full((2, 3, 1), 7, np.int64)}
    out = _concat([a, b])
    np.testing.assert_array_equal(out["x"], [[1, 2], [3, 0], [4, 0]])
    np.testing.assert_array_equal(out["y"], [1.5, 2.5, 3.5])
    expected_t = np.zeros((3, 3, 2), np.int64)
    expected_t[0, :1, :2] = 1
    expected_t[1:, :3, :1] = 7
    np.testing.assert_array_equal(out["t"], expected_t)
    assert out["x"].dtype == np.int32


# ---------------------------------------------------------------------------------------------------------------
# Loader: cached and prefetched epochs == plain epochs
# ---------------------------------------------------------------------------------------------------------------
# (kkbox_dir, lastfm_dir: the small fake outputs of tests/conftest.py)
def _epochs(data: Data, loaders):
    return [[{k: v.numpy().copy() for k, v in batch.items()} for batch in loader] for loader in loaders]


def _assert_same(a, b):
    assert len(a) == len(b)
    for epoch_a, epoch_b in zip(a, b):
        assert len(epoch_a) == len(epoch_b)
        for x, y in zip(epoch_a, epoch_b):
            assert x.keys() == y.keys()
            for key in x:
                assert x[key].dtype == y[key].dtype, key
                np.testing.assert_array_equal(x[key], y[key], err_msg=key)


@pytest.mark.parametrize("view,shards", [("rows", 1), ("rows", 2), ("next_song", 1), ("next_song", 2), ("ncf", 1)])
def test_cached_and_prefetched_epochs_equal_plain_epochs(kkbox_dir, lastfm_dir, view, shards):
    folder = kkbox_dir if view == "rows" else lastfm_dir
    base = dict(batch_size=16, eval_batch_size=20, shuffle_buffer=40)
    for rank in range(shards):
        def make(**kw):
            return Data(folder, view, DataConfig(**base, **kw), seed=7, cur_shard=rank, shard_count=shards)

        plain, fast = make(cache_mb=0, prefetch=0), make(cache_mb=64, prefetch=3)

        def loaders(d):
            return [d.train_loader(0), d.train_loader(1), d.eval_loader("valid"), d.train_loader(0),
                    d.eval_loader("valid"), d.train_loader(2)]

        expected = _epochs(plain, loaders(plain))
        got = _epochs(fast, loaders(fast))  # epochs 2.. replay the cache (the first pass filled it)
        _assert_same(got, expected)
        assert fast.cache.kept and not plain.cache.kept


def test_cache_over_budget_is_not_kept_and_epochs_stay_exact(kkbox_dir):
    data = Data(kkbox_dir, "rows", DataConfig(batch_size=32, shuffle_buffer=64, cache_mb=0), seed=1)
    tiny = Data(kkbox_dir, "rows", DataConfig(batch_size=32, shuffle_buffer=64, cache_mb=0.001), seed=1)  # ~1 kB
    _assert_same(_epochs(tiny, [tiny.train_loader(0), tiny.train_loader(0)]),
                 _epochs(data, [data.train_loader(0), data.train_loader(0)]))
    assert not tiny.cache.kept and tiny.cache.too_big


def test_a_stopped_epoch_is_not_cached_and_its_reader_thread_ends(kkbox_dir):
    data = Data(kkbox_dir, "rows", DataConfig(batch_size=8, shuffle_buffer=0, prefetch=2), seed=1)
    before = {t.ident for t in threading.enumerate()}
    for i, _batch in enumerate(data.train_loader(0)):
        if i == 2:
            break
    leftover = [t for t in threading.enumerate() if t.ident not in before and t.name == "musicrec-loader"]
    assert not leftover, "the prefetch thread must end when the consumer stops"
    assert not data.cache.kept, "an incomplete pass must not be cached"
    ids = np.concatenate([b["row_id"].numpy() for b in data.train_loader(0)])
    assert len(ids) == len(set(ids.tolist())) == 240


def test_prefetch_keeps_order_and_raises_the_producers_error():
    def produce():
        yield from range(5)
        raise DataError("row group 3: bad index")

    got = []
    with pytest.raises(DataError, match="bad index"):
        for item in _prefetched(produce(), depth=2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]
    assert list(_prefetched(iter(range(100)), depth=1)) == list(range(100))


# ---------------------------------------------------------------------------------------------------------------
# Training loop: thread setting
# ---------------------------------------------------------------------------------------------------------------
def test_fit_sets_the_cpu_threads_from_the_config(kkbox_dir):
    data = Data(kkbox_dir, "rows", DataConfig(batch_size=64), seed=0)
    model = build_model("logreg", data.manifest, {})
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        fit(model, train_loader=data.train_loader, eval_loader=data.eval_loader, kind="binary",
            config=TrainConfig(epochs=1, progress=False, num_threads=1), device="cpu", test_split=None)
        assert torch.get_num_threads() == 1
        fit(model, train_loader=data.train_loader, eval_loader=data.eval_loader, kind="binary",
            config=TrainConfig(epochs=1, progress=False, num_threads=0), device="cpu", test_split=None)
        assert torch.get_num_threads() == 1, "num_threads=0 leaves the setting alone"
    finally:
        torch.set_num_threads(previous)
    with pytest.raises(ConfigError, match="num_threads"):
        typed(TrainConfig, {"num_threads": -1}, "train")
