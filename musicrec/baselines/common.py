"""What the baselines share: flattening sessions, reading prefixes from a batch, and counting target ranks from a
sparse (B, V) score matrix plus one (V,) fallback without building the (B, V) scores."""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from musicrec.columns import FIRST_TOKEN_INDEX, LENGTHS, PAD_INDEX, SONGS
from musicrec.metrics import mask_special


def flat_sessions(sessions: Iterable[Sequence[int]], vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(songs (N,), session number (N,)): every session's songs back to back, padding removed; an out-of-range
    index is an error."""
    arrays = [np.asarray(session, dtype=np.int64).ravel() for session in sessions]
    if not arrays:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    songs = np.concatenate(arrays)  # (N,)
    owner = np.repeat(np.arange(len(arrays)), [a.size for a in arrays])  # (N,)
    keep = songs != PAD_INDEX
    songs, owner = songs[keep], owner[keep]
    check_range(songs, vocab_size, "song index")
    return songs, owner


def check_range(index: np.ndarray, size: int, what: str) -> None:
    """A ``ValueError`` when an index of ``index`` is outside [0, size)."""
    if index.size and (index.min() < 0 or index.max() >= size):
        raise ValueError(f"{what} out of range [0, {size}): min {index.min()}, max {index.max()}")


def prefixes(batch: Mapping, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(songs (B, T) int64, lengths (B,)) of a ``next_song`` batch; ``lengths`` defaults to the non-padding count."""
    songs = torch.as_tensor(batch[SONGS]).cpu().numpy().astype(np.int64)  # (B, T)
    assert songs.ndim == 2 and songs.shape[1] >= 1, f"songs must be (B, T) with T >= 1, got {songs.shape}"
    B, T = songs.shape
    if LENGTHS in batch:
        lengths = torch.as_tensor(batch[LENGTHS]).cpu().numpy().astype(np.int64)  # (B,)
    else:
        lengths = (songs != PAD_INDEX).sum(axis=1)
    assert lengths.shape == (B,) and (lengths <= T).all(), "lengths must be (B,) and <= T"
    check_range(songs, vocab_size, "song index")
    return songs, lengths


def count_above(sorted_scores: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(B,) how many of ``sorted_scores`` (ascending) are strictly greater than each ``t``."""
    return sorted_scores.size - np.searchsorted(sorted_scores, t, side="right")


def real_song_scores(scores: np.ndarray) -> np.ndarray:
    """(V,) float32 copy of one score per song with padding and OOV at -inf, as ``mask_special`` leaves them."""
    out = scores.astype(np.float32)
    out[:FIRST_TOKEN_INDEX] = -np.inf
    return out


def popularity_fallback(popularity: np.ndarray, weight: float) -> np.ndarray:
    """(V,) float64 ``weight * popularity / max popularity`` (zeros when off or without plays)."""
    top = popularity.max() if popularity.size else 0.0
    if top > 0 and weight > 0:
        return weight * (popularity / top)
    return np.zeros(popularity.shape, dtype=np.float64)


class SparsePrefixScores:
    """A next-song baseline whose scores for a batch are a sparse (B, V) matrix (``sparse_scores(batch)``) plus the
    same (V,) ``fallback()`` for every row: ``score`` gives the dense (B, V) scores, ``target_ranks`` the ranks they
    imply without building them."""

    vocab_size: int

    def sparse_scores(self, batch: Mapping) -> sp.csr_matrix:
        raise NotImplementedError

    def fallback(self) -> np.ndarray:
        raise NotImplementedError

    def score(self, batch: Mapping) -> torch.Tensor:
        """(B, V) float32 next-song scores (padding and OOV -inf) for each prefix in ``batch["songs"]`` (B, T) /
        ``batch["lengths"]``."""
        scores = self.sparse_scores(batch).toarray()  # (B, V)
        scores += self.fallback()  # (V,) broadcast
        return mask_special(torch.from_numpy(scores.astype(np.float32)), inplace=True)  # (B, V)

    def target_ranks(self, batch: Mapping, targets) -> torch.Tensor:
        """(B,) ``metrics.target_ranks(self.score(batch), targets)`` without the (B, V) scores: a row scores
        sparse + fallback on the songs of its sparse vector and the fallback alone elsewhere, so its rank counts the
        fallback scores above the target (sorted once) and corrects them on those songs."""
        targets = torch.as_tensor(targets).cpu().numpy().astype(np.int64)  # (B,)
        rows = self.sparse_scores(batch).tocsr()  # (B, V) sparse
        rows.sum_duplicates()
        fallback = self.fallback()  # (V,) float64
        base = real_song_scores(fallback)  # (V,) float32, what a song outside the row's vector scores
        owner = np.repeat(np.arange(len(targets)), np.diff(rows.indptr))  # (nnz,) the row of each entry
        cols = rows.indices.astype(np.int64)
        own = (rows.data + fallback[cols]).astype(np.float32)  # (nnz,) the same sums as score(), cast alike
        t = base[targets]  # (B,)
        is_target = cols == targets[owner]
        t[owner[is_target]] = own[is_target]
        above = count_above(np.sort(base[FIRST_TOKEN_INDEX:]), t)  # (B,) as if every row had the fallback only
        correction = (own > t[owner]).astype(np.int64) - (base[cols] > t[owner])  # those songs score own instead
        above += np.bincount(owner[~is_target], weights=correction[~is_target], minlength=len(targets)).astype(np.int64)
        return torch.from_numpy(1 + above)


__all__ = ["SparsePrefixScores", "check_range", "count_above", "flat_sessions", "popularity_fallback", "prefixes",
           "real_song_scores"]
