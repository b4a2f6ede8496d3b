"""PyTorch models: NeuMF (NCF), a DNN over averaged embeddings, logistic regression (KKBOX) and a Bi-GRU with
attention over Last.fm sessions.

Every model is one small ``nn.Module`` with a typed ``@dataclass`` config in ``.config``; ``forward(batch)`` returns
logits ((B,) for the binary models, (B, V_song) for ``gru``) and ``loss(batch, logits)`` a scalar. Vocabulary
sizes always come from the feature job's ``_MANIFEST.json`` (``manifest["vocab_sizes"]`` and
``manifest["features"]``), never from constants.

Use::

    model = build_model("dnn", manifest, config["model"])        # config: the YAML ``model`` section, a plain dict
    ckpt = {"model_name": "dnn", "model_config": dataclasses.asdict(model.config), ...}
    model = model_from_config(ckpt["model_name"], manifest, ckpt["model_config"])   # same function
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from musicrec.config import ConfigError, typed
from musicrec.models.dnn import DNN, DNNConfig
from musicrec.models.gru import GRUConfig, SessionGRU
from musicrec.models.logreg import LogReg, LogRegConfig
from musicrec.models.ncf import NCFConfig, NeuMF

MODEL_CONFIGS: dict[str, type] = {
    "ncf": NCFConfig,
    "dnn": DNNConfig,
    "gru": GRUConfig,
    "logreg": LogRegConfig,
}

MODEL_CLASSES: dict[str, type] = {
    "ncf": NeuMF,
    "dnn": DNN,
    "gru": SessionGRU,
    "logreg": LogReg,
}

# keys a YAML ``model`` section may carry besides the dataclass fields; they must agree with ``name``
_NAME_KEYS = ("name",)


def make_config(name: str, config: Mapping[str, Any] | None = None):
    """The dataclass config of model ``name``: ``config`` (a plain dict) merged over the dataclass defaults, typed
    with ``musicrec.config.typed`` (an unknown key, a value of the wrong type or out of range is a ``ConfigError``
    naming ``model.<key>``; an int is accepted for a float field, a list for a tuple field). A ``name`` key, if
    present, must equal ``name``.
    """
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(MODEL_CONFIGS)}")
    config = dict(config or {})
    for key in _NAME_KEYS:
        if key in config:
            value = config.pop(key)
            if value != name:
                raise ConfigError(f"model.{key} = {value!r}, but model {name!r} was requested")
    return typed(MODEL_CONFIGS[name], config, "model")


def build_model(name: str, manifest: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> torch.nn.Module:
    """Build model ``name`` in {"ncf", "dnn", "gru", "logreg"} for the dataset described by ``manifest``.

    ``config`` is the YAML ``model`` section (plain dict, may be a ``dataclasses.asdict`` of a stored config),
    merged over the dataclass defaults. A vocabulary the model needs that the manifest lacks is a ``ValueError``.
    """
    cfg = make_config(name, config)
    return MODEL_CLASSES[name].from_manifest(manifest, cfg)


# a checkpoint stores (name, dataclasses.asdict(model.config)); rebuilding is the same operation
model_from_config = build_model


__all__ = [
    "DNN",
    "DNNConfig",
    "GRUConfig",
    "LogReg",
    "LogRegConfig",
    "MODEL_CLASSES",
    "MODEL_CONFIGS",
    "NCFConfig",
    "NeuMF",
    "SessionGRU",
    "build_model",
    "make_config",
    "model_from_config",
]
