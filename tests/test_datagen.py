"""The synthetic data generator: determinism, CLI errors, planted structure, and the real files' formats.

The format test parses the real samples in ``shared/data`` and generated files with Spark and the same declared
schemas from ``musicrec.schemas``, and checks that both parse the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from musicrec import schemas as S
from musicrec.datagen import base64_ids, kkbox, lastfm, zipf_ranks

REPO = Path(__file__).resolve().parent.parent
LASTFM_TINY = 0.0005  # 9,549 rows, 30 users
KKBOX_TINY = 0.002  # 14,755 train rows, 5,114 test rows, 4,593 songs, 69 members

MBID_RE = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
KKBOX_ID_RE = r"^[A-Za-z0-9+/]{43}=$"
GENRE_IDS_RE = r"^\d+(\|\d+)*$"
ISRC_RE = r"^[A-Z]{2}[A-Z0-9]{10}$"
LASTFM_TS_FORMAT = "yyyy-MM-dd'T'HH:mm:ss'Z'"


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, Path]:
    """Both datasets at a tiny scale (seed 11), generated once for this module."""
    out = tmp_path_factory.mktemp("datagen")
    lastfm.generate(out / "lastfm", scale=LASTFM_TINY, seed=11, progress=False)
    kkbox.generate(out / "kkbox", scale=KKBOX_TINY, seed=11, progress=False)
    return {"lastfm": out / "lastfm", "kkbox": out / "kkbox"}


def _files(folder: Path) -> dict[str, bytes]:
    """Every file of ``folder`` by name, with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    """Run ``python -m musicrec.datagen ARGS`` from the repository root."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "musicrec.datagen", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


# ---------------------------------------------------------------------------------------------------------------------
# Determinism, sizes, helpers
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.unit
@pytest.mark.parametrize("module, scale", [(lastfm, LASTFM_TINY), (kkbox, KKBOX_TINY)], ids=["lastfm", "kkbox"])
def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path, module, scale):
    for name, seed in [("a", 5), ("b", 5), ("c", 6)]:
        module.generate(tmp_path / name, scale=scale, seed=seed, progress=False)
    first, again, other = (_files(tmp_path / name) for name in "abc")
    assert list(first) == list(again) == list(other)
    assert not [name for name in first if name.endswith(".tmp")]
    assert first == again
    assert all(first[name] != other[name] for name in first)


@pytest.mark.unit
def test_scale_one_gives_the_real_sizes_and_the_default_is_small():
    full = lastfm.sizes_for_scale(1.0)
    assert (full.rows, full.users, full.id_space) == (19_098_853, 992, 1000)
    k = kkbox.sizes_for_scale(1.0)
    assert (k.train, k.test, k.songs, k.members) == (7_377_418, 2_556_790, 2_296_320, 34_403)
    small = lastfm.sizes_for_scale(lastfm.DEFAULT_SCALE)
    assert 40 <= small.users <= 80 and 40_000 <= small.rows <= 80_000
    assert 30_000 <= kkbox.sizes_for_scale(kkbox.DEFAULT_SCALE).train <= 80_000


@pytest.mark.unit
def test_base64_ids_are_44_chars_of_32_bytes_and_stable_per_index():
    import base64

    ids = base64_ids(1234, np.arange(1000))
    again = base64_ids(1234, np.array([999, 0]))
    assert (ids[999], ids[0]) == tuple(again)
    assert len(set(ids)) == 1000
    assert all(len(base64.b64decode(x)) == 32 and len(x) == 44 and x.endswith("=") for x in ids)
    assert any("+" in x for x in ids) and any("/" in x for x in ids)


@pytest.mark.unit
def test_zipf_ranks_stay_in_range_and_favour_low_ranks():
    rng = np.random.default_rng(0)
    size = np.array([1, 5, 1000] * 10_000)
    ranks = zipf_ranks(rng.random(len(size)), size, 1.0)
    assert ranks.min() == 0 and (ranks < size).all()
    big = ranks[size == 1000]
    assert (big == 0).mean() > 5 * (big == 50).mean()


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_cli_help_and_a_tiny_run(tmp_path):
    shown = _run_cli("--help")
    assert shown.returncode == 0 and "--scale" in shown.stdout and "19,098,853" in shown.stdout
    done = _run_cli("lastfm", "--out", str(tmp_path / "new" / "dir"), "--scale", "0.0002", "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "new" / "dir").iterdir()) == sorted(
        [S.LASTFM_PLAYS_FILE, S.LASTFM_PROFILE_FILE, S.LASTFM_TAGS_FILE]
    )


@pytest.mark.unit
@pytest.mark.parametrize(
    "args",
    [
        ["lastfm", "--scale", "0"],
        ["kkbox", "--scale", "-1"],
        ["lastfm", "--scale", "nan"],
        ["lastfm", "--scale", "lots"],
        ["kkbox", "--scale", "1e6"],
        ["lastfm", "--seed", "-3"],
        ["spotify"],
        ["lastfm", "--out-dir-typo", "x"],
        ["lastfm", "--out", "{file}/sub"],
        ["kkbox", "--out", "{file}"],
    ],
    ids=["zero", "negative", "nan", "text", "huge", "seed", "dataset", "option", "under-a-file", "is-a-file"],
)
def test_cli_bad_arguments_exit_2_with_one_error_line(tmp_path, args):
    a_file = tmp_path / "plain.txt"
    a_file.write_text("not a directory")
    args = [a.format(file=a_file) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    result = _run_cli(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.unit
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write into read-only folders")
def test_cli_unwritable_directory_exits_2(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = _run_cli("lastfm", "--out", str(locked))
    finally:
        locked.chmod(0o700)
    assert result.returncode == 2 and "not writable" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------------------------------
# Planted structure and quirks (pandas, no Spark)
# ---------------------------------------------------------------------------------------------------------------------
def _read_plays(folder: Path) -> pd.DataFrame:
    """The generated plays file as strings, with an added parsed ``t`` column."""
    df = pd.read_csv(folder / S.LASTFM_PLAYS_FILE, sep="\t", header=None, names=S.LASTFM_PLAYS_COLUMNS, quoting=3,
                     keep_default_na=False, dtype=str)
    return df.assign(t=pd.to_datetime(df["timestamp"], format="%Y-%m-%dT%H:%M:%SZ"))


@pytest.mark.unit
def test_lastfm_quirks_and_order(generated):
    plays = _read_plays(generated["lastfm"])
    assert len(plays) == lastfm.sizes_for_scale(LASTFM_TINY).rows
    assert plays["user_id"].is_monotonic_increasing
    assert plays.groupby("user_id", sort=False)["t"].apply(lambda t: t.is_monotonic_decreasing).all()
    assert 0.01 < (plays["artist_id"] == "").mean() < 0.06
    assert 0.06 < (plays["track_id"] == "").mean() < 0.16
    assert ((plays["artist_id"] == "") & (plays["track_id"] != "")).sum() == 0
    assert 0.002 < plays.duplicated(list(S.LASTFM_PLAYS_COLUMNS)).mean() < 0.01
    tracked = plays[plays["track_id"] != ""]
    assert (tracked.groupby("track_id")[["artist_id", "artist_name", "track_name"]].nunique() == 1).all().all()
    assert plays["artist_name"].str.contains(r"[^\x00-\x7f]").any()


@pytest.mark.unit
def test_lastfm_sessions_and_next_song_structure(generated):
    plays = _read_plays(generated["lastfm"]).iloc[::-1].sort_values(["user_id", "t"], kind="stable")
    gap_s = plays.groupby("user_id")["t"].diff().dt.total_seconds()
    session = (gap_s.isna() | (gap_s > 1200)).cumsum()
    per_user = session.groupby(plays["user_id"]).nunique()
    assert (per_user >= 6).mean() > 0.85 and (per_user < 6).any()
    assert 120 <= gap_s[gap_s <= 1200].median() <= 360

    key = plays["track_id"].where(plays["track_id"] != "", plays["artist_name"] + "|" + plays["track_name"])
    same_session = session.eq(session.shift(1))
    pairs = pd.DataFrame({"prev": key.shift(1)[same_session], "next": key[same_session], "t": plays["t"][same_session]})
    cut = plays["t"].quantile(0.8)
    fit, held = pairs[pairs["t"] < cut], pairs[pairs["t"] >= cut]
    most_likely_next = fit.groupby("prev")["next"].agg(lambda s: s.value_counts().index[0])
    markov_hit = (held["prev"].map(most_likely_next) == held["next"]).mean()
    top10 = set(key[plays["t"] < cut].value_counts().index[:10])
    assert markov_hit > 0.2 > held["next"].isin(top10).mean()


@pytest.mark.unit
def test_lastfm_profiles_and_tags(generated):
    profile = (generated["lastfm"] / S.LASTFM_PROFILE_FILE).read_text(encoding="utf-8").splitlines()
    assert profile[0] == "#id\tgender\tage\tcountry\tregistered"
    users = sorted(set(_read_plays(generated["lastfm"])["user_id"]))
    assert [line.split("\t")[0] for line in profile[1:]] == users
    tags = pd.read_csv(generated["lastfm"] / S.LASTFM_TAGS_FILE, sep="\t", quoting=3, keep_default_na=False,
                       dtype={"traid": str, "tag": str, "count": int})
    assert list(tags.columns) == ["traid", "tag", "count"]
    assert tags["count"].between(0, 100).all() and tags["traid"].str.match(MBID_RE).all()
    assert tags.groupby("traid", sort=False)["count"].apply(lambda c: c.is_monotonic_decreasing).all()
    assert tags.groupby("traid").size().max() <= 20 and not tags.duplicated(["traid", "tag"]).any()
    plays = _read_plays(generated["lastfm"])
    played = set(plays.loc[plays["track_id"] != "", "track_id"])
    assert 0.7 < len(played & set(tags["traid"])) / len(played) < 0.95


@pytest.mark.unit
def test_kkbox_target_and_coverage(generated):
    folder = generated["kkbox"]

    def read(name):
        return pd.read_csv(folder / name, keep_default_na=False, dtype=str)

    train, test, songs, members, extra = (read(n) for n in S.KKBOX_FILES)
    target = train["target"].astype(int)
    assert 0.4 < target.mean() < 0.6
    rate = target.groupby(train["source_type"]).mean()
    assert rate["local-library"] > rate["radio"] + 0.25
    assert test["id"].astype(int).tolist() == list(range(len(test)))
    unlisted = ~pd.concat([train["song_id"], test["song_id"]]).isin(set(songs["song_id"]))
    assert 0.01 < unlisted.mean() < 0.06
    assert songs["song_id"].isin(set(extra["song_id"])).mean() > 0.95
    assert extra["name"].str.contains("\n").any() and extra["name"].str.contains('"').any()
    assert set(train["msno"]) | set(test["msno"]) <= set(members["msno"])
    assert (members["bd"].astype(int) == 0).mean() > 0.4 and (members["bd"].astype(int) < 0).any()
    assert songs["composer"].str.contains(r"\|  ").any() and songs["artist_name"].str.contains(" feat. ").any()


# ---------------------------------------------------------------------------------------------------------------------
# THE FORMAT TEST: real samples and generated files parse the same way with the declared schemas
# ---------------------------------------------------------------------------------------------------------------------
def _lastfm_reader(spark, schema, header: bool):
    return spark.read.options(sep="\t", header=header, quote="", mode="PERMISSIVE").schema(schema)


def _kkbox_reader(spark, schema):
    return spark.read.options(header=True, multiLine=True, escape='"', mode="PERMISSIVE").schema(schema)


def _read(spark, kind: str, schema, *paths: Path):
    """Read ``paths`` with ``schema`` plus a ``_corrupt_record`` column (a copy: the shared schema is not mutated)."""
    from pyspark.sql import types as T

    with_corrupt = T.StructType(list(schema.fields) + [T.StructField("_corrupt_record", T.StringType())])
    if kind == "kkbox":
        reader = _kkbox_reader(spark, with_corrupt)
    else:
        reader = _lastfm_reader(spark, with_corrupt, header=(kind == "lastfm-header"))
    return reader.option("columnNameOfCorruptRecord", "_corrupt_record").csv([str(p) for p in paths])


def _checks(file_name: str) -> dict:
    """Per file: named boolean Columns that must be False (or null) on every row of both files."""
    from pyspark.sql import functions as F

    def bad_regex(col_name, pattern):
        return F.col(col_name).isNotNull() & ~F.col(col_name).rlike(pattern)

    def bad_date(col_name, fmt):
        return F.col(col_name).isNotNull() & F.try_to_timestamp(F.col(col_name), F.lit(fmt)).isNull()

    kkbox_events = {"msno": bad_regex("msno", KKBOX_ID_RE), "song_id": bad_regex("song_id", KKBOX_ID_RE)}
    return {
        S.LASTFM_PLAYS_FILE: {
            "user_id": bad_regex("user_id", r"^user_\d{6}$") | F.col("user_id").isNull(),
            "timestamp": F.try_to_timestamp(F.col("timestamp"), F.lit(LASTFM_TS_FORMAT)).isNull(),
            "artist_id": bad_regex("artist_id", MBID_RE),
            "track_id": bad_regex("track_id", MBID_RE),
        },
        S.LASTFM_PROFILE_FILE: {
            "#id": bad_regex("#id", r"^user_\d{6}$"),
            "gender": bad_regex("gender", "^[mf]$"),
            "registered": bad_date("registered", "MMM d, yyyy"),
        },
        S.KKBOX_TRAIN_FILE: {**kkbox_events, "target": ~F.col("target").isin(0, 1)},
        S.KKBOX_TEST_FILE: {**kkbox_events, "id": F.col("id") < 0},
        S.KKBOX_SONGS_FILE: {
            "song_id": bad_regex("song_id", KKBOX_ID_RE),
            "genre_ids": bad_regex("genre_ids", GENRE_IDS_RE),
            "song_length": F.col("song_length") <= 0,
        },
        S.KKBOX_MEMBERS_FILE: {
            "msno": bad_regex("msno", KKBOX_ID_RE),
            "gender": bad_regex("gender", "^(male|female)$"),
            "registration_init_time": bad_date("registration_init_time", "yyyyMMdd"),
            "expiration_date": bad_date("expiration_date", "yyyyMMdd"),
        },
        S.KKBOX_EXTRA_FILE: {"song_id": bad_regex("song_id", KKBOX_ID_RE), "isrc": bad_regex("isrc", ISRC_RE)},
    }[file_name]


def _profiles_by_file(df, schema, checks: dict) -> dict[str, dict]:
    """One Spark job: per input file (keyed by its URI), rows, corrupt records, and per column nulls, empty strings
    and check violations."""
    from pyspark.sql import functions as F

    aggs = [F.count(F.lit(1)).alias("rows"), F.count("_corrupt_record").alias("corrupt")]
    for field in schema.fields:
        aggs.append(F.sum(F.col(field.name).isNull().cast("int")).alias(f"null {field.name}"))
        if field.dataType.typeName() == "string":
            aggs.append(F.sum((F.col(field.name) == "").cast("int")).alias(f"empty {field.name}"))
    aggs += [F.sum(F.coalesce(bad, F.lit(False)).cast("int")).alias(f"bad {name}") for name, bad in checks.items()]
    rows = df.groupBy(F.input_file_name().alias("_file")).agg(*aggs).collect()
    return {r["_file"]: {k: (v or 0) for k, v in r.asDict().items() if k != "_file"} for r in rows}


FORMAT_CASES = [
    ("lastfm", S.LASTFM_PLAYS_FILE, "lastfm-1k/userid-timestamp-artid-artname-traid-traname.head5000.tsv",
     S.LASTFM_PLAYS_SCHEMA),
    ("lastfm-header", S.LASTFM_PROFILE_FILE, "lastfm-1k/userid-profile.tsv", S.LASTFM_PROFILE_SCHEMA),
] + [("kkbox", name, f"kkbox/{name}", S.KKBOX_SCHEMAS[name]) for name in S.KKBOX_FILES]


@pytest.fixture()
def small_data_spark(spark):
    """The session's SparkSession with whole-stage code generation off: these queries read a few MB, and compiling
    a wide aggregation costs more than it saves. Restored afterwards."""
    key = "spark.sql.codegen.wholeStage"
    before = spark.conf.get(key)
    spark.conf.set(key, "false")
    yield spark
    spark.conf.set(key, before)


@pytest.mark.spark
@pytest.mark.parametrize("kind, file_name, real_path, schema", FORMAT_CASES, ids=[c[1] for c in FORMAT_CASES])
def test_generated_files_parse_like_the_real_samples(
    small_data_spark, shared_data, generated, kind, file_name, real_path, schema
):
    from pyspark.sql import functions as F

    spark = small_data_spark
    real_file = shared_data / real_path
    gen_file = generated["lastfm" if kind.startswith("lastfm") else "kkbox"] / file_name
    if kind != "lastfm":  # files with a header line: the same header, byte for byte
        assert gen_file.open("rb").readline() == real_file.open("rb").readline()
    paths = (real_file, gen_file)
    df = _read(spark, kind, schema, *paths)  # both in one read, so one Spark job per file type
    assert df.columns == schema.fieldNames() + ["_corrupt_record"]
    if file_name == S.KKBOX_TEST_FILE:
        df = df.where(F.col("id").isNotNull())  # the real sample is padded with ",,,,," rows
    by_file = _profiles_by_file(df, schema, _checks(file_name))
    assert len(by_file) == 2, list(by_file)
    real, gen = (next(v for uri, v in by_file.items() if uri.endswith(p.resolve().as_posix())) for p in paths)
    profiles = {"real": real, "generated": gen}
    assert real["rows"] > 0 and gen["rows"] > 0
    for label, prof in profiles.items():
        assert prof["corrupt"] == 0, (label, prof)
        assert not {k: v for k, v in prof.items() if k.startswith(("empty ", "bad ")) and v}, (label, prof)
    null_columns = {
        label: sorted(k for k, v in prof.items() if k.startswith("null ") and v) for label, prof in profiles.items()
    }
    assert null_columns["real"] == null_columns["generated"]  # empty field -> null, in the same columns


@pytest.mark.spark
def test_generated_track_tags_parse_with_the_declared_schema(spark, generated):
    from pyspark.sql import functions as F

    df = _read(spark, "lastfm-header", S.LASTFM_TAGS_SCHEMA, generated["lastfm"] / S.LASTFM_TAGS_FILE)
    row = df.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count("_corrupt_record").alias("corrupt"),
        F.sum((~F.col("traid").rlike(MBID_RE)).cast("int")).alias("bad_id"),
        F.sum((~F.col("count").between(0, 100) | F.col("count").isNull() | F.col("tag").isNull()).cast("int"))
        .alias("bad"),
    ).first()
    assert row["rows"] > 1000 and row["corrupt"] == 0 and row["bad_id"] == 0 and row["bad"] == 0
