"""Stage helpers shared by the feature jobs (Last.fm 1K and KKBOX).

Everything here is either a small DataFrame -> DataFrame transformation (``with_rejects``, ``build_vocab``,
``with_index`` ...) or a driver-side helper for the job boundary (``require_files``, ``check_header``,
``AtomicOutput``, ``write_manifest``). Nothing collects big data to the driver: vocabulary lookups are joins, the
stats report brings back one small row per column.

Output conventions (docs/DATA_CONTRACT.md): vocab index 0 = padding, 1 = out-of-vocabulary (rare, unknown or
missing), real tokens from 2 in descending frequency with ties broken by token ascending.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from musicrec import __version__
from musicrec.columns import FIRST_TOKEN_INDEX, OOV_INDEX

MANIFEST_NAME = "_MANIFEST.json"
REJECTED_DIR = "rejected"
VOCAB_DIR = "vocab"

# Column layout of OUT/rejected/<file>/ (docs/DATA_CONTRACT.md).
REJECTED_SCHEMA = T.StructType(
    [
        T.StructField("file", T.StringType()),
        T.StructField("line", T.LongType()),  # 1-based physical line when known, else null
        T.StructField("reason", T.StringType()),
        T.StructField("raw", T.StringType()),
    ]
)
VOCAB_SCHEMA = T.StructType(
    [
        T.StructField("token", T.StringType()),
        T.StructField("index", T.IntegerType()),
        T.StructField("count", T.LongType()),
    ]
)


class InputError(Exception):
    """Unusable input (missing folder/file, empty file, missing column); the message names the file and the line
    or column. ``jobs/features.py`` prints it and exits with status 2."""


# ---------------------------------------------------------------------------------------------------------------
# Job boundary: files and headers
# ---------------------------------------------------------------------------------------------------------------
def require_files(input_dir: Path, names: list[str], *, optional: Iterable[str] = ()) -> dict[str, Path]:
    """Return ``{name: path}`` for the files ``names`` in ``input_dir``; a missing folder or file is an InputError.

    Names in ``optional`` are returned only when present (a missing optional file is not an error).
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(f"input folder {input_dir} not found")
    found: dict[str, Path] = {}
    for name in names:
        path = input_dir / name
        if not path.is_file():
            raise InputError(f"file {path} not found (expected in input folder {input_dir})")
        found[name] = path
    for name in optional:
        path = input_dir / name
        if path.is_file():
            found[name] = path
    return found


def require_nonempty(path: Path) -> None:
    """Raise InputError "file X is empty" when ``path`` has no bytes (or only blank lines in its first 64 KiB)."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise InputError(f"file {path} is empty")
    with open(path, "rb") as handle:
        head = handle.read(65536)
    if len(head) < 65536 and not head.strip():
        raise InputError(f"file {path} is empty (only blank lines)")


def check_header(path: Path, expected: list[str], sep: str) -> None:
    """Check that the first line of ``path`` (read with plain Python, nothing else) names every expected column.

    Empty file -> InputError "file X is empty"; a missing column -> InputError
    "file X: missing column 'c' (header has a, b, ...)". Extra columns and column order are allowed.
    """
    path = Path(path)
    with open(path, "r", encoding="utf-8", errors="replace", newline="") as handle:
        first = handle.readline()
    if not first.strip():
        raise InputError(f"file {path} is empty" if path.stat().st_size == 0 or not first else
                         f"file {path} line 1: empty header line")
    header = [name.strip().strip('"') for name in first.lstrip("\ufeff").rstrip("\r\n").split(sep)]
    for name in expected:
        if name not in header:
            raise InputError(f"file {path}: missing column {name!r} (header has {', '.join(header)})")


# ---------------------------------------------------------------------------------------------------------------
# Rejected rows
# ---------------------------------------------------------------------------------------------------------------
REASON_COL = "reason"


def reject_reason(checks: list[tuple[Column, str]]) -> Column:
    """A string Column: the message of the first check whose condition is not true (false or null), else null."""
    reason: Column | None = None
    for condition, message in checks:
        failed = ~F.coalesce(condition, F.lit(False))
        reason = F.when(failed, F.lit(message)) if reason is None else reason.when(failed, F.lit(message))
    return reason.otherwise(F.lit(None).cast("string")) if reason is not None else F.lit(None).cast("string")


def with_rejects(df: DataFrame, checks: list[tuple[Column, str]]) -> tuple[DataFrame, DataFrame]:
    """Split ``df`` into ``(good_df, bad_df)``; each check is ``(condition that must hold, message)``.

    A row is bad when a condition is false or null; ``bad_df`` has a ``reason`` column with the message of the
    first failing check. Both frames are lazy over the same input: persist ``df`` first if it is expensive and
    both are used.
    """
    _marked_df = df.withColumn("_reason", reject_reason(checks))
    good_df = _marked_df.where(F.col("_reason").isNull()).drop("_reason")
    bad_df = _marked_df.where(F.col("_reason").isNotNull()).withColumnRenamed("_reason", REASON_COL)
    return good_df, bad_df


def write_rejected(bad_df: DataFrame, file_label: str, raw_col: str, line_col: str | None, out: "AtomicOutput") -> int:
    """Write ``bad_df`` to ``OUT/rejected/<file_label>/`` as ``file, line, reason, raw`` and return the row count.

    ``file`` is ``bad_df.file`` when that column exists, else ``file_label``; ``line`` is ``bad_df[line_col]``
    (1-based) or null. An empty ``bad_df`` still writes an empty table, so the layout is the same on every run.
    The count is read back from the written Parquet (its footers), so ``bad_df`` is computed only once.
    """
    file_col = F.col("file").cast("string") if "file" in bad_df.columns else F.lit(file_label)
    line = F.col(line_col).cast("long") if line_col else F.lit(None).cast("long")
    rejected_df = bad_df.select(
        file_col.alias("file"), line.alias("line"), F.col(REASON_COL).cast("string").alias("reason"),
        F.col(raw_col).cast("string").alias("raw"),
    )
    path = out.path(f"{REJECTED_DIR}/{file_label}")
    # repartition(1), not coalesce(1): coalesce would pull the whole upstream computation into one task.
    rejected_df.repartition(1).sortWithinPartitions("file", "line", "raw").write.mode("overwrite").parquet(path)
    return bad_df.sparkSession.read.parquet(path).count()


# ---------------------------------------------------------------------------------------------------------------
# Headerless text files: line numbers for the (rare) rejected rows
# ---------------------------------------------------------------------------------------------------------------
BLOCK_COL = "_block"
ROW_ID_COL = "_row_id"


def read_text_lines(spark, path: Path | str) -> DataFrame:
    """Lines of a text file: ``value`` plus ``_block`` (start byte of the split) and ``_row_id``
    (``monotonically_increasing_id``), which ``with_line_numbers`` turns into 1-based line numbers.

    Keep ``_block``/``_row_id`` only where needed (e.g. null them for good rows): they cost nothing to compute.
    """
    return spark.read.text(str(path)).select(
        "value", F.input_file_block_start().alias(BLOCK_COL), F.monotonically_increasing_id().alias(ROW_ID_COL)
    )


def with_line_numbers(bad_df: DataFrame, spark, path: Path | str, *, out_col: str = "line") -> DataFrame:
    """Add ``out_col`` = 1-based physical line of each row of ``bad_df`` (which carries ``_block``/``_row_id`` from
    ``read_text_lines`` over the same ``path``).

    Costs one extra scan of the file (lines per split), so call it only when there are bad rows. Rows of one split
    are contiguous in one task with consecutive ids, and a line belongs to the split it starts in, so
    line = lines in earlier splits + (id - first id of the split) + 1.
    """
    _split_order_w = Window.orderBy(BLOCK_COL).rowsBetween(Window.unboundedPreceding, -1)  # a few rows per file
    splits_df = (
        read_text_lines(spark, path)
        .groupBy(BLOCK_COL)
        .agg(F.min(ROW_ID_COL).alias("_first_id"), F.count(F.lit(1)).alias("_lines"))
        .withColumn("_offset", F.coalesce(F.sum("_lines").over(_split_order_w), F.lit(0)))
        .select(BLOCK_COL, "_first_id", "_offset")
    )
    return (
        bad_df.join(F.broadcast(splits_df), on=BLOCK_COL, how="left")
        .withColumn(out_col, (F.col("_offset") + F.col(ROW_ID_COL) - F.col("_first_id") + 1).cast("long"))
        .drop("_first_id", "_offset")
    )


# ---------------------------------------------------------------------------------------------------------------
# Vocabularies and lookups
# ---------------------------------------------------------------------------------------------------------------
def _vocab_from_tokens(tokens_df: DataFrame, token_col: str, min_count: int) -> DataFrame:
    # Global window on purpose: a vocabulary is at most a few million rows and its order must be total.
    _vocab_order_w = Window.orderBy(F.desc("count"), F.asc("token"))
    counts_df = (
        tokens_df.where(F.col(token_col).isNotNull())
        .groupBy(F.col(token_col).cast("string").alias("token"))
        .agg(F.count(F.lit(1)).cast("long").alias("count"))
        .where(F.col("count") >= F.lit(max(int(min_count), 1)))
    )
    return counts_df.select(
        "token",
        (F.row_number().over(_vocab_order_w) + F.lit(FIRST_TOKEN_INDEX - 1)).cast("int").alias("index"),
        "count",
    )


def build_vocab(df: DataFrame, col_name: str, *, min_count: int = 1) -> DataFrame:
    """Vocabulary of ``df[col_name]``: ``token string, index int, count long``.

    Index 2.. in descending count, ties by token ascending; tokens seen fewer than ``min_count`` times are left
    out (they map to 1 = OOV in ``with_index``); nulls are never tokens. Index 0 (pad) and 1 (OOV) are reserved.
    """
    return _vocab_from_tokens(df.select(F.col(col_name).alias("_token")), "_token", min_count)


def build_vocab_from_array(df: DataFrame, array_col: str, *, min_count: int = 1) -> DataFrame:
    """Like ``build_vocab`` over the elements of an array column (each occurrence counts once)."""
    return _vocab_from_tokens(df.select(F.explode(F.col(array_col)).alias("_token")), "_token", min_count)


def vocab_size(vocab_df: DataFrame) -> int:
    """Size of the embedding table a vocabulary needs: number of tokens + 2 (pad and OOV)."""
    return vocab_df.count() + FIRST_TOKEN_INDEX


def with_index(df: DataFrame, vocab_df: DataFrame, col_name: str, out_col: str, *, broadcast: bool = True) -> DataFrame:
    """Add ``out_col`` (int) = vocab index of ``df[col_name]``; null, unknown or rare tokens -> 1 (OOV).

    A left join on the token (broadcast by default: vocabularies are small next to the data; pass
    ``broadcast=False`` for a vocabulary of millions of tokens). Row count and columns of ``df`` are unchanged.
    """
    _lookup_df = vocab_df.select(F.col("token").alias("_vocab_token"), F.col("index").alias("_vocab_index"))
    if broadcast:
        _lookup_df = F.broadcast(_lookup_df)
    joined_df = df.join(_lookup_df, F.col(col_name).cast("string") == F.col("_vocab_token"), "left")
    return joined_df.withColumn(
        out_col, F.coalesce(F.col("_vocab_index"), F.lit(OOV_INDEX)).cast("int")
    ).drop("_vocab_token", "_vocab_index")


def with_index_array(
    df: DataFrame, vocab_df: DataFrame, array_col: str, out_col: str, *, key_cols: list[str], broadcast: bool = True
) -> DataFrame:
    """Add ``out_col`` (array<int>) = vocab indices of the elements of ``df[array_col]``, in element order.

    Null elements and unknown or rare tokens -> 1; a null or empty array -> ``[1]``. ``key_cols`` must identify a
    row of ``df`` uniquely and be non-null: the elements are exploded with their position, looked up by a join,
    gathered per key and re-sorted by position, then joined back on ``key_cols``.
    """
    _pairs_df = df.select(*key_cols, F.posexplode_outer(F.col(array_col)).alias("_pos", "_token"))
    _indexed_df = with_index(_pairs_df, vocab_df, "_token", "_idx", broadcast=broadcast)
    _gathered_df = _indexed_df.groupBy(*key_cols).agg(
        F.array_sort(F.collect_list(F.struct(F.coalesce(F.col("_pos"), F.lit(0)).alias("_pos"), F.col("_idx"))))
        .alias("_pairs")
    ).select(*key_cols, F.transform(F.col("_pairs"), lambda pair: pair["_idx"]).alias("_indices"))
    return (
        df.join(_gathered_df, on=key_cols, how="left")
        .withColumn(out_col, F.coalesce(F.col("_indices"), F.array(F.lit(OOV_INDEX))).cast("array<int>"))
        .drop("_indices")
    )


def write_vocab(vocab_df: DataFrame, name: str, out: "AtomicOutput") -> str:
    """Write a vocabulary to ``OUT/vocab/<name>/`` as one Parquet file sorted by index; return its path."""
    path = out.path(f"{VOCAB_DIR}/{name}")
    vocab_df.select("token", "index", "count").orderBy("index").coalesce(1).write.mode("overwrite").parquet(path)
    return path


# ---------------------------------------------------------------------------------------------------------------
# Stats report
# ---------------------------------------------------------------------------------------------------------------
_ROWS_KEY = "\u0000rows"  # pseudo column counted with the real ones, so one job gives rows and column stats


def column_stats(df: DataFrame, columns: list[str] | None = None) -> tuple[int, dict[str, dict[str, int]]]:
    """Row count and, per column, ``count`` (non-null), ``unique`` (distinct non-null) and ``max_freq``.

    One Spark job for all columns: rows become (column, value) pairs, counted per value, then per column. Arrays
    and other types are compared by their string form.
    """
    columns = list(columns) if columns is not None else list(df.columns)
    pairs = [F.struct(F.lit(_ROWS_KEY).alias("c"), F.lit("").alias("v"))]
    pairs += [F.struct(F.lit(name).alias("c"), F.col(name).cast("string").alias("v")) for name in columns]
    per_value_df = (
        df.select(F.explode(F.array(*pairs)).alias("_p"))
        .select("_p.c", "_p.v")
        .where(F.col("v").isNotNull())
        .groupBy("c", "v")
        .agg(F.count(F.lit(1)).alias("n"))
    )
    per_column = (
        per_value_df.groupBy("c")
        .agg(F.sum("n").alias("count"), F.count(F.lit(1)).alias("unique"), F.max("n").alias("max_freq"))
        .collect()  # one small row per column
    )
    found = {row["c"]: row for row in per_column}
    rows = int(found[_ROWS_KEY]["count"]) if _ROWS_KEY in found else 0
    stats = {}
    for name in columns:
        row = found.get(name)
        stats[name] = {
            "count": int(row["count"]) if row else 0,
            "unique": int(row["unique"]) if row else 0,
            "max_freq": int(row["max_freq"]) if row else 0,
        }
    return rows, stats


def column_stats_by_level(
    df: DataFrame, level_col: str, levels: list[int], columns: list[str] | None = None,
    *, level_counts: dict[int, int] | None = None,
) -> dict[int, tuple[int, dict[str, dict[str, int]]]]:
    """``column_stats`` for several nested stages at once: stage ``k`` = rows with ``level_col >= k``.

    For a pipeline whose stages only drop rows (read -> tracked -> in window -> deduplicated -> kept), label each
    row with the last stage it survives and get every stage's table without materializing the stages. Each column
    is grouped by its own type (no string casts; on millions of rows several times cheaper than one pass over a
    (column, value-as-string) table); the per-column results are unioned, so it is still one Spark job. Rows per
    stage come from ``level_counts`` (``{level: rows}``) when given, else from one more small job.
    Returns ``{k: (rows, stats)}``.
    """
    columns = [c for c in (columns if columns is not None else df.columns) if c != level_col]
    level = F.col(level_col)
    if level_counts is None:
        level_counts = {
            row["_l"]: row["n"] for row in df.groupBy(level.alias("_l")).agg(F.count(F.lit(1)).alias("n")).collect()
        }
    results: dict[int, tuple[int, dict]] = {
        k: (sum(n for lv, n in level_counts.items() if lv is not None and lv >= k), {}) for k in levels
    }
    if not columns:
        return results
    aggs = []
    for i in range(len(levels)):
        n = F.col(f"n{i}")
        aggs += [F.sum(n).alias(f"count{i}"), F.count_if(n > 0).alias(f"unique{i}"), F.max(n).alias(f"max{i}")]
    per_column_dfs = [
        df.where(F.col(name).isNotNull())
        .groupBy(F.col(name).alias("_v"))
        .agg(*[F.count_if(level >= F.lit(k)).alias(f"n{i}") for i, k in enumerate(levels)])
        .agg(*aggs)
        .select(F.lit(name).alias("_column"), "*")
        for name in columns
    ]
    union_df = per_column_dfs[0]
    for other_df in per_column_dfs[1:]:
        union_df = union_df.unionByName(other_df)
    found = {row["_column"]: row for row in union_df.collect()}  # one small row per column
    for name in columns:
        row = found[name]
        for i, k in enumerate(levels):
            results[k][1][name] = {
                "count": int(row[f"count{i}"] or 0),
                "unique": int(row[f"unique{i}"] or 0),
                "max_freq": int(row[f"max{i}"] or 0),
            }
    return results


def parquet_rows(path: str | Path) -> int:
    """Rows of a Parquet folder written by this job, from the file footers (no Spark job; local file system)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in sorted(Path(path).glob("*.parquet")))


class StatsReport:
    """Per-stage row counts and column stats (count / unique / max frequency) plus named counters.

    ``add_stage`` runs one Spark job per stage; ``write(dir)`` writes ``stats.json`` and ``stats.md`` (one table
    per stage, laid out like the seed analysis: a row each for count, unique and maxfreq, a column per field).
    """

    def __init__(self, title: str = "feature job") -> None:
        self.title = title
        self.stages: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}

    def add_stage(self, name: str, df: DataFrame, columns: list[str] | None = None) -> dict[str, Any]:
        """Compute and record the stats of ``df`` under stage ``name``; returns the stage entry."""
        rows, stats = column_stats(df, columns)
        return self.add_stage_stats(name, rows, stats)

    def add_stage_stats(self, name: str, rows: int, stats: dict[str, dict[str, int]]) -> dict[str, Any]:
        """Record already computed stats (e.g. from ``column_stats`` run once for several stages)."""
        entry = {"name": name, "rows": int(rows), "columns": stats}
        self.stages.append(entry)
        return entry

    def add_counts(self, **named_ints: int) -> None:
        """Record named counters (rejected, untracked, duplicates, sessions, ...); later values overwrite."""
        self.counts.update({key: int(value) for key, value in named_ints.items()})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"title", "stages": [...], "counts": {...}}``."""
        return {"title": self.title, "stages": self.stages, "counts": dict(self.counts)}

    def to_markdown(self) -> str:
        """The report as Markdown: one table per stage, then a table of the counters."""
        lines = [f"# Stats: {self.title}", ""]
        for stage in self.stages:
            lines += [f"## {stage['name']}: {stage['rows']:,} rows", ""]
            columns = list(stage["columns"])
            if columns:
                lines.append("describe | " + " | ".join(columns))
                lines.append(":--- | " + " | ".join("---:" for _ in columns))
                for key, label in (("count", "count"), ("unique", "unique"), ("max_freq", "maxfreq")):
                    lines.append(f"{label} | " + " | ".join(f"{stage['columns'][c][key]:,}" for c in columns))
                lines.append("")
        if self.counts:
            lines += ["## Counts", "", "what | rows", ":--- | ---:"]
            lines += [f"{key} | {value:,}" for key, value in self.counts.items()]
            lines.append("")
        return "\n".join(lines)

    def write(self, directory: str | Path) -> None:
        """Write ``stats.json`` and ``stats.md`` into ``directory`` (a local folder, e.g. ``out.path("")``)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "stats.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        (directory / "stats.md").write_text(self.to_markdown(), encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------------
# Fingerprints, atomic output, manifest
# ---------------------------------------------------------------------------------------------------------------
def _sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path: Path) -> dict:
    """``{"bytes", "sha256"}`` of a file (streamed); for a folder, over its files in name order (hidden and
    ``_``-prefixed names skipped) with ``"files"`` = how many."""
    path = Path(path)
    if path.is_file():
        return {"bytes": path.stat().st_size, "sha256": _sha256_file(path)}
    if not path.is_dir():
        raise InputError(f"file {path} not found")
    digest = hashlib.sha256()
    total = 0
    files = 0
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = child.relative_to(path).as_posix()
        if any(part.startswith((".", "_")) for part in rel.split("/")):
            continue
        size = child.stat().st_size
        digest.update(f"{rel}\0{size}\0{_sha256_file(child)}\n".encode())
        total += size
        files += 1
    return {"bytes": total, "sha256": digest.hexdigest(), "files": files}


class AtomicOutput:
    """Context manager that builds an output folder ``OUT`` next to it and swaps it in only on success.

    Writes go to a staging folder ``<parent>/.<name>.tmp-<uuid>`` (``.path(rel)`` gives absolute paths for
    ``df.write``). On a clean exit the manifest (``write_manifest``) is written last, an existing ``OUT`` is moved
    aside, the staging folder is renamed to ``OUT`` and the old one deleted. On an exception the staging folder is
    deleted and ``OUT`` is untouched. OUT must be on a file system shared by the driver and the executors (local
    disk for ``local[*]`` or a loopback cluster, NFS for a real one).

    An existing non-empty ``OUT`` without ``_MANIFEST.json`` is not a job output: entering raises InputError
    rather than replacing it.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.final = Path(os.path.abspath(out_dir))
        token = uuid.uuid4().hex[:12]
        self.staging = self.final.parent / f".{self.final.name}.tmp-{token}"
        self._old = self.final.parent / f".{self.final.name}.old-{token}"
        self.manifest: dict | None = None

    def __enter__(self) -> "AtomicOutput":
        if self.final.exists():
            if not self.final.is_dir():
                raise InputError(f"output {self.final} exists and is not a folder")
            if any(self.final.iterdir()) and not (self.final / MANIFEST_NAME).is_file():
                raise InputError(
                    f"output folder {self.final} exists and holds no {MANIFEST_NAME}: not a feature-job output, "
                    "refusing to replace it"
                )
        self.staging.mkdir(parents=True)
        return self

    def path(self, rel: str = "") -> str:
        """Absolute path (string, for ``df.write``) of ``rel`` inside the staging folder."""
        return str(self.staging / rel) if rel else str(self.staging)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            return False
        try:
            if self.manifest is not None:
                (self.staging / MANIFEST_NAME).write_text(
                    json.dumps(self.manifest, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8"
                )
            moved_old = False
            if self.final.exists():
                os.rename(self.final, self._old)
                moved_old = True
            try:
                os.rename(self.staging, self.final)
            except OSError:
                if moved_old:
                    os.rename(self._old, self.final)
                raise
            if moved_old:
                shutil.rmtree(self._old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(self.staging, ignore_errors=True)
            raise
        return False


def config_fingerprint(inputs: dict, config: dict) -> str:
    """sha256 over the input fingerprints and the resolved config (canonical JSON)."""
    payload = json.dumps({"inputs": inputs, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def write_manifest(
    out: AtomicOutput,
    *,
    dataset: str,
    config: dict,
    inputs: dict,
    row_counts: dict,
    vocab_sizes: dict,
    features: dict,
    extra: dict | None = None,
    splits: dict | None = None,
) -> dict:
    """Build the ``_MANIFEST.json`` dict (docs/DATA_CONTRACT.md) and hand it to ``out``, which writes it last.

    ``splits`` maps split name -> folder relative to OUT (default ``{"train": "train", ...}``); ``extra`` keys are
    added at the top level (e.g. ``top_k_tags``). Returns the manifest.
    """
    manifest = {
        "dataset": dataset,
        "created_by": f"musicrec {__version__}",
        "config": config,
        "inputs": inputs,
        "fingerprint": config_fingerprint(inputs, config),
        "row_counts": {key: int(value) for key, value in row_counts.items()},
        "vocab_sizes": {key: int(value) for key, value in vocab_sizes.items()},
        "features": features,
        "splits": splits if splits is not None else {"train": "train", "valid": "valid", "test": "test"},
    }
    manifest.update(extra or {})
    out.manifest = manifest
    return manifest
