"""A baseline built from a run config's ``model`` section and fitted on the run's training split: what
``jobs/train.py --model pop|cooc|sknn|rate|lightgbm`` fits before evaluating (``musicrec.train.run``)."""

from __future__ import annotations

from typing import Any, Mapping

from musicrec.baselines.cooc import CoOccurrence
from musicrec.baselines.popularity import MostPopular
from musicrec.baselines.rate import TargetRate
from musicrec.baselines.sknn import SessionKNN
from musicrec.columns import SONG_IDX, START_TS, USER_IDX
from musicrec.config import ConfigError

CLASSES = {"pop": MostPopular, "cooc": CoOccurrence, "sknn": SessionKNN, "rate": TargetRate}
NAMES = (*CLASSES, "lightgbm")  # every baseline jobs/train.py fits


def fit_baseline(model: str, section: dict, data, kind: str, manifest: Mapping[str, Any]):
    """``model`` fitted on ``data`` (a ``musicrec.data.Data``; ``kind`` its evaluation protocol): pop on the
    training sessions (Last.fm) or rows (KKBOX), cooc on the sessions, sknn on the sessions and their start times,
    rate on the rows' songs, users and targets, lightgbm (``musicrec.gbdt``) on the training rows with early
    stopping on the validation rows; the number of trees it keeps is written into ``section`` as
    ``best_iteration``, so the logged config records it. A bad key or value of ``section`` is a ``ConfigError``."""
    assert model in NAMES, f"unknown baseline {model!r}"
    if model == "lightgbm":
        from musicrec import gbdt  # imports LightGBM only when it is used

        fitted = gbdt.fit_lightgbm(section, data, manifest)
        section["best_iteration"] = fitted.best_iteration
        return fitted
    vocab = (data.song_vocab, int(manifest["vocab_sizes"]["user"])) if model == "rate" else (data.song_vocab,)
    try:
        baseline = CLASSES[model](*vocab, **section)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model section of the {model} config: {exc}") from exc
    if model == "cooc":
        return baseline.fit(data.train_sessions())
    if model == "sknn":
        return baseline.fit(data.train_sessions(), data.train_rows([START_TS])[START_TS])
    if kind == "binary":
        target = manifest["features"]["target"]
        rows = data.train_rows([SONG_IDX, USER_IDX, target])
        if model == "rate":
            return baseline.fit(rows[SONG_IDX], rows[USER_IDX], rows[target])
        return baseline.fit(rows[SONG_IDX], rows[target])
    return baseline.fit_sessions(data.train_sessions())


__all__ = ["CLASSES", "NAMES", "fit_baseline"]
