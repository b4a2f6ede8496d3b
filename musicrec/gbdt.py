"""LightGBM on the KKBOX rows (the WSDM Cup 2018 winners' model family): gradient-boosted trees over the same
columns the DNN and logistic regression read (``manifest["features"]``), trained on the training split with early
stopping on the validation split, scored like the other row baselines (``score_batch``).

Features of a row (``row_features``), one float32 column each, in this order:

- every categorical column (``user_idx``, ``song_idx``, ``source_*_idx``, ...), as a LightGBM categorical feature
  (``categorical: true``; false: as plain integers);
- every multi-valued column (``artist_idx``, ``genre_idx``, ...): its first index (categorical, like the above) and
  its number of indices (``<col>_count``), the tree counterpart of the DNN's mean of the list's embeddings;
- the numeric columns (``numeric`` of the batch, standardized by the feature job).

``LightGBM.fit(train_batches, valid_batches)`` reads both splits through the run's loaders (the row view's batches,
as the DNN sees them), trains at most ``num_boost_round`` trees and keeps the best number on validation AUC
(``early_stopping_rounds``); ``score_batch`` gives the raw log-odds (AUC) and their sigmoid (log loss). The fitted
object pickles with its booster (the MLflow artifact ``baseline/lightgbm.pkl``); ``booster.model_to_string()`` is
LightGBM's own text format.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from musicrec.columns import NUMERIC, PAD_INDEX, TARGET, TRAIN, VALID
from musicrec.config import require, typed


@dataclass(frozen=True)
class LightGBMConfig:
    """The ``model:`` section of conf/lightgbm.yaml (one comment per key there)."""

    num_boost_round: int = 1000
    early_stopping_rounds: int = 50
    learning_rate: float = 0.1
    num_leaves: int = 63
    min_data_in_leaf: int = 20
    feature_fraction: float = 0.9
    bagging_fraction: float = 0.9
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    max_bin: int = 255
    cat_smooth: float = 10.0
    categorical: bool = True
    num_threads: int = 0
    log_every: int = 50

    def check(self) -> None:
        require(self.num_boost_round >= 1, "model.num_boost_round", self.num_boost_round, "must be >= 1")
        require(self.early_stopping_rounds >= 0, "model.early_stopping_rounds", self.early_stopping_rounds,
                "must be >= 0 (0 = no early stopping)")
        require(self.learning_rate > 0, "model.learning_rate", self.learning_rate, "must be > 0")
        require(self.num_leaves >= 2, "model.num_leaves", self.num_leaves, "must be >= 2")
        require(self.min_data_in_leaf >= 1, "model.min_data_in_leaf", self.min_data_in_leaf, "must be >= 1")
        for key in ("feature_fraction", "bagging_fraction"):
            value = getattr(self, key)
            require(0.0 < value <= 1.0, f"model.{key}", value, "must be in (0, 1]")
        require(self.bagging_freq >= 0, "model.bagging_freq", self.bagging_freq, "must be >= 0")
        require(self.lambda_l2 >= 0, "model.lambda_l2", self.lambda_l2, "must be >= 0")
        require(self.max_bin >= 2, "model.max_bin", self.max_bin, "must be >= 2")
        require(self.cat_smooth >= 0, "model.cat_smooth", self.cat_smooth, "must be >= 0")
        require(self.num_threads >= 0, "model.num_threads", self.num_threads, "must be >= 0 (0 = LightGBM's default)")
        require(self.log_every >= 0, "model.log_every", self.log_every, "must be >= 0 (0 = quiet)")


def feature_names(features: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(every feature's name in ``row_features`` order, the categorical ones) of a manifest's ``features``."""
    categorical = sorted(features.get("categorical") or {})
    multi = sorted(features.get("multi_valued") or {})
    numeric = list(features.get("numeric") or [])
    names = categorical + [name for col in multi for name in (col, f"{col}_count")] + numeric
    return names, categorical + multi


def row_features(batch: Mapping[str, torch.Tensor], features: Mapping[str, Any]) -> np.ndarray:
    """(B, F) float32 features of a rows batch (the module docstring lists them)."""
    columns = []
    for col in sorted(features.get("categorical") or {}):
        columns.append(torch.as_tensor(batch[col]).cpu().numpy().astype(np.float32))
    for col in sorted(features.get("multi_valued") or {}):
        ids = torch.as_tensor(batch[col]).cpu().numpy()  # (B, L), 0-padded on the right
        columns.append(ids[:, 0].astype(np.float32) if ids.shape[1] else np.zeros(len(ids), np.float32))
        columns.append((ids != PAD_INDEX).sum(axis=1).astype(np.float32))
    if features.get("numeric"):
        numeric = torch.as_tensor(batch[NUMERIC]).cpu().numpy().astype(np.float32)  # (B, F_num)
        assert numeric.shape[1] == len(features["numeric"]), f"numeric has {numeric.shape[1]} columns"
        columns.extend(numeric.T)
    return np.stack(columns, axis=1) if columns else np.zeros((0, 0), np.float32)


def _collect(batches: Iterable[Mapping[str, torch.Tensor]], features: Mapping[str, Any]) -> tuple[np.ndarray, ...]:
    """(X (N, F), y (N,)) of the labelled rows of ``batches``."""
    xs, ys = [], []
    for batch in batches:
        y = torch.as_tensor(batch[TARGET]).cpu().numpy().astype(np.float32)
        labelled = ~np.isnan(y)
        xs.append(row_features(batch, features)[labelled])
        ys.append(y[labelled])
    if not xs or not sum(len(y) for y in ys):
        raise ValueError("no labelled rows to train on")
    return np.concatenate(xs), np.concatenate(ys)


class LightGBM:
    """A LightGBM binary classifier over ``row_features`` (the module docstring describes features and fitting)."""

    def __init__(self, features: Mapping[str, Any], config: LightGBMConfig, seed: int = 42):
        self.features = {k: features.get(k) for k in ("categorical", "multi_valued", "numeric")}
        self.config, self.seed = config, int(seed)
        self.names, self.categorical = feature_names(self.features)
        self.booster = None
        self.best_iteration = 0

    def params(self) -> dict[str, Any]:
        """LightGBM's parameters for this config."""
        c = self.config
        return {"objective": "binary", "metric": ["auc", "binary_logloss"], "learning_rate": c.learning_rate,
                "num_leaves": c.num_leaves, "min_data_in_leaf": c.min_data_in_leaf,
                "feature_fraction": c.feature_fraction, "bagging_fraction": c.bagging_fraction,
                "bagging_freq": c.bagging_freq, "lambda_l2": c.lambda_l2, "max_bin": c.max_bin,
                "cat_smooth": c.cat_smooth, "num_threads": c.num_threads, "seed": self.seed, "deterministic": True,
                "force_col_wise": True, "verbosity": -1}

    def fit(self, train_batches: Iterable, valid_batches: Iterable | None = None) -> "LightGBM":
        import lightgbm as lgb

        started = time.perf_counter()
        x, y = _collect(train_batches, self.features)
        categorical = self.categorical if self.config.categorical else []
        train = lgb.Dataset(x, y, feature_name=self.names, categorical_feature=categorical, free_raw_data=True)
        sets, callbacks = [train], []
        if valid_batches is not None:
            xv, yv = _collect(valid_batches, self.features)
            sets.append(lgb.Dataset(xv, yv, reference=train, free_raw_data=True))
            if self.config.early_stopping_rounds:
                callbacks.append(lgb.early_stopping(self.config.early_stopping_rounds, first_metric_only=True,
                                                    verbose=False))
        if self.config.log_every:
            callbacks.append(lgb.log_evaluation(self.config.log_every))
        print(f"lightgbm: {len(y):,} training rows, {len(self.names)} features ({len(categorical)} categorical), "
              f"read in {time.perf_counter() - started:.1f} s", flush=True)
        self.booster = lgb.train(self.params(), train, num_boost_round=self.config.num_boost_round, valid_sets=sets,
                                 valid_names=["train", "valid"][: len(sets)], callbacks=callbacks)
        self.best_iteration = int(self.booster.best_iteration or self.booster.current_iteration())
        valid = self.booster.best_score.get("valid", {})
        print(f"lightgbm: {self.best_iteration} trees kept" + (f", validation auc {valid['auc']:.4f}" if valid else "")
              + f" ({time.perf_counter() - started:.1f} s)", flush=True)
        return self

    def logits(self, batch: Mapping[str, torch.Tensor]) -> np.ndarray:
        """(B,) float64 raw log-odds of the best number of trees."""
        assert self.booster is not None, "fit the model first"
        return self.booster.predict(row_features(batch, self.features), num_iteration=self.best_iteration,
                                    raw_score=True).astype(np.float64)

    def score_batch(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
        """A KKBOX rows batch -> ``{"scores": log-odds (B,), "probs": their sigmoid (B,), "loss": None}``."""
        scores = torch.from_numpy(self.logits(batch))
        return {"scores": scores, "probs": torch.sigmoid(scores), "loss": None}


def fit_lightgbm(section: Mapping[str, Any], data, manifest: Mapping[str, Any]) -> LightGBM:
    """LightGBM from a config's ``model`` section (typed: a bad key is a ``ConfigError`` naming it), fitted on the
    training split of ``data`` (a ``musicrec.data.Data`` of the rows view) with early stopping on its validation
    split; ``data.seed`` (``train.seed``) seeds it."""
    config = typed(LightGBMConfig, section, "model")
    model = LightGBM(manifest["features"], config, seed=data.seed)
    return model.fit(data.eval_loader(TRAIN), data.eval_loader(VALID))


__all__ = ["LightGBM", "LightGBMConfig", "feature_names", "fit_lightgbm", "row_features"]
