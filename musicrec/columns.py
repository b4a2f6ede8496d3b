"""Every column, split, folder and file name the stages share, and the reserved vocabulary indices: defined once.

Raw input file names and their declared schemas are in ``musicrec.schemas``; everything a stage writes or a later
stage reads is named here (docs/DATA_CONTRACT.md describes the layout). Temporary columns start with ``_`` and
stay inside the function that makes them.
"""

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
TAGS = "tags"  # array<string> of a song's top-K tag names; array<int> of their indices in OUT/song_tags/
LENGTH = "length"  # int: number of songs of a session row (len(songs))

# --- Indexed columns written for training (int, 0 = padding, 1 = out-of-vocabulary / missing) ---
USER_IDX = "user_idx"
SONG_IDX = "song_idx"
SONGS = "songs"  # array<int>: song indices of one session, in play order
SONG_TAGS = "song_tags"  # array<int>: len(songs) * top_k tag indices, row-major, 0-padded
START_TS = "start_ts"  # session start, timestamp

# --- KKBOX raw and output columns ---
MSNO = "msno"
SONG_ID = "song_id"
TARGET = "target"
ID = "id"
ROW_ID = "row_id"  # long: 0-based row number in the source file (train.csv or test.csv), file order

# --- splits ---
SPLIT = "split"  # "train" | "valid" | "test"
TRAIN, VALID, TEST = "train", "valid", "test"
SPLITS = (TRAIN, VALID, TEST)

# --- folders and files of a feature-job output (docs/DATA_CONTRACT.md) ---
MANIFEST_NAME = "_MANIFEST.json"  # written last: its presence means the output is complete
VOCAB_DIR = "vocab"  # OUT/vocab/<name>/: token, index, count
REJECTED_DIR = "rejected"  # OUT/rejected/<file>/: file, line, reason, raw
STATS_JSON, STATS_MD = "stats.json", "stats.md"
PLAYS_DIR = "plays"  # Last.fm OUT/plays/: the sessionized plays
SESSIONS_DIR = "sessions"  # Last.fm OUT/sessions/<split>/: one row per session
SONG_TAGS_DIR = "song_tags"  # Last.fm OUT/song_tags/: song_idx, tags (K tag indices)

# --- vocabulary tables ---
TOKEN, INDEX, COUNT = "token", "index", "count"
VOCAB = "vocab"  # the vocabulary name column of a multi-vocabulary table (musicrec.features.vocab)

# --- rejected rows ---
REASON = "reason"  # why a row was rejected (null = a good row)
RAW = "raw"  # the rejected line or record as read

# --- batch keys the loaders add (musicrec.data) ---
LENGTHS = "lengths"  # (B,) valid steps of each session prefix
NEXT_SONG = "next_song"  # (B,) the song that follows a prefix
CANDIDATES = "candidates"  # (B, 1 + N) the held-out song and N sampled negatives (leave-one-out)
NUMERIC = "numeric"  # (B, F) the numeric features of a KKBOX row

# --- reserved vocabulary indices ---
PAD_INDEX = 0
OOV_INDEX = 1
FIRST_TOKEN_INDEX = 2
