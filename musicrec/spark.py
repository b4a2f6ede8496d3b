"""The one place a SparkSession is built (jobs and tests call ``get_spark``; nothing builds one at import time)."""

from __future__ import annotations

import os
import sys

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession


def get_spark(app_name: str = "musicrec", master: str | None = None, conf: dict | None = None) -> SparkSession:
    """Return the active SparkSession or build one.

    Under ``spark-submit`` the master and resources come from the command line, so ``master`` is only applied when
    given (tests, notebooks). ``conf`` is applied as given. The defaults below are tuned for one small machine and
    only fill in what is not set already: a spark-submit ``--conf`` (or spark-defaults.conf) wins over them.
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
    SparkContext._ensure_initialized()
    given = SparkConf()
    for key, value in defaults.items():
        if not given.contains(key):
            builder = builder.config(key, value)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("MUSICREC_SPARK_LOG_LEVEL", "WARN"))
    return spark
