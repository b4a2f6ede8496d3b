"""Issue 14, the feature-job and data-reading side: one test per case of docs/FAILURE_MODES.md (cases 2, 3, 5 and 6;
the training-side cases 1, 4 and the rest of 5 have tests of their own). Each drives the real entry point or the real
component: ``jobs/features.py`` / ``jobs/train.py`` / ``jobs/fetch_tags.py`` / ``./spark-submit.sh`` as subprocesses,
the feature jobs' ``run_job`` in-process on the session's Spark, ``AtomicOutput`` killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lastfm_fakedata import write_lastfm_dataset
from musicrec.columns import MANIFEST_NAME
from musicrec.data.manifest import DataError, read_manifest
from musicrec.io import AtomicOutput, InputError, write_manifest
from musicrec.schemas import LASTFM_PLAYS_FILE
from test_features_kkbox import write_tiny_kkbox

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TINY_KKBOX = {"vocab": {"min_count": 1, "min_count_by_vocab": {"song": 1, "artist": 1}}, "output": {"min_files": 1}}


def run(command: list[str], **env: str) -> subprocess.CompletedProcess:
    """Run an entry point of this checkout (``PYTHONPATH`` = the checkout, so a copy of the repository tests its own
    code) and return the finished process."""
    return subprocess.run(command, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO), **env), capture_output=True,
                          text=True, timeout=600)


def one_error_line(result: subprocess.CompletedProcess, prog: str) -> str:
    """The single error line of a refused run (exit 2, no traceback, nothing else on stderr but warnings)."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), result.stderr[-3000:]
    return lines[0]


def tiny_kkbox(folder: Path) -> Path:
    """``write_tiny_kkbox``'s five files with 150 more train rows and members, so that its one rejected train row
    and one rejected member stay under the default 1% of ``clean.max_rejected_fraction``; songs.csv without its two
    bad rows."""
    write_tiny_kkbox(folder)
    with open(folder / "train.csv", "a", encoding="utf-8") as handle:
        handle.write("u2,s2,discover,Explore,online-playlist,1\n" * 150)
    with open(folder / "members.csv", "a", encoding="utf-8") as handle:
        handle.writelines(f"m{i},1,25,male,7,20110820,20170920\n" for i in range(150))
    songs = (folder / "songs.csv").read_text(encoding="utf-8").splitlines()
    (folder / "songs.csv").write_text("\n".join(line for line in songs if not line.startswith(("s2,1,", "s5,")))
                                      + "\n", encoding="utf-8")
    return folder


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def lastfm_out(spark, tmp_path_factory) -> Path:
    """A real Last.fm feature-job output (in-process ``run_job`` on tiny Last.fm-format files)."""
    from musicrec.features.lastfm import run_job

    input_dir = tmp_path_factory.mktemp("lastfm-in")
    write_lastfm_dataset(input_dir, users=12)
    out = tmp_path_factory.mktemp("lastfm-out") / "out"
    run_job(spark, input_dir, out, {"spark": {"partitions": 4}})
    return out


def train_cli(data: Path, run_dir: Path) -> subprocess.CompletedProcess:
    return run([PYTHON, "jobs/train.py", "--model", "gru", "--data", str(data), "--run-dir", str(run_dir),
                "--tracking-uri", "none", "--epochs", "1"])


def without_listing(out: Path) -> None:
    """Make ``out`` look like an output written before the manifest listed its files."""
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest.pop("files", None)
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))


# --------------------------------------------------------------------------------------------------------------
# Case 2: a data folder must not run code
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_case2_planted_common_metadata_is_refused_and_never_unpickled(lastfm_out, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:  # what a crafted _common_metadata holds: Petastorm's unpickler lets builtins.exec through
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('code ran')",)

    schema = pa.schema([("x", pa.int64())]).with_metadata({b"dataset-toolkit.unischema.v1": pickle.dumps(Payload())})
    for listed in (True, False):
        data = tmp_path / f"data-{listed}"
        shutil.copytree(lastfm_out, data)
        if not listed:
            without_listing(data)
        planted = data / "sessions" / "train" / "_common_metadata"
        pq.write_metadata(schema, planted)
        line = one_error_line(train_cli(data, tmp_path / f"run-{listed}"), "train.py")
        assert str(planted) in line
        assert ("not listed in _MANIFEST.json" if listed else "Parquet summary file") in line
        assert not marker.exists(), "the planted pickle was loaded"
    # the reader itself opens the data files only, so even a caller that skips read_manifest never unpickles it
    from musicrec.data.reader import iter_row_groups

    rows = sum(len(chunk["user_idx"]) for chunk in iter_row_groups(
        data / "sessions" / "train", ["user_idx"], [], seed=0, shuffle_row_groups=False))
    assert rows == json.loads((lastfm_out / MANIFEST_NAME).read_text())["row_counts"]["train"]
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------------------
# Case 3: a garbage input never replaces a good output
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.spark
def test_case3_kkbox_rejects_garbage_and_empty_splits_and_keeps_good_output(spark, tmp_path):
    from musicrec.features.kkbox import run_job

    good_in = tiny_kkbox(tmp_path / "good")
    out = tmp_path / "out"
    run_job(spark, good_in, out, TINY_KKBOX)
    before = tree(out)

    garbage = tmp_path / "garbage"
    shutil.copytree(good_in, garbage)
    lines = (garbage / "train.csv").read_text().splitlines()
    (garbage / "train.csv").write_text("\n".join([lines[0]] + [row.rsplit(",", 1)[0] + ",yes" for row in lines[1:]])
                                       + "\n")
    with pytest.raises(InputError) as raised:
        run_job(spark, garbage, out, TINY_KKBOX)
    assert str(raised.value) == (
        f"file {garbage / 'train.csv'} line 2: malformed CSV record (wrong number of fields or a value of the wrong "
        "type): 'u1,s1,my library,Local playlist more,local-library,yes' (160 of 160 rows rejected, more than "
        "clean.max_rejected_fraction=0.01)")
    assert tree(out) == before

    (garbage / "train.csv").write_text(lines[0] + "\n")  # a header and no rows: train would be empty
    with pytest.raises(InputError, match=r"split 'train' would have no rows .*refusing to publish an empty split"):
        run_job(spark, garbage, out, TINY_KKBOX)
    assert tree(out) == before
    write_tiny_kkbox(garbage)  # songs.csv with 2 of 5 rows rejected: more than 1% of that file
    with pytest.raises(InputError, match=r"songs\.csv line 4: duplicate song_id: .*\(2 of 5 rows rejected, more than "
                                         r"clean\.max_rejected_fraction=0\.01\)"):
        run_job(spark, garbage, out, TINY_KKBOX)
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage", "good", "out"]


# --------------------------------------------------------------------------------------------------------------
# Case 5: one clear line and exit 2 instead of a traceback
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_case5_unwritable_output_is_one_line_naming_out(tmp_path):
    input_dir = write_tiny_kkbox(tmp_path / "in")
    (tmp_path / "file").write_text("a file, not a folder")
    out = tmp_path / "file" / "out"
    line = one_error_line(run([PYTHON, "jobs/features.py", "kkbox", "--input", str(input_dir), "--output", str(out)]),
                          "features.py")
    assert line == f"features.py: error: output {out}: cannot write there ({tmp_path / 'file'} is not a folder)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "in"]


@pytest.mark.e2e
def test_case5_kkbox_set_with_wrong_type_is_one_line_before_spark(tmp_path):
    input_dir = write_tiny_kkbox(tmp_path / "in")
    result = run([PYTHON, "jobs/features.py", "kkbox", "--input", str(input_dir), "--output", str(tmp_path / "out"),
                  "--set", "split.valid_fraction=abc"])
    line = one_error_line(result, "features.py")  # one line also means: no Spark start-up lines before it
    assert line == "features.py: error: config: split.valid_fraction: expected a number, got 'abc'"
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
def test_case5_truncated_parquet_file_is_named(lastfm_out, tmp_path):
    for listed in (True, False):
        data = tmp_path / f"data-{listed}"
        shutil.copytree(lastfm_out, data)
        if not listed:
            without_listing(data)
        files = sorted((data / "sessions" / "train").glob("part-*.parquet"))
        assert len(files) >= 2
        victim = files[-1]  # not the first file: that one's footer gives the schema
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
        line = one_error_line(train_cli(data, tmp_path / f"run-{listed}"), "train.py")
        assert line.startswith(f"train.py: error: {victim}: ")
        assert ("bytes, _MANIFEST.json lists" if listed else "not a readable Parquet file") in line


# --------------------------------------------------------------------------------------------------------------
# Case 6: the smaller ones
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.spark
def test_case6_non_utf8_bytes_are_rejected_not_replaced(spark, tmp_path):
    from musicrec.features.kkbox import read
    from musicrec.features.kkbox.config import KkboxConfig
    from musicrec.features.lastfm.parse import read_plays

    plays = tmp_path / "plays.tsv"
    good = "user_000001\t2009-05-04T23:08:57Z\t\tArtist\t\tTrack"
    plays.write_bytes(good.encode() + b"\nuser_000001\t2009-05-04T23:09:57Z\t\tCaf\xe9\t\tTrack\n")
    rows = read_plays(spark, plays).select("artist_name", "reason", "raw").collect()
    assert [r["reason"] for r in rows] == [None, "invalid UTF-8 bytes"]
    assert rows[1]["raw"] == "user_000001\t2009-05-04T23:09:57Z\t\tCaf\ufffd\t\tTrack"  # the rejected copy

    songs = tmp_path / "songs.csv"
    songs.write_bytes(b"song_id,song_length,genre_ids,artist_name,composer,lyricist,language\n"
                      b"s1,1000,465,Beyonc\xe9,,,3\ns2,1000,465,Adele,,,52\n")
    marked = read.read_side_table(spark, songs, "songs.csv", read.songs_checks(), KkboxConfig())
    assert [r["_reason"] for r in marked.orderBy("_mid").collect()] == [
        "invalid UTF-8 bytes (or U+FFFD) in a text field", None]


@pytest.mark.spark
def test_case6_blank_lines_keep_physical_line_numbers(spark, tmp_path):
    from musicrec.features.kkbox import run_job

    input_dir = tiny_kkbox(tmp_path / "in")
    train = (input_dir / "train.csv").read_text().splitlines()
    (input_dir / "train.csv").write_text("\n".join(train[:3] + ["", "   "] + train[3:]) + "\n\n")
    members = (input_dir / "members.csv").read_text().splitlines()
    (input_dir / "members.csv").write_text("\n".join(members[:2] + ["\t"] + members[2:]) + "\n")
    summary = run_job(spark, input_dir, tmp_path / "out", TINY_KKBOX)
    assert summary["row_accounting"]["train.csv"]["input_rows"] == 160  # blank lines are not rows
    rejected = pq.read_table(tmp_path / "out" / "rejected" / "train.csv").to_pylist()
    assert [(r["line"], r["raw"]) for r in rejected] == [
        (10, "u1,s1,my library,Local playlist more,local-library,x")]  # line 8, after two blank lines
    assert (input_dir / "train.csv").read_text().splitlines()[9] == rejected[0]["raw"]
    rejected = pq.read_table(tmp_path / "out" / "rejected" / "members.csv").to_pylist()
    assert [(r["line"], r["raw"]) for r in rejected] == [(7, "u6,1,30,female,9,20160231,20170101")]


def _publish(out_dir: Path, text: str) -> None:
    with AtomicOutput(out_dir) as out:
        Path(out.path("x.txt")).write_text(text)
        write_manifest(out, dataset="lastfm", config={}, inputs={}, row_counts={}, vocab_sizes={},
                       features={}, splits={})


@pytest.mark.unit
def test_case6_publishing_leaves_out_present_or_recoverable(tmp_path):
    out_dir = tmp_path / "out"
    _publish(out_dir, "first")
    # a job killed (SIGKILL) while it stages: its staging folder and lock stay; while it runs, OUT is its alone
    script = ("import sys, time\nfrom pathlib import Path\nfrom musicrec.io import AtomicOutput\n"
              "with AtomicOutput(sys.argv[1]) as out:\n    Path(out.path('half.txt')).write_text('half')\n"
              "    print('staged', flush=True)\n    time.sleep(600)\n")
    job = subprocess.Popen([PYTHON, "-c", script, str(out_dir)], stdout=subprocess.PIPE, text=True,
                           env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert job.stdout.readline().strip() == "staged"
    with pytest.raises(InputError, match="is being written by another job"):
        _publish(out_dir, "concurrent")
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert any(p.name.startswith(".out.tmp-") for p in tmp_path.iterdir())
    _publish(out_dir, "second")  # the next run cleans up after it
    assert (out_dir / "x.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    # killed between the two renames of a swap that cannot exchange: OUT missing, the previous one beside it
    os.rename(out_dir, tmp_path / ".out.old-0123456789ab")
    (tmp_path / ".out.tmp-ba9876543210").mkdir()
    with pytest.raises(DataError, match=r"data folder not found: .*\.out\.old-0123456789ab beside it"):
        read_manifest(out_dir)
    with pytest.raises(RuntimeError):
        with AtomicOutput(out_dir):  # even a run that fails restores OUT first
            raise RuntimeError("stage failed")
    assert (out_dir / "x.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    # a swap exchanges the two folders in one step: a reader never finds OUT missing
    misses, stop = [], threading.Event()

    def poll() -> None:
        while not stop.is_set():
            if not (out_dir / MANIFEST_NAME).is_file():
                misses.append(1)

    poller = threading.Thread(target=poll)
    poller.start()
    for i in range(30):
        _publish(out_dir, f"run {i}")
    stop.set()
    poller.join()
    assert not misses and (out_dir / "x.txt").read_text() == "run 29"


@pytest.mark.e2e
def test_case6_spark_submit_leaves_no_temporary_folder(tmp_path):
    result = run([str(REPO / "spark-submit.sh"), "--version"], TMPDIR=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.e2e
def test_spark_submit_picks_the_local_drivers_jvm_flags_by_input_size(tmp_path):
    """spark-submit.sh's local driver: ParallelGC always, C1 only (TieredStopAtLevel=1) and AQE off for an --input
    under 64 MiB; MUSICREC_DRIVER_JAVA_OPTS replaces the JVM flags, a --conf spark.sql.adaptive.enabled the AQE
    setting. Read back from the driver JVM's own arguments and system properties (where spark-submit puts --conf)."""
    probe = tmp_path / "jvm_args.py"
    probe.write_text("from pyspark import SparkContext\nSparkContext._ensure_initialized()\n"
                     "bean = SparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()\n"
                     "aqe = SparkContext._jvm.java.lang.System.getProperty('spark.sql.adaptive.enabled')\n"
                     "print('JVM_ARGS', ' '.join(bean.getInputArguments()), 'AQE=' + str(aqe))\n")
    small, large = tmp_path / "small", tmp_path / "large"
    small.mkdir()
    large.mkdir()
    (small / "plays.tsv").write_text("u\t2009-05-04T23:08:57Z\n")
    with open(large / "plays.tsv", "wb") as handle:  # sparse: 65 MiB apparent size, nothing on disk
        handle.truncate(65 * 1024 * 1024)

    def jvm_args(folder: Path, *options: str, **env: str) -> str:
        result = run([str(REPO / "spark-submit.sh"), *options, str(probe), "--input", str(folder)],
                     MUSICREC_DRIVER_MEMORY="512m", **env)
        assert result.returncode == 0, result.stderr[-3000:]
        return next(line for line in result.stdout.splitlines() if line.startswith("JVM_ARGS"))

    small_args, large_args = jvm_args(small), jvm_args(large)
    assert "-XX:+UseParallelGC" in small_args and "-XX:TieredStopAtLevel=1" in small_args
    assert "-XX:+UseParallelGC" in large_args and "TieredStopAtLevel" not in large_args
    replaced = jvm_args(small, MUSICREC_DRIVER_JAVA_OPTS="-XX:+UseSerialGC")
    assert "-XX:+UseSerialGC" in replaced and "ParallelGC" not in replaced and "TieredStopAtLevel" not in replaced
    assert small_args.endswith("AQE=false") and large_args.endswith("AQE=None")  # None: Spark's default (on)
    assert jvm_args(small, "--conf", "spark.sql.adaptive.enabled=true").endswith("AQE=true")


@pytest.mark.e2e
def test_spark_submit_writes_then_maps_the_drivers_class_archive(tmp_path):
    """MUSICREC_JVM_ARCHIVE=create: the local driver dumps its classes at exit under a part name, renamed when the
    job succeeded; the next local driver maps that archive (read back from the JVM's own memory map: the JVM
    ignores an archive that does not fit without a word); MUSICREC_DRIVER_JAVA_OPTS leaves it out; a failed job
    leaves no archive and no part file."""
    probe = tmp_path / "probe.py"
    probe.write_text("import sys\nfrom pyspark import SparkContext\nSparkContext._ensure_initialized()\n"
                     "jvm = SparkContext._jvm\nbean = jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()\n"
                     "args = ' '.join(bean.getInputArguments())\n"
                     "maps = open(f'/proc/{jvm.java.lang.ProcessHandle.current().pid()}/maps').read()\n"
                     "print('JVM_ARGS', args)\nprint('MAPPED', sorted({line.split()[-1] for line in maps.splitlines()\n"
                     "                               if 'spark-driver-' in line}))\nsys.exit(int(sys.argv[1]))\n")
    archives = tmp_path / "jvm"
    env = {"MUSICREC_JVM_ARCHIVE_DIR": str(archives), "MUSICREC_DRIVER_MEMORY": "512m"}

    def submit(code: int, **more: str) -> str:
        result = run([str(REPO / "spark-submit.sh"), str(probe), str(code)], **env, **more)
        assert result.returncode == code, result.stderr[-2000:]
        return result.stdout

    submit(3, MUSICREC_JVM_ARCHIVE="create")
    assert not list(archives.glob("*"))
    submit(0, MUSICREC_JVM_ARCHIVE="create")
    [archive] = archives.iterdir()
    assert archive.name.startswith("spark-driver-") and archive.suffix == ".jsa" and archive.stat().st_size > 1e6
    used = submit(0)
    assert f"-XX:SharedArchiveFile={archive}" in used and f"MAPPED ['{archive}']" in used
    plain = submit(0, MUSICREC_DRIVER_JAVA_OPTS="-XX:+UseSerialGC")
    assert "JVM_ARGS" in plain and "SharedArchiveFile" not in plain and "MAPPED []" in plain


@pytest.mark.e2e
def test_jvm_archive_script_makes_the_archive_once_and_replaces_stale_ones(tmp_path):
    """scripts/jvm_archive.sh (what set-up runs): one small local job writes the archive even when the caller's
    environment names other JVM flags or a cluster master; archives of another Java/PySpark are removed; a second
    call is a no-op; when the job cannot run, a .failed marker stops the retries and set-up goes on."""
    archives = tmp_path / "jvm"
    archives.mkdir()
    (archives / "spark-driver-0000000000000000.jsa").write_bytes(b"stale")
    env = {"MUSICREC_JVM_ARCHIVE_DIR": str(archives), "MUSICREC_DRIVER_JAVA_OPTS": "-XX:+UseSerialGC",
           "MUSICREC_SPARK_MASTER": "spark://nowhere:7077"}
    made = run(["bash", str(REPO / "scripts" / "jvm_archive.sh")], **env)
    assert made.returncode == 0 and "ready:" in made.stderr, made.stderr[-3000:]
    [archive] = archives.iterdir()
    assert archive.name != "spark-driver-0000000000000000.jsa" and archive.stat().st_size > 1e6
    again = run(["bash", str(REPO / "scripts" / "jvm_archive.sh")], **env)
    assert again.returncode == 0 and again.stderr == "" and list(archives.iterdir()) == [archive]
    archive.unlink()
    broken = run(["bash", str(REPO / "scripts" / "jvm_archive.sh")], **env, JAVA_HOME=str(tmp_path / "no-java"))
    assert broken.returncode == 0 and "could not make the archive" in broken.stderr, broken.stderr[-3000:]
    [marker] = archives.iterdir()
    assert marker.name.endswith(".jsa.failed")
    assert run(["bash", str(REPO / "scripts" / "jvm_archive.sh")], **env, JAVA_HOME=str(tmp_path / "no-java")
               ).stderr == ""


@pytest.mark.e2e
def test_case6_spark_ui_of_a_local_job_listens_on_loopback_only(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from urllib.parse import urlparse\nfrom musicrec.spark import get_spark\n"
        "spark = get_spark('ui-probe')\nport = urlparse(spark.sparkContext.uiWebUrl).port\n"
        "for table in ('/proc/net/tcp', '/proc/net/tcp6'):\n"
        "    for row in open(table).read().splitlines()[1:]:\n"
        "        local, state = row.split()[1], row.split()[3]\n"
        "        if state == '0A' and int(local.rsplit(':', 1)[1], 16) == port:\n"
        "            print('LISTEN', local.rsplit(':', 1)[0])\nspark.stop()\n")
    result = run([str(REPO / "spark-submit.sh"), "--conf", "spark.ui.enabled=true", "--conf", "spark.ui.port=0",
                  str(probe)], MUSICREC_DRIVER_MEMORY="512m")
    assert result.returncode == 0, result.stderr[-3000:]
    addresses = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("LISTEN")]
    loopback = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
    assert addresses and set(addresses) <= loopback, addresses


@pytest.mark.e2e
def test_case6_fetch_tags_warns_before_sending_the_key_in_clear(tmp_path):
    plays = tmp_path / "plays.tsv"
    plays.write_text("user_000001\t2009-05-04T23:08:57Z\t\tCher\t5ad3a2a3-4bd4-4b3a-9f6c-1b0f2c1a0001\tBelieve\n")
    for root, warned in (("http://192.0.2.1:9/2.0/", True), ("http://127.0.0.1:9/2.0/", False)):
        result = run([PYTHON, "jobs/fetch_tags.py", "--plays", str(plays), "--out", str(tmp_path / "tags.tsv"),
                      "--api-root", root, "--limit", "0", "--no-progress"], LASTFM_API_KEY="k" * 32)
        assert result.returncode == 0, result.stderr[-2000:]
        warning = (f"fetch_tags.py: warning: --api-root {root} is plain http: the API key in every request crosses "
                   "the network unencrypted; use an https:// root")
        assert (warning in result.stderr.splitlines()) == warned, result.stderr


@pytest.mark.e2e
def test_case6_input_checks_run_before_spark_starts(tmp_path):
    kkbox_dir = write_tiny_kkbox(tmp_path / "in-kkbox")
    (kkbox_dir / "members.csv").unlink()
    (tmp_path / "in-lastfm").mkdir()
    for dataset, input_dir, name in (("kkbox", kkbox_dir, "members.csv"),
                                     ("lastfm", tmp_path / "in-lastfm", LASTFM_PLAYS_FILE)):
        result = run([PYTHON, "jobs/features.py", dataset, "--input", str(input_dir), "--output",
                      str(tmp_path / "out")])
        line = one_error_line(result, "features.py")  # one line: no Spark start-up lines
        assert line == f"features.py: error: file {input_dir / name} not found (expected in input folder {input_dir})"
        assert result.stdout == ""  # not even the resolved config: nothing ran
