"""The per-user leave-one-out split (``split.protocol: leave_one_out``, the protocol of the NCF and SASRec papers):
per user, the latest play is test, the one before it valid, every earlier play train.

A play counts as an interaction when its song is in the song vocabulary (a "real" song; every song with the default
``vocab.song_min_count: 1``). ``with_recency`` numbers each user's plays from the latest one, in the user's play
order (``session_id``, then ``position``: sessions are numbered in time order); ``with_holdout`` labels them:

- a user with at least 3 real plays: the latest real play is the test target, the one before the valid target;
  train keeps the plays before the valid target (an out-of-vocabulary play after it goes nowhere);
- a user with fewer: every play is train (nothing to evaluate on).

Rows (``loo_session_rows``): "the rest train" holds: the training plays of a session longer than
``sequences.max_length`` become consecutive rows of ``max_length`` songs (``with_train_rows``; the global split
keeps only the first ``max_length``), each built as in the global split (``sequences.build_sessions``: a row shorter
than ``sequences.min_length`` is dropped). The valid row of a user is ``[the play before the valid target, the
valid target]`` and the test row ``[the valid target, the test target]``: two songs, so the ``next_song`` view
makes exactly one example per user and split (its target the held-out song, its input the interaction just before
it), and the leave-one-out sets (``musicrec/data/loo.py``: the last song of the user's row) hold the same target.

``session_id`` = ``user_rank * 2^32 + k``, ``user_rank`` as in ``plays/``: ``k`` numbers the user's train rows
1, 2, ... in time order (so it is not the session number of ``plays/``); ``k = 2^32 - 2`` is the valid row and
``2^32 - 1`` the test row, so ids stay unique over the dataset and sort in time order within a user.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from musicrec.columns import LENGTH, POSITION, SESSION_ID, SPLIT, TEST, TRACK_ID, TRAIN, USER, VALID
from musicrec.features.lastfm.sequences import build_sessions

LATER = "_later"  # int: real plays of the user after this one (0 = the latest real play)
ROLE = "_role"  # string: train / valid / test target / null (dropped), from with_holdout
HELD_OUT_SEQ = {VALID: 2**32 - 2, TEST: 2**32 - 1}  # session number of a user's held-out row (above any real one)
_HELD_OUT_LATER = {VALID: 1, TEST: 0}  # LATER of each split's target
_MIN_REAL_PLAYS = 3  # a user needs a train play, a valid and a test target to be evaluated


def with_recency(plays_df: DataFrame, real_tracks_df: DataFrame, *, col_user: str = USER) -> DataFrame:
    """Add ``_later`` (the user's real plays after this one; a real play's own rank from the latest, minus one),
    ``_real`` (the song is in ``real_tracks_df``'s ``track_id``) and ``_real_plays`` (the user's real plays).
    Two windows over ``Window.partitionBy(user)``: one shuffle at most, none on user-partitioned plays."""
    real_df = real_tracks_df.select(TRACK_ID).distinct().withColumn("_real", F.lit(True))
    latest_first_w = Window.partitionBy(col_user).orderBy(F.desc(SESSION_ID), F.desc(POSITION))
    # rows strictly after this one in play order = rows before it latest-first
    after_w = latest_first_w.rowsBetween(Window.unboundedPreceding, -1)
    flagged_df = plays_df.join(F.broadcast(real_df), on=TRACK_ID, how="left").withColumn(
        "_real", F.coalesce(F.col("_real"), F.lit(False))
    )
    real_int = F.col("_real").cast("int")
    return flagged_df.withColumn(LATER, F.coalesce(F.sum(real_int).over(after_w), F.lit(0)).cast("int")).withColumn(
        "_real_plays", F.sum(real_int).over(Window.partitionBy(col_user)).cast("int")
    )


def with_holdout(ranked_df: DataFrame) -> DataFrame:
    """Add ``_role`` to ``with_recency`` rows: ``train``, ``valid`` / ``test`` (the split's target) or null (an
    out-of-vocabulary play after the valid target: in no split). Users with fewer than 3 real plays: all train."""
    evaluated = F.col("_real_plays") >= F.lit(_MIN_REAL_PLAYS)
    role = (
        F.when(~evaluated | (F.col(LATER) >= 2), F.lit(TRAIN))
        .when(F.col("_real") & (F.col(LATER) == _HELD_OUT_LATER[VALID]), F.lit(VALID))
        .when(F.col("_real") & (F.col(LATER) == _HELD_OUT_LATER[TEST]), F.lit(TEST))
    )
    return ranked_df.withColumn(ROLE, role)


def with_train_rows(train_df: DataFrame, max_length: int, *, col_user: str = USER) -> DataFrame:
    """Replace ``session_id`` of the training plays by the id of their row: a session's plays are cut into
    consecutive pieces of ``max_length`` (in ``position`` order), and piece after piece, session after session, the
    user's rows are numbered ``k`` = 1, 2, ... (``session_id = user_rank * 2^32 + k``)."""
    in_session_w = Window.partitionBy(col_user, SESSION_ID).orderBy(POSITION)
    piece = F.floor((F.row_number().over(in_session_w) - 1) / F.lit(int(max_length)))
    row_w = Window.partitionBy(col_user).orderBy(SESSION_ID, "_piece")
    user_base = F.shiftleft(F.shiftright(F.col(SESSION_ID), 32), 32)
    return train_df.withColumn("_piece", piece).withColumn(
        SESSION_ID, user_base + F.dense_rank().over(row_w).cast("long")
    ).drop("_piece")


def held_out_plays(holdout_df: DataFrame, split: str) -> DataFrame:
    """The two plays of each evaluated user's ``split`` row (valid or test): the real play just before the split's
    target and the target, at positions 0 and 1, under the row's ``session_id`` (``HELD_OUT_SEQ``)."""
    target_later = _HELD_OUT_LATER[split]
    pair_df = holdout_df.where(
        F.col("_real") & (F.col("_real_plays") >= F.lit(_MIN_REAL_PLAYS))
        & F.col(LATER).between(target_later, target_later + 1)
    )
    row_id = F.shiftleft(F.shiftright(F.col(SESSION_ID), 32), 32) + F.lit(HELD_OUT_SEQ[split])
    return pair_df.withColumn(SESSION_ID, row_id).withColumn(
        POSITION, (F.lit(target_later + 1) - F.col(LATER)).cast("int")
    )


def loo_session_rows(seq_plays_df: DataFrame, song_lookup_df: DataFrame, user_vocab_df: DataFrame, *,
                     min_length: int, max_length: int, top_k: int, col_user: str = USER) -> DataFrame:
    """The session rows of the leave-one-out split with their ``split``: the training rows (``with_train_rows``,
    then ``build_sessions`` with ``min_length`` / ``max_length``) and one two-song valid and test row per evaluated
    user (``held_out_plays``)."""
    holdout_df = seq_plays_df.transform(with_recency, song_lookup_df, col_user=col_user).transform(with_holdout)
    build = lambda df, lo, hi: build_sessions(  # noqa: E731
        df, song_lookup_df, user_vocab_df, min_length=lo, max_length=hi, top_k=top_k, col_user=col_user
    )
    train_plays_df = holdout_df.where(F.col(ROLE) == TRAIN).transform(with_train_rows, max_length, col_user=col_user)
    train_df = build(train_plays_df, min_length, max_length).withColumn(SPLIT, F.lit(TRAIN))
    held_df = holdout_df.transform(held_out_plays, VALID).unionByName(holdout_df.transform(held_out_plays, TEST))
    is_test = F.col(SESSION_ID).bitwiseAND(F.lit(2**32 - 1)) == F.lit(HELD_OUT_SEQ[TEST])  # the row's number
    held_rows_df = build(held_df, 2, 2).withColumn(SPLIT, F.when(is_test, F.lit(TEST)).otherwise(F.lit(VALID)))
    return train_df.unionByName(held_rows_df)


def loo_counts(split_df: DataFrame, plays: int, evaluated_users: int) -> dict[str, int]:
    """The stats counters of a leave-one-out split (one small job): ``loo_evaluated_users`` (users with a valid and
    a test row), ``loo_train_plays`` (plays in the train rows) and ``loo_plays_in_no_split``: of the ``plays``
    after the tag policy, those neither in a train row nor held out (train rows shorter than
    ``sequences.min_length``, out-of-vocabulary plays after a valid target)."""
    train_plays = split_df.where(F.col(SPLIT) == TRAIN).agg(F.sum(LENGTH)).first()[0] or 0
    return {"loo_evaluated_users": evaluated_users, "loo_train_plays": int(train_plays),
            "loo_plays_in_no_split": plays - 2 * evaluated_users - int(train_plays)}
