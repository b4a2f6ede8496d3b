"""The KKBOX job's own column names and its vocabularies; the names shared with other stages (``row_id``,
``split``, ``msno`` ...) are in ``musicrec.columns``.

Temporary columns start with ``_`` and never reach the output. No pyspark here: the configuration checks its
vocabulary names against ``CATEGORICAL_VOCABS`` / ``MULTI_VALUED_VOCABS`` without a Spark session.
"""

from __future__ import annotations

from musicrec.columns import MSNO, SONG_ID, SONG_IDX, TEST, TRAIN, USER_IDX, VALID

DATASET = "kkbox"

# --- read: the marks every raw row carries until its fate is known ---
CORRUPT_COL = "_corrupt_record"  # Spark's PERMISSIVE-mode copy of a record that did not fit the schema
FILE_COL = "_file"  # which raw file a row came from
MID_COL = "_mid"  # monotonically_increasing_id() taken on the scan: (input partition << 33) + position
RAW_COL = "_raw"  # the raw record (or its fields re-joined) for OUT/rejected/
REASON_COL = "_reason"  # null = good row, else why it is rejected
LINE_COL = "_line"  # 1-based physical line, for OUT/rejected/ (null when not known)
BLANK_REASON = "blank row (every field empty)"
INVALID_UTF8_REASON = "invalid UTF-8 bytes (or U+FFFD) in a text field"

# --- side tables and entity tables ---
GENRE_LIST, ARTIST_LIST, COMPOSER_LIST, LYRICIST_LIST = "genre_list", "artist_list", "composer_list", "lyricist_list"
ISRC_COUNTRY, ISRC_YEAR = "isrc_country", "isrc_year"
AGE, MEMBERSHIP_DAYS, REGISTRATION_YEAR = "age", "membership_days", "registration_year"
SONG_LENGTH, SONG_COUNT, USER_COUNT, ARTIST_COUNT = "song_length", "song_count", "user_count", "artist_count"
ARTIST_KEY = "_artist_key"  # trimmed artist_name: the key of the artist popularity count
HAS_MEMBER, HAS_SONG, HAS_EXTRA = "_has_member", "_has_song", "_has_extra"
PLAYS = {TRAIN: "_plays_train", VALID: "_plays_valid", TEST: "_plays_test"}  # events of an entity per split

# --- vocabularies ---
# Single-valued columns: vocab name -> (source column, output int column).
CATEGORICAL_VOCABS: dict[str, tuple[str, str]] = {
    "user": (MSNO, USER_IDX),
    "song": (SONG_ID, SONG_IDX),
    "source_system_tab": ("source_system_tab", "source_system_tab_idx"),
    "source_screen_name": ("source_screen_name", "source_screen_name_idx"),
    "source_type": ("source_type", "source_type_idx"),
    "city": ("city", "city_idx"),
    "gender": ("gender", "gender_idx"),
    "registered_via": ("registered_via", "registered_via_idx"),
    "language": ("language", "language_idx"),
    "isrc_country": (ISRC_COUNTRY, "isrc_country_idx"),
    "isrc_year": (ISRC_YEAR, "isrc_year_idx"),
}
# Multi-valued columns: vocab name -> (array<string> column, output array<int> column).
MULTI_VALUED_VOCABS: dict[str, tuple[str, str]] = {
    "genre": (GENRE_LIST, "genre_idx"),
    "artist": (ARTIST_LIST, "artist_idx"),
    "composer": (COMPOSER_LIST, "composer_idx"),
    "lyricist": (LYRICIST_LIST, "lyricist_idx"),
}
PERSON_VOCAB = "person"  # one vocabulary for artist, composer and lyricist when multi_valued.shared_person_vocab
PERSON_VOCABS = ("artist", "composer", "lyricist")
# Which table each single-valued vocabulary is counted and indexed on (the multi-valued ones are all songs').
SONG_VOCABS = ["song", "language", "isrc_country", "isrc_year"]
USER_VOCABS = ["user", "city", "gender", "registered_via"]
CONTEXT_VOCABS = ["source_system_tab", "source_screen_name", "source_type"]

# --- numeric features (float, standardized on the train part) ---
NUMERIC_COLUMNS = [SONG_LENGTH, AGE, MEMBERSHIP_DAYS, REGISTRATION_YEAR, SONG_COUNT, USER_COUNT, ARTIST_COUNT]
COUNT_COLUMNS = [SONG_COUNT, USER_COUNT, ARTIST_COUNT]
SONG_NUMERIC = [SONG_LENGTH, SONG_COUNT, ARTIST_COUNT]
USER_NUMERIC = [AGE, MEMBERSHIP_DAYS, REGISTRATION_YEAR, USER_COUNT]
