"""Column names shared by the feature jobs, the loaders and the models (one place, used as keyword defaults)."""

# --- Last.fm 1K raw columns (userid-timestamp-artid-artname-traid-traname.tsv) ---
USER = "user_id"
TS = "timestamp"
ARTIST_ID = "artist_id"
ARTIST_NAME = "artist_name"
TRACK_ID = "track_id"
TRACK_NAME = "track_name"

# --- Last.fm derived columns ---
SESSION_ID = "session_id"  # long, unique over the whole dataset
POSITION = "position"  # 0-based position of a play inside its session
TAG = "tag"
TAG_COUNT = "tag_count"

# --- Indexed columns written for training (int, 0 = padding, 1 = out-of-vocabulary / missing) ---
USER_IDX = "user_idx"
SONG_IDX = "song_idx"
ARTIST_IDX = "artist_idx"
SONGS = "songs"  # array<int>: song indices of one session, in play order
SONG_TAGS = "song_tags"  # array<int>: len(songs) * top_k tag indices, row-major, 0-padded
START_TS = "start_ts"  # session start, timestamp

# --- KKBOX raw columns ---
MSNO = "msno"
SONG_ID = "song_id"
TARGET = "target"
ID = "id"

PAD_INDEX = 0
OOV_INDEX = 1
FIRST_TOKEN_INDEX = 2
