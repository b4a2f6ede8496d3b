"""The Last.fm views' common part (``LastfmView``: the baselines' sessions, the leave-one-out sets) and the
``next_song`` view (Last.fm: gru, pop, cooc): one example = one prefix of a session.

A ``next_song`` batch has ``songs`` (B, T) 0-padded on the right, ``song_tags`` (B, T, K), ``lengths`` (B,),
``next_song`` (B,), ``user_idx`` (B,), ``session_id`` (B,); every position t >= 1 of every session predicts
``songs[t]`` from ``songs[:t]`` cut to the last ``max_len`` songs.
"""

from __future__ import annotations

import functools

import numpy as np

from musicrec.columns import (LENGTHS, NEXT_SONG, PAD_INDEX, SESSION_ID, SONG_TAGS, SONGS, START_TS, TRAIN,
                              USER_IDX)
from musicrec.data.batching import EpochLoader
from musicrec.data.loo import TrainPlays, leave_one_out, shard_of
from musicrec.data.manifest import check_columns, check_indices
from musicrec.data.reader import LEN_SUFFIX, read_table
from musicrec.data.view import View

DEFAULT_MAX_LEN = 50  # songs a prefix keeps when neither data.max_len nor the manifest's max_session_length is set


class LastfmView(View):
    """What the Last.fm views share: session columns, the training plays, leave-one-out sets, the baselines' feed."""

    id_col = SESSION_ID

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.plays = TrainPlays(self.path(TRAIN), self.song_vocab)  # built on first use
        self._loo: dict[str, dict[str, np.ndarray]] = {}

    def expected_columns(self, split: str) -> dict[str, str]:
        return {SESSION_ID: "int", USER_IDX: "int", SONGS: "array", SONG_TAGS: "array"}

    def loo_loader(self, split: str, max_examples: int = 0) -> EpochLoader:
        """The leave-one-out set of ``split`` (NCF's evaluation; any user-level scorer can use it): every user, or
        with ``max_examples`` > 0 the split's fixed sample of that many users."""
        check_columns(self.path(split), {SESSION_ID: "int", USER_IDX: "int", START_TS: "timestamp", SONGS: "array"})
        return self.loader(functools.partial(self._loo_chunks, split, max_examples), train=False)

    def _loo_chunks(self, split: str, max_examples: int):
        if split not in self._loo:
            self._loo[split] = leave_one_out(self.path(split), split, self.plays, negatives=self.config.loo_negatives,
                                             seed=self.seed, user_vocab=self.vocab_limits.get(USER_IDX, 2**62))
        chunk = shard_of(self._loo[split], self.cur_shard, self.shard_count)
        sample = self.sample(("users", split, max_examples), lambda: (self._loo[split][USER_IDX],))
        yield chunk if sample is None else sample.subset(chunk)

    def train_sessions(self) -> list[np.ndarray]:
        """Every training session's songs (the input of MostPopular.fit_sessions / CoOccurrence.fit)."""
        table = read_table(self.path(TRAIN), [SONGS])
        values, offsets = table[SONGS]
        check_indices(self.path(TRAIN), SONGS, values, self.song_vocab)
        return [values[offsets[i]: offsets[i + 1]] for i in range(offsets.size - 1)]


def _prefix_keys(session_id: np.ndarray, per_row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(session_id, t) of the ``per_row[i]`` prefixes t = 1, 2, ... of each session i."""
    starts = np.cumsum(per_row) - per_row
    t = np.arange(int(per_row.sum())) - np.repeat(starts, per_row) + 1
    return np.repeat(session_id, per_row), t


class _SessionsChunk:
    """Prefix examples of a row group of sessions, kept as (row, t) pairs; tensors are built only for a batch."""

    def __init__(self, data: dict[str, np.ndarray], top_k: int, max_len: int):
        self.songs = data[SONGS]  # (n, S) int32
        lens = data[SONGS + LEN_SUFFIX].astype(np.int64)  # (n,)
        n, width = self.songs.shape
        tags = data[SONG_TAGS]  # (n, W)
        if tags.shape[1] < width * top_k:
            tags = np.pad(tags, ((0, 0), (0, width * top_k - tags.shape[1])))
        self.tags = tags[:, : width * top_k].reshape(n, width, top_k)  # (n, S, K)
        self.user = data[USER_IDX]
        self.session_id = data[SESSION_ID]
        self.max_len = max_len
        per_row = np.maximum(lens - 1, 0)  # positions t = 1 .. len - 1
        self.ex_row, self.ex_t = _prefix_keys(np.arange(n), per_row)
        self.n = int(self.ex_row.size)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.songs, self.tags, self.user, self.session_id, self.ex_row, self.ex_t))

    def keys(self) -> tuple[np.ndarray, np.ndarray]:
        """Each example's key for the evaluation sample: (session_id, t)."""
        return self.session_id[self.ex_row], self.ex_t

    def take(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        rows, t = self.ex_row[idx], self.ex_t[idx]  # (B,), (B,)
        start = np.maximum(t - self.max_len, 0)
        lengths = t - start  # (B,)
        T = int(lengths.max())
        steps = np.arange(T)[None, :]  # (1, T)
        valid = steps < lengths[:, None]  # (B, T)
        cols = np.where(valid, start[:, None] + steps, 0)  # (B, T)
        songs = np.where(valid, self.songs[rows[:, None], cols], PAD_INDEX)  # (B, T)
        tags = np.where(valid[..., None], self.tags[rows[:, None], cols], PAD_INDEX)  # (B, T, K)
        return {
            SONGS: songs,
            SONG_TAGS: tags,
            LENGTHS: lengths,
            NEXT_SONG: self.songs[rows, t],
            USER_IDX: self.user[rows],
            SESSION_ID: self.session_id[rows],
        }


class SessionsView(LastfmView):
    """Session prefixes, every split read the same way."""

    name = "next_song"
    columns = [SESSION_ID, USER_IDX, SONGS, SONG_TAGS]
    arrays = [SONGS, SONG_TAGS]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.top_k = int(self.manifest.get("top_k_tags") or 1)
        self.max_len = int(self.config.max_len or self.manifest.get("max_session_length") or DEFAULT_MAX_LEN)

    def example_keys(self, split: str) -> tuple[np.ndarray, ...]:
        """(session_id, t) of every prefix t = 1 .. length - 1 of every session of ``split``."""
        table = read_table(self.path(split), [SESSION_ID, SONGS])
        per_row = np.maximum(np.diff(table[SONGS][1]) - 1, 0)
        return _prefix_keys(table[SESSION_ID], per_row)

    def make_chunk(self, raw: dict[str, np.ndarray]) -> _SessionsChunk:
        return _SessionsChunk(raw, self.top_k, self.max_len)


__all__ = ["LastfmView", "SessionsView"]
