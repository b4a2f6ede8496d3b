"""Song tags: the top-K tags of every played track, the tag policy on plays, and the song lookup of the sessions.

- ``top_tags_of_played`` keeps the good lines of ``with_parsed_tags`` for tracks that were played (a broadcast
  semi-join) and ``with_top_tags`` ranks them: ``track_id, tags`` (up to ``tags.top_k`` names, highest count first).
- ``apply_tag_policy`` drops the plays of untagged songs (``tags.drop_untagged``) or keeps them all.
- ``build_song_lookup`` gives every song of the vocabulary its tag indices (``features/vocab.py with_indices``),
  padded to K: what ``OUT/song_tags/`` holds and what the session rows are built from.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from musicrec.columns import INDEX, REASON, SONG_IDX, TAGS, TOKEN, TRACK_ID
from musicrec.features.lastfm.parse import TAG, TAG_COUNT, TAGS_COLUMNS, TRAID
from musicrec.features.lastfm.sequences import padded
from musicrec.features.vocab import named_vocab, with_indices


def top_tags_of_played(tag_lines_df: DataFrame, plays_df: DataFrame, top_k: int, *, min_weight: int = 0
                       ) -> DataFrame:
    """``track_id, tags`` for the tracks of ``plays_df``, from the good rows of ``with_parsed_tags``."""
    play_tracks_df = plays_df.select(F.col(TRACK_ID).alias(TRAID)).where(F.col(TRAID).isNotNull())
    return (
        tag_lines_df.where(F.col(REASON).isNull())
        .select(*TAGS_COLUMNS)
        # broadcast the distinct played tracks (about a million ids at full size) instead of shuffling tags
        .join(F.broadcast(play_tracks_df.distinct()), on=TRAID, how="left_semi")
        .transform(with_top_tags, top_k, min_weight=min_weight)
    )


def no_song_tags(spark: SparkSession) -> DataFrame:
    """The empty ``track_id, tags`` table of a run without a tags file."""
    return spark.createDataFrame([], f"{TRACK_ID} string, {TAGS} array<string>")


def with_top_tags(tags_df: DataFrame, top_k: int, *, min_weight: int = 0) -> DataFrame:
    """``track_id, tags``: per track the ``top_k`` tag names by count (descending, ties by name), as an ordered array.

    A tag listed twice for a track counts with its highest count; rows below ``min_weight`` are ignored.
    """
    song_tag_w = Window.partitionBy(TRAID).orderBy(F.desc(TAG_COUNT), F.asc(TAG))
    return (
        tags_df.where(F.col(TAG_COUNT) >= F.lit(int(min_weight)))
        # one shuffle: the grouping, the window and the collect below all cluster by traid
        .repartition(TRAID)
        .groupBy(TRAID, TAG)
        .agg(F.max(TAG_COUNT).alias(TAG_COUNT))
        .withColumn("_rank", F.row_number().over(song_tag_w))
        .where(F.col("_rank") <= F.lit(int(top_k)))
        .groupBy(TRAID)
        .agg(F.array_sort(F.collect_list(F.struct("_rank", TAG))).alias("_ranked"))
        .select(F.col(TRAID).alias(TRACK_ID), F.transform("_ranked", lambda x: x[TAG]).alias(TAGS))
    )


def apply_tag_policy(plays_df: DataFrame, song_tags_df: DataFrame, *, drop_untagged: bool) -> DataFrame:
    """Drop the plays of songs without tags (``drop_untagged``) or keep every play (then a no-op)."""
    if not drop_untagged:
        return plays_df
    tagged_df = song_tags_df.select(TRACK_ID)
    return plays_df.join(F.broadcast(tagged_df), on=TRACK_ID, how="left_semi")


def build_song_lookup(song_vocab_df: DataFrame, song_tags_df: DataFrame, tag_vocab_df: DataFrame, top_k: int
                      ) -> DataFrame:
    """``track_id, song_idx, tags``: every song of the vocabulary with its top-K tag indices, 0-padded to K.

    Songs without tags get K pads; tags out of the tag vocabulary get 1 (OOV).
    """
    songs_df = song_vocab_df.select(F.col(TOKEN).alias(TRACK_ID), F.col(INDEX).alias(SONG_IDX)).join(
        song_tags_df, on=TRACK_ID, how="left"
    )
    indexed_df = songs_df.transform(
        with_indices, named_vocab(tag_vocab_df, "tag"), key_col=TRACK_ID, scalars={}, lists={"_tag_idx": ("tag", TAGS)}
    )
    tag_indices = F.when(F.col(TAGS).isNotNull(), F.col("_tag_idx"))  # an untagged song: no indices, K pads
    return indexed_df.select(TRACK_ID, SONG_IDX, padded(tag_indices, top_k).alias(TAGS))
