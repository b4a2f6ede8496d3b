"""End-to-end tests of ``spark-submit jobs/features.py kkbox`` (through ./spark-submit.sh): on small generated data
(one dataset and one first run shared by the module), a rerun, the real KKBOX samples in shared/data/kkbox, and bad
input (missing file, missing column: exit 2, OUT untouched)."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from musicrec.io import file_listing
from musicrec.schemas import KKBOX_FILES

REPO = Path(__file__).resolve().parent.parent
SPLITS = ["train", "valid", "test"]
INT_COLUMNS = ["user_idx", "song_idx", "source_system_tab_idx", "source_screen_name_idx", "source_type_idx",
               "city_idx", "gender_idx", "registered_via_idx", "language_idx", "isrc_country_idx", "isrc_year_idx"]
LIST_COLUMNS = ["genre_idx", "artist_idx", "composer_idx", "lyricist_idx"]
FLOAT_COLUMNS = ["song_length", "age", "membership_days", "registration_year", "song_count", "user_count",
                 "artist_count"]


def run_features(input_dir: Path, output_dir: Path, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the job as users do: ./spark-submit.sh jobs/features.py kkbox ... ; returns the finished process."""
    env = dict(os.environ, MUSICREC_DRIVER_MEMORY="1g", MUSICREC_SHUFFLE_PARTITIONS="2",
               MUSICREC_SPARK_LOG_LEVEL="ERROR")
    # spark-submit.sh gives a local driver on an input this small the JIT's quick compiler only (TieredStopAtLevel=1)
    command = [str(REPO / "spark-submit.sh"), "--conf", "spark.ui.enabled=false",
               "--conf", "spark.ui.showConsoleProgress=false",
               str(REPO / "jobs" / "features.py"), "kkbox",
               "--input", str(input_dir), "--output", str(output_dir), *extra]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def csv_rows(path: Path) -> int:
    """Data rows of a CSV as Python's csv module counts them (header excluded)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return sum(1 for _ in csv.reader(handle)) - 1


def sorted_rows(path: Path) -> list[dict]:
    table = pq.read_table(path)
    key = "row_id" if "row_id" in table.column_names else "index" if "index" in table.column_names else "raw"
    return sorted(table.to_pylist(), key=lambda row: (row[key] is None, row[key]))


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------------------------
# One small generated dataset and one first run for the module
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def generated_input(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("kkbox-in")
    result = subprocess.run([sys.executable, "-m", "musicrec.datagen", "kkbox", "--out", str(folder),
                             "--scale", "0.002", "--seed", "11", "--quiet"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture(scope="module")
def first_run(generated_input, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kkbox-out") / "out"
    result = run_features(generated_input, out)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "[features] kkbox: done" in result.stdout
    return out


@pytest.mark.e2e
def test_generated_outputs_follow_the_contract(first_run, generated_input):
    out = first_run
    manifest = json.loads((out / "_MANIFEST.json").read_text())
    assert manifest["dataset"] == "kkbox" and manifest["features"]["target"] == "target"
    assert set(manifest["inputs"]) == set(KKBOX_FILES)
    assert manifest["features"]["numeric"] == FLOAT_COLUMNS
    assert set(manifest["features"]["categorical"]) == set(INT_COLUMNS)
    assert manifest["features"]["multi_valued"] == {c: c[: -len("_idx")] for c in LIST_COLUMNS}

    # No row of train.csv / test.csv is lost without being counted (counted again here with Python's csv module).
    accounting = manifest["row_accounting"]
    train_in, test_in = csv_rows(generated_input / "train.csv"), csv_rows(generated_input / "test.csv")
    train_acc, test_acc = accounting["train.csv"], accounting["test.csv"]
    assert train_acc["input_rows"] == train_in == train_acc["train"] + train_acc["valid"] + train_acc["rejected"]
    assert test_acc["input_rows"] == test_in == test_acc["test"] + test_acc["rejected"] + test_acc["blank"]
    for name in ("songs.csv", "members.csv", "song_extra_info.csv"):
        assert accounting[name]["input_rows"] == accounting[name]["kept"] + accounting[name]["rejected"]
    assert accounting["songs.csv"]["input_rows"] == csv_rows(generated_input / "songs.csv")
    assert accounting["song_extra_info.csv"]["input_rows"] == csv_rows(generated_input / "song_extra_info.csv")

    tables = {split: pq.read_table(out / split) for split in SPLITS}
    for split, table in tables.items():
        assert table.num_rows == manifest["row_counts"][split]
        schema = table.schema
        assert schema.field("row_id").type == pa.int64() and schema.field("target").type == pa.int32()
        for name in INT_COLUMNS:
            assert schema.field(name).type == pa.int32(), name
            values = table.column(name).to_pylist()
            vocab = manifest["features"]["categorical"][name]
            assert min(values) >= 1 and max(values) < manifest["vocab_sizes"][vocab], name
        for name in LIST_COLUMNS:
            assert schema.field(name).type == pa.list_(pa.int32()), name
            lists = table.column(name).to_pylist()
            vocab = manifest["features"]["multi_valued"][name]
            assert all(1 <= len(v) <= manifest["max_multi"] for v in lists), name
            assert all(1 <= i < manifest["vocab_sizes"][vocab] for v in lists for i in v), name
        for name in FLOAT_COLUMNS:
            assert schema.field(name).type == pa.float32(), name
            assert all(math.isfinite(v) for v in table.column(name).to_pylist()), name
    # the validation split is the last 20% of train.csv, by row number
    assert train_acc["valid"] + sum(1 for r in pq.read_table(out / "rejected" / "train.csv").to_pylist()
                                    if r["line"] - 2 >= manifest["valid_cut_row_id"]) == round(0.2 * train_in)
    assert max(tables["train"].column("row_id").to_pylist()) < manifest["valid_cut_row_id"] <= \
        min(tables["valid"].column("row_id").to_pylist())
    assert set(tables["train"].column("target").to_pylist()) == {0, 1}
    assert tables["test"].column("target").null_count == tables["test"].num_rows
    assert sorted(tables["test"].column("id").to_pylist()) == list(range(test_acc["test"]))  # datagen: ids 0..n-1
    # vocabularies: one folder each, indices 2.. by count
    for name, size in manifest["vocab_sizes"].items():
        vocab = pq.read_table(out / "vocab" / name).to_pylist()
        assert [r["index"] for r in vocab] == list(range(2, size)), name
        assert all(a["count"] >= b["count"] for a, b in zip(vocab, vocab[1:])), name
    assert json.loads((out / "stats.json").read_text())["counts"]["train.csv:input_rows"] == train_in
    assert (out / "stats.md").read_text().startswith("# Stats")
    assert manifest["files"] == file_listing(out)  # every file published, listed (what the reader checks against)


@pytest.mark.e2e
def test_petastorm_reads_every_split(first_run):
    """Through the project's loader (Petastorm make_batch_reader + a TransformSpec that pads the ragged lists)."""
    pytest.importorskip("petastorm")
    from musicrec.data import iter_row_groups

    manifest = json.loads((first_run / "_MANIFEST.json").read_text())
    for split in SPLITS:
        rows = 0
        for chunk in iter_row_groups(first_run / split, ["row_id", "user_idx", *LIST_COLUMNS, "song_count"],
                                     LIST_COLUMNS, seed=0, shuffle_row_groups=False, cur_shard=0, shard_count=2):
            rows += len(chunk["row_id"])
            assert chunk["genre_idx"].dtype.kind == "i" and (chunk["genre_idx__len"] >= 1).all()
        assert 0 < rows < manifest["row_counts"][split], split  # shard 0 of 2: some row groups, not all


@pytest.mark.e2e
def test_rerun_gives_identical_tables(first_run, generated_input, tmp_path):
    out2 = tmp_path / "out2"
    result = run_features(generated_input, out2)
    assert result.returncode == 0, result.stderr[-4000:]
    names = [*SPLITS, *[f"vocab/{p.name}" for p in (first_run / "vocab").iterdir()],
             *[f"rejected/{p.name}" for p in (first_run / "rejected").iterdir()]]
    for name in names:
        assert sorted_rows(first_run / name) == sorted_rows(out2 / name), name
        assert len(list((first_run / name).glob("*.parquet"))) == len(list((out2 / name).glob("*.parquet"))), name
    first, second = (json.loads((out / "_MANIFEST.json").read_text()) for out in (first_run, out2))
    assert {**first, "files": None} == {**second, "files": None}  # part file names hold a job id
    assert len(first["files"]) == len(second["files"])
    assert (first_run / "stats.json").read_text() == (out2 / "stats.json").read_text()


@pytest.mark.e2e
def test_real_samples(shared_data, tmp_path):
    out = tmp_path / "out"
    result = run_features(shared_data / "kkbox", out)
    assert result.returncode == 0, result.stderr[-4000:]
    manifest = json.loads((out / "_MANIFEST.json").read_text())
    accounting = manifest["row_accounting"]
    assert accounting["train.csv"]["input_rows"] == 19_999
    assert accounting["train.csv"]["train"] + accounting["train.csv"]["valid"] + \
        accounting["train.csv"]["rejected"] == 19_999
    assert accounting["test.csv"] == {"input_rows": 39_999, "test": 4_999, "rejected": 0, "blank": 35_000}
    assert accounting["members.csv"] == {"input_rows": 34_403, "kept": 34_403, "rejected": 0}
    # the one name whose quote never closes swallows the next 148 records (see PROVENANCE.md: 40,148 lines)
    extra_rejected = pq.read_table(out / "rejected" / "song_extra_info.csv").to_pylist()
    assert [r["reason"] for r in extra_rejected] == ["name swallows the following records (a quote that never closes)"]
    assert extra_rejected[0]["raw"].count("\n") == 148
    counts = manifest["event_counts"]
    assert counts["train_unknown_song_events"] > counts["train_events"] / 2  # songs.csv is only a sample
    assert counts["train_unknown_member_events"] == 0
    composers = [r["token"] for r in pq.read_table(out / "vocab" / "composer").to_pylist()]
    assert composers and all(token == token.strip() and "|" not in token for token in composers)  # str.strip: NBSP too


# --------------------------------------------------------------------------------------------------------------
# Bad input: exit status 2, a message naming the file / column, OUT untouched
# --------------------------------------------------------------------------------------------------------------
def existing_output(first_run: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    out = tmp_path / "existing-out"
    shutil.copytree(first_run, out)
    return out, tree_digest(out)


@pytest.mark.e2e
def test_missing_file_exits_2_and_leaves_out_unchanged(first_run, generated_input, tmp_path):
    input_dir = tmp_path / "in"
    shutil.copytree(generated_input, input_dir)
    (input_dir / "members.csv").unlink()
    out, before = existing_output(first_run, tmp_path)
    result = run_features(input_dir, out)
    assert result.returncode == 2, result.stderr[-4000:]
    assert "members.csv not found" in result.stdout + result.stderr  # PythonRunner sends the driver's stderr to stdout
    assert tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing-out", "in"]  # no staging folder left


@pytest.mark.e2e
def test_missing_column_exits_2_and_leaves_out_unchanged(first_run, generated_input, tmp_path):
    input_dir = tmp_path / "in"
    shutil.copytree(generated_input, input_dir)
    (input_dir / "songs.csv").write_text("song_id,song_length,genre_ids,artist_name,composer,lyricist\nA,1,2,x,,\n")
    out, before = existing_output(first_run, tmp_path)
    result = run_features(input_dir, out)
    assert result.returncode == 2, result.stderr[-4000:]
    assert "songs.csv: missing column 'language'" in result.stdout + result.stderr
    assert tree_digest(out) == before
