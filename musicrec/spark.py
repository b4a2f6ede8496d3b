"""The one place a SparkSession is built (jobs and tests call ``get_spark``; nothing builds one at import time)."""

from __future__ import annotations

import os
import sys

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

LOCAL_IP_ENV, LOOPBACK = "SPARK_LOCAL_IP", "127.0.0.1"


def get_spark(app_name: str = "musicrec", master: str | None = None, conf: dict | None = None) -> SparkSession:
    """Return the active SparkSession or build one.

    Under ``spark-submit`` the master and resources come from the command line, so ``master`` is only applied when
    given (tests, notebooks). A JVM started here for a local master binds to loopback (``SPARK_LOCAL_IP=127.0.0.1``
    in its environment, unless set): its web UI on port 4040 is not open to the network. ``conf`` is applied as
    given. The defaults below are tuned for one small machine and only fill in what is not set already: a
    spark-submit ``--conf`` (or spark-defaults.conf) wins over them.
    """
    # Python workers must run the same interpreter (and so see the same packages: torch, horovod) as the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    defaults = {
        "spark.sql.session.timeZone": "UTC",  # Last.fm timestamps are UTC; never depend on the machine's zone
        "spark.sql.shuffle.partitions": os.environ.get("MUSICREC_SHUFFLE_PARTITIONS", "8"),
        "spark.ui.showConsoleProgress": "true",
    }
    # attach to spark-submit's JVM (or start one) so that SparkConf() sees the --conf values given there
    _start_jvm(loopback=bool(master and master.startswith("local")))
    given = SparkConf()
    for key, value in defaults.items():
        if not given.contains(key):
            builder = builder.config(key, value)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("MUSICREC_SPARK_LOG_LEVEL", "WARN"))
    return spark


def use_sort_aggregation(spark: SparkSession) -> None:
    """Run this session's ``collect_list`` aggregations (the Last.fm sessions and tag lists, the index lists of
    ``features.vocab.with_indices``) as sort aggregations, one group's list at a time, instead of an object hash
    map holding every group's list: at full size on 2 cores the object hash map spent 15.7 of the Last.fm sessions
    step's 61 task-run s in JVM GC.
    Measured (benchmarks/RESULTS_lastfm.md and RESULTS_kkbox.md, "2026-12-02 (later session)"): the Last.fm
    sessions step 34.7 -> 23.9 s, the KKBOX job 202.4 -> 186.3 s, outputs identical."""
    spark.conf.set("spark.sql.execution.useObjectHashAggregateExec", "false")


def _start_jvm(*, loopback: bool) -> None:
    """Attach to the running JVM or start one; a JVM started here with ``loopback`` gets ``SPARK_LOCAL_IP=127.0.0.1``
    (unless the variable is set), only in its own environment: processes this one starts later do not inherit it
    (``./spark-submit.sh`` does the same for local masters)."""
    lend = loopback and SparkContext._gateway is None and LOCAL_IP_ENV not in os.environ
    if lend:
        os.environ[LOCAL_IP_ENV] = LOOPBACK
    try:
        SparkContext._ensure_initialized()
    finally:
        if lend:
            del os.environ[LOCAL_IP_ENV]
