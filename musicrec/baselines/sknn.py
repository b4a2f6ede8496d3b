"""Session-based kNN for the next song: V-SKNN (Jannach & Ludewig 2017; Ludewig et al. 2019, "Empirical analysis
of session-based recommendation algorithms"), with scipy.sparse and numpy over a whole batch of prefixes.

For one prefix (its songs in play order, position p = 1 .. n, n = its length):

1. weights: each distinct real song of the prefix gets the weight of its latest position, ``weighting``:
   ``div`` p / n (the V-SKNN default: the last song 1), ``same`` 1 (plain SKNN), ``linear`` max(0, 1 - 0.1 (n - p))
   (the last ten songs), ``log`` 1 / log10(n - p + 1.7), ``quadratic`` (p / n)^2;
2. sample: the ``sample_size`` most recent training sessions (by ``start_ts``) that share a song with the prefix
   (0 = all of them);
3. similarity of each sampled session m (a set of songs): ``vector`` = sum of the weights of the shared songs /
   the prefix's distinct songs (V-SKNN's dot product), or ``cosine`` = that sum / (||weights|| * sqrt(|m|)) (with
   ``same`` weights: SKNN's cosine |s & m| / sqrt(|s| |m|));
4. neighbours: the ``k`` most similar sampled sessions (similarity > 0; equal similarities: the more recent first);
5. score of a song: the sum of the similarities of the neighbours that contain it (``score_decay: div``, V-SKNN's
   ``div_score`` of session-rec: each neighbour's similarity divided by the place, counted from the end of the
   prefix (1 = the last song), of the latest prefix song it contains), plus the popularity fallback
   ``popularity_weight * plays / max plays`` (as ``CoOccurrence``), so songs no neighbour has are ranked by
   popularity below every neighbour's song. Padding and OOV are never candidates.

Cost: fitting builds two sparse matrices (sessions x songs and, per song, its ``sample_size`` most recent sessions)
in a few vectorized passes. Scoring handles ``ROWS_PER_STEP`` prefixes at a time: the candidate sessions come from
the truncated per-song lists (the ``sample_size`` most recent sessions sharing a song with the prefix are always
among the union of its songs' ``sample_size`` most recent sessions, so truncating is exact), so work and memory per
prefix are bounded by (distinct songs x sample_size) candidates and sample_size x session length look-ups,
independent of the number of training sessions.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from musicrec.baselines.common import SparsePrefixScores, flat_sessions, popularity_fallback, prefixes
from musicrec.columns import FIRST_TOKEN_INDEX
from musicrec.config import require

WEIGHTINGS = ("div", "same", "linear", "log", "quadratic")
SIMILARITIES = ("vector", "cosine")
SCORE_DECAYS = ("none", "div")
ROWS_PER_STEP = 256  # prefixes whose neighbours are found at once (bounds the candidate and look-up arrays)


def position_weights(position: np.ndarray, length: np.ndarray, weighting: str) -> np.ndarray:
    """The weight of the song at ``position`` (1 = the oldest) of a prefix of ``length`` songs (broadcast)."""
    position, length = np.asarray(position, np.float64), np.asarray(length, np.float64)
    if weighting == "div":
        return position / length
    if weighting == "same":
        return np.ones(np.broadcast(position, length).shape)
    if weighting == "linear":
        return np.maximum(1.0 - 0.1 * (length - position), 0.0)
    if weighting == "log":
        return 1.0 / np.log10(length - position + 1.7)
    assert weighting == "quadratic", weighting
    return (position / length) ** 2


class SessionKNN(SparsePrefixScores):
    """V-SKNN next-song scores (the module docstring has the definition).

    ``fit(sessions, start_times=None)``: the training sessions' songs and their start times (None: the given order
    is oldest first). ``score(batch)`` / ``target_ranks(batch, targets)`` as ``CoOccurrence``'s;
    ``neighbours(batch)`` is the (B, sessions) sparse matrix of each prefix's neighbour similarities.
    """

    def __init__(self, vocab_size: int, k: int = 100, sample_size: int = 500, weighting: str = "div",
                 similarity: str = "vector", score_decay: str = "none", popularity_weight: float = 1e-6):
        assert vocab_size > FIRST_TOKEN_INDEX, f"vocab_size must be > {FIRST_TOKEN_INDEX}, got {vocab_size}"
        require(k >= 1, "model.k", k, "must be >= 1")
        require(sample_size >= 0, "model.sample_size", sample_size, "must be >= 0 (0 = every session)")
        require(weighting in WEIGHTINGS, "model.weighting", weighting, f"must be one of {', '.join(WEIGHTINGS)}")
        require(similarity in SIMILARITIES, "model.similarity", similarity,
                f"must be one of {', '.join(SIMILARITIES)}")
        require(score_decay in SCORE_DECAYS, "model.score_decay", score_decay,
                f"must be one of {', '.join(SCORE_DECAYS)}")
        require(popularity_weight >= 0.0, "model.popularity_weight", popularity_weight, "must be >= 0")
        self.vocab_size, self.k, self.sample_size = int(vocab_size), int(k), int(sample_size)
        self.weighting, self.similarity, self.score_decay = weighting, similarity, score_decay
        self.popularity_weight = float(popularity_weight)
        self.sessions = sp.csr_matrix((0, self.vocab_size), dtype=np.float32)  # (N, V) 1 = the session has the song
        self.recent = sp.csr_matrix((self.vocab_size, 0), dtype=np.float32)  # (V, N) each song's sampled sessions
        self.popularity = np.zeros(self.vocab_size, dtype=np.float64)  # (V,) training plays

    def fit(self, sessions: Iterable[Sequence[int]], start_times: Sequence | None = None) -> "SessionKNN":
        """Session i becomes row ``rank[i]`` of ``self.sessions``, rows ordered oldest first (ties: given order)."""
        sessions = list(sessions)
        n, V = len(sessions), self.vocab_size
        songs, owner = flat_sessions(sessions, V)  # (P,), (P,)
        if start_times is None:
            rank = np.arange(n)
        else:
            times = np.asarray(start_times).ravel()
            assert times.shape == (n,), f"start_times has {times.size} values for {n} sessions"
            rank = np.empty(n, np.int64)
            rank[np.argsort(times, kind="stable")] = np.arange(n)
        keep = songs >= FIRST_TOKEN_INDEX
        matrix = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (rank[owner[keep]], songs[keep])), shape=(n, V))
        matrix.sum_duplicates()
        matrix.data[:] = 1.0  # a session is the set of its songs
        by_song = matrix.T.tocsr()  # (V, N), each row's sessions in ascending order = oldest first
        by_song.sort_indices()
        if self.sample_size:
            counts = np.diff(by_song.indptr)
            position = np.arange(by_song.nnz) - np.repeat(by_song.indptr[:-1], counts)
            newest = position >= np.repeat(counts - self.sample_size, counts)  # each song's last sample_size
            by_song = sp.csr_matrix((by_song.data[newest], by_song.indices[newest],
                                     np.concatenate([[0], np.cumsum(np.minimum(counts, self.sample_size))])),
                                    shape=(V, n))
        popularity = np.bincount(songs, minlength=V).astype(np.float64)
        popularity[:FIRST_TOKEN_INDEX] = 0.0
        self.sessions, self.recent, self.popularity = matrix, by_song, popularity
        return self

    def fallback(self) -> np.ndarray:
        """(V,) float64 ``popularity_weight * popularity / max popularity`` (zeros when off)."""
        return popularity_fallback(self.popularity, self.popularity_weight)

    def sparse_scores(self, batch: Mapping) -> sp.csr_matrix:
        """(B, V) sparse: the sum of the neighbours' similarities of every song a neighbour has."""
        return (self.neighbours(batch) @ self.sessions).tocsr()

    def neighbours(self, batch: Mapping) -> sp.csr_matrix:
        """(B, N) sparse: each prefix's ``k`` neighbours (columns = training sessions, oldest first) and their
        weights in the scores: the similarities (times the ``score_decay``)."""
        songs, lengths = prefixes(batch, self.vocab_size)  # (B, T), (B,)
        steps = [self._neighbours(songs[i: i + ROWS_PER_STEP], lengths[i: i + ROWS_PER_STEP])
                 for i in range(0, len(songs), ROWS_PER_STEP)]
        return sp.vstack(steps, format="csr") if steps else sp.csr_matrix((0, self.sessions.shape[0]))

    def _prefix_songs(self, songs: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keys, positions) of each distinct real song of each prefix, sorted by key = row * V + song, with the
        song's latest position (1 = the oldest)."""
        position = np.arange(1, songs.shape[1] + 1)[None, :]  # (1, T)
        rows, cols = np.nonzero((position <= lengths[:, None]) & (songs >= FIRST_TOKEN_INDEX))  # positions ascending
        keys = rows * self.vocab_size + songs[rows, cols]
        keys, latest = np.unique(keys[::-1], return_index=True)  # the first of the reversed = the latest position
        return keys, (cols + 1)[::-1][latest]

    def _neighbours(self, songs: np.ndarray, lengths: np.ndarray) -> sp.csr_matrix:
        B, V, N = len(songs), self.vocab_size, self.sessions.shape[0]
        keys, positions = self._prefix_songs(songs, lengths)
        rows, items = keys // V, keys % V
        weights = position_weights(positions, lengths[rows], self.weighting)
        present = sp.csr_matrix((np.ones(keys.size, np.float32), (rows, items)), shape=(B, V))
        candidates = (present @ self.recent).tocsr()  # (B, N): sessions sharing a song, per song's newest
        candidates.sort_indices()
        counts = np.diff(candidates.indptr)
        position = np.arange(candidates.nnz) - np.repeat(candidates.indptr[:-1], counts)
        if self.sample_size:
            newest = position >= np.repeat(counts - self.sample_size, counts)  # the sample_size most recent
        else:
            newest = np.ones(candidates.nnz, bool)
        pair_row = np.repeat(np.arange(B), counts)[newest]  # (M,)
        pair_session = candidates.indices[newest].astype(np.int64)  # (M,)
        similarity, latest = self._similarity(pair_row, pair_session, keys, weights, positions, B)  # (M,), (M,)
        kept = np.nonzero(similarity > 0)[0]
        kept = kept[np.lexsort((-pair_session[kept], -similarity[kept], pair_row[kept]))]  # most similar, most recent
        per_row = np.bincount(pair_row[kept], minlength=B)
        within = np.arange(kept.size) - np.repeat(np.cumsum(per_row) - per_row, per_row)
        top = kept[within < self.k]
        value = similarity[top]
        if self.score_decay == "div":
            value = value / (lengths[pair_row[top]] - latest[top] + 1)  # 1 when the neighbour has the last song
        return sp.csr_matrix((value, (pair_row[top], pair_session[top])), shape=(B, N))

    def _similarity(self, pair_row: np.ndarray, pair_session: np.ndarray, keys: np.ndarray, weights: np.ndarray,
                    positions: np.ndarray, B: int) -> tuple[np.ndarray, np.ndarray]:
        """(M,) the similarity of each (prefix, session) pair: every song of the session looked up among the
        prefix's (``keys``, sorted), the weights of those found summed, then normalized; (M,) the latest prefix
        position among the songs found."""
        indptr, indices = self.sessions.indptr, self.sessions.indices
        sizes = np.diff(indptr)[pair_session]  # (M,) songs of each paired session
        pair = np.repeat(np.arange(pair_row.size), sizes)  # (E,)
        offset = np.arange(pair.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        song = indices[np.repeat(indptr[pair_session], sizes) + offset]  # (E,) the sessions' songs
        wanted = pair_row[pair] * self.vocab_size + song
        at = np.minimum(np.searchsorted(keys, wanted), max(keys.size - 1, 0))
        found = keys[at] == wanted if keys.size else np.zeros(wanted.size, bool)
        dot = np.bincount(pair[found], weights=weights[at[found]], minlength=pair_row.size)  # (M,)
        latest = np.zeros(pair_row.size, np.int64)
        np.maximum.at(latest, pair[found], positions[at[found]])
        rows = keys // self.vocab_size
        if self.similarity == "vector":
            return dot / np.maximum(np.bincount(rows, minlength=B), 1)[pair_row], latest
        norm = np.sqrt(np.bincount(rows, weights=weights**2, minlength=B))[pair_row] * np.sqrt(sizes)
        return np.divide(dot, norm, out=np.zeros_like(dot), where=norm > 0), latest


__all__ = ["ROWS_PER_STEP", "SCORE_DECAYS", "SIMILARITIES", "SessionKNN", "WEIGHTINGS", "position_weights"]
