"""Reading the two Last.fm text files: every line parsed and checked on one scan, bad lines kept for
``OUT/rejected/<file>/`` with their physical line numbers.

- plays (``userid-timestamp-artid-artname-traid-traname.tsv``, no header): ``with_parsed_plays`` splits on tabs into
  the 6 declared fields (empty -> null) and parses the timestamp with ``try_to_timestamp``; bytes that are not
  UTF-8, a wrong field count, a missing user or an unparseable timestamp sets ``reason``.
- tags (``track-tags.tsv``, header ``traid, tag, count`` in any order): ``with_parsed_tags`` trims (and lowercases)
  the tag, casts the count; bytes that are not UTF-8, a wrong field count, a missing traid or tag, or a count that
  is not an integer sets ``reason``.
- A line that is not valid UTF-8 is rejected (and counted) rather than read with U+FFFD in place of its bad bytes:
  Spark's text scan keeps a line's bytes as they are, so ``is_valid_utf8`` sees them; ``raw`` holds the line with
  each bad byte sequence replaced by U+FFFD.
- ``write_rejects`` writes the bad lines of one file, or fails the job when there are more than
  ``clean.max_rejected_fraction`` of them (the file is then not in the expected format).
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from musicrec.columns import RAW, REASON, TS, USER
from musicrec.features.rejects import (
    BLOCK_COL, ROW_ID_COL, check_reject_limit, read_text_lines, reject_reason, with_line_numbers, write_rejected,
)
from musicrec.io import AtomicOutput, read_header
from musicrec.schemas import LASTFM_PLAYS_COLUMNS, LASTFM_TAGS_SCHEMA

TS_FORMAT = "yyyy-MM-dd'T'HH:mm:ss'Z'"
RAW_COLUMNS = list(LASTFM_PLAYS_COLUMNS)  # user_id, timestamp, artist_id, artist_name, track_id, track_name
TAGS_COLUMNS = [f.name for f in LASTFM_TAGS_SCHEMA.fields]  # traid, tag, count
TRAID, TAG, TAG_COUNT = TAGS_COLUMNS
INVALID_UTF8_REASON = "invalid UTF-8 bytes"


# ---------------------------------------------------------------------------------------------------------------
# Plays
# ---------------------------------------------------------------------------------------------------------------
def read_plays(spark: SparkSession, path: Path) -> DataFrame:
    """Every line of the plays file, parsed and checked (``with_parsed_plays``)."""
    return read_text_lines(spark, path).transform(with_parsed_plays)


def plays_checks(fields_col: str = "_fields", value_col: str = "value") -> list[tuple[Column, str]]:
    """Checks on a split plays line, in order; the first failing one is the reject reason."""
    n_fields = len(RAW_COLUMNS)
    return [
        (F.is_valid_utf8(F.col(value_col)) | F.col(value_col).isNull(), INVALID_UTF8_REASON),
        (F.size(F.col(fields_col)) == F.lit(n_fields), f"wrong number of fields (expected {n_fields} tab-separated)"),
        (F.col(USER).isNotNull(), "missing user id"),
        (F.col(TS).isNotNull(), "unparseable timestamp (expected yyyy-MM-ddTHH:mm:ssZ)"),
    ]


def with_parsed_plays(lines_df: DataFrame, *, value_col: str = "value") -> DataFrame:
    """Split each line of the plays file into the 6 declared fields and check it.

    Adds ``user_id, timestamp (timestamp), artist_id, artist_name, track_id, track_name`` (empty -> null),
    ``reason`` (null for a good row) and ``raw`` (the line, bad rows only). ``_block``/``_row_id`` are kept for
    bad rows only (they give line numbers) and are null otherwise.
    """
    _fields_df = lines_df.withColumn("_fields", F.split(F.col(value_col), "\t", -1))
    text_cols = [F.nullif(F.get(F.col("_fields"), i), F.lit("")).alias(name) for i, name in enumerate(RAW_COLUMNS)]
    _typed_df = _fields_df.select(*lines_df.columns, "_fields", *text_cols).withColumn(
        TS, F.try_to_timestamp(F.col(TS), F.lit(TS_FORMAT))
    )
    _checked_df = _typed_df.withColumn(REASON, reject_reason(plays_checks(value_col=value_col)))
    return _checked_df.select(*RAW_COLUMNS, *_bad_row_columns(lines_df, value_col))


def _bad_row_columns(lines_df: DataFrame, value_col: str) -> list[Column]:
    """``reason``, then ``raw`` and the line-number columns of ``read_text_lines``, the latter two for bad rows only."""
    is_bad = F.col(REASON).isNotNull()
    extra = [F.when(is_bad, F.col(c)).alias(c) for c in (BLOCK_COL, ROW_ID_COL) if c in lines_df.columns]
    return [F.col(REASON), F.when(is_bad, F.make_valid_utf8(F.col(value_col))).alias(RAW), *extra]


# ---------------------------------------------------------------------------------------------------------------
# Tags
# ---------------------------------------------------------------------------------------------------------------
def read_tags(spark: SparkSession, path: Path, *, lowercase: bool) -> DataFrame:
    """Every line of the tags file but the header, parsed and checked (``with_parsed_tags``)."""
    return read_text_lines(spark, path).transform(with_parsed_tags, read_header(path, "\t"), lowercase=lowercase)


def tags_checks(fields_col: str, n_fields: int, value_col: str = "value") -> list[tuple[Column, str]]:
    """Checks on a split tags line, in order; the first failing one is the reject reason."""
    return [
        (F.is_valid_utf8(F.col(value_col)) | F.col(value_col).isNull(), INVALID_UTF8_REASON),
        (F.size(F.col(fields_col)) == F.lit(n_fields), f"wrong number of fields (expected {n_fields} tab-separated)"),
        (F.col(TRAID).isNotNull(), "missing traid"),
        (F.col(TAG).isNotNull(), "missing tag"),
        (F.col(TAG_COUNT).isNotNull(), "count is not an integer"),
    ]


def with_parsed_tags(lines_df: DataFrame, header: list[str], *, lowercase: bool = True, value_col: str = "value"
                     ) -> DataFrame:
    """Parse tags lines (``traid, tag, count`` in the header's column order): adds those columns, ``reason`` and
    ``raw`` like ``with_parsed_plays``. Lines equal to the header line are dropped before."""
    header_line = "\t".join(header)
    positions = {name: header.index(name) for name in TAGS_COLUMNS}
    _fields = F.split(F.col(value_col), "\t", -1)
    tag = F.trim(F.get(_fields, positions[TAG]))
    tag = F.lower(tag) if lowercase else tag
    _parsed_df = lines_df.where(F.col(value_col) != F.lit(header_line)).select(
        "*",
        _fields.alias("_fields"),
        F.nullif(F.trim(F.get(_fields, positions[TRAID])), F.lit("")).alias(TRAID),
        F.nullif(tag, F.lit("")).alias(TAG),
        F.trim(F.get(_fields, positions[TAG_COUNT])).try_cast("int").alias(TAG_COUNT),
    )
    _checked_df = _parsed_df.withColumn(REASON, reject_reason(tags_checks("_fields", len(header), value_col)))
    return _checked_df.select(*TAGS_COLUMNS, *_bad_row_columns(lines_df, value_col))


# ---------------------------------------------------------------------------------------------------------------
# Rejected lines
# ---------------------------------------------------------------------------------------------------------------
def write_rejects(bad_df: DataFrame, n_bad: int, n_lines: int, max_fraction: float, path: Path, label: str,
                  out: AtomicOutput) -> int:
    """Write the rejected rows of one file, with line numbers (an extra scan, so only when there are some).

    More than ``max_fraction`` of ``n_lines`` rejected means the file is not in the expected format: InputError
    naming the file, the first bad line and its reason (nothing is written then).
    """
    if n_bad == 0:  # an empty table with the schema; limit(0) is planned without reading the input
        return write_rejected(bad_df.limit(0), label, RAW, None, out)
    bad_df = with_line_numbers(bad_df, bad_df.sparkSession, path)
    check_reject_limit(bad_df, n_bad, n_lines, max_fraction, path, line_col="line", raw_col=RAW, order_col="line",
                       unit="lines")
    return write_rejected(bad_df, label, RAW, "line", out)
