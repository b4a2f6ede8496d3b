"""The per-stage stats report of a feature job (``stats.json`` / ``stats.md``): rows and, per column, count,
distinct values and the largest frequency, laid out like the seed analysis' tables.

``column_stats`` computes one stage's table in one Spark job; ``column_stats_by_level`` computes the tables of
several nested stages (each keeps a subset of the previous one's rows) in one job over rows labelled with the last
stage they survive, without materializing the stages. ``StatsReport`` collects them with named counters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from musicrec.columns import STATS_JSON, STATS_MD

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
        (directory / STATS_JSON).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        (directory / STATS_MD).write_text(self.to_markdown(), encoding="utf-8")
