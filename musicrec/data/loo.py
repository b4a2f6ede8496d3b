"""Songs a user never played in training: the negatives of NCF's training pairs and of the leave-one-out sets.

``TrainPlays`` holds every (user, song) of the training sessions as sorted keys ``user * V_song + song``, built once
on first use; NCF's training pairs draw their negatives from it by rejection (``sample``). The
leave-one-out set of a split (NCF's evaluation; any user-level scorer can use it): per user, the last non-OOV song
of its last session in the split, ``candidates`` (B, 1 + N) = [that song, N sampled songs the user played neither
in training nor in that session (with ``split.protocol: leave_one_out`` the test row's first song is the valid
target, a real interaction, so it is never a negative)]; a user with fewer than N such songs is left out, with a
warning; built once per split with a fixed seed, its users dealt round-robin over the shards.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from musicrec.columns import CANDIDATES, FIRST_TOKEN_INDEX, SESSION_ID, SONGS, START_TS, USER_IDX
from musicrec.data.manifest import DataError, check_indices
from musicrec.data.reader import read_table
from musicrec.metrics import sample_negative_items
from musicrec.seeding import derive_seed

_LOO_STREAM = 0xC0FFEE  # the leave-one-out sets' seed stream: derive_seed(seed, _LOO_STREAM, split number)
_SPLIT_NUMBER = {"valid": 1, "test": 2}  # any other split: 3


class TrainPlays:
    """The (user, song) pairs played in the training sessions at ``path`` (songs of a ``song_vocab`` vocabulary)."""

    def __init__(self, path: Path, song_vocab: int):
        self.path, self.song_vocab = path, song_vocab
        self._keys: np.ndarray | None = None

    @property
    def keys(self) -> np.ndarray:
        """Sorted unique ``user * V_song + song`` of every (user, song) played in the training sessions."""
        if self._keys is None:
            table = read_table(self.path, [USER_IDX, SONGS])
            values, offsets = table[SONGS]
            users = np.repeat(table[USER_IDX].astype(np.int64), np.diff(offsets))
            self._keys = np.unique(users * self.song_vocab + values)
        return self._keys

    def is_known(self, users: np.ndarray, songs: np.ndarray) -> np.ndarray:
        keys = self.keys
        query = users.astype(np.int64) * self.song_vocab + songs
        pos = np.clip(np.searchsorted(keys, query), 0, max(keys.size - 1, 0))
        return keys[pos] == query if keys.size else np.zeros(query.shape, bool)

    def sample(self, users: np.ndarray, k: int, rng: np.random.Generator, rounds: int = 20) -> np.ndarray:
        """``k`` songs per user (users.size, k) drawn uniformly from the real songs the user never played in training."""
        neg = rng.integers(FIRST_TOKEN_INDEX, self.song_vocab, size=(users.size, k))
        flat, owner = neg.reshape(-1), np.repeat(users, k)  # (users.size * k,) views / copies, row-major
        todo = np.arange(flat.size)  # only redrawn entries need checking again: same draws as checking all
        for _ in range(rounds):
            bad = todo[self.is_known(owner[todo], flat[todo])]
            if not bad.size:
                break
            flat[bad] = rng.integers(FIRST_TOKEN_INDEX, self.song_vocab, size=bad.size)
            todo = bad
        return neg

    def songs_of(self, user: int) -> set[int]:
        """The songs ``user`` played in training."""
        V = self.song_vocab
        lo, hi = np.searchsorted(self.keys, [user * V, (user + 1) * V])
        return set((self.keys[lo:hi] - user * V).tolist())


class _ArraysChunk:
    """Already-materialized examples (the leave-one-out set)."""

    def __init__(self, data: dict[str, np.ndarray]):
        self.data = data
        self.n = int(len(next(iter(data.values()))))

    def keys(self) -> tuple[np.ndarray, ...]:
        """Each example's key for the evaluation sample: its user."""
        return (self.data[USER_IDX],)

    def take(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {key: value[idx] for key, value in self.data.items()}


def _held_out(path: Path, song_vocab: int, user_vocab: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(users, held-out song, the songs of each held-out row): each user's last session (by start, then session id)
    and its last real song."""
    table = read_table(path, [SESSION_ID, USER_IDX, START_TS, SONGS])
    values, offsets = table[SONGS]
    check_indices(path, SONGS, values, song_vocab)
    check_indices(path, USER_IDX, table[USER_IDX], user_vocab)
    order = np.lexsort((table[SESSION_ID], table[START_TS], table[USER_IDX]))
    users_sorted = table[USER_IDX][order]
    last = order[np.r_[users_sorted[1:] != users_sorted[:-1], True]] if order.size else order
    users, held, rows = [], [], []
    for row in last:
        session = values[offsets[row]: offsets[row + 1]]
        real = session[session >= FIRST_TOKEN_INDEX]
        if real.size:
            users.append(int(table[USER_IDX][row]))
            held.append(int(real[-1]))
            rows.append(real)
    return np.asarray(users, np.int64), np.asarray(held, np.int64), rows


def leave_one_out(path: Path, split: str, plays: TrainPlays, *, negatives: int, seed: int,
                  user_vocab: int) -> dict[str, np.ndarray]:
    """The leave-one-out set of the split at ``path``: ``user_idx`` (B,), ``candidates`` (B, 1 + negatives);
    ``plays``: the training split's."""
    users, held, rows = _held_out(path, plays.song_vocab, user_vocab)
    rng = np.random.default_rng(derive_seed(seed, _LOO_STREAM, _SPLIT_NUMBER.get(split, 3)))
    sampled = np.empty((users.size, negatives), np.int64)
    kept = np.ones(users.size, bool)
    for i, user in enumerate(users):
        # songs the user played neither in training nor in the held-out row (under leave_one_out the test row is
        # [valid target, test target]: the valid target is never a negative of the test)
        exclude = plays.songs_of(int(user)) | set(rows[i].tolist())
        try:
            sampled[i] = sample_negative_items(rng, plays.song_vocab, exclude, negatives)
        except ValueError:  # a user who played nearly every song: no fair candidate set
            kept[i] = False
    if not kept.any() and users.size:
        raise DataError(f"{path}: no user has {negatives} songs it never played: lower data.loo_negatives")
    if not kept.all():
        print(f"warning: {path}: {int((~kept).sum())} of {users.size} users played all but fewer than {negatives} "
              "songs and are left out of the leave-one-out set (lower data.loo_negatives to keep them)",
              file=sys.stderr, flush=True)
    return {USER_IDX: users[kept], CANDIDATES: np.concatenate([held[:, None], sampled], axis=1)[kept]}


def shard_of(loo: dict[str, np.ndarray], cur_shard: int, shard_count: int) -> _ArraysChunk:
    """The users of shard ``cur_shard`` (round-robin) of a leave-one-out set, as one chunk."""
    idx = np.arange(cur_shard, len(loo[USER_IDX]), shard_count)
    return _ArraysChunk({k: v[idx] for k, v in loo.items()})


__all__ = ["TrainPlays", "leave_one_out", "shard_of"]
