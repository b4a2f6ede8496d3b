"""Rejected rows, shared by both feature jobs: the first failing check of a row, line numbers of a text file, and
``OUT/rejected/<file>/`` (``file, line, reason, raw``: docs/DATA_CONTRACT.md).

A job marks each row with ``reject_reason(checks)`` (null for a good row) on the same scan that parses it, so good
and bad rows come from one pass; ``write_rejected`` writes the bad ones. For headerless text files,
``read_text_lines`` keeps two cheap columns from the scan that ``with_line_numbers`` turns into physical line
numbers, in one more scan that runs only when there are rejects.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from musicrec.columns import REASON, REJECTED_DIR
from musicrec.io import AtomicOutput

# Column layout of OUT/rejected/<file>/ (docs/DATA_CONTRACT.md).
REJECTED_SCHEMA = T.StructType(
    [
        T.StructField("file", T.StringType()),
        T.StructField("line", T.LongType()),  # 1-based physical line when known, else null
        T.StructField("reason", T.StringType()),
        T.StructField("raw", T.StringType()),
    ]
)
def reject_reason(checks: list[tuple[Column, str]]) -> Column:
    """A string Column: the message of the first check whose condition is not true (false or null), else null."""
    reason: Column | None = None
    for condition, message in checks:
        failed = ~F.coalesce(condition, F.lit(False))
        reason = F.when(failed, F.lit(message)) if reason is None else reason.when(failed, F.lit(message))
    return reason.otherwise(F.lit(None).cast("string")) if reason is not None else F.lit(None).cast("string")


def write_rejected(bad_df: DataFrame, file_label: str, raw_col: str, line_col: str | None, out: AtomicOutput) -> int:
    """Write ``bad_df`` to ``OUT/rejected/<file_label>/`` as ``file, line, reason, raw`` and return the row count.

    ``file`` is ``bad_df.file`` when that column exists, else ``file_label``; ``line`` is ``bad_df[line_col]``
    (1-based) or null. An empty ``bad_df`` still writes an empty table, so the layout is the same on every run.
    The count is read back from the written Parquet (its footers), so ``bad_df`` is computed only once.
    """
    file_col = F.col("file").cast("string") if "file" in bad_df.columns else F.lit(file_label)
    line = F.col(line_col).cast("long") if line_col else F.lit(None).cast("long")
    rejected_df = bad_df.select(
        file_col.alias("file"), line.alias("line"), F.col(REASON).cast("string").alias(REASON),
        F.col(raw_col).cast("string").alias("raw"),
    )
    path = out.path(f"{REJECTED_DIR}/{file_label}")
    # repartition(1), not coalesce(1): coalesce would pull the whole upstream computation into one task.
    rejected_df.repartition(1).sortWithinPartitions("file", "line", "raw").write.mode("overwrite").parquet(path)
    return bad_df.sparkSession.read.parquet(path).count()


# Headerless text files: line numbers for the (rare) rejected rows
BLOCK_COL = "_block"
ROW_ID_COL = "_row_id"


def read_text_lines(spark, path: Path | str) -> DataFrame:
    """Lines of a text file: ``value`` plus ``_block`` (start byte of the split) and ``_row_id``
    (``monotonically_increasing_id``), which ``with_line_numbers`` turns into 1-based line numbers.

    Keep ``_block``/``_row_id`` only where needed (e.g. null them for good rows): they cost nothing to compute.
    """
    return spark.read.text(str(path)).select(
        "value", F.input_file_block_start().alias(BLOCK_COL), F.monotonically_increasing_id().alias(ROW_ID_COL)
    )


def with_line_numbers(bad_df: DataFrame, spark, path: Path | str, *, out_col: str = "line") -> DataFrame:
    """Add ``out_col`` = 1-based physical line of each row of ``bad_df`` (which carries ``_block``/``_row_id`` from
    ``read_text_lines`` over the same ``path``).

    Costs one extra scan of the file (lines per split), so call it only when there are bad rows. Rows of one split
    are contiguous in one task with consecutive ids, and a line belongs to the split it starts in, so
    line = lines in earlier splits + (id - first id of the split) + 1.
    """
    _split_order_w = Window.orderBy(BLOCK_COL).rowsBetween(Window.unboundedPreceding, -1)  # a few rows per file
    splits_df = (
        read_text_lines(spark, path)
        .groupBy(BLOCK_COL)
        .agg(F.min(ROW_ID_COL).alias("_first_id"), F.count(F.lit(1)).alias("_lines"))
        .withColumn("_offset", F.coalesce(F.sum("_lines").over(_split_order_w), F.lit(0)))
        .select(BLOCK_COL, "_first_id", "_offset")
    )
    return (
        bad_df.join(F.broadcast(splits_df), on=BLOCK_COL, how="left")
        .withColumn(out_col, (F.col("_offset") + F.col(ROW_ID_COL) - F.col("_first_id") + 1).cast("long"))
        .drop("_first_id", "_offset")
    )
