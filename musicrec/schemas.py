"""Declared schemas and file names of the raw inputs, in their real formats.

Every reader in the project (Spark jobs, tests, the generator's self-check) uses these; nothing infers a schema.
Timestamps and dates are declared as strings here because the jobs parse them explicitly, so that an
unparseable value is caught, counted and written to ``rejected/`` instead of silently becoming null.
"""

from pyspark.sql import types as T

# ----------------------------------------------------------------------------------------------------------------
# Last.fm 1K (http://ocelma.net/MusicRecommendationDataset/lastfm-1K.html)
# ----------------------------------------------------------------------------------------------------------------
LASTFM_PLAYS_FILE = "userid-timestamp-artid-artname-traid-traname.tsv"  # tab separated, no header, 6 fields
LASTFM_PROFILE_FILE = "userid-profile.tsv"  # tab separated, header "#id\tgender\tage\tcountry\tregistered"
LASTFM_TAGS_FILE = "track-tags.tsv"  # tab separated, header "traid\ttag\tcount" (Last.fm track.getTopTags)

LASTFM_PLAYS_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType()),  # user_000001
        T.StructField("timestamp", T.StringType()),  # ISO-8601 UTC, 2009-05-04T23:08:57Z
        T.StructField("artist_id", T.StringType()),  # MusicBrainz artist id (UUID), may be empty
        T.StructField("artist_name", T.StringType()),
        T.StructField("track_id", T.StringType()),  # MusicBrainz recording id (UUID), may be empty
        T.StructField("track_name", T.StringType()),
    ]
)
LASTFM_PLAYS_COLUMNS = [f.name for f in LASTFM_PLAYS_SCHEMA.fields]

LASTFM_PROFILE_SCHEMA = T.StructType(
    [
        T.StructField("#id", T.StringType()),
        T.StructField("gender", T.StringType()),  # m / f / empty
        T.StructField("age", T.IntegerType()),  # may be empty
        T.StructField("country", T.StringType()),
        T.StructField("registered", T.StringType()),  # "Aug 13, 2006", may be empty
    ]
)

LASTFM_TAGS_SCHEMA = T.StructType(
    [
        T.StructField("traid", T.StringType()),  # track MBID, joins plays.track_id
        T.StructField("tag", T.StringType()),  # tag name as Last.fm returns it
        T.StructField("count", T.IntegerType()),  # Last.fm's relative weight, 0..100
    ]
)

# ----------------------------------------------------------------------------------------------------------------
# KKBOX WSDM 2018 (https://www.kaggle.com/c/kkbox-music-recommendation-challenge/data); CSV with a header
# ----------------------------------------------------------------------------------------------------------------
KKBOX_TRAIN_FILE = "train.csv"
KKBOX_TEST_FILE = "test.csv"
KKBOX_SONGS_FILE = "songs.csv"
KKBOX_MEMBERS_FILE = "members.csv"
KKBOX_EXTRA_FILE = "song_extra_info.csv"
KKBOX_FILES = [KKBOX_TRAIN_FILE, KKBOX_TEST_FILE, KKBOX_SONGS_FILE, KKBOX_MEMBERS_FILE, KKBOX_EXTRA_FILE]

_EVENT_FIELDS = [
    T.StructField("msno", T.StringType()),  # user id, base64 of a hash
    T.StructField("song_id", T.StringType()),  # base64 of a hash
    T.StructField("source_system_tab", T.StringType()),
    T.StructField("source_screen_name", T.StringType()),
    T.StructField("source_type", T.StringType()),
]
KKBOX_TRAIN_SCHEMA = T.StructType(_EVENT_FIELDS + [T.StructField("target", T.IntegerType())])  # 1 = re-listened
KKBOX_TEST_SCHEMA = T.StructType([T.StructField("id", T.IntegerType())] + _EVENT_FIELDS)

KKBOX_SONGS_SCHEMA = T.StructType(
    [
        T.StructField("song_id", T.StringType()),
        T.StructField("song_length", T.LongType()),  # milliseconds
        T.StructField("genre_ids", T.StringType()),  # "465" or "864|857|850"
        T.StructField("artist_name", T.StringType()),  # "A | B", "A & B", "A feat. B", ...
        T.StructField("composer", T.StringType()),
        T.StructField("lyricist", T.StringType()),
        T.StructField("language", T.IntegerType()),  # 3, 31, 52, -1, ...
    ]
)
KKBOX_MEMBERS_SCHEMA = T.StructType(
    [
        T.StructField("msno", T.StringType()),
        T.StructField("city", T.IntegerType()),
        T.StructField("bd", T.IntegerType()),  # age; 0 and outliers (negative, > 100) are common
        T.StructField("gender", T.StringType()),  # male / female / empty
        T.StructField("registered_via", T.IntegerType()),
        T.StructField("registration_init_time", T.StringType()),  # yyyymmdd
        T.StructField("expiration_date", T.StringType()),  # yyyymmdd
    ]
)
KKBOX_EXTRA_SCHEMA = T.StructType(
    [
        T.StructField("song_id", T.StringType()),
        T.StructField("name", T.StringType()),  # may contain quoted newlines
        T.StructField("isrc", T.StringType()),  # CC-XXX-YY-NNNNN without dashes, e.g. TWUM71200043
    ]
)

KKBOX_SCHEMAS = {
    KKBOX_TRAIN_FILE: KKBOX_TRAIN_SCHEMA,
    KKBOX_TEST_FILE: KKBOX_TEST_SCHEMA,
    KKBOX_SONGS_FILE: KKBOX_SONGS_SCHEMA,
    KKBOX_MEMBERS_FILE: KKBOX_MEMBERS_SCHEMA,
    KKBOX_EXTRA_FILE: KKBOX_EXTRA_SCHEMA,
}
