"""Side-table features: names split into lists (songs.csv), ISRC country and year (song_extra_info.csv), member
age and dates (members.csv). Column functions and the ``with_*`` transformations that apply them."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from musicrec.features.kkbox.columns import (
    AGE, ARTIST_KEY, ARTIST_LIST, COMPOSER_LIST, GENRE_LIST, ISRC_COUNTRY, ISRC_YEAR, LYRICIST_LIST, MEMBERSHIP_DAYS,
    REGISTRATION_YEAR,
)

# ----------------------------------------------------------------------------------------------------------------
# Names: genre_ids, artist_name, composer, lyricist
# ----------------------------------------------------------------------------------------------------------------
# Whitespace that Spark's trim() leaves alone (it trims U+0020 only): tabs, newlines, U+00A0 (in the real files),
# the other Unicode spaces and the BOM. split_names turns them into plain spaces first.
_OTHER_SPACES = "\t\n\r\x0b\x0c\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
                "\u2028\u2029\u202f\u205f\u3000\ufeff"
_PIECE_BREAK = "\u0001"  # what every separator becomes before the split (never in the data: a control character)


def separator_parts(separators: list[str] | tuple[str, ...]) -> tuple[str, str | None]:
    """Split the configured separators (regex alternatives) into the single characters among them (``/``, ``\\|``,
    ``、`` ...) and one Java regex for the others (``\\s[xX]\\s``, ``feat.`` ...; None when there are none)."""
    singles, others = [], []
    for sep in separators:
        if len(sep) == 1 and sep not in "\\.^$|?*+()[]{}":
            singles.append(sep)
        elif len(sep) == 2 and sep[0] == "\\" and not sep[1].isalnum():
            singles.append(sep[1])
        else:
            others.append(sep)
    return "".join(dict.fromkeys(singles)), ("|".join(f"(?:{sep})" for sep in others) or None)


def plain_spaces(col: Column) -> Column:
    """``col`` with every kind of whitespace turned into U+0020, so that ``F.trim`` trims it."""
    return F.translate(col, _OTHER_SPACES, " " * len(_OTHER_SPACES))


def split_names(col: Column, separators: list[str] | tuple[str, ...], max_len: int) -> Column:
    """array<string> of the pieces of ``col`` split on ``separators`` (regex alternatives): each trimmed (incl.
    U+00A0, tabs, U+3000: all whitespace becomes plain spaces), empty pieces dropped, duplicates dropped (first
    kept), at most ``max_len``; null when none is left.

    Cheap on millions of names: single-character separators are mapped to one break character with ``translate``,
    the others (`` x ``, ``feat.``) replaced by one regex, and the split on that one plain character takes Java's
    no-regex fast path."""
    singles, others = separator_parts(separators)
    text = plain_spaces(col)
    if singles:
        text = F.translate(text, singles, _PIECE_BREAK * len(singles))
    if others:
        text = F.regexp_replace(text, others, _PIECE_BREAK)
    pieces = F.transform(F.split(text, _PIECE_BREAK), lambda piece: F.trim(piece))
    kept = F.slice(F.array_distinct(F.filter(pieces, lambda piece: piece != "")), 1, max_len)
    return F.when(F.size(kept) > 0, kept)


def with_song_lists(df: DataFrame, *, genre_separators: list[str] | tuple[str, ...],
                    person_separators: list[str] | tuple[str, ...], max_multi: int) -> DataFrame:
    """Add ``genre_list``, ``artist_list``, ``composer_list``, ``lyricist_list`` (array<string>, null = missing)
    and ``_artist_key`` (the whole trimmed artist_name, the key of the artist popularity count)."""
    return (
        df.withColumn(GENRE_LIST, split_names(F.col("genre_ids"), genre_separators, max_multi))
        .withColumn(ARTIST_LIST, split_names(F.col("artist_name"), person_separators, max_multi))
        .withColumn(COMPOSER_LIST, split_names(F.col("composer"), person_separators, max_multi))
        .withColumn(LYRICIST_LIST, split_names(F.col("lyricist"), person_separators, max_multi))
        .withColumn(ARTIST_KEY, F.nullif(F.trim(plain_spaces(F.col("artist_name"))), F.lit("")))
    )


# ----------------------------------------------------------------------------------------------------------------
# ISRC: country and reference year
# ----------------------------------------------------------------------------------------------------------------
_ISRC_RE = r"^[A-Z]{2}[A-Z0-9]{3}[0-9]{7}$"  # CC XXX YY NNNNN without dashes, e.g. TWUM71200043


def isrc_country(col: Column) -> Column:
    """Country code of an ISRC (its first two letters, e.g. "TW"); null when the ISRC is missing or malformed."""
    isrc = F.upper(F.trim(col))
    return F.when(isrc.rlike(_ISRC_RE), F.substring(isrc, 1, 2))


def isrc_year(col: Column, pivot: int) -> Column:
    """Four-digit reference year of an ISRC from its two-digit year (characters 6-7: "TWUM71200043" -> 2012):
    ``yy < pivot`` -> 20yy, else 19yy; null when the ISRC is missing or malformed."""
    isrc = F.upper(F.trim(col))
    yy = F.substring(isrc, 6, 2).try_cast("int")
    return F.when(isrc.rlike(_ISRC_RE), F.when(yy < pivot, yy + 2000).otherwise(yy + 1900)).cast("int")


def with_isrc_fields(df: DataFrame, *, pivot: int, isrc_col: str = "isrc") -> DataFrame:
    """Add ``isrc_country`` (string) and ``isrc_year`` (int)."""
    return df.withColumn(ISRC_COUNTRY, isrc_country(F.col(isrc_col))).withColumn(
        ISRC_YEAR, isrc_year(F.col(isrc_col), pivot)
    )


# ----------------------------------------------------------------------------------------------------------------
# Members: age, membership days, registration year
# ----------------------------------------------------------------------------------------------------------------
def yyyymmdd(col_name: str) -> Column:
    """A yyyymmdd string as a date; null when missing or not a real date (e.g. 20170231)."""
    return F.try_to_date(F.col(col_name), "yyyyMMdd")


def with_member_features(df: DataFrame, *, age_min: int, age_max: int) -> DataFrame:
    """Add ``age`` (``bd`` when within [age_min, age_max], else null: 0 and values like -43 or 1051 are common),
    ``membership_days`` (expiration - registration; null when negative, e.g. the 19700101 placeholder) and
    ``registration_year``."""
    registered = yyyymmdd("registration_init_time")
    days = F.datediff(yyyymmdd("expiration_date"), registered)
    return (
        df.withColumn(AGE, F.when(F.col("bd").between(age_min, age_max), F.col("bd")))
        .withColumn(MEMBERSHIP_DAYS, F.when(days >= 0, days))
        .withColumn(REGISTRATION_YEAR, F.year(registered))
    )
