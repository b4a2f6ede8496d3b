"""Stage tests of the KKBOX feature job (the package musicrec/features/kkbox/) on tiny inline data.

Each stage is pinned on its own (reading and rejects, row numbers, the name splitter on every separator the real
songs.csv uses, ISRC fields, member features incl. bad ``bd``, joins with unknown songs and members, the split, train-
only counts, standardization, the one-pass split writer), then the whole job runs in-process on five tiny crafted
files. The vocabulary mechanism the job uses (musicrec.features.vocab) is pinned in tests/test_features_shared.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F
from pyspark.sql import types as T

from musicrec import schemas
from musicrec.columns import ROW_ID
from musicrec.config import ConfigError, as_dict, load_config
from musicrec.features.kkbox import columns as C
from musicrec.features.kkbox import entities, numeric, output, read, side
from musicrec.features.kkbox.config import KkboxConfig, resolve_config
from musicrec.features.kkbox.job import run_job
from musicrec.io import AtomicOutput

CFG = KkboxConfig()
PERSON_SEPARATORS = CFG.multi_valued.person_separators
GENRE_SEPARATORS = CFG.multi_valued.genre_separators


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------------------
# Configuration (no Spark)
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_conf_file_mirrors_defaults_and_bad_keys_are_errors():
    assert resolve_config(load_config(None, "kkbox")) == KkboxConfig()
    assert resolve_config(as_dict(KkboxConfig())) == KkboxConfig()
    with pytest.raises(ConfigError, match=r"unknown key split\.valid_frac"):
        resolve_config({"split": {"valid_frac": 0.1}})
    with pytest.raises(ConfigError, match=r"unknown section 'spark'"):
        resolve_config({"spark": {}})
    with pytest.raises(ConfigError, match=r"split\.valid_fraction = 1\.5"):
        resolve_config({"split": {"valid_fraction": 1.5}})
    with pytest.raises(ConfigError, match=r"numeric\.age_min"):
        resolve_config({"numeric": {"age_min": 90}})
    with pytest.raises(ConfigError, match=r"min_count_by_vocab"):
        resolve_config({"vocab": {"min_count_by_vocab": {"songs": 2}}})
    assert KkboxConfig().clean.max_rejected_fraction == 0.01
    with pytest.raises(ConfigError, match=r"clean\.max_rejected_fraction = 2\.0: must be a number in \[0, 1\]"):
        resolve_config({"clean": {"max_rejected_fraction": 2}})
    with pytest.raises(ConfigError, match=r"clean\.max_rejected_fraction: expected a number, got 'abc'"):
        resolve_config({"clean": {"max_rejected_fraction": "abc"}})


@pytest.mark.unit
def test_small_helpers():
    assert entities.valid_cut(10, 0.2) == 8
    assert entities.valid_cut(3, 0.2) == 2  # round(0.6) = 1 validation row
    assert entities.valid_cut(0, 0.2) == 0
    assert entities.valid_cut(7, 0.0) == 7
    assert output.records_per_file({"train": 8, "valid": 2, "test": 5}, rows_per_file=1_000_000, min_files=2) == 1
    assert output.records_per_file({"train": 5_900_000, "valid": 1_475_000, "test": 0}, rows_per_file=1_000_000,
                              min_files=2) == 737_500
    assert output.records_per_file({"train": 9_000_000, "valid": 3_000_000}, rows_per_file=1_000_000, min_files=2) == \
        1_000_000
    assert side.separator_parts([r"\|", "/", r"\\", "、", r"\s[xX]\s", "-", "/"]) == ("|/\\、-", r"(?:\s[xX]\s)")
    assert side.separator_parts([r"\|"]) == ("|", None)
    output.check_row_accounting({"train.csv": {"input_rows": 10, "train": 7, "valid": 2, "rejected": 1}})
    with pytest.raises(RuntimeError, match="row accounting failed for train.csv"):
        output.check_row_accounting({"train.csv": {"input_rows": 10, "train": 7, "valid": 2, "rejected": 0}})


# --------------------------------------------------------------------------------------------------------------
# 1. Read: declared schemas, malformed rows, row numbers
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.spark
def test_read_train_marks_every_kind_of_bad_row(spark, tmp_path):
    path = write_csv(tmp_path / "train.csv", [
        "msno,song_id,source_system_tab,source_screen_name,source_type,target",
        "u1,s1,my library,Local playlist more,local-library,1",
        "u2,s2,discover,,online-playlist,0",  # empty screen name: fine (missing value)
        "u3,s3,radio,Radio",  # too few fields
        "u4,s4,radio,Radio,radio,1,extra",  # too many fields
        "u5,s5,radio,Radio,radio,yes",  # target not an integer
        "u6,s6,radio,Radio,radio,2",  # target not 0/1
        ",s7,radio,Radio,radio,1",  # missing msno
        "u8,,radio,Radio,radio,1",  # missing song_id
        ",,,,,",  # blank
        'u9,"s9 ""quoted""",a\\b,Radio,radio,0',  # doubled quotes and a backslash are data
        "u10,s10,,,,",  # target missing
    ])
    schema = schemas.KKBOX_TRAIN_SCHEMA
    marked_df = (
        read.read_kkbox_csv(spark, path, schema, file_label="train.csv")
        .transform(read.with_reject_reason, read.train_checks())
        .transform(read.with_raw_record, schema.fieldNames())
    )
    rows = sorted(marked_df.select("msno", "song_id", "source_system_tab", C.REASON_COL, C.RAW_COL, C.MID_COL)
                  .collect(), key=lambda r: r[C.MID_COL])
    reasons = [r[C.REASON_COL] for r in rows]
    malformed = read.malformed_check()[1]
    assert reasons == [None, None, malformed, malformed, malformed, "target is not 0 or 1", "missing msno",
                       "missing song_id", C.BLANK_REASON, None, "target is not 0 or 1"]
    assert rows[2][C.RAW_COL] == "u3,s3,radio,Radio"  # Spark's copy of the malformed record
    assert rows[5][C.RAW_COL] == "u6,s6,radio,Radio,radio,2"  # fields re-joined
    assert rows[0][C.RAW_COL] is None  # good rows carry no copy
    assert rows[9]["song_id"] == 's9 "quoted"' and rows[9]["source_system_tab"] == "a\\b"


@pytest.mark.spark
def test_read_follows_the_header_order(spark, tmp_path):
    path = write_csv(tmp_path / "members.csv", [
        "msno,bd,city,gender,registered_via,registration_init_time,expiration_date",  # bd and city swapped
        "u1,25,13,male,7,20150101,20170101",
    ])
    row = read.read_kkbox_csv(spark, path, schemas.KKBOX_MEMBERS_SCHEMA, file_label="members.csv").first()
    assert (row["city"], row["bd"]) == (13, 25)
    assert read.read_kkbox_csv(spark, path, schemas.KKBOX_MEMBERS_SCHEMA, file_label="m").columns[:7] == \
        schemas.KKBOX_MEMBERS_SCHEMA.fieldNames()


@pytest.mark.spark
def test_test_checks_blank_padding_and_missing_id(spark, tmp_path):
    path = write_csv(tmp_path / "test.csv", [
        "id,msno,song_id,source_system_tab,source_screen_name,source_type",
        "0,u1,s1,radio,Radio,radio",
        ",u2,s2,radio,Radio,radio",
        ",,,,,",
        ",,,,,",
    ])
    schema = schemas.KKBOX_TEST_SCHEMA
    reasons = [r[C.REASON_COL] for r in read.read_kkbox_csv(spark, path, schema, file_label="test.csv")
               .transform(read.with_reject_reason, read.test_checks()).orderBy(C.MID_COL).collect()]
    assert reasons == [None, "missing or negative id", C.BLANK_REASON, C.BLANK_REASON]


@pytest.mark.spark
def test_row_id_is_consecutive_in_file_order_across_partitions(spark, tmp_path):
    lines = ["msno,song_id,source_system_tab,source_screen_name,source_type,target"]
    lines += [f"u{i},s{i},tab,screen,type,{i % 2}" for i in range(2000)]
    path = write_csv(tmp_path / "train.csv", lines)
    old = {key: spark.conf.get(key) for key in ("spark.sql.files.maxPartitionBytes", "spark.sql.files.openCostInBytes")}
    spark.conf.set("spark.sql.files.maxPartitionBytes", "4096")  # several input partitions for a 40 KB file
    spark.conf.set("spark.sql.files.openCostInBytes", "0")
    try:
        scan_df = read.read_kkbox_csv(spark, path, schemas.KKBOX_TRAIN_SCHEMA, file_label="train.csv").cache()
        assert scan_df.rdd.getNumPartitions() > 3
        offsets, totals = read.partition_offsets(scan_df)
        numbered = scan_df.transform(read.with_row_id, offsets).select(ROW_ID, "msno").collect()
    finally:
        for key, value in old.items():
            spark.conf.set(key, value)
    assert totals == {"train.csv": 2000}
    assert len(offsets) == scan_df.rdd.getNumPartitions()
    assert sorted((r[ROW_ID], r["msno"]) for r in numbered) == [(i, f"u{i}") for i in range(2000)]
    assert read.with_row_id(scan_df, {}).select(ROW_ID).first()[0] is None


@pytest.mark.spark
def test_duplicate_keys_keep_the_first_good_row(spark):
    df = spark.createDataFrame(
        [("a", 0, None), ("b", 1, None), ("a", 2, None), ("c", 3, "malformed"), ("c", 4, None), (None, 5, "missing")],
        f"song_id string, {C.MID_COL} long, {C.REASON_COL} string",
    )
    result = {r[C.MID_COL]: r[C.REASON_COL] for r in read.with_duplicate_reason(df, "song_id").collect()}
    assert result == {0: None, 1: None, 2: "duplicate song_id", 3: "malformed", 4: None, 5: "missing"}


@pytest.mark.spark
def test_swallowed_records_and_bad_dates_are_rejected(spark):
    extra_df = spark.createDataFrame(
        [("s1", "Love mode feat.PE'Z,\nKwb6018TAr5I1hXuOLILzlfN6fGAxXd2IHcaZaJ5FKg=,懷念故鄉,", "TW1", None),
         ("s2", "two\nlines but no record", "TW2", None), ("s3", None, None, None)],
        f"song_id string, name string, isrc string, {C.CORRUPT_COL} string",
    )
    reasons = [r[C.REASON_COL] for r in extra_df.transform(read.with_reject_reason, read.extra_checks()).collect()]
    assert reasons == ["name swallows the following records (a quote that never closes)", None, None]
    members_df = spark.createDataFrame(
        [("u1", "20150101", "20170101", None), ("u2", "20170231", "20170101", None),
         ("u3", "20150101", "2017-01-01", None), ("u4", None, None, None)],
        f"msno string, registration_init_time string, expiration_date string, {C.CORRUPT_COL} string",
    )
    reasons = [r[C.REASON_COL] for r in members_df.transform(read.with_reject_reason, read.members_checks()).collect()]
    assert reasons == [None, "registration_init_time is not a yyyymmdd date", "expiration_date is not a yyyymmdd date",
                       None]


# --------------------------------------------------------------------------------------------------------------
# 2. Side tables
# --------------------------------------------------------------------------------------------------------------
SPLIT_CASES = [
    ("TEDDY|  FUTURE BOUNCE|  Bekuh BOOM", ["TEDDY", "FUTURE BOUNCE", "Bekuh BOOM"]),  # | (real row 2)
    ("Skot Suyama陶山/蔡詩蕓 Dominique Tsai", ["Skot Suyama陶山", "蔡詩蕓 Dominique Tsai"]),  # /
    ("朱元冰\\蘇桐樂", ["朱元冰", "蘇桐樂"]),  # backslash
    ("Jerome Kern; Dorothy Fields", ["Jerome Kern", "Dorothy Fields"]),  # ;
    ("Chris Brown feat. Usher & Rick Ross", ["Chris Brown", "Usher", "Rick Ross"]),  # feat. and &
    ("祁隆+容舒", ["祁隆", "容舒"]),  # +
    ("石頭、阿信", ["石頭", "阿信"]),  # 、
    ("葉倩文＆林子祥", ["葉倩文", "林子祥"]),  # full-width &
    ("吳業坤／Cousin Fung", ["吳業坤", "Cousin Fung"]),  # full-width /
    ("Braddon Williams＋Greg Agar", ["Braddon Williams", "Greg Agar"]),  # full-width +
    ("新山詩織，菜穗", ["新山詩織", "菜穗"]),  # full-width comma
    ("meg featuring 東京ブラススタイル", ["meg", "東京ブラススタイル"]),  # featuring
    ("Christian Amby ft. Joe Forrest", ["Christian Amby", "Joe Forrest"]),  # ft.
    ("Pitbull FEAT. G.R.L.", ["Pitbull", "G.R.L."]),  # case-insensitive
    ("feat.初音未來", ["初音未來"]),  # no space after the dot
    ("AMBER X LUNA", ["AMBER", "LUNA"]),  # " X "
    ("Lim Seul Ong x JOY", ["Lim Seul Ong", "JOY"]),  # " x "
    ("ひとしずく×やま△", ["ひとしずく", "やま△"]),  # ×
    ("\u00a0周杰倫\u00a0|\t林俊傑 \u3000", ["周杰倫", "林俊傑"]),  # U+00A0, tab, U+3000 trimmed
    ("A||B|", ["A", "B"]),  # empty pieces dropped
    ("A|A|B", ["A", "B"]),  # repeated names kept once
    ("Of Monsters and Men", ["Of Monsters and Men"]),  # " and " is not a separator
    ("Relax with Smooth Jazz", ["Relax with Smooth Jazz"]),  # nor " with "
    ("FTISLAND", ["FTISLAND"]),  # "ft" inside a word
    ("Whitefeather Productions", ["Whitefeather Productions"]),  # "feat" inside a word
    ("Malcolm X", ["Malcolm X"]),  # X not between spaces
    (" | ", None),  # nothing left
    (None, None),
]


@pytest.mark.spark
def test_split_names_on_every_separator(spark):
    df = spark.createDataFrame([(i, text) for i, (text, _) in enumerate(SPLIT_CASES)], "i int, text string")
    names = side.split_names(F.col("text"), PERSON_SEPARATORS, 8).alias("names")
    got = {r["i"]: r["names"] for r in df.select("i", names).collect()}
    assert [got[i] for i in range(len(SPLIT_CASES))] == [expected for _, expected in SPLIT_CASES]
    capped = df.where("i = 0").select(side.split_names(F.col("text"), PERSON_SEPARATORS, 2).alias("n")).first()["n"]
    assert capped == ["TEDDY", "FUTURE BOUNCE"]


@pytest.mark.spark
def test_with_song_lists(spark):
    df = spark.createDataFrame(
        [("s1", "864|857|850", "A feat. B", "C/D", None), ("s2", None, "\u00a0E ", "", "F"),
         ("s3", "465", None, None, None)],
        "song_id string, genre_ids string, artist_name string, composer string, lyricist string",
    )
    result = df.transform(side.with_song_lists, genre_separators=GENRE_SEPARATORS,
                          person_separators=PERSON_SEPARATORS, max_multi=2)
    expected = spark.createDataFrame(
        [("s1", ["864", "857"], ["A", "B"], ["C", "D"], None, "A feat. B"),
         ("s2", None, ["E"], None, ["F"], "E"),
         ("s3", ["465"], None, None, None, None)],
        "song_id string, genre_list array<string>, artist_list array<string>, composer_list array<string>, "
        "lyricist_list array<string>, _artist_key string",
    )
    assert_df_equality(result.select(expected.columns), expected, ignore_nullable=True, ignore_row_order=True)


@pytest.mark.spark
def test_isrc_country_and_year(spark):
    df = spark.createDataFrame(
        [("TWUM71200043",), ("usum71600015",), ("GBAYE9900001",), ("JPB600610001",), ("QMZSY1700015",),
         ("TWUM7",), ("12UM71200043",), ("TWUM7AB00043",), (None,)],
        "isrc string",
    )
    result = df.transform(side.with_isrc_fields, pivot=18)
    expected = spark.createDataFrame(
        [("TWUM71200043", "TW", 2012), ("usum71600015", "US", 2016), ("GBAYE9900001", "GB", 1999),
         ("JPB600610001", "JP", 2006), ("QMZSY1700015", "QM", 2017), ("TWUM7", None, None),
         ("12UM71200043", None, None), ("TWUM7AB00043", None, None), (None, None, None)],
        "isrc string, isrc_country string, isrc_year int",
    )
    assert_df_equality(result, expected, ignore_nullable=True, ignore_row_order=True)


@pytest.mark.spark
def test_member_features_with_bad_bd_and_dates(spark):
    df = spark.createDataFrame(
        [("u1", 25, "20150101", "20170101"), ("u2", 0, "20160229", "20160301"), ("u3", -43, None, "20170101"),
         ("u4", 1051, "20110820", "19700101"), ("u5", 10, "20040326", "20040326"), ("u6", 80, None, None),
         ("u7", 81, "20170101", None), ("u8", None, "20150101", "20150102")],
        "msno string, bd int, registration_init_time string, expiration_date string",
    )
    result = df.transform(side.with_member_features, age_min=10, age_max=80).select("msno", "age", "membership_days",
                                                                                 "registration_year")
    expected = spark.createDataFrame(
        [("u1", 25, 731, 2015), ("u2", None, 1, 2016), ("u3", None, None, None), ("u4", None, None, 2011),
         ("u5", 10, 0, 2004), ("u6", 80, None, None), ("u7", None, None, 2017), ("u8", None, 1, 2015)],
        "msno string, age int, membership_days int, registration_year int",
    )
    assert_df_equality(result, expected, ignore_nullable=True, ignore_row_order=True)


# --------------------------------------------------------------------------------------------------------------
# 3. Split, entity tables and joins
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.spark
def test_with_split_cuts_train_by_row_number(spark):
    df = spark.createDataFrame(
        [("train.csv", i) for i in range(5)] + [("test.csv", 0), ("test.csv", 9)],
        f"{C.FILE_COL} string, row_id long",
    )
    result = sorted((r[C.FILE_COL], r["row_id"], r["split"])
                    for r in df.transform(entities.with_split, cut=4).collect())
    assert result == [("test.csv", 0, "test"), ("test.csv", 9, "test")] + \
        [("train.csv", i, "train" if i < 4 else "valid") for i in range(5)]


@pytest.mark.spark
def test_plays_unknown_songs_and_members(spark):
    events_df = spark.createDataFrame(
        [("u1", "s1", "train"), ("u1", "s1", "train"), ("u2", "s2", "train"), ("u2", "s3", "valid"),
         ("u9", "s4", "test")],
        "msno string, song_id string, split string",
    )
    songs_df = spark.createDataFrame(
        [("s1", 200000, "465", "Artist A", None, None, 3), ("s2", 180000, None, "Artist A", "C", None, 52),
         ("s3", 190000, None, None, None, None, -1)],
        "song_id string, song_length long, genre_ids string, artist_name string, composer string, lyricist string, "
        "language int",
    )
    extra_df = spark.createDataFrame([("s1", "TW", 2012), ("s4", "US", 1999)],
                                     "song_id string, isrc_country string, isrc_year int")
    song_info_df = (
        entities.plays_by_split(events_df, ["song_id"])
        .transform(entities.join_song_info, songs_df, extra_df)
        .transform(side.with_song_lists, genre_separators=GENRE_SEPARATORS, person_separators=PERSON_SEPARATORS,
                   max_multi=8)
        .transform(entities.with_artist_counts)
    )
    got = {r["song_id"]: (r["_plays_train"], r["_plays_valid"], r["_plays_test"], r[C.ARTIST_COUNT], r[C.HAS_SONG],
                          r[C.HAS_EXTRA], r["isrc_country"]) for r in song_info_df.collect()}
    assert got == {
        "s1": (2, 0, 0, 3, True, True, "TW"),  # artist A: 2 train plays of s1 + 1 of s2
        "s2": (1, 0, 0, 3, True, False, None),
        "s3": (0, 1, 0, None, True, False, None),  # played in valid only; no artist -> null
        "s4": (0, 0, 1, None, False, True, "US"),  # not in songs.csv, but its ISRC is known
    }
    members_df = spark.createDataFrame([("u1", 1, "male", 7, 25, 700, 2015), ("u2", 13, None, 9, None, None, 2016)],
                                       "msno string, city int, gender string, registered_via int, age int, "
                                       "membership_days int, registration_year int")
    user_info_df = entities.plays_by_split(events_df, ["msno"]).transform(entities.join_member_info, members_df)
    got = {r["msno"]: (r["_plays_train"], r[C.HAS_MEMBER], r["city"]) for r in user_info_df.collect()}
    assert got == {"u1": (2, True, 1), "u2": (1, True, 13), "u9": (0, False, None)}
    summary = numeric.split_summary(song_info_df, user_info_df)
    assert summary["train"] == {"events": 3, "unknown_song_events": 0, "no_extra_info_events": 1,
                                "no_artist_events": 0, "songs": 2, "max_song_events": 2,
                                "unknown_member_events": 0, "users": 2, "max_user_events": 2}
    assert summary["valid"]["no_artist_events"] == 1 and summary["test"]["unknown_song_events"] == 1
    assert summary["test"]["unknown_member_events"] == 1


# --------------------------------------------------------------------------------------------------------------
# 4. Numeric features: train-part statistics only, missing -> 0
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.spark
def test_standardization_uses_train_plays_as_weights_and_exact_sums(spark):
    # two songs: x = 1.0 with 1 train play, x = 3.0 with 3 train plays; one without x; one played only in test
    df = spark.createDataFrame([(1.0, 5.0, 1), (3.0, 5.0, 3), (None, 5.0, 2), (100.0, None, 0)],
                               "x double, flat double, _plays_train long")
    moments = numeric.moment_sums(df, ["x", "flat"], weight_col="_plays_train")
    assert moments["x"] == (4, 10 * 10**6, 28 * 10**12)  # events: 1, 3, 3, 3 -> sum 10, sum of squares 28
    stats = numeric.standardization_stats(moments)
    assert stats["x"] == {"mean": 2.5, "std": pytest.approx(0.8660254)}  # 100.0 (test only) not used
    assert stats["flat"] == {"mean": 5.0, "std": 0.0}
    assert numeric.standardization_stats({"none": (0, 0, 0)}) == {"none": {"mean": None, "std": None}}
    result = df.transform(numeric.with_standardized, stats).select("x", "flat")
    expected = spark.createDataFrame(
        [((1.0 - 2.5) / 0.8660254, 0.0), ((3.0 - 2.5) / 0.8660254, 0.0), (0.0, 0.0), ((100.0 - 2.5) / 0.8660254, 0.0)],
        "x float, flat float",
    )
    assert_df_equality(result, expected, ignore_nullable=True, ignore_row_order=True, allow_nan_equality=True)


@pytest.mark.spark
def test_numeric_features_log_counts_and_bad_lengths(spark):
    df = spark.createDataFrame([(0, 25, None, None, 0, 3, None), (-5, None, 10, 2016, 7, 0, 1)],
                               "song_length long, age int, membership_days int, registration_year int, "
                               "song_count long, user_count long, artist_count long")
    rows = df.transform(numeric.with_numeric_features, log1p_counts=True).collect()
    assert rows[0]["song_length"] is None and rows[1]["song_length"] is None
    assert rows[0]["song_count"] == 0.0 and rows[1]["song_count"] == pytest.approx(2.0794415)  # log1p(7)
    assert rows[0]["artist_count"] is None
    assert df.transform(numeric.with_numeric_features, log1p_counts=False).collect()[1]["song_count"] == 7.0


# --------------------------------------------------------------------------------------------------------------
# 5. Output
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.spark
def test_write_splits_one_pass_no_shuffle_and_empty_split(spark, tmp_path):
    schema = output.output_schema()
    row = {f.name: (1 if isinstance(f.dataType, T.IntegerType) else [2, 1] if isinstance(f.dataType, T.ArrayType)
                    else 0.5) for f in schema.fields}
    data = [{**row, "row_id": i, "split": "train" if i < 6 else "test"} for i in reversed(range(9))]
    df = spark.createDataFrame(data, T.StructType([T.StructField("split", T.StringType())] + schema.fields))
    with AtomicOutput(tmp_path / "out") as out:
        output.write_splits(df.select("split", *schema.fieldNames()).coalesce(1), out, max_records_per_file=2)
    root = tmp_path / "out"
    assert sorted(p.name for p in root.iterdir()) == ["test", "train", "valid"]
    train = pq.read_table(root / "train")
    assert train.column_names == schema.fieldNames() and train.num_rows == 6
    files = sorted((root / "train").glob("*.parquet"))
    assert [pq.read_table(f).column("row_id").to_pylist() for f in files] == [[0, 1], [2, 3], [4, 5]]
    assert pq.read_table(root / "valid").num_rows == 0 and pq.read_table(root / "valid").column_names == \
        schema.fieldNames()


# --------------------------------------------------------------------------------------------------------------
# The whole job in-process on five tiny crafted files
# --------------------------------------------------------------------------------------------------------------
def write_tiny_kkbox(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / "train.csv", [
        "msno,song_id,source_system_tab,source_screen_name,source_type,target",
        "u1,s1,my library,Local playlist more,local-library,1",  # row 0
        "u1,s2,my library,Local playlist more,local-library,1",
        "u2,s1,discover,,online-playlist,0",
        "u2,s3,radio,Radio,radio,0",  # s3: played song not in songs.csv
        "u3,s1,radio,Radio,radio,1",  # u3: member with a bad bd
        "u4,s2,search,Search,song,0",  # u4: not in members.csv
        "u1,s1,my library,Local playlist more,local-library,x",  # row 6: malformed -> rejected (line 8)
        "u2,s2,discover,Explore,online-playlist,1",  # row 7
        "u1,s2,my library,Local playlist more,local-library,0",  # row 8: valid (cut = 10 - 2 = 8)
        "u9,s9,radio,Radio,radio,1",  # row 9: valid; unknown member and song
    ])
    write_csv(folder / "test.csv", [
        "id,msno,song_id,source_system_tab,source_screen_name,source_type",
        "0,u1,s1,my library,Local playlist more,local-library",
        "1,u5,s4,radio,Radio,radio",
        ",,,,,",
        ",,,,,",
    ])
    write_csv(folder / "songs.csv", [
        "song_id,song_length,genre_ids,artist_name,composer,lyricist,language",
        's1,247640,465,張信哲 (Jeff Chang),"TEDDY|  FUTURE BOUNCE",何啟弘,3',
        "s2,197328,444|1259,Chris Brown feat. Usher & Rick Ross,,,52",
        "s2,1,1,duplicate row,,,1",  # duplicate song_id -> rejected
        "s4,,,\u00a0AMBER X LUNA,,,-1",
        "s5,notanumber,465,X,,,3",  # malformed song_length -> rejected
    ])
    write_csv(folder / "members.csv", [
        "msno,city,bd,gender,registered_via,registration_init_time,expiration_date",
        "u1,1,25,male,7,20110820,20170920",
        "u2,13,0,,4,20150628,20170622",
        "u3,5,1051,female,9,20150906,19700101",
        "u5,1,30,female,9,20160101,20170101",
        "u6,1,30,female,9,20160231,20170101",  # impossible date -> rejected
    ])
    (folder / "song_extra_info.csv").write_text(
        "song_id,name,isrc\n"
        "s1,我們,TWUM71200043\n"
        's2,"two\nlines",USUM71600015\n'  # a quoted newline (multiLine read)
        "s3,Only in extra,GBAYE9900001\n",
        encoding="utf-8",
    )
    return folder


def read_rows(path: Path) -> list[dict]:
    return sorted(pq.read_table(path).to_pylist(), key=lambda r: r.get("row_id") or 0)


@pytest.mark.spark
def test_run_job_on_tiny_files_counts_every_row(spark, tmp_path):
    input_dir = write_tiny_kkbox(tmp_path / "in")
    out = tmp_path / "out"
    config = {"clean": {"max_rejected_fraction": 0.5},  # 1 of 10 train rows, 2 of 5 songs are rejected on purpose
              "vocab": {"min_count": 1, "min_count_by_vocab": {"song": 1, "artist": 1}},
              "output": {"min_files": 1}}
    summary = run_job(spark, input_dir, out, config)

    accounting = summary["row_accounting"]
    assert accounting["train.csv"] == {"input_rows": 10, "train": 7, "valid": 2, "rejected": 1}
    assert accounting["test.csv"] == {"input_rows": 4, "test": 2, "rejected": 0, "blank": 2}
    assert accounting["songs.csv"] == {"input_rows": 5, "kept": 3, "rejected": 2}
    assert accounting["members.csv"] == {"input_rows": 5, "kept": 4, "rejected": 1}
    assert accounting["song_extra_info.csv"] == {"input_rows": 3, "kept": 3, "rejected": 0}
    manifest = json.loads((out / "_MANIFEST.json").read_text())
    assert manifest["row_accounting"] == accounting and manifest["dataset"] == "kkbox"
    assert manifest["row_counts"] == {"train": 7, "valid": 2, "test": 2, "rejected": 4, "blank": 2}
    counts = summary["event_counts"]
    assert counts["train_unknown_song_events"] == 1 and counts["train_unknown_member_events"] == 1
    assert counts["valid_unknown_song_events"] == 1 and counts["valid_unknown_member_events"] == 1
    assert counts["train_no_extra_info_events"] == 0 and counts["test_no_extra_info_events"] == 1

    rejected = pq.read_table(out / "rejected" / "train.csv").to_pylist()
    assert [(r["file"], r["line"], r["raw"]) for r in rejected] == [
        ("train.csv", 8, "u1,s1,my library,Local playlist more,local-library,x")]
    assert sorted(r["reason"] for r in pq.read_table(out / "rejected" / "songs.csv").to_pylist()) == [
        "duplicate song_id", "malformed CSV record (wrong number of fields or a value of the wrong type)"]

    train = read_rows(out / "train")
    assert [r["row_id"] for r in train] == [0, 1, 2, 3, 4, 5, 7]
    vocab = {name: {r["token"]: r["index"] for r in pq.read_table(out / "vocab" / name).to_pylist()}
             for name in ("song", "artist", "composer", "user", "city", "source_screen_name", "isrc_year")}
    assert vocab["song"] == {"s1": 2, "s2": 3, "s3": 4}  # 3, 3 and 1 train plays; ties by token
    assert vocab["user"] == {"u2": 2, "u1": 3, "u3": 4, "u4": 5}  # 3, 2, 1 and 1 train events
    # every artist has 3 train plays: ties broken by token (code point order)
    assert vocab["artist"] == {"Chris Brown": 2, "Rick Ross": 3, "Usher": 4, "張信哲 (Jeff Chang)": 5}
    first = train[0]  # u1 plays s1
    assert (first["user_idx"], first["song_idx"], first["target"], first["id"]) == (3, 2, 1, None)
    assert first["artist_idx"] == [5] and first["composer_idx"] == [vocab["composer"]["TEDDY"],
                                                                    vocab["composer"]["FUTURE BOUNCE"]] == [3, 2]
    assert first["isrc_year_idx"] == vocab["isrc_year"]["2012"] and first["lyricist_idx"] == [2]
    s2_row = train[1]  # "Chris Brown feat. Usher & Rick Ross", genres 444|1259
    assert s2_row["artist_idx"] == [2, 4, 3] and s2_row["genre_idx"] == [3, 2] and first["genre_idx"] == [4]
    assert s2_row["composer_idx"] == [1] and s2_row["lyricist_idx"] == [1]
    s3_row = train[3]  # song not in songs.csv, but in song_extra_info
    assert s3_row["genre_idx"] == [1] and s3_row["language_idx"] == 1 and s3_row["isrc_country_idx"] > 1
    assert s3_row["song_length"] == 0.0 and s3_row["artist_count"] == 0.0  # missing -> the train mean
    assert train[4]["age"] == 0.0 and train[5]["city_idx"] == 1  # bd 1051 -> missing; u4 has no member row
    assert train[2]["source_screen_name_idx"] == 1  # empty screen name -> 1
    test = read_rows(out / "test")
    assert [(r["row_id"], r["id"], r["target"]) for r in test] == [(0, 0, None), (1, 1, None)]
    assert test[1]["user_idx"] == 1 and test[1]["song_idx"] == 1  # unseen in the train part
    assert test[1]["artist_idx"] == [1, 1]  # AMBER, LUNA: not in the train part
    valid = read_rows(out / "valid")
    assert [r["row_id"] for r in valid] == [8, 9]

    # train-part statistics: mean 0 over the train rows that have the value
    train_ages = [r["age"] for r in train]
    assert sum(train_ages) == pytest.approx(0.0, abs=1e-6)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["counts"]["test.csv:blank"] == 2 and stats["stages"][0]["rows"] == 7
    # reruns giving identical tables: tests/test_kkbox_job_e2e.py::test_rerun_gives_identical_tables

