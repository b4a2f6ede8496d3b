"""End-to-end tests of ``spark-submit jobs/features.py lastfm`` (through ./spark-submit.sh) on tiny generated data,
on the real Last.fm 1K samples, against a loopback standalone cluster, and on bad input."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lastfm_fakedata import write_lastfm_dataset
from musicrec.io import file_listing
from musicrec.schemas import LASTFM_PLAYS_FILE, LASTFM_TAGS_FILE

REPO = Path(__file__).resolve().parent.parent
TABLES = ["plays", "sessions/train", "sessions/valid", "sessions/test", "song_tags", "vocab/user", "vocab/song",
          "vocab/artist", "vocab/tag", f"rejected/{LASTFM_PLAYS_FILE}", f"rejected/{LASTFM_TAGS_FILE}"]
TEST_SETTINGS = ["--set", "spark.partitions=4"]


def run_features(input_dir: Path, output_dir: Path, *extra: str, master: str | None = None,
                 timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the job as users do: ./spark-submit.sh jobs/features.py lastfm ... ; returns the finished process."""
    env = dict(os.environ, MUSICREC_DRIVER_MEMORY="1g", MUSICREC_SHUFFLE_PARTITIONS="2",
               MUSICREC_SPARK_LOG_LEVEL="ERROR")
    submit = [str(REPO / "spark-submit.sh"), "--conf", "spark.ui.enabled=false",
              "--conf", "spark.ui.showConsoleProgress=false"]
    if master:
        submit += ["--master", master, "--executor-memory", "1g", "--total-executor-cores", "2"]
    command = [*submit, str(REPO / "jobs" / "features.py"), "lastfm", "--input", str(input_dir),
               "--output", str(output_dir), *TEST_SETTINGS, *extra]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def read_table(path: Path) -> list[dict]:
    """All rows of a Parquet folder in file order (part files sorted by name), as Python dicts."""
    files = sorted(p for p in path.glob("*.parquet"))
    rows: list[dict] = []
    for file in files:
        rows.extend(pq.read_table(file).to_pylist())
    return rows


def table_contents(out: Path) -> dict[str, list[dict]]:
    return {name: read_table(out / name) for name in TABLES}


def part_numbers(path: Path) -> list[str]:
    return [p.name.split("-")[1] for p in sorted(path.glob("*.parquet"))]


# --------------------------------------------------------------------------------------------------------------
# Shared data and the first run (module scope: one small dataset for every test here)
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lastfm_input(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("lastfm-in")
    facts = write_lastfm_dataset(folder, users=12)
    return folder, facts


@pytest.fixture(scope="module")
def first_run(lastfm_input, tmp_path_factory) -> Path:
    input_dir, _ = lastfm_input
    out = tmp_path_factory.mktemp("lastfm-out") / "out"
    result = run_features(input_dir, out)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "[features] lastfm: done" in result.stdout
    return out


@pytest.mark.e2e
def test_outputs_manifest_and_contract(first_run, lastfm_input):
    out = first_run
    _, facts = lastfm_input
    manifest = json.loads((out / "_MANIFEST.json").read_text())
    assert manifest["dataset"] == "lastfm" and manifest["top_k_tags"] == 5 and manifest["max_session_length"] == 50
    assert set(manifest["inputs"]) == {LASTFM_PLAYS_FILE, LASTFM_TAGS_FILE}
    assert all(len(v["sha256"]) == 64 for v in manifest["inputs"].values())
    assert manifest["config"]["spark"]["partitions"] == 4  # the resolved config, with the --set override
    assert manifest["features"] == {"categorical": {"user_idx": "user"}, "multi_valued": {"songs": "song", "song_tags": "tag"},
                                    "numeric": [], "target": None}
    assert manifest["splits"] == {s: f"sessions/{s}" for s in ("train", "valid", "test")}
    assert manifest["files"] == file_listing(out)  # every file published, listed (what the reader checks against)

    tables = table_contents(out)
    counts = manifest["row_counts"]
    for split in ("train", "valid", "test"):
        assert counts[split] == len(tables[f"sessions/{split}"]) > 0
    assert counts["plays"] == len(tables["plays"])
    for name in ("user", "song", "artist", "tag"):
        vocab = tables[f"vocab/{name}"]
        assert manifest["vocab_sizes"][name] == len(vocab) + 2
        assert [r["index"] for r in vocab] == list(range(2, len(vocab) + 2))
        assert all(a["count"] >= b["count"] for a, b in zip(vocab, vocab[1:]))

    # rejected lines: named file, 1-based line numbers, reasons, raw text
    rejected = tables[f"rejected/{LASTFM_PLAYS_FILE}"]
    assert [r["line"] for r in rejected] == facts["bad_lines"]
    assert rejected[0]["reason"].startswith("unparseable timestamp") and rejected[0]["raw"].startswith("user_000001\tnot-a-time")
    assert rejected[1]["reason"].startswith("wrong number of fields") and rejected[0]["file"] == LASTFM_PLAYS_FILE
    assert counts["rejected"] == 2
    rejected_tags = tables[f"rejected/{LASTFM_TAGS_FILE}"]
    assert [(r["line"], r["reason"]) for r in rejected_tags] == [(4, "count is not an integer")]
    assert counts["rejected_tags"] == 1

    # plays: every kept user has >= 6 sessions, positions are 0..n-1 in time order, session ids unique per user
    sessions_of: dict[str, set] = {}
    by_session: dict[int, list] = {}
    for row in tables["plays"]:
        sessions_of.setdefault(row["user_id"], set()).add(row["session_id"])
        by_session.setdefault(row["session_id"], []).append(row)
    assert all(len(s) >= 6 for s in sessions_of.values())
    for rows in by_session.values():
        assert sorted(r["position"] for r in rows) == list(range(len(rows)))
        assert len({r["user_id"] for r in rows}) == 1
        times = [r["timestamp"] for r in sorted(rows, key=lambda r: r["position"])]
        assert all((b - a).total_seconds() <= 1200 for a, b in zip(times, times[1:]))

    # sessions: lengths, flat tags, time split
    k = manifest["top_k_tags"]
    all_sessions = [(s, r) for s in ("train", "valid", "test") for r in tables[f"sessions/{s}"]]
    for _, row in all_sessions:
        assert 2 <= row["length"] == len(row["songs"]) <= 50
        assert len(row["song_tags"]) == k * row["length"]
        assert all(i >= 1 for i in row["songs"]) and row["user_idx"] >= 2
    assert len({r["session_id"] for _, r in all_sessions}) == len(all_sessions)
    starts = {s: [r["start_ts"] for x, r in all_sessions if x == s] for s in ("train", "valid", "test")}
    assert max(starts["train"]) < min(starts["test"])
    assert max(starts["train"]) < min(starts["valid"]) and max(starts["valid"]) < min(starts["test"])
    song_tags = tables["song_tags"]
    assert all(len(r["tags"]) == k for r in song_tags)
    assert [r["song_idx"] for r in song_tags] == list(range(2, len(song_tags) + 2))

    # stats: per stage tables and counters that add up
    stats = json.loads((out / "stats.json").read_text())
    stages = {s["name"]: s for s in stats["stages"]}
    assert list(stages) == ["parsed", "tracked", "in_window", "deduplicated", "plays", "sessions"]
    c = stats["counts"]
    assert stages["parsed"]["rows"] == facts["lines"] - 2 == c["lines"] - c["rejected"]
    assert stages["tracked"]["rows"] == stages["parsed"]["rows"] - c["untracked"]
    assert stages["deduplicated"]["rows"] == stages["in_window"]["rows"] - c["duplicates"] and c["duplicates"] > 0
    assert stages["plays"]["rows"] == len(tables["plays"])
    assert stages["plays"]["columns"]["user_id"]["unique"] == len(sessions_of)
    assert c["sessions"] == len(by_session)
    assert set(stages["parsed"]["columns"]["user_id"]) == {"count", "unique", "max_freq"}
    assert "describe | user_id | timestamp" in (out / "stats.md").read_text()


@pytest.mark.e2e
def test_rerun_gives_identical_tables_and_replaces_output(first_run, lastfm_input):
    """Rerun into the same OUT: it is replaced atomically (a stale file disappears, nothing is left beside it) and
    every table has the same rows in the same part files."""
    input_dir, _ = lastfm_input
    before = table_contents(first_run)
    parts_before = {name: part_numbers(first_run / name) for name in TABLES}
    manifest_before = json.loads((first_run / "_MANIFEST.json").read_text())
    (first_run / "stale.txt").write_text("from an older run")
    result = run_features(input_dir, first_run)
    assert result.returncode == 0, result.stderr[-4000:]
    assert not (first_run / "stale.txt").exists()
    assert sorted(p.name for p in first_run.parent.iterdir()) == [first_run.name]
    after = table_contents(first_run)
    for name in TABLES:
        assert before[name] == after[name], f"table {name} differs between two runs"
        assert parts_before[name] == part_numbers(first_run / name)
    manifest_after = json.loads((first_run / "_MANIFEST.json").read_text())
    assert {**manifest_after, "files": None} == {**manifest_before, "files": None}  # part file names hold a job id
    assert len(manifest_after["files"]) == len(manifest_before["files"])


@pytest.mark.e2e
@pytest.mark.slow
def test_standalone_cluster_run_matches_local(first_run, lastfm_input, tmp_path):
    from standalone_cluster import StandaloneCluster

    input_dir, _ = lastfm_input
    out = tmp_path / "cluster-out"
    with StandaloneCluster(workers=2, cores=1, memory="1g", log_dir=tmp_path / "cluster") as cluster:
        status = cluster.status()
        assert status["aliveworkers"] == 2
        result = run_features(input_dir, out, master=cluster.master_url)
        apps = cluster.status().get("completedapps", [])
    assert result.returncode == 0, result.stderr[-4000:]
    assert any(app["name"] == "musicrec-features-lastfm" for app in apps)
    local, remote = table_contents(first_run), table_contents(out)
    for name in TABLES:
        assert local[name] == remote[name], f"table {name} differs between local[2] and the standalone cluster"


# --------------------------------------------------------------------------------------------------------------
# Real samples (../shared/data/lastfm-1k): no tags file there, so songs are kept without tags
# --------------------------------------------------------------------------------------------------------------
def reference_sessions(lines: list[str], gap: int = 1200, min_sessions: int = 6) -> tuple[int, int]:
    """A plain-Python reference of read -> drop untracked -> dedup -> sessionize -> user filter: (plays, sessions)."""
    seen, plays = set(), []
    for line in lines:
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != 6 or not fields[4]:
            continue
        key = (fields[0], fields[1], fields[4])
        if key in seen:
            continue
        seen.add(key)
        plays.append((fields[0], dt.datetime.strptime(fields[1], "%Y-%m-%dT%H:%M:%SZ")))
    by_user: dict[str, list] = {}
    for user, ts in plays:
        by_user.setdefault(user, []).append(ts)
    n_plays = n_sessions = 0
    for times in by_user.values():
        times.sort()
        sessions = 1 + sum((b - a).total_seconds() > gap for a, b in zip(times, times[1:]))
        if sessions >= min_sessions:
            n_plays += len(times)
            n_sessions += sessions
    return n_plays, n_sessions


@pytest.mark.e2e
def test_real_samples_all_three_files(shared_data, tmp_path):
    source = shared_data / "lastfm-1k"
    names = ["userid-timestamp-artid-artname-traid-traname.head5000.tsv", "plays.3users-first100each.tsv",
             "plays.3users-interleaved-sample.tsv"]
    if not all((source / n).is_file() for n in names):
        pytest.skip("real Last.fm 1K samples not found")
    # One input of the three real files, concatenated: they overlap (same real rows), which exercises the dedup;
    # the last file has no final newline.
    lines: list[str] = []
    for name in names:
        text = (source / name).read_text(encoding="utf-8")
        lines.extend(text.splitlines())
    input_dir = tmp_path / "in"
    input_dir.mkdir()
    (input_dir / "real.tsv").write_text("\n".join(lines), encoding="utf-8")
    out = tmp_path / "out"
    result = run_features(input_dir, out, "--set", "input.plays_file=real.tsv", "--set", "tags.drop_untagged=false")
    assert result.returncode == 0, result.stderr[-4000:]
    manifest = json.loads((out / "_MANIFEST.json").read_text())
    stats = json.loads((out / "stats.json").read_text())
    expected_plays, expected_sessions = reference_sessions(lines)
    assert manifest["tags_available"] is False and manifest["vocab_sizes"]["tag"] == 2
    assert manifest["row_counts"]["plays"] == expected_plays > 0
    assert stats["counts"]["sessions"] == expected_sessions
    assert stats["counts"]["rejected"] == 0 and stats["counts"]["duplicates"] > 0
    sessions = read_table(out / "sessions" / "train")
    assert sessions and all(set(r["song_tags"]) == {0} for r in sessions)  # no tags file: all pads


# --------------------------------------------------------------------------------------------------------------
# Bad input: exit 2, a message naming the file and the line or column, the previous OUT unchanged
# --------------------------------------------------------------------------------------------------------------
def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.e2e
def test_bad_input_exit_2_and_previous_output_untouched(first_run, lastfm_input, tmp_path):
    """Through spark-submit: a missing input folder and a malformed line in strict mode exit with 2, print a message
    naming the file (and line), and leave the previous OUT as it was."""
    input_dir, _ = lastfm_input
    out = tmp_path / "out"
    shutil.copytree(first_run, out)
    before = snapshot(out)
    missing = tmp_path / "missing"
    malformed = tmp_path / "malformed"
    shutil.copytree(input_dir, malformed)
    cases = [
        (missing, [], f"input folder {missing} not found"),
        (malformed, ["--set", "clean.max_rejected_fraction=0"],
         f"file {malformed / LASTFM_PLAYS_FILE} line 6: unparseable timestamp"),
    ]
    for folder, extra, message in cases:
        result = run_features(folder, out, *extra)
        # spark-submit's PythonRunner merges the driver's stderr into its stdout: look at both
        printed = result.stdout + result.stderr
        assert result.returncode == 2, (folder, printed[-3000:])
        assert f"features.py: error: {message}" in printed, (message, printed[-3000:])
        assert snapshot(out) == before, f"{folder.name}: the previous output changed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["malformed", "out"]  # no staging folder left


@pytest.mark.spark
def test_bad_input_in_process_names_file_and_column(spark, first_run, lastfm_input, tmp_path):
    """run_job directly (no JVM start per case): empty file, missing tags column, missing plays file, a tags file
    required but absent, more malformed lines than allowed; each names the file and leaves OUT untouched."""
    from musicrec.features.lastfm import run_job
    from musicrec.io import InputError

    input_dir, _ = lastfm_input
    out = tmp_path / "out"
    shutil.copytree(first_run, out)
    before = snapshot(out)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / LASTFM_PLAYS_FILE).write_text("")
    no_column = tmp_path / "no_column"
    no_column.mkdir()
    shutil.copy(input_dir / LASTFM_PLAYS_FILE, no_column / LASTFM_PLAYS_FILE)
    (no_column / LASTFM_TAGS_FILE).write_text("traid\ttag\nabc\trock\n")
    no_plays = tmp_path / "no_plays"
    no_plays.mkdir()
    no_tags = tmp_path / "no_tags"
    no_tags.mkdir()
    shutil.copy(input_dir / LASTFM_PLAYS_FILE, no_tags / LASTFM_PLAYS_FILE)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / LASTFM_PLAYS_FILE).write_text("msno,song_id,target\nabc,def,1\nghi,jkl,0\n")
    cases = [
        (empty, {}, f"file {empty / LASTFM_PLAYS_FILE} is empty"),
        (no_column, {}, f"file {no_column / LASTFM_TAGS_FILE}: missing column 'count' (header has traid, tag)"),
        (no_plays, {}, f"file {no_plays / LASTFM_PLAYS_FILE} not found"),
        (no_tags, {"tags": {"required": True}}, f"file {no_tags / LASTFM_TAGS_FILE} not found"),
        (garbage, {}, f"file {garbage / LASTFM_PLAYS_FILE} line 1: wrong number of fields"),
    ]
    for folder, config, message in cases:
        with pytest.raises(InputError) as raised:
            run_job(spark, folder, out, config)
        assert message in str(raised.value)
        assert snapshot(out) == before, f"{folder.name}: the previous output changed"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------------------------------------------
# The per-user leave-one-out split (split.protocol=leave_one_out) and the views that read it
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_leave_one_out_split_end_to_end_and_the_views_read_it(lastfm_input, tmp_path):
    """With min_length 1 and max_length 3, per user (interactions = plays of songs in the vocabulary, in plays/
    order): the train rows in id order are the history without its last two plays, valid = [3rd latest, 2nd
    latest], test = [2nd latest, latest]; the next_song view makes one test example per user (latest from 2nd
    latest) and the leave-one-out set holds the latest song of every user as its positive."""
    from musicrec.data import Data, DataConfig

    input_dir, _ = lastfm_input
    out = tmp_path / "loo"
    result = run_features(input_dir, out, "--set", "split.protocol=leave_one_out", "--set", "sequences.min_length=1",
                          "--set", "sequences.max_length=3")
    assert result.returncode == 0, result.stderr[-4000:]
    manifest = json.loads((out / "_MANIFEST.json").read_text())
    assert manifest["config"]["split"]["protocol"] == "leave_one_out"
    assert manifest["split_starts"] == {"valid": None, "test": None}
    song_index = {r["token"]: r["index"] for r in read_table(out / "vocab/song")}
    user_index = {r["token"]: r["index"] for r in read_table(out / "vocab/user")}
    history: dict[int, list[int]] = {}
    for play in sorted(read_table(out / "plays"), key=lambda r: (r["session_id"], r["position"])):
        if play["track_id"] in song_index:  # the tag policy's survivors are exactly the vocabulary's songs
            history.setdefault(user_index[play["user_id"]], []).append(song_index[play["track_id"]])
    rows = {split: sorted(read_table(out / f"sessions/{split}"), key=lambda r: r["session_id"])
            for split in ("train", "valid", "test")}
    assert max(len(r["songs"]) for r in rows["train"]) == 3
    assert all(len(songs) >= 3 for songs in history.values())  # every user of this data is evaluated
    for user, songs in history.items():
        train = [s for r in rows["train"] if r["user_idx"] == user for s in r["songs"]]
        assert train == songs[:-2], f"user {user}"
        assert [r["songs"] for r in rows["valid"] if r["user_idx"] == user] == [songs[-3:-1]]
        assert [r["songs"] for r in rows["test"] if r["user_idx"] == user] == [songs[-2:]]
    counts = json.loads((out / "stats.json").read_text())["counts"]
    assert counts["loo_evaluated_users"] == len(history) and counts["loo_plays_in_no_split"] == 0
    assert counts["loo_train_plays"] == sum(len(songs) - 2 for songs in history.values())

    latest = {user: songs[-1] for user, songs in history.items()}
    examples = [b for b in Data(out, "next_song", DataConfig()).eval_loader("test")]
    got = {int(u): int(s) for b in examples for u, s in zip(b["user_idx"], b["next_song"])}
    assert got == latest and sum(len(b["user_idx"]) for b in examples) == len(latest)
    # negatives: as many as the user with most songs has songs it never played, none of them played by the user
    # anywhere (the test row's first song, the valid target, included)
    negatives = manifest["vocab_sizes"]["song"] - 2 - max(len(set(songs)) for songs in history.values())
    loo = [b for b in Data(out, "ncf", DataConfig(loo_negatives=negatives)).loo_loader("test")]
    candidates = {int(u): c.tolist() for b in loo for u, c in zip(b["user_idx"], b["candidates"])}
    assert {user: c[0] for user, c in candidates.items()} == latest
    assert all(not set(c[1:]) & set(history[user]) for user, c in candidates.items())


@pytest.mark.spark
def test_leave_one_out_without_a_user_to_evaluate_exits_with_the_reason(spark, tmp_path):
    """Every user has 2 plays: nobody has a valid and a test play, so the job refuses to publish and says why."""
    from musicrec.features.lastfm import run_job
    from musicrec.io import InputError

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / LASTFM_PLAYS_FILE).write_text("".join(
        f"user_{u}\t2009-01-0{u}T10:0{i}:00Z\t\tArtist\t{u}{i}aaaaaa-0000-0000-0000-000000000000\tTrack {i}\n"
        for u in (1, 2) for i in (0, 1)
    ))
    config = {"split": {"protocol": "leave_one_out"}, "sessions": {"min_sessions_per_user": 1}}
    with pytest.raises(InputError, match=r"split 'valid' would have no sessions .*split.protocol=leave_one_out "
                                         r"\(valid and test need a user with at least 3 plays\)"):
        run_job(spark, folder, tmp_path / "out", config)
    assert not (tmp_path / "out").exists()
