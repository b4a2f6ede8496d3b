"""torch.distributed behind the ``musicrec.distributed.Backend`` interface: the ONE module of the project that calls
``torch.distributed`` (it ships inside every torch wheel: nothing to build, unlike Horovod).

``musicrec.distributed.get_backend("auto")`` picks ``TorchBackend`` when the process was started by ``torchrun``
(or by Spark's ``TorchDistributor``, which runs torchrun): every worker then has ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in its environment (Horovod's launchers are looked for first).
Creating a ``TorchBackend`` calls ``init_process_group`` from that environment: gloo for CPU tensors, and with CUDA
``cpu:gloo,cuda:nccl`` (NCCL for the GPU tensors: gradients, weights; gloo for the CPU ones: the loop's sums,
evaluation's allgather, objects) on GPU ``LOCAL_RANK`` of the host. The loop's calls are mapped as

=============================  ==================================================================================
``allreduce_sum``              ``all_reduce(SUM)`` of one flat float64 CPU tensor (a dict is packed into one
                               tensor, ``common.pack_sums``, as on Horovod)
``allgather``                  the rows per worker (one small ``all_gather``), then an ``all_gather`` of the rows
                               padded to the longest; the padding is cut off, the parts joined in rank order
``broadcast_parameters``       ``broadcast`` of every tensor of ``model.state_dict()`` from rank 0, and rank 0's
                               optimizer state_dict with ``broadcast_object_list`` (no dummy step, as on Horovod)
``wrap_optimizer``             the optimizer itself: the gradients are averaged in ``optimizer_step``
``optimizer_step``             average the gradients (below) -> (AMP unscale) -> clip -> step, Horovod's order
``barrier``                    ``barrier()``
=============================  ==================================================================================

Gradient averaging (``_average_gradients``), once per step, over the optimizer's parameters:

- one ``all_gather`` of a small int64 table: for each parameter, whether this worker has a dense gradient, or how
  many rows its sparse gradient holds. A parameter no worker has a gradient for keeps none (an optimizer then skips
  it, exactly as in one process; Horovod would give it zeros, which counts an Adam step for it); a worker without
  one (a shard used up, ``musicrec.train.loop``) joins with zeros;
- dense gradients: ``all_reduce(SUM)`` of flat buckets of at most ``BUCKET_BYTES`` per device and dtype, divided by
  the number of workers;
- sparse gradients (the tables of ``model.sparse: true``, ``musicrec.optim``): what Horovod 0.28.1 does
  (``sparse_allreduce_async``): every worker's indices and values are gathered in rank order, the values divided by
  the number of workers, and the rows stay duplicated until SparseAdam coalesces them. So each worker moves the rows
  it touched, not the table (at 718k songs 3.2 MiB instead of 1,756 MiB per step, benchmarks/RESULTS_step.md).

Failure behaviour (torch 2.13, gloo, torchrun's elastic agent with ``--max-restarts 0``; measured in
tests/test_distributed_torch.py):

- A worker that EXITS: the agent notices it within its ``--monitor-interval`` (0.1 s), sends SIGTERM to the others
  (SIGKILL after 30 s), prints a failure summary whose "Root Cause" names the rank and its exit code, and exits 1.
  The others' next collective fails at once ("Connection closed by peer") and becomes ``WorkerFailure``; a worker
  that gets the SIGTERM first raises ``WorkerFailure`` from it (``_on_sigterm``), so rank 0 still ends its MLflow run
  as FAILED. jobs print one line and exit 3. Measured: torchrun exited 1.7 s after rank 1 died (2 workers, 2 cores).
- A worker that HANGS while alive, or is frozen: every gloo operation (and the rendezvous) gives up after
  ``MUSICREC_COLLECTIVE_TIMEOUT_S`` seconds (default 600; 0 = no limit; it must exceed rank 0's longest solo work
  between two collectives: a checkpoint, an MLflow record), the process-group timeout: ``WorkerFailure`` naming
  this rank and the wait (measured: the job ended 11.7 s after rank 0 entered a barrier, limit 10 s); torchrun's
  summary then names the rank that gave up. NCCL's watchdog aborts a GPU collective after the same timeout.

The same seed, data and flags give the same final weights under torchrun as under horovodrun (measured bit-identical:
the DNN with sparse tables and logreg, 2 workers, 2-3 epochs).

``run_on_spark`` is the driver's side of ``TorchDistributor`` (jobs/train_on_spark.py ``--backend torch``).
"""

from __future__ import annotations

import atexit
import importlib
import io
import os
import re
import signal
import sys
import threading
from collections import deque
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from datetime import timedelta
from typing import Any, Mapping

import torch
from torch import nn

from musicrec.config import ConfigError
from musicrec.distributed.base import Backend
from musicrec.distributed.common import (
    TIMEOUT_ENV,
    WorkerFailure,
    collective_timeout_s,
    first_failure,
    pack_sums,
    state_to_cpu,
)
from musicrec.optim import sparse_parameters

LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")  # set by torchrun for every worker
NO_LIMIT = timedelta(days=365)  # MUSICREC_COLLECTIVE_TIMEOUT_S=0
BUCKET_BYTES = 64 << 20  # dense gradients are summed in flat buckets of at most this size (one all_reduce each)


class TorchBackend(Backend):
    """torch.distributed (gloo on CPU, NCCL on CUDA); one instance per process, created after torchrun started it."""

    name = "torch"

    @classmethod
    def detect(cls) -> bool:
        return all(key in os.environ for key in LAUNCHER_ENV)

    def __init__(self) -> None:
        missing = [key for key in LAUNCHER_ENV if key not in os.environ]
        if missing:
            raise ConfigError(f"--backend torch: {', '.join(missing)} not set: this process was not started by "
                              "torchrun; run torchrun --nproc_per_node N jobs/train.py ..., or --backend auto")
        import torch.distributed as dist

        self._dist = dist
        self._rank, self._size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        self._local_rank = int(os.environ["LOCAL_RANK"])
        self._local_size = int(os.environ.get("LOCAL_WORLD_SIZE", self._size))
        self._timeout_s = collective_timeout_s()
        self._failing = False  # a WorkerFailure is on its way: a later SIGTERM must not interrupt the clean-up
        cuda = torch.cuda.is_available()
        if cuda:
            if self._local_rank >= torch.cuda.device_count():
                raise ConfigError(f"LOCAL_RANK {self._local_rank}: this host has {torch.cuda.device_count()} CUDA "
                                  "device(s); start at most that many workers per host (one GPU each), or hide the "
                                  "GPUs (CUDA_VISIBLE_DEVICES=) to train on the CPU")
            torch.cuda.set_device(self._local_rank)  # distributed: one GPU per worker
        timeout = timedelta(seconds=self._timeout_s) if self._timeout_s else NO_LIMIT
        # before the group exists: imported later (torch.optim does, on first use), it holds the group past
        # destroy_process_group, and gloo's threads then abort the exit (measured; see _shutdown)
        importlib.import_module("torch._dynamo")
        with self._failures("the rendezvous (init_process_group)"):
            dist.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=timeout)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)
        atexit.register(self._shutdown)
        self._sparse_ids: set[int] = set()

    def _shutdown(self) -> None:
        """At exit, unless a worker failed: ``destroy_process_group`` while the interpreter is still whole, which joins
        gloo's worker threads. Without it they outlive the interpreter's finalization, and one that still drops a
        tensor of the last collective needs the GIL there and is killed: measured here, 2 runs in 8 aborted after
        their last collective ("terminate called without an active exception" in thread pt_gloo_runloop, SIGABRT;
        pytorch#190489). After a failure it is skipped: destroying a group whose peer is gone can block (NCCL), and
        torchrun stops the process anyway."""
        if not self._failing and self._dist.is_initialized():
            self._dist.destroy_process_group()

    # --- who am I ---------------------------------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self._rank

    @property
    def size(self) -> int:
        return self._size

    @property
    def local_rank(self) -> int:
        return self._local_rank

    @property
    def local_size(self) -> int:
        """Workers on this host (to share its cores and GPUs)."""
        return self._local_size

    # --- failures ---------------------------------------------------------------------------------------------------
    @contextmanager
    def _failures(self, what: str):
        """Around every collective: torch.distributed's errors (a peer closed its connection, or the timeout ran
        out) turned into ``WorkerFailure`` naming this rank."""
        try:
            yield
        except WorkerFailure:
            raise
        except RuntimeError as exc:  # gloo: RuntimeError; NCCL, the store: torch.distributed.DistError (a subclass)
            self._failing = True
            text = str(exc).strip()
            first_line = text.splitlines()[0][:300] if text else type(exc).__name__
            if re.search(r"time[d ]*out", text, re.I):
                cause = (f"waited more than {self._timeout_s:.0f} s for the other workers ({TIMEOUT_ENV}); one of them "
                         "hangs or is unreachable")
            else:
                cause = "failed because another worker stopped (exited or was killed); torchrun's summary names it"
            raise WorkerFailure(f"rank {self.rank} of {self.size}: {what} {cause}. "
                                f"torch.distributed: {first_line}") from exc

    def _on_sigterm(self, signum, frame) -> None:
        """torchrun stops the other workers with SIGTERM when one fails: end like a failed collective (rank 0 marks
        its MLflow run FAILED on the way out), unless a ``WorkerFailure`` is already being handled."""
        if self._failing:
            return
        self._failing = True
        raise WorkerFailure(f"rank {self.rank} of {self.size}: stopped by SIGTERM (torchrun stops every worker when "
                            "one fails; its failure summary names that rank)")

    # --- collectives ------------------------------------------------------------------------------------------------
    def allreduce_sum(self, x: torch.Tensor | Mapping[str, Any]) -> torch.Tensor | dict[str, Any]:
        if isinstance(x, Mapping):
            flat, unpack = pack_sums(x)
            with self._failures("allreduce"):
                self._dist.all_reduce(flat)
            return unpack(flat)
        total = x.detach().clone()
        with self._failures("allreduce"):
            self._dist.all_reduce(total)
        return total

    def allgather(self, tensor: torch.Tensor) -> torch.Tensor:
        with self._failures("allgather"):
            rows = self._gather_counts([tensor.shape[0]])[:, 0].tolist()
            return self._gather_rows(tensor.detach().contiguous(), rows)

    def _gather_counts(self, counts: list[int]) -> torch.Tensor:
        """(workers, len(counts)) int64: every worker's ``counts``, in rank order (one small CPU all_gather)."""
        mine = torch.tensor(counts, dtype=torch.int64)
        parts = [torch.empty_like(mine) for _ in range(self.size)]
        self._dist.all_gather(parts, mine)
        return torch.stack(parts)

    def _gather_rows(self, tensor: torch.Tensor, rows: list[int]) -> torch.Tensor:
        """Every worker's ``tensor`` (``rows[r]`` rows on worker r) joined along dim 0 in rank order: all_gather
        needs equal shapes, so each is padded to the longest and the padding cut off again."""
        longest = max(rows)
        if longest == 0:
            return tensor.new_empty((0, *tensor.shape[1:]))
        padded = tensor.new_zeros((longest, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        self._dist.all_gather(parts, padded)
        return torch.cat([part[:n] for part, n in zip(parts, rows)])

    def broadcast_parameters(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        with self._failures("broadcast"):
            for tensor in model.state_dict().values():  # shares storage with the parameters and buffers
                self._dist.broadcast(tensor, src=0)
            if optimizer is not None:
                state = [state_to_cpu(optimizer.state_dict()) if self.is_root else None]
                self._dist.broadcast_object_list(state, src=0)
                if not self.is_root:
                    optimizer.load_state_dict(state[0])  # moves the state to each parameter's device

    def wrap_optimizer(self, optimizer, model: nn.Module):
        self._sparse_ids = {id(p) for p in sparse_parameters(model)}
        return optimizer

    def optimizer_step(self, optimizer, scaler, parameters, clip_grad_norm) -> None:
        """Average the gradients over workers, then unscale / clip / step exactly as one worker."""
        with self._failures("gradient allreduce"):
            self._average_gradients([p for group in optimizer.param_groups for p in group["params"] if p.requires_grad])
        super().optimizer_step(optimizer, scaler, parameters, clip_grad_norm)

    def _average_gradients(self, params: list[nn.Parameter]) -> None:
        """Every worker's gradients -> their mean over the workers (see the module docstring), in place."""
        counts = []
        for p in params:
            sparse = id(p) in self._sparse_ids
            if p.grad is not None and p.grad.is_sparse != sparse:
                kind = "sparse" if p.grad.is_sparse else "dense"
                raise TypeError(f"a parameter of shape {tuple(p.shape)} has a {kind} gradient, but the model's "
                                "sparse_parameters() says otherwise")
            counts.append(0 if p.grad is None else p.grad._nnz() if sparse else 1)
        table = self._gather_counts(counts)  # (workers, parameters)
        dense = []
        for j, p in enumerate(params):
            if int(table[:, j].sum()) == 0:
                p.grad = None  # no worker has a gradient for it: the optimizer skips it, as in one process
            elif id(p) in self._sparse_ids:
                self._average_sparse(p, table[:, j].tolist())
            else:
                if p.grad is None:  # distributed: this worker took no batch: it joins the average with zeros
                    p.grad = torch.zeros_like(p)
                dense.append(p)
        for bucket in _buckets(dense):
            flat = torch.cat([p.grad.reshape(-1) for p in bucket])
            self._dist.all_reduce(flat)
            flat.div_(self.size)
            for p, part in zip(bucket, flat.split([p.numel() for p in bucket])):
                p.grad.copy_(part.view_as(p.grad))

    def _average_sparse(self, p: nn.Parameter, rows: list[int]) -> None:
        """Horovod's sparse average: every worker's (indices, values) joined, values / workers, rows not coalesced."""
        grad = p.grad
        if grad is None:  # this worker took no batch: it joins with no rows
            indices = torch.zeros((0, 1), dtype=torch.int64, device=p.device)
            values = p.new_zeros((0, *p.shape[1:]))
        else:
            indices, values = grad._indices().t().contiguous(), grad._values().contiguous()
        indices, values = self._gather_rows(indices, rows), self._gather_rows(values, rows)
        p.grad = torch.sparse_coo_tensor(indices.t(), values / self.size, p.shape, check_invariants=False)

    def barrier(self) -> None:
        with self._failures("barrier"):
            self._dist.barrier()


def _buckets(params: list[nn.Parameter]) -> list[list[nn.Parameter]]:
    """``params`` grouped by (device, dtype) of their gradients, in order, each group cut into runs of at most
    ``BUCKET_BYTES`` (a single larger gradient is a bucket of its own)."""
    groups: dict[tuple, list[list[nn.Parameter]]] = {}
    for p in params:
        runs = groups.setdefault((p.grad.device, p.grad.dtype), [[]])
        size = sum(q.grad.numel() * q.grad.element_size() for q in runs[-1])
        if runs[-1] and size + p.grad.numel() * p.grad.element_size() > BUCKET_BYTES:
            runs.append([])
        runs[-1].append(p)
    return [run for runs in groups.values() for run in runs]


def run_on_spark(script: str, argv: list[str], *, num_proc: int, local_mode: bool, use_gpu: bool) -> None:
    """``TorchDistributor(num_processes, local_mode, use_gpu).run(script, *argv)`` on the active SparkSession: local
    mode runs ``torchrun --standalone --nproc_per_node N`` on this driver, cluster mode one torchrun node per barrier
    Spark task. A worker that fails -> ``WorkerFailure`` naming the rank that failed first (torchrun's "Root Cause");
    a GPU set-up Spark cannot honour -> ``ConfigError``.

    PySpark 4.3.0 runs torchrun through ``pyspark.ml.torch.torch_run_process_wrapper``, which exits 0 whatever
    torchrun's exit status (measured: a worker that exits 17 leaves ``run`` returning normally). So the failure is
    read from torchrun's own output, which TorchDistributor copies to this driver's stdout (local mode) or stderr
    (cluster mode, through its log stream): the end of both is kept while it runs (``_Tail``)."""
    from pyspark.ml.torch.distributor import TorchDistributor

    try:
        distributor = TorchDistributor(num_processes=num_proc, local_mode=local_mode, use_gpu=use_gpu)
    except RuntimeError as exc:  # use_gpu without spark.driver.resource.gpu.amount (spark.task.resource... in cluster)
        raise ConfigError(f"TorchDistributor(use_gpu={use_gpu}, local_mode={local_mode}): {exc}") from exc
    out, err, error = _Tail(sys.stdout), _Tail(sys.stderr), None
    with redirect_stdout(out), redirect_stderr(err):
        try:
            distributor.run(script, *argv)
        except Exception as exc:  # a later PySpark that passes torchrun's status on; a failed Spark job (cluster mode)
            error = exc
    failure = torchrun_failure("\n".join([*out.lines, *err.lines, str(error or "")]))
    if failure is not None:
        raise failure from error
    if error is not None:
        message = str(error).strip()
        last = message.splitlines()[-1] if message else type(error).__name__
        raise WorkerFailure(f"TorchDistributor failed: {last}") from error


ROOT_CAUSE = re.compile(r"Root Cause \(first observed failure\):.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", re.S)
# the last line of torchrun's own traceback (workers' lines are prefixed [rankN]:)
TORCHRUN_ERROR = re.compile(r"^torch\.distributed\.\S*(Error|Exception)\b.*$", re.M)


def torchrun_failure(output: str) -> WorkerFailure | None:
    """The failure torchrun's ``output`` reports: its failure summary's root cause (rank, exit status), or the error
    that ended torchrun itself (e.g. a rendezvous timeout); None when it reports none."""
    found = ROOT_CAUSE.search(output)
    if found:
        return first_failure(found.group(1), found.group(2))
    error = TORCHRUN_ERROR.search(output)
    return WorkerFailure(f"torchrun failed: {error.group(0).strip()}") if error else None


class _Tail(io.TextIOBase):
    """A text stream that writes through to ``stream`` and keeps its last ``keep`` lines (``lines``)."""

    def __init__(self, stream, keep: int = 300):
        self.stream, self.lines, self._partial = stream, deque(maxlen=keep), ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        *done, self._partial = (self._partial + text).split("\n")
        self.lines.extend(done)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


__all__ = ["BUCKET_BYTES", "LAUNCHER_ENV", "TorchBackend", "run_on_spark", "torchrun_failure"]
