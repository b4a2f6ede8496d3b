"""Feature jobs: raw Last.fm 1K or KKBOX files -> Parquet, vocabularies, stats report and manifest.

    spark-submit jobs/features.py lastfm --input DIR --output OUT [--conf conf/lastfm.yaml] [--set k=v ...]
    spark-submit jobs/features.py kkbox  --input DIR --output OUT [--conf conf/kkbox.yaml]  [--set k=v ...]

(or ``./spark-submit.sh jobs/features.py ...``, which also ships the musicrec package to the executors).
Each dataset's pipeline lives in ``musicrec.features.<dataset>`` as small DataFrame -> DataFrame stages; the
arguments, the configuration, the SparkSession and the exit statuses (0 ok, 2 bad input or config) are
``musicrec.features.cli`` (``main``).
"""

from __future__ import annotations

import sys

from musicrec.features.cli import main

if __name__ == "__main__":
    sys.exit(main())
