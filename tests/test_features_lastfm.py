"""Stage tests of the Last.fm 1K feature job (musicrec/features/lastfm/) on tiny inline data.

The fused clean + sessionize pass the job runs (``sessionize.with_play_levels``) is checked row for row against the
plain stage chain of tests/lastfm_oracle.py on the same inline rows; the oracle's stages are pinned by their own
expected frames.
"""

from __future__ import annotations

import datetime as dt
import functools

import lastfm_oracle as O
import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from musicrec.columns import SPLITS
from musicrec.config import ConfigError, as_dict, load_config
from musicrec.features.lastfm import holdout as H
from musicrec.features.lastfm import parse as P
from musicrec.features.lastfm import sequences as Q
from musicrec.features.lastfm import sessionize as S
from musicrec.features.lastfm import tags as T
from musicrec.features.lastfm.config import WindowConfig, resolve_config
from musicrec.features.vocab import VOCAB_SCHEMA

PLAYS_DDL = "user_id string, timestamp timestamp, artist_id string, artist_name string, track_id string, track_name string"
T0 = dt.datetime(2009, 1, 1, 12, 0, 0)


def at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def plays(spark, rows):
    """rows: (user, seconds after T0 or None, track_id, track_name) -> a plays DataFrame."""
    data = [(u, at(s) if s is not None else None, "a1", "Artist", t, n) for u, s, t, n in rows]
    return spark.createDataFrame(data, PLAYS_DDL)


def assert_fused_pass_matches_oracle(plays_df, **settings):
    """The job's fused pass and the oracle chain give the same plays (same rows, session ids and positions), the
    same rows at every stage and the same session counts before and after the user filter. ``settings``: those of
    ``lastfm_oracle.SETTINGS``. A play without a timestamp is a rejected line, as ``with_parsed_plays`` makes it."""
    settings = {**O.SETTINGS, **settings}
    parsed_df = plays_df.withColumn("reason", F.when(F.col("timestamp").isNull(), F.lit("unparseable timestamp")))
    levels_df = parsed_df.transform(S.with_play_levels, partitions=2, **settings)
    oracle = O.oracle_stages(parsed_df, **settings)
    assert_df_equality(S.kept_plays(levels_df), oracle["plays"], ignore_row_order=True, ignore_nullable=True)

    sessions_df = oracle["deduplicated"].transform(O.with_sessions, settings["gap_seconds"])
    counted = {**oracle, "sessions_before_user_filter": sessions_df.where("position = 0"),
               "sessions": oracle["plays"].where("position = 0")}
    union_df = functools.reduce(DataFrame.unionByName, [df.select(F.lit(k).alias("k")) for k, df in counted.items()])
    oracle_rows = {row["k"]: row["count"] for row in union_df.groupBy("k").count().collect()}  # one job
    per_level = S.level_summary(levels_df)
    for name, level in S.STAGE_LEVELS:
        rows = sum(n for lv, (n, _) in per_level.items() if lv >= level)
        assert rows == oracle_rows.get(name, 0), f"rows after stage {name}"
    counts = S.stage_counts(per_level, drop_untracked=settings["drop_untracked"])
    for name in ("sessions_before_user_filter", "sessions"):
        assert counts[name] == oracle_rows.get(name, 0), name


# --------------------------------------------------------------------------------------------------------------
# Config (no Spark)
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_resolve_config_defaults_and_errors():
    cfg = resolve_config({"sessions": {"gap_seconds": 1800}, "window": {"start": "2008-01-01"}})
    assert as_dict(cfg)["sessions"] == {"gap_seconds": 1800, "min_sessions_per_user": 6}
    assert cfg.window.start == "2008-01-01T00:00:00Z"
    assert resolve_config({"window": {"end": dt.date(2008, 2, 1)}}).window.end == "2008-02-01T00:00:00Z"
    assert resolve_config(None).tags.top_k == 5
    for bad, message in [
        ({"sessionz": {}}, "unknown section 'sessionz'"),
        ({"sessions": {"gap": 1}}, "unknown key sessions.gap"),
        ({"sessions": {"gap_seconds": -1}}, "sessions.gap_seconds = -1: must be an integer >= 0"),
        ({"window": {"first_months": 2, "last_months": 3}}, "cannot both be set"),
        ({"window": {"start": "yesterday"}}, "window.start = 'yesterday': must be a date"),
        ({"split": {"valid_fraction": 0.5, "test_fraction": 0.5}}, "sum to less than 1"),
        ({"tags": {"top_k": 0}}, "tags.top_k"),
        ({"split": {"protocol": "random"}}, "split.protocol = 'random': must be one of"),
        ({"clean": {"drop_untracked": "yes"}}, "clean.drop_untracked: expected true or false"),
    ]:
        with pytest.raises(ConfigError, match=message):
            resolve_config(bad)


@pytest.mark.unit
def test_resolved_config_as_recorded_in_the_manifest():
    """The manifest records ``as_dict`` of the resolved config (its fingerprint hashes it): every section and key,
    with the shipped conf/lastfm.yaml giving exactly the defaults."""
    defaults = {
        "input": {"plays_file": "userid-timestamp-artid-artname-traid-traname.tsv", "tags_file": "track-tags.tsv"},
        "clean": {"drop_untracked": True, "drop_duplicates": True, "max_rejected_fraction": 0.01},
        "window": {"start": None, "end": None, "first_months": None, "last_months": None},
        "sessions": {"gap_seconds": 1200, "min_sessions_per_user": 6},
        "tags": {"required": False, "top_k": 5, "drop_untagged": True, "lowercase": True, "min_tag_weight": 0},
        "vocab": {"user_min_count": 1, "song_min_count": 1, "artist_min_count": 1, "tag_min_count": 1},
        "sequences": {"min_length": 2, "max_length": 50},
        "split": {"protocol": "global_time", "valid_fraction": 0.1, "test_fraction": 0.1},
        "stats": {"column_stats": True},
        "spark": {"partitions": 8},
    }
    assert as_dict(resolve_config(None)) == defaults
    assert as_dict(resolve_config(load_config(None, default_name="lastfm"))) == defaults


@pytest.mark.unit
def test_window_bounds_months_and_start_end():
    assert WindowConfig().bounds(T0, T0) == (None, None)
    first = dt.datetime(2008, 1, 31, 10, 0, 0)
    last = dt.datetime(2009, 3, 31, 23, 0, 0)
    assert WindowConfig(first_months=1).bounds(first, last) == (None, dt.datetime(2008, 2, 29, 10, 0, 0))
    assert WindowConfig(last_months=1).bounds(first, last) == (dt.datetime(2009, 2, 28, 23, 0, 0), None)
    assert WindowConfig(start="2008-06-01", end="2008-07-01T00:00:00Z").bounds(first, last) == (
        dt.datetime(2008, 6, 1), dt.datetime(2008, 7, 1)
    )
    # months inside an explicit window: the tighter bound wins
    assert WindowConfig(end="2008-02-10", first_months=6).bounds(first, last)[1] == dt.datetime(2008, 2, 10)


# --------------------------------------------------------------------------------------------------------------
# 1. Read
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.spark
def test_with_parsed_plays_fields_nulls_and_rejects(spark):
    lines = [
        ("user_000001\t2009-05-04T23:08:57Z\tf1b1\tDeep Dish\t\tFuck Me Im \"Famous\"",),
        ("user_000001\t2009-05-04T23:08:57Z\tf1b1\tDeep Dish\ttr1",),  # 5 fields
        ("user_000001\t2009-05-04T23:08:57Z\t\t\t\t\t",),  # 7 fields
        ("user_000001\t2009-05-04 23:08:57\ta\tb\tc\td",),  # not the Last.fm format
        ("\t2009-05-04T23:08:57Z\ta\tb\tc\td",),  # no user
        ("",),  # blank line
        (None,),
    ]
    lines_df = spark.createDataFrame(lines, "value string")
    result = lines_df.transform(P.with_parsed_plays).select(*P.RAW_COLUMNS, "reason")
    expected = spark.createDataFrame(
        [
            ("user_000001", dt.datetime(2009, 5, 4, 23, 8, 57), "f1b1", "Deep Dish", None, 'Fuck Me Im "Famous"', None),
            ("user_000001", dt.datetime(2009, 5, 4, 23, 8, 57), "f1b1", "Deep Dish", "tr1", None,
             "wrong number of fields (expected 6 tab-separated)"),
            ("user_000001", dt.datetime(2009, 5, 4, 23, 8, 57), None, None, None, None,
             "wrong number of fields (expected 6 tab-separated)"),
            ("user_000001", None, "a", "b", "c", "d", "unparseable timestamp (expected yyyy-MM-ddTHH:mm:ssZ)"),
            (None, dt.datetime(2009, 5, 4, 23, 8, 57), "a", "b", "c", "d", "missing user id"),
            (None, None, None, None, None, None, "wrong number of fields (expected 6 tab-separated)"),
            (None, None, None, None, None, None, "wrong number of fields (expected 6 tab-separated)"),
        ],
        PLAYS_DDL + ", reason string",
    )
    assert_df_equality(result, expected, ignore_nullable=True)
    raws = [r["raw"] for r in lines_df.transform(P.with_parsed_plays).collect()]
    assert raws[0] is None and raws[1].endswith("\ttr1")  # raw kept for bad rows only


# --------------------------------------------------------------------------------------------------------------
# 2./3. Clean and sessionize: the oracle's stages, and the fused pass against the oracle on the same rows
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.spark
def test_drop_untracked_and_time_window(spark):
    df = plays(spark, [("u1", 0, "t1", "A"), ("u1", 10, None, "B"), ("u1", 20, "t3", "C"), ("u1", None, "t4", "D")])
    assert [r["track_name"] for r in df.transform(O.drop_untracked).collect()] == ["A", "C", "D"]
    windowed = df.transform(O.filter_time_window, at(10), at(20))  # [start, end): 10 in, 20 out, None out
    assert [r["track_name"] for r in windowed.collect()] == ["B"]
    assert df.transform(O.filter_time_window, None, None).count() == 4
    for drop_untracked, start, end in ((True, None, None), (False, at(10), at(20)), (True, at(10), None),
                                       (False, None, at(20))):
        assert_fused_pass_matches_oracle(df, drop_untracked=drop_untracked, start=start, end=end, min_sessions=0)


@pytest.mark.spark
def test_drop_duplicate_plays(spark):
    df = plays(
        spark,
        [
            ("u1", 0, "t1", "A"),
            ("u1", 0, "t1", "A"),  # exact duplicate -> dropped
            ("u1", 0, "t1", "A (remaster)"),  # same user, time and MBID -> duplicate too
            ("u1", 0, "t2", "B"),  # same time, other track -> kept
            ("u2", 0, "t1", "A"),  # other user -> kept
            ("u1", 5, None, "C"),
            ("u1", 5, None, "C"),  # untracked duplicate (same names) -> dropped
            ("u1", 5, None, "D"),  # untracked, other name -> kept
            ("u1", 9, "t1", "A"),  # same track later -> kept
        ],
    )
    result = df.transform(O.drop_duplicate_plays).select("user_id", "timestamp", "track_id", "track_name")
    expected = spark.createDataFrame(
        [("u1", at(0), "t1", "A"), ("u1", at(0), "t2", "B"), ("u2", at(0), "t1", "A"), ("u1", at(5), None, "C"),
         ("u1", at(5), None, "D"), ("u1", at(9), "t1", "A")],
        "user_id string, timestamp timestamp, track_id string, track_name string",
    )
    assert_df_equality(result, expected, ignore_row_order=True, ignore_nullable=True)
    for drop_untracked, drop_duplicates in ((True, True), (False, True), (False, False)):
        assert_fused_pass_matches_oracle(df, drop_untracked=drop_untracked, drop_duplicates=drop_duplicates,
                                         min_sessions=0)


@pytest.mark.spark
def test_with_sessions_gap_boundary_ties_and_positions(spark):
    df = plays(
        spark,
        [
            ("u1", 0, "t2", "B"),
            ("u1", 0, "t1", "A"),  # tie at t=0: ordered by track id -> t1 first
            ("u1", 1200, "t3", "C"),  # exactly 1200 s -> same session
            ("u1", 2401, "t4", "D"),  # 1201 s -> new session
            ("u1", 2401, None, "E"),  # tie, untracked (null track id sorts first)
            ("u2", 5000, "t1", "A"),
            ("u2", 9999, "t1", "A"),
        ],
    )
    result = df.transform(O.with_sessions, 1200).select("user_id", "track_name", "session_seq", "position")
    expected = spark.createDataFrame(
        [("u1", "A", 1, 0), ("u1", "B", 1, 1), ("u1", "C", 1, 2), ("u1", "E", 2, 0), ("u1", "D", 2, 1),
         ("u2", "A", 1, 0), ("u2", "A", 2, 0)],
        "user_id string, track_name string, session_seq int, position int",
    )
    assert_df_equality(result, expected, ignore_row_order=True, ignore_nullable=True)
    # the gap is configurable
    wider = df.transform(O.with_sessions, 1201).where(F.col("user_id") == "u1")
    assert {r["session_seq"] for r in wider.collect()} == {1}
    for gap_seconds in (1200, 1201):
        assert_fused_pass_matches_oracle(df, drop_untracked=False, gap_seconds=gap_seconds, min_sessions=0)
    assert_fused_pass_matches_oracle(df, gap_seconds=0, min_sessions=2)


@pytest.mark.spark
def test_with_session_flags_one_pass_with_ineligible_rows_and_duplicates(spark):
    """The job's single window pass: ineligible rows sort last and are skipped, duplicates are flagged and not
    counted in positions, every row knows its user's session count; ``with_level`` labels the stages."""
    rows = [
        ("u1", 0, "t1", "A", True), ("u1", 0, "t1", "A", True),  # duplicate
        ("u1", 100, "t2", "B", True),
        ("u1", 50, None, "X", False),  # untracked, between A and B in time: must not split anything
        ("u1", 1400, "t3", "C", True),  # 1300 s after B -> session 2
        ("u1", 1400, "t3", "C", True),  # duplicate
        ("u1", 2600, "t4", "D", True),  # exactly 1200 s after C -> same session
        ("u2", 0, None, None, False),  # a user with no eligible play at all
    ]
    df = spark.createDataFrame(
        [(u, at(s), "a1", "Artist", t, n, e) for u, s, t, n, e in rows],
        PLAYS_DDL + ", is_eligible boolean",
    ).withColumn("reason", F.lit(None).cast("string"))
    flagged = df.transform(S.with_session_flags, 1200, eligible_col="is_eligible").transform(
        S.with_level, 2, drop_untracked=True
    )
    result = flagged.select("user_id", "track_name", "is_duplicate", "session_seq", "position", "user_sessions", "level")
    expected = spark.createDataFrame(
        [
            ("u1", "A", False, 1, 0, 2, 5), ("u1", "A", True, None, None, 2, 3), ("u1", "B", False, 1, 1, 2, 5),
            ("u1", "X", False, None, None, 2, 1), ("u1", "C", False, 2, 0, 2, 5), ("u1", "C", True, None, None, 2, 3),
            ("u1", "D", False, 2, 1, 2, 5), ("u2", None, False, None, None, 0, 1),
        ],
        "user_id string, track_name string, is_duplicate boolean, session_seq int, position int, user_sessions int, level int",
    )
    assert_df_equality(result, expected, ignore_row_order=True, ignore_nullable=True)
    # the same plays through the oracle's stages give the same sessions
    staged = (
        df.where("is_eligible").drop("is_eligible", "reason").transform(O.drop_duplicate_plays)
        .transform(O.with_sessions, 1200).select("track_name", "session_seq", "position")
    )
    from_flags = result.where("level = 5").select("track_name", "session_seq", "position")
    assert_df_equality(staged, from_flags, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.spark
def test_filter_users_by_sessions_keeps_exactly_six(spark):
    rows = [("six", i * 10_000, "t1", "A") for i in range(6)] + [("five", i * 10_000, "t1", "A") for i in range(5)]
    rows += [("five", 4 * 10_000 + 60, "t2", "B")]  # a second play in the 5th session is not a 6th session
    df = plays(spark, rows).transform(O.with_sessions, 1200)
    kept = df.transform(O.filter_users_by_sessions, 6)
    assert {r["user_id"] for r in kept.collect()} == {"six"} and kept.count() == 6
    assert df.transform(O.filter_users_by_sessions, 5).select("user_id").distinct().count() == 2
    for min_sessions in (5, 6):
        assert_fused_pass_matches_oracle(plays(spark, rows), min_sessions=min_sessions)


@pytest.mark.spark
def test_with_session_id_unique_and_deterministic(spark):
    df = plays(spark, [("ub", 0, "t1", "A"), ("ub", 5000, "t1", "A"), ("ua", 0, "t1", "A")]).transform(
        O.with_sessions, 1200
    )
    ranks_df = S.user_ranks(df)
    result = df.transform(S.with_session_id, ranks_df).select("user_id", "session_seq", "session_id")
    expected = spark.createDataFrame(
        [("ua", 1, (1 << 32) + 1), ("ub", 1, (2 << 32) + 1), ("ub", 2, (2 << 32) + 2)],
        "user_id string, session_seq int, session_id long",
    )
    assert_df_equality(result, expected, ignore_row_order=True, ignore_nullable=True)
    assert_df_equality(df.transform(O.with_session_id).select("user_id", "session_seq", "session_id"), expected,
                       ignore_row_order=True, ignore_nullable=True)


@pytest.mark.spark
def test_fused_pass_matches_oracle_on_mixed_plays(spark):
    """Rejected lines, untracked plays, duplicates (tracked and untracked, also with null names), ties, a time
    window and the user filter together, under several settings: the fused pass and the oracle agree."""
    rows = [
        ("u1", 0, "t1", "A"), ("u1", 0, "t1", "A"), ("u1", 0, "t1", "A (live)"), ("u1", 0, None, "A"),
        ("u1", 30, None, None), ("u1", 30, None, None), ("u1", 60, "t2", "B"), ("u1", None, "t3", "bad line"),
        ("u1", 1300, "t2", "B"), ("u1", 2600, "t3", "C"), ("u1", 2600, None, "C"), ("u1", 9000, "t4", "D"),
        ("u2", 100, "t1", "A"), ("u2", 100, "t1", "A"), ("u2", 5000, None, "X"), ("u2", 9000, "t5", "E"),
        ("u3", 7000, None, "Y"), ("u3", 7000, None, "Y"),
    ]
    df = plays(spark, rows)
    for settings in (
        {"min_sessions": 3}, {"drop_untracked": False, "min_sessions": 2},
        {"drop_duplicates": False, "start": at(30), "end": at(9000), "min_sessions": 1},
        {"drop_untracked": False, "drop_duplicates": False, "gap_seconds": 0, "min_sessions": 0},
    ):
        assert_fused_pass_matches_oracle(df, **settings)


# --------------------------------------------------------------------------------------------------------------
# 4. Tags
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.spark
def test_with_parsed_tags_and_rejects(spark):
    header = ["traid", "tag", "count"]
    lines_df = spark.createDataFrame(
        [("traid\ttag\tcount",), ("t1\t Rock \t100",), ("t1\tpop\tlots",), ("t2\t\t5",), ("t3\tjazz",), (None,)],
        "value string",
    )
    result = lines_df.transform(P.with_parsed_tags, header).select("traid", "tag", "count", "reason")
    expected = spark.createDataFrame(
        [("t1", "rock", 100, None), ("t1", "pop", None, "count is not an integer"), ("t2", None, 5, "missing tag"),
         ("t3", "jazz", None, "wrong number of fields (expected 3 tab-separated)")],
        "traid string, tag string, count int, reason string",
    )
    assert_df_equality(result, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.spark
def test_with_top_tags_k_ties_duplicates_and_min_weight(spark):
    tags_df = spark.createDataFrame(
        [("t1", "rock", 100), ("t1", "pop", 50), ("t1", "indie", 50), ("t1", "jazz", 10), ("t1", "pop", 90),
         ("t2", "metal", 3), ("t2", "80s", 1), ("t3", "x", None)],
        "traid string, tag string, count int",
    )
    result = tags_df.transform(T.with_top_tags, 3)
    expected = spark.createDataFrame(
        [("t1", ["rock", "pop", "indie"]), ("t2", ["metal", "80s"])], "track_id string, tags array<string>"
    )
    assert_df_equality(result, expected, ignore_row_order=True, ignore_nullable=True)
    heavy = tags_df.transform(T.with_top_tags, 3, min_weight=3)
    assert {r["track_id"]: r["tags"] for r in heavy.collect()} == {"t1": ["rock", "pop", "indie"], "t2": ["metal"]}


@pytest.mark.spark
def test_apply_tag_policy_drop_or_keep(spark):
    df = plays(spark, [("u1", 0, "t1", "A"), ("u1", 10, "t2", "B"), ("u1", 20, None, "C")])
    song_tags_df = spark.createDataFrame([("t1", ["rock"])], "track_id string, tags array<string>")
    dropped = df.transform(T.apply_tag_policy, song_tags_df, drop_untagged=True)
    assert [r["track_name"] for r in dropped.collect()] == ["A"]
    assert df.transform(T.apply_tag_policy, song_tags_df, drop_untagged=False).count() == 3


# --------------------------------------------------------------------------------------------------------------
# 5./6. Vocab lookups, sequences and splits
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.spark
def test_build_song_lookup_pads_and_oov_tags(spark):
    song_vocab_df = spark.createDataFrame([("t1", 2, 9), ("t2", 3, 5), ("t3", 4, 1)], VOCAB_SCHEMA)
    tag_vocab_df = spark.createDataFrame([("rock", 2, 3), ("pop", 3, 1)], VOCAB_SCHEMA)
    song_tags_df = spark.createDataFrame(
        [("t1", ["pop", "rock", "rare"]), ("t2", ["rock"]), ("t9", ["pop"])], "track_id string, tags array<string>"
    )
    result = T.build_song_lookup(song_vocab_df, song_tags_df, tag_vocab_df, 4)
    expected = spark.createDataFrame(
        [("t1", 2, [3, 2, 1, 0]), ("t2", 3, [2, 0, 0, 0]), ("t3", 4, [0, 0, 0, 0])],
        "track_id string, song_idx int, tags array<int>",
    )
    assert_df_equality(result, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.spark
def test_build_sessions_order_cut_min_length_and_tags(spark):
    seq_df = spark.createDataFrame(
        [
            ("u1", 10, 2, at(20), "t3"), ("u1", 10, 0, at(0), "t1"), ("u1", 10, 1, at(10), "t2"),  # 3 plays
            ("u1", 11, 0, at(5000), "t1"),  # 1 play -> dropped (min_length 2)
            ("u2", 20, 0, at(100), "t2"), ("u2", 20, 1, at(110), "t9"),  # t9 not in the vocab -> OOV 1
        ],
        "user_id string, session_id long, position int, timestamp timestamp, track_id string",
    )
    lookup_df = spark.createDataFrame(
        [("t1", 2, [5, 0]), ("t2", 3, [6, 5]), ("t3", 4, [0, 0])], "track_id string, song_idx int, tags array<int>"
    )
    user_vocab_df = spark.createDataFrame([("u1", 2, 4), ("u2", 3, 2)], VOCAB_SCHEMA)
    result = Q.build_sessions(seq_df, lookup_df, user_vocab_df, min_length=2, max_length=2, top_k=2)
    expected = spark.createDataFrame(
        [(10, 2, at(0), [2, 3], [5, 0, 6, 5], 2), (20, 3, at(100), [3, 1], [6, 5, 0, 0], 2)],
        "session_id long, user_idx int, start_ts timestamp, songs array<int>, song_tags array<int>, length int",
    )
    assert_df_equality(result, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.spark
def test_split_by_time_every_test_session_starts_after_every_train_session(spark):
    # 20 sessions; starts 0..18 once each, and two sessions share the start at the 80% boundary
    starts = list(range(19)) + [16]
    sessions_df = spark.createDataFrame(
        [(i, at(s * 3600)) for i, s in enumerate(starts)], "session_id long, start_ts timestamp"
    )
    valid_start, test_start = Q.split_cutoffs(sessions_df, 0.1, 0.1)
    split_df = sessions_df.transform(Q.with_split, valid_start, test_start)
    rows = split_df.collect()
    by_split = {s: [r["start_ts"] for r in rows if r["split"] == s] for s in SPLITS}
    assert all(by_split.values())
    assert max(by_split["train"]) < min(by_split["valid"]) <= max(by_split["valid"]) < min(by_split["test"])
    boundary = [r["split"] for r in rows if r["start_ts"] == at(16 * 3600)]
    assert len(set(boundary)) == 1  # ties at a boundary stay together
    assert len(by_split["train"]) in (15, 16, 17)
    # no valid split: train directly before test
    v, t = Q.split_cutoffs(sessions_df, 0.0, 0.25)
    only = sessions_df.transform(Q.with_split, v, t, has_valid=False).collect()
    assert {r["split"] for r in only} == {"train", "test"}
    assert max(r["start_ts"] for r in only if r["split"] == "train") < min(
        r["start_ts"] for r in only if r["split"] == "test"
    )
    # None case: no sessions at all
    assert Q.split_cutoffs(sessions_df.limit(0), 0.1, 0.1) == (None, None)


@pytest.mark.spark
def test_first_last_eligible_for_month_windows(spark, tmp_path):
    """window.first_months / last_months are counted from the first / last eligible play (untracked ones and
    rejected lines do not count)."""
    path = tmp_path / "plays.tsv"
    path.write_text(
        "u1\t2008-01-31T10:00:00Z\ta\tA\t\tuntracked, earlier\n"
        "u1\t2008-02-01T00:00:00Z\ta\tA\tt1\tfirst tracked\n"
        "u1\tnot a time\ta\tA\tt1\trejected\n"
        "u2\t2008-05-20T12:00:00Z\ta\tA\tt2\tlast tracked\n"
        "u2\t2008-06-01T00:00:00Z\ta\tA\t\tuntracked, later\n",
        encoding="utf-8",
    )
    cfg = resolve_config({"window": {"first_months": 1}})
    first, last = S.first_last_eligible(P.read_plays(spark, path), drop_untracked=cfg.clean.drop_untracked,
                                        start=None, end=None)
    assert (first, last) == (dt.datetime(2008, 2, 1), dt.datetime(2008, 5, 20, 12))
    assert cfg.window.bounds(first, last) == (None, dt.datetime(2008, 3, 1))
    keep_all = resolve_config({"clean": {"drop_untracked": False}, "window": {"last_months": 1}})
    first, last = S.first_last_eligible(P.read_plays(spark, path), drop_untracked=keep_all.clean.drop_untracked,
                                        start=None, end=None)
    assert (first, last) == (dt.datetime(2008, 1, 31, 10), dt.datetime(2008, 6, 1))
    assert keep_all.window.bounds(first, last) == (dt.datetime(2008, 5, 1), None)


# --------------------------------------------------------------------------------------------------------------
# The per-user leave-one-out split (split.protocol: leave_one_out)
# --------------------------------------------------------------------------------------------------------------
SEQ_PLAYS_DDL = "user_id string, session_id long, position int, timestamp timestamp, track_id string"
ROWS_DDL = ("session_id long, user_idx int, start_ts timestamp, songs array<int>, song_tags array<int>, length int, "
            "split string")


def sid(user_rank: int, n: int) -> int:
    """The session id of session ``n`` of the user of rank ``user_rank`` (sessionize.with_session_id)."""
    return user_rank * 2**32 + n


@pytest.mark.spark
def test_leave_one_out_latest_play_is_test_the_one_before_valid(spark):
    seq_df = spark.createDataFrame(
        [
            # u1: 3 sessions; t6 (session 3) is the latest play, t5 (session 2) the one before
            ("u1", sid(1, 1), 0, at(0), "t1"), ("u1", sid(1, 1), 1, at(10), "t2"), ("u1", sid(1, 1), 2, at(20), "t3"),
            ("u1", sid(1, 2), 0, at(5000), "t4"), ("u1", sid(1, 2), 1, at(5010), "t5"),
            ("u1", sid(1, 3), 0, at(9000), "t6"),
            # u2: 2 plays: nothing to evaluate, all train
            ("u2", sid(2, 1), 0, at(100), "t1"), ("u2", sid(2, 1), 1, at(110), "t2"),
            # u3: the latest play is out of the vocabulary (t9): the latest real one (t4) is test; t9 goes nowhere
            ("u3", sid(3, 1), 0, at(0), "t1"), ("u3", sid(3, 1), 1, at(10), "t2"), ("u3", sid(3, 1), 2, at(20), "t3"),
            ("u3", sid(3, 1), 3, at(30), "t4"), ("u3", sid(3, 1), 4, at(40), "t9"),
        ],
        SEQ_PLAYS_DDL,
    )
    lookup_df = spark.createDataFrame(
        [(f"t{i}", i + 1, [i + 10]) for i in range(1, 7)], "track_id string, song_idx int, tags array<int>"
    )
    user_vocab_df = spark.createDataFrame([("u1", 2, 6), ("u2", 3, 2), ("u3", 4, 5)], VOCAB_SCHEMA)
    result = H.loo_session_rows(seq_df, lookup_df, user_vocab_df, min_length=2, max_length=50, top_k=1)
    valid_n, test_n = H.HELD_OUT_SEQ["valid"], H.HELD_OUT_SEQ["test"]
    expected = spark.createDataFrame(
        [
            (sid(1, 1), 2, at(0), [2, 3, 4], [11, 12, 13], 3, "train"),  # u1's session 2 keeps t4 only: too short
            (sid(1, valid_n), 2, at(5000), [5, 6], [14, 15], 2, "valid"),
            (sid(1, test_n), 2, at(5010), [6, 7], [15, 16], 2, "test"),
            (sid(2, 1), 3, at(100), [2, 3], [11, 12], 2, "train"),
            (sid(3, 1), 4, at(0), [2, 3], [11, 12], 2, "train"),
            (sid(3, valid_n), 4, at(10), [3, 4], [12, 13], 2, "valid"),
            (sid(3, test_n), 4, at(20), [4, 5], [13, 14], 2, "test"),
        ],
        ROWS_DDL,
    )
    assert_df_equality(result, expected, ignore_row_order=True, ignore_nullable=True)
    # max_length 2: u1's train plays t1 t2 t3 | t4 are rows [t1 t2], [t3] (too short), [t4] (too short), numbered
    # 1, 2, 3 in time order; with min_length 1 every train play stays
    cut = H.loo_session_rows(seq_df.where("user_id = 'u1'"), lookup_df, user_vocab_df, min_length=1, max_length=2,
                             top_k=1).where("split = 'train'").select("session_id", "songs")
    assert sorted(map(tuple, cut.collect())) == [(sid(1, 1), [2, 3]), (sid(1, 2), [4]), (sid(1, 3), [5])]


@pytest.mark.spark
def test_leave_one_out_nothing_leaks_on_random_histories(spark):
    """On random histories (every play a distinct song, so a song names its play): per user the train rows, in
    id order, are exactly the history minus its last two plays (no held-out play in train, no future play in a
    train prefix; sessions longer than max_length=3 cut into rows, none lost), the valid row is [3rd latest, 2nd
    latest] and the test row [2nd latest, latest]."""
    import random

    rnd = random.Random(5)
    rows, history, song = [], {}, 0
    for user in range(1, 9):
        t, n, pos = 0, 1, 0
        for _ in range(rnd.randint(1, 12)):
            gap = rnd.choice([5, 10, 3000])  # 3000 s: a new session
            t += gap
            if gap == 3000 and pos:
                n, pos = n + 1, 0
            song += 1
            rows.append((f"u{user}", sid(user, n), pos, at(t), f"t{song}"))
            history.setdefault(user, []).append(song + 1)
            pos += 1
    seq_df = spark.createDataFrame(rows, SEQ_PLAYS_DDL)
    lookup_df = spark.createDataFrame([(f"t{i}", i + 1, [0]) for i in range(1, song + 1)],
                                      "track_id string, song_idx int, tags array<int>")
    user_vocab_df = spark.createDataFrame([(f"u{u}", u + 1, 1) for u in history], VOCAB_SCHEMA)
    result = H.loo_session_rows(seq_df, lookup_df, user_vocab_df, min_length=1, max_length=3, top_k=1).collect()
    for user, songs in history.items():
        mine = sorted((r for r in result if r["user_idx"] == user + 1), key=lambda r: r["session_id"])
        by_split = {s: [r["songs"] for r in mine if r["split"] == s] for s in SPLITS}
        evaluated = len(songs) >= 3
        train = [x for r in by_split["train"] for x in r]
        assert train == (songs[:-2] if evaluated else songs), f"user {user}"
        assert by_split["valid"] == ([songs[-3:-1]] if evaluated else [])
        assert by_split["test"] == ([songs[-2:]] if evaluated else [])
    assert len({r["session_id"] for r in result}) == len(result)  # ids unique over the splits
    assert {len(songs) >= 3 for songs in history.values()} == {True, False}  # both kinds of user were there
    plays_per_session = {}
    for user_id, session_id, *_ in rows:
        plays_per_session[session_id] = plays_per_session.get(session_id, 0) + 1
    assert max(plays_per_session.values()) > 3  # some session was cut
