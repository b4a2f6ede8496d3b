"""Clean and sessionize the parsed plays in ONE pass: one shuffle by user, one sort, three window operators.

``with_play_levels`` is what the job runs on the parsed lines (rejected ones included):

1. ``with_eligibility`` marks the plays that survive the row filters of the clean stage: parsed (no reject reason),
   tracked (a track MBID, when ``clean.drop_untracked``) and inside the time window ``[start, end)``;
2. the rows are hash-partitioned by user and sorted by ``play_order`` (user, eligible first, time, track fields),
   which is exactly the order the window functions need, so Spark adds no sort of its own;
3. ``with_session_flags`` flags exact duplicates (same user, timestamp and track) and numbers the sessions (a gap
   of MORE than ``sessions.gap_seconds`` starts one), the positions inside them and each user's session count;
4. ``with_level`` labels every row with the last stage it survives (``LEVEL_*``), so that the rejects, the kept
   plays and the per-stage stats all come from this one frame.

``kept_plays`` then takes the rows of users with enough sessions and adds ``session_id`` (user rank * 2^32 +
session number). The tests check this pass against a plain stage-by-stage chain (tests/lastfm_oracle.py).
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window, WindowSpec
from pyspark.sql import functions as F

from musicrec.columns import ARTIST_ID, ARTIST_NAME, POSITION, REASON, SESSION_ID, TRACK_ID, TRACK_NAME, TS, USER
from musicrec.features.lastfm.parse import RAW_COLUMNS
from musicrec.features.ranks import value_ranks

ELIGIBLE = "is_eligible"  # bool: the play takes part in dedup and sessionization (good, tracked, in the window)
SESSION_SEQ = "session_seq"  # int: 1-based session number inside the user
PLAYS_COLUMNS = RAW_COLUMNS + [SESSION_ID, POSITION]  # OUT/plays/

# Order of plays inside a user: time, then the track fields, so that ties are broken the same way on every run and
# exact duplicates are neighbours.
PLAY_ORDER = [TS, TRACK_ID, ARTIST_NAME, TRACK_NAME, ARTIST_ID]

# Row levels: a row's level is the last stage it survives.
LEVEL = "level"
LEVEL_REJECTED, LEVEL_PARSED, LEVEL_TRACKED, LEVEL_IN_WINDOW, LEVEL_DEDUPED, LEVEL_KEPT = 0, 1, 2, 3, 4, 5
STAGE_LEVELS = [
    ("parsed", LEVEL_PARSED), ("tracked", LEVEL_TRACKED), ("in_window", LEVEL_IN_WINDOW),
    ("deduplicated", LEVEL_DEDUPED), ("plays", LEVEL_KEPT),
]


def with_play_levels(parsed_df: DataFrame, *, partitions: int, gap_seconds: int, min_sessions: int,
                     drop_untracked: bool, drop_duplicates: bool, start: dt.datetime | None, end: dt.datetime | None
                     ) -> DataFrame:
    """The fused clean + sessionize pass (see the module docstring): ``parsed_df`` (``with_parsed_plays``) plus
    ``level``, ``session_seq`` and ``position``, hash-partitioned by user and sorted in play order."""
    return (
        parsed_df.transform(with_eligibility, drop_untracked=drop_untracked, start=start, end=end)
        .repartition(partitions, USER)
        .sortWithinPartitions(*play_order())
        .transform(with_session_flags, gap_seconds, drop_duplicates=drop_duplicates)
        .transform(with_level, min_sessions, drop_untracked=drop_untracked)
        .drop(ELIGIBLE, "is_duplicate", "user_sessions")
    )


def kept_plays(levels_df: DataFrame) -> DataFrame:
    """The rows of ``with_play_levels`` that survive every stage, as ``OUT/plays/`` (``PLAYS_COLUMNS``)."""
    kept_df = levels_df.where(F.col(LEVEL) == LEVEL_KEPT)
    return kept_df.transform(with_session_id, user_ranks(kept_df.select(USER))).select(*PLAYS_COLUMNS)


def first_last_eligible(parsed_df: DataFrame, *, drop_untracked: bool, start: dt.datetime | None,
                        end: dt.datetime | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """First and last eligible play (for ``window.first_months`` / ``last_months``): one more scan of the input."""
    row = (
        parsed_df.transform(with_eligibility, drop_untracked=drop_untracked, start=start, end=end)
        .where(F.col(ELIGIBLE))
        .agg(F.min(TS).alias("first"), F.max(TS).alias("last"))
        .first()
    )
    return row["first"], row["last"]


# ---------------------------------------------------------------------------------------------------------------
# The steps of the pass
# ---------------------------------------------------------------------------------------------------------------
def in_time_window(start: dt.datetime | None, end: dt.datetime | None, *, col_name: str = TS) -> Column:
    """Boolean Column: ``start <= ts < end`` (an open side is always true)."""
    condition = F.lit(True)
    if start is not None:
        condition = condition & (F.col(col_name) >= F.lit(start))
    if end is not None:
        condition = condition & (F.col(col_name) < F.lit(end))
    return condition


def with_eligibility(df: DataFrame, *, drop_untracked: bool, start: dt.datetime | None, end: dt.datetime | None
                     ) -> DataFrame:
    """Add ``is_eligible``: a parsed play (no reject reason) that is tracked (if ``drop_untracked``) and inside the
    time window; only these are deduplicated and sessionized."""
    is_eligible = F.col(REASON).isNull() & in_time_window(start, end)
    if drop_untracked:
        is_eligible = is_eligible & F.col(TRACK_ID).isNotNull()
    return df.withColumn(ELIGIBLE, is_eligible)


def play_order(*, col_user: str = USER, eligible_col: str = ELIGIBLE) -> list[Column]:
    """Sort order of plays: user, then eligible plays first, then time and track fields.

    ``sortWithinPartitions(*play_order())`` on data hash-partitioned by user is exactly the order of
    ``user_time_window``, so Spark adds no sort of its own.
    """
    order = [F.col(col_user).asc_nulls_first(), F.col(eligible_col).desc_nulls_last()]
    return order + [F.col(c).asc_nulls_first() for c in PLAY_ORDER]


def user_time_window(*, col_user: str = USER, eligible_col: str = ELIGIBLE) -> WindowSpec:
    """Plays of one user, eligible plays first (so that the others never sit between two eligible plays), in time
    order, ties broken by track id, artist name, track name, artist id."""
    return Window.partitionBy(col_user).orderBy(*play_order(col_user=col_user, eligible_col=eligible_col)[1:])


def _track_key() -> Column:
    """What "the same track" means for duplicates: the track MBID, or for a play without one, artist + track name."""
    return F.coalesce(
        F.col(TRACK_ID), F.concat(F.lit("\u0000"), F.col(ARTIST_NAME), F.lit("\u0000"), F.col(TRACK_NAME))
    )


def _is_repeat(prev_ts: Column, prev_key: Column) -> Column:
    """Boolean Column: same timestamp and ``_track_key`` as the previous play (given by the two lags); null -> false."""
    return F.coalesce((F.col(TS) == prev_ts) & _track_key().eqNullSafe(prev_key), F.lit(False))


def with_session_flags(df: DataFrame, gap_seconds: int, *, drop_duplicates: bool = True,
                       eligible_col: str = ELIGIBLE, col_user: str = USER) -> DataFrame:
    """Dedup and sessionize in one pass of window functions over (user, time). Adds:

    - ``is_duplicate``: an eligible play that repeats the previous one (``_is_repeat``); only with
      ``drop_duplicates``;
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
    is_eligible = F.col(eligible_col)
    prev_ts = F.col("_prev_ts")
    is_duplicate = is_eligible & _is_repeat(prev_ts, F.col("_prev_key")) if drop_duplicates else F.lit(False)
    gap_micros = F.unix_micros(F.col(TS)) - F.unix_micros(prev_ts)
    is_gap = gap_micros > F.lit(int(gap_seconds) * 1_000_000)
    is_new = is_eligible & ~F.col("is_duplicate") & (prev_ts.isNull() | is_gap)
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
    layer3_df = layer2_df.select(
        "*", F.max(F.when(F.col("_is_new"), F.col("_ndup"))).over(running_w).alias("_ndup_start")
    )
    return (
        layer3_df.withColumn(SESSION_SEQ, F.when(is_kept, F.col("_seq")).cast("int"))
        .withColumn(
            POSITION,
            F.when(is_kept, (F.col("_rn") - F.col("_start_rn")) - (F.col("_ndup") - F.col("_ndup_start"))).cast("int"),
        )
        .drop("_prev_ts", "_prev_key", "_rn", "_is_new", "_seq", "_ndup", "_start_rn", "_ndup_start")
    )


def with_level(df: DataFrame, min_sessions: int, *, drop_untracked: bool) -> DataFrame:
    """Add ``level``: the last stage a row survives: 0 rejected, 1 parsed (untracked), 2 tracked (outside the time
    window), 3 in window (duplicate), 4 deduplicated (user with fewer than ``min_sessions`` sessions), 5 kept.
    Needs ``reason``, ``is_eligible`` and the columns of ``with_session_flags``."""
    level = F.when(F.col(REASON).isNotNull(), F.lit(LEVEL_REJECTED))
    if drop_untracked:
        level = level.when(F.col(TRACK_ID).isNull(), F.lit(LEVEL_PARSED))
    level = (
        level.when(~F.col(ELIGIBLE), F.lit(LEVEL_TRACKED))
        .when(F.col("is_duplicate"), F.lit(LEVEL_IN_WINDOW))
        .when(F.col("user_sessions") < F.lit(int(min_sessions)), F.lit(LEVEL_DEDUPED))
        .otherwise(F.lit(LEVEL_KEPT))
    )
    return df.withColumn(LEVEL, level.cast("int"))


def user_ranks(df: DataFrame, *, col_user: str = USER) -> DataFrame:
    """``user_id, user_rank``: 1-based rank of each user id in string order (deterministic, gap-free), computed
    over ranges of users in parallel (``ranks.value_ranks``: no single-partition window)."""
    return value_ranks(df, col_user, out_col="user_rank")


def with_session_id(df: DataFrame, ranks_df: DataFrame, *, col_user: str = USER) -> DataFrame:
    """Add ``session_id`` = user rank * 2^32 + session number: unique, and the same on every run."""
    return (
        df.join(F.broadcast(ranks_df), on=col_user, how="inner")
        .withColumn(SESSION_ID, F.shiftleft(F.col("user_rank").cast("long"), 32) + F.col(SESSION_SEQ).cast("long"))
        .drop("user_rank")
    )


def level_summary(levels_df: DataFrame) -> dict[int, tuple[int, int]]:
    """``{level: (rows, sessions)}`` of ``with_play_levels`` rows (sessions = rows at position 0): one small job."""
    rows = (
        levels_df.groupBy(LEVEL)
        .agg(F.count(F.lit(1)).alias("rows"), F.count_if(F.col(POSITION) == 0).alias("sessions"))
        .collect()
    )
    return {row[LEVEL]: (row["rows"], row["sessions"]) for row in rows}


def stage_counts(per_level: dict[int, tuple[int, int]], *, drop_untracked: bool) -> dict[str, int]:
    """The job's row and session counters from ``level_summary``."""
    rows_at = lambda level: per_level.get(level, (0, 0))[0]  # noqa: E731
    sessions_at = lambda level: per_level.get(level, (0, 0))[1]  # noqa: E731
    return {
        "lines": sum(rows for rows, _ in per_level.values()), "rejected": rows_at(LEVEL_REJECTED),
        "untracked": rows_at(LEVEL_PARSED) if drop_untracked else 0, "outside_window": rows_at(LEVEL_TRACKED),
        "duplicates": rows_at(LEVEL_IN_WINDOW), "plays_of_filtered_users": rows_at(LEVEL_DEDUPED),
        "plays": rows_at(LEVEL_KEPT),
        "sessions_before_user_filter": sessions_at(LEVEL_DEDUPED) + sessions_at(LEVEL_KEPT),
        "sessions": sessions_at(LEVEL_KEPT),
    }
