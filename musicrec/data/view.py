"""What every view shares: the run's data folder, seeds and shard, the split folders' checks, and one-epoch loaders
over the shard's row groups (through the row-group cache) made into chunks by the view.

A view subclass says which columns each split must have (``expected_columns``), which ones Petastorm reads
(``columns``, ``arrays``) and how a row group becomes a chunk of examples (``make_chunk``, or ``chunks`` when the
chunk changes with the epoch). Seeds, all derived from the run's seed with ``musicrec.seeding.derive_seed``:
the row-group order of an epoch from (seed, epoch), the same on every shard (Petastorm's sharding must agree), the
example shuffle from (seed, epoch, shard); NCF's negatives and the leave-one-out sets have streams of their own
(``ncf.py``, ``loo.py``). An evaluation loader can keep a fixed sample of the split's examples (``max_examples``,
``sample.py``): the view names each example's key columns, for the whole split (``example_keys``) and per chunk
(the chunk's ``keys()``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from musicrec.columns import SPLITS, TRAIN
from musicrec.data.batching import EpochLoader
from musicrec.data.cache import RowGroupCache
from musicrec.data.config import DataConfig
from musicrec.data.manifest import DataError, check_columns, check_indices, split_dir, vocab_of
from musicrec.data.reader import iter_row_groups, read_table
from musicrec.data.sample import EvalSample
from musicrec.seeding import derive_seed


class View:
    """A view of one feature-job output; subclasses: ``RowsView``, ``SessionsView``, ``NcfView``."""

    name = ""  # the view's name in Data(data_dir, view)
    id_col = ""  # the column that identifies a row group's rows in the cache
    columns: list[str] = []  # what Petastorm reads (a subclass sets them)
    arrays: list[str] = []  # which of them are array columns

    def __init__(self, data_dir: Path, manifest: Mapping[str, Any], config: DataConfig, *, seed: int,
                 cur_shard: int, shard_count: int):
        self.data_dir, self.manifest, self.config = data_dir, manifest, config
        self.dataset = manifest["dataset"]
        self.seed, self.cur_shard, self.shard_count = seed, cur_shard, shard_count
        features = manifest["features"]
        self.categorical: dict[str, str] = dict(features.get("categorical") or {})
        self.multi_valued: dict[str, str] = dict(features.get("multi_valued") or {})
        self.numeric: list[str] = list(features.get("numeric") or [])
        self.target = features.get("target")
        self.vocab_limits = {c: vocab_of(manifest, c, v) for c, v in {**self.categorical, **self.multi_valued}.items()}
        self.cache = RowGroupCache(config.cache_mb)
        self._samples: dict[tuple, EvalSample | None] = {}  # (what, split, size) -> the split's fixed sample
        for split in SPLITS:  # every split folder has the view's columns (a DataError names column and path)
            check_columns(self.path(split), self.expected_columns(split))

    # --- layout -------------------------------------------------------------------------------------------------
    @property
    def song_vocab(self) -> int:
        return int(self.manifest["vocab_sizes"]["song"])

    def path(self, split: str) -> Path:
        return split_dir(self.data_dir, self.manifest, split)

    def expected_columns(self, split: str) -> dict[str, str]:
        """{column: "int" | "float" | "array" | "timestamp"} the folder of ``split`` must have for this view."""
        raise NotImplementedError

    def validate(self, path: Path, raw: Mapping[str, np.ndarray]) -> None:
        """Every index column of a row group within its vocab (a ``DataError`` names column and path)."""
        for col, limit in self.vocab_limits.items():
            if col in raw:
                check_indices(path, col, raw[col], limit)

    # --- loaders ------------------------------------------------------------------------------------------------
    def train_loader(self, epoch: int) -> EpochLoader:
        """The training examples of ``epoch`` for this shard, shuffled with a seed derived from (seed, epoch, shard)."""
        return self.loader(functools.partial(self.chunks, TRAIN, epoch, True), train=True, epoch=epoch)

    def eval_loader(self, split: str, max_examples: int = 0) -> EpochLoader:
        """The examples of ``split`` for this shard, in order (for evaluation: sums are all-reduced over shards):
        all of them, or with ``max_examples`` > 0 those of the split's fixed sample of that size (``sample.py``)."""
        return self.loader(functools.partial(self._eval_chunks, split, max_examples), train=False)

    def _eval_chunks(self, split: str, max_examples: int) -> Iterator:
        sample = self.sample(("examples", split, max_examples), lambda: self.example_keys(split))
        for chunk in self.chunks(split, 0, False):
            yield chunk if sample is None else sample.subset(chunk)

    def sample(self, what: tuple, keys: Callable[[], tuple]) -> EvalSample | None:
        """The fixed sample ``what`` = (name, split, size) (None: every example), chosen once from ``keys()`` (the
        key columns of all the split's examples, on every shard)."""
        if what not in self._samples:
            self._samples[what] = EvalSample.choose(keys(), what[-1]) if what[-1] > 0 else None
        return self._samples[what]

    def example_keys(self, split: str) -> tuple[np.ndarray, ...]:
        """The key columns of every example of ``split`` (all shards), in any order."""
        raise NotImplementedError

    def loader(self, chunks: Callable[[], Iterable], *, train: bool, epoch: int = 0) -> EpochLoader:
        return EpochLoader(chunks, self.config, train=train, seed=derive_seed(self.seed, epoch, self.cur_shard))

    def chunks(self, split: str, epoch: int, train: bool) -> Iterator:
        """The shard's chunks of ``split`` for ``epoch``: made once per row group and cached with it."""
        return self.row_groups(split, epoch, train, prepare=self.make_chunk)

    def make_chunk(self, raw: dict[str, np.ndarray]):
        """A row group (a dict of columns) -> a chunk: ``n`` examples, ``take(idx)`` collates some."""
        raise NotImplementedError

    def row_groups(self, split: str, epoch: int, train: bool,
                   prepare: Callable[[dict], Any] | None = None) -> Iterator[Any]:
        """The shard's row groups of ``split`` in Petastorm's order for ``epoch`` (shuffled when ``train`` and
        ``shuffle_row_groups``), checked against the vocabularies, as ``prepare(row group)``; see ``RowGroupCache``."""
        path = self.path(split)
        read = functools.partial(iter_row_groups, path,
                                 seed=derive_seed(self.seed, epoch),  # the same on every shard
                                 shuffle_row_groups=train and self.config.shuffle_row_groups,
                                 cur_shard=self.cur_shard, shard_count=self.shard_count,
                                 reader_pool=self.config.reader_pool, workers_count=self.config.workers_count)
        return self.cache.row_groups(split, read, self.columns, self.arrays, self.id_col,
                                     validate=functools.partial(self.validate, path), prepare=prepare)

    # --- whole columns ------------------------------------------------------------------------------------------
    def train_rows(self, columns: list[str]) -> dict[str, np.ndarray]:
        """Whole training columns of a row dataset (for MostPopular.fit(song_idx, target))."""
        return read_table(self.path(TRAIN), columns)

    def train_sessions(self) -> list[np.ndarray]:
        raise DataError(f"{self.data_dir}: training sessions are Last.fm's, not {self.dataset}'s")

    def loo_loader(self, split: str, max_examples: int = 0) -> EpochLoader:
        raise DataError(f"{self.data_dir}: the leave-one-out set is built from Last.fm sessions, not {self.dataset}")


__all__ = ["View"]
