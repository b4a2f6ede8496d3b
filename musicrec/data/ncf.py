"""The ``ncf`` view (Last.fm: ncf): training pairs with sampled negatives, the leave-one-out sets for evaluation.

Training: (user, song) of a training session (each distinct song of a session once, OOV skipped) with target 1,
plus ``num_negatives`` songs the user never played in training with target 0, drawn afresh every epoch with a seed
from (seed, epoch, shard) (the row groups are cached, the pairs are not). Evaluation (``eval_loader``): the
leave-one-out set of the split (``musicrec.data.loo``).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from musicrec.columns import FIRST_TOKEN_INDEX, SESSION_ID, SONG_IDX, SONGS, START_TS, TARGET, TRAIN, USER_IDX
from musicrec.data.batching import EpochLoader
from musicrec.data.loo import TrainPlays
from musicrec.data.reader import LEN_SUFFIX
from musicrec.data.sessions import LastfmView
from musicrec.seeding import derive_seed

_NEGATIVES_STREAM = 1  # the training negatives' seed stream: derive_seed(seed, epoch, shard, _NEGATIVES_STREAM)


class _PairsChunk:
    def __init__(self, user: np.ndarray, song: np.ndarray, target: np.ndarray):
        self.user, self.song, self.target = user, song, target
        self.n = int(user.size)

    def take(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {USER_IDX: self.user[idx], SONG_IDX: self.song[idx], TARGET: self.target[idx]}


def pairs_chunk(raw: dict[str, np.ndarray], plays: TrainPlays, k: int, rng: np.random.Generator) -> _PairsChunk:
    """A row group of sessions -> its positive pairs (target 1) in row-group order, then ``k`` negatives each (0)."""
    songs, lens = raw[SONGS].astype(np.int64), raw[SONGS + LEN_SUFFIX]
    rows = np.repeat(np.arange(len(lens)), lens)
    cols = np.arange(rows.size) - np.repeat(np.cumsum(lens) - lens, lens)
    flat = songs[rows, cols]
    session = raw[SESSION_ID].astype(np.int64)[rows]
    keep = flat >= FIRST_TOKEN_INDEX
    # each distinct song once per session; np.unique sorts, so restore the row-group order afterwards
    pairs = np.stack([session[keep], flat[keep], rows[keep]], axis=1)
    _, first = np.unique(pairs[:, :2], axis=0, return_index=True)
    first.sort()
    user = raw[USER_IDX].astype(np.int64)[pairs[first, 2]]
    song = pairs[first, 1]
    negatives = plays.sample(user, k, rng) if k else np.empty((user.size, 0), np.int64)
    all_user = np.concatenate([user, np.repeat(user, k)])
    all_song = np.concatenate([song, negatives.ravel()])
    target = np.concatenate([np.ones(user.size, np.float32), np.zeros(user.size * k, np.float32)])
    return _PairsChunk(all_user, all_song, target)


class NcfView(LastfmView):
    """Training pairs from the training sessions; the leave-one-out sets of valid and test."""

    name = "ncf"
    columns = [SESSION_ID, USER_IDX, SONGS]
    arrays = [SONGS]

    def expected_columns(self, split: str) -> dict[str, str]:
        cols = super().expected_columns(split)
        if split != TRAIN:
            cols[START_TS] = "timestamp"
        return cols

    def chunks(self, split: str, epoch: int, train: bool) -> Iterator:
        """Fresh negatives every epoch: the chunk is made from the (cached) row group each time."""
        rng = np.random.default_rng(derive_seed(self.seed, epoch, self.cur_shard, _NEGATIVES_STREAM))
        for raw in self.row_groups(split, epoch, train):
            yield pairs_chunk(raw, self.plays, self.config.num_negatives, rng)

    def eval_loader(self, split: str, max_examples: int = 0) -> EpochLoader:
        return self.loo_loader(split, max_examples)


__all__ = ["NcfView", "pairs_chunk"]
