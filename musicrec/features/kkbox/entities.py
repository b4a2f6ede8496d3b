"""The split and the entity tables: one row per song / user / source context seen in the events, with its number
of events per split, the side-table fields joined on, and the vocabularies counted and looked up on those tables.

Working per entity is what keeps the job fast: the 10M events are aggregated into a few hundred thousand songs and
34k users, and every vocabulary, statistic and index is made there; the events themselves only meet the indexed
tables again in ``join_features`` (broadcast joins, no shuffle).
"""

from __future__ import annotations

import functools

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from musicrec import schemas
from musicrec.columns import MSNO, ROW_ID, SONG_ID, SPLIT, TEST, TRAIN, VALID
from musicrec.features.kkbox.columns import (
    AGE, ARTIST_COUNT, ARTIST_KEY, CATEGORICAL_VOCABS, CONTEXT_VOCABS, FILE_COL, HAS_EXTRA, HAS_MEMBER, HAS_SONG,
    ISRC_COUNTRY, ISRC_YEAR, MEMBERSHIP_DAYS, MULTI_VALUED_VOCABS, PERSON_VOCAB, PERSON_VOCABS, PLAYS,
    REGISTRATION_YEAR, SONG_COUNT, SONG_LENGTH, SONG_NUMERIC, SONG_VOCABS, USER_COUNT, USER_NUMERIC, USER_VOCABS,
)
from musicrec.features.kkbox.config import KkboxConfig, VocabConfig
from musicrec.features.kkbox.numeric import with_numeric_features
from musicrec.features.kkbox.side import with_song_lists
from musicrec.features.vocab import build_vocabs, vocab_of, with_index, with_indices


# ----------------------------------------------------------------------------------------------------------------
# The split
# ----------------------------------------------------------------------------------------------------------------
def valid_cut(n_rows: int, valid_fraction: float) -> int:
    """First row number of the validation part: the last ``round(n_rows * valid_fraction)`` rows are validation."""
    return n_rows - int(round(n_rows * valid_fraction))


def with_split(df: DataFrame, *, cut: int, row_id_col: str = ROW_ID, file_col: str = FILE_COL) -> DataFrame:
    """Add ``split``: test.csv rows -> "test"; train.csv rows (in time order) -> "train" before row ``cut``, else
    "valid". The cut is on the file's row numbers, so rejected rows do not move it."""
    is_test = F.col(file_col) == F.lit(schemas.KKBOX_TEST_FILE)
    return df.withColumn(
        SPLIT, F.when(is_test, F.lit(TEST)).when(F.col(row_id_col) < F.lit(cut), F.lit(TRAIN)).otherwise(F.lit(VALID))
    )


# ----------------------------------------------------------------------------------------------------------------
# Entity tables
# ----------------------------------------------------------------------------------------------------------------
def plays_by_split(df: DataFrame, key_cols: list[str], *, split_col: str = SPLIT) -> DataFrame:
    """One row per distinct ``key_cols`` value among the events of every split, with its number of events in each
    split (long): ``_plays_train`` (what every vocabulary and popularity count is made of: the train part only),
    ``_plays_valid``, ``_plays_test``."""
    return df.groupBy(*key_cols).agg(
        *[F.sum((F.col(split_col) == F.lit(split)).cast("long")).alias(col) for split, col in PLAYS.items()]
    )


SONG_INFO_COLUMNS = [SONG_LENGTH, "genre_ids", "artist_name", "composer", "lyricist", "language"]
MEMBER_COLUMNS = ["city", "gender", "registered_via", AGE, MEMBERSHIP_DAYS, REGISTRATION_YEAR]


def join_song_info(event_songs_df: DataFrame, songs_df: DataFrame, extra_df: DataFrame) -> DataFrame:
    """Event songs LEFT JOIN songs.csv LEFT JOIN song_extra_info.csv (both keyed by song_id, one row per key), with
    ``_has_song`` / ``_has_extra`` flags: in the real data many played songs are missing from songs.csv, and the
    ISRC of a song may be known even then. Only played songs go on (e.g. to the name splitting): a third of the 2.3M
    songs of songs.csv at full size."""
    _songs_df = songs_df.select(SONG_ID, *SONG_INFO_COLUMNS, F.lit(True).alias(HAS_SONG))
    _extra_df = extra_df.select(SONG_ID, ISRC_COUNTRY, ISRC_YEAR, F.lit(True).alias(HAS_EXTRA))
    return (
        event_songs_df.join(_songs_df, on=SONG_ID, how="left")
        .join(_extra_df, on=SONG_ID, how="left")
        .fillna(False, subset=[HAS_SONG, HAS_EXTRA])
    )


def with_artist_counts(df: DataFrame, *, plays_col: str = PLAYS[TRAIN], out_col: str = ARTIST_COUNT) -> DataFrame:
    """Add ``out_col`` = train-part plays of the song's artist (``_artist_key``, the whole trimmed artist_name):
    the sum of ``plays_col`` over the songs with that artist, which is the number of train events of the artist
    as every event has one song. Null when the song has no artist (not in songs.csv)."""
    _artist_w = Window.partitionBy(ARTIST_KEY)
    return df.withColumn(out_col, F.when(F.col(ARTIST_KEY).isNotNull(), F.sum(plays_col).over(_artist_w)))


def join_member_info(event_users_df: DataFrame, members_df: DataFrame) -> DataFrame:
    """Event users LEFT JOIN members.csv (one row per msno), with a ``_has_member`` flag."""
    _members_df = members_df.select(MSNO, *MEMBER_COLUMNS, F.lit(True).alias(HAS_MEMBER))
    return event_users_df.join(_members_df, on=MSNO, how="left").fillna(False, subset=[HAS_MEMBER])


def song_table(events_df: DataFrame, songs_df: DataFrame, extra_df: DataFrame, *, cfg: KkboxConfig) -> DataFrame:
    """One row per song of the events: its plays per split (``plays_by_split``), the songs.csv and
    song_extra_info.csv fields (``join_song_info``), the name lists (``with_song_lists``), ``song_count`` (its
    train plays), ``artist_count`` and the raw numeric features."""
    multi = cfg.multi_valued
    return (
        plays_by_split(events_df, [SONG_ID])
        .transform(join_song_info, songs_df, extra_df)
        .transform(with_song_lists, genre_separators=multi.genre_separators,
                   person_separators=multi.person_separators, max_multi=multi.max_multi)
        .withColumn(SONG_COUNT, F.col(PLAYS[TRAIN]))
        .transform(with_artist_counts)
        .transform(with_numeric_features, log1p_counts=cfg.numeric.log1p_counts)
    )


def user_table(events_df: DataFrame, members_df: DataFrame, *, cfg: KkboxConfig) -> DataFrame:
    """One row per user of the events: plays per split, the members.csv fields (``join_member_info``),
    ``user_count`` (its train plays) and the raw numeric features."""
    return (
        plays_by_split(events_df, [MSNO])
        .transform(join_member_info, members_df)
        .withColumn(USER_COUNT, F.col(PLAYS[TRAIN]))
        .transform(with_numeric_features, log1p_counts=cfg.numeric.log1p_counts)
    )


# ----------------------------------------------------------------------------------------------------------------
# Vocabularies: which tokens each entity table holds, counted by train plays
# ----------------------------------------------------------------------------------------------------------------
def list_vocabs(shared_person_vocab: bool) -> dict[str, str]:
    """Multi-valued column (its vocab name) -> the vocabulary it is indexed with: itself, or ``person`` for
    artist, composer and lyricist when they share one."""
    return {name: (PERSON_VOCAB if shared_person_vocab and name in PERSON_VOCABS else name)
            for name in MULTI_VALUED_VOCABS}


def vocab_names(list_vocab: dict[str, str]) -> list[str]:
    """Every vocabulary the job writes, in manifest order."""
    return [*CATEGORICAL_VOCABS, *dict.fromkeys(list_vocab.values())]


def scalar_tokens(names: list[str]) -> dict[str, Column]:
    """Token arrays (one token each) of single-valued vocabularies, for ``build_vocabs``."""
    return {name: F.array(F.col(CATEGORICAL_VOCABS[name][0])) for name in names}


def song_tokens(list_vocab: dict[str, str]) -> dict[str, Column]:
    """Token arrays of the song table: its single-valued vocabularies, the shared ``person`` vocabulary (artist,
    composer and lyricist names together) when configured, and the other multi-valued ones."""
    tokens = scalar_tokens(SONG_VOCABS)
    if PERSON_VOCAB in list_vocab.values():
        tokens[PERSON_VOCAB] = F.concat(*[F.coalesce(F.col(MULTI_VALUED_VOCABS[v][0]), F.array().cast(
            "array<string>")) for v in PERSON_VOCABS])
    tokens.update({name: F.col(list_col) for name, (list_col, _) in MULTI_VALUED_VOCABS.items()
                   if list_vocab[name] == name})
    return tokens


def entity_vocabs(song_info_df: DataFrame, user_info_df: DataFrame, context_df: DataFrame, *,
                  list_vocab: dict[str, str], vocab_cfg: VocabConfig) -> DataFrame:
    """Every vocabulary (a ``build_vocabs`` table), each counted on the entity table that holds its tokens with
    train plays as weights: a token's count is the number of train events with it."""
    min_counts = {name: vocab_cfg.min_count_of(name)
                  for name in [*CATEGORICAL_VOCABS, *MULTI_VALUED_VOCABS, PERSON_VOCAB]}
    train_plays = F.col(PLAYS[TRAIN])
    return functools.reduce(DataFrame.unionByName, [
        build_vocabs(song_info_df, song_tokens(list_vocab), weight=train_plays, min_counts=min_counts),
        build_vocabs(user_info_df, scalar_tokens(USER_VOCABS), weight=train_plays, min_counts=min_counts),
        build_vocabs(context_df, scalar_tokens(CONTEXT_VOCABS), weight=train_plays, min_counts=min_counts),
    ])


# ----------------------------------------------------------------------------------------------------------------
# Indexed entity tables and the events they go back to
# ----------------------------------------------------------------------------------------------------------------
def song_features(song_info_df: DataFrame, vocabs_df: DataFrame, *, list_vocab: dict[str, str]) -> DataFrame:
    """``song_id``, the song's index columns (int and array<int>, one ``with_indices`` lookup) and its numeric
    columns: what ``join_features`` broadcasts to the events."""
    scalars = {CATEGORICAL_VOCABS[name][1]: (name, CATEGORICAL_VOCABS[name][0]) for name in SONG_VOCABS}
    lists = {idx_col: (list_vocab[name], list_col) for name, (list_col, idx_col) in MULTI_VALUED_VOCABS.items()}
    return song_info_df.transform(with_indices, vocabs_df, key_col=SONG_ID, scalars=scalars, lists=lists).select(
        SONG_ID, *scalars, *lists, *SONG_NUMERIC)


def user_features(user_info_df: DataFrame, vocabs_df: DataFrame) -> DataFrame:
    """``msno``, the user's index columns and its numeric columns: what ``join_features`` broadcasts."""
    scalars = {CATEGORICAL_VOCABS[name][1]: (name, CATEGORICAL_VOCABS[name][0]) for name in USER_VOCABS}
    return user_info_df.transform(with_indices, vocabs_df, key_col=MSNO, scalars=scalars, lists={}).select(
        MSNO, *scalars, *USER_NUMERIC)


def join_features(events_df: DataFrame, user_feat_df: DataFrame, song_feat_df: DataFrame) -> DataFrame:
    """Events LEFT JOIN the indexed user and song tables. Both are broadcast (one row per user / song seen in the
    events: 34k and a few hundred thousand rows at full size, ints and int arrays only), so the millions of events
    are never shuffled for a join."""
    return (
        events_df.join(F.broadcast(user_feat_df), on=MSNO, how="left")
        .join(F.broadcast(song_feat_df), on=SONG_ID, how="left")
    )


def with_context_indices(events_df: DataFrame, vocabs_df: DataFrame) -> DataFrame:
    """Index the event-level columns ``source_system_tab`` / ``source_screen_name`` / ``source_type``."""
    _df = events_df
    for name in CONTEXT_VOCABS:
        src_col, idx_col = CATEGORICAL_VOCABS[name]
        _df = with_index(_df, vocab_of(vocabs_df, name), src_col, idx_col)
    return _df
