"""Tests of the stages both feature jobs share: rejected rows (features/rejects.py), vocabularies
(features/vocab.py), the stats report (features/stats.py) and steps run side by side (features/progress.py), on
tiny inline DataFrames."""

from __future__ import annotations

import json
import threading
import time

import pyarrow.parquet as pq
import pytest
from chispa import assert_df_equality
from pyspark.sql import Window
from pyspark.sql import functions as F

from musicrec.features.progress import StepTimer, concurrently
from musicrec.features.ranks import running_offsets, value_ranks
from musicrec.features.rejects import (
    BLOCK_COL, REJECTED_SCHEMA, ROW_ID_COL, blank_lines, read_text_lines, reject_reason, split_line_counts,
    with_blank_lines_shift, with_line_numbers, write_rejected,
)
from musicrec.features.stats import StatsReport, column_stats, column_stats_by_level
from musicrec.features.vocab import (
    VOCAB_SCHEMA, build_vocabs, named_vocab, vocab_of, with_index, with_indices, write_vocabs,
)
from musicrec.io import AtomicOutput, parquet_rows, write_manifest

VOCABS_DDL = "vocab string, token string, index int, count long"


def _write_manifest(out: AtomicOutput) -> dict:
    return write_manifest(out, dataset="lastfm", config={}, inputs={}, row_counts={}, vocab_sizes={},
                          features={"categorical": {}, "multi_valued": {}, "numeric": [], "target": None})


# --------------------------------------------------------------------------------------------------------------
# Rejected rows
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.spark
def test_reject_reason_is_the_first_failing_check_and_null_fails(spark):
    df = spark.createDataFrame([(1, "a"), (-1, "b"), (-2, None), (None, "d"), (5, None)], "x int, s string")
    checks = [(F.col("x") > 0, "x not positive"), (F.col("s").isNotNull(), "s missing")]
    result = df.withColumn("reason", reject_reason(checks))
    expected = spark.createDataFrame(
        [(1, "a", None), (-1, "b", "x not positive"), (-2, None, "x not positive"), (None, "d", "x not positive"),
         (5, None, "s missing")],
        "x int, s string, reason string",
    )
    assert_df_equality(result, expected, ignore_row_order=True, ignore_nullable=True)
    assert df.withColumn("reason", reject_reason([])).where("reason is not null").count() == 0


@pytest.mark.spark
def test_write_rejected_layout_and_count(spark, tmp_path):
    bad_df = spark.createDataFrame(
        [("a\tb", 3, "wrong number of fields"), ("x", None, "unparseable timestamp")], "raw string, ln int, reason string"
    )
    with AtomicOutput(tmp_path / "out") as out:
        assert write_rejected(bad_df, "plays.tsv", "raw", "ln", out) == 2
        assert write_rejected(bad_df.limit(0), "empty.tsv", "raw", None, out) == 0
        _write_manifest(out)
    written_df = spark.read.parquet(str(tmp_path / "out" / "rejected" / "plays.tsv"))
    assert written_df.schema == REJECTED_SCHEMA
    expected = spark.createDataFrame(
        [("plays.tsv", None, "unparseable timestamp", "x"), ("plays.tsv", 3, "wrong number of fields", "a\tb")],
        REJECTED_SCHEMA,
    )
    assert_df_equality(written_df, expected, ignore_row_order=True, ignore_nullable=True)
    empty_df = spark.read.parquet(str(tmp_path / "out" / "rejected" / "empty.tsv"))
    assert empty_df.count() == 0 and empty_df.columns == ["file", "line", "reason", "raw"]


@pytest.fixture
def small_splits(spark):
    """Text files read in splits of about 64 bytes (several splits, so offsets between splits matter)."""
    keys = ("spark.sql.files.maxPartitionBytes", "spark.sql.files.openCostInBytes")
    previous = {key: spark.conf.get(key) for key in keys}
    for key in keys:
        spark.conf.set(key, "64")
    yield
    for key, value in previous.items():
        spark.conf.set(key, value)


def _text_with_blank_lines(path):
    """40 lines, every 3rd and the 7th to 9th blank (spaces, a tab or nothing): (physical lines, text)."""
    lines = ["" if i % 3 == 0 else ("\t" if i in (7, 8) else f"line {i:02d} " + "x" * (i % 5)) for i in range(1, 41)]
    lines[8] = "  "
    path.write_text("\n".join(lines) + "\n")
    return lines


@pytest.mark.spark
def test_line_numbers_blank_lines_and_shift_across_splits(spark, tmp_path, small_splits):
    path = tmp_path / "lines.txt"
    lines = _text_with_blank_lines(path)
    assert len(split_line_counts(spark, path)) > 3  # really several splits
    numbered = with_line_numbers(read_text_lines(spark, path), spark, path).select("value", "line").collect()
    assert sorted((r["line"], r["value"]) for r in numbered) == list(enumerate(lines, start=1))
    blank = [i for i, line in enumerate(lines, start=1) if line.strip() == ""]
    expected_blanks = [(line_no - k, k) for k, line_no in enumerate(blank, start=1)]
    blanks_df = blank_lines(spark, path)
    assert sorted((r["_nonblank_before"], r["_blank_no"]) for r in blanks_df.collect()) == expected_blanks
    # rank among the non-blank lines -> physical line, with buckets of 4 ranks (several of them, some without blanks)
    nonblank = [i for i, line in enumerate(lines, start=1) if line.strip() != ""]
    ranks_df = spark.createDataFrame([(k,) for k in range(1, len(nonblank) + 1)], "rank long")
    for bits in (2, 20):
        shifted = ranks_df.transform(with_blank_lines_shift, blanks_df, "rank", "line", bucket_bits=bits).collect()
        assert sorted((r["rank"], r["line"]) for r in shifted) == list(enumerate(nonblank, start=1))


@pytest.mark.spark
def test_with_line_numbers_keeps_null_for_rows_without_block(spark, tmp_path):
    path = tmp_path / "two.txt"
    path.write_text("a\nb\n")
    df = read_text_lines(spark, path).select("value", F.when(F.col("value") == "b", F.col(BLOCK_COL)).alias(BLOCK_COL),
                                             ROW_ID_COL)
    result = {r["value"]: r["line"] for r in with_line_numbers(df, spark, path).collect()}
    assert result == {"a": None, "b": 2}


# --------------------------------------------------------------------------------------------------------------
# Ranks
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.spark
def test_value_ranks_equal_the_single_partition_window_ranks(spark):
    values = [f"u{(i * 37) % 101:03d}" for i in range(400)] + [None, "U", "é", "u", ""]
    df = spark.createDataFrame([(v,) for v in values], "user_id string").repartition(7)
    oracle_df = df.select("user_id").distinct().select(
        "user_id", F.row_number().over(Window.orderBy("user_id")).alias("user_rank"))
    for partitions in (1, 3, 16):
        result_df = value_ranks(df, "user_id", out_col="user_rank", partitions=partitions)
        assert_df_equality(result_df, oracle_df, ignore_row_order=True, ignore_nullable=True)
    assert value_ranks(df.limit(0), "user_id", out_col="user_rank").collect() == []


@pytest.mark.unit
def test_running_offsets_sum_the_smaller_keys():
    assert running_offsets({30: 5, 10: 2, 20: 0}) == {10: 0, 20: 2, 30: 2}
    assert running_offsets({}) == {}


# --------------------------------------------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.spark
def test_build_vocabs_order_tie_break_min_count_null_and_arrays(spark):
    df = spark.createDataFrame(
        [("b", ["rock", "pop"]), ("a", ["pop", None]), ("c", None), ("b", []), ("a", ["rock"]), ("d", None),
         (None, None), (None, ["pop"])],
        "t string, tags array<string>",
    )
    vocabs_df = build_vocabs(df, {"t": F.array("t"), "tag": F.col("tags")}, min_counts={"t": 1, "tag": 1})
    expected_t = spark.createDataFrame([("a", 2, 2), ("b", 3, 2), ("c", 4, 1), ("d", 5, 1)], VOCAB_SCHEMA)
    expected_tag = spark.createDataFrame([("pop", 2, 3), ("rock", 3, 2)], VOCAB_SCHEMA)
    assert_df_equality(vocab_of(vocabs_df, "t").orderBy("index"), expected_t, ignore_nullable=True)
    assert_df_equality(vocab_of(vocabs_df, "tag").orderBy("index"), expected_tag, ignore_nullable=True)
    cut_df = build_vocabs(df, {"t": F.array("t"), "tag": F.col("tags")}, min_counts={"t": 2, "tag": 3})
    assert [tuple(r) for r in vocab_of(cut_df, "t").orderBy("index").collect()] == [("a", 2, 2), ("b", 3, 2)]
    assert [tuple(r) for r in vocab_of(cut_df, "tag").collect()] == [("pop", 2, 3)]


@pytest.mark.spark
def test_build_vocabs_counts_a_token_shared_by_two_vocabularies_in_each_apart(spark):
    df = spark.createDataFrame([("x", ["x", "y"]), ("y", ["x"]), ("x", None)], "t string, tags array<string>")
    vocabs_df = build_vocabs(df, {"t": F.array("t"), "tag": F.col("tags")}, min_counts={"t": 1, "tag": 2})
    assert sorted(tuple(r) for r in vocabs_df.collect()) == [("t", "x", 2, 2), ("t", "y", 3, 1), ("tag", "x", 2, 2)]


@pytest.mark.spark
def test_weighted_vocabs_on_an_entity_table_equal_counts_on_the_events(spark):
    # the events: one row per play; the song table: one row per song with its plays as the weight
    songs = {"s1": ("3", ["A", "B"]), "s2": ("3", ["B"]), "s3": (None, None), "s4": ("52", ["C", "A"]),
             "s5": ("17", ["D"])}
    plays = {"s1": 3, "s2": 2, "s3": 4, "s4": 1, "s5": 1}
    events_df = spark.createDataFrame(
        [(s, songs[s][0], songs[s][1]) for s, n in plays.items() for _ in range(n)],
        "song_id string, language string, artist_list array<string>",
    )
    song_df = spark.createDataFrame([(s, songs[s][0], songs[s][1], n) for s, n in plays.items()],
                                    "song_id string, language string, artist_list array<string>, plays long")
    tokens = {"song": F.array("song_id"), "language": F.array("language"), "artist": F.col("artist_list")}
    for min_count in (1, 2):
        min_counts = dict.fromkeys(tokens, min_count)
        weighted_df = build_vocabs(song_df, tokens, min_counts=min_counts, weight=F.col("plays"))
        per_event_df = build_vocabs(events_df, tokens, min_counts=min_counts)
        assert_df_equality(weighted_df, per_event_df, ignore_nullable=True, ignore_row_order=True)
    assert {r["token"]: (r["index"], r["count"]) for r in vocab_of(weighted_df, "artist").collect()} == \
        {"B": (2, 5), "A": (3, 4)}


@pytest.mark.spark
def test_with_index_oov_null_and_rare(spark):
    vocab_df = spark.createDataFrame([("a", 2, 5), ("b", 3, 4)], VOCAB_SCHEMA)
    df = spark.createDataFrame([(1, "a"), (2, "b"), (3, "zzz"), (4, None)], "k int, t string")
    expected = spark.createDataFrame([(1, "a", 2), (2, "b", 3), (3, "zzz", 1), (4, None, 1)], "k int, t string, t_idx int")
    assert_df_equality(with_index(df, vocab_df, "t", "t_idx"), expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.spark
def test_with_indices_scalars_and_lists_in_one_lookup(spark):
    vocabs_df = spark.createDataFrame(
        [("song", "s1", 2, 5), ("song", "s2", 3, 4), ("artist", "A", 2, 9), ("artist", "B", 3, 1),
         ("language", "3", 2, 7)],
        VOCABS_DDL,
    )
    df = spark.createDataFrame(
        [("s1", "3", ["B", "A", "Z", "A"]), ("s2", None, None), ("s9", "52", []), ("s3", "3", ["A", None])],
        "song_id string, language string, artist_list array<string>",
    )
    result = df.transform(with_indices, vocabs_df, key_col="song_id",
                          scalars={"song_idx": ("song", "song_id"), "language_idx": ("language", "language")},
                          lists={"artist_idx": ("artist", "artist_list")})
    expected = spark.createDataFrame(
        [("s1", "3", ["B", "A", "Z", "A"], 2, 2, [3, 2, 1, 2]), ("s2", None, None, 3, 1, [1]),
         ("s9", "52", [], 1, 1, [1]), ("s3", "3", ["A", None], 1, 2, [2, 1])],
        "song_id string, language string, artist_list array<string>, song_idx int, language_idx int, "
        "artist_idx array<int>",
    )
    assert_df_equality(result, expected, ignore_nullable=True, ignore_row_order=True)
    # a single vocabulary read back from OUT/vocab/<name>/ serves as a vocabs table through named_vocab
    tags_df = with_indices(df, named_vocab(vocab_of(vocabs_df, "artist"), "artist"), key_col="song_id", scalars={},
                           lists={"artist_idx": ("artist", "artist_list")})
    assert {r["song_id"]: r["artist_idx"] for r in tags_df.collect()}["s1"] == [3, 2, 1, 2]


@pytest.mark.spark
def test_write_vocabs_one_file_per_vocabulary_sorted_and_empty_ones(spark, tmp_path):
    vocabs_df = spark.createDataFrame([("song", "s2", 3, 4), ("song", "s1", 2, 5), ("artist", "A", 2, 9)], VOCABS_DDL)
    with AtomicOutput(tmp_path / "out") as out:
        paths = write_vocabs(vocabs_df, ["song", "artist", "genre"], out)
        _write_manifest(out)
    assert set(paths) == {"song", "artist", "genre"}
    song = pq.read_table(tmp_path / "out" / "vocab" / "song")
    assert song.column_names == ["token", "index", "count"]
    assert song.to_pylist() == [{"token": "s1", "index": 2, "count": 5}, {"token": "s2", "index": 3, "count": 4}]
    assert len(list((tmp_path / "out" / "vocab" / "song").glob("*.parquet"))) == 1
    assert parquet_rows(tmp_path / "out" / "vocab" / "genre") == 0
    genre_df = spark.read.parquet(str(tmp_path / "out" / "vocab" / "genre"))
    assert genre_df.schema.simpleString() == "struct<token:string,index:int,count:bigint>"
    assert not (tmp_path / "out" / "_vocab").exists()


# --------------------------------------------------------------------------------------------------------------
# Stats report
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.spark
def test_stats_report_one_pass_and_markdown(spark, tmp_path):
    df = spark.createDataFrame(
        [("u1", "a", 1), ("u1", "a", 2), ("u2", None, 2), ("u3", "b", None)], "user string, song string, n int"
    )
    report = StatsReport("test")
    entry = report.add_stage("raw", df)
    assert entry["rows"] == 4
    assert entry["columns"] == {
        "user": {"count": 4, "unique": 3, "max_freq": 2},
        "song": {"count": 3, "unique": 2, "max_freq": 2},
        "n": {"count": 3, "unique": 2, "max_freq": 2},
    }
    empty = report.add_stage("empty", df.limit(0), columns=["user"])
    assert empty == {"name": "empty", "rows": 0, "columns": {"user": {"count": 0, "unique": 0, "max_freq": 0}}}
    report.add_counts(rejected=1, untracked=0)
    report.write(tmp_path)
    data = json.loads((tmp_path / "stats.json").read_text())
    assert data["counts"] == {"rejected": 1, "untracked": 0} and data["stages"][0]["name"] == "raw"
    markdown = (tmp_path / "stats.md").read_text()
    assert "describe | user | song | n" in markdown
    assert "unique | 3 | 2 | 2" in markdown and "maxfreq | 2 | 2 | 2" in markdown
    assert "rejected | 1" in markdown


@pytest.mark.spark
def test_column_stats_by_level_nested_stages(spark):
    df = spark.createDataFrame(
        [("u1", "a", 1), ("u1", "a", 3), ("u2", None, 3), ("u3", "b", 2), (None, "b", 3)], "user string, song string, lv int"
    )
    result = column_stats_by_level(df, "lv", [1, 2, 3], ["user", "song"])
    assert result[1] == (5, {"user": {"count": 4, "unique": 3, "max_freq": 2}, "song": {"count": 4, "unique": 2, "max_freq": 2}})
    assert result[2] == (4, {"user": {"count": 3, "unique": 3, "max_freq": 1}, "song": {"count": 3, "unique": 2, "max_freq": 2}})
    assert result[3] == (3, {"user": {"count": 2, "unique": 2, "max_freq": 1}, "song": {"count": 2, "unique": 2, "max_freq": 1}})
    # the same numbers as column_stats on the materialized stage
    assert column_stats(df.where("lv >= 2"), ["user", "song"]) == result[2]


# --------------------------------------------------------------------------------------------------------------
# Steps side by side
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.spark
def test_concurrently_runs_steps_side_by_side_each_labelling_its_own_jobs(spark):
    timer = StepTimer(spark, "t")
    both_inside = threading.Barrier(2, timeout=60)  # broken (an error) unless both steps are running at once

    def step(name: str, rows: int):
        def call():
            with timer.step(name):
                count = spark.range(rows).count()
                both_inside.wait()
                return count, spark.sparkContext.getLocalProperty("spark.job.description")
        return call

    assert concurrently(spark, step("a", 5), step("b", 7)) == [(5, "t: a"), (7, "t: b")]
    assert set(timer.steps) == {"a", "b"}
    assert spark.sparkContext.getLocalProperty("spark.job.description") is None  # the caller's is untouched


@pytest.mark.spark
def test_concurrently_cancels_the_later_calls_spark_jobs_when_one_fails(spark):
    def fails_soon():
        time.sleep(1)
        raise ValueError("the cause")

    def runs_for_minutes():  # ~10^12 rows: minutes on 2 cores, unless cancelled
        return spark.range(10**12).where(F.col("id") % 1_000_003 == -1).count()  # no row matches

    began = time.time()
    with pytest.raises(ValueError, match="the cause"):  # not the cancelled job's error
        concurrently(spark, fails_soon, runs_for_minutes)
    assert time.time() - began < 60
    assert spark.range(3).count() == 3  # the session still works


@pytest.mark.spark
def test_concurrently_raises_the_error_one_after_the_other_would(spark):
    finished = []

    def fails(message: str, after: float):
        def call():
            time.sleep(after)
            raise ValueError(message)
        return call

    def slow():  # before the call that fails first: it runs to its end
        time.sleep(0.6)
        finished.append("slow")
        return spark.range(4).count()

    # "third" is raised first in time, "first" comes first in argument order (as one after the other would raise)
    with pytest.raises(ValueError, match="first"):
        concurrently(spark, fails("first", 0.3), slow, fails("third", 0))
    assert finished == ["slow"]
