"""Reading the five KKBOX CSVs: declared schemas, reject reasons, duplicate keys, row numbers in file order.

Every row is parsed once and marked, not split: ``_reason`` (null = good) and, for a rejected row, ``_raw`` (its
record for OUT/rejected/). The marked table is cached by the job, and the good rows, the rejected rows and every
count come from that cache. ``partition_offsets`` + ``with_row_id`` number the rows of a file 0.. in file order
without a sort; ``with_line_number`` turns that number into the physical line of a rejected row.
"""

from __future__ import annotations

import functools
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from musicrec import schemas
from musicrec.columns import ID, MSNO, ROW_ID, SONG_ID, TARGET
from musicrec.features.kkbox.columns import (
    BLANK_REASON, CORRUPT_COL, FILE_COL, INVALID_UTF8_REASON, LINE_COL, MID_COL, RAW_COL, REASON_COL,
)
from musicrec.features.kkbox.config import KkboxConfig
from musicrec.features.kkbox.side import yyyymmdd
from musicrec.features.rejects import reject_reason, with_blank_lines_shift
from musicrec.io import read_header

_MID_PART_BITS = 33  # monotonically_increasing_id puts the partition index above the lower 33 bits
_MID_POS_MASK = (1 << _MID_PART_BITS) - 1
_EVENT_COLUMNS = [ID, MSNO, SONG_ID, "source_system_tab", "source_screen_name", "source_type", TARGET]


# ----------------------------------------------------------------------------------------------------------------
# The scan
# ----------------------------------------------------------------------------------------------------------------
def schema_in_file_order(declared: T.StructType, header: list[str]) -> T.StructType:
    """The declared schema re-ordered like the file's header (Spark maps CSV fields by position, not by name);
    columns the schema does not know are read as strings and dropped later."""
    by_name = {field.name: field for field in declared.fields}
    return T.StructType([by_name.get(name, T.StructField(name, T.StringType())) for name in header])


def read_kkbox_csv(
    spark: SparkSession, path: Path, schema: T.StructType, *, file_label: str, multi_line: bool = False
) -> DataFrame:
    """Read one KKBOX CSV with its declared schema.

    Returns the declared columns (declared order) plus ``_corrupt_record`` (the raw record when it has too few or
    too many fields or a value of the wrong type, else null), ``_file`` (= ``file_label``) and ``_mid``
    (``monotonically_increasing_id`` taken right on the scan, which follows the file order; see ``with_row_id``).
    ``escape='"'`` because the files escape quotes by doubling them (RFC 4180), and a backslash is ordinary data
    ("朱元冰\\蘇桐樂"). ``multi_line`` is needed for quoted newlines but makes the file one unsplittable task.
    """
    file_schema = schema_in_file_order(schema, read_header(path, ","))
    read_schema = T.StructType(file_schema.fields + [T.StructField(CORRUPT_COL, T.StringType())])
    scan_df = spark.read.csv(
        str(path), schema=read_schema, header=True, mode="PERMISSIVE", columnNameOfCorruptRecord=CORRUPT_COL,
        escape='"', multiLine=multi_line, encoding="UTF-8",
    )
    return scan_df.select(
        *[F.col(f"`{name}`") for name in schema.fieldNames()],
        CORRUPT_COL,
        F.lit(file_label).alias(FILE_COL),
        F.monotonically_increasing_id().alias(MID_COL),
    )


# ----------------------------------------------------------------------------------------------------------------
# Checks: (condition a good row meets, reject reason), in order; the first failing one is the reason
# ----------------------------------------------------------------------------------------------------------------
def is_blank(col_names: list[str]) -> Column:
    """True when every one of the columns is null (Spark reads an empty CSV field as null): the ",,,,," rows."""
    return F.coalesce(*[F.col(name).cast("string") for name in col_names]).isNull()


def _present(col_name: str) -> Column:
    return F.col(col_name).isNotNull() & (F.trim(F.col(col_name)) != "")


def malformed_check() -> tuple[Column, str]:
    return F.col(CORRUPT_COL).isNull(), "malformed CSV record (wrong number of fields or a value of the wrong type)"


def utf8_check(schema: T.StructType) -> tuple[Column, str]:
    """No U+FFFD in any text field: Spark's CSV reader decodes each record before parsing it and puts U+FFFD in
    place of bytes that are not UTF-8 (the bytes are gone by then), so that character marks them; a row holding
    it is rejected (and counted) instead of keeping names silently changed. The readers (``read_events``,
    ``read_side_table``) put it before a file's own checks (a blank row holds no U+FFFD, so it is still blank)."""
    text_cols = [f.name for f in schema.fields if isinstance(f.dataType, T.StringType)] + [CORRUPT_COL]
    has_fffd = [F.coalesce(F.col(f"`{name}`").contains("\ufffd"), F.lit(False)) for name in text_cols]
    return ~functools.reduce(lambda a, b: a | b, has_fffd), INVALID_UTF8_REASON


def train_checks() -> list[tuple[Column, str]]:
    """Conditions a train.csv row must meet, in order (the first failing one is the reject reason)."""
    return [
        (~is_blank(schemas.KKBOX_TRAIN_SCHEMA.fieldNames()), BLANK_REASON),
        malformed_check(),
        (_present(MSNO), "missing msno"),
        (_present(SONG_ID), "missing song_id"),
        (F.col(TARGET).isin(0, 1), "target is not 0 or 1"),
    ]


def test_checks() -> list[tuple[Column, str]]:
    """Conditions a test.csv row must meet. Blank rows (the 35,000 ",,,,," padding rows of the real sample) are
    dropped and counted, not written to rejected/."""
    return [
        (~is_blank(schemas.KKBOX_TEST_SCHEMA.fieldNames()), BLANK_REASON),
        malformed_check(),
        (F.col(ID).isNotNull() & (F.col(ID) >= 0), "missing or negative id"),
        (_present(MSNO), "missing msno"),
        (_present(SONG_ID), "missing song_id"),
    ]


test_checks.__test__ = False  # not a pytest test, despite the name


def songs_checks() -> list[tuple[Column, str]]:
    return [malformed_check(), (_present(SONG_ID), "missing song_id")]


def members_checks() -> list[tuple[Column, str]]:
    return [
        malformed_check(),
        (_present(MSNO), "missing msno"),
        (F.col("registration_init_time").isNull() | yyyymmdd("registration_init_time").isNotNull(),
         "registration_init_time is not a yyyymmdd date"),
        (F.col("expiration_date").isNull() | yyyymmdd("expiration_date").isNotNull(),
         "expiration_date is not a yyyymmdd date"),
    ]


# A record whose name opened a quote that never closed swallows the following lines as one huge field; in the real
# song_extra_info.csv one name ("Love mode feat.PE'Z & VERBAL(m-flo),...) holds the next 148 records this way.
_SWALLOWED_RECORD = r"[\r\n][A-Za-z0-9+/]{43}=,"


def extra_checks() -> list[tuple[Column, str]]:
    return [
        malformed_check(),
        (_present(SONG_ID), "missing song_id"),
        (~F.coalesce(F.col("name").rlike(_SWALLOWED_RECORD), F.lit(False)),
         "name swallows the following records (a quote that never closes)"),
    ]


# ----------------------------------------------------------------------------------------------------------------
# Marks: reject reason, raw record, duplicate keys
# ----------------------------------------------------------------------------------------------------------------
def with_reject_reason(df: DataFrame, checks: list[tuple[Column, str]], *, reason_col: str = REASON_COL) -> DataFrame:
    """Add ``reason_col``: the message of the first failing check (``rejects.reject_reason``), null for good rows.

    One column rather than two frames, so the marked table is cached once and the good rows, the rejected rows and
    every count come from that cache.
    """
    return df.withColumn(reason_col, reject_reason(checks))


def with_raw_record(df: DataFrame, col_names: list[str], *, raw_col: str = RAW_COL, reason_col: str = REASON_COL
                    ) -> DataFrame:
    """Add the raw record of a rejected row (``reason_col`` not null) for OUT/rejected/: Spark's copy when it
    flagged the record, else the fields re-joined with commas (empty for null). Null for good rows, which are cached
    and must stay narrow."""
    rejoined = F.concat_ws(",", *[F.coalesce(F.col(name).cast("string"), F.lit("")) for name in col_names])
    return df.withColumn(raw_col, F.when(F.col(reason_col).isNotNull(), F.coalesce(F.col(CORRUPT_COL), rejoined)))


def with_duplicate_reason(df: DataFrame, key_col: str, *, order_col: str = MID_COL, reason_col: str = REASON_COL
                          ) -> DataFrame:
    """Mark every good row whose ``key_col`` already appeared on an earlier good row (file order) as a duplicate,
    so a side table has one row per key and a left join never multiplies events.

    The repeated keys and their first row are found by a hash aggregation and broadcast back (normally there are
    none): cheaper than a window, which would sort the 2.3M songs by key."""
    _first_df = (
        df.where(F.col(reason_col).isNull())
        .groupBy(key_col)
        .agg(F.min(order_col).alias("_first_order"), F.count(F.lit(1)).alias("_key_rows"))
        .where(F.col("_key_rows") > 1)
        .select(key_col, "_first_order")
    )
    first = F.col("_first_order")
    is_later = F.col(reason_col).isNull() & first.isNotNull() & (F.col(order_col) != first)
    return (
        df.join(F.broadcast(_first_df), on=key_col, how="left")
        .withColumn(reason_col, F.when(is_later, F.lit(f"duplicate {key_col}")).otherwise(F.col(reason_col)))
        .drop("_first_order")
    )


# ----------------------------------------------------------------------------------------------------------------
# Row numbers in file order, physical lines
# ----------------------------------------------------------------------------------------------------------------
def partition_offsets(df: DataFrame, *, file_col: str = FILE_COL, mid_col: str = MID_COL
                      ) -> tuple[dict[str, int], dict[str, int]]:
    """Per ``file_col`` value: the first row number of every input partition, and the file's row count.

    Runs one small job (a count per input partition: a few numbers per file come back to the driver). ``df``
    should be cached, so that ``_mid`` is the value ``with_row_id`` will see.
    """
    part = F.shiftright(F.col(mid_col), _MID_PART_BITS)
    counts = df.groupBy(file_col, part.alias("_part")).agg(F.count(F.lit(1)).alias("_n")).collect()
    offsets: dict[str, int] = {}
    totals: dict[str, int] = {}
    for row in sorted(counts, key=lambda r: (r[file_col], r["_part"])):
        start = totals.get(row[file_col], 0)
        offsets[f"{row[file_col]}#{row['_part']}"] = start
        totals[row[file_col]] = start + row["_n"]
    return offsets, totals


def with_row_id(df: DataFrame, offsets: dict[str, int], *, row_id_col: str = ROW_ID, file_col: str = FILE_COL,
                mid_col: str = MID_COL) -> DataFrame:
    """Add a consecutive 0-based row number in file order: the input partition's first row number plus the
    position inside the partition.

    ``monotonically_increasing_id()`` on a single-file scan is (partition << 33) + position, and a file's
    partitions are consecutive byte ranges, so it is in file order but has gaps. ``offsets`` (from
    ``partition_offsets``) closes them. Cheaper than ``rdd.zipWithIndex`` (every row through Python) or a global
    ``row_number()`` window (every row sorted in one task): the only extra work is one count per partition.
    """
    if not offsets:
        return df.withColumn(row_id_col, F.lit(None).cast("long"))
    offset_map = F.create_map(*[F.lit(v) for kv in sorted(offsets.items()) for v in kv])
    key = F.concat(F.col(file_col), F.lit("#"), F.shiftright(F.col(mid_col), _MID_PART_BITS).cast("string"))
    position = F.col(mid_col).bitwiseAND(F.lit(_MID_POS_MASK))
    return df.withColumn(row_id_col, (F.try_element_at(offset_map, key) + position).cast("long"))


def with_line_number(df: DataFrame, *, multi_line: bool, blanks_df: DataFrame | None = None,
                     row_id_col: str = ROW_ID, line_col: str = LINE_COL) -> DataFrame:
    """1-based physical line of a row (header = line 1) when the file was read line by line; null for a
    multi-line read, where a record may span several lines.

    The scan skips blank lines, so row ``r`` is the ``r + 2``-th non-blank line: its physical line when the file
    has none, else that plus the blank lines before it (``blanks_df`` from ``rejects.blank_lines``)."""
    if multi_line:
        return df.withColumn(line_col, F.lit(None).cast("long"))
    _ranked_df = df.withColumn("_rank", (F.col(row_id_col) + F.lit(2)).cast("long"))
    if blanks_df is None:
        return _ranked_df.withColumnRenamed("_rank", line_col)
    return _ranked_df.transform(with_blank_lines_shift, blanks_df, "_rank", line_col).drop("_rank")


# ----------------------------------------------------------------------------------------------------------------
# The job's reads
# ----------------------------------------------------------------------------------------------------------------
def read_events(spark: SparkSession, paths: dict[str, Path], cfg: KkboxConfig) -> DataFrame:
    """train.csv and test.csv as one frame (same columns: ``id`` null for train, ``target`` null for test), each row
    marked with ``_reason`` (null = good) and, when rejected, its raw record."""
    frames = []
    for name, checks in ((schemas.KKBOX_TRAIN_FILE, train_checks()), (schemas.KKBOX_TEST_FILE, test_checks())):
        schema = schemas.KKBOX_SCHEMAS[name]
        _scan_df = read_kkbox_csv(spark, paths[name], schema, file_label=name,
                                  multi_line=name in cfg.input.multiline_files)
        frames.append(
            _scan_df.transform(with_reject_reason, [utf8_check(schema), *checks])
            .transform(with_raw_record, schema.fieldNames())
            .select(*[F.col(c) if c in schema.fieldNames() else F.lit(None).cast("int").alias(c)
                      for c in _EVENT_COLUMNS], FILE_COL, MID_COL, RAW_COL, REASON_COL)
        )
    return frames[0].unionByName(frames[1])


SIDE_CHECKS = {schemas.KKBOX_SONGS_FILE: songs_checks, schemas.KKBOX_MEMBERS_FILE: members_checks,
               schemas.KKBOX_EXTRA_FILE: extra_checks}  # the side tables, in the order the job reads them
SIDE_KEYS = {schemas.KKBOX_SONGS_FILE: SONG_ID, schemas.KKBOX_MEMBERS_FILE: MSNO, schemas.KKBOX_EXTRA_FILE: SONG_ID}


def read_side_table(spark: SparkSession, path: Path, name: str, checks: list[tuple[Column, str]],
                    cfg: KkboxConfig) -> DataFrame:
    """songs.csv, members.csv or song_extra_info.csv with ``_reason`` (malformed, missing key ...); to be cached,
    then ``mark_side_table`` adds duplicates and raw records on top of the cache."""
    schema = schemas.KKBOX_SCHEMAS[name]
    return read_kkbox_csv(spark, path, schema, file_label=name, multi_line=name in cfg.input.multiline_files
                          ).transform(with_reject_reason, [utf8_check(schema), *checks])


def mark_side_table(df: DataFrame, name: str, key_col: str) -> DataFrame:
    """Duplicate keys rejected (``with_duplicate_reason``) and the raw record of every rejected row."""
    return (
        df.transform(with_duplicate_reason, key_col)
        .transform(with_raw_record, schemas.KKBOX_SCHEMAS[name].fieldNames())
        .drop(CORRUPT_COL)
    )
