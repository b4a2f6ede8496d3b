"""Tests of the Spark-free job boundary (musicrec/io.py): input files and headers, fingerprints, atomic output,
manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from musicrec.io import (
    AtomicOutput,
    InputError,
    check_header,
    check_nonempty_splits,
    check_output,
    file_fingerprint,
    file_listing,
    fingerprint_and_lines,
    first_line,
    parquet_rows,
    read_header,
    recover,
    require_files,
    require_nonempty,
    write_manifest,
)


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
def test_read_header_and_first_line(tmp_path):
    path = tmp_path / "tags.tsv"
    path.write_text('\ufeff"traid"\t tag \tcount\r\nx\ty\t1\n', encoding="utf-8")
    assert first_line(path) == '"traid"\t tag \tcount'  # no BOM, no line break; fields as written
    assert read_header(path, "\t") == ["traid", "tag", "count"]  # each name stripped of spaces and quotes
    (tmp_path / "empty.tsv").write_text("")
    assert first_line(tmp_path / "empty.tsv") == "" and read_header(tmp_path / "empty.tsv", "\t") == [""]
    blank_header = tmp_path / "blank.csv"
    blank_header.write_text("\na,b\n")
    with pytest.raises(InputError, match=r"blank\.csv line 1: empty header line"):
        check_header(blank_header, ["a"], ",")


@pytest.mark.unit
def test_parquet_rows_reads_the_footers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "t"
    folder.mkdir()
    pq.write_table(pa.table({"x": [1, 2, 3]}), folder / "part-0.parquet")
    pq.write_table(pa.table({"x": [4]}), folder / "part-1.parquet")
    (folder / "_SUCCESS").write_text("")
    assert parquet_rows(folder) == 4
    assert parquet_rows(tmp_path / "missing") == 0


@pytest.mark.unit
def test_require_nonempty(tmp_path):
    empty = tmp_path / "e.tsv"
    empty.write_text("")
    with pytest.raises(InputError, match=r"file .*e\.tsv is empty"):
        require_nonempty(empty)
    blank = tmp_path / "b.tsv"
    blank.write_text("\n\n")
    with pytest.raises(InputError, match="is empty"):
        require_nonempty(blank)
    ok = tmp_path / "ok.tsv"
    ok.write_text("a\tb\n")
    require_nonempty(ok)


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


@pytest.mark.unit
def test_fingerprint_and_lines_counts_lines_like_hadoop(tmp_path):
    cases = [(b"", 0), (b"a", 1), (b"a\n", 1), (b"h\n1\n\n2\n", 4), (b"a\r\nb", 2), (b"a\rb\r", 2),
             (b"a\r\n" * 5, 5), (b"x\n" * 3 + b"tail", 4)]
    for i, (data, lines) in enumerate(cases):
        path = tmp_path / f"f{i}"
        path.write_bytes(data)
        fingerprint, counted = fingerprint_and_lines(path)
        assert fingerprint == file_fingerprint(path) and counted == lines, data
    from musicrec.io import _scan_file

    path = tmp_path / "crlf"
    path.write_bytes(b"a\r\nb\r\nc\r\n")
    assert _scan_file(path, count_lines=True, chunk=2)[1] == 3  # a \r\n cut between two reads counts once


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


@pytest.mark.unit
def test_check_output_names_out_and_leaves_nothing(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=r"output .*file/out: cannot write there \(.*file is not a folder\)"):
        check_output(tmp_path / "file" / "out")
    with pytest.raises(InputError, match="exists and is not a folder"):
        check_output(tmp_path / "file")
    assert check_output(tmp_path / "new" / "out") == tmp_path / "new" / "out"
    assert list((tmp_path / "new").iterdir()) == []  # the parent is made, the probe removed, OUT not yet


@pytest.mark.unit
def test_manifest_lists_every_published_file(tmp_path):
    out_dir = tmp_path / "out"
    with AtomicOutput(out_dir) as out:
        Path(out.path("train")).mkdir()
        Path(out.path("train/part-0.parquet")).write_bytes(b"12345")
        Path(out.path("train/.part-0.parquet.crc")).write_bytes(b"c")
        Path(out.path("stats.json")).write_text("{}")
        _write_manifest(out)
    listing = json.loads((out_dir / "_MANIFEST.json").read_text())["files"]
    assert listing == file_listing(out_dir)
    assert sorted(listing) == ["stats.json", "train/.part-0.parquet.crc", "train/part-0.parquet"]
    assert listing["train/part-0.parquet"] == {"bytes": 5, "sha256": hashlib.sha256(b"12345").hexdigest()}


@pytest.mark.unit
def test_recover_restores_out_and_removes_leftovers(tmp_path, capsys):
    final = tmp_path / "out"
    old = tmp_path / ".out.old-aaaa"
    old.mkdir()
    (old / "_MANIFEST.json").write_text("{}")
    (tmp_path / ".out.tmp-bbbb").mkdir()
    (tmp_path / ".other.tmp-cccc").mkdir()  # another output's staging folder: not ours to touch
    actions = recover(final)
    assert (final / "_MANIFEST.json").is_file() and len(actions) == 2
    assert "restored" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-cccc", "out"]
    assert recover(final) == []


@pytest.mark.unit
def test_check_nonempty_splits():
    check_nonempty_splits({"train": 3, "valid": 0}, required=["train"], what="rows", hint="h")
    with pytest.raises(InputError, match=r"split 'valid' would have no rows \(h\): refusing to publish"):
        check_nonempty_splits({"train": 3, "valid": 0}, required=["train", "valid"], what="rows", hint="h")
