"""Item-to-item co-occurrence: the next song scored from the songs that followed the prefix's last song(s)."""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from musicrec.baselines.common import SparsePrefixScores, flat_sessions, popularity_fallback, prefixes
from musicrec.columns import FIRST_TOKEN_INDEX, PAD_INDEX
from musicrec.config import require


class CoOccurrence(SparsePrefixScores):
    """Item-to-item next-song scores from training sessions.

    ``fit(sessions)``: for each pair (s[i], s[i + d]) with 1 <= d <= ``window`` adds weight ``1 / d`` to
    ``M[s[i], s[i + d]]`` (a scipy CSR (V, V) matrix; padding and OOV are skipped); with ``normalize`` every row is
    divided by its sum, so a row is an estimate of P(next | song).
    ``score(batch)``: sum over the last ``history`` songs of the prefix (most recent first) of
    ``history_decay ** j * M[song]``, plus ``popularity_weight * popularity / max popularity`` so every candidate
    has a score (a song with no co-occurrence, or an unseen last song, falls back to popularity). Keep
    ``popularity_weight`` below the smallest co-occurrence weight that should win (default 1e-6).
    """

    def __init__(
        self,
        vocab_size: int,
        window: int = 3,
        history: int = 1,
        history_decay: float = 0.5,
        popularity_weight: float = 1e-6,
        normalize: bool = True,
    ):
        assert vocab_size > FIRST_TOKEN_INDEX, f"vocab_size must be > {FIRST_TOKEN_INDEX}, got {vocab_size}"
        require(window >= 1, "model.window", window, "must be >= 1")
        require(history >= 1, "model.history", history, "must be >= 1")
        require(0.0 < history_decay <= 1.0, "model.history_decay", history_decay, "must be in (0, 1]")
        require(popularity_weight >= 0.0, "model.popularity_weight", popularity_weight, "must be >= 0")
        self.vocab_size = int(vocab_size)
        self.window = int(window)
        self.history = int(history)
        self.history_decay = float(history_decay)
        self.popularity_weight = float(popularity_weight)
        self.normalize = bool(normalize)
        self.matrix = sp.csr_matrix((self.vocab_size, self.vocab_size), dtype=np.float64)  # (V, V)
        self.popularity = np.zeros(self.vocab_size, dtype=np.float64)  # (V,)

    def fit(self, sessions: Iterable[Sequence[int]]) -> "CoOccurrence":
        V = self.vocab_size
        songs, owner = flat_sessions(sessions, V)  # (N,), (N,)
        popularity = np.bincount(songs, minlength=V).astype(np.float64)
        matrix = sp.csr_matrix((V, V), dtype=np.float64)
        for d in range(1, self.window + 1):  # one sparse matrix per distance; duplicates are summed
            a, b = songs[:-d], songs[d:]
            keep = (owner[:-d] == owner[d:]) & (a >= FIRST_TOKEN_INDEX) & (b >= FIRST_TOKEN_INDEX)
            if keep.any():
                pairs = (np.full(int(keep.sum()), 1.0 / d), (a[keep].astype(np.int32), b[keep].astype(np.int32)))
                matrix = matrix + sp.coo_matrix(pairs, shape=(V, V)).tocsr()
        if self.normalize:
            row_sums = np.asarray(matrix.sum(axis=1)).ravel()  # (V,)
            inv = np.divide(1.0, row_sums, out=np.zeros_like(row_sums), where=row_sums > 0)
            matrix = sp.diags(inv) @ matrix
        popularity[:FIRST_TOKEN_INDEX] = 0.0
        self.matrix = matrix.tocsr()
        self.popularity = popularity
        return self

    def fallback(self) -> np.ndarray:
        """(V,) float64 ``popularity_weight * popularity / max popularity`` (zeros when off)."""
        return popularity_fallback(self.popularity, self.popularity_weight)

    def sparse_scores(self, batch: Mapping) -> sp.csr_matrix:
        """(B, V) sparse: sum over the last ``history`` songs of each prefix of ``history_decay ** j * M[song]``."""
        songs, lengths = prefixes(batch, self.vocab_size)  # (B, T), (B,)
        B, T = songs.shape
        sel_rows, sel_cols, sel_vals = [], [], []
        for j in range(self.history):
            pos = lengths - 1 - j  # (B,)
            ok = pos >= 0
            song = np.where(ok, songs[np.arange(B), np.clip(pos, 0, T - 1)], PAD_INDEX)  # (B,)
            ok &= song >= FIRST_TOKEN_INDEX
            sel_rows.append(np.nonzero(ok)[0])
            sel_cols.append(song[ok])
            sel_vals.append(np.full(int(ok.sum()), self.history_decay**j))
        selector = sp.csr_matrix(
            (np.concatenate(sel_vals), (np.concatenate(sel_rows), np.concatenate(sel_cols))),
            shape=(B, self.vocab_size),
        )  # (B, V): weight of each history song
        return (selector @ self.matrix).tocsr()  # (B, V)


__all__ = ["CoOccurrence"]
