"""Horovod behind the ``musicrec.distributed.Backend`` interface: the ONE module of the project that imports Horovod.

``musicrec.distributed.get_backend("auto")`` imports this module lazily and picks ``HorovodBackend`` when the process
was started by ``horovodrun`` or by ``horovod.spark.run`` (both put ``HOROVOD_RANK`` and ``HOROVOD_SIZE`` in every
worker's environment). Importing this module does not import Horovod; creating a ``HorovodBackend`` does
(``hvd.init()``). The training loop never sees Horovod: it calls the ``Backend`` methods, mapped here as

=============================  ==================================================================================
``allreduce_sum``              ``hvd.allreduce(op=hvd.Sum)`` of one flat float64 CPU tensor (a dict is packed into
                               one tensor, so a dict of sums costs one collective)
``allgather``                  ``hvd.allgather`` (rows may differ per worker, zero included), in rank order
``broadcast_parameters``       ``hvd.broadcast_parameters(model.state_dict())`` and the optimizer's state_dict with
                               ``hvd.broadcast_object``. Not ``hvd.broadcast_optimizer_state``: on a fresh optimizer
                               it takes a dummy step with zero gradients, which counts an Adam step (bias correction)
                               and applies weight decay, so 2 workers would no longer start where 1 worker starts.
``wrap_optimizer``             ``hvd.DistributedOptimizer(named_parameters=..., op=hvd.Average)``, then the wrapped
                               optimizer's state (Horovod builds a new optimizer with an empty state; on
                               ``--resume`` it would lose Adam's moments); a ``musicrec.optim.CompositeOptimizer``
                               (sparse tables) gets one DistributedOptimizer per part, over that part's parameters
``optimizer_step``             ``synchronize()`` -> (AMP unscale) -> clip the averaged gradients ->
                               ``step()`` under ``skip_synchronize()``, the order Horovod's docs give for clipping
``barrier``                    ``hvd.barrier()``
=============================  ==================================================================================

Sparse gradients (the big tables with ``model.sparse: true``): Horovod 0.28.1 averages a sparse gradient by
``allgather``-ing its indices and values from every worker and dividing the values by the number of workers
(``horovod/torch/mpi_ops.py: sparse_allreduce_async``; the rows stay duplicated until the optimizer coalesces them),
unless ``DistributedOptimizer(sparse_as_dense=True)``, which densifies and allreduces it. Allgather is kept here
(benchmarks/RESULTS_step.md, 2 workers on one host, the GRU at 718k songs): it moves each worker's touched rows, 3.2
MiB per step in 0.017 s, where the dense allreduce moves the whole tables, 1,756 MiB in 5.1 s; at the demo's 2k songs
the two cost the same (0.014 s / 0.011 s). Dense allreduce would only win once workers x touched rows approached the
tables' rows. A worker that steps without a batch gets empty sparse gradients
(``musicrec.optim.fill_missing_sparse_grads``): Horovod would otherwise give a parameter without a gradient a dense
zero one, which cannot meet the others' allgather.

``run_on_spark`` is the driver's side of ``horovod.spark.run`` (jobs/train_on_spark.py): N workers in N Spark tasks,
their output on the driver, a failed worker reported as a ``WorkerFailure`` naming the rank that failed first.

Failure behaviour (Horovod 0.28.1 + Gloo, measured on this project's machines; see tests/test_distributed.py):

- A worker that EXITS (crash, ``os._exit``, OOM kill): the other workers' Gloo sockets see "connection reset" and
  their next collective raises ``HorovodInternalError`` at once; this module turns it into ``WorkerFailure`` (jobs
  print one line and exit 3). ``horovodrun`` prints ``Process <rank> exit with status code <code>.``, terminates the
  remaining workers (SIGTERM, SIGKILL after 5 s) and exits 1 with ``Process name: <rank>`` / ``Exit code: <code>``.
- A worker that HANGS while alive (never reaches the next collective): the others would wait forever (Horovod's
  stall inspector, even with ``HOROVOD_STALL_SHUTDOWN_TIME_SECONDS`` set, did not end such a job here in 100 s), so
  a watchdog thread exits a worker (status 3, one line naming its rank) whose collective has waited more than
  ``MUSICREC_COLLECTIVE_TIMEOUT_S`` seconds (default 600; 0 = off; it must exceed rank 0's longest solo work between
  two collectives: a checkpoint, an MLflow record); ``horovodrun`` then stops the rest.
- A worker that is FROZEN or unreachable (its background thread silent too): Gloo operations, including the
  rendezvous in ``hvd.init()``, time out after ``HOROVOD_GLOO_TIMEOUT_SECONDS`` (set here to 60 unless the
  environment, e.g. ``horovodrun --gloo-timeout-seconds``, sets it; Horovod's default is 30).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Mapping

import torch
from torch import nn

from musicrec.config import ConfigError
from musicrec.distributed.base import Backend
from musicrec.distributed.common import (
    TIMEOUT_ENV,
    WORKER_FAILURE_EXIT_CODE,
    WorkerFailure,
    collective_timeout_s,
    first_failure,
    pack_sums,
    state_to_cpu,
)
from musicrec.optim import CompositeOptimizer, fill_missing_sparse_grads

LAUNCHER_ENV = ("HOROVOD_RANK", "HOROVOD_SIZE")  # set for every worker by horovodrun (Gloo) and horovod.spark.run
DEFAULT_ENV = {"HOROVOD_GLOO_TIMEOUT_SECONDS": "60"}  # Gloo rendezvous and operations (Horovod: 30); slow starts


class HorovodBackend(Backend):
    """Horovod with PyTorch (``horovod.torch``); one instance per process, created after the launcher started it."""

    name = "horovod"

    @classmethod
    def detect(cls) -> bool:
        return all(key in os.environ for key in LAUNCHER_ENV)

    def __init__(self) -> None:
        for key, value in DEFAULT_ENV.items():
            os.environ.setdefault(key, value)
        try:
            import horovod.torch as hvd
        except ImportError as exc:  # e.g. a profile without Horovod
            raise ConfigError(f"the Horovod backend cannot be used here: {exc}; use torchrun "
                              "(--backend torch)") from exc
        hvd.init()
        self._hvd = hvd
        self._watchdog = _Watchdog(hvd.rank(), hvd.size(), collective_timeout_s())

    # --- who am I ---------------------------------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self._hvd.rank()

    @property
    def size(self) -> int:
        return self._hvd.size()

    @property
    def local_rank(self) -> int:
        return self._hvd.local_rank()

    @property
    def local_size(self) -> int:
        """Workers on this host (to share its cores and GPUs)."""
        return self._hvd.local_size()

    # --- collectives ------------------------------------------------------------------------------------------------
    @contextmanager
    def _failures(self, what: str):
        """Around every collective: the watchdog's clock, and Horovod's shutdown error (a peer died) turned into
        ``WorkerFailure``."""
        try:
            with self._watchdog.waiting(what):
                yield
        except self._hvd.HorovodInternalError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WorkerFailure(f"rank {self.rank} of {self.size}: {what} failed because another worker stopped "
                                f"(exited, was killed or hung); the launcher's log names it. Horovod: {first_line}") from exc

    def allreduce_sum(self, x: torch.Tensor | Mapping[str, Any]) -> torch.Tensor | dict[str, Any]:
        if isinstance(x, Mapping):
            flat, unpack = pack_sums(x)
            with self._failures("allreduce"):
                return unpack(self._hvd.allreduce(flat, op=self._hvd.Sum))
        with self._failures("allreduce"):
            total = self._hvd.allreduce(x.detach().cpu(), op=self._hvd.Sum)
        return total.to(x.device)

    def allgather(self, tensor: torch.Tensor) -> torch.Tensor:
        with self._failures("allgather"):
            return self._hvd.allgather(tensor.detach().cpu().contiguous())

    def broadcast_parameters(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        with self._failures("broadcast"):
            self._hvd.broadcast_parameters(model.state_dict(), root_rank=0)
            if optimizer is not None:
                # name: the default is the object's type name, which differs between the root (dict) and the others
                state = self._hvd.broadcast_object(state_to_cpu(optimizer.state_dict()) if self.is_root else None,
                                                   root_rank=0, name="musicrec.optimizer_state")
                if not self.is_root:
                    optimizer.load_state_dict(state)  # moves the state to each parameter's device

    def wrap_optimizer(self, optimizer, model: nn.Module):
        names = {id(p): name for name, p in model.named_parameters()}
        if isinstance(optimizer, CompositeOptimizer):
            return CompositeOptimizer({part: self._wrap_one(opt, names) for part, opt in optimizer.parts.items()})
        return self._wrap_one(optimizer, names)

    def _wrap_one(self, optimizer: torch.optim.Optimizer, names: Mapping[int, str]) -> torch.optim.Optimizer:
        state = optimizer.state_dict()
        named = [(names[id(p)], p) for group in optimizer.param_groups for p in group["params"]]
        wrapped = self._hvd.DistributedOptimizer(optimizer, named_parameters=named, op=self._hvd.Average)
        # DistributedOptimizer is a NEW optimizer over the same parameter groups with an EMPTY state: without this, a
        # resumed run would restart Adam's moments and step counts (and SGD's momentum) from zero
        wrapped.load_state_dict(state)
        return wrapped

    def optimizer_step(self, optimizer, scaler, parameters, clip_grad_norm) -> None:
        """Average the gradients over workers (``synchronize``), then unscale / clip / step exactly as one worker."""
        fill_missing_sparse_grads(optimizer)  # a worker without a batch joins the sparse allgather with no rows
        with self._failures("gradient allreduce"):
            optimizer.synchronize()
        with optimizer.skip_synchronize():
            super().optimizer_step(optimizer, scaler, parameters, clip_grad_norm)

    def barrier(self) -> None:
        with self._failures("barrier"):
            self._hvd.barrier()


class _Watchdog:
    """A daemon thread that exits the process (status 3) when one collective has waited more than ``timeout_s``."""

    def __init__(self, rank: int, size: int, timeout_s: float):
        self.rank, self.size, self.timeout_s = rank, size, timeout_s
        self._since: float | None = None
        self._what = ""
        if timeout_s > 0 and size > 1:
            threading.Thread(target=self._watch, name="musicrec-collective-watchdog", daemon=True).start()

    @contextmanager
    def waiting(self, what: str):
        self._what, self._since = what, time.monotonic()
        try:
            yield
        finally:
            self._since = None

    def _watch(self) -> None:
        while True:
            time.sleep(min(5.0, self.timeout_s / 5))
            since = self._since
            if since is not None and time.monotonic() - since > self.timeout_s:
                print(f"musicrec: rank {self.rank} of {self.size}: {self._what} waited more than {self.timeout_s:.0f} s "
                      f"for the other workers ({TIMEOUT_ENV}); one of them hangs; exiting with status "
                      f"{WORKER_FAILURE_EXIT_CODE}", file=sys.stderr, flush=True)
                os._exit(WORKER_FAILURE_EXIT_CODE)


def run_on_spark(fn: Callable, args: tuple, *, num_proc: int, start_timeout: int, env: Mapping[str, str]) -> None:
    """``horovod.spark.run(fn, args)`` on the active SparkSession's executors (Gloo), the workers' output prefixed
    [rank] on this driver's stdout / stderr; a worker that fails (or a start timeout) -> ``WorkerFailure``."""
    import horovod.spark

    try:
        horovod.spark.run(fn, args=args, num_proc=num_proc, start_timeout=start_timeout, use_gloo=True, env=dict(env),
                          verbose=1, stdout=sys.stdout, stderr=sys.stderr)
    except Exception as exc:  # Horovod raises RuntimeError naming the first failed process (= rank), or a timeout
        message = str(exc)
        found = re.search(r"Process name: (\d+)\s+Exit code: (-?\d+)", message)
        if found:
            raise first_failure(found.group(1), found.group(2)) from exc
        last = message.strip().splitlines()[-1] if message.strip() else type(exc).__name__
        raise WorkerFailure(f"Horovod on Spark failed: {last}") from exc


__all__ = ["DEFAULT_ENV", "HorovodBackend", "TIMEOUT_ENV", "WORKER_FAILURE_EXIT_CODE", "WorkerFailure", "run_on_spark"]
