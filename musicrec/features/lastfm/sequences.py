"""Session rows for training and their time split: ``OUT/sessions/{train,valid,test}/``.

``build_sessions`` gathers the kept plays of each session in play order (by ``position``) into one row: the song
indices, their K tag indices each (flattened), the user index and the start time; sessions shorter than
``sequences.min_length`` are dropped, longer ones keep their first ``sequences.max_length`` songs.
``split_cutoffs`` finds the start times where valid and test begin (exact quantiles of the session starts),
``with_split`` labels each session, and ``write_splits`` writes the three folders in one pass.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from musicrec.columns import (
    LENGTH, OOV_INDEX, PAD_INDEX, POSITION, SESSION_ID, SESSIONS_DIR, SONG_IDX, SONG_TAGS, SONGS, SPLIT, SPLITS,
    START_TS, TAGS, TEST, TRACK_ID, TRAIN, TS, USER, USER_IDX, VALID,
)
from musicrec.features.vocab import with_index
from musicrec.io import AtomicOutput

SESSION_COLUMNS = [SESSION_ID, USER_IDX, START_TS, SONGS, SONG_TAGS, LENGTH]  # OUT/sessions/<split>/


def padded(col: Column, length: int, pad: int = PAD_INDEX) -> Column:
    """``col`` (array<int>) cut or padded with ``pad`` to exactly ``length`` entries (null -> all pads)."""
    col = F.coalesce(col, F.array().cast("array<int>"))
    return F.slice(F.concat(col, F.array_repeat(F.lit(pad), int(length))), 1, int(length))


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
        F.transform("_plays", lambda p: F.coalesce(p[SONG_IDX], F.lit(OOV_INDEX))).cast("array<int>").alias(SONGS),
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
    split = F.lit(TRAIN)
    if valid_start is not None and test_start is not None:
        split = (
            F.when(F.lit(has_test) & (F.col(START_TS) >= F.lit(test_start)), F.lit(TEST))
            .when(F.lit(has_valid) & (F.col(START_TS) >= F.lit(valid_start)), F.lit(VALID))
            .otherwise(F.lit(TRAIN))
        )
    return sessions_df.withColumn(SPLIT, split)


def write_splits(split_df: DataFrame, out: AtomicOutput) -> None:
    """Write ``sessions/{train,valid,test}/`` in one pass (partitioned by split, then renamed to the contract's
    folder names); every split folder exists, empty ones hold an empty table with the schema."""
    base = Path(out.path(SESSIONS_DIR))
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
