"""Last.fm 1K feature job: raw plays TSV -> sessionized plays, vocabularies, session sequences, stats, manifest.

Stages (each a small DataFrame -> DataFrame function, chained with ``.transform``):

1. read   ``read_text_lines`` + ``with_parsed_plays``: split on tabs, 6 fields, ``try_to_timestamp``; a wrong field
          count, a missing user or an unparseable timestamp sets ``reason`` -> ``OUT/rejected/<file>/``.
2. clean  ``drop_untracked`` (no track MBID), ``filter_time_window`` (``window_bounds``: start/end or first/last N
          months), ``drop_duplicate_plays`` (same user, timestamp and track).
3. sessionize  ``with_sessions`` (a gap of MORE than ``gap_seconds`` starts a session), ``filter_users_by_sessions``,
          ``with_session_id`` -> ``OUT/plays/``.
4. tags   ``with_parsed_tags`` -> ``with_top_tags`` (top K per song) -> ``apply_tag_policy`` (drop or keep untagged).
5. vocab  ``build_vocab`` / ``build_vocab_from_array`` (common) for user, song, artist, tag -> ``OUT/vocab/<name>/``.
6. sequences  ``build_song_lookup`` -> ``build_sessions`` (one row per session, cut to ``max_length``) ->
          ``split_cutoffs`` + ``with_split`` -> ``OUT/sessions/{train,valid,test}/``; ``OUT/song_tags/``.
7. report ``StatsReport`` (stats.json/.md), ``write_manifest``; everything inside one ``AtomicOutput``.

How ``run_job`` runs stages 2-3 on 19M rows: the text is scanned once; ``with_eligibility`` marks the plays that
survive stage 2's row filters, the rows are shuffled once (hash on user) and sorted by ``play_order``, and
``with_session_flags`` does dedup, sessions, positions and per-user session counts in ONE pass of three window
operators over that order (the small stage functions above give the same result, see the tests); ``with_level``
then labels every row with the last stage it survives. That frame is cached, and the rejects, ``plays/``, the
per-stage stats and the session sequences all read it without another shuffle of the plays.
See benchmarks/RESULTS_lastfm.md for timings.
"""

from __future__ import annotations

import calendar
import copy
import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Observation, SparkSession, Window, WindowSpec
from pyspark.sql import functions as F

from musicrec.columns import (
    ARTIST_ID, ARTIST_NAME, PAD_INDEX, POSITION, SESSION_ID, SONG_IDX, SONG_TAGS, SONGS, START_TS, TRACK_ID,
    TRACK_NAME, TS, USER, USER_IDX,
)
from musicrec.features.common import (
    BLOCK_COL, ROW_ID_COL, AtomicOutput, InputError, StatsReport, build_vocab, build_vocab_from_array,
    check_header, column_stats, column_stats_by_level, file_fingerprint, parquet_rows, read_text_lines,
    reject_reason, require_files, require_nonempty, with_index, with_index_array, with_line_numbers,
    write_manifest, write_rejected, write_vocab,
)
from musicrec.schemas import LASTFM_PLAYS_COLUMNS, LASTFM_PLAYS_FILE, LASTFM_TAGS_FILE

DATASET = "lastfm"
TS_FORMAT = "yyyy-MM-dd'T'HH:mm:ss'Z'"
RAW_COLUMNS = list(LASTFM_PLAYS_COLUMNS)  # user_id, timestamp, artist_id, artist_name, track_id, track_name
PLAYS_COLUMNS = RAW_COLUMNS + [SESSION_ID, POSITION]
SESSION_COLUMNS = [SESSION_ID, USER_IDX, START_TS, SONGS, SONG_TAGS, "length"]
TAGS_COLUMNS = ["traid", "tag", "count"]
SPLITS = ("train", "valid", "test")
LENGTH = "length"
SPLIT = "split"
TAGS = "tags"

# Order of plays inside a user: time, then the track fields, so that ties are broken the same way on every run and
# exact duplicates are neighbours.
PLAY_ORDER = [TS, TRACK_ID, ARTIST_NAME, TRACK_NAME, ARTIST_ID]

DEFAULT_CONFIG: dict[str, Any] = {
    "input": {"plays_file": LASTFM_PLAYS_FILE, "tags_file": LASTFM_TAGS_FILE},
    "clean": {"drop_untracked": True, "drop_duplicates": True, "max_rejected_fraction": 0.01},
    "window": {"start": None, "end": None, "first_months": None, "last_months": None},
    "sessions": {"gap_seconds": 1200, "min_sessions_per_user": 6},
    "tags": {"required": False, "top_k": 5, "drop_untagged": True, "lowercase": True, "min_tag_weight": 0},
    "vocab": {"user_min_count": 1, "song_min_count": 1, "artist_min_count": 1, "tag_min_count": 1},
    "sequences": {"min_length": 2, "max_length": 50},
    "split": {"valid_fraction": 0.1, "test_fraction": 0.1},
    "stats": {"column_stats": True},
    "spark": {"partitions": 8},
}

# Row levels for the one-pass stats: a row's level is the last stage it survives.
LEVEL = "level"
LEVEL_REJECTED, LEVEL_PARSED, LEVEL_TRACKED, LEVEL_IN_WINDOW, LEVEL_DEDUPED, LEVEL_KEPT = 0, 1, 2, 3, 4, 5
STAGE_LEVELS = [
    ("parsed", LEVEL_PARSED), ("tracked", LEVEL_TRACKED), ("in_window", LEVEL_IN_WINDOW),
    ("deduplicated", LEVEL_DEDUPED), ("plays", LEVEL_KEPT),
]


def step(spark: SparkSession, name: str) -> None:
    """Label the Spark jobs that follow (UI, event log: "lastfm: <name>"), for profiling per step."""
    spark.sparkContext.setJobDescription(f"lastfm: {name}")


def log(message: str) -> None:
    """One progress line on stdout (spark-submit keeps it next to Spark's own log)."""
    print(f"[features] lastfm: {message}", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------
def resolve_config(config: dict | None) -> dict:
    """Defaults overlaid with ``config`` (section by section) and checked; raises InputError naming the key."""
    resolved = copy.deepcopy(DEFAULT_CONFIG)
    for section, values in (config or {}).items():
        if section not in resolved:
            raise InputError(f"config: unknown section {section!r} (known: {', '.join(resolved)})")
        if not isinstance(values, dict):
            raise InputError(f"config: section {section!r} must be a mapping")
        for key, value in values.items():
            if key not in resolved[section]:
                raise InputError(f"config: unknown key {section}.{key} (known: {', '.join(resolved[section])})")
            resolved[section][key] = value

    def check_int(section: str, key: str, minimum: int, allow_none: bool = False) -> None:
        value = resolved[section][key]
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise InputError(f"config: {section}.{key} must be an integer >= {minimum} (got {value!r})")

    for key in ("user_min_count", "song_min_count", "artist_min_count", "tag_min_count"):
        check_int("vocab", key, 1)
    check_int("sessions", "gap_seconds", 0)
    check_int("sessions", "min_sessions_per_user", 0)
    check_int("tags", "top_k", 1)
    check_int("tags", "min_tag_weight", 0)
    check_int("sequences", "min_length", 1)
    check_int("sequences", "max_length", 1)
    check_int("spark", "partitions", 1)
    check_int("window", "first_months", 1, allow_none=True)
    check_int("window", "last_months", 1, allow_none=True)
    if resolved["sequences"]["max_length"] < resolved["sequences"]["min_length"]:
        raise InputError("config: sequences.max_length must be >= sequences.min_length")
    if resolved["window"]["first_months"] is not None and resolved["window"]["last_months"] is not None:
        raise InputError("config: window.first_months and window.last_months cannot both be set")
    for key in ("start", "end"):
        value = resolved["window"][key]
        if value is not None:
            resolved["window"][key] = format_instant(parse_instant(value, f"window.{key}"))
    max_rejected = resolved["clean"]["max_rejected_fraction"]
    if isinstance(max_rejected, bool) or not isinstance(max_rejected, (int, float)) or not 0 <= max_rejected <= 1:
        raise InputError(f"config: clean.max_rejected_fraction must be a number in [0, 1] (got {max_rejected!r})")
    fractions = [resolved["split"]["valid_fraction"], resolved["split"]["test_fraction"]]
    if any(isinstance(f, bool) or not isinstance(f, (int, float)) or f < 0 for f in fractions) or sum(fractions) >= 1:
        raise InputError("config: split.valid_fraction and split.test_fraction must be >= 0 and sum to less than 1")
    for section, key in (("clean", "drop_untracked"), ("clean", "drop_duplicates"), ("tags", "required"),
                         ("tags", "drop_untagged"), ("tags", "lowercase"), ("stats", "column_stats")):
        if not isinstance(resolved[section][key], bool):
            raise InputError(f"config: {section}.{key} must be true or false (got {resolved[section][key]!r})")
    return resolved


def parse_instant(value: Any, key: str) -> dt.datetime:
    """A UTC instant from a YAML value: a date, a datetime, or a string ``YYYY-MM-DD[THH:MM:SS[Z]]``."""
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    text = str(value).strip().rstrip("Z").replace(" ", "T")
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text, fmt)
        except ValueError:
            pass
    raise InputError(f"config: {key} must be a date or time like 2008-01-01 or 2008-01-01T00:00:00Z (got {value!r})")


def format_instant(instant: dt.datetime) -> str:
    """ISO-8601 UTC string, as Last.fm writes timestamps."""
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


def add_months(instant: dt.datetime, months: int) -> dt.datetime:
    """``instant`` moved by whole calendar months, the day clamped to the month's length (like Spark add_months)."""
    month_index = instant.year * 12 + (instant.month - 1) + months
    year, month = divmod(month_index, 12)
    day = min(instant.day, calendar.monthrange(year, month + 1)[1])
    return instant.replace(year=year, month=month + 1, day=day)


def window_bounds(window_cfg: dict, first_ts: dt.datetime | None, last_ts: dt.datetime | None
                  ) -> tuple[dt.datetime | None, dt.datetime | None]:
    """Resolve ``window.*`` into ``[start, end)`` instants (None = open).

    ``first_ts``/``last_ts`` are the first and last play inside ``start``/``end`` (needed only for the month
    options): ``first_months = N`` keeps ``[first_ts, first_ts + N months)``, ``last_months = N`` keeps
    ``[last_ts - N months, last_ts]``.
    """
    start = parse_instant(window_cfg["start"], "window.start") if window_cfg.get("start") else None
    end = parse_instant(window_cfg["end"], "window.end") if window_cfg.get("end") else None
    if window_cfg.get("first_months") and first_ts is not None:
        month_end = add_months(first_ts, int(window_cfg["first_months"]))
        end = month_end if end is None else min(end, month_end)
    if window_cfg.get("last_months") and last_ts is not None:
        month_start = add_months(last_ts, -int(window_cfg["last_months"]))
        start = month_start if start is None else max(start, month_start)
    return start, end


# ---------------------------------------------------------------------------------------------------------------
# 1. Read
# ---------------------------------------------------------------------------------------------------------------
def plays_checks(fields_col: str = "_fields") -> list[tuple[Column, str]]:
    """Checks on a split plays line, in order; the first failing one is the reject reason."""
    fields = F.col(fields_col)
    return [
        (F.size(fields) == F.lit(len(RAW_COLUMNS)), f"wrong number of fields (expected {len(RAW_COLUMNS)} tab-separated)"),
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
    _typed_df = _fields_df.select(*[c for c in lines_df.columns], "_fields", *text_cols).withColumn(
        TS, F.try_to_timestamp(F.col(TS), F.lit(TS_FORMAT))
    )
    _checked_df = _typed_df.withColumn("reason", reject_reason(plays_checks()))
    is_bad = F.col("reason").isNotNull()
    extra = [F.when(is_bad, F.col(c)).alias(c) for c in (BLOCK_COL, ROW_ID_COL) if c in lines_df.columns]
    return _checked_df.select(*RAW_COLUMNS, "reason", F.when(is_bad, F.col(value_col)).alias("raw"), *extra)


# ---------------------------------------------------------------------------------------------------------------
# 2. Clean
# ---------------------------------------------------------------------------------------------------------------
def drop_untracked(df: DataFrame, *, col_name: str = TRACK_ID) -> DataFrame:
    """Drop plays without a track MBID."""
    return df.where(F.col(col_name).isNotNull())


def in_time_window(start: dt.datetime | None, end: dt.datetime | None, *, col_name: str = TS) -> Column:
    """Boolean Column: ``start <= ts < end`` (an open side is always true)."""
    condition = F.lit(True)
    if start is not None:
        condition = condition & (F.col(col_name) >= F.lit(start))
    if end is not None:
        condition = condition & (F.col(col_name) < F.lit(end))
    return condition


def filter_time_window(df: DataFrame, start: dt.datetime | None, end: dt.datetime | None, *, col_name: str = TS
                       ) -> DataFrame:
    """Keep plays with ``start <= timestamp < end``."""
    return df.where(in_time_window(start, end, col_name=col_name))


ELIGIBLE = "is_eligible"  # bool: the play takes part in dedup and sessionization (good, tracked, in the window)


def play_order(*, col_user: str = USER, eligible_col: str | None = None) -> list[Column]:
    """Sort order of plays: user, then (optionally) eligible plays first, then time and track fields.

    ``sortWithinPartitions(*play_order(...))`` on data hash-partitioned by user is exactly the order the window
    functions below need, so Spark adds no sort of its own.
    """
    order = [F.col(col_user).asc_nulls_first()]
    if eligible_col:
        order.append(F.col(eligible_col).desc_nulls_last())
    return order + [F.col(c).asc_nulls_first() for c in PLAY_ORDER]


def user_time_window(*, col_user: str = USER, eligible_col: str | None = None) -> WindowSpec:
    """Plays of one user in time order, ties broken by track id, artist name, track name, artist id (with
    ``eligible_col``: eligible plays first, so that the others never sit between two eligible plays)."""
    return Window.partitionBy(col_user).orderBy(*play_order(col_user=col_user, eligible_col=eligible_col)[1:])


def _track_key() -> Column:
    """What "the same track" means for duplicates: the track MBID, or for a play without one, artist + track name."""
    return F.coalesce(
        F.col(TRACK_ID), F.concat(F.lit("\u0000"), F.col(ARTIST_NAME), F.lit("\u0000"), F.col(TRACK_NAME))
    )


def _is_repeat(prev_ts: Column, prev_key: Column) -> Column:
    """Boolean Column: same timestamp and ``_track_key`` as the previous play (given by the two lags); null -> false."""
    return F.coalesce((F.col(TS) == prev_ts) & _track_key().eqNullSafe(prev_key), F.lit(False))


def with_duplicate_flag(df: DataFrame, *, col_user: str = USER) -> DataFrame:
    """Add ``is_duplicate``: the play repeats the previous one of the same user (same timestamp and track: same MBID,
    or for plays without MBID the same artist and track name). The first of a group is not a duplicate."""
    user_time_w = user_time_window(col_user=col_user)
    return (
        df.select("*", F.lag(TS).over(user_time_w).alias("_prev_ts"), F.lag(_track_key()).over(user_time_w).alias("_prev_key"))
        .withColumn("is_duplicate", _is_repeat(F.col("_prev_ts"), F.col("_prev_key")))
        .drop("_prev_ts", "_prev_key")
    )


def drop_duplicate_plays(df: DataFrame, *, col_user: str = USER) -> DataFrame:
    """Drop exact duplicate plays (see ``with_duplicate_flag``), keeping the first."""
    return df.transform(with_duplicate_flag, col_user=col_user).where(~F.col("is_duplicate")).drop("is_duplicate")


# ---------------------------------------------------------------------------------------------------------------
# 3. Sessionize
# ---------------------------------------------------------------------------------------------------------------
def with_session_flags(df: DataFrame, gap_seconds: int, *, drop_duplicates: bool = True,
                       eligible_col: str | None = None, col_user: str = USER) -> DataFrame:
    """Dedup and sessionize in one pass of window functions over (user, time). Adds:

    - ``is_duplicate``: an eligible play that repeats the previous one (``_repeats``); only with ``drop_duplicates``;
    - ``session_seq``: 1-based session number of the user; a play starts a new session when it is the user's
      first or comes MORE than ``gap_seconds`` after the previous play (exactly ``gap_seconds`` stays);
    - ``position``: 0-based number of the play in its session, duplicates not counted;
    - ``user_sessions``: number of sessions of the user.

    ``session_seq``/``position`` are null for duplicates and for rows with ``eligible_col`` false (those are sorted
    after the eligible plays of their user and never influence them). A duplicate has the timestamp of the play
    before it, so keeping it in the gap computation changes no session boundary.
    """
    user_time_w = user_time_window(col_user=col_user, eligible_col=eligible_col)
    running_w = user_time_w.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    whole_user_w = user_time_w.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    is_eligible = F.col(eligible_col) if eligible_col else F.lit(True)
    prev_ts = F.col("_prev_ts")
    is_duplicate = is_eligible & _is_repeat(prev_ts, F.col("_prev_key")) if drop_duplicates else F.lit(False)
    gap_micros = F.unix_micros(F.col(TS)) - F.unix_micros(prev_ts)
    is_new = is_eligible & ~F.col("is_duplicate") & (prev_ts.isNull() | (gap_micros > F.lit(int(gap_seconds) * 1_000_000)))
    is_kept = is_eligible & ~F.col("is_duplicate")
    as_int = lambda name: F.col(name).cast("int")  # noqa: E731
    # Each select below holds all window expressions of one layer, so Spark runs one window operator per layer
    # (three in all) over the sorted rows; a withColumn per expression would make one operator each.
    layer1_df = df.select(
        "*",
        F.lag(TS).over(user_time_w).alias("_prev_ts"),
        F.lag(_track_key()).over(user_time_w).alias("_prev_key"),
        F.row_number().over(user_time_w).alias("_rn"),
    ).withColumn("is_duplicate", is_duplicate).withColumn("_is_new", is_new)
    layer2_df = layer1_df.select(
        "*",
        F.sum(as_int("_is_new")).over(running_w).alias("_seq"),
        F.sum(as_int("is_duplicate")).over(running_w).alias("_ndup"),
        F.max(F.when(F.col("_is_new"), F.col("_rn"))).over(running_w).alias("_start_rn"),
        F.sum(as_int("_is_new")).over(whole_user_w).cast("int").alias("user_sessions"),
    )
    # duplicates before the session start, so that position does not count duplicates
    layer3_df = layer2_df.select("*", F.max(F.when(F.col("_is_new"), F.col("_ndup"))).over(running_w).alias("_ndup_start"))
    return (
        layer3_df.withColumn("session_seq", F.when(is_kept, F.col("_seq")).cast("int"))
        .withColumn(
            POSITION,
            F.when(is_kept, (F.col("_rn") - F.col("_start_rn")) - (F.col("_ndup") - F.col("_ndup_start"))).cast("int"),
        )
        .drop("_prev_ts", "_prev_key", "_rn", "_is_new", "_seq", "_ndup", "_start_rn", "_ndup_start")
    )


def with_sessions(df: DataFrame, gap_seconds: int, *, col_user: str = USER) -> DataFrame:
    """Add ``session_seq`` (1-based session number per user) and ``position`` (0-based play number in it) to
    deduplicated plays: a gap of MORE than ``gap_seconds`` starts a new session (``with_session_flags``)."""
    return df.transform(with_session_flags, gap_seconds, drop_duplicates=False, col_user=col_user).drop(
        "is_duplicate", "user_sessions"
    )


def with_user_session_count(df: DataFrame, *, col_user: str = USER) -> DataFrame:
    """Add ``user_sessions``: number of sessions of the play's user (needs ``session_seq``)."""
    user_w = Window.partitionBy(col_user)
    return df.withColumn("user_sessions", F.max("session_seq").over(user_w))


def filter_users_by_sessions(df: DataFrame, min_sessions: int, *, col_user: str = USER) -> DataFrame:
    """Keep plays of users with at least ``min_sessions`` sessions."""
    return (
        df.transform(with_user_session_count, col_user=col_user)
        .where(F.col("user_sessions") >= F.lit(int(min_sessions)))
        .drop("user_sessions")
    )


def user_ranks(df: DataFrame, *, col_user: str = USER) -> DataFrame:
    """``user_id, user_rank``: 1-based rank of each user id in string order (deterministic, gap-free)."""
    # Global window on purpose: one row per user (about a thousand for Last.fm 1K, millions at most).
    user_order_w = Window.orderBy(col_user)
    return df.select(col_user).distinct().select(col_user, F.row_number().over(user_order_w).alias("user_rank"))


def with_session_id(df: DataFrame, ranks_df: DataFrame, *, col_user: str = USER) -> DataFrame:
    """Add ``session_id`` = user rank * 2^32 + session number: unique, and the same on every run."""
    return (
        df.join(F.broadcast(ranks_df), on=col_user, how="inner")
        .withColumn(SESSION_ID, F.shiftleft(F.col("user_rank").cast("long"), 32) + F.col("session_seq").cast("long"))
        .drop("user_rank")
    )


# ---------------------------------------------------------------------------------------------------------------
# 4. Tags
# ---------------------------------------------------------------------------------------------------------------
def tags_checks(fields_col: str, n_fields: int) -> list[tuple[Column, str]]:
    """Checks on a split tags line, in order; the first failing one is the reject reason."""
    return [
        (F.size(F.col(fields_col)) == F.lit(n_fields), f"wrong number of fields (expected {n_fields} tab-separated)"),
        (F.col("traid").isNotNull(), "missing traid"),
        (F.col("tag").isNotNull(), "missing tag"),
        (F.col("count").isNotNull(), "count is not an integer"),
    ]


def with_parsed_tags(lines_df: DataFrame, header: list[str], *, lowercase: bool = True, value_col: str = "value"
                     ) -> DataFrame:
    """Parse tags lines (``traid, tag, count`` in the header's column order): adds those columns, ``reason`` and
    ``raw`` like ``with_parsed_plays``. Lines equal to the header line are dropped before."""
    header_line = "\t".join(header)
    positions = {name: header.index(name) for name in TAGS_COLUMNS}
    _fields = F.split(F.col(value_col), "\t", -1)
    tag = F.trim(F.get(_fields, positions["tag"]))
    tag = F.lower(tag) if lowercase else tag
    _parsed_df = lines_df.where(F.col(value_col) != F.lit(header_line)).select(
        "*",
        _fields.alias("_fields"),
        F.nullif(F.trim(F.get(_fields, positions["traid"])), F.lit("")).alias("traid"),
        F.nullif(tag, F.lit("")).alias("tag"),
        F.trim(F.get(_fields, positions["count"])).try_cast("int").alias("count"),
    )
    _checked_df = _parsed_df.withColumn("reason", reject_reason(tags_checks("_fields", len(header))))
    is_bad = F.col("reason").isNotNull()
    extra = [F.when(is_bad, F.col(c)).alias(c) for c in (BLOCK_COL, ROW_ID_COL) if c in lines_df.columns]
    return _checked_df.select(*TAGS_COLUMNS, "reason", F.when(is_bad, F.col(value_col)).alias("raw"), *extra)


def with_top_tags(tags_df: DataFrame, top_k: int, *, min_weight: int = 0) -> DataFrame:
    """``traid, tags``: per track the ``top_k`` tag names by count (descending, ties by name), as an ordered array.

    A tag listed twice for a track counts with its highest count; rows below ``min_weight`` are ignored.
    """
    song_tag_w = Window.partitionBy("traid").orderBy(F.desc("count"), F.asc("tag"))
    return (
        tags_df.where(F.col("count") >= F.lit(int(min_weight)))
        # one shuffle: the grouping, the window and the collect below all cluster by traid
        .repartition("traid")
        .groupBy("traid", "tag")
        .agg(F.max("count").alias("count"))
        .withColumn("_rank", F.row_number().over(song_tag_w))
        .where(F.col("_rank") <= F.lit(int(top_k)))
        .groupBy("traid")
        .agg(F.array_sort(F.collect_list(F.struct("_rank", "tag"))).alias("_ranked"))
        .select(F.col("traid").alias(TRACK_ID), F.transform("_ranked", lambda x: x["tag"]).alias(TAGS))
    )


def apply_tag_policy(plays_df: DataFrame, song_tags_df: DataFrame, *, drop_untagged: bool) -> DataFrame:
    """Drop the plays of songs without tags (``drop_untagged``) or keep every play (then a no-op)."""
    if not drop_untagged:
        return plays_df
    tagged_df = song_tags_df.select(TRACK_ID)
    return plays_df.join(F.broadcast(tagged_df), on=TRACK_ID, how="left_semi")


# ---------------------------------------------------------------------------------------------------------------
# 6. Sequences and splits
# ---------------------------------------------------------------------------------------------------------------
def padded(col: Column, length: int, pad: int = PAD_INDEX) -> Column:
    """``col`` (array<int>) cut or padded with ``pad`` to exactly ``length`` entries."""
    col = F.coalesce(col, F.array().cast("array<int>"))
    return F.slice(F.concat(col, F.array_repeat(F.lit(pad), int(length))), 1, int(length))


def build_song_lookup(song_vocab_df: DataFrame, song_tags_df: DataFrame, tag_vocab_df: DataFrame, top_k: int
                      ) -> DataFrame:
    """``track_id, song_idx, tags``: every song of the vocabulary with its top-K tag indices, 0-padded to K.

    Songs without tags get K pads; tags out of the tag vocabulary get 1 (OOV).
    """
    _with_tags_df = song_vocab_df.select(F.col("token").alias(TRACK_ID), F.col("index").alias(SONG_IDX)).join(
        song_tags_df, on=TRACK_ID, how="left"
    )
    _tagged_df = _with_tags_df.where(F.col(TAGS).isNotNull()).transform(
        with_index_array, tag_vocab_df, TAGS, "_tag_idx", key_cols=[TRACK_ID]
    )
    _untagged_df = _with_tags_df.where(F.col(TAGS).isNull()).withColumn("_tag_idx", F.array().cast("array<int>"))
    return _tagged_df.unionByName(_untagged_df).select(TRACK_ID, SONG_IDX, padded(F.col("_tag_idx"), top_k).alias(TAGS))


def build_sessions(seq_plays_df: DataFrame, song_lookup_df: DataFrame, user_vocab_df: DataFrame, *, min_length: int,
                   max_length: int, top_k: int, col_user: str = USER) -> DataFrame:
    """One row per session: ``session_id, user_idx, start_ts, songs, song_tags, length``.

    Songs in play order (by ``position``), ``song_tags`` their K tags each, flattened (a song missing from the
    lookup, i.e. out of the song vocabulary, is 1 with K pads); sessions with fewer than
    ``min_length`` songs are dropped, longer ones keep their first ``max_length``. ``start_ts`` is the time of the
    first kept play. Grouping is by (user, session), so data hash-partitioned by user is not shuffled again.
    """
    _indexed_df = seq_plays_df.join(F.broadcast(song_lookup_df), on=TRACK_ID, how="left")
    _grouped_df = _indexed_df.groupBy(col_user, SESSION_ID).agg(
        F.array_sort(F.collect_list(F.struct(F.col(POSITION), F.col(SONG_IDX), F.col(TAGS)))).alias("_plays"),
        F.min(TS).alias("_start_ts"),
    )
    _cut_df = _grouped_df.withColumn("_plays", F.slice("_plays", 1, int(max_length))).where(
        F.size("_plays") >= F.lit(int(min_length))
    )
    return _cut_df.transform(with_index, user_vocab_df, col_user, USER_IDX).select(
        F.col(SESSION_ID),
        F.col(USER_IDX),
        F.col("_start_ts").alias(START_TS),
        F.transform("_plays", lambda p: F.coalesce(p[SONG_IDX], F.lit(1))).cast("array<int>").alias(SONGS),
        F.flatten(
            F.transform("_plays", lambda p: F.coalesce(p[TAGS], F.array_repeat(F.lit(PAD_INDEX), int(top_k))))
        ).cast("array<int>").alias(SONG_TAGS),
        F.size("_plays").cast("int").alias(LENGTH),
    )


def split_cutoffs(sessions_df: DataFrame, valid_fraction: float, test_fraction: float
                  ) -> tuple[dt.datetime | None, dt.datetime | None]:
    """Start times where valid and where test begin: the ``1 - valid - test`` and ``1 - test`` quantiles (exact)
    of the session start times. None when there are no sessions."""
    train_q = 1.0 - valid_fraction - test_fraction
    test_q = 1.0 - test_fraction
    # percentile() is exact; on whole-second timestamps micros are exact in a double (< 2^53).
    row = sessions_df.agg(
        F.percentile(F.unix_micros(START_TS).cast("double"), F.array(F.lit(train_q), F.lit(test_q)), F.lit(1))
        .alias("q"),
    ).first()
    if row is None or row["q"] is None:
        return None, None
    # percentile interpolates; the cut is at the session start at or after the quantile, so ties stay together.
    valid_start_us, test_start_us = (int(-(-v // 1)) for v in row["q"])
    to_dt = lambda us: dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=us)  # noqa: E731
    return to_dt(valid_start_us), to_dt(test_start_us)


def with_split(sessions_df: DataFrame, valid_start: dt.datetime | None, test_start: dt.datetime | None, *,
               has_valid: bool = True, has_test: bool = True) -> DataFrame:
    """Add ``split``: test = start at or after ``test_start``, valid = from ``valid_start``, else train.

    All sessions with the same start time land in the same split, so every test session starts strictly after
    every train session.
    """
    split = F.lit("train")
    if valid_start is not None and test_start is not None:
        split = (
            F.when(F.lit(has_test) & (F.col(START_TS) >= F.lit(test_start)), F.lit("test"))
            .when(F.lit(has_valid) & (F.col(START_TS) >= F.lit(valid_start)), F.lit("valid"))
            .otherwise(F.lit("train"))
        )
    return sessions_df.withColumn(SPLIT, split)


# ---------------------------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------------------------
class _Fingerprints(threading.Thread):
    """Hash the input files in a background thread while Spark works (hashlib releases the GIL)."""

    def __init__(self, paths: dict[str, Path]) -> None:
        super().__init__(daemon=True)
        self.paths = paths
        self.result: dict[str, dict] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = {name: file_fingerprint(path) for name, path in sorted(self.paths.items())}
        except BaseException as exc:  # reported by get()
            self.error = exc

    def get(self) -> dict[str, dict]:
        self.join()
        if self.error is not None:
            raise self.error
        return self.result


def _read_header(path: Path) -> list[str]:
    with open(path, "r", encoding="utf-8", errors="replace", newline="") as handle:
        return handle.readline().rstrip("\r\n").split("\t")


def _write_rejects(spark: SparkSession, bad_df: DataFrame, n_bad: int, n_lines: int, max_fraction: float,
                   path: Path, label: str, out: AtomicOutput) -> int:
    """Write the rejected rows of one file, with line numbers (an extra scan, so only when there are some).

    More than ``max_fraction`` of ``n_lines`` rejected means the file is not in the expected format: InputError
    naming the file, the first bad line and its reason (nothing is written then).
    """
    if n_bad == 0:  # an empty table with the schema; limit(0) is planned without reading the input
        return write_rejected(bad_df.limit(0), label, "raw", None, out)
    bad_df = with_line_numbers(bad_df, spark, path)
    if n_bad > max_fraction * max(n_lines, 1):
        first_bad = bad_df.orderBy("line").select("line", "reason", "raw").first()
        raw = first_bad["raw"] if len(first_bad["raw"]) <= 200 else first_bad["raw"][:200] + "..."
        raise InputError(
            f"file {path} line {first_bad['line']}: {first_bad['reason']}: {raw!r} ({n_bad:,} of {n_lines:,} lines "
            f"malformed, more than clean.max_rejected_fraction={max_fraction})"
        )
    return write_rejected(bad_df, label, "raw", "line", out)


def with_eligibility(df: DataFrame, *, drop_untracked: bool, start: dt.datetime | None, end: dt.datetime | None
                     ) -> DataFrame:
    """Add ``is_eligible``: a parsed play (no reject reason) that is tracked (if ``drop_untracked``) and inside the
    time window; only these are deduplicated and sessionized."""
    is_eligible = F.col("reason").isNull() & in_time_window(start, end)
    if drop_untracked:
        is_eligible = is_eligible & F.col(TRACK_ID).isNotNull()
    return df.withColumn(ELIGIBLE, is_eligible)


def with_level(df: DataFrame, min_sessions: int, *, drop_untracked: bool) -> DataFrame:
    """Add ``level``: the last stage a row survives: 0 rejected, 1 parsed (untracked), 2 tracked (outside the time
    window), 3 in window (duplicate), 4 deduplicated (user with fewer than ``min_sessions`` sessions), 5 kept.
    Needs ``reason``, ``is_eligible`` and the columns of ``with_session_flags``."""
    level = F.when(F.col("reason").isNotNull(), F.lit(LEVEL_REJECTED))
    if drop_untracked:
        level = level.when(F.col(TRACK_ID).isNull(), F.lit(LEVEL_PARSED))
    level = (
        level.when(~F.col(ELIGIBLE), F.lit(LEVEL_TRACKED))
        .when(F.col("is_duplicate"), F.lit(LEVEL_IN_WINDOW))
        .when(F.col("user_sessions") < F.lit(int(min_sessions)), F.lit(LEVEL_DEDUPED))
        .otherwise(F.lit(LEVEL_KEPT))
    )
    return df.withColumn(LEVEL, level.cast("int"))


def _first_last_eligible(spark: SparkSession, plays_path: Path, cfg: dict, start, end):
    """First and last eligible play (for window.first_months / last_months): one extra scan of the text."""
    row = (
        read_text_lines(spark, plays_path)
        .transform(with_parsed_plays)
        .transform(with_eligibility, drop_untracked=cfg["clean"]["drop_untracked"], start=start, end=end)
        .where(F.col(ELIGIBLE))
        .agg(F.min(TS).alias("first"), F.max(TS).alias("last"))
        .first()
    )
    return row["first"], row["last"]


def run_job(spark: SparkSession, input_dir: Path, output_dir: Path, config: dict) -> dict:
    """Run the whole Last.fm 1K feature job; see the module docstring. Returns the summary printed by the CLI."""
    started = time.time()
    cfg = resolve_config(config)
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    plays_name, tags_name = cfg["input"]["plays_file"], cfg["input"]["tags_file"]
    files = require_files(input_dir, [plays_name], optional=[tags_name])
    plays_path = files[plays_name]
    require_nonempty(plays_path)
    tags_path = files.get(tags_name)
    if tags_path is None and cfg["tags"]["required"]:
        raise InputError(f"file {input_dir / tags_name} not found (tags.required is true)")
    tags_header: list[str] = []
    if tags_path is not None:
        check_header(tags_path, TAGS_COLUMNS, "\t")
        tags_header = [name.lstrip("\ufeff") for name in _read_header(tags_path)]
    fingerprints = _Fingerprints(files)
    fingerprints.start()
    _set_job_conf(spark)

    report = StatsReport("Last.fm 1K feature job")
    counts: dict[str, int] = {}
    top_k = int(cfg["tags"]["top_k"])
    drop_untracked = bool(cfg["clean"]["drop_untracked"])
    min_sessions = int(cfg["sessions"]["min_sessions_per_user"])
    max_rejected = float(cfg["clean"]["max_rejected_fraction"])

    with AtomicOutput(output_dir) as out:
        # --- time window: fixed bounds, or months from the first/last play (costs one extra scan) ---------------
        step(spark, "window bounds")
        start, end = window_bounds(cfg["window"], None, None)
        if cfg["window"]["first_months"] or cfg["window"]["last_months"]:
            first_ts, last_ts = _first_last_eligible(spark, plays_path, cfg, start, end)
            start, end = window_bounds(cfg["window"], first_ts, last_ts)

        # --- 1.-3. read, clean, dedup, sessionize: one scan of the text, one shuffle, one sorted window pass ------
        step(spark, "read+sessionize")
        flagged_df = (
            read_text_lines(spark, plays_path)
            .transform(with_parsed_plays)
            .transform(with_eligibility, drop_untracked=drop_untracked, start=start, end=end)
            .repartition(int(cfg["spark"]["partitions"]), USER)
            .sortWithinPartitions(*play_order(eligible_col=ELIGIBLE))
            .transform(with_session_flags, int(cfg["sessions"]["gap_seconds"]),
                       drop_duplicates=cfg["clean"]["drop_duplicates"], eligible_col=ELIGIBLE)
            .transform(with_level, min_sessions, drop_untracked=drop_untracked)
            .select(*RAW_COLUMNS, LEVEL, "session_seq", POSITION, "reason", "raw", BLOCK_COL, ROW_ID_COL)
        )
        # Cached because every later stage (rejects, plays, stats, sessions) reads these rows, and the cache keeps
        # the user partitioning and order, so nothing downstream shuffles the plays again. Uncompressed: building
        # a compressed columnar cache costs about 3x more CPU here, and the rows fit in memory (else they spill).
        flagged_df, level_rows = _persist_uncompressed(
            flagged_df,
            lambda cached_df: cached_df.groupBy(LEVEL)
            .agg(F.count(F.lit(1)).alias("rows"), F.count_if(F.col(POSITION) == 0).alias("sessions"))
            .collect(),
        )
        per_level = {row[LEVEL]: (row["rows"], row["sessions"]) for row in level_rows}
        n_at = lambda level: per_level.get(level, (0, 0))[0]  # noqa: E731
        lines = sum(rows for rows, _ in per_level.values())
        counts.update(
            lines=lines, rejected=n_at(LEVEL_REJECTED), untracked=n_at(LEVEL_PARSED) if drop_untracked else 0,
            outside_window=n_at(LEVEL_TRACKED), duplicates=n_at(LEVEL_IN_WINDOW),
            plays_of_filtered_users=n_at(LEVEL_DEDUPED), plays=n_at(LEVEL_KEPT),
            sessions_before_user_filter=per_level.get(LEVEL_DEDUPED, (0, 0))[1] + per_level.get(LEVEL_KEPT, (0, 0))[1],
            sessions=per_level.get(LEVEL_KEPT, (0, 0))[1],
        )
        log(f"read {lines:,} lines: {counts['rejected']:,} rejected, {counts['untracked']:,} untracked, "
            f"{counts['duplicates']:,} duplicates, {counts['plays']:,} plays in {counts['sessions']:,} sessions "
            f"({time.time() - started:.1f}s)")
        step(spark, "rejected")
        _write_rejects(spark, flagged_df.where(F.col(LEVEL) == LEVEL_REJECTED), counts["rejected"], lines,
                       max_rejected, plays_path, plays_name, out)

        step(spark, "plays")
        kept_df = flagged_df.where(F.col(LEVEL) == LEVEL_KEPT)
        plays_df = kept_df.transform(with_session_id, user_ranks(kept_df.select(USER))).select(*PLAYS_COLUMNS)
        plays_df.write.mode("overwrite").parquet(out.path("plays"))
        log(f"wrote plays ({time.time() - started:.1f}s)")

        # --- stats of the nested stages parsed > tracked > in window > deduplicated > plays ---------------------
        step(spark, "stats")
        stats_columns = RAW_COLUMNS if cfg["stats"]["column_stats"] else [USER]
        stage_stats = column_stats_by_level(
            flagged_df.where(F.col(LEVEL) >= LEVEL_PARSED), LEVEL, [level for _, level in STAGE_LEVELS], stats_columns,
            level_counts={level: rows for level, (rows, _) in per_level.items()},
        )
        for name, level in STAGE_LEVELS:
            report.add_stage_stats(name, *stage_stats[level])
        counts["users_before_user_filter"] = stage_stats[LEVEL_DEDUPED][1][USER]["unique"]
        log(f"stats ({time.time() - started:.1f}s)")

        # --- 4. tags ----------------------------------------------------------------------------------------------
        step(spark, "tags")
        plays_files_df = spark.read.parquet(out.path("plays"))  # columnar re-read: only the needed columns
        if tags_path is not None:
            tag_lines_df = read_text_lines(spark, tags_path).transform(
                with_parsed_tags, tags_header, lowercase=cfg["tags"]["lowercase"]
            )
            # Lines and rejects are counted while the song tags are computed (one scan of the file, not two).
            tag_observation = Observation("tags")
            observed_df = tag_lines_df.observe(
                tag_observation, F.count(F.lit(1)).alias("lines"), F.count_if(F.col("reason").isNotNull()).alias("bad")
            )
            play_tracks_df = plays_files_df.select(F.col(TRACK_ID).alias("traid")).where(F.col("traid").isNotNull())
            song_tags_df = (
                observed_df.where(F.col("reason").isNull())
                .select(*TAGS_COLUMNS)
                # broadcast the distinct played tracks (about a million ids at full size) instead of shuffling tags
                .join(F.broadcast(play_tracks_df.distinct()), on="traid", how="left_semi")
                .transform(with_top_tags, top_k, min_weight=int(cfg["tags"]["min_tag_weight"]))
            )
        else:
            song_tags_df = spark.createDataFrame([], f"{TRACK_ID} string, {TAGS} array<string>")
        # Cached: small (one row per tagged song) and used by the tag policy, the tag vocabulary and the lookup.
        song_tags_df = song_tags_df.persist(StorageLevel.MEMORY_AND_DISK)
        counts["songs_with_tags"] = song_tags_df.count()
        if tags_path is not None:
            tag_counts = tag_observation.get
            counts["rejected_tags"] = _write_rejects(
                spark, tag_lines_df.where(F.col("reason").isNotNull()), tag_counts["bad"], tag_counts["lines"],
                max_rejected, tags_path, tags_name, out,
            )
        else:
            counts["rejected_tags"] = 0
        drop_untagged = bool(cfg["tags"]["drop_untagged"]) and tags_path is not None
        seq_plays_files_df = plays_files_df.transform(apply_tag_policy, song_tags_df, drop_untagged=drop_untagged)
        log(f"tags: {counts['songs_with_tags']:,} songs with tags ({time.time() - started:.1f}s)")

        # --- 5. vocabularies --------------------------------------------------------------------------------------
        step(spark, "vocabularies")
        vocab_cfg = cfg["vocab"]
        vocabs = {
            "user": build_vocab(seq_plays_files_df, USER, min_count=vocab_cfg["user_min_count"]),
            "song": build_vocab(seq_plays_files_df, TRACK_ID, min_count=vocab_cfg["song_min_count"]),
            "artist": build_vocab(seq_plays_files_df, ARTIST_ID, min_count=vocab_cfg["artist_min_count"]),
            "tag": build_vocab_from_array(song_tags_df, TAGS, min_count=vocab_cfg["tag_min_count"]),
        }
        vocab_sizes = {}
        for name, vocab_df in vocabs.items():
            write_vocab(vocab_df, name, out)
            vocabs[name] = spark.read.parquet(out.path(f"vocab/{name}"))  # small: reuse the written table
            vocab_sizes[name] = parquet_rows(out.path(f"vocab/{name}")) + 2
        if not drop_untagged:
            counts["untagged_plays_dropped"] = 0
        elif vocab_cfg["user_min_count"] == 1:  # every user is in the vocabulary: its counts add up to the plays
            counts["untagged_plays_dropped"] = counts["plays"] - vocabs["user"].agg(F.sum("count")).first()[0]
        else:
            counts["untagged_plays_dropped"] = counts["plays"] - seq_plays_files_df.count()
        log(f"vocabularies {vocab_sizes} ({time.time() - started:.1f}s)")

        # --- 6. sequences and splits ------------------------------------------------------------------------------
        step(spark, "song_tags")
        song_lookup_df = build_song_lookup(vocabs["song"], song_tags_df, vocabs["tag"], top_k)
        song_lookup_df.select(SONG_IDX, TAGS).repartition(1).sortWithinPartitions(SONG_IDX).write.mode(
            "overwrite"
        ).parquet(out.path("song_tags"))
        song_lookup_df = spark.read.parquet(out.path("song_tags")).join(
            vocabs["song"].select(F.col("token").alias(TRACK_ID), F.col("index").alias(SONG_IDX)), on=SONG_IDX
        )
        step(spark, "sessions")
        # From the cached, user-partitioned plays (not the Parquet copy): grouping by session needs no shuffle.
        seq_plays_df = plays_df.transform(apply_tag_policy, song_tags_df, drop_untagged=drop_untagged)
        sessions_df = build_sessions(
            seq_plays_df, song_lookup_df, vocabs["user"], min_length=int(cfg["sequences"]["min_length"]),
            max_length=int(cfg["sequences"]["max_length"]), top_k=top_k,
        )
        # Cached: used for the split cut-offs, the write and the stats.
        sessions_df = sessions_df.persist(StorageLevel.MEMORY_AND_DISK)
        split_cfg = cfg["split"]
        valid_start, test_start = split_cutoffs(sessions_df, split_cfg["valid_fraction"], split_cfg["test_fraction"])
        flagged_df.unpersist()
        split_df = sessions_df.transform(
            with_split, valid_start, test_start,
            has_valid=split_cfg["valid_fraction"] > 0, has_test=split_cfg["test_fraction"] > 0,
        )
        _write_splits(split_df, out)
        split_counts = {split: parquet_rows(out.path(f"sessions/{split}")) for split in SPLITS}
        n_sessions_out = sum(split_counts.values())
        log(f"sessions {split_counts} ({time.time() - started:.1f}s)")

        # --- 7. report and manifest -------------------------------------------------------------------------------
        step(spark, "report")
        sessions_rows, sessions_stats = column_stats(split_df, [SESSION_ID, USER_IDX, START_TS, LENGTH, SPLIT])
        report.add_stage_stats("sessions", sessions_rows, sessions_stats)
        counts.update(
            sessions_dropped=counts["sessions"] - n_sessions_out, sequence_sessions=n_sessions_out,
            users=vocab_sizes["user"] - 2, songs=vocab_sizes["song"] - 2, artists=vocab_sizes["artist"] - 2,
            tags=vocab_sizes["tag"] - 2, **{f"sessions_{k}": v for k, v in split_counts.items()},
        )
        report.add_counts(**counts)
        report.write(out.path(""))
        sessions_df.unpersist()
        song_tags_df.unpersist()

        inputs = fingerprints.get()
        row_counts = {**split_counts, "rejected": counts["rejected"], "rejected_tags": counts["rejected_tags"],
                      "plays": counts["plays"], "sessions": n_sessions_out, "song_tags": vocab_sizes["song"] - 2}
        manifest = write_manifest(
            out, dataset=DATASET, config=cfg, inputs=inputs, row_counts=row_counts, vocab_sizes=vocab_sizes,
            features={
                "categorical": {USER_IDX: "user"},
                "multi_valued": {SONGS: "song", SONG_TAGS: "tag"},
                "numeric": [],
                "target": None,
            },
            splits={split: f"sessions/{split}" for split in SPLITS},
            extra={
                "top_k_tags": top_k,
                "max_session_length": int(cfg["sequences"]["max_length"]),
                "tags_available": tags_path is not None,
                "window": {"start": format_instant(start) if start else None,
                           "end": format_instant(end) if end else None},
                "split_starts": {"valid": format_instant(valid_start) if valid_start else None,
                                 "test": format_instant(test_start) if test_start else None},
                "tables": {"plays": "plays", "song_tags": "song_tags", "vocab": "vocab", "rejected": "rejected"},
            },
        )
    spark.sparkContext.setJobDescription(None)
    log(f"done in {time.time() - started:.1f}s -> {output_dir}")
    return {"output": str(output_dir), "row_counts": manifest["row_counts"], "vocab_sizes": vocab_sizes,
            "counts": counts, "seconds": round(time.time() - started, 1)}


def _set_job_conf(spark: SparkSession) -> None:
    """Runtime SQL settings the job relies on (they only affect this session's queries)."""
    spark.conf.set("spark.sql.session.timeZone", "UTC")  # Last.fm timestamps are UTC; never the machine's zone
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")  # not INT96: pyarrow/Petastorm
    # Sessions are gathered with collect_list grouped by (user, session) over user-partitioned rows: keep the hash
    # aggregation instead of falling back to sorting all rows once a task has seen 128 sessions (the default).
    spark.conf.set("spark.sql.objectHashAggregate.sortBased.fallbackThreshold", "1000000")


def _persist_uncompressed(df: DataFrame, first_action) -> tuple[DataFrame, Any]:
    """``persist(MEMORY_AND_DISK)`` with columnar compression off for this cache; ``first_action(cached_df)``
    materializes it while the setting holds (its result is returned with the cached frame)."""
    key = "spark.sql.inMemoryColumnarStorage.compressed"
    previous = spark_conf_get(df.sparkSession, key)
    df.sparkSession.conf.set(key, "false")
    try:
        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        result = first_action(df)
    finally:
        df.sparkSession.conf.set(key, previous if previous is not None else "true")
    return df, result


def spark_conf_get(spark: SparkSession, key: str) -> str | None:
    """A SQL conf value, or None when unset."""
    try:
        return spark.conf.get(key)
    except Exception:  # noqa: BLE001 - unset keys raise in some versions
        return None


def _write_splits(split_df: DataFrame, out: AtomicOutput) -> None:
    """Write ``sessions/{train,valid,test}/`` in one pass (partitioned by split, then renamed to the contract's
    folder names); every split folder exists, empty ones hold an empty table with the schema."""
    base = Path(out.path("sessions"))
    (
        split_df.select(*SESSION_COLUMNS, SPLIT)
        .sortWithinPartitions(SPLIT, SESSION_ID)
        .write.mode("overwrite")
        .partitionBy(SPLIT)
        .parquet(str(base))
    )
    for split in SPLITS:
        written = base / f"{SPLIT}={split}"
        target = base / split
        if written.is_dir():
            written.rename(target)
        else:
            split_df.where(F.lit(False)).select(*SESSION_COLUMNS).repartition(1).write.mode("overwrite").parquet(
                str(target)
            )
