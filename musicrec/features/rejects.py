"""Rejected rows, shared by both feature jobs: the first failing check of a row, line numbers of a text file, and
``OUT/rejected/<file>/`` (``file, line, reason, raw``: docs/DATA_CONTRACT.md).

A job marks each row with ``reject_reason(checks)`` (null for a good row) on the same scan that parses it, so good
and bad rows come from one pass; ``write_rejected`` writes the bad ones, and ``check_reject_limit`` fails the job
when more than ``clean.max_rejected_fraction`` of a file was rejected (then the file is not in the expected
format), with one message shape for every input file of both jobs. For text files, ``read_text_lines`` keeps two
cheap columns from the scan that ``with_line_numbers`` turns into physical line numbers, in one more scan that runs
only when there are rejects; ``blank_lines`` finds the blank lines a CSV scan skips. No window here runs in a
single partition: running offsets are summed on the driver over one row per split (``features.ranks``).
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from musicrec.columns import REASON, REJECTED_DIR
from musicrec.features.ranks import lookup, running_offsets
from musicrec.io import AtomicOutput, InputError, parquet_rows

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
    The count is read back from the written Parquet's footers (``io.parquet_rows``: no Spark job), so ``bad_df`` is
    computed only once.
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
    return parquet_rows(path)


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


def pin_file_splits(spark) -> None:
    """Fix how this session cuts files into splits for the rest of the job: ``spark.sql.files.minPartitionNum`` =
    today's default parallelism unless it is set. Spark otherwise sizes splits by the executor cores registered at
    each scan, so on a cluster whose executors come and go two scans of one file could split it differently, and
    the line numbers (split start + id within it, from one scan, applied to another) would be wrong. On a local
    master this is the value Spark uses anyway: the splits do not change."""
    key = "spark.sql.files.minPartitionNum"
    if spark.conf.get(key, None) is None:
        spark.conf.set(key, str(spark.sparkContext.defaultParallelism))


def read_text_lines(spark, path: Path | str) -> DataFrame:
    """Lines of a text file: ``value`` plus ``_block`` (start byte of the split) and ``_row_id``
    (``monotonically_increasing_id``), which ``with_line_numbers`` turns into 1-based line numbers.

    Keep ``_block``/``_row_id`` only where needed (e.g. null them for good rows): they cost nothing to compute.
    """
    return spark.read.text(str(path)).select(
        "value", F.input_file_block_start().alias(BLOCK_COL), F.monotonically_increasing_id().alias(ROW_ID_COL)
    )


def split_line_counts(spark, path: Path | str, *, blanks: bool = False) -> dict[int, dict[str, int]]:
    """``{split start byte: {"first": its first _row_id, "lines": its lines[, "blanks": its blank lines]}}`` of a
    text file: one scan, one row per split (a few per GiB) to the driver."""
    aggs = [F.min(ROW_ID_COL).alias("first"), F.count(F.lit(1)).alias("lines")]
    if blanks:
        aggs.append(F.count_if(_is_blank_line()).alias("blanks"))
    rows = read_text_lines(spark, path).groupBy(BLOCK_COL).agg(*aggs).collect()
    return {row[BLOCK_COL]: row.asDict() for row in rows}


def _is_blank_line() -> Column:
    """A line of characters <= U+0020 only, which Spark's CSV reader trims away and skips."""
    return F.col("value").rlike(r"^[\x00-\x20]*$")


def _line_shift(splits: dict[int, dict[str, int]]) -> dict[int, int]:
    """Per split: what to add to a ``_row_id`` of the split to get its 1-based line: the lines of the earlier
    splits, minus the split's first id, plus 1."""
    offsets = running_offsets({block: split["lines"] for block, split in splits.items()})
    return {block: offsets[block] - split["first"] + 1 for block, split in splits.items()}


def with_line_numbers(bad_df: DataFrame, spark, path: Path | str, *, out_col: str = "line") -> DataFrame:
    """Add ``out_col`` = 1-based physical line of each row of ``bad_df`` (which carries ``_block``/``_row_id`` from
    ``read_text_lines`` over the same ``path``).

    Costs one extra scan of the file (lines per split, ``split_line_counts``), so call it only when there are bad
    rows. Rows of one split are contiguous in one task with consecutive ids, and a line belongs to the split it
    starts in, so line = lines in earlier splits + (id - first id of the split) + 1.
    """
    shift = _line_shift(split_line_counts(spark, path))
    line = F.col(ROW_ID_COL) + lookup(shift, F.col(BLOCK_COL))
    return bad_df.withColumn(out_col, F.when(line.isNotNull() | F.col(BLOCK_COL).isNull(), line).otherwise(
        F.raise_error(F.concat(F.lit(f"{path}: a rejected row's split (start byte "), F.col(BLOCK_COL).cast("string"),
                               F.lit(") is not one the line count saw: the file changed during the job")))
    ).cast("long"))


def blank_lines(spark, path: Path | str) -> DataFrame:
    """The blank lines of a text file, which a line-by-line CSV scan skips (``_is_blank_line``): ``_nonblank_before``
    (lines before it that are not blank) and ``_blank_no`` (its 1-based rank among the blank lines). Two scans of
    the file: the lines and blank lines per split (``split_line_counts``), then the blank lines, numbered within
    their split (a window partitioned by split) after the blank lines of the earlier splits; for the rare files
    that have blank lines (``with_blank_lines_shift``)."""
    splits = split_line_counts(spark, path, blanks=True)
    line_shift = lookup(_line_shift(splits), F.col(BLOCK_COL))
    blanks_before = lookup(running_offsets({block: split["blanks"] for block, split in splits.items()}),
                           F.col(BLOCK_COL))
    _in_split_w = Window.partitionBy(BLOCK_COL).orderBy(ROW_ID_COL)
    _blank_df = read_text_lines(spark, path).where(_is_blank_line()).select(
        (F.col(ROW_ID_COL) + line_shift).alias("_line"),
        (F.row_number().over(_in_split_w) + blanks_before).cast("long").alias("_blank_no"),
    )
    return _blank_df.select((F.col("_line") - F.col("_blank_no")).alias("_nonblank_before"), "_blank_no")


def with_blank_lines_shift(df: DataFrame, blanks_df: DataFrame, rank_col: str, out_col: str, *,
                           bucket_bits: int = 20) -> DataFrame:
    """``out_col`` = the physical line of the row whose 1-based rank among the file's non-blank lines is
    ``rank_col`` (unique per row): the rank plus the blank lines before it (``blanks_df`` from ``blank_lines``).

    An as-of lookup in buckets of ``2^bucket_bits`` ranks: rows and blank lines ordered together by rank within
    their bucket (a window partitioned by bucket; a blank line after the k-th non-blank line sorts after rank k),
    each row taking the number of the last blank line before it in its bucket, else the number of the blank lines
    in the earlier buckets (their counts, one row per bucket with blank lines, come to the driver). Only for files
    with blank lines and only over their rejected rows."""
    bucket = lambda col: F.shiftright(col, int(bucket_bits))  # noqa: E731
    per_bucket = blanks_df.groupBy(bucket(F.col("_nonblank_before")).alias("_b")).agg(F.count(F.lit(1)).alias("n"))
    blanks_in = {row["_b"]: row["n"] for row in per_bucket.collect()}
    before = F.array(*[F.struct(F.lit(b).cast("long").alias("b"), F.lit(n).cast("long").alias("n"))
                       for b, n in sorted(blanks_in.items())]).cast("array<struct<b:long,n:long>>")
    _marks_df = df.select(F.col(rank_col).alias("_k"), F.lit(0).alias("_is_blank"),
                          F.lit(None).cast("long").alias("_blank_no")).unionByName(
        blanks_df.select(F.col("_nonblank_before").alias("_k"), F.lit(1).alias("_is_blank"), "_blank_no"))
    _asof_w = Window.partitionBy("_bucket").orderBy("_k", "_is_blank").rowsBetween(Window.unboundedPreceding,
                                                                                   Window.currentRow)
    # blank lines in the buckets before the row's: the sum over the (few) buckets with blank lines
    earlier = F.aggregate(F.filter(before, lambda x: x["b"] < F.col("_bucket")), F.lit(0).cast("long"),
                          lambda acc, x: acc + x["n"])
    _shift_df = (
        _marks_df.withColumn("_bucket", bucket(F.col("_k")))
        # the largest blank-line number so far (they grow with _k): blank lines that tie on _k in any order
        .withColumn("_shift", F.coalesce(F.max("_blank_no").over(_asof_w), earlier))
        .where(F.col("_is_blank") == 0)
        .select(F.col("_k").alias(rank_col), "_shift")
    )
    return (df.join(_shift_df, on=rank_col, how="left")
            .withColumn(out_col, (F.col(rank_col) + F.col("_shift")).cast("long")).drop("_shift"))
