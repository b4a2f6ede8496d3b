"""The Petastorm loader: exact epochs (1 and 2 shards), array columns intact, session prefixes, NCF pairs and the
leave-one-out set, seeded shuffles, a split larger than ``cache_mb`` streaming through, and clear errors for a manifest
that does not match the Parquet files."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pyarrow.dataset as ds
import pytest

from musicrec.data import Data, DataConfig, DataError, ShuffleBuffer, read_manifest

pytestmark = pytest.mark.unit



def _table(path, columns):
    return ds.dataset(str(path), format="parquet").to_table(columns=columns).to_pydict()


def _collect(loader, key):
    return np.concatenate([b[key].numpy() for b in loader])


# ---------------------------------------------------------------------------------------------------------------
# exact epochs
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_rows_every_row_once_per_epoch(kkbox_dir, split):
    data = Data(kkbox_dir, "rows", DataConfig(batch_size=32, eval_batch_size=50, shuffle_buffer=64))
    expected = sorted(_table(data.path(split), ["row_id"])["row_id"])
    loader = data.train_loader(0) if split == "train" else data.eval_loader(split)
    for _ in range(2):  # and again: each epoch is complete on its own
        ids = _collect(loader, "row_id")
        assert sorted(ids.tolist()) == expected


def test_rows_two_shards_partition_the_split(kkbox_dir):
    expected = sorted(_table(kkbox_dir / "train", ["row_id"])["row_id"])
    for epoch in (0, 1):
        shards = [
            _collect(Data(kkbox_dir, "rows", DataConfig(batch_size=16), seed=3, cur_shard=r, shard_count=2).train_loader(epoch), "row_id")
            for r in (0, 1)
        ]
        assert len(shards[0]) and len(shards[1])
        assert not set(shards[0]) & set(shards[1]), "the two shards overlap"
        assert sorted(np.concatenate(shards).tolist()) == expected


def test_sessions_two_shards_partition_the_sessions(lastfm_dir):
    table = _table(lastfm_dir / "sessions" / "train", ["session_id", "length"])
    expected = Counter({sid: n - 1 for sid, n in zip(table["session_id"], table["length"])})  # prefixes per session
    seen = Counter()
    per_shard = []
    for rank in (0, 1):
        data = Data(lastfm_dir, "next_song", DataConfig(batch_size=20, shuffle_buffer=50), cur_shard=rank, shard_count=2)
        ids = _collect(data.train_loader(0), "session_id")
        per_shard.append(set(ids.tolist()))
        seen.update(ids.tolist())
    assert not per_shard[0] & per_shard[1]
    assert seen == expected


def test_shuffle_is_seeded_per_epoch(kkbox_dir):
    data = Data(kkbox_dir, "rows", DataConfig(batch_size=32, shuffle_buffer=100), seed=5)
    first = _collect(data.train_loader(0), "row_id")
    again = _collect(data.train_loader(0), "row_id")
    other = _collect(data.train_loader(1), "row_id")
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, np.sort(first)), "training rows should not come in file order"
    in_order = _collect(data.eval_loader("train"), "row_id")
    np.testing.assert_array_equal(in_order, _collect(data.eval_loader("train"), "row_id"))


@pytest.mark.parametrize("view", ["rows", "next_song"])
def test_the_cache_budget_counts_what_is_kept_and_a_bigger_split_streams(kkbox_dir, lastfm_dir, view):
    """The cache keeps a split only when what it holds (the view's chunks and the ids) fits ``cache_mb``; a split one
    byte over it is read again each epoch, with the same examples."""
    folder = kkbox_dir if view == "rows" else lastfm_dir
    roomy = Data(folder, view, DataConfig(batch_size=16, cache_mb=64), seed=2)
    first = _collect(roomy.train_loader(0), "row_id" if view == "rows" else "session_id")
    kept = roomy.cache.kept["train"]
    size = sum(item.nbytes + ids.nbytes for ids, item in kept.values())
    assert size > sum(item.n for _, item in kept.values()), "the chunks' own arrays are counted"
    tight = Data(folder, view, DataConfig(batch_size=16, cache_mb=(size - 1) / 2**20), seed=2)
    for _ in range(2):
        again = _collect(tight.train_loader(0), "row_id" if view == "rows" else "session_id")
        np.testing.assert_array_equal(again, first)
    assert not tight.cache.kept and tight.cache.too_big == {"train"}
    fits = Data(folder, view, DataConfig(batch_size=16, cache_mb=size / 2**20), seed=2)
    list(fits.train_loader(0))
    assert set(fits.cache.kept) == {"train"}


# ---------------------------------------------------------------------------------------------------------------
# array columns and batch layout
# ---------------------------------------------------------------------------------------------------------------
def test_kkbox_batches_keep_array_columns_intact(kkbox_dir):
    manifest = read_manifest(kkbox_dir)
    multi = list(manifest["features"]["multi_valued"])
    truth = _table(kkbox_dir / "train", ["row_id", *multi, "target", "song_length"])
    by_id = {rid: i for i, rid in enumerate(truth["row_id"])}
    data = Data(kkbox_dir, "rows", DataConfig(batch_size=37, shuffle_buffer=80))
    seen = 0
    for batch in data.train_loader(2):
        B = len(batch["row_id"])
        assert batch["numeric"].shape == (B, len(manifest["features"]["numeric"]))
        assert batch["target"].dtype.is_floating_point and batch["user_idx"].dtype.is_floating_point is False
        for col in multi:
            assert batch[col].shape[0] == B and batch[col].shape[1] == max(len(truth[col][by_id[int(r)]]) for r in batch["row_id"])
        for j, rid in enumerate(batch["row_id"].tolist()):
            i = by_id[rid]
            for col in multi:
                values = batch[col][j].tolist()
                n = len(truth[col][i])
                assert values[:n] == truth[col][i] and set(values[n:]) <= {0}
            assert batch["target"][j].item() == truth["target"][i]
            assert batch["numeric"][j, 0].item() == pytest.approx(truth["song_length"][i], rel=1e-6)
            seen += 1
    assert seen == len(truth["row_id"])


def test_kkbox_pad_to_fixes_the_width_and_test_targets_are_nan(kkbox_dir):
    data = Data(kkbox_dir, "rows", DataConfig(eval_batch_size=25, pad_to=5))
    for batch in data.eval_loader("test"):
        assert batch["genre_idx"].shape[1] == 5
        assert bool(batch["target"].isnan().all()), "KKBOX test rows have no target"


def test_session_prefixes_match_the_sessions(lastfm_dir):
    manifest = read_manifest(lastfm_dir)
    K = manifest["top_k_tags"]
    truth = _table(lastfm_dir / "sessions" / "valid", ["session_id", "songs", "song_tags", "user_idx"])
    by_id = {sid: i for i, sid in enumerate(truth["session_id"])}
    max_len = 3
    data = Data(lastfm_dir, "next_song", DataConfig(eval_batch_size=16, max_len=max_len))
    positions = Counter()
    for batch in data.eval_loader("valid"):
        B, T = batch["songs"].shape
        assert batch["song_tags"].shape == (B, T, K)
        assert T == int(batch["lengths"].max()) <= max_len
        for j in range(B):
            i = by_id[int(batch["session_id"][j])]
            songs, tags = truth["songs"][i], truth["song_tags"][i]
            L = int(batch["lengths"][j])
            t = positions[i] + 1  # examples of one session come in order t = 1, 2, ... without shuffling
            positions[i] += 1
            start = max(0, t - max_len)
            assert L == t - start
            assert batch["songs"][j, :L].tolist() == songs[start:t] and set(batch["songs"][j, L:].tolist()) <= {0}
            assert batch["next_song"][j].item() == songs[t]
            assert batch["song_tags"][j, :L].reshape(-1).tolist() == tags[start * K: t * K]
            assert batch["user_idx"][j].item() == truth["user_idx"][i]
    assert sum(positions.values()) == sum(len(s) - 1 for s in truth["songs"])


def test_ncf_pairs_and_leave_one_out(lastfm_dir):
    cfg = DataConfig(batch_size=64, shuffle_buffer=200, num_negatives=3, loo_negatives=99)
    data = Data(lastfm_dir, "ncf", cfg, seed=1)
    train = _table(lastfm_dir / "sessions" / "train", ["user_idx", "songs"])
    played = {(u, s) for u, songs in zip(train["user_idx"], train["songs"]) for s in songs}
    positives = sum(len({s for s in songs if s >= 2}) for songs in train["songs"])

    batches = list(data.train_loader(0))
    target = np.concatenate([b["target"].numpy() for b in batches])
    users = np.concatenate([b["user_idx"].numpy() for b in batches])
    songs = np.concatenate([b["song_idx"].numpy() for b in batches])
    assert (target == 1).sum() == positives and (target == 0).sum() == 3 * positives
    assert all((u, s) in played for u, s in zip(users[target == 1], songs[target == 1]))
    assert not any((u, s) in played for u, s in zip(users[target == 0], songs[target == 0]))
    assert songs.min() >= 2
    again = np.concatenate([b["song_idx"].numpy() for b in data.train_loader(0)])
    np.testing.assert_array_equal(songs, again)  # negatives are seeded per epoch

    valid = _table(lastfm_dir / "sessions" / "valid", ["user_idx", "start_ts", "session_id", "songs"])
    last = {}
    for u, ts, sid, s in sorted(zip(valid["user_idx"], valid["start_ts"], valid["session_id"], valid["songs"])):
        real = [x for x in s if x >= 2]
        if real:
            last[u] = real[-1]
    (batch,) = list(data.eval_loader("valid"))
    assert batch["candidates"].shape == (len(last), 100)
    for u, cand in zip(batch["user_idx"].tolist(), batch["candidates"].tolist()):
        assert cand[0] == last[u]
        assert len(set(cand[1:])) == 99 and cand[0] not in cand[1:]
        assert not any((u, c) in played for c in cand[1:])


def test_shuffle_buffer_yields_every_example_once():
    class Chunk:
        def __init__(self, start, n):
            self.start, self.n = start, n

        def take(self, idx):
            return {"x": self.start + idx}

    for rng, drop_last in ((None, False), (np.random.default_rng(0), False), (np.random.default_rng(1), True)):
        buf = ShuffleBuffer(batch_size=7, capacity=20, rng=rng, drop_last=drop_last)
        out = []
        for start, n in ((0, 10), (10, 0), (10, 25), (35, 3)):
            out += [b["x"] for b in buf.add(Chunk(start, n))]
        out += [b["x"] for b in buf.flush()]
        values = np.concatenate(out).tolist()
        if drop_last:
            assert all(len(b) == 7 for b in out) and len(values) == 35 and len(set(values)) == 35
        else:
            assert sorted(values) == list(range(38))
            assert (values == sorted(values)) == (rng is None)


# ---------------------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------------------
def test_missing_folder_and_manifest_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(DataError, match="_MANIFEST.json: manifest not found"):
        read_manifest(tmp_path)


def test_column_named_in_manifest_but_missing_from_parquet(kkbox_dir, tmp_path):
    copy = tmp_path / "kk"
    shutil.copytree(kkbox_dir, copy)
    manifest = json.loads((copy / "_MANIFEST.json").read_text())
    manifest["features"]["categorical"]["mood_idx"] = "genre"
    (copy / "_MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"column 'mood_idx' named in _MANIFEST.json is missing") as err:
        Data(copy, "rows")
    assert str(copy / "train") in str(err.value)


def test_index_beyond_the_vocab_is_a_clear_error(lastfm_dir, tmp_path):
    copy = tmp_path / "lf"
    shutil.copytree(lastfm_dir, copy)
    manifest = json.loads((copy / "_MANIFEST.json").read_text())
    manifest["vocab_sizes"]["song"] = 10  # the data has song indices up to 151
    (copy / "_MANIFEST.json").write_text(json.dumps(manifest))
    data = Data(copy, "next_song")
    with pytest.raises(DataError, match=r"column 'songs' has index \d+ outside \[0, 10\)") as err:
        list(data.train_loader(0))
    assert "sessions/train" in str(err.value)


def test_wrong_view_for_the_dataset(kkbox_dir):
    with pytest.raises(DataError, match="kkbox dataset has views"):
        Data(kkbox_dir, "next_song")


def test_split_paths_relative_to_the_data_folder(lastfm_dir, tmp_path):
    """The Last.fm feature job names its splits ``sessions/train``; the contract's example says ``train``."""
    copy = tmp_path / "lf"
    shutil.copytree(lastfm_dir, copy)
    manifest = json.loads((copy / "_MANIFEST.json").read_text())
    manifest["splits"] = {s: f"sessions/{s}" for s in ("train", "valid", "test")}
    (copy / "_MANIFEST.json").write_text(json.dumps(manifest))
    data = Data(copy, "next_song")
    assert data.path("valid") == (copy / "sessions" / "valid").resolve()
    manifest["splits"]["test"] = "sessions/nope"
    (copy / "_MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"folder of split 'test' \('sessions/nope' in _MANIFEST.json\) does not exist"):
        Data(copy, "next_song")
