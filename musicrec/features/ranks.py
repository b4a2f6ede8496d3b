"""Ranks and running offsets without a single-partition window, shared by both feature jobs.

A ``Window`` without ``partitionBy`` makes Spark move every row into one task ("No Partition Defined for Window
operation"). Here the global order is split into ranges that are sorted in parallel, and only one number per range
comes back to the driver:

- ``value_ranks``: the distinct values of a column with their 1-based rank in ascending order (what
  ``row_number().over(Window.orderBy(col))`` over the distinct values gives): range-partitioned, sorted within each
  range, each range's count collected, and a range's ranks continue where the ranges before it end;
- ``running_offsets``: ``{key: sum of the counts of the smaller keys}`` for a handful of (key, count) pairs already
  on the driver (e.g. lines per split of a text file).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

_RANGE_COL, _MID_COL = "_range", "_mid"


def value_ranks(df: DataFrame, col_name: str, *, out_col: str, partitions: int | None = None) -> DataFrame:
    """``col_name, out_col``: each distinct value of ``df[col_name]`` with its 1-based rank (int) in ascending
    order, nulls first: the same numbers as ``row_number()`` over ``Window.orderBy(col_name)`` of the distinct values.

    The distinct values are range-partitioned into ``partitions`` ranges (default: ``spark.sql.shuffle.partitions``)
    and sorted within each; ``monotonically_increasing_id`` numbers them inside a range. One Spark job numbers them
    and counts each range (one row per range to the driver); the numbered values are kept from that job
    (``localCheckpoint``: a recomputation could cut the ranges elsewhere, so the lineage is cut and the numbers
    cannot change), and a range's ranks start after the values of the ranges before it.
    """
    spark = df.sparkSession
    n_ranges = partitions or int(spark.conf.get("spark.sql.shuffle.partitions"))
    order = F.col(col_name).asc_nulls_first()
    numbered_df = (
        df.select(col_name).distinct()
        .repartitionByRange(n_ranges, order)
        .sortWithinPartitions(order)
        .select(col_name, F.spark_partition_id().alias(_RANGE_COL), F.monotonically_increasing_id().alias(_MID_COL))
        .localCheckpoint(eager=False)  # materialized by the count below, its first action
    )
    ranges = numbered_df.groupBy(_RANGE_COL).agg(F.count(F.lit(1)).alias("n"), F.min(_MID_COL).alias("first")).collect()
    starts = running_offsets({row[_RANGE_COL]: row["n"] for row in ranges})
    # rank = values in earlier ranges + position in the range + 1, with position = _mid - first _mid of the range
    shift = {row[_RANGE_COL]: starts[row[_RANGE_COL]] - row["first"] + 1 for row in ranges}
    return numbered_df.select(col_name, (F.col(_MID_COL) + lookup(shift, F.col(_RANGE_COL))).cast("int").alias(out_col))


def running_offsets(counts: dict) -> dict:
    """``{key: sum of counts[k] for the keys k < key}`` (keys in ascending order; the first key gets 0)."""
    offsets, total = {}, 0
    for key in sorted(counts):
        offsets[key] = total
        total += counts[key]
    return offsets


def lookup(mapping: dict, key: Column) -> Column:
    """``mapping[key]`` (integers, as longs) as a Column: a map literal, null for a key it does not hold. For a few
    entries only: the literal is part of the plan."""
    if not mapping:
        return F.lit(None).cast("long")
    entries = [F.lit(int(v)).cast("long") for item in sorted(mapping.items()) for v in item]
    return F.try_element_at(F.create_map(*entries), key.cast("long"))


__all__ = ["lookup", "running_offsets", "value_ranks"]
