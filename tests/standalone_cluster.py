"""A Spark standalone cluster on 127.0.0.1 for tests: one master and N workers, started and stopped by the test.

The pip package of pyspark has ``bin/spark-class`` but not ``sbin/start-master.sh``, so the daemons are started
directly with ``spark-class org.apache.spark.deploy.master.Master`` / ``...deploy.worker.Worker``. Readiness is
read from the master's JSON status page (``/json/``: ``aliveworkers``). Only the processes started here are
stopped, by their own handles.

    with StandaloneCluster(workers=2, log_dir=tmp_path) as cluster:
        subprocess.run(["./spark-submit.sh", "--master", cluster.master_url, ...])
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def spark_class() -> str:
    """``spark-class`` of the interpreter's environment (the venv's pyspark), else of SPARK_HOME or PATH."""
    candidates = [Path(sys.executable).parent / "spark-class"]
    try:
        import pyspark

        candidates.append(Path(pyspark.__file__).parent / "bin" / "spark-class")
    except ImportError:  # pragma: no cover - pyspark is a hard dependency
        pass
    if os.environ.get("SPARK_HOME"):
        candidates.append(Path(os.environ["SPARK_HOME"]) / "bin" / "spark-class")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("spark-class")
    if found:
        return found
    raise FileNotFoundError("spark-class not found (looked next to python, in pyspark/bin, SPARK_HOME and PATH)")


class StandaloneCluster:
    """Master + ``workers`` workers (``cores`` cores and ``memory`` each) on 127.0.0.1; a context manager."""

    def __init__(self, workers: int = 2, *, cores: int = 1, memory: str = "1g", log_dir: str | Path | None = None,
                 start_timeout_s: float = 120.0) -> None:
        self.n_workers = workers
        self.cores = cores
        self.memory = memory
        self.log_dir = Path(log_dir) if log_dir else Path(os.environ.get("TMPDIR", "/tmp")) / f"spark-standalone-{os.getpid()}"
        self.start_timeout_s = start_timeout_s
        self.port = free_port()
        self.webui_port = free_port()
        self.master_url = f"spark://{HOST}:{self.port}"
        self._procs: list[subprocess.Popen] = []
        self._logs: list = []

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def __enter__(self) -> "StandaloneCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _env(self) -> dict:
        env = dict(os.environ)
        env["SPARK_LOCAL_IP"] = HOST
        env.setdefault("PYSPARK_PYTHON", sys.executable)
        env["SPARK_NO_DAEMONIZE"] = "1"
        return env

    def _spawn(self, name: str, args: list[str]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "wb")
        self._logs.append(log)
        proc = subprocess.Popen(
            [spark_class(), *args], stdout=log, stderr=subprocess.STDOUT, env=self._env(), start_new_session=True
        )
        self._procs.append(proc)

    def start(self) -> None:
        """Start the master, wait for its status page, start the workers, wait until all are ALIVE."""
        try:
            self._spawn("master", ["org.apache.spark.deploy.master.Master", "--host", HOST, "--port", str(self.port),
                                   "--webui-port", str(self.webui_port)])
            self._wait(lambda status: status is not None, "the master to answer")
            for i in range(self.n_workers):
                work_dir = self.log_dir / f"worker-{i}"
                self._spawn(f"worker-{i}", [
                    "org.apache.spark.deploy.worker.Worker", self.master_url, "--host", HOST,
                    "--cores", str(self.cores), "--memory", self.memory, "--work-dir", str(work_dir),
                    "--webui-port", str(free_port()),
                ])
            self._wait(lambda status: status is not None and status.get("aliveworkers", 0) >= self.n_workers,
                       f"{self.n_workers} workers to register")
        except BaseException:
            self.stop()
            raise

    def status(self) -> dict | None:
        """The master's JSON status (workers, cores, applications), or None when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.webui_port}/json/", timeout=2) as response:
                return json.loads(response.read().decode())
        except (OSError, ValueError):
            return None

    def _wait(self, ready, what: str) -> None:
        deadline = time.time() + self.start_timeout_s
        while time.time() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a Spark daemon exited with {proc.returncode} while waiting for {what}; "
                                       f"logs in {self.log_dir}")
            if ready(self.status()):
                return
            time.sleep(0.5)
        raise TimeoutError(f"timed out after {self.start_timeout_s:.0f}s waiting for {what}; logs in {self.log_dir}")

    def stop(self) -> None:
        """Stop the workers, then the master (SIGTERM, then SIGKILL after 15 s); only our own processes."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)  # the process group we created (spark-class -> java)
                except ProcessLookupError:
                    pass
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
        self._procs.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
