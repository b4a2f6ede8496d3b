"""Non-learned baselines, fitted on numpy arrays / Python iterables (no Spark), scored like the models.

- ``MostPopular``: for sessions (``fit_sessions`` + ``score(batch) -> (B, V)``) and for KKBOX/NCF rows
  (``fit(song_idx, target)`` + ``score_rows(song_idx) -> (B,)`` for AUC).
- ``CoOccurrence``: item-to-item "song a is followed by song b within W positions" counts in a scipy CSR matrix,
  scoring the next song from the last song(s) of a prefix, with a small popularity fallback.

Both take ``vocab_size`` explicitly (the manifest's ``vocab_sizes["song"]``). Session scores put -inf on padding
(0) and OOV (1), so they plug straight into ``musicrec.metrics.target_ranks``.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from musicrec.columns import FIRST_TOKEN_INDEX, LENGTHS, PAD_INDEX, SONGS
from musicrec.config import require
from musicrec.metrics import batch_rows, mask_special


def _session_array(session: Sequence[int], vocab_size: int) -> np.ndarray:
    """One session as an int64 array with padding removed; out-of-range indices are an error."""
    s = np.asarray(session, dtype=np.int64).ravel()
    s = s[s != PAD_INDEX]
    if s.size and (s.min() < 0 or s.max() >= vocab_size):
        raise ValueError(f"song index out of range [0, {vocab_size}): min {s.min()}, max {s.max()}")
    return s


class MostPopular:
    """Popularity by training play counts.

    Sessions: ``fit_sessions(sessions)`` counts every song of every training session; ``score(batch)`` returns the
    same (B, V) scores for every row (a read-only ``expand`` view; padding and OOV are -inf).
    Rows: ``fit(song_idx, target)`` counts training events per song and keeps a smoothed target mean;
    ``score_rows(song_idx)`` = count + 0.5 * smoothed mean in [0, 1], so rows are ordered by count and ties (e.g.
    unseen songs) by the smoothed mean ``(positives + smoothing * prior) / (count + smoothing)``.
    """

    def __init__(self, vocab_size: int, smoothing: float = 10.0):
        assert vocab_size > FIRST_TOKEN_INDEX, f"vocab_size must be > {FIRST_TOKEN_INDEX}, got {vocab_size}"
        require(smoothing > 0, "model.smoothing", smoothing, "must be > 0")
        self.vocab_size = int(vocab_size)
        self.smoothing = float(smoothing)
        self.counts = np.zeros(self.vocab_size, dtype=np.float64)  # (V,)
        self.positives = np.zeros(self.vocab_size, dtype=np.float64)  # (V,)
        self.prior = 0.5

    def fit_sessions(self, sessions: Iterable[Sequence[int]]) -> "MostPopular":
        counts = np.zeros(self.vocab_size, dtype=np.float64)
        for session in sessions:
            counts += np.bincount(_session_array(session, self.vocab_size), minlength=self.vocab_size)
        self.counts = counts
        return self

    def fit(self, song_idx, target=None) -> "MostPopular":
        songs = np.asarray(song_idx, dtype=np.int64).ravel()  # (N,)
        if songs.size and (songs.min() < 0 or songs.max() >= self.vocab_size):
            raise ValueError(f"song_idx out of range [0, {self.vocab_size}): min {songs.min()}, max {songs.max()}")
        self.counts = np.bincount(songs, minlength=self.vocab_size).astype(np.float64)
        if target is not None:
            y = np.asarray(target, dtype=np.float64).ravel()
            assert y.shape == songs.shape, f"target has {y.size} values, song_idx {songs.size}"
            self.positives = np.bincount(songs, weights=y, minlength=self.vocab_size)
            self.prior = float(y.mean()) if y.size else 0.5
        else:
            self.positives = np.zeros(self.vocab_size, dtype=np.float64)
            self.prior = 0.5
        return self

    def smoothed_target_mean(self) -> np.ndarray:
        """(V,) ``(positives + smoothing * prior) / (count + smoothing)``."""
        return (self.positives + self.smoothing * self.prior) / (self.counts + self.smoothing)

    def score_rows(self, song_idx) -> np.ndarray:
        """(B,) float64: the song's training count, ties broken by its smoothed target mean."""
        songs = torch.as_tensor(song_idx).cpu().numpy().astype(np.int64).ravel()  # (B,)
        if songs.size and (songs.min() < 0 or songs.max() >= self.vocab_size):
            raise ValueError(f"song_idx out of range [0, {self.vocab_size})")
        return self.counts[songs] + 0.5 * self.smoothed_target_mean()[songs]

    def score(self, batch: Mapping) -> torch.Tensor:
        """(B, V) float32 popularity for every row (an expanded view: do not modify in place)."""
        scores = mask_special(torch.from_numpy(self.counts.astype(np.float32)), inplace=True)  # (V,)
        return scores.unsqueeze(0).expand(batch_rows(batch), self.vocab_size)  # (B, V)


class CoOccurrence:
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

    def fit(self, sessions: Iterable[Sequence[int]], chunk_pairs: int = 5_000_000) -> "CoOccurrence":
        V = self.vocab_size
        matrix = sp.csr_matrix((V, V), dtype=np.float64)
        popularity = np.zeros(V, dtype=np.float64)
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        pending = 0

        def flush():
            nonlocal matrix, rows, cols, vals, pending
            if pending:
                r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
                matrix = matrix + sp.coo_matrix((v, (r, c)), shape=(V, V)).tocsr()  # duplicates are summed
            rows, cols, vals, pending = [], [], [], 0

        for session in sessions:
            s = _session_array(session, V)
            popularity += np.bincount(s, minlength=V)
            for d in range(1, min(self.window, s.size - 1) + 1):
                a, b = s[:-d], s[d:]
                keep = (a >= FIRST_TOKEN_INDEX) & (b >= FIRST_TOKEN_INDEX)
                if keep.any():
                    rows.append(a[keep])
                    cols.append(b[keep])
                    vals.append(np.full(int(keep.sum()), 1.0 / d))
                    pending += int(keep.sum())
            if pending >= chunk_pairs:
                flush()
        flush()
        if self.normalize:
            row_sums = np.asarray(matrix.sum(axis=1)).ravel()  # (V,)
            inv = np.divide(1.0, row_sums, out=np.zeros_like(row_sums), where=row_sums > 0)
            matrix = sp.diags(inv) @ matrix
        popularity[:FIRST_TOKEN_INDEX] = 0.0
        self.matrix = matrix.tocsr()
        self.popularity = popularity
        return self

    def score(self, batch: Mapping) -> torch.Tensor:
        """(B, V) float32 next-song scores for each prefix in ``batch["songs"]`` (B, T) / ``batch["lengths"]``."""
        songs = torch.as_tensor(batch[SONGS]).cpu().numpy().astype(np.int64)  # (B, T)
        assert songs.ndim == 2 and songs.shape[1] >= 1, f"songs must be (B, T) with T >= 1, got {songs.shape}"
        B, T = songs.shape
        if LENGTHS in batch:
            lengths = torch.as_tensor(batch[LENGTHS]).cpu().numpy().astype(np.int64)  # (B,)
        else:
            lengths = (songs != PAD_INDEX).sum(axis=1)
        assert lengths.shape == (B,) and (lengths <= T).all(), "lengths must be (B,) and <= T"
        if songs.size and (songs.min() < 0 or songs.max() >= self.vocab_size):
            raise ValueError(f"song index out of range [0, {self.vocab_size})")
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
        scores = (selector @ self.matrix).toarray()  # (B, V)
        top = self.popularity.max()
        if top > 0 and self.popularity_weight > 0:
            scores += self.popularity_weight * (self.popularity / top)  # (V,) broadcast
        return mask_special(torch.from_numpy(scores.astype(np.float32)), inplace=True)  # (B, V)
