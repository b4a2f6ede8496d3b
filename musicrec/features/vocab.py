"""Vocabularies, the one mechanism both feature jobs use: build, write, look up (docs/DATA_CONTRACT.md).

Conventions: index 0 = padding, 1 = out-of-vocabulary (rare, unknown or missing), real tokens from 2 in descending
count, ties by token ascending; null is never a token; a token counted fewer than its ``min_count`` is left out
(and maps to 1).

- ``build_vocabs`` makes several vocabularies in one aggregation: a table ``vocab, token, index, count`` (a
  "vocabs table"). Each row of the input adds its ``weight`` (1 by default) to every token it holds: rows = plays
  count plays (Last.fm); rows = distinct songs weighted by their train plays count train events without exploding
  the events (KKBOX).
- ``write_vocabs`` writes every vocabulary of a vocabs table to ``OUT/vocab/<name>/`` in one Spark job.
- ``with_index`` looks one scalar column up (a broadcast join: for the event tables); ``with_indices`` looks many
  scalar and array columns of a keyed table (songs, users) up in one join.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from musicrec.columns import COUNT, FIRST_TOKEN_INDEX, INDEX, OOV_INDEX, TOKEN, VOCAB, VOCAB_DIR
from musicrec.io import AtomicOutput

# Column layout of OUT/vocab/<name>/ (docs/DATA_CONTRACT.md).
VOCAB_SCHEMA = T.StructType(
    [
        T.StructField(TOKEN, T.StringType()),
        T.StructField(INDEX, T.IntegerType()),
        T.StructField(COUNT, T.LongType()),
    ]
)


def build_vocabs(df: DataFrame, token_arrays: dict[str, Column], *, min_counts: dict[str, int],
                 weight: Column | None = None) -> DataFrame:
    """Several vocabularies in one aggregation: ``vocab string, token string, index int, count long``.

    ``token_arrays`` maps a vocabulary name to an array<string> Column (wrap a scalar column in ``F.array``; a null
    array holds no token); a token's ``count`` is the sum of ``weight`` (default 1) over the rows holding it, once
    per occurrence. ``min_counts`` gives each vocabulary's minimum count (values below 1 count as 1).
    """
    empty = F.array().cast("array<string>")
    pairs = F.flatten(F.array(*[
        F.transform(F.coalesce(arr.cast("array<string>"), empty), _tagged(name)) for name, arr in token_arrays.items()
    ]))
    min_count = F.create_map(*[F.lit(v) for name in token_arrays for v in (name, max(int(min_counts[name]), 1))])
    counts_df = (
        df.select(F.explode(pairs).alias("_pair"), (F.lit(1) if weight is None else weight).alias("_weight"))
        .select(F.col(f"_pair.{VOCAB}").alias(VOCAB), F.col(f"_pair.{TOKEN}").alias(TOKEN), "_weight")
        .where(F.col(TOKEN).isNotNull())
        .groupBy(VOCAB, TOKEN)
        .agg(F.sum("_weight").cast("long").alias(COUNT))
        .where(F.col(COUNT) >= F.element_at(min_count, F.col(VOCAB)))
    )
    # one window partition per vocabulary: a vocabulary is at most a few million rows and its order must be total
    _vocab_order_w = Window.partitionBy(VOCAB).orderBy(F.desc(COUNT), F.asc(TOKEN))
    return counts_df.select(
        VOCAB, TOKEN,
        (F.row_number().over(_vocab_order_w) + F.lit(FIRST_TOKEN_INDEX - 1)).cast("int").alias(INDEX),
        COUNT,
    )


def _tagged(name: str):
    return lambda token: F.struct(F.lit(name).alias(VOCAB), token.cast("string").alias(TOKEN))


def write_vocabs(vocabs_df: DataFrame, names: list[str], out: AtomicOutput) -> dict[str, str]:
    """Write each named vocabulary of a vocabs table to ``OUT/vocab/<name>/`` (one Parquet file each, ``token,
    index, count`` sorted by index) in ONE Spark job; returns ``{name: path}``. A vocabulary without tokens gets an
    empty table with the schema."""
    staging = Path(out.path("_vocab"))
    (
        vocabs_df.where(F.col(VOCAB).isin(names))
        .repartition(VOCAB)  # all of a vocabulary in one task, so one file
        .sortWithinPartitions(VOCAB, INDEX)
        .select(TOKEN, INDEX, COUNT, VOCAB)
        .write.partitionBy(VOCAB).mode("overwrite").parquet(str(staging))
    )
    paths = {}
    for name in names:
        written, path = staging / f"{VOCAB}={name}", Path(out.path(f"{VOCAB_DIR}/{name}"))
        path.parent.mkdir(parents=True, exist_ok=True)
        if written.is_dir():
            written.rename(path)
        else:
            vocabs_df.sparkSession.createDataFrame([], VOCAB_SCHEMA).coalesce(1).write.parquet(str(path))
        paths[name] = str(path)
    shutil.rmtree(staging)
    return paths


def vocab_of(vocabs_df: DataFrame, name: str) -> DataFrame:
    """One vocabulary (``token, index, count``) of a vocabs table."""
    return vocabs_df.where(F.col(VOCAB) == F.lit(name)).select(TOKEN, INDEX, COUNT)


def named_vocab(vocab_df: DataFrame, name: str) -> DataFrame:
    """A single vocabulary (``token, index, count``, e.g. read back from ``OUT/vocab/<name>/``) as a vocabs table."""
    return vocab_df.select(F.lit(name).alias(VOCAB), TOKEN, INDEX, COUNT)


def with_index(df: DataFrame, vocab_df: DataFrame, col_name: str, out_col: str) -> DataFrame:
    """Add ``out_col`` (int) = vocab index of ``df[col_name]``; null, unknown or rare tokens -> 1 (OOV).

    A broadcast left join on the token (one vocabulary is small next to the events it indexes). Row count and
    columns of ``df`` are unchanged.
    """
    _lookup_df = vocab_df.select(F.col(TOKEN).alias("_vocab_token"), F.col(INDEX).alias("_vocab_index"))
    joined_df = df.join(F.broadcast(_lookup_df), F.col(col_name).cast("string") == F.col("_vocab_token"), "left")
    return joined_df.withColumn(
        out_col, F.coalesce(F.col("_vocab_index"), F.lit(OOV_INDEX)).cast("int")
    ).drop("_vocab_token", "_vocab_index")


def with_indices(df: DataFrame, vocabs_df: DataFrame, *, key_col: str, scalars: dict[str, tuple[str, str]],
                 lists: dict[str, tuple[str, str]]) -> DataFrame:
    """Add vocab indices for several columns of ``df`` in one lookup: ``scalars`` maps an output int column to
    ``(vocabulary, source column)``, ``lists`` maps an output array<int> column to ``(vocabulary, array column)``.

    A scalar that is null, unknown or rare -> 1; a list keeps its element order, an unknown element -> 1, a null or
    empty list -> [1]. ``key_col`` must be unique and non-null: every value of every column is exploded with its
    position, looked up in ``vocabs_df`` (broadcast) by one join on (vocabulary, token), gathered per key and joined
    back.
    """
    empty = F.array().cast("array<string>")
    specs = {out_col: (vocab, F.array(F.col(src))) for out_col, (vocab, src) in scalars.items()}
    specs.update({out_col: (vocab, F.coalesce(F.col(src).cast("array<string>"), empty))
                  for out_col, (vocab, src) in lists.items()})
    elements = F.flatten(F.array(*[F.transform(arr, _element(out_col, vocab)) for out_col, (vocab, arr) in
                                   specs.items()]))
    _lookup_df = vocabs_df.select(VOCAB, TOKEN, F.col(INDEX).alias("_index"))
    _gathered_df = (
        df.select(key_col, F.explode(elements).alias("_e"))
        .select(key_col, "_e.*")
        .join(F.broadcast(_lookup_df), on=[VOCAB, TOKEN], how="left")
        .groupBy(key_col)
        .agg(F.array_sort(F.collect_list(F.struct("_out", "_pos", F.coalesce("_index", F.lit(OOV_INDEX)).alias("_i"))))
             .alias("_found"))
    )
    oov_list = F.array(F.lit(OOV_INDEX))
    picked = {out_col: F.transform(F.filter(F.col("_found"), _is_output(out_col)), lambda e: e["_i"])
              for out_col in specs}
    return df.join(_gathered_df, on=key_col, how="left").select(
        "*",
        *[F.coalesce(F.try_element_at(picked[c], F.lit(1)), F.lit(OOV_INDEX)).cast("int").alias(c) for c in scalars],
        *[F.when(F.size(picked[c]) > 0, picked[c]).otherwise(oov_list).cast("array<int>").alias(c) for c in lists],
    ).drop("_found")


def _element(out_col: str, vocab_name: str):
    return lambda token, pos: F.struct(
        F.lit(out_col).alias("_out"), pos.alias("_pos"), F.lit(vocab_name).alias(VOCAB),
        token.cast("string").alias(TOKEN),
    )


def _is_output(out_col: str):
    return lambda element: element["_out"] == F.lit(out_col)


__all__ = ["VOCAB_SCHEMA", "build_vocabs", "named_vocab", "vocab_of", "with_index", "with_indices", "write_vocabs"]
