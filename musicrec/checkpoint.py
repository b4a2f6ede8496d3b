"""Checkpoints: written atomically every epoch, loaded with ``torch.load(weights_only=True)``, verified on resume.

A run directory holds ``last.pt`` (everything needed to continue: model and optimizer state, the loop state, the
RNG states, the model config, the data fingerprint, the MLflow run id) and ``best.pt`` (the best weights so far).
Configs and histories are stored as JSON strings and the RNG states as tensors / tuples of ints, so the files load
with ``weights_only=True``: loading a checkpoint runs no pickled code.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

LAST = "last.pt"
BEST = "best.pt"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or belongs to another model / dataset; the message says which."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a truncated file or a foreign pickle
        raise CheckpointError(f"{path}: cannot load the checkpoint: {exc}") from exc


# ----------------------------------------------------------------------------------------------------------------
# RNG states (the loop's: torch CPU [+ CUDA], numpy's global, Python's random)
# ----------------------------------------------------------------------------------------------------------------
def capture_rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


# ----------------------------------------------------------------------------------------------------------------
# Compatibility
# ----------------------------------------------------------------------------------------------------------------
def to_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=list)


def check_compatible(ckpt: Mapping[str, Any], *, model_name: str, model_config: Mapping[str, Any], fingerprint: str,
                     path: str | Path = LAST) -> None:
    """Refuse to resume a checkpoint written for another model, model config or dataset."""
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {ckpt.get('format_version')!r}, expected {FORMAT_VERSION}")
    if ckpt["model_name"] != model_name:
        raise CheckpointError(f"{path}: checkpoint is of model {ckpt['model_name']!r}, not {model_name!r}; "
                              "use another --run-dir or drop --resume")
    if ckpt["fingerprint"] != fingerprint:
        raise CheckpointError(f"{path}: checkpoint was trained on data with fingerprint {ckpt['fingerprint']}, but "
                              f"--data has {fingerprint}; the vocabularies may differ, so it cannot be resumed")
    stored = json.loads(ckpt["model_config"])
    current = json.loads(to_json(dict(model_config)))
    if stored != current:
        diff = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        details = ", ".join(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in diff)
        raise CheckpointError(f"{path}: the model config differs from the checkpoint's ({details}); "
                              "resume with the same config or start a new run")


def make_checkpoint(
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: "torch.amp.GradScaler | None",
    model_name: str,
    model_config: Mapping[str, Any],
    fingerprint: str,
    loop_state: Mapping[str, Any],
    run_config: Mapping[str, Any] | None = None,
    mlflow_run_id: str | None = None,
) -> dict:
    """The ``last.pt`` payload; ``loop_state`` is the training loop's JSON-able state (epoch, best metric, history)."""
    return {
        "format_version": FORMAT_VERSION,
        "model_name": model_name,
        "model_config": to_json(dict(model_config)),
        "fingerprint": fingerprint,
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer_state": optimizer.state_dict(),
        "scaler_state": scaler.state_dict() if scaler is not None and scaler.is_enabled() else {},
        "loop_state": to_json(dict(loop_state)),
        "rng_state": capture_rng_state(),
        "run_config": to_json(dict(run_config or {})),
        "mlflow_run_id": mlflow_run_id or "",
    }


class Checkpointer:
    """Writes ``last.pt`` / ``best.pt`` under ``run_dir`` (root worker only; the loop calls it on every worker)."""

    def __init__(self, run_dir: str | Path, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled

    @property
    def last_path(self) -> Path:
        return self.run_dir / LAST

    @property
    def best_path(self) -> Path:
        return self.run_dir / BEST

    def exists(self) -> bool:
        return self.last_path.is_file()

    def save_last(self, payload: Mapping[str, Any]) -> None:
        if self.enabled:
            atomic_save(dict(payload), self.last_path)

    def save_best(self, model_state: Mapping[str, torch.Tensor], epoch: int, metric: float, model_name: str,
                  model_config: Mapping[str, Any], fingerprint: str) -> None:
        if self.enabled:
            atomic_save({"format_version": FORMAT_VERSION, "model_name": model_name,
                         "model_config": to_json(dict(model_config)), "fingerprint": fingerprint,
                         "model_state": {k: v.detach().cpu() for k, v in model_state.items()},
                         "epoch": int(epoch), "metric": float(metric)}, self.best_path)

    def load_last(self) -> dict:
        return load(self.last_path)

    def load_best(self) -> dict:
        return load(self.best_path)


__all__ = [
    "BEST",
    "CheckpointError",
    "Checkpointer",
    "LAST",
    "atomic_save",
    "capture_rng_state",
    "check_compatible",
    "load",
    "make_checkpoint",
    "restore_rng_state",
    "to_json",
]
