"""Petastorm -> PyTorch batches for the feature jobs' output (docs/DATA_CONTRACT.md).

The training loop sees only iterables of ``dict[str, Tensor]``; this package is the one place that knows about
Petastorm and Parquet. One ``Data`` object per run reads ``OUT/_MANIFEST.json``, picks the view class and hands out
one-epoch loaders:

===============  ==========================  =======================================================================
view             datasets / models           one example = ...
===============  ==========================  =======================================================================
``rows``         kkbox: ncf, dnn, logreg     one event row: every categorical column (B,), every multi-valued column
                                             (B, L) 0-padded, ``numeric`` (B, F), ``target`` (B,) (NaN when null),
                                             ``row_id`` (B,)  (``rows.py``)
``next_song``    lastfm: gru, pop, cooc      one prefix of a session: ``songs`` (B, T) 0-padded on the right,
                                             ``song_tags`` (B, T, K), ``lengths`` (B,), ``next_song`` (B,),
                                             ``user_idx`` (B,), ``session_id`` (B,); every position t >= 1 of every
                                             session predicts ``songs[t]`` from ``songs[:t]`` cut to the last
                                             ``max_len`` songs  (``sessions.py``)
``ncf``          lastfm: ncf                 training: (user, song) of a training session (each distinct song of a
                                             session once, OOV skipped) with target 1, plus ``num_negatives`` sampled
                                             songs the user never played in training with target 0  (``ncf.py``);
                                             evaluation: leave-one-out, per user the last non-OOV song of its last
                                             session in the split, ``candidates`` (B, 1 + N) = [that song, N sampled
                                             songs the user played neither in training nor in that row]; ``user_idx``
                                             (B,) (``loo.py``)
===============  ==========================  =======================================================================

Exact epochs: each epoch opens a fresh Petastorm reader, so every row of the shard is read exactly once;
``cur_shard``/``shard_count`` split the row groups between ranks, so the shards of one epoch are disjoint and cover
the split (``reader.py``). Shuffling: the row-group order is shuffled by Petastorm and examples are drawn at random
from a buffer of ``shuffle_buffer`` examples, both seeded from (seed, epoch, shard), so an epoch is the same every
time it is replayed (``batching.py``; with more than one Petastorm worker, epochs are not reproducible).

Evaluation samples: ``eval_loader(split, max_examples)`` keeps a fixed sample of the split's examples (prefixes,
leave-one-out users, rows), chosen from the examples' own ids alone, so every model and run on the same data
evaluates the same examples (``sample.py``).

Speed (benchmarks/RESULTS_training.md): a split that fits in ``cache_mb`` is decoded once and replayed from memory
in the order Petastorm gives for the epoch (``cache.py``); with ``prefetch`` > 0 the batches of an epoch are made in
a background thread (``batching.py``). Neither changes a batch: tests/test_perf_paths.py compares cached,
prefetched epochs with plain ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from musicrec.data.batching import EpochLoader, ShuffleBuffer
from musicrec.data.cache import RowGroupCache
from musicrec.data.config import DataConfig
from musicrec.data.manifest import DataError, check_columns, manifest_fingerprint, read_manifest, split_dir
from musicrec.data.ncf import NcfView
from musicrec.data.reader import iter_row_groups
from musicrec.data.rows import RowsView
from musicrec.data.sessions import SessionsView
from musicrec.data.view import View

VIEWS_OF = {"kkbox": (RowsView,), "lastfm": (SessionsView, NcfView)}  # the view classes of each dataset


class Data:
    """The data side of a run: manifest, split folders, one view and its one-epoch loaders.

    ``view`` is ``rows`` (KKBOX), ``next_song`` (Last.fm sessions) or ``ncf`` (Last.fm: pairs for training,
    leave-one-out for evaluation). ``cur_shard``/``shard_count`` are the rank and world size in distributed training.
    """

    def __init__(self, data_dir: str | Path, view: str, config: DataConfig | None = None, *, seed: int = 0,
                 cur_shard: int = 0, shard_count: int = 1, manifest: Mapping[str, Any] | None = None):
        self.data_dir = Path(data_dir).resolve()
        self.manifest = dict(manifest) if manifest is not None else read_manifest(self.data_dir)
        self.dataset = self.manifest["dataset"]
        self.config = config or DataConfig()
        self.seed, self.cur_shard, self.shard_count = int(seed), int(cur_shard), int(shard_count)
        assert 0 <= self.cur_shard < self.shard_count, f"cur_shard {cur_shard} not in [0, {shard_count})"
        views = {cls.name: cls for cls in VIEWS_OF[self.dataset]}
        if view not in views:
            raise DataError(f"{self.data_dir}: a {self.dataset} dataset has views {list(views)}, not {view!r}")
        self.view = view
        self._view: View = views[view](self.data_dir, self.manifest, self.config, seed=self.seed,
                                       cur_shard=self.cur_shard, shard_count=self.shard_count)

    @property
    def song_vocab(self) -> int:
        return self._view.song_vocab

    @property
    def cache(self) -> RowGroupCache:
        """The view's in-memory row-group cache (``cache.kept``: the splits kept)."""
        return self._view.cache

    def path(self, split: str) -> Path:
        """The Parquet folder of ``split``."""
        return self._view.path(split)

    def train_loader(self, epoch: int) -> EpochLoader:
        """The training examples of ``epoch`` for this shard, shuffled with a seed derived from (seed, epoch, shard)."""
        return self._view.train_loader(epoch)

    def eval_loader(self, split: str, max_examples: int = 0) -> EpochLoader:
        """All examples of ``split`` for this shard, in order (for evaluation: sums are all-reduced over shards);
        for ``ncf``, the split's leave-one-out set. ``max_examples`` > 0: only the split's fixed sample of that many
        examples (``sample.py``: the same for every model and run on this data, shared out over the shards)."""
        return self._view.eval_loader(split, max_examples)

    def loo_loader(self, split: str, max_examples: int = 0) -> EpochLoader:
        """The leave-one-out set of a Last.fm ``split`` (NCF's evaluation; any user-level scorer can use it), or its
        fixed sample of ``max_examples`` users."""
        return self._view.loo_loader(split, max_examples)

    def train_sessions(self) -> list[np.ndarray]:
        """Every Last.fm training session's songs (the input of MostPopular.fit_sessions / CoOccurrence.fit)."""
        return self._view.train_sessions()

    def train_rows(self, columns: list[str]) -> dict[str, np.ndarray]:
        """Whole training columns of a row dataset (for MostPopular.fit(song_idx, target))."""
        return self._view.train_rows(columns)


def view_for(dataset: str, model: str) -> str:
    """The data view a model trains on: ``rows`` (KKBOX), ``next_song`` or ``ncf`` (Last.fm)."""
    if dataset == "kkbox":
        return "rows"
    return "ncf" if model == "ncf" else "next_song"


__all__ = [
    "Data",
    "DataConfig",
    "DataError",
    "EpochLoader",
    "ShuffleBuffer",
    "check_columns",
    "iter_row_groups",
    "manifest_fingerprint",
    "read_manifest",
    "split_dir",
    "view_for",
]
