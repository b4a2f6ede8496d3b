"""KKBOX WSDM 2018 feature job: the five raw CSVs -> OUT/{train,valid,test} Parquet, vocabularies, stats, manifest.

    spark-submit jobs/features.py kkbox --input DIR --output OUT [--conf conf/kkbox.yaml] [--set section.key=v]

The output layout is docs/DATA_CONTRACT.md (KKBOX section). The pipeline is a chain of small stages, each a
DataFrame -> DataFrame transformation or a column function, pinned by tests/test_features_kkbox.py:

1. read     ``read_kkbox_csv`` (declared schema, columns taken in the file's header order, ``_corrupt_record``,
            ``_file``, ``_mid``), the ``*_checks`` lists -> ``with_reject_reason``, ``with_raw_record``;
            ``with_duplicate_reason`` for the keyed side tables; ``partition_offsets`` + ``with_row_id`` give a
            consecutive 0-based row number in file order; ``with_line_number`` for rejected/.
2. side     ``with_isrc_fields``, ``with_member_features`` (age from ``bd``, membership days, registration year).
3. split    ``with_split``: train.csv rows before ``valid_cut`` -> train, the rest -> valid; test.csv -> test.
4. entities ``plays_by_split`` (one row per song / user / source context of the events, with its events per split),
            ``join_song_info`` (songs.csv + song_extra_info.csv), ``with_song_lists`` (``split_names`` on the
            separators the data uses), ``with_artist_counts``, ``join_member_info``, ``with_numeric_features``.
5. vocab    ``build_weighted_vocabs`` (every vocabulary of an entity table in one aggregation, counts weighted by
            train-part plays = the number of train events with the token), ``write_vocabs``.
6. numeric  ``moment_sums`` + ``standardization_stats`` (train-part, event-weighted, exact sums),
            ``with_standardized``; ``split_summary`` (unknown songs / members per split); ``with_indices`` indexes
            every column of an entity table in one lookup.
7. write    ``join_features`` (events x indexed user and song tables, both broadcast), ``with_context_indices``,
            ``select_output_columns``, ``write_splits`` (all three splits in one pass, no shuffle); rejected rows,
            stats report and manifest through the shared helpers in ``musicrec.features.common``, inside one
            ``AtomicOutput`` (OUT is replaced only when all of it worked).

Working per entity is what keeps the job fast: the 10M events are parsed once, cached narrow (ids and source
strings), aggregated three times and streamed once through broadcast joins into the output; they are never
shuffled. Everything else (vocabularies, statistics, indices) happens on the song and user tables.

Every raw row is accounted for: for train.csv, train + valid + rejected = input rows, checked before anything is
published (``check_row_accounting``) and recorded in the manifest (``row_accounting``) and in stats.json.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import shutil
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from musicrec import schemas
from musicrec.columns import FIRST_TOKEN_INDEX, ID, MSNO, OOV_INDEX, SONG_ID, SONG_IDX, TARGET, USER_IDX
from musicrec.features.common import (
    VOCAB_DIR,
    VOCAB_SCHEMA,
    AtomicOutput,
    InputError,
    StatsReport,
    check_header,
    file_fingerprint,
    reject_reason,
    require_files,
    require_nonempty,
    with_index,
    with_index_array,
    write_manifest,
    write_rejected,
    write_vocab,
)

DATASET = "kkbox"

# --- columns this job adds (temporary ones start with "_" and never reach the output) ---
ROW_ID = "row_id"  # 0-based row number in the source file (train.csv or test.csv), file order
SPLIT = "split"  # "train" | "valid" | "test"
TRAIN, VALID, TEST = "train", "valid", "test"
CORRUPT_COL = "_corrupt_record"  # Spark's PERMISSIVE-mode copy of a record that did not fit the schema
FILE_COL = "_file"  # which raw file a row came from
MID_COL = "_mid"  # monotonically_increasing_id() taken on the scan: (input partition << 33) + position
RAW_COL = "_raw"  # the raw record (or its fields re-joined) for OUT/rejected/
REASON_COL = "_reason"  # null = good row, else why it is rejected
LINE_COL = "_line"  # 1-based physical line, for OUT/rejected/ (null when not known)
BLANK_REASON = "blank row (every field empty)"

GENRE_LIST, ARTIST_LIST, COMPOSER_LIST, LYRICIST_LIST = "genre_list", "artist_list", "composer_list", "lyricist_list"
ISRC_COUNTRY, ISRC_YEAR = "isrc_country", "isrc_year"
AGE, MEMBERSHIP_DAYS, REGISTRATION_YEAR = "age", "membership_days", "registration_year"
SONG_LENGTH, SONG_COUNT, USER_COUNT, ARTIST_COUNT = "song_length", "song_count", "user_count", "artist_count"
ARTIST_KEY = "_artist_key"  # trimmed artist_name: the key of the artist popularity count
HAS_MEMBER, HAS_SONG, HAS_EXTRA = "_has_member", "_has_song", "_has_extra"

_MID_PART_BITS = 33  # monotonically_increasing_id puts the partition index above the lower 33 bits
_MID_POS_MASK = (1 << _MID_PART_BITS) - 1

# Vocabularies of single-valued columns: vocab name -> (source column, output int column).
CATEGORICAL_VOCABS: dict[str, tuple[str, str]] = {
    "user": (MSNO, USER_IDX),
    "song": (SONG_ID, SONG_IDX),
    "source_system_tab": ("source_system_tab", "source_system_tab_idx"),
    "source_screen_name": ("source_screen_name", "source_screen_name_idx"),
    "source_type": ("source_type", "source_type_idx"),
    "city": ("city", "city_idx"),
    "gender": ("gender", "gender_idx"),
    "registered_via": ("registered_via", "registered_via_idx"),
    "language": ("language", "language_idx"),
    "isrc_country": (ISRC_COUNTRY, "isrc_country_idx"),
    "isrc_year": (ISRC_YEAR, "isrc_year_idx"),
}
# Multi-valued columns: vocab name -> (array<string> column, output array<int> column).
MULTI_VALUED_VOCABS: dict[str, tuple[str, str]] = {
    "genre": (GENRE_LIST, "genre_idx"),
    "artist": (ARTIST_LIST, "artist_idx"),
    "composer": (COMPOSER_LIST, "composer_idx"),
    "lyricist": (LYRICIST_LIST, "lyricist_idx"),
}
PERSON_VOCAB = "person"  # one vocabulary for artist, composer and lyricist when multi_valued.shared_person_vocab
PERSON_VOCABS = ("artist", "composer", "lyricist")
NUMERIC_COLUMNS = [SONG_LENGTH, AGE, MEMBERSHIP_DAYS, REGISTRATION_YEAR, SONG_COUNT, USER_COUNT, ARTIST_COUNT]
COUNT_COLUMNS = [SONG_COUNT, USER_COUNT, ARTIST_COUNT]

# The separators artist_name / composer / lyricist really use in KKBOX's songs.csv (counted on the 39,999-row real
# sample: "|" 10,305 fields, "/" 1,462, "&" 1,065, "+" 358, ";" 189, "、" 143, "\" 56, "feat." 107 and "featuring"
# 24, "×" 20, " x " 19, full-width "＆／＋，" 60, "ft." 1). " and ", " with " and "," are NOT separators there:
# they occur inside band names ("Of Monsters and Men", "Relax with Smooth Jazz", "莫非，這就是愛情 原聲帶").
DEFAULT_PERSON_SEPARATORS = [
    r"\|", "/", r"\\", ";", "&", r"\+", "、", "＆", "／", "＋", "，", "×",
    r"\s[xX]\s",
    r"(?i:\bfeat\.|\bfeaturing\b|\bft\.)",
]


# ----------------------------------------------------------------------------------------------------------------
# Configuration (conf/kkbox.yaml mirrors these defaults; tests check that they agree)
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class KkboxConfig:
    """The resolved job configuration; ``from_dict`` reads the sectioned YAML layout of conf/kkbox.yaml."""

    # input
    multiline_files: tuple[str, ...] = (schemas.KKBOX_EXTRA_FILE,)
    # split
    valid_fraction: float = 0.2
    # vocab
    min_count: int = 1
    min_count_by_vocab: dict = dataclasses.field(
        default_factory=lambda: {"song": 2, "artist": 2, "composer": 2, "lyricist": 2, "person": 2}
    )
    # multi_valued
    max_multi: int = 8
    genre_separators: tuple[str, ...] = (r"\|",)
    person_separators: tuple[str, ...] = tuple(DEFAULT_PERSON_SEPARATORS)
    shared_person_vocab: bool = False
    # numeric
    age_min: int = 10
    age_max: int = 80
    log1p_counts: bool = True
    isrc_year_pivot: int = 18
    # output
    rows_per_file: int = 1_000_000
    min_files: int = 2

    SECTIONS = {
        "input": ("multiline_files",),
        "split": ("valid_fraction",),
        "vocab": ("min_count", "min_count_by_vocab"),
        "multi_valued": ("max_multi", "genre_separators", "person_separators", "shared_person_vocab"),
        "numeric": ("age_min", "age_max", "log1p_counts", "isrc_year_pivot"),
        "output": ("rows_per_file", "min_files"),
    }

    @classmethod
    def from_dict(cls, config: dict | None) -> "KkboxConfig":
        """Defaults overridden by ``config`` (sections as in conf/kkbox.yaml); unknown or bad keys -> InputError."""
        values: dict[str, Any] = {}
        for section, body in (config or {}).items():
            if section not in cls.SECTIONS:
                raise InputError(f"config: unknown section {section!r} (known: {', '.join(cls.SECTIONS)})")
            for key, value in (body or {}).items():
                if key not in cls.SECTIONS[section]:
                    raise InputError(f"config: unknown key {section}.{key} (known: {', '.join(cls.SECTIONS[section])})")
                values[key] = tuple(value) if isinstance(value, list) else value
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        def bad(key: str, why: str) -> InputError:
            section = next(s for s, keys in self.SECTIONS.items() if key in keys)
            return InputError(f"config: {section}.{key} = {getattr(self, key)!r}: {why}")

        if not 0.0 <= float(self.valid_fraction) < 1.0:
            raise bad("valid_fraction", "must be in [0, 1)")
        for key in ("min_count", "max_multi", "rows_per_file", "min_files"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise bad(key, "must be an integer >= 1")
        if not isinstance(self.min_count_by_vocab, dict):
            raise bad("min_count_by_vocab", "must map vocabulary names to integers")
        known = set(CATEGORICAL_VOCABS) | set(MULTI_VALUED_VOCABS) | {PERSON_VOCAB}
        for name, value in self.min_count_by_vocab.items():
            if name not in known or not isinstance(value, int) or value < 1:
                raise bad("min_count_by_vocab", f"{name!r}: names must be vocabularies ({', '.join(sorted(known))}) "
                          "and values integers >= 1")
        if not self.genre_separators or not self.person_separators:
            raise bad("person_separators" if not self.person_separators else "genre_separators", "must not be empty")
        if not self.age_min <= self.age_max:
            raise bad("age_min", f"must be <= numeric.age_max ({self.age_max})")
        if not 0 <= self.isrc_year_pivot <= 100:
            raise bad("isrc_year_pivot", "must be in 0..100")
        unknown = set(self.multiline_files) - set(schemas.KKBOX_FILES)
        if unknown:
            raise bad("multiline_files", f"unknown files {sorted(unknown)}")

    def vocab_min_count(self, vocab_name: str) -> int:
        return int(self.min_count_by_vocab.get(vocab_name, self.min_count))

    def to_dict(self) -> dict:
        """The resolved configuration in the sectioned layout (recorded in the manifest)."""
        return {
            section: {key: (list(v) if isinstance(v := getattr(self, key), tuple) else v) for key in keys}
            for section, keys in self.SECTIONS.items()
        }


def separator_parts(separators: list[str] | tuple[str, ...]) -> tuple[str, str | None]:
    """Split the configured separators (regex alternatives) into the single characters among them (``/``, ``\\|``,
    ``、`` ...) and one Java regex for the others (``\\s[xX]\\s``, ``feat.`` ...; None when there are none)."""
    singles, others = [], []
    for sep in separators:
        if len(sep) == 1 and sep not in "\\.^$|?*+()[]{}":
            singles.append(sep)
        elif len(sep) == 2 and sep[0] == "\\" and not sep[1].isalnum():
            singles.append(sep[1])
        else:
            others.append(sep)
    return "".join(dict.fromkeys(singles)), ("|".join(f"(?:{sep})" for sep in others) or None)


# ----------------------------------------------------------------------------------------------------------------
# 1. Read: declared schemas, malformed rows, consecutive row numbers
# ----------------------------------------------------------------------------------------------------------------
def header_columns(path: Path) -> list[str]:
    """Column names of the first line of a CSV (after ``check_header`` has vouched for it)."""
    with open(path, "r", encoding="utf-8", errors="replace", newline="") as handle:
        first = handle.readline()
    return [name.strip().strip('"') for name in first.lstrip("\ufeff").rstrip("\r\n").split(",")]


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
    file_schema = schema_in_file_order(schema, header_columns(path))
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


def is_blank(col_names: list[str]) -> Column:
    """True when every one of the columns is null (Spark reads an empty CSV field as null): the ",,,,," rows."""
    return F.coalesce(*[F.col(name).cast("string") for name in col_names]).isNull()


def with_raw_record(df: DataFrame, col_names: list[str], *, raw_col: str = RAW_COL, reason_col: str = REASON_COL
                    ) -> DataFrame:
    """Add the raw record of a rejected row (``reason_col`` not null) for OUT/rejected/: Spark's copy when it
    flagged the record, else the fields re-joined with commas (empty for null). Null for good rows, which are cached
    and must stay narrow."""
    rejoined = F.concat_ws(",", *[F.coalesce(F.col(name).cast("string"), F.lit("")) for name in col_names])
    return df.withColumn(raw_col, F.when(F.col(reason_col).isNotNull(), F.coalesce(F.col(CORRUPT_COL), rejoined)))


def _present(col_name: str) -> Column:
    return F.col(col_name).isNotNull() & (F.trim(F.col(col_name)) != "")


def malformed_check() -> tuple[Column, str]:
    return F.col(CORRUPT_COL).isNull(), "malformed CSV record (wrong number of fields or a value of the wrong type)"


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


def with_reject_reason(df: DataFrame, checks: list[tuple[Column, str]], *, reason_col: str = REASON_COL) -> DataFrame:
    """Add ``reason_col``: the message of the first failing check (``common.reject_reason``), null for good rows.

    One column instead of ``common.with_rejects``' two frames, so the marked table is cached once and the good
    rows, the rejected rows and every count come from that cache.
    """
    return df.withColumn(reason_col, reject_reason(checks))


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


def with_line_number(df: DataFrame, *, multi_line: bool, row_id_col: str = ROW_ID, line_col: str = LINE_COL
                     ) -> DataFrame:
    """1-based physical line of a row (header = line 1) when the file was read line by line; null for a
    multi-line read, where a record may span several lines."""
    line = F.lit(None).cast("long") if multi_line else F.col(row_id_col) + F.lit(2)
    return df.withColumn(line_col, line.cast("long"))


# ----------------------------------------------------------------------------------------------------------------
# 2. Side tables: songs, song_extra_info, members
# ----------------------------------------------------------------------------------------------------------------
# Whitespace that Spark's trim() leaves alone (it trims U+0020 only): tabs, newlines, U+00A0 (in the real files),
# the other Unicode spaces and the BOM. split_names turns them into plain spaces first.
_OTHER_SPACES = "\t\n\r\x0b\x0c\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
                "\u2028\u2029\u202f\u205f\u3000\ufeff"
_PIECE_BREAK = "\u0001"  # what every separator becomes before the split (never in the data: a control character)


def plain_spaces(col: Column) -> Column:
    """``col`` with every kind of whitespace turned into U+0020, so that ``F.trim`` trims it."""
    return F.translate(col, _OTHER_SPACES, " " * len(_OTHER_SPACES))


def split_names(col: Column, separators: list[str] | tuple[str, ...], max_len: int) -> Column:
    """array<string> of the pieces of ``col`` split on ``separators`` (regex alternatives): each trimmed (incl.
    U+00A0, tabs, U+3000: all whitespace becomes plain spaces), empty pieces dropped, duplicates dropped (first
    kept), at most ``max_len``; null when none is left.

    Cheap on millions of names: single-character separators are mapped to one break character with ``translate``,
    the others (`` x ``, ``feat.``) replaced by one regex, and the split on that one plain character takes Java's
    no-regex fast path."""
    singles, others = separator_parts(separators)
    text = plain_spaces(col)
    if singles:
        text = F.translate(text, singles, _PIECE_BREAK * len(singles))
    if others:
        text = F.regexp_replace(text, others, _PIECE_BREAK)
    pieces = F.transform(F.split(text, _PIECE_BREAK), lambda piece: F.trim(piece))
    kept = F.slice(F.array_distinct(F.filter(pieces, lambda piece: piece != "")), 1, max_len)
    return F.when(F.size(kept) > 0, kept)


def with_song_lists(df: DataFrame, *, genre_separators: list[str] | tuple[str, ...],
                    person_separators: list[str] | tuple[str, ...], max_multi: int) -> DataFrame:
    """Add ``genre_list``, ``artist_list``, ``composer_list``, ``lyricist_list`` (array<string>, null = missing)
    and ``_artist_key`` (the whole trimmed artist_name, the key of the artist popularity count)."""
    return (
        df.withColumn(GENRE_LIST, split_names(F.col("genre_ids"), genre_separators, max_multi))
        .withColumn(ARTIST_LIST, split_names(F.col("artist_name"), person_separators, max_multi))
        .withColumn(COMPOSER_LIST, split_names(F.col("composer"), person_separators, max_multi))
        .withColumn(LYRICIST_LIST, split_names(F.col("lyricist"), person_separators, max_multi))
        .withColumn(ARTIST_KEY, F.nullif(F.trim(plain_spaces(F.col("artist_name"))), F.lit("")))
    )


_ISRC_RE = r"^[A-Z]{2}[A-Z0-9]{3}[0-9]{7}$"  # CC XXX YY NNNNN without dashes, e.g. TWUM71200043


def isrc_country(col: Column) -> Column:
    """Country code of an ISRC (its first two letters, e.g. "TW"); null when the ISRC is missing or malformed."""
    isrc = F.upper(F.trim(col))
    return F.when(isrc.rlike(_ISRC_RE), F.substring(isrc, 1, 2))


def isrc_year(col: Column, pivot: int) -> Column:
    """Four-digit reference year of an ISRC from its two-digit year (characters 6-7: "TWUM71200043" -> 2012):
    ``yy < pivot`` -> 20yy, else 19yy; null when the ISRC is missing or malformed."""
    isrc = F.upper(F.trim(col))
    yy = F.substring(isrc, 6, 2).try_cast("int")
    return F.when(isrc.rlike(_ISRC_RE), F.when(yy < pivot, yy + 2000).otherwise(yy + 1900)).cast("int")


def with_isrc_fields(df: DataFrame, *, pivot: int, isrc_col: str = "isrc") -> DataFrame:
    """Add ``isrc_country`` (string) and ``isrc_year`` (int)."""
    return df.withColumn(ISRC_COUNTRY, isrc_country(F.col(isrc_col))).withColumn(
        ISRC_YEAR, isrc_year(F.col(isrc_col), pivot)
    )


def yyyymmdd(col_name: str) -> Column:
    """A yyyymmdd string as a date; null when missing or not a real date (e.g. 20170231)."""
    return F.try_to_date(F.col(col_name), "yyyyMMdd")


def with_member_features(df: DataFrame, *, age_min: int, age_max: int) -> DataFrame:
    """Add ``age`` (``bd`` when within [age_min, age_max], else null: 0 and values like -43 or 1051 are common),
    ``membership_days`` (expiration - registration; null when negative, e.g. the 19700101 placeholder) and
    ``registration_year``."""
    registered = yyyymmdd("registration_init_time")
    days = F.datediff(yyyymmdd("expiration_date"), registered)
    return (
        df.withColumn(AGE, F.when(F.col("bd").between(age_min, age_max), F.col("bd")))
        .withColumn(MEMBERSHIP_DAYS, F.when(days >= 0, days))
        .withColumn(REGISTRATION_YEAR, F.year(registered))
    )



# ----------------------------------------------------------------------------------------------------------------
# 3. Split (events) and per-entity tables: one row per song / user / source context seen in the events, with its
#    number of events per split
# ----------------------------------------------------------------------------------------------------------------
def valid_cut(n_rows: int, valid_fraction: float) -> int:
    """First row number of the validation part: the last ``round(n_rows * valid_fraction)`` rows are validation."""
    return n_rows - int(round(n_rows * valid_fraction))


def with_split(df: DataFrame, *, cut: int, row_id_col: str = ROW_ID, file_col: str = FILE_COL) -> DataFrame:
    """Add ``split``: test.csv rows -> "test"; train.csv rows (in time order) -> "train" before row ``cut``, else
    "valid". The cut is on the file's row numbers, so rejected rows do not move it."""
    is_test = F.col(file_col) == F.lit(schemas.KKBOX_TEST_FILE)
    return df.withColumn(
        SPLIT, F.when(is_test, F.lit(TEST)).when(F.col(row_id_col) < F.lit(cut), F.lit(TRAIN)).otherwise(F.lit(VALID))
    )


PLAYS = {TRAIN: "_plays_train", VALID: "_plays_valid", TEST: "_plays_test"}  # events of an entity per split


def plays_by_split(df: DataFrame, key_cols: list[str], *, split_col: str = SPLIT) -> DataFrame:
    """One row per distinct ``key_cols`` value among the events of every split, with its number of events in each
    split (long): ``_plays_train`` (what every vocabulary and popularity count is made of: the train part only),
    ``_plays_valid``, ``_plays_test``."""
    return df.groupBy(*key_cols).agg(
        *[F.sum((F.col(split_col) == F.lit(split)).cast("long")).alias(col) for split, col in PLAYS.items()]
    )


SONG_INFO_COLUMNS = [SONG_LENGTH, "genre_ids", "artist_name", "composer", "lyricist", "language"]
MEMBER_COLUMNS = ["city", "gender", "registered_via", AGE, MEMBERSHIP_DAYS, REGISTRATION_YEAR]


def join_song_info(event_songs_df: DataFrame, songs_df: DataFrame, extra_df: DataFrame) -> DataFrame:
    """Event songs LEFT JOIN songs.csv LEFT JOIN song_extra_info.csv (both keyed by song_id, one row per key), with
    ``_has_song`` / ``_has_extra`` flags: in the real data many played songs are missing from songs.csv, and the
    ISRC of a song may be known even then. Only played songs go on (e.g. to the name splitting): a third of the 2.3M
    songs of songs.csv at full size."""
    _songs_df = songs_df.select(SONG_ID, *SONG_INFO_COLUMNS, F.lit(True).alias(HAS_SONG))
    _extra_df = extra_df.select(SONG_ID, ISRC_COUNTRY, ISRC_YEAR, F.lit(True).alias(HAS_EXTRA))
    return (
        event_songs_df.join(_songs_df, on=SONG_ID, how="left")
        .join(_extra_df, on=SONG_ID, how="left")
        .fillna(False, subset=[HAS_SONG, HAS_EXTRA])
    )


def with_artist_counts(df: DataFrame, *, plays_col: str = PLAYS[TRAIN], out_col: str = ARTIST_COUNT) -> DataFrame:
    """Add ``out_col`` = train-part plays of the song's artist (``_artist_key``, the whole trimmed artist_name):
    the sum of ``plays_col`` over the songs with that artist, which is the number of train events of the artist
    as every event has one song. Null when the song has no artist (not in songs.csv)."""
    _artist_w = Window.partitionBy(ARTIST_KEY)
    return df.withColumn(out_col, F.when(F.col(ARTIST_KEY).isNotNull(), F.sum(plays_col).over(_artist_w)))


def join_member_info(event_users_df: DataFrame, members_df: DataFrame) -> DataFrame:
    """Event users LEFT JOIN members.csv (one row per msno), with a ``_has_member`` flag."""
    _members_df = members_df.select(MSNO, *MEMBER_COLUMNS, F.lit(True).alias(HAS_MEMBER))
    return event_users_df.join(_members_df, on=MSNO, how="left").fillna(False, subset=[HAS_MEMBER])


# ----------------------------------------------------------------------------------------------------------------
# 4. Vocabularies and indices
# ----------------------------------------------------------------------------------------------------------------
VOCAB_COL = "vocab"


def _tagged(name: str):
    return lambda token: F.struct(F.lit(name).alias(VOCAB_COL), token.cast("string").alias("token"))


def build_weighted_vocabs(df: DataFrame, token_arrays: dict[str, Column], *, weight_col: str,
                          min_counts: dict[str, int]) -> DataFrame:
    """Several vocabularies in one aggregation: ``vocab string, token string, index int, count long``.

    ``token_arrays`` maps a vocabulary name to an array<string> Column (wrap a scalar column in ``F.array``); a
    token's ``count`` is the sum of ``weight_col`` over the rows holding it. With rows = distinct songs (users,
    source contexts) and weight = their train-part plays, ``count`` is the number of train-part events with the
    token, exactly what ``common.build_vocab`` counts on the events, without exploding millions of events.
    Conventions as in ``common.build_vocab``: null tokens are never tokens, tokens with ``count < min_count`` are
    left out (-> 1 = OOV), indices from 2 by count descending, ties by token ascending.
    """
    # TODO(common): common.build_vocab / build_vocab_from_array count rows (no weight column) and build one
    # vocabulary per Spark job; a weighted, multi-vocabulary variant there would serve the Last.fm job as well.
    empty = F.array().cast("array<string>")
    pairs = F.flatten(F.array(*[
        F.transform(F.coalesce(arr.cast("array<string>"), empty), _tagged(name)) for name, arr in token_arrays.items()
    ]))
    min_count = F.create_map(*[F.lit(v) for name in token_arrays for v in (name, max(int(min_counts[name]), 1))])
    counts_df = (
        df.select(F.explode(pairs).alias("_pair"), F.col(weight_col).alias("_weight"))
        .select(F.col(f"_pair.{VOCAB_COL}").alias(VOCAB_COL), F.col("_pair.token").alias("token"), "_weight")
        .where(F.col("token").isNotNull())
        .groupBy(VOCAB_COL, "token")
        .agg(F.sum("_weight").cast("long").alias("count"))
        .where(F.col("count") >= F.element_at(min_count, F.col(VOCAB_COL)))
    )
    _vocab_order_w = Window.partitionBy(VOCAB_COL).orderBy(F.desc("count"), F.asc("token"))
    return counts_df.select(
        VOCAB_COL, "token",
        (F.row_number().over(_vocab_order_w) + F.lit(FIRST_TOKEN_INDEX - 1)).cast("int").alias("index"),
        "count",
    )


def write_vocabs(vocabs_df: DataFrame, names: list[str], out: AtomicOutput) -> dict[str, str]:
    """Write every vocabulary of a ``build_weighted_vocabs`` table to ``OUT/vocab/<name>/`` (one Parquet file each,
    ``token, index, count`` sorted by index, as ``common.write_vocab`` writes them) in ONE Spark job; returns
    ``{name: path}``. A vocabulary without tokens gets an empty table."""
    # TODO(common): common.write_vocab writes one vocabulary per call (orderBy + coalesce: 2-3 Spark jobs each).
    staging = Path(out.path("_vocab"))
    (
        vocabs_df.where(F.col(VOCAB_COL).isin(names))
        .repartition(VOCAB_COL)  # all of a vocabulary in one task, so one file
        .sortWithinPartitions(VOCAB_COL, "index")
        .select("token", "index", "count", VOCAB_COL)
        .write.partitionBy(VOCAB_COL).mode("overwrite").parquet(str(staging))
    )
    paths = {}
    for name in names:
        written, path = staging / f"{VOCAB_COL}={name}", Path(out.path(f"{VOCAB_DIR}/{name}"))
        path.parent.mkdir(parents=True, exist_ok=True)
        if written.is_dir():
            written.rename(path)
        else:
            vocabs_df.sparkSession.createDataFrame([], VOCAB_SCHEMA).coalesce(1).write.parquet(str(path))
        paths[name] = str(path)
    shutil.rmtree(staging)
    return paths


def vocab_of(vocabs_df: DataFrame, name: str) -> DataFrame:
    """One vocabulary (``token, index, count``) of a ``build_weighted_vocabs`` table."""
    return vocabs_df.where(F.col(VOCAB_COL) == F.lit(name)).select("token", "index", "count")


SONG_VOCABS = ["song", "language", "isrc_country", "isrc_year"]  # + the four multi-valued ones
USER_VOCABS = ["user", "city", "gender", "registered_via"]
CONTEXT_VOCABS = ["source_system_tab", "source_screen_name", "source_type"]


def _element(out_col: str, vocab_name: str):
    return lambda token, pos: F.struct(
        F.lit(out_col).alias("_out"), pos.alias("_pos"), F.lit(vocab_name).alias(VOCAB_COL),
        token.cast("string").alias("token"),
    )


def _is_output(out_col: str):
    return lambda element: element["_out"] == F.lit(out_col)


def with_indices(df: DataFrame, vocabs_df: DataFrame, *, key_col: str, scalars: dict[str, tuple[str, str]],
                 lists: dict[str, tuple[str, str]]) -> DataFrame:
    """Add vocab indices for several columns of ``df`` in one lookup: ``scalars`` maps an output int column to
    ``(vocabulary, source column)``, ``lists`` maps an output array<int> column to ``(vocabulary, array column)``.

    Same results as ``common.with_index`` (null, unknown or rare -> 1) and ``common.with_index_array`` (element
    order kept, unknown elements -> 1, null or empty array -> [1]); ``key_col`` must be unique and non-null. Every
    value of every column is exploded with its position, looked up in ``vocabs_df`` (a ``build_weighted_vocabs``
    table, broadcast) by one join on (vocabulary, token), gathered per key and joined back.
    """
    # TODO(common): with_index / with_index_array look up one column per call (with_index_array: explode, join,
    # regroup and self-join each time); indexing the 8 song columns that way took 8 lookups and ~25 Spark jobs.
    empty = F.array().cast("array<string>")
    specs = {out_col: (vocab, F.array(F.col(src))) for out_col, (vocab, src) in scalars.items()}
    specs.update({out_col: (vocab, F.coalesce(F.col(src).cast("array<string>"), empty))
                  for out_col, (vocab, src) in lists.items()})
    elements = F.flatten(F.array(*[F.transform(arr, _element(out_col, vocab)) for out_col, (vocab, arr) in
                                   specs.items()]))
    _lookup_df = vocabs_df.select(VOCAB_COL, "token", F.col("index").alias("_index"))
    _gathered_df = (
        df.select(key_col, F.explode(elements).alias("_e"))
        .select(key_col, "_e.*")
        .join(F.broadcast(_lookup_df), on=[VOCAB_COL, "token"], how="left")
        .groupBy(key_col)
        .agg(F.array_sort(F.collect_list(F.struct("_out", "_pos", F.coalesce("_index", F.lit(OOV_INDEX)).alias("_i"))))
             .alias("_found"))
    )
    oov_list = F.array(F.lit(OOV_INDEX))
    picked = {out_col: F.transform(F.filter(F.col("_found"), _is_output(out_col)), lambda e: e["_i"])
              for out_col in specs}
    return df.join(_gathered_df, on=key_col, how="left").select(
        "*",
        *[F.coalesce(F.try_element_at(picked[c], F.lit(1)), F.lit(OOV_INDEX)).cast("int").alias(c) for c in scalars],
        *[F.when(F.size(picked[c]) > 0, picked[c]).otherwise(oov_list).cast("array<int>").alias(c) for c in lists],
    ).drop("_found")


def with_context_indices(events_df: DataFrame, vocabs_df: DataFrame) -> DataFrame:
    """Index the event-level columns ``source_system_tab`` / ``source_screen_name`` / ``source_type``."""
    _df = events_df
    for name in CONTEXT_VOCABS:
        src_col, idx_col = CATEGORICAL_VOCABS[name]
        _df = with_index(_df, vocab_of(vocabs_df, name), src_col, idx_col)
    return _df


def join_features(events_df: DataFrame, user_feat_df: DataFrame, song_feat_df: DataFrame) -> DataFrame:
    """Events LEFT JOIN the indexed user and song tables. Both are broadcast (one row per user / song seen in the
    events: 34k and a few hundred thousand rows at full size, ints and int arrays only), so the millions of events
    are never shuffled for a join."""
    return (
        events_df.join(F.broadcast(user_feat_df), on=MSNO, how="left")
        .join(F.broadcast(song_feat_df), on=SONG_ID, how="left")
    )


# ----------------------------------------------------------------------------------------------------------------
# 5. Numeric features, computed and standardized on the song and user tables (weights = train-part plays)
# ----------------------------------------------------------------------------------------------------------------
SONG_NUMERIC = [SONG_LENGTH, SONG_COUNT, ARTIST_COUNT]
USER_NUMERIC = [AGE, MEMBERSHIP_DAYS, REGISTRATION_YEAR, USER_COUNT]
_FIXED_POINT = 10**6  # statistics are summed as exact integers of value * 10^6 (see moment_sums)


def with_numeric_features(df: DataFrame, *, log1p_counts: bool) -> DataFrame:
    """The raw numeric features present in ``df`` as doubles (before standardization): non-positive song lengths
    are missing; popularity counts go through ``log1p`` when configured (they are heavy-tailed)."""
    _df = df
    for name in NUMERIC_COLUMNS:
        if name not in df.columns:
            continue
        value = F.col(name)
        if name == SONG_LENGTH:
            value = F.when(value > 0, value)
        elif name in COUNT_COLUMNS and log1p_counts:
            value = F.log1p(value)
        _df = _df.withColumn(name, value.cast("double"))
    return _df


def moment_sums(df: DataFrame, col_names: list[str], *, weight_col: str) -> dict[str, tuple[int, int, int]]:
    """Per column: ``(n, s1, s2)`` = sum of ``weight``, of ``weight * q`` and of ``weight * q^2`` over the rows where
    the column is not null, with ``q = round(value * 10^6)``. With rows = songs (users) and weight = their train
    plays this is the train part's event-level sum. Integer (decimal) sums are exact, so the statistics do not
    depend on the order Spark adds partial sums in, and a rerun gives bit-identical standardized values. One
    aggregation, one row back."""
    weight = F.col(weight_col).cast("decimal(38,0)")
    aggs = []
    for name in col_names:
        q = F.round(F.col(name) * F.lit(_FIXED_POINT)).cast("decimal(38,0)")
        aggs += [F.sum(F.when(F.col(name).isNotNull(), weight)).alias(f"{name}__n"),
                 F.sum(weight * q).alias(f"{name}__s1"), F.sum(weight * q * q).alias(f"{name}__s2")]
    row = df.agg(*aggs).collect()[0]
    return {name: tuple(int(row[f"{name}__{part}"] or 0) for part in ("n", "s1", "s2")) for name in col_names}


def standardization_stats(moments: dict[str, tuple[int, int, int]]) -> dict[str, dict[str, float | None]]:
    """Mean and population standard deviation from ``moment_sums`` (exact rational arithmetic, then float);
    ``None`` when the column has no value in the train part."""
    stats: dict[str, dict[str, float | None]] = {}
    for name, (n, s1, s2) in moments.items():
        if n <= 0:
            stats[name] = {"mean": None, "std": None}
            continue
        mean = Fraction(s1, n * _FIXED_POINT)
        variance = Fraction(s2, n * _FIXED_POINT**2) - mean * mean
        stats[name] = {"mean": float(mean), "std": math.sqrt(variance) if variance > 0 else 0.0}
    return stats


def with_standardized(df: DataFrame, stats: dict[str, dict[str, float | None]]) -> DataFrame:
    """Replace each column of ``stats`` by ``(x - mean) / std`` as float; missing -> 0.0 (= the train mean). A
    column without train values or with std 0 divides by 1."""
    _df = df
    for name, stat in stats.items():
        mean = float(stat["mean"]) if stat["mean"] is not None else 0.0
        std = float(stat["std"]) if stat["std"] else 1.0
        standardized = (F.col(name) - F.lit(mean)) / F.lit(std)
        _df = _df.withColumn(name, F.coalesce(standardized, F.lit(0.0)).cast("float"))
    return _df


def split_summary(song_info_df: DataFrame, user_info_df: DataFrame) -> dict[str, dict[str, int]]:
    """Per split, from the song and user tables (two small aggregations): ``events``; the events whose song is not
    in songs.csv / not in song_extra_info.csv / has no artist; whose member is not in members.csv; and, for the
    stats report, distinct songs and users and the most events of one song / one user."""
    song_aggs, user_aggs = [], []
    for split, plays in PLAYS.items():
        def events_where(condition: Column, plays: str = plays) -> Column:
            return F.coalesce(F.sum(F.when(condition, F.col(plays))), F.lit(0)).cast("long")

        song_aggs += [
            events_where(F.lit(True)).alias(f"{split}_events"),
            events_where(~F.col(HAS_SONG)).alias(f"{split}_unknown_song_events"),
            events_where(~F.col(HAS_EXTRA)).alias(f"{split}_no_extra_info_events"),
            events_where(F.col(ARTIST_KEY).isNull()).alias(f"{split}_no_artist_events"),
            F.sum((F.col(plays) > 0).cast("long")).alias(f"{split}_songs"),
            F.coalesce(F.max(plays), F.lit(0)).alias(f"{split}_max_song_events"),
        ]
        user_aggs += [
            events_where(~F.col(HAS_MEMBER)).alias(f"{split}_unknown_member_events"),
            F.sum((F.col(plays) > 0).cast("long")).alias(f"{split}_users"),
            F.coalesce(F.max(plays), F.lit(0)).alias(f"{split}_max_user_events"),
        ]
    row = {**song_info_df.agg(*song_aggs).collect()[0].asDict(), **user_info_df.agg(*user_aggs).collect()[0].asDict()}
    return {split: {key[len(split) + 1:]: int(value or 0) for key, value in row.items() if key.startswith(split + "_")}
            for split in PLAYS}


# ----------------------------------------------------------------------------------------------------------------
# 6. Output
# ----------------------------------------------------------------------------------------------------------------
def output_schema() -> T.StructType:
    """Column layout of OUT/{train,valid,test} (docs/DATA_CONTRACT.md)."""
    fields = [
        T.StructField(ROW_ID, T.LongType()),
        T.StructField(ID, T.IntegerType()),
        T.StructField(TARGET, T.IntegerType()),
    ]
    fields += [T.StructField(out_col, T.IntegerType()) for _, out_col in CATEGORICAL_VOCABS.values()]
    fields += [T.StructField(out_col, T.ArrayType(T.IntegerType())) for _, out_col in MULTI_VALUED_VOCABS.values()]
    fields += [T.StructField(name, T.FloatType()) for name in NUMERIC_COLUMNS]
    return T.StructType(fields)


def select_output_columns(df: DataFrame, *, keep: tuple[str, ...] = ()) -> DataFrame:
    """The output columns in contract order and types (plus ``keep``); no temporary column survives."""
    return df.select(*keep, *[F.col(f.name).cast(f.dataType).alias(f.name) for f in output_schema().fields])


def records_per_file(split_rows: dict[str, int], *, rows_per_file: int, min_files: int) -> int:
    """Rows per output file: at most ``rows_per_file``, and few enough that the smallest non-empty split fills at
    least ``min_files`` files (so that two Horovod ranks each get a row group)."""
    smallest = min([n for n in split_rows.values() if n > 0], default=rows_per_file)
    return max(1, min(rows_per_file, math.ceil(smallest / min_files)))


def write_splits(df: DataFrame, out: AtomicOutput, *, max_records_per_file: int,
                 splits: tuple[str, ...] = (TRAIN, VALID, TEST), row_id_col: str = ROW_ID,
                 split_col: str = SPLIT) -> None:
    """Write every split in ONE pass and without a shuffle: each task (an input partition of train.csv or test.csv,
    rows in file order) writes its rows of each split sorted by ``row_id``, starting a new file every
    ``max_records_per_file`` rows; then ``OUT/_splits/split=X`` becomes ``OUT/X``. So every file holds a
    contiguous range of rows of its source file, and a rerun writes the same files (up to their names). A split
    without rows gets an empty table with the same schema."""
    staging = Path(out.path("_splits"))
    (
        df.sortWithinPartitions(split_col, row_id_col)
        .write.partitionBy(split_col).option("maxRecordsPerFile", max_records_per_file)
        .mode("overwrite").parquet(str(staging))
    )
    for split in splits:
        written = staging / f"{split_col}={split}"
        if written.is_dir():
            written.rename(out.path(split))
        else:
            df.sparkSession.createDataFrame([], df.drop(split_col).schema).coalesce(1).write.parquet(out.path(split))
    shutil.rmtree(staging)


def check_row_accounting(accounting: dict[str, dict[str, int]]) -> None:
    """Raise when a raw row is neither in an output nor counted: per file, input rows must equal the sum of the
    other entries (train + valid + rejected for train.csv; test + rejected + blank for test.csv; kept + rejected
    for the side tables)."""
    for file_name, entry in accounting.items():
        accounted = sum(value for key, value in entry.items() if key != "input_rows")
        if accounted != entry["input_rows"]:
            raise RuntimeError(f"row accounting failed for {file_name}: {entry} (parts sum to {accounted})")


def parquet_rows(path: str | Path) -> int:
    """Row count of a Parquet folder from its file footers (pyarrow on the driver, no Spark job); OUT is on a file
    system the driver sees (AtomicOutput requires it)."""
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(str(part)).num_rows for part in sorted(Path(path).glob("*.parquet")))


# ----------------------------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------------------------
_EVENT_COLUMNS = [ID, MSNO, SONG_ID, "source_system_tab", "source_screen_name", "source_type", TARGET]


def read_events(spark: SparkSession, paths: dict[str, Path], cfg: KkboxConfig) -> DataFrame:
    """train.csv and test.csv as one frame (same columns: ``id`` null for train, ``target`` null for test), each row
    marked with ``_reason`` (null = good) and, when rejected, its raw record."""
    frames = []
    for name, checks in ((schemas.KKBOX_TRAIN_FILE, train_checks()), (schemas.KKBOX_TEST_FILE, test_checks())):
        schema = schemas.KKBOX_SCHEMAS[name]
        _scan_df = read_kkbox_csv(spark, paths[name], schema, file_label=name, multi_line=name in cfg.multiline_files)
        frames.append(
            _scan_df.transform(with_reject_reason, checks)
            .transform(with_raw_record, schema.fieldNames())
            .select(*[F.col(c) if c in schema.fieldNames() else F.lit(None).cast("int").alias(c)
                      for c in _EVENT_COLUMNS], FILE_COL, MID_COL, RAW_COL, REASON_COL)
        )
    return frames[0].unionByName(frames[1])


def read_side_table(spark: SparkSession, path: Path, name: str, checks: list[tuple[Column, str]],
                    cfg: KkboxConfig) -> DataFrame:
    """songs.csv, members.csv or song_extra_info.csv with ``_reason`` (malformed, missing key ...); to be cached,
    then ``mark_side_table`` adds duplicates and raw records on top of the cache."""
    schema = schemas.KKBOX_SCHEMAS[name]
    return read_kkbox_csv(spark, path, schema, file_label=name, multi_line=name in cfg.multiline_files).transform(
        with_reject_reason, checks)


def mark_side_table(df: DataFrame, name: str, key_col: str) -> DataFrame:
    """Duplicate keys rejected (``with_duplicate_reason``) and the raw record of every rejected row."""
    return (
        df.transform(with_duplicate_reason, key_col)
        .transform(with_raw_record, schemas.KKBOX_SCHEMAS[name].fieldNames())
        .drop(CORRUPT_COL)
    )


class _Timer:
    """Wall-clock seconds per driver step (Spark is lazy: a step's time includes the work its actions trigger).
    ``begin`` also labels the step's Spark jobs (job description "kkbox: <step>"), so an event log or the UI can
    attribute stage times to steps (benchmarks/bench_kkbox.py does)."""

    def __init__(self, spark: SparkSession) -> None:
        self.steps: dict[str, float] = {}
        self._spark = spark
        self._last = time.time()

    def begin(self, name: str) -> None:
        self._spark.sparkContext.setJobDescription(f"kkbox: {name}")

    def lap(self, name: str) -> None:
        now = time.time()
        self.steps[name] = round(self.steps.get(name, 0.0) + now - self._last, 2)
        self._last = now
        self._spark.sparkContext.setJobDescription(None)
        print(f"[kkbox] {name}: {self.steps[name]:.1f}s", flush=True)


def run_job(spark: SparkSession, input_dir: Path, output_dir: Path, config: dict) -> dict:
    """Run the KKBOX feature job; returns a summary (row counts, vocab sizes, seconds per step).

    Raises InputError (exit 2 in jobs/features.py) for a missing file or column, an empty file or a bad config
    value, before OUT is touched; any failure leaves an existing OUT unchanged (``AtomicOutput``).
    """
    timer = _Timer(spark)
    cfg = KkboxConfig.from_dict(config)
    paths = require_files(Path(input_dir), schemas.KKBOX_FILES)
    for name, path in paths.items():
        require_nonempty(path)
        check_header(path, schemas.KKBOX_SCHEMAS[name].fieldNames(), ",")
    inputs = {name: file_fingerprint(path) for name, path in paths.items()}
    timer.lap("check inputs")

    cached: list[DataFrame] = []

    def persist(df: DataFrame) -> DataFrame:
        cached.append(df.persist(StorageLevel.MEMORY_AND_DISK))
        return cached[-1]

    with AtomicOutput(output_dir) as out:
        try:
            summary = _run(spark, paths, cfg, out, persist, timer)
            write_manifest(
                out, dataset=DATASET, config=cfg.to_dict(), inputs=inputs, row_counts=summary["row_counts"],
                vocab_sizes=summary["vocab_sizes"], features=summary["features"],
                extra={key: summary[key] for key in ("row_accounting", "event_counts", "valid_cut_row_id",
                                                      "max_multi", "standardization")},
            )
        finally:
            for df in cached:
                df.unpersist()
    timer.lap("publish")
    return {
        "dataset": DATASET,
        "output": str(Path(output_dir).resolve()),
        **{key: summary[key] for key in ("row_counts", "row_accounting", "vocab_sizes", "event_counts")},
        "seconds": timer.steps,
    }


def _run(spark: SparkSession, paths: dict[str, Path], cfg: KkboxConfig, out: AtomicOutput, persist, timer: _Timer
         ) -> dict:
    """The pipeline inside the atomic output (``run_job`` handles the boundary). Caches: the side tables, the
    parsed events (narrow: ids and source strings; every later pass reads them) and the small per-song / per-user
    tables. The events are never shuffled: they are aggregated, or streamed through broadcast joins into the
    output."""
    timer.begin("read side tables")
    # --- side tables: check, dedupe; cached (offsets, rejected/ and the entity joins read them) ---
    side_scans = {
        name: persist(read_side_table(spark, paths[name], name, checks, cfg))
        for name, checks in (
            (schemas.KKBOX_SONGS_FILE, songs_checks()),
            (schemas.KKBOX_MEMBERS_FILE, members_checks()),
            (schemas.KKBOX_EXTRA_FILE, extra_checks()),
        )
    }
    side_offsets, side_totals = partition_offsets(
        functools.reduce(DataFrame.unionByName, [df.select(FILE_COL, MID_COL) for df in side_scans.values()])
    )
    side = {name: mark_side_table(df, name, MSNO if name == schemas.KKBOX_MEMBERS_FILE else SONG_ID)
            for name, df in side_scans.items()}
    accounting: dict[str, dict[str, int]] = {}
    for name, marked_df in side.items():
        bad_df = (
            marked_df.where(F.col(REASON_COL).isNotNull())
            .transform(with_row_id, side_offsets)
            .transform(with_line_number, multi_line=name in cfg.multiline_files)
            .withColumnRenamed(REASON_COL, "reason")
        )
        rejected = write_rejected(bad_df, name, RAW_COL, LINE_COL, out)
        input_rows = side_totals.get(name, 0)
        accounting[name] = {"input_rows": input_rows, "kept": input_rows - rejected, "rejected": rejected}
    timer.lap("read side tables")

    timer.begin("read events")
    # --- events: read, number the rows, split; cached (every later step reads it) ---
    marked_df = persist(read_events(spark, paths, cfg))
    offsets, totals = partition_offsets(marked_df)
    cut = valid_cut(totals.get(schemas.KKBOX_TRAIN_FILE, 0), cfg.valid_fraction)
    events_df = marked_df.transform(with_row_id, offsets).transform(with_split, cut=cut)
    rejected_counts = {}
    for name in (schemas.KKBOX_TRAIN_FILE, schemas.KKBOX_TEST_FILE):
        is_dropped_blank = F.lit(name == schemas.KKBOX_TEST_FILE) & (F.col(REASON_COL) == BLANK_REASON)
        bad_df = (
            events_df.where((F.col(FILE_COL) == name) & F.col(REASON_COL).isNotNull() & ~is_dropped_blank)
            .transform(with_line_number, multi_line=name in cfg.multiline_files)
            .withColumnRenamed(REASON_COL, "reason")
        )
        rejected_counts[name] = write_rejected(bad_df, name, RAW_COL, LINE_COL, out)
    kind = (
        F.when(F.col(REASON_COL).isNull(), F.col(SPLIT))
        .when((F.col(FILE_COL) == schemas.KKBOX_TEST_FILE) & (F.col(REASON_COL) == BLANK_REASON), F.lit("blank"))
        .otherwise(F.lit("rejected"))
    )
    kind_rows = (
        events_df.groupBy(FILE_COL, kind.alias("_kind"), TARGET).agg(F.count(F.lit(1)).alias("_n")).collect()
    )  # at most 2 files x 5 kinds x 3 targets
    for name, kinds in ((schemas.KKBOX_TRAIN_FILE, (TRAIN, VALID, "rejected")),
                        (schemas.KKBOX_TEST_FILE, (TEST, "rejected", "blank"))):
        accounting[name] = {"input_rows": totals.get(name, 0),
                            **{k: sum(r["_n"] for r in kind_rows if (r[FILE_COL], r["_kind"]) == (name, k))
                               for k in kinds}}
        if accounting[name]["rejected"] != rejected_counts[name]:
            raise RuntimeError(f"{name}: {rejected_counts[name]} rows in rejected/, counted "
                               f"{accounting[name]['rejected']}")
    check_row_accounting(accounting)
    targets = {split: {r[TARGET]: r["_n"] for r in kind_rows if r["_kind"] == split and r[TARGET] is not None}
               for split in (TRAIN, VALID, TEST)}
    good_df = events_df.where(F.col(REASON_COL).isNull()).drop(RAW_COL, REASON_COL, MID_COL)
    timer.lap("read events")

    timer.begin("entity tables + vocabularies")
    # --- per-song and per-user tables with plays per split (cached); vocabularies weighted by train plays ---
    songs_df = side[schemas.KKBOX_SONGS_FILE].where(F.col(REASON_COL).isNull())
    extra_df = side[schemas.KKBOX_EXTRA_FILE].where(F.col(REASON_COL).isNull()).transform(
        with_isrc_fields, pivot=cfg.isrc_year_pivot)
    members_df = side[schemas.KKBOX_MEMBERS_FILE].where(F.col(REASON_COL).isNull()).transform(
        with_member_features, age_min=cfg.age_min, age_max=cfg.age_max)
    song_info_df = persist(
        plays_by_split(good_df, [SONG_ID])
        .transform(join_song_info, songs_df, extra_df)
        .transform(with_song_lists, genre_separators=cfg.genre_separators,
                   person_separators=cfg.person_separators, max_multi=cfg.max_multi)
        .withColumn(SONG_COUNT, F.col(PLAYS[TRAIN]))
        .transform(with_artist_counts)
        .transform(with_numeric_features, log1p_counts=cfg.log1p_counts)
    )
    user_info_df = persist(
        plays_by_split(good_df, [MSNO])
        .transform(join_member_info, members_df)
        .withColumn(USER_COUNT, F.col(PLAYS[TRAIN]))
        .transform(with_numeric_features, log1p_counts=cfg.log1p_counts)
    )
    context_df = plays_by_split(good_df, CONTEXT_VOCABS)

    list_vocab = {name: (PERSON_VOCAB if cfg.shared_person_vocab and name in PERSON_VOCABS else name)
                  for name in MULTI_VALUED_VOCABS}
    song_tokens = {name: F.array(F.col(CATEGORICAL_VOCABS[name][0])) for name in SONG_VOCABS}
    if cfg.shared_person_vocab:
        song_tokens[PERSON_VOCAB] = F.concat(*[F.coalesce(F.col(MULTI_VALUED_VOCABS[v][0]), F.array().cast(
            "array<string>")) for v in PERSON_VOCABS])
    song_tokens.update({name: F.col(list_col) for name, (list_col, _) in MULTI_VALUED_VOCABS.items()
                        if list_vocab[name] == name})
    min_counts = {name: cfg.vocab_min_count(name) for name in [*CATEGORICAL_VOCABS, *MULTI_VALUED_VOCABS,
                                                               PERSON_VOCAB]}
    vocabs_df = persist(functools.reduce(DataFrame.unionByName, [
        build_weighted_vocabs(song_info_df, song_tokens, weight_col=PLAYS[TRAIN], min_counts=min_counts),
        build_weighted_vocabs(user_info_df, {n: F.array(F.col(CATEGORICAL_VOCABS[n][0])) for n in USER_VOCABS},
                              weight_col=PLAYS[TRAIN], min_counts=min_counts),
        build_weighted_vocabs(context_df, {n: F.array(F.col(n)) for n in CONTEXT_VOCABS}, weight_col=PLAYS[TRAIN],
                              min_counts=min_counts),
    ]))
    vocab_names = [*CATEGORICAL_VOCABS, *dict.fromkeys(list_vocab.values())]
    # TODO(common): common.vocab_size runs a Spark count per vocabulary; the Parquet footers say the same.
    vocab_sizes = {name: parquet_rows(path) + FIRST_TOKEN_INDEX
                   for name, path in write_vocabs(vocabs_df, vocab_names, out).items()}
    timer.lap("entity tables + vocabularies")

    timer.begin("standardize + index entities")
    # --- train-part statistics (exact sums on the entity tables), standardized and indexed entity tables ---
    numeric_stats = standardization_stats({
        **moment_sums(song_info_df, SONG_NUMERIC, weight_col=PLAYS[TRAIN]),
        **moment_sums(user_info_df, USER_NUMERIC, weight_col=PLAYS[TRAIN]),
    })
    numeric_stats = {name: numeric_stats[name] for name in NUMERIC_COLUMNS}
    per_split = split_summary(song_info_df, user_info_df)
    song_feat_df = persist(
        song_info_df.transform(with_standardized, {n: numeric_stats[n] for n in SONG_NUMERIC}).transform(
            with_indices, vocabs_df, key_col=SONG_ID,
            scalars={CATEGORICAL_VOCABS[n][1]: (n, CATEGORICAL_VOCABS[n][0]) for n in SONG_VOCABS},
            lists={idx_col: (list_vocab[n], list_col) for n, (list_col, idx_col) in MULTI_VALUED_VOCABS.items()},
        ).select(SONG_ID, *[CATEGORICAL_VOCABS[n][1] for n in SONG_VOCABS],
                 *[c for _, c in MULTI_VALUED_VOCABS.values()], *SONG_NUMERIC)
    )
    user_feat_df = persist(
        user_info_df.transform(with_standardized, {n: numeric_stats[n] for n in USER_NUMERIC}).transform(
            with_indices, vocabs_df, key_col=MSNO,
            scalars={CATEGORICAL_VOCABS[n][1]: (n, CATEGORICAL_VOCABS[n][0]) for n in USER_VOCABS}, lists={},
        ).select(MSNO, *[CATEGORICAL_VOCABS[n][1] for n in USER_VOCABS], *USER_NUMERIC)
    )
    timer.lap("standardize + index entities")

    timer.begin("write splits")
    # --- one pass over the events: broadcast joins, source indices, write ---
    split_rows = {TRAIN: accounting[schemas.KKBOX_TRAIN_FILE][TRAIN],
                  VALID: accounting[schemas.KKBOX_TRAIN_FILE][VALID],
                  TEST: accounting[schemas.KKBOX_TEST_FILE][TEST]}
    output_df = (
        good_df.transform(join_features, user_feat_df, song_feat_df)
        .transform(with_context_indices, vocabs_df)
        .transform(select_output_columns, keep=(SPLIT,))
    )
    write_splits(output_df, out, max_records_per_file=records_per_file(
        split_rows, rows_per_file=cfg.rows_per_file, min_files=cfg.min_files))
    row_counts = {split: parquet_rows(out.path(split)) for split in (TRAIN, VALID, TEST)}
    if row_counts != split_rows or {s: per_split[s]["events"] for s in split_rows} != split_rows:
        raise RuntimeError(f"rows written {row_counts} and events joined {per_split} differ from rows counted "
                           f"{split_rows}")
    row_counts["rejected"] = sum(entry["rejected"] for entry in accounting.values())
    row_counts["blank"] = accounting[schemas.KKBOX_TEST_FILE]["blank"]
    timer.lap("write splits")

    timer.begin("stats")
    # --- stats report (from the counts above: no pass over the outputs) ---
    stats = StatsReport("KKBOX feature job")
    for split in (TRAIN, VALID, TEST):
        entry, split_targets = per_split[split], targets[split]
        stats.add_stage_stats(f"{split} events", entry["events"], {
            MSNO: {"count": entry["events"], "unique": entry["users"], "max_freq": entry["max_user_events"]},
            SONG_ID: {"count": entry["events"], "unique": entry["songs"], "max_freq": entry["max_song_events"]},
            TARGET: {"count": sum(split_targets.values()), "unique": len(split_targets),
                     "max_freq": max(split_targets.values(), default=0)},
        })
    event_counts = {f"{split}_{key}": value for split, entry in per_split.items() for key, value in entry.items()
                    if (key == "events" or key.endswith("_events")) and not key.startswith("max_")}
    stats.add_counts(
        **{f"{file_name}:{key}": value for file_name, entry in accounting.items() for key, value in entry.items()},
        **event_counts,
        **{f"{split}_target_{t}": n for split, counts in targets.items() for t, n in sorted(counts.items())},
    )
    stats.write(out.path())
    timer.lap("stats")
    return {
        "row_counts": row_counts,
        "row_accounting": accounting,
        "vocab_sizes": vocab_sizes,
        "event_counts": event_counts,
        "valid_cut_row_id": cut,
        "max_multi": cfg.max_multi,
        "standardization": numeric_stats,
        "features": {
            "categorical": {idx_col: name for name, (_, idx_col) in CATEGORICAL_VOCABS.items()},
            "multi_valued": {idx_col: list_vocab[name] for name, (_, idx_col) in MULTI_VALUED_VOCABS.items()},
            "numeric": list(NUMERIC_COLUMNS),
            "target": TARGET,
        },
    }
