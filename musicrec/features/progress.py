"""Progress of a feature job: one line per step with its wall time, and the step's name on its Spark jobs.

``StepTimer.step(name)`` labels every Spark job started inside it with the job description ``"<dataset>: <name>"``
(the Spark UI and the event log show it; benchmarks/measure.py attributes stage times to steps by it) and, when the
step ends, prints ``[features] <dataset>: <name>: <seconds>s`` and adds the seconds to ``steps`` (the job summary).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from pyspark.sql import SparkSession


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


__all__ = ["StepTimer"]
