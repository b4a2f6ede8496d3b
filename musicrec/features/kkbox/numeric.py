"""Numeric features, computed and standardized on the song and user tables (weights = train-part plays), and the
per-split event counts of those tables (``split_summary``)."""

from __future__ import annotations

import math
from fractions import Fraction

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from musicrec.columns import TRAIN
from musicrec.features.kkbox.columns import (
    ARTIST_KEY, COUNT_COLUMNS, HAS_EXTRA, HAS_MEMBER, HAS_SONG, NUMERIC_COLUMNS, PLAYS, SONG_LENGTH, SONG_NUMERIC,
    USER_NUMERIC,
)

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


def train_standardization(song_info_df: DataFrame, user_info_df: DataFrame) -> dict[str, dict[str, float | None]]:
    """``standardization_stats`` of every numeric feature (``NUMERIC_COLUMNS`` order), from the train-part
    ``moment_sums`` of the song and the user table (two aggregations)."""
    stats = standardization_stats({
        **moment_sums(song_info_df, SONG_NUMERIC, weight_col=PLAYS[TRAIN]),
        **moment_sums(user_info_df, USER_NUMERIC, weight_col=PLAYS[TRAIN]),
    })
    return {name: stats[name] for name in NUMERIC_COLUMNS}


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
