"""The KKBOX feature job, step by step: ``run_job`` reads top to bottom, one ``StepTimer`` step (job description
"kkbox: <step>") per stage, inside one ``AtomicOutput`` (OUT is replaced only when all of it worked).

Caches (each ``persist`` below says why): the side tables, the parsed events (narrow: ids and source strings;
every later pass reads them), the song and user tables, the vocabularies and the indexed song and user tables.
The events are never shuffled: they are aggregated, or streamed through broadcast joins into the output.
"""

from __future__ import annotations

import functools
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from musicrec import schemas
from musicrec.columns import FIRST_TOKEN_INDEX, REASON, ROW_ID, SPLIT, SPLITS, TARGET, TEST, TRAIN, VALID
from musicrec.config import as_dict
from musicrec.features.kkbox.columns import (
    BLANK_REASON, CATEGORICAL_VOCABS, CONTEXT_VOCABS, DATASET, FILE_COL, LINE_COL, MID_COL, MULTI_VALUED_VOCABS,
    NUMERIC_COLUMNS, RAW_COL, REASON_COL, SONG_NUMERIC, USER_NUMERIC,
)
from musicrec.features.kkbox.config import KkboxConfig, resolve_config
from musicrec.features.kkbox.entities import (
    entity_vocabs, join_features, list_vocabs, plays_by_split, song_features, song_table, user_features, user_table,
    valid_cut, vocab_names, with_context_indices, with_split,
)
from musicrec.features.kkbox.numeric import split_summary, train_standardization, with_standardized
from musicrec.features.kkbox.output import (
    check_row_accounting, event_counts, records_per_file, select_output_columns, stats_report, write_splits,
)
from musicrec.features.kkbox.read import (
    SIDE_CHECKS, SIDE_KEYS, mark_side_table, partition_offsets, read_events, read_side_table, with_line_number,
    with_row_id,
)
from musicrec.features.kkbox.side import with_isrc_fields, with_member_features
from musicrec.features.progress import StepTimer, concurrently
from musicrec.features.rejects import blank_lines, check_reject_limit, pin_file_splits, write_rejected
from musicrec.features.vocab import write_vocabs
from musicrec.io import (
    AtomicOutput, check_header, check_nonempty_splits, check_output, file_fingerprint, fingerprint_and_lines,
    parquet_rows, require_files, require_nonempty, write_manifest,
)
from musicrec.spark import use_sort_aggregation

Persist = Callable[[DataFrame], DataFrame]


class Inputs(NamedTuple):
    paths: dict[str, Path]  # the five files
    scans: dict[str, Future]  # per file: (fingerprint, lines) from ``scan_input``, read while Spark works

    def fingerprints(self) -> dict[str, dict]:
        return {name: self.scans[name].result()[0] for name in self.paths}

    def lines(self, name: str) -> int:
        """Physical lines of a file read line by line (not a multi-line one); waits for that file's scan only."""
        return self.scans[name].result()[1]


class Events(NamedTuple):
    good_df: DataFrame  # the good rows of train.csv and test.csv with row_id and split
    valid_cut: int  # first row_id of train.csv's validation part
    accounting: dict[str, dict[str, int]]  # train.csv / test.csv: input rows and where each went
    targets: dict[str, dict[int, int]]  # per split: events per target value


class EntityTables(NamedTuple):
    songs: DataFrame  # one row per song of the events (``song_table``)
    users: DataFrame  # one row per user of the events (``user_table``)
    contexts: DataFrame  # one row per (source_system_tab, source_screen_name, source_type) of the events


def check_job(input_dir: Path, output_dir: Path, config: dict) -> tuple[KkboxConfig, dict[str, Path]]:
    """What can be checked without Spark (``jobs/features.py`` runs it before Spark starts): the config
    (ConfigError), the five input files (``checked_inputs``) and OUT (``io.check_output``), each an InputError."""
    cfg = resolve_config(config)
    paths = checked_inputs(Path(input_dir))
    check_output(output_dir)
    return cfg, paths


def run_job(spark: SparkSession, input_dir: Path, output_dir: Path, config: dict) -> dict:
    """Run the KKBOX feature job; returns a summary (row counts, vocab sizes, seconds per step).

    Raises ConfigError for a bad config value and InputError for a missing file or column, an empty file or
    unwritable OUT (``check_job``), a file with more than ``clean.max_rejected_fraction`` of its rows rejected or a
    split left without rows (all exit 2 in jobs/features.py); any failure leaves an existing OUT unchanged.
    """
    timer = StepTimer(spark, DATASET)
    pin_file_splits(spark)  # line numbers and blank lines come from more than one scan of a file
    use_sort_aggregation(spark)  # the multi-valued fields' index lists (vocab.with_indices' collect_list)
    with timer.step("check inputs"):
        cfg, paths = check_job(input_dir, output_dir, config)
    list_vocab = list_vocabs(cfg.multi_valued.shared_person_vocab)
    with AtomicOutput(output_dir) as out, _cached_frames() as persist, ThreadPoolExecutor(1) as background:
        # The files' hashes and line counts (one Python read of each, ~1.6 GB at full size) while Spark reads them,
        # the smallest first (the side tables' rejected rows need their line counts soonest).
        files = Inputs(paths, {
            name: background.submit(scan_input, paths[name], multi_line=name in cfg.input.multiline_files)
            for name in sorted(paths, key=lambda name: paths[name].stat().st_size)
        })

        def side_tables() -> tuple[dict[str, DataFrame], dict[str, dict[str, int]]]:
            with timer.step("read side tables"):
                return read_side_tables(spark, files, cfg, out, persist)

        def split_events() -> Events:
            with timer.step("read events"):
                return read_split_events(spark, files, cfg, out, persist)

        # Independent reads of different files, side by side (progress.concurrently): alone, the side tables leave a
        # core idle (small files; song_extra_info.csv, multi-line CSV, is read as one task).
        (side, accounting), events = concurrently(spark, side_tables, split_events)
        accounting.update(events.accounting)
        check_row_accounting(accounting)
        check_nonempty_splits(_split_rows(accounting), required=_required_splits(cfg), what="rows", hint=(
            f"train.csv: {accounting[schemas.KKBOX_TRAIN_FILE]}, test.csv: {accounting[schemas.KKBOX_TEST_FILE]}"))
        with timer.step("entity tables + vocabularies"):
            tables = entity_tables(events.good_df, side, cfg, persist)
            vocabs_df, vocab_sizes = write_entity_vocabs(tables, list_vocab, cfg, out, persist)
        with timer.step("standardize + index entities"):
            numeric_stats = train_standardization(tables.songs, tables.users)
            per_split = split_summary(tables.songs, tables.users)
            counts = event_counts(per_split)
            song_feat_df, user_feat_df = indexed_entities(tables, vocabs_df, numeric_stats, list_vocab, persist)
        with timer.step("write splits"):
            row_counts = write_event_splits(events.good_df, user_feat_df, song_feat_df, vocabs_df, accounting,
                                            per_split, cfg, out)
        with timer.step("stats"):
            stats_report(per_split, events.targets, accounting).write(out.path())
        with timer.step("publish"):
            write_manifest(
                out, dataset=DATASET, config=as_dict(cfg), inputs=files.fingerprints(), row_counts=row_counts,
                vocab_sizes=vocab_sizes, features=manifest_features(list_vocab),
                extra={"row_accounting": accounting, "event_counts": counts,
                       "valid_cut_row_id": events.valid_cut, "max_multi": cfg.multi_valued.max_multi,
                       "standardization": numeric_stats},
            )
    return {
        "dataset": DATASET,
        "output": str(Path(output_dir).resolve()),
        "row_counts": row_counts,
        "row_accounting": accounting,
        "vocab_sizes": vocab_sizes,
        "event_counts": counts,
        "seconds": timer.steps,
    }


@contextmanager
def _cached_frames() -> Iterator[Persist]:
    """A ``persist`` function (MEMORY_AND_DISK) whose frames are all unpersisted when the block ends."""
    cached: list[DataFrame] = []

    def persist(df: DataFrame) -> DataFrame:  # called from two threads at once (run_job's side-by-side reads)
        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(df)
        return df

    try:
        yield persist
    finally:
        for df in cached:
            df.unpersist()


def checked_inputs(input_dir: Path) -> dict[str, Path]:
    """The five files, each present, not empty and with every declared column in its header (plain Python)."""
    paths = require_files(input_dir, schemas.KKBOX_FILES)
    for name, path in paths.items():
        require_nonempty(path)
        check_header(path, schemas.KKBOX_SCHEMAS[name].fieldNames(), ",")
    return paths


def scan_input(path: Path, *, multi_line: bool) -> tuple[dict, int | None]:
    """``(fingerprint, physical lines)`` of one input file; the line count comes with the hash, from the same read,
    for a file read line by line (None for a multi-line file, whose rows are not its lines)."""
    if multi_line:
        return file_fingerprint(path), None
    return fingerprint_and_lines(path)


def _split_rows(accounting: dict[str, dict[str, int]]) -> dict[str, int]:
    """Rows of each split, from the row accounting of train.csv and test.csv."""
    return {TRAIN: accounting[schemas.KKBOX_TRAIN_FILE][TRAIN], VALID: accounting[schemas.KKBOX_TRAIN_FILE][VALID],
            TEST: accounting[schemas.KKBOX_TEST_FILE][TEST]}


def _required_splits(cfg: KkboxConfig) -> list[str]:
    """The splits that must have rows: all three, but valid only when ``split.valid_fraction`` asks for it."""
    return [TRAIN, TEST] + ([VALID] if cfg.split.valid_fraction > 0 else [])


def _write_rejects(spark: SparkSession, bad_df: DataFrame, name: str, files: Inputs, rows: int, cfg: KkboxConfig,
                   out: AtomicOutput) -> int:
    """Rows of file ``name`` rejected (``_reason``) to OUT/rejected/<name>/ with their physical lines; how many.
    More than ``clean.max_rejected_fraction`` of its ``rows`` rejected fails the job (``check_reject_limit``).

    A line-by-line CSV scan skips blank lines; when the file has more lines than header + rows (rare), two more
    scans find them (``rejects.blank_lines``) so that every later line number stays right."""
    multi_line = name in cfg.input.multiline_files
    has_blank_lines = not multi_line and files.lines(name) != rows + 1
    blanks_df = blank_lines(spark, files.paths[name]) if has_blank_lines else None
    lined_df = (
        bad_df.transform(with_line_number, multi_line=multi_line, blanks_df=blanks_df)
        .withColumnRenamed(REASON_COL, REASON)
    )
    rejected = write_rejected(lined_df, name, RAW_COL, LINE_COL, out)
    check_reject_limit(lined_df, rejected, rows, cfg.clean.max_rejected_fraction, files.paths[name],
                       line_col=LINE_COL, raw_col=RAW_COL, order_col=ROW_ID, unit="rows")
    return rejected


def read_side_tables(spark: SparkSession, files: Inputs, cfg: KkboxConfig, out: AtomicOutput,
                     persist: Persist) -> tuple[dict[str, DataFrame], dict[str, dict[str, int]]]:
    """songs.csv, members.csv and song_extra_info.csv checked and deduplicated, their rejected rows written;
    returns the good rows of each and its accounting (input rows = kept + rejected)."""
    scans = {  # cached: the row offsets, rejected/ and the entity joins read them
        name: persist(read_side_table(spark, files.paths[name], name, checks(), cfg))
        for name, checks in SIDE_CHECKS.items()
    }
    offsets, totals = partition_offsets(
        functools.reduce(DataFrame.unionByName, [df.select(FILE_COL, MID_COL) for df in scans.values()])
    )
    kept, accounting = {}, {}
    for name, scan_df in scans.items():
        marked_df = mark_side_table(scan_df, name, SIDE_KEYS[name])
        bad_df = marked_df.where(F.col(REASON_COL).isNotNull()).transform(with_row_id, offsets)
        rejected = _write_rejects(spark, bad_df, name, files, totals.get(name, 0), cfg, out)
        accounting[name] = {"input_rows": totals.get(name, 0), "kept": totals.get(name, 0) - rejected,
                            "rejected": rejected}
        kept[name] = marked_df.where(F.col(REASON_COL).isNull())
    return kept, accounting


def read_split_events(spark: SparkSession, files: Inputs, cfg: KkboxConfig, out: AtomicOutput,
                      persist: Persist) -> Events:
    """train.csv and test.csv read, numbered in file order and split, their rejected rows written (test.csv's
    blank padding rows only counted) and every row accounted for."""
    marked_df = persist(read_events(spark, files.paths, cfg))  # cached: every later step reads the events
    offsets, totals = partition_offsets(marked_df)
    cut = valid_cut(totals.get(schemas.KKBOX_TRAIN_FILE, 0), cfg.split.valid_fraction)
    events_df = marked_df.transform(with_row_id, offsets).transform(with_split, cut=cut)
    written = {}
    for name in (schemas.KKBOX_TRAIN_FILE, schemas.KKBOX_TEST_FILE):
        is_dropped_blank = F.lit(name == schemas.KKBOX_TEST_FILE) & (F.col(REASON_COL) == BLANK_REASON)
        bad_df = events_df.where((F.col(FILE_COL) == name) & F.col(REASON_COL).isNotNull() & ~is_dropped_blank)
        written[name] = _write_rejects(spark, bad_df, name, files, totals.get(name, 0), cfg, out)
    kind = (
        F.when(F.col(REASON_COL).isNull(), F.col(SPLIT))
        .when((F.col(FILE_COL) == schemas.KKBOX_TEST_FILE) & (F.col(REASON_COL) == BLANK_REASON), F.lit("blank"))
        .otherwise(F.lit("rejected"))
    )
    kind_rows = (
        events_df.groupBy(FILE_COL, kind.alias("_kind"), TARGET).agg(F.count(F.lit(1)).alias("_n")).collect()
    )  # at most 2 files x 5 kinds x 3 targets
    accounting = {}
    for name, kinds in ((schemas.KKBOX_TRAIN_FILE, (TRAIN, VALID, "rejected")),
                        (schemas.KKBOX_TEST_FILE, (TEST, "rejected", "blank"))):
        accounting[name] = {"input_rows": totals.get(name, 0),
                            **{k: sum(r["_n"] for r in kind_rows if (r[FILE_COL], r["_kind"]) == (name, k))
                               for k in kinds}}
        if accounting[name]["rejected"] != written[name]:
            raise RuntimeError(f"{name}: {written[name]} rows in rejected/, counted {accounting[name]['rejected']}")
    targets = {split: {r[TARGET]: r["_n"] for r in kind_rows if r["_kind"] == split and r[TARGET] is not None}
               for split in SPLITS}
    good_df = events_df.where(F.col(REASON_COL).isNull()).drop(RAW_COL, REASON_COL, MID_COL)
    return Events(good_df, cut, accounting, targets)


def entity_tables(good_df: DataFrame, side: dict[str, DataFrame], cfg: KkboxConfig, persist: Persist
                  ) -> EntityTables:
    """The song, user and source-context tables of the events, with the side-table features joined on."""
    extra_df = side[schemas.KKBOX_EXTRA_FILE].transform(with_isrc_fields, pivot=cfg.numeric.isrc_year_pivot)
    members_df = side[schemas.KKBOX_MEMBERS_FILE].transform(
        with_member_features, age_min=cfg.numeric.age_min, age_max=cfg.numeric.age_max)
    return EntityTables(  # songs and users cached: vocabularies, statistics and indices all read them
        songs=persist(song_table(good_df, side[schemas.KKBOX_SONGS_FILE], extra_df, cfg=cfg)),
        users=persist(user_table(good_df, members_df, cfg=cfg)),
        contexts=plays_by_split(good_df, CONTEXT_VOCABS),
    )


def write_entity_vocabs(tables: EntityTables, list_vocab: dict[str, str], cfg: KkboxConfig, out: AtomicOutput,
                        persist: Persist) -> tuple[DataFrame, dict[str, int]]:
    """Every vocabulary counted on the entity tables and written to OUT/vocab/; returns the vocabs table (cached:
    every index lookup reads it) and each vocabulary's size (tokens + pad and OOV, from the Parquet footers)."""
    vocabs_df = persist(entity_vocabs(tables.songs, tables.users, tables.contexts, list_vocab=list_vocab,
                                      vocab_cfg=cfg.vocab))
    paths = write_vocabs(vocabs_df, vocab_names(list_vocab), out)
    return vocabs_df, {name: parquet_rows(path) + FIRST_TOKEN_INDEX for name, path in paths.items()}


def indexed_entities(tables: EntityTables, vocabs_df: DataFrame, numeric_stats: dict, list_vocab: dict[str, str],
                     persist: Persist) -> tuple[DataFrame, DataFrame]:
    """The song and user tables standardized and indexed: what the events are joined with (cached: broadcast to
    every task of the write)."""
    song_feat_df = persist(
        tables.songs.transform(with_standardized, {n: numeric_stats[n] for n in SONG_NUMERIC})
        .transform(song_features, vocabs_df, list_vocab=list_vocab)
    )
    user_feat_df = persist(
        tables.users.transform(with_standardized, {n: numeric_stats[n] for n in USER_NUMERIC})
        .transform(user_features, vocabs_df)
    )
    return song_feat_df, user_feat_df


def write_event_splits(good_df: DataFrame, user_feat_df: DataFrame, song_feat_df: DataFrame, vocabs_df: DataFrame,
                       accounting: dict[str, dict[str, int]], per_split: dict[str, dict[str, int]], cfg: KkboxConfig,
                       out: AtomicOutput) -> dict[str, int]:
    """One pass over the events: broadcast joins, source indices, OUT/{train,valid,test}. Returns the rows written
    per split (checked against the rows counted when reading and the events of the entity tables), the rejected
    rows of every file and test.csv's blank rows."""
    split_rows = _split_rows(accounting)
    output_df = (
        good_df.transform(join_features, user_feat_df, song_feat_df)
        .transform(with_context_indices, vocabs_df)
        .transform(select_output_columns, keep=(SPLIT,))
    )
    write_splits(output_df, out, max_records_per_file=records_per_file(
        split_rows, rows_per_file=cfg.output.rows_per_file, min_files=cfg.output.min_files))
    row_counts = {split: parquet_rows(out.path(split)) for split in SPLITS}
    if row_counts != split_rows or {s: per_split[s]["events"] for s in split_rows} != split_rows:
        raise RuntimeError(f"rows written {row_counts} and events joined {per_split} differ from rows counted "
                           f"{split_rows}")
    row_counts["rejected"] = sum(entry["rejected"] for entry in accounting.values())
    row_counts["blank"] = accounting[schemas.KKBOX_TEST_FILE]["blank"]
    return row_counts


def manifest_features(list_vocab: dict[str, str]) -> dict:
    """The manifest's ``features``: index column -> vocabulary, the numeric columns and the target."""
    return {
        "categorical": {idx_col: name for name, (_, idx_col) in CATEGORICAL_VOCABS.items()},
        "multi_valued": {idx_col: list_vocab[name] for name, (_, idx_col) in MULTI_VALUED_VOCABS.items()},
        "numeric": list(NUMERIC_COLUMNS),
        "target": TARGET,
    }
