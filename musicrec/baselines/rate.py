"""The target-rate baseline for KKBOX rows: the song's and the user's smoothed re-listen rates from training.

``fit(song_idx, user_idx, target)`` counts, per song and per user, the training rows n and their positives y, and
the global rate p (the training mean). A smoothed rate pulls a small count towards p with a pseudo-count a:
``r = (y + a * p) / (n + a)`` (``song_smoothing``, ``user_smoothing``), so an unseen song or user (n = 0) gets p.
With ``logit(x) = log(x / (1 - x))``, the row's log-odds (``combine``):

- ``mean``: (logit r_song + logit r_user) / 2, the average of the two log-odds;
- ``sum``: logit p + (logit r_song - logit p) + (logit r_user - logit p), each rate's evidence added to the prior
  as if song and user were independent (naive Bayes);
- ``song`` / ``user``: one rate alone.

``score_batch`` gives the log-odds as the ranking score (AUC) and their sigmoid as the probability (log loss).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from musicrec.baselines.common import check_range
from musicrec.columns import SONG_IDX, USER_IDX
from musicrec.config import require

COMBINE = ("mean", "sum", "song", "user")
EPS = 1e-6  # rates are clipped to [EPS, 1 - EPS] before the log-odds


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1.0 - EPS)
    return np.log(p / (1.0 - p))


class TargetRate:
    """Smoothed per-song and per-user target rates, combined in log-odds (the module docstring has the formula)."""

    def __init__(self, song_vocab: int, user_vocab: int, song_smoothing: float = 10.0, user_smoothing: float = 10.0,
                 combine: str = "mean"):
        require(song_smoothing > 0, "model.song_smoothing", song_smoothing, "must be > 0")
        require(user_smoothing > 0, "model.user_smoothing", user_smoothing, "must be > 0")
        require(combine in COMBINE, "model.combine", combine, f"must be one of {', '.join(COMBINE)}")
        self.song_vocab, self.user_vocab = int(song_vocab), int(user_vocab)
        self.song_smoothing, self.user_smoothing = float(song_smoothing), float(user_smoothing)
        self.combine = combine
        self.prior = 0.5
        self.song_rate = np.full(self.song_vocab, self.prior)  # (V_song,) smoothed rates
        self.user_rate = np.full(self.user_vocab, self.prior)  # (V_user,)

    def fit(self, song_idx, user_idx, target) -> "TargetRate":
        songs = np.asarray(song_idx, dtype=np.int64).ravel()  # (N,)
        users = np.asarray(user_idx, dtype=np.int64).ravel()  # (N,)
        y = np.asarray(target, dtype=np.float64).ravel()  # (N,)
        assert songs.shape == users.shape == y.shape, f"{songs.size} songs, {users.size} users, {y.size} targets"
        check_range(songs, self.song_vocab, "song_idx")
        check_range(users, self.user_vocab, "user_idx")
        if np.isnan(y).any():
            raise ValueError("target has nulls: fit on labelled rows (the training split)")
        self.prior = float(y.mean()) if y.size else 0.5
        self.song_rate = self._smoothed(songs, y, self.song_vocab, self.song_smoothing)
        self.user_rate = self._smoothed(users, y, self.user_vocab, self.user_smoothing)
        return self

    def _smoothed(self, index: np.ndarray, y: np.ndarray, size: int, pseudo: float) -> np.ndarray:
        """(size,) ``(positives + pseudo * prior) / (count + pseudo)``."""
        count = np.bincount(index, minlength=size)
        positives = np.bincount(index, weights=y, minlength=size)
        return (positives + pseudo * self.prior) / (count + pseudo)

    def logits(self, song_idx, user_idx) -> np.ndarray:
        """(B,) float64 the rows' combined log-odds."""
        songs = np.asarray(song_idx, dtype=np.int64).ravel()
        users = np.asarray(user_idx, dtype=np.int64).ravel()
        check_range(songs, self.song_vocab, "song_idx")
        check_range(users, self.user_vocab, "user_idx")
        song, user = _logit(self.song_rate[songs]), _logit(self.user_rate[users])
        if self.combine == "mean":
            return (song + user) / 2.0
        if self.combine == "sum":
            return song + user - _logit(np.asarray(self.prior))
        return song if self.combine == "song" else user

    def score_batch(self, batch: Mapping) -> dict[str, torch.Tensor | None]:
        """A KKBOX rows batch -> ``{"scores": log-odds (B,), "probs": their sigmoid (B,), "loss": None}``."""
        songs, users = (torch.as_tensor(batch[col]).cpu().numpy() for col in (SONG_IDX, USER_IDX))
        scores = torch.from_numpy(self.logits(songs, users))
        return {"scores": scores, "probs": torch.sigmoid(scores), "loss": None}


__all__ = ["COMBINE", "TargetRate"]
