"""The run folder of a training (``--run-dir``): what a run owns, and how a new run treats what an earlier one left.

A run folder holds ``last.pt`` / ``best.pt`` (``musicrec.checkpoint``), ``.run.lock`` and ``mlflow_run.json``. The root
worker of a training:

1. claims the folder (``claim``): an exclusive ``flock`` on ``.run.lock``, held until the process ends (the kernel
   drops it when the process dies, even by ``kill -9``), so a second training in the same folder exits 2 at once;
2. settles the MLflow run an earlier, killed training left RUNNING (``settle_orphan``: ``mlflow_run.json`` names it,
   and since the lock was free its process is gone): marked KILLED, with a line saying so;
3. keeps an earlier run's checkpoints: a fresh run (no ``--resume``) in a folder with checkpoints stops with exit 2
   unless ``--overwrite`` is given; then they are moved to ``replaced/`` (``set_aside``), and removed only when the
   new run has finished (``drop_replaced``): a failed or killed new run leaves them there;
4. records its MLflow run (``record_run``) as soon as it has one.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path

from musicrec.checkpoint import BEST, LAST
from musicrec.config import ConfigError

LOCK_NAME = ".run.lock"
RECORD_NAME = "mlflow_run.json"
REPLACED = "replaced"


class RunDirError(ConfigError):
    """A run folder that this run may not use as asked (exit 2: one line saying what to pass instead)."""


class RunDir:
    """The run folder ``path`` as the root worker sees it (``enabled`` false: every method is a no-op)."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self._lock = None

    def claim(self) -> None:
        """Take the folder's lock for the life of this process, or raise ``RunDirError`` naming the holder."""
        if not self.enabled:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / LOCK_NAME, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunDirError(f"run dir {self.path} is in use by another training (pid {holder}): wait for it, or "
                              "pass another --run-dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle  # kept open: the lock lasts as long as the process

    def checkpoints(self) -> list[Path]:
        return [p for p in (self.path / LAST, self.path / BEST) if p.is_file()]

    def check_fresh(self, overwrite: bool) -> None:
        """A fresh run: refuse a folder with an earlier run's checkpoints unless ``overwrite``; then set them aside."""
        if not self.enabled or not self.checkpoints():
            return
        names = ", ".join(p.name for p in self.checkpoints())
        if not overwrite:
            raise RunDirError(f"run dir {self.path} holds an earlier run's checkpoints ({names}): pass --resume to "
                              "continue it, --overwrite to start afresh (they are kept in "
                              f"{self.path / REPLACED} until the new run finishes), or another --run-dir")
        self.set_aside()

    def set_aside(self) -> None:
        """Move the checkpoints (and the record of their MLflow run) into ``replaced/``, replacing an older copy."""
        target = self.path / REPLACED
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for path in self.checkpoints() + [p for p in (self.path / RECORD_NAME,) if p.is_file()]:
            os.replace(path, target / path.name)
        print(f"note: --overwrite: the earlier run's checkpoints are in {target} until this run finishes", flush=True)

    def drop_replaced(self) -> None:
        """After a finished run: the set-aside checkpoints are no longer needed."""
        if self.enabled and (self.path / REPLACED).is_dir():
            shutil.rmtree(self.path / REPLACED)

    def record_run(self, tracking_uri: str, run_id: str | None) -> None:
        """``mlflow_run.json``: the MLflow run this process is writing (read by ``settle_orphan`` of the next run)."""
        if not self.enabled or not run_id:
            return
        record = {"tracking_uri": tracking_uri, "run_id": run_id, "pid": os.getpid(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        tmp = self.path / f".{RECORD_NAME}.tmp"
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, self.path / RECORD_NAME)

    def settle_orphan(self, tracking_uri: str) -> None:
        """Mark KILLED the MLflow run an earlier training in this folder left RUNNING (called after ``claim``: the
        lock was free, so that training's process is gone)."""
        if not self.enabled or not (self.path / RECORD_NAME).is_file() or tracking_uri.lower() == "none":
            return
        try:
            record = json.loads((self.path / RECORD_NAME).read_text())
        except (OSError, ValueError):
            return  # an unreadable record names no run; nothing to settle
        if record.get("tracking_uri") != tracking_uri or not record.get("run_id"):
            return
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri)
        try:
            run = client.get_run(record["run_id"])
        except Exception:  # deleted meanwhile: nothing to settle
            return
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, "musicrec.killed", f"found RUNNING at {time.strftime('%Y-%m-%dT%H:%M:%S')}"
                           f" by the next training in {self.path} (pid {record.get('pid')} had died)")
            client.set_terminated(run.info.run_id, status="KILLED")
            print(f"note: MLflow run {run.info.run_id} was left RUNNING by a training that died (pid "
                  f"{record.get('pid')}): marked KILLED", flush=True)


__all__ = ["LOCK_NAME", "RECORD_NAME", "REPLACED", "RunDir", "RunDirError"]
