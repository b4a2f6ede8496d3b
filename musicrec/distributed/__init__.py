"""The distributed backends behind one interface (``base``): ``SingleProcess`` and, imported only when a launcher
started this process, Horovod (``horovod``). See ``musicrec.distributed.base`` for what a backend provides."""

from musicrec.distributed.base import (
    BACKENDS,
    MULTI_WORKER,
    Backend,
    SingleProcess,
    backend_class,
    detect_backend,
    get_backend,
)

__all__ = ["BACKENDS", "MULTI_WORKER", "Backend", "SingleProcess", "backend_class", "detect_backend", "get_backend"]
