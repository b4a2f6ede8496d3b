"""The distributed backends behind one interface (``base``): ``SingleProcess`` and, imported only when a launcher
started this process (or when named), Horovod (``horovod``: horovodrun, horovod.spark.run) and torch.distributed
(``torch_dist``: torchrun, Spark's TorchDistributor). See ``musicrec.distributed.base`` for what a backend provides
and ``common`` for what the multi-worker ones share (``WorkerFailure``, the collective timeout)."""

from musicrec.distributed.base import (
    BACKENDS,
    MULTI_WORKER,
    Backend,
    SingleProcess,
    backend_class,
    detect_backend,
    get_backend,
)
from musicrec.distributed.common import WORKER_FAILURE_EXIT_CODE, WorkerFailure

__all__ = ["BACKENDS", "MULTI_WORKER", "WORKER_FAILURE_EXIT_CODE", "Backend", "SingleProcess", "WorkerFailure",
           "backend_class", "detect_backend", "get_backend"]
