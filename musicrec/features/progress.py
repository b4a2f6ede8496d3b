"""Progress of a feature job: one line per step with its wall time, and the step's name on its Spark jobs.

``StepTimer.step(name)`` labels every Spark job started inside it with the job description ``"<dataset>: <name>"``
(the Spark UI and the event log show it; benchmarks/measure.py attributes stage times to steps by it) and, when the
step ends, prints ``[features] <dataset>: <name>: <seconds>s`` and adds the seconds to ``steps`` (the job summary).

``concurrently(spark, *calls)`` runs independent steps side by side, each in its own thread (see there).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from pyspark.sql import SparkSession
from pyspark.util import InheritableThread


class StepTimer:
    """Wall-clock seconds per driver step (Spark is lazy: a step's time includes the work its actions trigger)."""

    def __init__(self, spark: SparkSession, dataset: str) -> None:
        self.spark, self.dataset = spark, dataset
        self.started = time.time()
        self.steps: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.spark.sparkContext.setJobDescription(f"{self.dataset}: {name}")
        began = time.time()
        try:
            yield
        finally:
            self.steps[name] = round(self.steps.get(name, 0.0) + time.time() - began, 2)
            self.spark.sparkContext.setJobDescription(None)
        self.log(f"{name}: {self.steps[name]:.1f}s")

    def log(self, message: str) -> None:
        """One progress line on stdout (spark-submit keeps it next to Spark's own log)."""
        print(f"[features] {self.dataset}: {message}", flush=True)

    def elapsed(self) -> float:
        return round(time.time() - self.started, 1)


def concurrently(spark: SparkSession, *calls: Callable[[], Any]) -> list[Any]:
    """Run each zero-argument call in its own thread and return their results in argument order.

    For steps that read what is already cached or written and not each other's results: their Spark jobs run side
    by side, so a task slot that one step leaves idle (one task per unsplittable file, a small last wave, the driver
    planning the next query) runs the other's tasks; the work and the results are the same as one after the other.
    The threads are ``pyspark.util.InheritableThread`` (each has its own JVM thread, so a ``StepTimer.step`` inside
    a call labels only that call's jobs). The first call to fail, or an interrupt of the caller (Ctrl-C), cancels
    the Spark jobs still running (``cancelAllJobs``: only these calls run any now); once every call has ended, the
    first exception raised (the cause, not the cancellations that follow it) is raised again.
    """
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []  # in the order they were raised
    lock = threading.Lock()

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # raised in the calling thread below
            with lock:
                errors.append(exc)
                first = len(errors) == 1
            if first:
                spark.sparkContext.cancelAllJobs()

    threads = [InheritableThread(run, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException:  # KeyboardInterrupt in the caller: stop the others' Spark jobs, then let them end
        spark.sparkContext.cancelAllJobs()
        for thread in threads:
            thread.join()
        raise
    if errors:
        raise errors[0]
    return results


__all__ = ["StepTimer", "concurrently"]
