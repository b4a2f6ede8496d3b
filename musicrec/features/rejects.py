"""Rejected rows, shared by both feature jobs: the first failing check of a row, line numbers of a text file, and
``OUT/rejected/<file>/`` (``file, line, reason, raw``: docs/DATA_CONTRACT.md).

A job marks each row with ``reject_reason(checks)`` (null for a good row) on the same scan that parses it, so good
and bad rows come from one pass; ``write_rejected`` writes the bad ones, and ``check_reject_limit`` fails the job
when more than ``clean.max_rejected_fraction`` of a file was rejected (then the file is not in the expected
format), with one message shape for every input file of both jobs. For text files, ``read_text_lines`` keeps two
cheap columns from the scan that ``with_line_numbers`` turns into physical line numbers, in one more scan that runs
only when there are rejects; ``blank_line_shifts`` finds the blank lines a CSV scan skips.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from musicrec.columns import REASON, REJECTED_DIR
from musicrec.io import AtomicOutput, InputError

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


REJECT_LIMIT_KEY = "clean.max_rejected_fraction"


def check_reject_limit(bad_df: DataFrame, n_bad: int, n_rows: int, max_fraction: float, path: Path | str, *,
                       line_col: str, raw_col: str, order_col: str, unit: str) -> None:
    """Raise InputError when more than ``max_fraction`` of the ``n_rows`` rows (``unit``: "lines" or "rows") of
    ``path`` were rejected: "file F line L: <reason>: '<raw>' (n of N <unit> rejected, more than
    clean.max_rejected_fraction=x)", about the first bad row in file order (``order_col``; one more pass over the
    bad rows, only when the limit is exceeded). ``line_col`` null (a multi-line read) names no line."""
    if n_bad <= max_fraction * max(n_rows, 1):
        return
    first_bad = bad_df.orderBy(order_col).select(line_col, REASON, raw_col).first()
    raw = first_bad[raw_col] or ""
    raw = raw if len(raw) <= 200 else raw[:200] + "..."
    where = f"line {first_bad[line_col]}" if first_bad[line_col] is not None else "first rejected record"
    raise InputError(f"file {path} {where}: {first_bad[REASON]}: {raw!r} ({n_bad:,} of {n_rows:,} {unit} rejected, "
                     f"more than {REJECT_LIMIT_KEY}={max_fraction})")


# Text files: line numbers for the (rare) rejected rows
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


def blank_lines(spark, path: Path | str) -> DataFrame:
    """The blank lines of a text file, which a line-by-line CSV scan skips (a line of characters <= U+0020 only, as
    Spark's CSV reader trims them): ``_nonblank_before`` (lines before it that are not blank) and ``_blank_no`` (its
    1-based rank among the blank lines). Two scans of the file (``with_line_numbers``); for the rare files that
    have blank lines (``with_blank_lines_shift``)."""
    _blank_df = read_text_lines(spark, path).where(F.col("value").rlike(r"^[\x00-\x20]*$"))
    _blank_order_w = Window.orderBy("_line")  # blank lines only: few rows in one task
    return (
        with_line_numbers(_blank_df, spark, path, out_col="_line")
        .withColumn("_blank_no", F.row_number().over(_blank_order_w).cast("long"))
        .select((F.col("_line") - F.col("_blank_no")).alias("_nonblank_before"), "_blank_no")
    )


def with_blank_lines_shift(df: DataFrame, blanks_df: DataFrame, rank_col: str, out_col: str) -> DataFrame:
    """``out_col`` = the physical line of the row whose 1-based rank among the file's non-blank lines is
    ``rank_col`` (unique per row): the rank plus the blank lines before it (``blanks_df`` from ``blank_lines``).

    An as-of lookup: rows and blank lines ordered together by rank (a blank line after the k-th non-blank line
    sorts after rank k), each row taking the number of the last blank line before it; one task, only for files
    with blank lines and only over their rejected rows."""
    _marks_df = df.select(F.col(rank_col).alias("_k"), F.lit(0).alias("_is_blank"),
                          F.lit(None).cast("long").alias("_blank_no")).unionByName(
        blanks_df.select(F.col("_nonblank_before").alias("_k"), F.lit(1).alias("_is_blank"), "_blank_no"))
    _asof_w = Window.orderBy("_k", "_is_blank").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    _shift_df = (
        _marks_df.withColumn("_shift", F.coalesce(F.last("_blank_no", ignorenulls=True).over(_asof_w), F.lit(0)))
        .where(F.col("_is_blank") == 0)
        .select(F.col("_k").alias(rank_col), "_shift")
    )
    return (df.join(_shift_df, on=rank_col, how="left")
            .withColumn(out_col, (F.col(rank_col) + F.col("_shift")).cast("long")).drop("_shift"))
