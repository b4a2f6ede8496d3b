"""What the job writes: the split tables (contract columns, one pass, no shuffle), the row accounting that must
hold before anything is published, and the stats report (from counts already made: no pass over the outputs)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from musicrec.columns import ID, MSNO, ROW_ID, SONG_ID, SPLIT, SPLITS, TARGET
from musicrec.features.kkbox.columns import CATEGORICAL_VOCABS, MULTI_VALUED_VOCABS, NUMERIC_COLUMNS
from musicrec.features.stats import StatsReport
from musicrec.io import AtomicOutput


def output_schema() -> T.StructType:
    """Column layout of OUT/{train,valid,test} (docs/DATA_CONTRACT.md)."""
    fields = [
        T.StructField(ROW_ID, T.LongType()),
        T.StructField(ID, T.IntegerType()),
        T.StructField(TARGET, T.IntegerType()),
    ]
    fields += [T.StructField(out_col, T.IntegerType()) for _, out_col in CATEGORICAL_VOCABS.values()]
    fields += [T.StructField(out_col, T.ArrayType(T.IntegerType())) for _, out_col in MULTI_VALUED_VOCABS.values()]
    fields += [T.StructField(name, T.FloatType()) for name in NUMERIC_COLUMNS]
    return T.StructType(fields)


def select_output_columns(df: DataFrame, *, keep: tuple[str, ...] = ()) -> DataFrame:
    """The output columns in contract order and types (plus ``keep``); no temporary column survives."""
    return df.select(*keep, *[F.col(f.name).cast(f.dataType).alias(f.name) for f in output_schema().fields])


def records_per_file(split_rows: dict[str, int], *, rows_per_file: int, min_files: int) -> int:
    """Rows per output file: at most ``rows_per_file``, and few enough that the smallest non-empty split fills at
    least ``min_files`` files (so that two Horovod ranks each get a row group)."""
    smallest = min([n for n in split_rows.values() if n > 0], default=rows_per_file)
    return max(1, min(rows_per_file, math.ceil(smallest / min_files)))


def write_splits(df: DataFrame, out: AtomicOutput, *, max_records_per_file: int,
                 splits: tuple[str, ...] = SPLITS, row_id_col: str = ROW_ID, split_col: str = SPLIT) -> None:
    """Write every split in ONE pass and without a shuffle: each task (an input partition of train.csv or test.csv,
    rows in file order) writes its rows of each split sorted by ``row_id``, starting a new file every
    ``max_records_per_file`` rows; then ``OUT/_splits/split=X`` becomes ``OUT/X``. So every file holds a
    contiguous range of rows of its source file, and a rerun writes the same files (up to their names). A split
    without rows gets an empty table with the same schema."""
    staging = Path(out.path("_splits"))
    (
        df.sortWithinPartitions(split_col, row_id_col)
        .write.partitionBy(split_col).option("maxRecordsPerFile", max_records_per_file)
        .mode("overwrite").parquet(str(staging))
    )
    for split in splits:
        written = staging / f"{split_col}={split}"
        if written.is_dir():
            written.rename(out.path(split))
        else:
            df.sparkSession.createDataFrame([], df.drop(split_col).schema).coalesce(1).write.parquet(out.path(split))
    shutil.rmtree(staging)


def check_row_accounting(accounting: dict[str, dict[str, int]]) -> None:
    """Raise when a raw row is neither in an output nor counted: per file, input rows must equal the sum of the
    other entries (train + valid + rejected for train.csv; test + rejected + blank for test.csv; kept + rejected
    for the side tables)."""
    for file_name, entry in accounting.items():
        accounted = sum(value for key, value in entry.items() if key != "input_rows")
        if accounted != entry["input_rows"]:
            raise RuntimeError(f"row accounting failed for {file_name}: {entry} (parts sum to {accounted})")


def event_counts(per_split: dict[str, dict[str, int]]) -> dict[str, int]:
    """The per-split event counts of ``split_summary`` (events; unknown song / member, no extra info, no artist)
    as flat ``<split>_<count>`` keys, as the manifest and the stats report record them."""
    return {f"{split}_{key}": value for split, entry in per_split.items() for key, value in entry.items()
            if (key == "events" or key.endswith("_events")) and not key.startswith("max_")}


def stats_report(per_split: dict[str, dict[str, int]], targets: dict[str, dict[int, int]],
                 accounting: dict[str, dict[str, int]]) -> StatsReport:
    """The stats report: per split, the events with count / distinct / largest frequency of msno, song_id and
    target; then the row accounting of every file, the event counts and the targets per split."""
    stats = StatsReport("KKBOX feature job")
    for split in SPLITS:
        entry, split_targets = per_split[split], targets[split]
        stats.add_stage_stats(f"{split} events", entry["events"], {
            MSNO: {"count": entry["events"], "unique": entry["users"], "max_freq": entry["max_user_events"]},
            SONG_ID: {"count": entry["events"], "unique": entry["songs"], "max_freq": entry["max_song_events"]},
            TARGET: {"count": sum(split_targets.values()), "unique": len(split_targets),
                     "max_freq": max(split_targets.values(), default=0)},
        })
    stats.add_counts(
        **{f"{file_name}:{key}": value for file_name, entry in accounting.items() for key, value in entry.items()},
        **event_counts(per_split),
        **{f"{split}_target_{t}": n for split, counts in targets.items() for t, n in sorted(counts.items())},
    )
    return stats
