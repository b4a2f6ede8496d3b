"""The Last.fm clean + sessionize rules as a plain chain of small stages: the oracle that the job's fused pass
(``musicrec.features.lastfm.sessionize.with_play_levels`` + ``kept_plays``) is compared with, row for row, in
tests/test_features_lastfm.py.

    parsed -> drop_untracked -> filter_time_window -> drop_duplicate_plays -> with_sessions
           -> filter_users_by_sessions -> with_session_id

Each stage states one rule the plainest way, with its own window, and shares no code with the fused pass:

- a play is in the window when ``start <= timestamp < end``;
- plays of a user are ordered by time, then track id, artist name, track name, artist id (nulls first);
- a duplicate has the same timestamp and track as the play before it: the same track MBID, or for plays without
  one, the same artist and track name (a null name makes the name key null, and two null keys match);
- a play starts a session when it is the user's first or comes MORE than ``gap_seconds`` after the previous one;
- users with fewer than ``min_sessions`` sessions are dropped;
- ``session_id`` = (1-based rank of the user id) * 2^32 + session number.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window, WindowSpec
from pyspark.sql import functions as F

from musicrec.columns import ARTIST_ID, ARTIST_NAME, POSITION, REASON, SESSION_ID, TRACK_ID, TRACK_NAME, TS, USER
from musicrec.schemas import LASTFM_PLAYS_COLUMNS

PLAYS_COLUMNS = [*LASTFM_PLAYS_COLUMNS, SESSION_ID, POSITION]
PLAY_ORDER = (TS, TRACK_ID, ARTIST_NAME, TRACK_NAME, ARTIST_ID)  # inside a user, each ascending, nulls first
STAGES = ["parsed", "tracked", "in_window", "deduplicated", "plays"]


# The job's settings the oracle takes (keyword arguments of ``oracle_stages``), with the job's defaults.
SETTINGS = {"drop_untracked": True, "start": None, "end": None, "drop_duplicates": True, "gap_seconds": 1200,
            "min_sessions": 6}


def oracle_stages(parsed_df: DataFrame, **settings) -> dict[str, DataFrame]:
    """The rows after each stage (``STAGES``), the last one (``plays``) as ``OUT/plays/`` (``PLAYS_COLUMNS``).

    ``parsed_df`` has the raw columns and ``reason`` (null for a parsed play), like ``with_parsed_plays``;
    ``settings`` override ``SETTINGS``.
    """
    unknown = set(settings) - set(SETTINGS)
    assert not unknown, f"unknown settings {unknown}"
    s = {**SETTINGS, **settings}
    stages = {"parsed": parsed_df.where(F.col(REASON).isNull()).drop(REASON)}
    stages["tracked"] = stages["parsed"].transform(drop_untracked) if s["drop_untracked"] else stages["parsed"]
    stages["in_window"] = stages["tracked"].transform(filter_time_window, s["start"], s["end"])
    stages["deduplicated"] = (
        stages["in_window"].transform(drop_duplicate_plays) if s["drop_duplicates"] else stages["in_window"]
    )
    sessions_df = stages["deduplicated"].transform(with_sessions, s["gap_seconds"])
    stages["plays"] = (
        sessions_df.transform(filter_users_by_sessions, s["min_sessions"]).transform(with_session_id)
        .select(*PLAYS_COLUMNS)
    )
    return stages


def user_time_window(*, col_user: str = USER) -> WindowSpec:
    """Plays of one user in time order, ties broken by track id, artist name, track name, artist id."""
    return Window.partitionBy(col_user).orderBy(*[F.col(c).asc_nulls_first() for c in PLAY_ORDER])


def drop_untracked(df: DataFrame, *, col_name: str = TRACK_ID) -> DataFrame:
    """Drop plays without a track MBID."""
    return df.where(F.col(col_name).isNotNull())


def filter_time_window(df: DataFrame, start: dt.datetime | None, end: dt.datetime | None, *, col_name: str = TS
                       ) -> DataFrame:
    """Keep plays with ``start <= timestamp < end`` (None: that side open)."""
    if start is not None:
        df = df.where(F.col(col_name) >= F.lit(start))
    if end is not None:
        df = df.where(F.col(col_name) < F.lit(end))
    return df


def track_key() -> Column:
    """The track MBID, or for a play without one, artist and track name."""
    return F.coalesce(
        F.col(TRACK_ID), F.concat(F.lit("\u0000"), F.col(ARTIST_NAME), F.lit("\u0000"), F.col(TRACK_NAME))
    )


def with_duplicate_flag(df: DataFrame, *, col_user: str = USER) -> DataFrame:
    """Add ``is_duplicate``: the play repeats the previous one of the same user (same timestamp and track key).
    The first of a group is not a duplicate."""
    user_time_w = user_time_window(col_user=col_user)
    same_ts = F.col(TS) == F.lag(TS).over(user_time_w)
    same_track = track_key().eqNullSafe(F.lag(track_key()).over(user_time_w))
    return df.withColumn("is_duplicate", F.coalesce(same_ts & same_track, F.lit(False)))


def drop_duplicate_plays(df: DataFrame, *, col_user: str = USER) -> DataFrame:
    """Drop exact duplicate plays (see ``with_duplicate_flag``), keeping the first."""
    return df.transform(with_duplicate_flag, col_user=col_user).where(~F.col("is_duplicate")).drop("is_duplicate")


def with_sessions(df: DataFrame, gap_seconds: int, *, col_user: str = USER) -> DataFrame:
    """Add ``session_seq`` (1-based session number per user) and ``position`` (0-based play number in it) to
    deduplicated plays: the first play of a user, or one more than ``gap_seconds`` after the previous, starts one."""
    user_time_w = user_time_window(col_user=col_user)
    gap = F.col(TS).cast("double") - F.lag(TS).over(user_time_w).cast("double")  # seconds
    _flagged_df = df.withColumn("_is_new", F.coalesce(gap > F.lit(gap_seconds), F.lit(True)).cast("int"))
    _numbered_df = _flagged_df.withColumn(
        "session_seq",
        F.sum("_is_new").over(user_time_w.rowsBetween(Window.unboundedPreceding, Window.currentRow)).cast("int"),
    )
    session_w = Window.partitionBy(col_user, "session_seq").orderBy(*[F.col(c).asc_nulls_first() for c in PLAY_ORDER])
    return _numbered_df.withColumn(POSITION, (F.row_number().over(session_w) - 1).cast("int")).drop("_is_new")


def with_user_session_count(df: DataFrame, *, col_user: str = USER) -> DataFrame:
    """Add ``user_sessions``: number of sessions of the play's user (needs ``session_seq``)."""
    return df.withColumn("user_sessions", F.max("session_seq").over(Window.partitionBy(col_user)))


def filter_users_by_sessions(df: DataFrame, min_sessions: int, *, col_user: str = USER) -> DataFrame:
    """Keep plays of users with at least ``min_sessions`` sessions."""
    return (
        df.transform(with_user_session_count, col_user=col_user)
        .where(F.col("user_sessions") >= F.lit(min_sessions))
        .drop("user_sessions")
    )


def with_session_id(df: DataFrame, *, col_user: str = USER) -> DataFrame:
    """Add ``session_id`` = user rank (dense, by user id) * 2^32 + ``session_seq``."""
    user_rank = F.dense_rank().over(Window.orderBy(col_user)).cast("long")
    return df.withColumn(SESSION_ID, user_rank * F.lit(1 << 32) + F.col("session_seq").cast("long"))
