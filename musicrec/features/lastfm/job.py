"""The Last.fm 1K feature job, step by step (``run_job``); each step is a ``StepTimer`` step: its Spark jobs are
described as ``lastfm: <step>`` and it prints ``[features] lastfm: <step>: <seconds>s``.

window bounds    ``window.*`` -> ``[start, end)`` (the month options cost one more scan of the text)
read+sessionize  ``read_plays`` -> ``with_play_levels`` (one scan, one shuffle, one sorted window pass), cached
rejected         ``OUT/rejected/<plays file>/``
plays            ``kept_plays`` -> ``OUT/plays/``
stats            per-stage column stats of parsed > tracked > in window > deduplicated > plays, in one job; run
                 beside the steps from rejected to song_tags (``progress.concurrently``: both read only the cache)
tags             ``read_tags`` -> ``top_tags_of_played``; ``OUT/rejected/<tags file>/``; the tag policy
vocabularies     user, song, artist over the plays and tag over the song tags -> ``OUT/vocab/<name>/``
song_tags        ``build_song_lookup`` -> ``OUT/song_tags/``
sessions         ``build_sessions`` -> ``split_cutoffs`` + ``with_split`` (``split.protocol: global_time``) or
                 ``holdout.loo_session_rows`` (``leave_one_out``) -> ``OUT/sessions/{train,valid,test}/``
report           ``stats.json`` / ``stats.md`` and the manifest; everything inside one ``AtomicOutput``
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any, Callable

from pyspark import StorageLevel
from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from musicrec.columns import (
    ARTIST_ID, COUNT, INDEX, LENGTH, PLAYS_DIR, REASON, REJECTED_DIR, SESSION_ID, SESSIONS_DIR, SONG_IDX, SONG_TAGS,
    SONG_TAGS_DIR, SONGS, SPLIT, SPLITS, START_TS, TAGS, TEST, TOKEN, TRACK_ID, USER, USER_IDX,
    VOCAB_DIR,
)
from musicrec.config import as_dict
from musicrec.features.lastfm.config import LEAVE_ONE_OUT, LastfmConfig, format_instant, resolve_config
from musicrec.features.lastfm.holdout import loo_counts, loo_session_rows
from musicrec.features.lastfm.parse import RAW_COLUMNS, TAGS_COLUMNS, read_plays, read_tags, write_rejects
from musicrec.features.lastfm.sequences import build_sessions, split_cutoffs, with_split, write_splits
from musicrec.features.lastfm.sessionize import (
    LEVEL, LEVEL_DEDUPED, LEVEL_PARSED, LEVEL_REJECTED, STAGE_LEVELS, first_last_eligible, kept_plays, level_summary,
    stage_counts, with_play_levels,
)
from musicrec.features.lastfm.tags import apply_tag_policy, build_song_lookup, no_song_tags, top_tags_of_played
from musicrec.features.progress import StepTimer, concurrently
from musicrec.features.rejects import pin_file_splits
from musicrec.features.stats import StatsReport, column_stats, column_stats_by_level
from musicrec.features.vocab import build_vocabs, write_vocabs
from musicrec.io import (
    AtomicOutput, InputError, check_header, check_nonempty_splits, check_output, file_fingerprint, parquet_rows,
    require_files, require_nonempty, write_manifest,
)
from musicrec.spark import use_sort_aggregation

DATASET = "lastfm"
VOCAB_NAMES = ["user", "song", "artist", "tag"]


def check_job(input_dir: Path, output_dir: Path, config: dict) -> tuple[LastfmConfig, dict[str, Path]]:
    """What can be checked without Spark (``jobs/features.py`` runs it before Spark starts): the config
    (ConfigError), the input files (``_input_files``) and OUT (``io.check_output``), each an InputError."""
    cfg = resolve_config(config)
    files = _input_files(Path(input_dir), cfg)
    check_output(output_dir)
    return cfg, files


def run_job(spark: SparkSession, input_dir: Path, output_dir: Path, config: dict) -> dict:
    """Run the whole Last.fm 1K feature job (see the module docstring); returns the summary printed by the CLI.
    A bad config, input or OUT (``check_job``), too many rejected lines or a split left without sessions is an
    InputError / ConfigError (exit 2), and an existing OUT is left as it was."""
    cfg, files = check_job(input_dir, output_dir, config)
    plays_path, tags_path = files[cfg.input.plays_file], files.get(cfg.input.tags_file)
    fingerprints = _Fingerprints(files)
    fingerprints.start()
    _set_job_conf(spark)
    timer = StepTimer(spark, DATASET)
    drop_untagged = cfg.tags.drop_untagged and tags_path is not None

    with AtomicOutput(output_dir) as out:
        with timer.step("window bounds"):
            start, end = _time_window(spark, plays_path, cfg)

        with timer.step("read+sessionize"):
            levels_df, per_level = _sessionized(spark, plays_path, cfg, start, end)
            counts = stage_counts(per_level, drop_untracked=cfg.clean.drop_untracked)
        timer.log(f"read {counts['lines']:,} lines: {counts['rejected']:,} rejected, {counts['untracked']:,} "
                  f"untracked, {counts['duplicates']:,} duplicates, {counts['plays']:,} plays in "
                  f"{counts['sessions']:,} sessions")

        def write_play_tables() -> tuple:
            """rejected/, plays/, the song tags, vocab/ and song_tags/: a chain of steps, each needing the last."""
            with timer.step("rejected"):
                write_rejects(levels_df.where(F.col(LEVEL) == LEVEL_REJECTED), counts["rejected"], counts["lines"],
                              cfg.clean.max_rejected_fraction, plays_path, cfg.input.plays_file, out)
            with timer.step("plays"):
                plays_df = kept_plays(levels_df)
                plays_df.write.mode("overwrite").parquet(out.path(PLAYS_DIR))
            with timer.step("tags"):
                plays_files_df = spark.read.parquet(out.path(PLAYS_DIR))  # columnar re-read: the needed columns
                song_tags_df, songs_with_tags, rejected_tags = _song_tags(spark, tags_path, plays_files_df, cfg, out)
                seq_plays_files_df = plays_files_df.transform(apply_tag_policy, song_tags_df,
                                                              drop_untagged=drop_untagged)
            timer.log(f"tags: {songs_with_tags:,} songs with tags")
            with timer.step("vocabularies"):
                vocabs = _write_vocabularies(seq_plays_files_df, song_tags_df, cfg, out)
                vocab_sizes = {name: parquet_rows(out.path(f"{VOCAB_DIR}/{name}")) + 2 for name in VOCAB_NAMES}
                untagged_dropped = _untagged_plays_dropped(
                    counts["plays"], vocabs["user"], seq_plays_files_df, cfg, drop_untagged=drop_untagged
                )
            timer.log(f"vocabularies {vocab_sizes}")
            with timer.step("song_tags"):
                song_lookup_df = _write_song_lookup(spark, vocabs, song_tags_df, cfg.tags.top_k, out)
            return (plays_df, song_tags_df, vocabs, vocab_sizes, song_lookup_df,
                    {"songs_with_tags": songs_with_tags, "rejected_tags": rejected_tags,
                     "untagged_plays_dropped": untagged_dropped})

        def stage_stats() -> tuple[StatsReport, int]:
            """The per-stage stats report (one Spark job over the cached plays)."""
            with timer.step("stats"):
                report = StatsReport("Last.fm 1K feature job")
                return report, _add_stage_stats(report, levels_df, per_level, cfg)

        # Both read only the cached plays, so they run side by side (progress.concurrently); the counters are set
        # in one order whatever finishes first (stats.json lists them in insertion order).
        (plays_df, song_tags_df, vocabs, vocab_sizes, song_lookup_df, table_counts), (report, users_before) = (
            concurrently(spark, write_play_tables, stage_stats)
        )
        counts["users_before_user_filter"] = users_before
        counts.update(table_counts)

        with timer.step("sessions"):
            sessions_df, split_df, (valid_start, test_start) = _session_rows(
                plays_df, song_tags_df, song_lookup_df, vocabs["user"], cfg, drop_untagged=drop_untagged
            )
            levels_df.unpersist()  # the sessions are cached now
            write_splits(split_df, out)
            split_counts = {split: parquet_rows(out.path(f"{SESSIONS_DIR}/{split}")) for split in SPLITS}
        timer.log(f"sessions {split_counts}")
        check_nonempty_splits(split_counts, required=cfg.split.required(), what="sessions", hint=(
            f"{counts['plays']:,} plays in {counts['sessions']:,} sessions; sequences.min_length="
            f"{cfg.sequences.min_length}, tags.drop_untagged={drop_untagged}, " + cfg.split.hint()))

        with timer.step("report"):
            _add_session_counts(report, split_df, counts, split_counts, vocab_sizes, cfg.split.protocol)
            report.write(out.path(""))
            sessions_df.unpersist()
            song_tags_df.unpersist()
            manifest = _write_manifest(out, cfg, fingerprints.get(), counts, split_counts, vocab_sizes, extra={
                "tags_available": tags_path is not None,
                "window": {"start": _instant(start), "end": _instant(end)},
                "split_starts": {"valid": _instant(valid_start), "test": _instant(test_start)},
            })
    timer.log(f"done in {timer.elapsed():.1f}s -> {output_dir}")
    return {"output": str(output_dir), "row_counts": manifest["row_counts"], "vocab_sizes": vocab_sizes,
            "counts": counts, "steps": timer.steps, "seconds": timer.elapsed()}


# ---------------------------------------------------------------------------------------------------------------
# Inputs and Spark settings
# ---------------------------------------------------------------------------------------------------------------
def _input_files(input_dir: Path, cfg: LastfmConfig) -> dict[str, Path]:
    """``{name: path}`` of the plays file (required, not empty) and the tags file when present (required when
    ``tags.required``; header checked), checked before Spark does anything; a problem is an InputError naming
    the file."""
    plays_name, tags_name = cfg.input.plays_file, cfg.input.tags_file
    files = require_files(input_dir, [plays_name], optional=[tags_name])
    require_nonempty(files[plays_name])
    tags_path = files.get(tags_name)
    if tags_path is None and cfg.tags.required:
        raise InputError(f"file {input_dir / tags_name} not found (tags.required is true)")
    if tags_path is not None:
        check_header(tags_path, TAGS_COLUMNS, "\t")
    return files


class _Fingerprints(threading.Thread):
    """Hash the input files in a background thread while Spark works (hashlib releases the GIL)."""

    def __init__(self, paths: dict[str, Path]) -> None:
        super().__init__(daemon=True)
        self.paths = paths
        self.result: dict[str, dict] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = {name: file_fingerprint(path) for name, path in sorted(self.paths.items())}
        except BaseException as exc:  # reported by get()
            self.error = exc

    def get(self) -> dict[str, dict]:
        self.join()
        if self.error is not None:
            raise self.error
        return self.result


def _set_job_conf(spark: SparkSession) -> None:
    """Runtime SQL settings the job relies on (they only affect this session's queries)."""
    spark.conf.set("spark.sql.session.timeZone", "UTC")  # Last.fm timestamps are UTC; never the machine's zone
    pin_file_splits(spark)  # the rejected lines' numbers come from two scans of the plays file
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")  # not INT96: pyarrow/Petastorm
    use_sort_aggregation(spark)  # sessions, tag and vocabulary lists: collect_list without the object hash map


def _persist_uncompressed(df: DataFrame, first_action: Callable[[DataFrame], Any]) -> tuple[DataFrame, Any]:
    """``persist(MEMORY_AND_DISK)`` with columnar compression off for this cache; ``first_action(cached_df)``
    materializes it while the setting holds (its result is returned with the cached frame)."""
    key = "spark.sql.inMemoryColumnarStorage.compressed"
    previous = _spark_conf_get(df.sparkSession, key)
    df.sparkSession.conf.set(key, "false")
    try:
        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        result = first_action(df)
    finally:
        df.sparkSession.conf.set(key, previous if previous is not None else "true")
    return df, result


def _spark_conf_get(spark: SparkSession, key: str) -> str | None:
    """A SQL conf value, or None when unset."""
    try:
        return spark.conf.get(key)
    except Exception:  # noqa: BLE001 - unset keys raise in some versions
        return None


# ---------------------------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------------------------
def _time_window(spark: SparkSession, plays_path: Path, cfg: LastfmConfig
                 ) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``[start, end)``: the fixed bounds, or months from the first/last eligible play (one extra scan)."""
    start, end = cfg.window.bounds(None, None)
    if cfg.window.first_months or cfg.window.last_months:
        first_ts, last_ts = first_last_eligible(
            read_plays(spark, plays_path), drop_untracked=cfg.clean.drop_untracked, start=start, end=end
        )
        start, end = cfg.window.bounds(first_ts, last_ts)
    return start, end


def _sessionized(spark: SparkSession, plays_path: Path, cfg: LastfmConfig, start: dt.datetime | None,
                 end: dt.datetime | None) -> tuple[DataFrame, dict[int, tuple[int, int]]]:
    """The plays file read, cleaned and sessionized by the fused pass (``with_play_levels``), cached, with its
    ``level_summary``."""
    levels_df = read_plays(spark, plays_path).transform(
        with_play_levels, partitions=cfg.spark.partitions, gap_seconds=cfg.sessions.gap_seconds,
        min_sessions=cfg.sessions.min_sessions_per_user, drop_untracked=cfg.clean.drop_untracked,
        drop_duplicates=cfg.clean.drop_duplicates, start=start, end=end,
    )
    # Cached because every later stage (rejects, plays, stats, sessions) reads these rows, and the cache keeps the
    # user partitioning and order, so nothing downstream shuffles the plays again. Uncompressed: a compressed
    # columnar cache costs about 3x more CPU here, and the rows fit in memory (else they spill).
    return _persist_uncompressed(levels_df, level_summary)


def _add_stage_stats(report: StatsReport, levels_df: DataFrame, per_level: dict[int, tuple[int, int]],
                     cfg: LastfmConfig) -> int:
    """Add the stats of the nested stages parsed > tracked > in window > deduplicated > plays (one Spark job) to
    ``report``; returns the number of users before the user filter."""
    stats_columns = RAW_COLUMNS if cfg.stats.column_stats else [USER]
    stage_stats = column_stats_by_level(
        levels_df.where(F.col(LEVEL) >= LEVEL_PARSED), LEVEL, [level for _, level in STAGE_LEVELS], stats_columns,
        level_counts={level: rows for level, (rows, _) in per_level.items()},
    )
    for name, level in STAGE_LEVELS:
        report.add_stage_stats(name, *stage_stats[level])
    return stage_stats[LEVEL_DEDUPED][1][USER]["unique"]


def _song_tags(spark: SparkSession, tags_path: Path | None, plays_df: DataFrame, cfg: LastfmConfig,
               out: AtomicOutput) -> tuple[DataFrame, int, int]:
    """The cached ``track_id, tags`` of the played songs, their number and the number of rejected tags lines
    (written to ``OUT/rejected/<tags file>/``); an empty table, 0 and 0 without a tags file."""
    if tags_path is None:
        song_tags_df = no_song_tags(spark).persist(StorageLevel.MEMORY_AND_DISK)  # cached like the real one
        return song_tags_df, song_tags_df.count(), 0
    tag_lines_df = read_tags(spark, tags_path, lowercase=cfg.tags.lowercase)
    # Lines and rejects are counted while the song tags are computed (one scan of the file, not two).
    observation = Observation("tags")
    observed_df = tag_lines_df.observe(
        observation, F.count(F.lit(1)).alias("lines"), F.count_if(F.col(REASON).isNotNull()).alias("bad")
    )
    song_tags_df = observed_df.transform(
        top_tags_of_played, plays_df, cfg.tags.top_k, min_weight=cfg.tags.min_tag_weight
    )
    # Cached: small (one row per tagged song) and used by the tag policy, the tag vocabulary and the lookup.
    song_tags_df = song_tags_df.persist(StorageLevel.MEMORY_AND_DISK)
    n_songs = song_tags_df.count()  # fills the cache and the observation
    tag_counts = observation.get
    rejected = write_rejects(tag_lines_df.where(F.col(REASON).isNotNull()), tag_counts["bad"], tag_counts["lines"],
                             cfg.clean.max_rejected_fraction, tags_path, cfg.input.tags_file, out)
    return song_tags_df, n_songs, rejected


def _write_vocabularies(plays_df: DataFrame, song_tags_df: DataFrame, cfg: LastfmConfig, out: AtomicOutput
                        ) -> dict[str, DataFrame]:
    """``OUT/vocab/{user,song,artist,tag}/`` in one Spark job: each play counts once for its user, song and artist,
    each song once for each of its top tags. Returns the vocabularies read back (small)."""
    vocab = cfg.vocab
    play_vocabs_df = build_vocabs(
        plays_df, {"user": F.array(USER), "song": F.array(TRACK_ID), "artist": F.array(ARTIST_ID)},
        min_counts={"user": vocab.user_min_count, "song": vocab.song_min_count, "artist": vocab.artist_min_count},
    )
    tag_vocab_df = build_vocabs(song_tags_df, {"tag": F.col(TAGS)}, min_counts={"tag": vocab.tag_min_count})
    paths = write_vocabs(play_vocabs_df.unionByName(tag_vocab_df), VOCAB_NAMES, out)
    return {name: plays_df.sparkSession.read.parquet(path) for name, path in paths.items()}


def _untagged_plays_dropped(n_plays: int, user_vocab_df: DataFrame, seq_plays_df: DataFrame, cfg: LastfmConfig, *,
                            drop_untagged: bool) -> int:
    """Plays the tag policy dropped: from the user vocabulary's counts when it holds every user, else one count."""
    if not drop_untagged:
        return 0
    if cfg.vocab.user_min_count == 1:  # every user is in the vocabulary: its counts add up to the plays
        return n_plays - (user_vocab_df.agg(F.sum(COUNT)).first()[0] or 0)
    return n_plays - seq_plays_df.count()


def _write_song_lookup(spark: SparkSession, vocabs: dict[str, DataFrame], song_tags_df: DataFrame, top_k: int,
                       out: AtomicOutput) -> DataFrame:
    """Write ``OUT/song_tags/`` (``song_idx, tags``, one file in index order) and return it read back, joined with
    the song ids (``track_id, song_idx, tags``: the lookup of ``build_sessions``)."""
    song_lookup_df = build_song_lookup(vocabs["song"], song_tags_df, vocabs["tag"], top_k)
    song_lookup_df.select(SONG_IDX, TAGS).repartition(1).sortWithinPartitions(SONG_IDX).write.mode(
        "overwrite"
    ).parquet(out.path(SONG_TAGS_DIR))
    return spark.read.parquet(out.path(SONG_TAGS_DIR)).join(
        vocabs["song"].select(F.col(TOKEN).alias(TRACK_ID), F.col(INDEX).alias(SONG_IDX)), on=SONG_IDX
    )


def _session_rows(plays_df: DataFrame, song_tags_df: DataFrame, song_lookup_df: DataFrame, user_vocab_df: DataFrame,
                  cfg: LastfmConfig, *, drop_untagged: bool
                  ) -> tuple[DataFrame, DataFrame, tuple[dt.datetime | None, dt.datetime | None]]:
    """The session rows of ``plays_df`` (after the tag policy), cached; the same rows with their ``split`` by
    ``split.protocol``; the time split's cut-offs (``split_cutoffs``, which materialize the cache; None, None with
    the leave-one-out protocol, ``holdout.loo_session_rows``)."""
    # From the cached, user-partitioned plays (not the Parquet copy): grouping by session needs no shuffle.
    seq_plays_df = plays_df.transform(apply_tag_policy, song_tags_df, drop_untagged=drop_untagged)
    lengths = {"min_length": cfg.sequences.min_length, "max_length": cfg.sequences.max_length, "top_k": cfg.tags.top_k}
    if cfg.split.protocol == LEAVE_ONE_OUT:
        # Cached (and filled now, while the plays are still cached): used for the write and the stats.
        sessions_df = seq_plays_df.transform(loo_session_rows, song_lookup_df, user_vocab_df, **lengths).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        sessions_df.count()
        return sessions_df, sessions_df, (None, None)
    sessions_df = seq_plays_df.transform(build_sessions, song_lookup_df, user_vocab_df, **lengths)
    # Cached: used for the split cut-offs, the write and the stats.
    sessions_df = sessions_df.persist(StorageLevel.MEMORY_AND_DISK)
    valid_start, test_start = split_cutoffs(sessions_df, cfg.split.valid_fraction, cfg.split.test_fraction)
    split_df = sessions_df.transform(
        with_split, valid_start, test_start,
        has_valid=cfg.split.valid_fraction > 0, has_test=cfg.split.test_fraction > 0,
    )
    return sessions_df, split_df, (valid_start, test_start)


def _add_session_counts(report: StatsReport, split_df: DataFrame, counts: dict[str, int],
                        split_counts: dict[str, int], vocab_sizes: dict[str, int], protocol: str) -> None:
    """Add the stats of the session rows (one Spark job) and the final counters (``counts`` too) to ``report``;
    with the leave-one-out protocol (rows are not sessions) ``holdout.loo_counts`` replace ``sessions_dropped``."""
    sessions_rows, sessions_stats = column_stats(split_df, [SESSION_ID, USER_IDX, START_TS, LENGTH, SPLIT])
    report.add_stage_stats("sessions", sessions_rows, sessions_stats)
    n_sessions_out = sum(split_counts.values())
    if protocol == LEAVE_ONE_OUT:
        counts.update(loo_counts(split_df, counts["plays"] - counts["untagged_plays_dropped"], split_counts[TEST]))
    else:
        counts["sessions_dropped"] = counts["sessions"] - n_sessions_out
    counts.update(
        sequence_sessions=n_sessions_out,
        users=vocab_sizes["user"] - 2, songs=vocab_sizes["song"] - 2, artists=vocab_sizes["artist"] - 2,
        tags=vocab_sizes["tag"] - 2, **{f"sessions_{k}": v for k, v in split_counts.items()},
    )
    report.add_counts(**counts)


def _instant(instant: dt.datetime | None) -> str | None:
    return format_instant(instant) if instant else None


def _write_manifest(out: AtomicOutput, cfg: LastfmConfig, inputs: dict, counts: dict[str, int],
                    split_counts: dict[str, int], vocab_sizes: dict[str, int], *, extra: dict) -> dict:
    """``_MANIFEST.json``: the resolved config, input fingerprints, row counts, vocabulary sizes and the layout."""
    row_counts = {**split_counts, "rejected": counts["rejected"], "rejected_tags": counts["rejected_tags"],
                  "plays": counts["plays"], "sessions": counts["sequence_sessions"],
                  "song_tags": vocab_sizes["song"] - 2}
    return write_manifest(
        out, dataset=DATASET, config=as_dict(cfg), inputs=inputs, row_counts=row_counts, vocab_sizes=vocab_sizes,
        features={
            "categorical": {USER_IDX: "user"},
            "multi_valued": {SONGS: "song", SONG_TAGS: "tag"},
            "numeric": [],
            "target": None,
        },
        splits={split: f"{SESSIONS_DIR}/{split}" for split in SPLITS},
        extra={
            "top_k_tags": cfg.tags.top_k,
            "max_session_length": cfg.sequences.max_length,
            **extra,
            "tables": {"plays": PLAYS_DIR, "song_tags": SONG_TAGS_DIR, "vocab": VOCAB_DIR, "rejected": REJECTED_DIR},
        },
    )
