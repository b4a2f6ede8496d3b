"""The distributed seam: the few collective operations the training loop needs, behind one small interface.

The loop (``musicrec.training``) talks only to a ``Backend``; it never imports Horovod or torch.distributed. A
backend provides:

==========================================  ==========================================================================
``rank``, ``size``, ``local_rank``          this worker's global rank, the number of workers, its rank on this host
``is_root``                                 ``rank == 0``: only the root logs, writes MLflow records and checkpoints
``allreduce_sum(x)``                        sum over workers of a tensor, or of a dict of tensors / floats (same
                                            structure back; floats come back as floats)
``allgather(t)``                            concatenation along dim 0 of every worker's tensor (sizes may differ),
                                            in rank order (used for AUC over all workers' predictions)
``broadcast_parameters(model, optimizer)``  make every worker start from the root's weights and optimizer state
``wrap_optimizer(optimizer, model)``        return the optimizer to step with (gradient averaging lives here)
``optimizer_step(optimizer, scaler, ...)``  unscale (AMP), clip and step; a backend whose optimizer averages
                                            gradients asynchronously overrides it to synchronize before clipping
``barrier()``                               wait for every worker
==========================================  ==========================================================================

``SingleProcess`` is the identity implementation. A multi-worker implementation (Horovod now, torch.distributed
later) subclasses ``Backend`` in this file, registers itself in ``BACKENDS`` with a ``detect()`` that recognizes its
launcher, and is then picked by ``get_backend("auto")`` (what ``jobs/train.py`` calls).

What the rest of the code assumes of a multi-worker backend:

- ``allreduce_sum`` gets CPU float64 tensors (per-epoch sums) and, once per training step, a one-element float
  tensor (the loop's "do all workers still have a batch?" check, so shards of unequal size do not hang a collective);
  ``allgather`` gets CPU float tensors of different lengths per worker.
- The loaders shard by Parquet row group (``cur_shard = rank``, ``shard_count = size``): every split needs at least
  ``size`` row groups.
- Only the root writes checkpoints; on ``--resume`` every worker reads ``last.pt``, so the run directory must be
  visible to all workers (one host, or a shared file system).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn


class Backend:
    """Interface; see the module docstring. Subclasses implement every method that raises ``NotImplementedError``."""

    name = "abstract"

    @classmethod
    def detect(cls) -> bool:
        """True when this process was launched for this backend (e.g. by ``horovodrun``); used by ``auto``."""
        return False

    @property
    def rank(self) -> int:
        raise NotImplementedError

    @property
    def size(self) -> int:
        raise NotImplementedError

    @property
    def local_rank(self) -> int:
        raise NotImplementedError

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def allreduce_sum(self, x: torch.Tensor | Mapping[str, Any]) -> torch.Tensor | dict[str, Any]:
        raise NotImplementedError

    def allgather(self, tensor: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def broadcast_parameters(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        raise NotImplementedError

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def optimizer_step(
        self,
        optimizer: torch.optim.Optimizer,
        scaler: "torch.amp.GradScaler | None",
        parameters,
        clip_grad_norm: float | None,
    ) -> None:
        """Unscale (when a GradScaler is active), clip the global gradient norm when ``clip_grad_norm`` > 0, step."""
        if scaler is not None and scaler.is_enabled():
            if clip_grad_norm:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(parameters, clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            return
        if clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(parameters, clip_grad_norm)
        optimizer.step()


class SingleProcess(Backend):
    """One worker: every collective is the identity."""

    name = "single"

    @classmethod
    def detect(cls) -> bool:
        return True  # the fallback of ``auto``

    @property
    def rank(self) -> int:
        return 0

    @property
    def size(self) -> int:
        return 1

    @property
    def local_rank(self) -> int:
        return 0

    def allreduce_sum(self, x):
        if isinstance(x, Mapping):
            return dict(x)
        return x

    def allgather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def broadcast_parameters(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        return None

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
        return optimizer

    def barrier(self) -> None:
        return None


# name -> class; multi-worker backends go BEFORE "single", which ``auto`` falls back to
BACKENDS: dict[str, type[Backend]] = {"single": SingleProcess}


def get_backend(name: str = "auto") -> Backend:
    """The backend called ``name``; ``auto`` = the first registered backend whose ``detect()`` is true (a
    multi-worker backend when launched by its launcher), else ``single``."""
    if name == "auto":
        ordered = [cls for key, cls in BACKENDS.items() if key != "single"] + [SingleProcess]
        return next(cls for cls in ordered if cls.detect())()
    if name not in BACKENDS:
        raise ValueError(f"unknown distributed backend {name!r}; known: {['auto', *BACKENDS]}")
    return BACKENDS[name]()


__all__ = ["BACKENDS", "Backend", "SingleProcess", "get_backend"]
