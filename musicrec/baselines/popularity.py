"""Popularity by training play counts, for Last.fm prefixes (one ranking of all songs) and KKBOX rows."""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from musicrec.baselines.common import check_range, count_above, flat_sessions, real_song_scores
from musicrec.columns import FIRST_TOKEN_INDEX, SONG_IDX
from musicrec.config import require
from musicrec.metrics import batch_rows, mask_special


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
        songs, _ = flat_sessions(sessions, self.vocab_size)
        self.counts = np.bincount(songs, minlength=self.vocab_size).astype(np.float64)
        return self

    def fit(self, song_idx, target=None) -> "MostPopular":
        songs = np.asarray(song_idx, dtype=np.int64).ravel()  # (N,)
        check_range(songs, self.vocab_size, "song_idx")
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
        check_range(songs, self.vocab_size, "song_idx")
        return self.counts[songs] + 0.5 * self.smoothed_target_mean()[songs]

    def score_batch(self, batch: Mapping) -> dict[str, torch.Tensor | None]:
        """A KKBOX rows batch -> ``{"scores": score_rows (B,), "probs": the smoothed target mean (B,), "loss": None}``
        (the binary protocol's scorer output)."""
        songs = torch.as_tensor(batch[SONG_IDX]).cpu()
        return {"scores": torch.as_tensor(self.score_rows(songs), dtype=torch.float64),
                "probs": torch.as_tensor(self.smoothed_target_mean()[songs.numpy()], dtype=torch.float64), "loss": None}

    def score(self, batch: Mapping) -> torch.Tensor:
        """(B, V) float32 popularity for every row (an expanded view: do not modify in place)."""
        scores = mask_special(torch.from_numpy(self.counts.astype(np.float32)), inplace=True)  # (V,)
        return scores.unsqueeze(0).expand(batch_rows(batch), self.vocab_size)  # (B, V)

    def target_ranks(self, batch: Mapping, targets) -> torch.Tensor:
        """(B,) ``metrics.target_ranks(self.score(batch), targets)``: every row has the same scores, so a rank is
        1 + the real songs with a higher count (a binary search in the sorted counts)."""
        scores = real_song_scores(self.counts)  # (V,)
        t = scores[torch.as_tensor(targets).cpu().numpy().astype(np.int64)]  # (B,)
        return torch.from_numpy(1 + count_above(np.sort(scores[FIRST_TOKEN_INDEX:]), t))

    def score_candidates(self, candidates) -> torch.Tensor:
        """(B, C) float32 popularity of each row's candidate songs (the leave-one-out protocol)."""
        scores = torch.from_numpy(real_song_scores(self.counts))  # (V,)
        return scores[torch.as_tensor(candidates).cpu().long()]


__all__ = ["MostPopular"]
