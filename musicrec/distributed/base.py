"""The distributed seam: the few collective operations the training loop needs, behind one small interface.

The loop (``musicrec.train.loop``) talks only to a ``Backend``; it never imports Horovod or torch.distributed. A
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

``SingleProcess`` is the identity implementation. A multi-worker implementation subclasses ``Backend`` in its own
module of this package, with a ``detect()`` that recognizes its launcher, and is named in ``MULTI_WORKER``
("module:Class", imported only when ``detect_backend``/``get_backend`` look at it, so Horovod stays optional);
``get_backend("auto")`` (what ``musicrec.train.run`` calls) then picks it. Horovod:
``musicrec.distributed.horovod.HorovodBackend`` (``horovodrun``, ``horovod.spark.run``), then torch.distributed:
``musicrec.distributed.torch_dist.TorchBackend`` (``torchrun``, Spark's ``TorchDistributor``).

What the rest of the code assumes of a multi-worker backend:

- ``allreduce_sum`` gets CPU float64 tensors (per-epoch sums) and, once per training step, a one-element float64
  tensor (the loop's count of this step's examples over all workers: steps go on while any worker has a batch, so
  shards of unequal size neither hang a collective nor lose rows); ``allgather`` gets CPU float tensors of
  different lengths per worker (zero included).
- The loaders shard by Parquet row group (``cur_shard = rank``, ``shard_count = size``): every split needs at least
  ``size`` row groups.
- Only the root writes checkpoints; on ``--resume`` every worker reads ``last.pt``, so the run directory must be
  visible to all workers (one host, or a shared file system).
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

import torch
from torch import nn

from musicrec.optim import clip_grad_norm as clip_gradients  # the name clip_grad_norm is optimizer_step's argument


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
        """Unscale (when a GradScaler is active), clip the global gradient norm when ``clip_grad_norm`` > 0 (sparse
        gradients included, ``musicrec.optim.clip_grad_norm``), step."""
        if scaler is not None and scaler.is_enabled():
            if clip_grad_norm:
                scaler.unscale_(optimizer)
                clip_gradients(parameters, clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            return
        if clip_grad_norm:
            clip_gradients(parameters, clip_grad_norm)
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


# name -> class of the backends already imported; multi-worker backends are added by ``backend_class`` on first use
BACKENDS: dict[str, type[Backend]] = {"single": SingleProcess}
# name -> "module:Class" of the multi-worker backends, in the order ``auto`` tries them (``single`` comes last)
MULTI_WORKER: dict[str, str] = {"horovod": "musicrec.distributed.horovod:HorovodBackend",
                                "torch": "musicrec.distributed.torch_dist:TorchBackend"}


def backend_class(name: str) -> type[Backend]:
    """The class of backend ``name``, importing its module on first use."""
    if name not in BACKENDS:
        if name not in MULTI_WORKER:
            raise ValueError(f"unknown distributed backend {name!r}; known: {['auto', *MULTI_WORKER, 'single']}")
        module_name, class_name = MULTI_WORKER[name].split(":")
        BACKENDS[name] = getattr(importlib.import_module(module_name), class_name)
    return BACKENDS[name]


def detect_backend() -> type[Backend]:
    """The class of the first multi-worker backend whose launcher started this process, else ``SingleProcess``;
    nothing is initialized (a multi-worker module is imported, its framework is not)."""
    for name in MULTI_WORKER:
        cls = backend_class(name)
        if cls.detect():
            return cls
    return SingleProcess


def get_backend(name: str = "auto") -> Backend:
    """The backend called ``name``, initialized; ``auto`` = ``detect_backend()`` (a multi-worker backend when
    launched by its launcher, else ``single``)."""
    if name == "auto":
        return detect_backend()()
    return backend_class(name)()


__all__ = ["BACKENDS", "MULTI_WORKER", "Backend", "SingleProcess", "backend_class", "detect_backend", "get_backend"]
