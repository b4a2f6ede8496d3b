"""Tests of the shared feature-job helpers (musicrec/features/common.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from musicrec.features import common
from musicrec.features.common import (
    AtomicOutput,
    InputError,
    StatsReport,
    build_vocab,
    build_vocab_from_array,
    check_header,
    file_fingerprint,
    require_files,
    with_index,
    with_index_array,
    with_rejects,
    write_manifest,
    write_rejected,
)

VOCAB_SCHEMA = common.VOCAB_SCHEMA


# --------------------------------------------------------------------------------------------------------------
# Files and headers (no Spark)
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_require_files_names_missing_folder_and_file(tmp_path):
    with pytest.raises(InputError, match="input folder .*nope.* not found"):
        require_files(tmp_path / "nope", ["a.tsv"])
    (tmp_path / "a.tsv").write_text("x\n")
    with pytest.raises(InputError, match=r"file .*b\.tsv not found"):
        require_files(tmp_path, ["a.tsv", "b.tsv"])
    found = require_files(tmp_path, ["a.tsv"], optional=["c.tsv"])
    assert found == {"a.tsv": tmp_path / "a.tsv"}
    (tmp_path / "c.tsv").write_text("y\n")
    assert set(require_files(tmp_path, ["a.tsv"], optional=["c.tsv"])) == {"a.tsv", "c.tsv"}


@pytest.mark.unit
def test_check_header(tmp_path):
    good = tmp_path / "songs.csv"
    good.write_text("\ufeffsong_id,song_length,genre_ids\nA,1,2\n", encoding="utf-8")
    check_header(good, ["song_id", "genre_ids"], ",")  # BOM, extra column and order are fine
    with pytest.raises(InputError, match=r"file .*songs\.csv: missing column 'language' \(header has song_id, "):
        check_header(good, ["song_id", "language"], ",")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match=r"file .*empty\.csv is empty"):
        check_header(empty, ["a"], ",")


@pytest.mark.unit
def test_require_nonempty(tmp_path):
    empty = tmp_path / "e.tsv"
    empty.write_text("")
    with pytest.raises(InputError, match=r"file .*e\.tsv is empty"):
        common.require_nonempty(empty)
    blank = tmp_path / "b.tsv"
    blank.write_text("\n\n")
    with pytest.raises(InputError, match="is empty"):
        common.require_nonempty(blank)
    ok = tmp_path / "ok.tsv"
    ok.write_text("a\tb\n")
    common.require_nonempty(ok)


@pytest.mark.unit
def test_file_fingerprint_file_and_folder(tmp_path):
    data = b"hello\tworld\n" * 1000
    path = tmp_path / "f.tsv"
    path.write_bytes(data)
    assert file_fingerprint(path) == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    folder = tmp_path / "dir"
    folder.mkdir()
    (folder / "a").write_bytes(b"1")
    (folder / "b").write_bytes(b"22")
    (folder / "_SUCCESS").write_bytes(b"")
    first = file_fingerprint(folder)
    assert first["bytes"] == 3 and first["files"] == 2
    (folder / "b").write_bytes(b"23")
    assert file_fingerprint(folder)["sha256"] != first["sha256"]
    with pytest.raises(InputError):
        file_fingerprint(tmp_path / "missing")


# --------------------------------------------------------------------------------------------------------------
# Atomic output and manifest (no Spark)
# --------------------------------------------------------------------------------------------------------------
def _write_manifest(out: AtomicOutput, rows: int = 1) -> dict:
    return write_manifest(
        out, dataset="lastfm", config={"a": 1}, inputs={"f": {"bytes": 1, "sha256": "x"}},
        row_counts={"train": rows}, vocab_sizes={"song": 3},
        features={"categorical": {}, "multi_valued": {}, "numeric": [], "target": None},
        extra={"top_k_tags": 5},
    )


@pytest.mark.unit
def test_atomic_output_success_replaces_previous(tmp_path):
    out_dir = tmp_path / "out"
    with AtomicOutput(out_dir) as out:
        Path(out.path("x.txt")).write_text("first")
        _write_manifest(out)
        assert not out_dir.exists()  # nothing visible before the end
    assert (out_dir / "x.txt").read_text() == "first"
    manifest = json.loads((out_dir / "_MANIFEST.json").read_text())
    assert manifest["dataset"] == "lastfm" and manifest["top_k_tags"] == 5 and manifest["row_counts"] == {"train": 1}
    assert manifest["created_by"].startswith("musicrec ") and len(manifest["fingerprint"]) == 64
    assert set(manifest) >= {"config", "inputs", "vocab_sizes", "features", "splits"}

    with AtomicOutput(out_dir) as out:
        Path(out.path("y.txt")).write_text("second")
        _write_manifest(out, rows=2)
    assert not (out_dir / "x.txt").exists() and (out_dir / "y.txt").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging or old folders left behind


@pytest.mark.unit
def test_atomic_output_failure_leaves_previous_untouched(tmp_path):
    out_dir = tmp_path / "out"
    with AtomicOutput(out_dir) as out:
        Path(out.path("x.txt")).write_text("first")
        _write_manifest(out)
    before = (out_dir / "_MANIFEST.json").read_text()
    with pytest.raises(RuntimeError):
        with AtomicOutput(out_dir) as out:
            Path(out.path("x.txt")).write_text("half")
            raise RuntimeError("stage failed")
    assert (out_dir / "x.txt").read_text() == "first"
    assert (out_dir / "_MANIFEST.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    # a failed first run leaves no OUT at all
    with pytest.raises(RuntimeError):
        with AtomicOutput(tmp_path / "fresh"):
            raise RuntimeError("boom")
    assert not (tmp_path / "fresh").exists()


@pytest.mark.unit
def test_atomic_output_refuses_foreign_folder(tmp_path):
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    with pytest.raises(InputError, match="not a feature-job output"):
        with AtomicOutput(foreign):
            pass
    assert (foreign / "notes.txt").read_text() == "precious"
    (tmp_path / "empty").mkdir()
    with AtomicOutput(tmp_path / "empty") as out:
        _write_manifest(out)
    assert (tmp_path / "empty" / "_MANIFEST.json").is_file()


# --------------------------------------------------------------------------------------------------------------
# Spark helpers
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.spark
def test_with_rejects_first_failing_check_and_null(spark):
    df = spark.createDataFrame([(1, "a"), (-1, "b"), (-2, None), (None, "d"), (5, None)], "x int, s string")
    good_df, bad_df = with_rejects(
        df, [(F.col("x") > 0, "x not positive"), (F.col("s").isNotNull(), "s missing")]
    )
    assert_df_equality(good_df, spark.createDataFrame([(1, "a")], "x int, s string"), ignore_nullable=True)
    expected_bad = spark.createDataFrame(
        [(-1, "b", "x not positive"), (-2, None, "x not positive"), (None, "d", "x not positive"), (5, None, "s missing")],
        "x int, s string, reason string",
    )
    assert_df_equality(bad_df, expected_bad, ignore_row_order=True, ignore_nullable=True)


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
    assert written_df.schema == common.REJECTED_SCHEMA
    expected = spark.createDataFrame(
        [("plays.tsv", None, "unparseable timestamp", "x"), ("plays.tsv", 3, "wrong number of fields", "a\tb")],
        common.REJECTED_SCHEMA,
    )
    assert_df_equality(written_df, expected, ignore_row_order=True, ignore_nullable=True)
    empty_df = spark.read.parquet(str(tmp_path / "out" / "rejected" / "empty.tsv"))
    assert empty_df.count() == 0 and empty_df.columns == ["file", "line", "reason", "raw"]


@pytest.mark.spark
def test_build_vocab_order_tie_break_min_count_and_null(spark):
    df = spark.createDataFrame([("b",), ("a",), ("c",), ("b",), ("a",), ("d",), (None,), (None,), (None,)], "t string")
    expected = spark.createDataFrame([("a", 2, 2), ("b", 3, 2), ("c", 4, 1), ("d", 5, 1)], VOCAB_SCHEMA)
    assert_df_equality(build_vocab(df, "t").orderBy("index"), expected, ignore_nullable=True)
    rare_cut = spark.createDataFrame([("a", 2, 2), ("b", 3, 2)], VOCAB_SCHEMA)
    assert_df_equality(build_vocab(df, "t", min_count=2).orderBy("index"), rare_cut, ignore_nullable=True)


@pytest.mark.spark
def test_build_vocab_from_array(spark):
    df = spark.createDataFrame([(["rock", "pop"],), (["pop", None],), (None,), ([],)], "tags array<string>")
    expected = spark.createDataFrame([("pop", 2, 2), ("rock", 3, 1)], VOCAB_SCHEMA)
    assert_df_equality(build_vocab_from_array(df, "tags").orderBy("index"), expected, ignore_nullable=True)


@pytest.mark.spark
def test_with_index_oov_null_and_rare(spark):
    vocab_df = spark.createDataFrame([("a", 2, 5), ("b", 3, 4)], VOCAB_SCHEMA)
    df = spark.createDataFrame([(1, "a"), (2, "b"), (3, "zzz"), (4, None)], "k int, t string")
    expected = spark.createDataFrame([(1, "a", 2), (2, "b", 3), (3, "zzz", 1), (4, None, 1)], "k int, t string, t_idx int")
    assert_df_equality(with_index(df, vocab_df, "t", "t_idx"), expected, ignore_row_order=True, ignore_nullable=True)
    no_bcast = with_index(df, vocab_df, "t", "t_idx", broadcast=False)
    assert_df_equality(no_bcast, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.spark
def test_with_index_array_keeps_order(spark):
    vocab_df = spark.createDataFrame([("a", 2, 5), ("b", 3, 4), ("c", 4, 1)], VOCAB_SCHEMA)
    df = spark.createDataFrame(
        [(1, ["c", "a", "b", "a"]), (2, ["x", None, "c"]), (3, None), (4, [])], "k int, ts array<string>"
    )
    expected = spark.createDataFrame(
        [(1, ["c", "a", "b", "a"], [4, 2, 3, 2]), (2, ["x", None, "c"], [1, 1, 4]), (3, None, [1]), (4, [], [1])],
        "k int, ts array<string>, ts_idx array<int>",
    )
    result = with_index_array(df, vocab_df, "ts", "ts_idx", key_cols=["k"])
    assert_df_equality(result, expected, ignore_row_order=True, ignore_nullable=True)


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
def test_write_vocab_and_size(spark, tmp_path):
    df = spark.createDataFrame([("x",), ("y",), ("y",)], "t string")
    vocab_df = build_vocab(df, "t")
    assert common.vocab_size(vocab_df) == 4
    with AtomicOutput(tmp_path / "o") as out:
        common.write_vocab(vocab_df, "t", out)
        _write_manifest(out)
    read_df = spark.read.parquet(str(tmp_path / "o" / "vocab" / "t"))
    assert [tuple(r) for r in read_df.collect()] == [("y", 2, 2), ("x", 3, 1)]
    assert read_df.schema.simpleString() == "struct<token:string,index:int,count:bigint>"


@pytest.mark.spark
def test_column_stats_by_level_nested_stages(spark):
    df = spark.createDataFrame(
        [("u1", "a", 1), ("u1", "a", 3), ("u2", None, 3), ("u3", "b", 2), (None, "b", 3)], "user string, song string, lv int"
    )
    result = common.column_stats_by_level(df, "lv", [1, 2, 3], ["user", "song"])
    assert result[1] == (5, {"user": {"count": 4, "unique": 3, "max_freq": 2}, "song": {"count": 4, "unique": 2, "max_freq": 2}})
    assert result[2] == (4, {"user": {"count": 3, "unique": 3, "max_freq": 1}, "song": {"count": 3, "unique": 2, "max_freq": 2}})
    assert result[3] == (3, {"user": {"count": 2, "unique": 2, "max_freq": 1}, "song": {"count": 2, "unique": 2, "max_freq": 1}})
    # the same numbers as column_stats on the materialized stage
    assert common.column_stats(df.where("lv >= 2"), ["user", "song"]) == result[2]
