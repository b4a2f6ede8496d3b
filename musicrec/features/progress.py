"""Progress of a feature job: one line per step with its wall time, and the step's name on its Spark jobs.

``StepTimer.step(name)`` labels every Spark job started inside it with the job description ``"<dataset>: <name>"``
(the Spark UI and the event log show it; benchmarks/measure.py attributes stage times to steps by it) and, when the
step ends, prints ``[features] <dataset>: <name>: <seconds>s`` and adds the seconds to ``steps`` (the job summary).

``concurrently(spark, *calls)`` runs independent steps side by side, each in its own thread (see there).
"""

from __future__ import annotations

import time
import uuid
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
    a call labels only that call's jobs). Errors are those of one after the other: when a call fails, the Spark jobs
    of the calls after it are cancelled (by job tag), the calls before it run to their end, and the error of the
    first call in argument order that failed is raised. An interrupt of the caller (Ctrl-C) cancels them all.
    """
    results: list[Any] = [None] * len(calls)
    errors: dict[int, BaseException] = {}
    tags = [f"musicrec-concurrently-{uuid.uuid4().hex}-{i}" for i in range(len(calls))]

    def run(i: int) -> None:
        spark.sparkContext.addJobTag(tags[i])  # this thread's jobs only
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # raised in the calling thread below
            errors[i] = exc

    def cancel(indices: range) -> None:
        for j in indices:
            if threads[j].is_alive():
                spark.sparkContext.cancelJobsWithTag(tags[j])

    threads = [InheritableThread(run, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    try:
        while alive := [thread for thread in threads if thread.is_alive()]:
            failed = errors.copy()  # the threads add to it
            if failed:  # again on every pass: a cancelled call may have started its next job meanwhile
                cancel(range(min(failed) + 1, len(calls)))
            alive[0].join(timeout=0.2)
    except BaseException:  # KeyboardInterrupt in the caller: stop every call's Spark jobs, then let them end
        cancel(range(len(calls)))
        for thread in threads:
            thread.join()
        raise
    if errors:
        raise errors[min(errors)]
    return results


__all__ = ["StepTimer", "concurrently"]
