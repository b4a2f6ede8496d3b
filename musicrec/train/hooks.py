"""Debugging and fault injection for a training run, from environment variables every worker reads (jobs/train.py's
docstring describes them): MUSICREC_DEBUG_ROWS=1 writes the ids of the training examples each worker took, per epoch,
to <run dir>/debug_rows/epoch<E>-rank<R>.npz; MUSICREC_FAULT_RANK=R with MUSICREC_FAULT_AT_STEP=K makes worker R exit
with status 17 (os._exit, no clean-up) at its K-th training batch. ``debug_hooks`` turns them into ``fit``'s
``on_batch`` and ``callbacks`` (tests/test_distributed.py uses both)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from musicrec.columns import LENGTHS, NEXT_SONG, ROW_ID, SESSION_ID, SONG_IDX, TARGET, USER_IDX

FAULT_EXIT_CODE = 17  # exit status of a worker killed by MUSICREC_FAULT_RANK / MUSICREC_FAULT_AT_STEP
DEBUG_ROW_COLUMNS = (ROW_ID, SESSION_ID, USER_IDX, SONG_IDX, TARGET, NEXT_SONG, LENGTHS)


def debug_hooks(rank: int, run_dir: Path) -> tuple[Callable | None, tuple[Callable, ...]]:
    """(on_batch, callbacks) for ``fit`` from MUSICREC_DEBUG_ROWS and MUSICREC_FAULT_RANK / MUSICREC_FAULT_AT_STEP;
    (None, ()) when none is set."""
    debug_rows = os.environ.get("MUSICREC_DEBUG_ROWS", "") not in ("", "0")
    fault_rank = os.environ.get("MUSICREC_FAULT_RANK")
    fault_step = int(os.environ.get("MUSICREC_FAULT_AT_STEP", "0") or 0)
    if not debug_rows and fault_rank is None:
        return None, ()
    seen: dict[str, list] = {}
    taken = 0

    def on_batch(epoch, step, batch):
        nonlocal taken
        taken += 1
        if fault_rank is not None and int(fault_rank) == rank and taken == fault_step:
            print(f"train.py: fault injection: rank {rank} exits with status {FAULT_EXIT_CODE} at its training "
                  f"batch {taken} (epoch {epoch + 1}, step {step}, unix time {time.time():.2f})", file=sys.stderr, flush=True)
            os._exit(FAULT_EXIT_CODE)
        if debug_rows:
            for key in DEBUG_ROW_COLUMNS:
                if key in batch:
                    seen.setdefault(key, []).append(batch[key].numpy().copy())

    def write_rows(epoch, state):
        if debug_rows:
            folder = run_dir / "debug_rows"
            folder.mkdir(parents=True, exist_ok=True)
            np.savez(folder / f"epoch{epoch}-rank{rank}.npz", **{k: np.concatenate(v) for k, v in seen.items()})
            seen.clear()

    return on_batch, (write_rows,)


__all__ = ["DEBUG_ROW_COLUMNS", "FAULT_EXIT_CODE", "debug_hooks"]
