"""What the multi-worker backends (``horovod``, ``torch_dist``) share: the failure a job reports when a worker dies or
hangs, the limit on one collective, and the packing of a dict of sums into one tensor (one collective per dict).

Nothing here imports a distributed framework.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import torch

from musicrec.config import ConfigError

TIMEOUT_ENV, DEFAULT_TIMEOUT_S = "MUSICREC_COLLECTIVE_TIMEOUT_S", 600.0  # the limit on one collective's wait
WORKER_FAILURE_EXIT_CODE = 3  # a worker that gives up because another one failed or hangs


class WorkerFailure(RuntimeError):
    """Another worker died or the collective layer shut down (the message names this worker's rank), or, on the
    driver of a Spark launch, a worker failed (the message names the rank that failed first)."""


def collective_timeout_s() -> float:
    """``MUSICREC_COLLECTIVE_TIMEOUT_S`` (default 600; 0 = no limit): how long one collective may wait for the other
    workers. It must exceed rank 0's longest solo work between two collectives (a checkpoint, an MLflow record)."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={text!r}: expected a number of seconds (0 = no limit)") from None
    if value < 0:
        raise ConfigError(f"{TIMEOUT_ENV}={text!r}: expected a number of seconds >= 0 (0 = no limit)")
    return value


def first_failure(rank: int | str, code: int | str) -> WorkerFailure:
    """The driver's report of a Spark launch whose worker ``rank`` failed first with exit status ``code``."""
    return WorkerFailure(f"rank {rank} failed first (exit status {code}); the other workers were stopped. Its output "
                         "is above; rerun with --resume to continue from the last checkpoint")


def pack_sums(x: Mapping[str, Any]) -> tuple[torch.Tensor, Callable[[torch.Tensor], dict[str, Any]]]:
    """(one flat float64 CPU tensor of the values of ``x``, in sorted key order so every worker has the same layout;
    a function that turns the summed flat tensor back into ``x``'s structure: a tensor back in its shape, device and
    dtype, a float back as a float)."""
    keys = sorted(x)
    parts = [torch.as_tensor(x[k]).detach().to("cpu", torch.float64).reshape(-1) for k in keys]
    flat = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)

    def unpack(total: torch.Tensor) -> dict[str, Any]:
        out, offset = {}, 0
        for key, part in zip(keys, parts):
            value = total[offset: offset + part.numel()]
            offset += part.numel()
            original = x[key]
            if isinstance(original, torch.Tensor):
                out[key] = value.reshape(original.shape).to(original.device, original.dtype)
            else:
                out[key] = float(value[0]) if value.numel() == 1 else value.tolist()
        return {key: out[key] for key in x}

    return flat, unpack


def state_to_cpu(obj):
    """A copy of a (nested) optimizer state_dict with every tensor on the CPU (for pickling to other workers)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: state_to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(state_to_cpu(v) for v in obj)
    return obj


__all__ = ["DEFAULT_TIMEOUT_S", "TIMEOUT_ENV", "WORKER_FAILURE_EXIT_CODE", "WorkerFailure", "collective_timeout_s",
           "first_failure", "pack_sums", "state_to_cpu"]
