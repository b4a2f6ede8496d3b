"""The pyarrow reader (musicrec/data/arrow_reader.py, the current-dependency profile's) against Petastorm's: the same
row groups of each shard in the same order, as the same arrays (dtype, shape, values), for 1 and 2 shards, shuffled
or not, and so the same batches from ``Data``; the order itself, the MUSICREC_READER setting and the security rules
(only the listed data files are opened). The comparisons need Petastorm (the default profile) and skip without it;
the rest runs in both profiles."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from musicrec.data import Data, DataConfig, DataError, read_manifest
from musicrec.data import arrow_reader, reader

pytestmark = pytest.mark.unit

SEEDS = (0, 7, 123456789)


def _views(kkbox_dir, lastfm_dir):
    """(split folder, columns, array columns) as the rows and next_song views read them."""
    features = read_manifest(kkbox_dir)["features"]
    rows = ["row_id", *features["categorical"], *features["multi_valued"], *features["numeric"], features["target"]]
    return [(kkbox_dir / "train", rows, list(features["multi_valued"])),
            (kkbox_dir / "test", rows, list(features["multi_valued"])),
            (lastfm_dir / "sessions" / "train", ["session_id", "user_idx", "songs", "song_tags"],
             ["songs", "song_tags"])]


def _read(name, monkeypatch, path, columns, arrays, **kw):
    monkeypatch.setenv("MUSICREC_READER", name)
    return list(reader.iter_row_groups(path, columns, arrays, **kw))


def _assert_same_chunks(expected, got):
    assert len(got) == len(expected)
    for want, have in zip(expected, got):
        assert have.keys() == want.keys()
        for key in want:
            assert (have[key].dtype, have[key].shape) == (want[key].dtype, want[key].shape), key
            np.testing.assert_array_equal(have[key], want[key], err_msg=key)


@pytest.mark.parametrize("shard_count", [1, 2])
@pytest.mark.parametrize("shuffle", [False, True])
def test_the_pyarrow_reader_gives_petastorms_row_groups(kkbox_dir, lastfm_dir, monkeypatch, shard_count, shuffle):
    pytest.importorskip("petastorm")
    for path, columns, arrays in _views(kkbox_dir, lastfm_dir):
        for seed in SEEDS:
            for shard in range(shard_count):
                kw = dict(seed=seed, shuffle_row_groups=shuffle, cur_shard=shard, shard_count=shard_count)
                expected = _read("petastorm", monkeypatch, path, columns, arrays, **kw)
                got = _read("arrow", monkeypatch, path, columns, arrays, **kw)
                assert expected
                _assert_same_chunks(expected, got)


@pytest.mark.parametrize("view", ["rows", "next_song", "ncf"])
def test_the_same_batches_with_either_reader(kkbox_dir, lastfm_dir, monkeypatch, view):
    """Two shards, two epochs, training and evaluation loaders: batch for batch the same tensors."""
    pytest.importorskip("petastorm")
    folder = kkbox_dir if view == "rows" else lastfm_dir
    batches = {}
    for name in ("petastorm", "arrow"):
        monkeypatch.setenv("MUSICREC_READER", name)
        batches[name] = []
        for shard in (0, 1):
            data = Data(folder, view, DataConfig(batch_size=16, shuffle_buffer=40, cache_mb=0), seed=3,
                        cur_shard=shard, shard_count=2)
            for loader in (data.train_loader(0), data.train_loader(1), data.eval_loader("valid")):
                batches[name] += list(loader)
    assert len(batches["arrow"]) == len(batches["petastorm"]) > 4
    for want, have in zip(batches["petastorm"], batches["arrow"]):
        assert have.keys() == want.keys()
        for key in want:
            assert have[key].dtype == want[key].dtype and bool((have[key] == want[key]).all()), key


def test_the_shards_partition_the_row_groups_in_a_seeded_order():
    counts = [3, 0, 4, 2]  # row groups per file, one file without any
    every = sorted((f, g) for f, n in enumerate(counts) for g in range(n))
    assert arrow_reader.row_group_order(counts, seed=1, shuffle_row_groups=False) == every
    for shuffle in (False, True):
        shards = [arrow_reader.row_group_order(counts, seed=5, shuffle_row_groups=shuffle, cur_shard=r, shard_count=3)
                  for r in range(3)]
        assert sorted(sum(shards, [])) == every and all(shards)
        assert shards[0] == arrow_reader.row_group_order(counts, seed=5, shuffle_row_groups=shuffle, shard_count=3)
    orders = {tuple(arrow_reader.row_group_order(counts, seed=s, shuffle_row_groups=True)) for s in SEEDS}
    assert len(orders) == len(SEEDS)
    with pytest.raises(ValueError, match="9 row groups, fewer than the 10 shards"):
        arrow_reader.row_group_order(counts, seed=0, shuffle_row_groups=False, shard_count=10)


def test_the_reader_setting(monkeypatch, kkbox_dir):
    monkeypatch.setenv("MUSICREC_READER", "bogus")
    with pytest.raises(DataError, match=r"MUSICREC_READER='bogus': must be one of \['auto', 'petastorm', 'arrow'\]"):
        reader.reader_name()
    monkeypatch.setenv("MUSICREC_READER", "arrow")
    assert reader.reader_name() == "arrow"
    monkeypatch.delenv("MUSICREC_READER")
    try:
        import petastorm  # noqa: F401
    except ImportError:  # the current-dependency profile
        assert reader.reader_name() == "arrow"
        monkeypatch.setenv("MUSICREC_READER", "petastorm")
        with pytest.raises(DataError, match="Petastorm is not installed"):
            reader.reader_name()
    else:
        assert reader.reader_name() == "petastorm"


def test_only_the_data_files_are_opened_and_a_broken_one_is_named(kkbox_dir, tmp_path):
    """A summary file beside the data (which Petastorm would unpickle) is never read, not even when it is not
    Parquet; a truncated data file is a DataError naming it."""
    copy = tmp_path / "train"
    shutil.copytree(kkbox_dir / "train", copy)
    (copy / "_common_metadata").write_bytes(b"not parquet")
    (copy / "_metadata").write_bytes(b"not parquet")
    read = [c["row_id"] for c in arrow_reader.iter_row_groups(copy, ["row_id"], [], seed=0, shuffle_row_groups=False)]
    expected = [c["row_id"] for c in arrow_reader.iter_row_groups(kkbox_dir / "train", ["row_id"], [], seed=0,
                                                                  shuffle_row_groups=False)]
    _assert_same_chunks([{"r": r} for r in expected], [{"r": r} for r in read])
    victim = sorted(copy.glob("part-*.parquet"))[-1]
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(DataError, match=f"{victim}: not a readable Parquet file"):
        list(arrow_reader.iter_row_groups(copy, ["row_id"], [], seed=0, shuffle_row_groups=False))
