"""Synthetic Last.fm 1K: plays, user profiles and track tags in the real files' exact formats.

Files (names from :mod:`musicrec.schemas`):

* ``userid-timestamp-artid-artname-traid-traname.tsv``: no header, 6 tab-separated fields, users in ascending id
  order, each user's rows by timestamp DESCENDING, ``2009-05-04T23:08:57Z`` timestamps, lowercase UUID MBIDs (empty
  artist MBID on ~3% of rows, empty track MBID on ~11%, both chosen among less popular artists/tracks until their
  expected play share is reached; a track without an artist MBID never has a track MBID, as in the real file),
  names in many scripts (one has a ``"``), ~0.5% exact duplicate scrobbles.
* ``userid-profile.tsv``: header ``#id\\tgender\\tage\\tcountry\\tregistered``; gender m/f/empty, age mostly empty,
  registered like ``Aug 13, 2006`` or empty, distributions taken from the real file.
* ``track-tags.tsv``: header ``traid\\ttag\\tcount``: Last.fm ``track.getTopTags`` shape, up to 20 tags per track
  MBID with counts 100 -> 0 descending; ~15% of track MBIDs have no tags.

Size: ``scale`` is the fraction of the real row count (scale 1.0 = 19,098,853 rows, 992 users, ids up to
user_001000 with 8 missing). Users scale with ``sqrt(scale)`` (at least 30), so small files still have many rows per
user; the catalogue scales linearly (at least 3,000 tracks).

Planted structure (what a sequence model can learn and a popularity baseline cannot):

* 24 themes (genres) with Zipf-like weights; each user listens to a mixture of 1-4 themes.
* Each user has a rotation of favourites per theme: ``ROTATION`` tracks of the theme drawn by a flatter popularity
  (tastes differ), in a fixed order, like a personal playlist of loved tracks.
* Each theme's tracks lie on a ring made of album blocks (same artist). A session starts at a random favourite of
  its theme; then the next track is the next one on the ring with probability 0.40, a near neighbour (+-1..6) with
  0.15, the user's NEXT favourite in the rotation (after the last favourite played in this session) with 0.40, and
  a popular track of another theme with 0.05.
  So the next song depends on the last one (a first-order co-occurrence model catches the ring) AND on the session
  so far: which favourite comes next follows from the favourites played earlier in the session, several songs back,
  which only a model of the whole session (the Bi-GRU with attention) can use.
* Sessions: plays 2-6 minutes apart (the track's duration; 6% skips of 10-60 s), sessions at least 21 minutes
  apart, at user-specific preferred hours of the day; most users have hundreds of sessions, ~3% have 1-5.

Generation streams: one chunk of whole users (about ``CHUNK_ROWS`` rows) at a time, vectorized with numpy; the
catalogue (per-track strings) is the only thing held for the whole run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from musicrec.datagen import (
    FileReport,
    Progress,
    allocate,
    check_output_dir,
    check_scale,
    ensure_some,
    make_rng,
    timed_write,
    zipf_ranks,
)
from musicrec.schemas import LASTFM_PLAYS_FILE, LASTFM_PROFILE_FILE, LASTFM_TAGS_FILE

REAL_ROWS = 19_098_853
REAL_USERS = 992
REAL_MISSING_IDS = 8  # ids user_000001..user_001000 with 8 missing
REAL_TRACKS = 960_000  # distinct track MBIDs, about
DEFAULT_SCALE = 0.003  # 57,297 rows, 54 users
MIN_USERS = 30
MIN_TRACKS = 3_000
CHUNK_ROWS = 250_000  # users are grouped into chunks of about this many rows (a heavy user is a chunk alone)

FIRST_TS = int(np.datetime64("2005-02-14T00:00:00", "s").astype(np.int64))
END_TS = int(np.datetime64("2009-05-05T00:00:00", "s").astype(np.int64))  # exclusive; the real file ends 2009-05-04
DAY_S = 86_400

# Session and transition parameters (see the module docstring).
P_NEXT, P_NEAR, P_FAV = 0.40, 0.15, 0.40  # remaining 0.05: a popular track of another theme
ROTATION = 8  # favourites per user and theme slot
ROTATION_EXPONENT = 0.5  # favourites are drawn by a flatter popularity than plays: tastes differ between users
NEAR_MAX = 6
ZIPF_EXPONENT = 0.95
MAX_SESSION_LEN = 200
MIN_SESSION_GAP_S = 21 * 60
P_SKIP = 0.06
P_DUPLICATE = 0.005
P_LIGHT_USER = 0.03
ROWS_NO_ARTIST_MBID = 0.03  # expected share of rows without an artist MBID (these have no track MBID either)
ROWS_NO_TRACK_MBID = 0.11  # expected share of rows without a track MBID, in all
P_UNTAGGED = 0.15
MAX_TAGS = 20

# (theme, name script, tags in descending typical weight)
THEMES = [
    ("rock", "en", ["rock", "classic rock", "hard rock", "70s", "guitar", "british"]),
    ("indie", "en", ["indie", "indie rock", "alternative", "indie pop", "british", "post-punk"]),
    ("electronic", "de", ["electronic", "electronica", "house", "techno", "dance", "minimal"]),
    ("hip-hop", "en", ["hip-hop", "rap", "hip hop", "underground hip-hop", "east coast rap"]),
    ("metal", "fi", ["metal", "heavy metal", "death metal", "thrash metal", "metalcore"]),
    ("pop", "en", ["pop", "female vocalists", "dance", "00s", "catchy", "Pop"]),
    ("jazz", "en", ["jazz", "smooth jazz", "bebop", "instrumental", "saxophone"]),
    ("ambient", "is", ["ambient", "chillout", "downtempo", "lounge", "instrumental", "chill"]),
    ("punk", "en", ["punk", "punk rock", "hardcore", "pop punk", "emo"]),
    ("folk", "en", ["folk", "acoustic", "singer-songwriter", "indie folk", "mellow"]),
    ("classical", "de", ["classical", "piano", "instrumental", "baroque", "orchestral"]),
    ("soul", "en", ["soul", "rnb", "funk", "motown", "60s"]),
    ("reggae", "es", ["reggae", "ska", "dub", "roots reggae"]),
    ("80s", "en", ["80s", "new wave", "synthpop", "post-punk", "synth pop"]),
    ("j-pop", "ja", ["j-pop", "japanese", "j-rock", "anime", "Japanese"]),
    ("latin", "es", ["latin", "spanish", "salsa", "brazilian", "bossa nova"]),
    ("blues", "en", ["blues", "blues rock", "delta blues", "guitar"]),
    ("country", "en", ["country", "americana", "bluegrass", "alt-country"]),
    ("trip-hop", "en", ["trip-hop", "trip hop", "downtempo", "female vocalists", "electronic"]),
    ("post-rock", "is", ["post-rock", "instrumental", "experimental", "shoegaze", "ambient"]),
    ("idm", "de", ["idm", "electronic", "experimental", "glitch", "warp"]),
    ("russian", "ru", ["russian", "russian rock", "rock", "Russian"]),
    ("k-pop", "ko", ["k-pop", "korean", "pop", "kpop"]),
    ("soundtrack", "ja", ["soundtrack", "score", "instrumental", "epic", "anime"]),
]
GENERIC_TAGS = [
    ("seen live", 0.35), ("favorites", 0.3), ("love", 0.25), ("awesome", 0.25), ("beautiful", 0.2),
    ("male vocalists", 0.2), ("female vocalists", 0.15), ("00s", 0.2), ("90s", 0.15), ("mellow", 0.12),
    ("chill", 0.12), ("favourite songs", 0.1), ("british", 0.1), ("american", 0.1), ("german", 0.05),
    ("swedish", 0.05), ("cover", 0.05), ("live", 0.05), ("remix", 0.05), ("sad", 0.08), ("happy", 0.06),
    ("Awesome", 0.03), ("Favorite", 0.03), ("my favorites", 0.06), ("party", 0.05), ("sexy", 0.04),
]

# Word pools for names, per script ("en" plain English, others add non-ASCII names).
WORDS = {
    "en": (
        "Blue Night Summer Love Dream Fire Heart Light Shadow River Electric Golden Silent Broken Paper Glass Ocean "
        "Star Machine City Ghost Wild Velvet Neon Morning Rain Stone Echo Kingdom Satellite Orange Winter Secret Sugar "
        "Radio Mirror Crystal Honey Thunder Lonely Happy Strange Young Midnight Diamond Highway Garden Empire Wolves "
        "Sun Moon Black White Red Silver Sweet Cold Dark Bright Lost Little Big Last First Never Forever Tonight "
        "Yesterday Home Road Sky Window Door Fever Static Signal Circus Parade Riot Echoes Horizon Harbor Island"
    ).split(),
    "ja": "東京 夜 花 空 桜 月 恋 夢 雨 風 光 海 星 青い 季節 約束 未来 涙 さくら ひかり ソング ライト サマー メロディー ナイト 君 僕 ありがとう 世界 永遠".split(),
    "ko": "사랑 밤 하늘 별 꿈 너 우리 오늘 바람 눈물 기억 노래 시간 마음 처음 안녕 여름 겨울".split(),
    "ru": "Кино Звезда Ночь Город Весна Группа Крови Мечта Ветер Солнце Дорога Небо Любовь Река Зима Песня".split(),
    "es": "Corazón Canción Mañana Árbol Sueño Niña Más Café Pájaro Señor Amor Ação Coração Música Alegría Vida".split(),
    "de": "Straße Mädchen Früh Schön Über Kälte Größe Nächte Träume Müde Wärme Stück Glück Kraftwerk Fußgänger".split(),
    "fi": "Yö Tähti Sydän Myrsky Jää Kuolema Pimeä Lumi Metsä Tuli Sielu Öinen Ääni Kylmä Susi".split(),
    "is": "Hoppípolla Sæglópur Glósóli Ágætis Svefn Fjöll Ljós Vaka Heima Jökull Á Íslandi Hafið Dögun".split(),
}
FIRST_NAMES = {
    "en": "John Mary David Sarah Michael Emma James Lucy Robert Anna Tom Kate Chris Laura Peter Nina Paul Amy".split(),
    "ja": "坂本 矢野 細野 高橋 山下 中田 宇多田 椎名 浜崎 久石".split(),
    "ko": "김 이 박 최 정 강 조 윤".split(),
    "ru": "Виктор Борис Алла Земфира Юрий Илья Дмитрий Ольга".split(),
    "es": "José María Inés Joaquín Sebastián Lucía Andrés Martín".split(),
    "de": "Jürgen Björn Günter Jörg Sören Käthe Hans Anna".split(),
    "fi": "Mikko Jussi Päivi Tuomas Sämi Aki".split(),
    "is": "Jónsi Björk Sigurður Ólafur Ásgeir Þór".split(),
}
LAST_NAMES = {
    "en": "Smith Jones Brown Taylor Wilson Evans Walker Wright Hall Green Baker Hill Moore Young Clark Lewis".split(),
    "ja": "龍一 顕子 晴臣 幸宏 達郎 康隆 ヒカル 林檎 あゆみ 譲".split(),
    "ko": "민수 지은 서연 하늘 태양 유진 수지 준호".split(),
    "ru": "Цой Гребенщиков Пугачёва Шевчук Лагутенко Земфира".split(),
    "es": "García Núñez Peña Domínguez Gómez Rodríguez Muñoz Sánchez".split(),
    "de": "Müller Schäfer Groß Köhler Weiß Krüger Fröhlich Böhm".split(),
    "fi": "Mäkinen Virtanen Häkkinen Järvinen Nieminen".split(),
    "is": "Birgisson Guðmundsdóttir Ólafsson Arnalds Þórsson".split(),
}
TRACK_SUFFIXES = [" (Live)", " (Remix)", " (Radio Edit)", " (Acoustic)", " - Demo", " (Original Mix)", " Pt. 2"]

# userid-profile.tsv distributions, from the real file (992 users)
GENDERS, GENDER_P = ["m", "f", ""], [502, 382, 108]
AGE_P_EMPTY = 706 / 992
AGES = [3, 4, 7, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 38, 39, 40,
        42, 48, 49, 55, 75, 103]
AGE_COUNTS = [1, 1, 1, 1, 1, 4, 10, 18, 19, 36, 32, 20, 18, 14, 15, 12, 14, 14, 8, 5, 6, 6, 7, 5, 4, 4, 2, 1, 2, 1,
              1, 1, 1, 1]
COUNTRIES = [
    ("United States", 228), ("United Kingdom", 126), ("", 85), ("Poland", 50), ("Germany", 36), ("Norway", 35),
    ("Finland", 32), ("Canada", 32), ("Turkey", 28), ("Italy", 27), ("Sweden", 24), ("Netherlands", 23),
    ("Russian Federation", 22), ("Australia", 22), ("Brazil", 20), ("Spain", 17), ("France", 14), ("Mexico", 12),
    ("Belgium", 9), ("Argentina", 9), ("Romania", 8), ("Portugal", 8), ("Chile", 8), ("Croatia", 7),
    ("Bulgaria", 7), ("Venezuela", 6), ("New Zealand", 6), ("Switzerland", 5), ("Peru", 5), ("Japan", 5),
    ("Czech Republic", 5), ("Trinidad and Tobago", 4), ("Slovakia", 4), ("Serbia", 4), ("Lithuania", 4),
    ("Ireland", 4), ("Hungary", 4), ("Estonia", 4), ("Thailand", 3), ("Latvia", 3), ("Greece", 3), ("Colombia", 3),
    ("China", 3), ("Austria", 3), ("Slovenia", 2), ("Morocco", 2), ("Cote D'Ivoire", 1), ("Iceland", 1),
    ("Israel", 1), ("India", 1), ("Korea, Democratic People's Republic of", 1), ("Bosnia and Herzegovina", 1),
]
REGISTERED_YEARS = [2002, 2003, 2004, 2005, 2006, 2007, 2008, 2009]
REGISTERED_YEAR_COUNTS = [1, 13, 77, 302, 438, 147, 2, 4]
P_REGISTERED_EMPTY = 8 / 992
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


@dataclass(frozen=True)
class LastfmSizes:
    """How much to generate for a scale."""

    rows: int
    users: int
    id_space: int  # user ids run user_000001 .. user_{id_space}, with id_space - users ids missing
    tracks: int
    artists: int


def sizes_for_scale(scale: float) -> LastfmSizes:
    """Sizes for ``scale`` (fraction of the real row count): scale 1.0 gives 19,098,853 rows and 992 users."""
    users = max(MIN_USERS, round(REAL_USERS * math.sqrt(scale)))
    missing = max(1, round(users * REAL_MISSING_IDS / REAL_USERS))
    rows = max(round(REAL_ROWS * scale), 40 * users)
    tracks = max(MIN_TRACKS, round(REAL_TRACKS * scale))
    artists = max(400, round(tracks / 5.5))
    return LastfmSizes(rows=rows, users=users, id_space=users + missing, tracks=tracks, artists=artists)


# ---------------------------------------------------------------------------------------------------------------------
# Catalogue: themes, artists, albums, tracks
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class Catalog:
    """Tracks in ring order: the tracks of theme ``t`` are ``theme_start[t] .. theme_start[t] + theme_size[t] - 1``."""

    theme_weight: np.ndarray  # (T,) float, sums to 1
    theme_start: np.ndarray  # (T,) int64
    theme_size: np.ndarray  # (T,) int64
    track_theme: np.ndarray  # (N,) int64
    pop_order: np.ndarray  # (N,) int64: pop_order[theme_start[t] + r] = track of popularity rank r in theme t
    pop_rank: np.ndarray  # (N,) int64: popularity rank of a track inside its theme
    duration: np.ndarray  # (N,) int64 seconds
    track_mbid: list  # (N,) str, "" when missing
    tails: np.ndarray  # (N,) object: "Z\t<artid>\t<artname>\t<traid>\t<traname>\n"


def uuids(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` random version-4 UUIDs as lowercase 8-4-4-4-12 strings (MusicBrainz ids look like this)."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hex_digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    nibbles = np.stack([raw >> 4, raw & 0x0F], axis=2).reshape(n, 32)
    chars = np.full((n, 36), ord("-"), dtype=np.uint8)
    for dst, src in ((0, 0), (9, 8), (14, 12), (19, 16), (24, 20)):
        width = {0: 8, 20: 12}.get(src, 4)
        chars[:, dst : dst + width] = hex_digits[nibbles[:, src : src + width]]
    return chars.view("S36").ravel().astype("U36").tolist()


def artist_names(rng: np.random.Generator, scripts: list[str]) -> list[str]:
    """One artist name per entry of ``scripts`` (pattern and words drawn per artist)."""
    n = len(scripts)
    pattern = rng.integers(0, 6, size=n)
    a, b, c = (rng.random(n) for _ in range(3))
    names = []
    for i, script in enumerate(scripts):
        words, first, last = WORDS[script], FIRST_NAMES[script], LAST_NAMES[script]
        w1, w2 = words[int(a[i] * len(words))], words[int(b[i] * len(words))]
        f, l = first[int(a[i] * len(first))], last[int(c[i] * len(last))]
        p = pattern[i]
        if script in ("ja", "ko") and p < 3:
            names.append(f + l)
        elif p == 0:
            names.append(f"{f} {l}")
        elif p == 1:
            names.append(f"The {w1} {w2}s" if script == "en" else f"{w1} {w2}")
        elif p == 2:
            names.append(w1)
        elif p == 3:
            names.append(f"{w1} {w2}")
        elif p == 4:
            names.append(f"DJ {w1}" if c[i] < 0.5 else f"{f} & The {w1}s")
        else:
            names.append(f"{w1} {words[int(c[i] * len(words))]}")
    return names


def track_names(rng: np.random.Generator, scripts: list[str]) -> list[str]:
    """One track title per entry of ``scripts``, with the odd "(Live)"/"(Remix)" suffix."""
    n = len(scripts)
    a, b, c, d = (rng.random(n) for _ in range(4))
    suffix = rng.integers(0, len(TRACK_SUFFIXES), size=n)
    names = []
    for i, script in enumerate(scripts):
        words = WORDS[script]
        w1, w2, w3 = words[int(a[i] * len(words))], words[int(b[i] * len(words))], words[int(c[i] * len(words))]
        if d[i] < 0.35:
            title = f"{w1} {w2}"
        elif d[i] < 0.55:
            title = w1
        elif d[i] < 0.7:
            title = f"{w1} {w2} {w3}"
        elif d[i] < 0.8:
            title = f"{w1} of {w2}" if script == "en" else f"{w1}の{w2}" if script == "ja" else f"{w1} {w2}"
        else:
            title = f"{w1} {w2}{TRACK_SUFFIXES[suffix[i]]}"
        names.append(title)
    return names


def build_catalog(sizes: LastfmSizes, seed: int) -> Catalog:
    """Themes -> artists -> albums -> tracks, in ring order, with names, MBIDs, durations and popularity ranks."""
    rng = make_rng(seed, "lastfm/catalog")
    n_themes = len(THEMES)
    theme_weight = 1.0 / (rng.permutation(n_themes) + 1.0) ** 0.7
    theme_weight /= theme_weight.sum()
    artists_per_theme = allocate(sizes.artists, 0.5 * theme_weight + 0.5 / n_themes, minimum=3)
    artist_theme = np.repeat(np.arange(n_themes), artists_per_theme)
    artist_weight = rng.lognormal(0.0, 1.2, size=sizes.artists)
    tracks_per_artist = allocate(sizes.tracks, artist_weight**0.6, minimum=1)
    track_artist = np.repeat(np.arange(sizes.artists), tracks_per_artist)

    # albums: consecutive blocks of an artist's tracks; album blocks are shuffled inside their theme's ring
    first_of_artist = np.cumsum(tracks_per_artist) - tracks_per_artist
    within_artist = np.arange(sizes.tracks) - first_of_artist[track_artist]
    album_size = rng.integers(6, 15, size=sizes.artists)
    album_no = within_artist // album_size[track_artist]
    _, album_of_track = np.unique(track_artist * (sizes.tracks + 1) + album_no, return_inverse=True)
    album_key = rng.random(int(album_of_track.max()) + 1)[album_of_track]
    ring = np.lexsort((within_artist, album_key, artist_theme[track_artist]))
    track_artist, within_artist = track_artist[ring], within_artist[ring]
    track_theme = artist_theme[track_artist]
    theme_size = np.bincount(track_theme, minlength=n_themes).astype(np.int64)
    theme_start = np.cumsum(theme_size) - theme_size

    pop_key = np.log(artist_weight[track_artist]) + rng.gumbel(size=sizes.tracks) - 0.15 * np.log1p(within_artist)
    pop_order = np.lexsort((-pop_key, track_theme))
    pop_rank = np.empty(sizes.tracks, dtype=np.int64)
    pop_rank[pop_order] = np.arange(sizes.tracks) - theme_start[track_theme[pop_order]]
    duration = np.clip(rng.lognormal(np.log(235.0), 0.3, size=sizes.tracks), 60, 900).astype(np.int64)

    play_share = _expected_play_share(theme_weight[track_theme], pop_rank, theme_size[track_theme])
    artist_share = np.bincount(track_artist, weights=play_share, minlength=sizes.artists)
    no_artist_mbid = _pick_up_to_share(rng, artist_share, ROWS_NO_ARTIST_MBID)
    no_track_mbid = no_artist_mbid[track_artist]
    no_track_mbid |= _pick_up_to_share(rng, np.where(no_track_mbid, np.inf, play_share),
                                       ROWS_NO_TRACK_MBID - play_share[no_track_mbid].sum())
    artist_mbid = [("" if missing else uid) for uid, missing in zip(uuids(rng, sizes.artists), no_artist_mbid)]
    track_mbid = [("" if missing else uid) for uid, missing in zip(uuids(rng, sizes.tracks), no_track_mbid)]
    artist_name = artist_names(rng, _scripts(rng, artist_theme))
    artist_name[int(rng.integers(0, sizes.artists))] = 'Johnny "Hammond" Smith'  # a quote, as in the real file
    title = track_names(rng, _scripts(rng, track_theme))
    tails = np.array(
        [
            f"Z\t{artist_mbid[a]}\t{artist_name[a]}\t{track_mbid[t]}\t{title[t]}\n"
            for t, a in enumerate(track_artist.tolist())
        ],
        dtype=object,
    )
    return Catalog(theme_weight, theme_start, theme_size, track_theme, pop_order, pop_rank, duration, track_mbid, tails)


def _expected_play_share(theme_weight: np.ndarray, pop_rank: np.ndarray, theme_size: np.ndarray) -> np.ndarray:
    """About the share of all plays each track gets: its theme's weight times its Zipf probability in the theme."""
    norm = np.log(theme_size + 1.0) if abs(ZIPF_EXPONENT - 1.0) < 1e-9 else (
        ((theme_size + 1.0) ** (1.0 - ZIPF_EXPONENT) - 1.0) / (1.0 - ZIPF_EXPONENT))
    return theme_weight * (pop_rank + 1.0) ** -ZIPF_EXPONENT / norm


def _pick_up_to_share(rng: np.random.Generator, share: np.ndarray, target: float) -> np.ndarray:
    """Random items (never one holding over 1% of plays) whose shares add up to about ``target``; at least one."""
    order = rng.permutation(len(share))
    eligible = share[order] < 0.01
    running = np.cumsum(np.where(eligible, share[order], 0.0))
    chosen = np.zeros(len(share), dtype=bool)
    chosen[order[eligible & (running <= target)]] = True
    if not chosen.any():
        chosen[order[np.argmax(eligible)]] = True
    return chosen


def _scripts(rng: np.random.Generator, theme: np.ndarray) -> list[str]:
    """Name script per item: its theme's script 80% of the time, English otherwise."""
    theme_script = np.array([script for _, script, _ in THEMES], dtype=object)
    return np.where(rng.random(len(theme)) < 0.8, theme_script[theme], "en").tolist()


# ---------------------------------------------------------------------------------------------------------------------
# Users and profiles
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class Users:
    """Per-user parameters, indexed 0..U-1 in ascending id order."""

    number: np.ndarray  # (U,) int: 1 for user_000001
    quota: np.ndarray  # (U,) rows in the plays file, duplicates included
    duplicates: np.ndarray  # (U,) how many of those rows repeat the row before
    is_light: np.ndarray  # (U,) bool: 1-5 sessions
    mean_session: np.ndarray  # (U,) float
    themes: np.ndarray  # (U, 4) int theme ids
    theme_p: np.ndarray  # (U, 4) float, rows sum to 1 (0 for unused slots)
    rotation: np.ndarray  # (U, 4, ROTATION) int tracks: the user's favourites of each theme slot, in playing order
    peak_hour: np.ndarray  # (U, 2) float hours of day
    peak2_p: np.ndarray  # (U,) weight of the second peak
    hour_sd: np.ndarray  # (U,) hours
    first_day: np.ndarray  # (U,) int days since epoch
    last_day: np.ndarray  # (U,) int
    profile: list  # (U,) lines of userid-profile.tsv without the id


def build_users(sizes: LastfmSizes, catalog: Catalog, seed: int) -> Users:
    """Ids, row quotas, tastes, hours and activity spans of every user, and their profile lines."""
    rng = make_rng(seed, "lastfm/users")
    n = sizes.users
    missing = rng.choice(np.arange(2, sizes.id_space + 1), size=sizes.id_space - n, replace=False)
    number = np.setdiff1d(np.arange(1, sizes.id_space + 1), missing)
    is_light = ensure_some(rng.random(n) < P_LIGHT_USER, 1, rng)
    quota = np.zeros(n, dtype=np.int64)
    quota[is_light] = rng.integers(4, 40, size=int(is_light.sum()))
    heavy_weight = np.minimum(rng.lognormal(0.0, 1.1, size=int((~is_light).sum())), 9.0)
    quota[~is_light] = allocate(sizes.rows - int(quota.sum()), heavy_weight, minimum=20)
    duplicates = np.where(is_light, 0, rng.binomial(quota, P_DUPLICATE))

    n_themes = rng.choice([1, 2, 3, 4], size=n, p=[0.15, 0.35, 0.35, 0.15])
    key = np.log(catalog.theme_weight)[None, :] + rng.gumbel(size=(n, len(THEMES)))
    themes = np.argsort(-key, axis=1)[:, :4]
    theme_p = rng.dirichlet(np.full(4, 1.5), size=n) * (np.arange(4)[None, :] < n_themes[:, None])
    theme_p /= theme_p.sum(axis=1, keepdims=True)

    peak1 = rng.uniform(0, 24, size=n)
    peak_hour = np.stack([peak1, (peak1 + rng.uniform(6, 14, size=n)) % 24], axis=1)
    registered_day, profile = _profiles(rng, n)
    first_day = np.maximum(registered_day + rng.integers(0, 60, size=n), FIRST_TS // DAY_S)
    last_day = np.where(
        rng.random(n) < 0.65,
        END_TS // DAY_S - 1 - rng.integers(0, 5, size=n),
        rng.integers(np.minimum(first_day + 90, END_TS // DAY_S - 2), END_TS // DAY_S),
    )
    first_day = np.minimum(first_day, last_day - 30)
    busy = quota > 30 * (last_day - first_day + 1)  # over 30 plays a day on average: give the whole period
    first_day[busy] = FIRST_TS // DAY_S
    last_day[busy] = END_TS // DAY_S - 1
    return Users(
        number=number,
        quota=quota,
        duplicates=duplicates,
        is_light=is_light,
        mean_session=np.clip(rng.lognormal(np.log(11.0), 0.35, size=n), 4, 30),
        themes=themes,
        theme_p=theme_p,
        rotation=build_rotations(catalog, themes, make_rng(seed, "lastfm/rotation")),
        peak_hour=peak_hour,
        peak2_p=rng.uniform(0, 0.45, size=n),
        hour_sd=rng.uniform(1.2, 3.0, size=n),
        first_day=first_day,
        last_day=last_day,
        profile=profile,
    )


def build_rotations(catalog: Catalog, themes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(U, 4, ROTATION) favourites: distinct popularity-drawn tracks of each theme slot, in order of first draw
    (a theme with fewer tracks repeats some)."""
    users, slots = themes.shape
    draws = 6 * ROTATION
    ranks = zipf_ranks(rng.random((users, slots, draws)), catalog.theme_size[themes][..., None], ROTATION_EXPONENT)
    rotation = np.empty((users, slots, ROTATION), dtype=np.int64)
    for u in range(users):
        for k in range(slots):
            _, first = np.unique(ranks[u, k], return_index=True)
            distinct = ranks[u, k][np.sort(first)]
            rotation[u, k] = np.resize(distinct, ROTATION)  # np.resize repeats when there are fewer
    return catalog.pop_order[catalog.theme_start[themes][..., None] + rotation]


def _profiles(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[str]]:
    """Registration days and profile fields ``gender\\tage\\tcountry\\tregistered`` drawn like the real file."""
    gender = np.array(GENDERS)[rng.choice(3, size=n, p=np.array(GENDER_P) / sum(GENDER_P))]
    gender[ensure_some(gender == "", 1, rng)] = ""
    age_empty = ensure_some(rng.random(n) < AGE_P_EMPTY, 1, rng)
    age = np.array(AGES)[rng.choice(len(AGES), size=n, p=np.array(AGE_COUNTS) / sum(AGE_COUNTS))].astype(str)
    age[age_empty] = ""
    names, counts = zip(*COUNTRIES)
    country = np.array(names, dtype=object)[rng.choice(len(names), size=n, p=np.array(counts) / sum(counts))]
    country[ensure_some(country == "", 1, rng)] = ""
    year = np.array(REGISTERED_YEARS)[
        rng.choice(len(REGISTERED_YEARS), size=n, p=np.array(REGISTERED_YEAR_COUNTS) / sum(REGISTERED_YEAR_COUNTS))
    ]
    day = (np.array(year - 1970, dtype="datetime64[Y]").astype("datetime64[D]").astype(np.int64)
           + rng.integers(0, 365, size=n))
    no_date = ensure_some(rng.random(n) < P_REGISTERED_EMPTY, 1, rng)
    dates = day.astype("datetime64[D]").astype(object)
    registered = ["" if no_date[i] else f"{MONTHS[d.month - 1]} {d.day}, {d.year}" for i, d in enumerate(dates)]
    day = np.where(no_date, FIRST_TS // DAY_S - 200, day)
    lines = [f"{g}\t{a}\t{c}\t{r}" for g, a, c, r in zip(gender, age, country, registered)]
    return day, lines


def write_profiles(handle: TextIO, users: Users) -> int:
    """Write ``userid-profile.tsv`` (header line ``#id\\tgender\\tage\\tcountry\\tregistered``)."""
    handle.write("#id\tgender\tage\tcountry\tregistered\n")
    handle.write("".join(f"user_{num:06d}\t{line}\n" for num, line in zip(users.number.tolist(), users.profile)))
    return len(users.profile)


# ---------------------------------------------------------------------------------------------------------------------
# Plays
# ---------------------------------------------------------------------------------------------------------------------
def user_chunks(quota: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> list[tuple[int, int]]:
    """Consecutive user ranges ``[lo, hi)`` of about ``chunk_rows`` rows: fixed by the quotas, never by timing."""
    bounds, lo, rows = [], 0, 0
    for i, q in enumerate(quota.tolist()):
        rows += q
        if rows >= chunk_rows:
            bounds.append((lo, i + 1))
            lo, rows = i + 1, 0
    if lo < len(quota):
        bounds.append((lo, len(quota)))
    return bounds


def session_lengths(rng: np.random.Generator, rows: int, mean: float, is_light: bool) -> np.ndarray:
    """Lengths of one user's sessions, summing to ``rows``: 1-5 sessions for a light user, else lognormal lengths."""
    if is_light:
        n = int(rng.integers(1, min(5, rows) + 1))
        cuts = np.sort(rng.choice(np.arange(1, rows), size=n - 1, replace=False)) if n > 1 else np.array([], int)
        return np.diff(np.concatenate([[0], cuts, [rows]])).astype(np.int64)
    parts, total = [], 0
    while total < rows:
        draw = 1 + np.minimum(rng.lognormal(np.log(mean), 0.75, size=int(rows / mean * 1.3) + 8).astype(np.int64),
                              MAX_SESSION_LEN - 1)
        parts.append(draw)
        total += int(draw.sum())
    lengths = np.concatenate(parts)
    cum = np.cumsum(lengths)
    n = int(np.searchsorted(cum, rows)) + 1
    lengths = lengths[:n].copy()
    lengths[-1] -= int(cum[n - 1]) - rows
    return lengths


def draw_popular(catalog: Catalog, theme: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A Zipf-popular track of each given theme."""
    rank = zipf_ranks(rng.random(len(theme)), catalog.theme_size[theme], ZIPF_EXPONENT)
    return catalog.pop_order[catalog.theme_start[theme] + rank]


def walk_sessions(
    catalog: Catalog, sess_rotation: np.ndarray, sess_len: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Tracks of all sessions (flat, session after session), by the ring walk with favourites of the module docstring.

    Vectorized over sessions: step t updates every session longer than t (sessions sorted by length, so those are
    a prefix).
    """
    offsets = np.cumsum(sess_len) - sess_len
    order = np.argsort(-sess_len, kind="stable")
    neg_len = -sess_len[order]
    base, rotation = offsets[order], sess_rotation[order]  # (S,), (S, ROTATION)
    tracks = np.empty(int(sess_len.sum()), dtype=np.int64)

    # each session starts at a random favourite and goes through the rotation in order, one favourite per jump
    fav = rng.integers(0, ROTATION, size=len(order))  # (S,) position in the rotation
    cur = rotation[np.arange(len(order)), fav]
    tracks[base] = cur
    for t in range(1, int(sess_len.max(initial=0))):
        n = int(np.searchsorted(neg_len, -t, side="left"))  # sessions with length > t
        c = cur[:n]
        r = rng.random(n)
        ct = catalog.track_theme[c]
        step = np.where(r < P_NEXT, 1, rng.integers(1, NEAR_MAX + 1, size=n) * rng.choice([-1, 1], size=n))
        ring = catalog.theme_start[ct] + (c - catalog.theme_start[ct] + step) % catalog.theme_size[ct]
        elsewhere = rng.choice(len(THEMES), size=n, p=catalog.theme_weight)
        to_fav = (r >= P_NEXT + P_NEAR) & (r < P_NEXT + P_NEAR + P_FAV)
        fav[:n] = np.where(to_fav, (fav[:n] + 1) % ROTATION, fav[:n])
        jump = np.where(to_fav, rotation[np.arange(n), fav[:n]], draw_popular(catalog, elsewhere, rng))
        cur = np.where(r < P_NEXT + P_NEAR, ring, jump)
        tracks[base[:n] + t] = cur
    return tracks


def session_starts(rng: np.random.Generator, users: Users, u: int, busy_s: np.ndarray) -> np.ndarray:
    """Start times (epoch s) of user ``u``'s sessions, at preferred hours, each at least 21 min after the last play.

    ``busy_s[i]`` is how long session i occupies (its last play's start minus its first, plus the last track).
    Non-overlap is enforced with a running maximum: t_i = max(s_i, t_{i-1} + busy_{i-1} + gap_{i-1}).
    """
    n = len(busy_s)
    day = np.sort(rng.integers(users.first_day[u], users.last_day[u] + 1, size=n))
    peak = users.peak_hour[u, (rng.random(n) < users.peak2_p[u]).astype(int)]
    hour = (peak + rng.normal(0.0, users.hour_sd[u], size=n)) % 24.0
    wish = np.sort(day * DAY_S + (hour * 3600).astype(np.int64))
    need = busy_s + MIN_SESSION_GAP_S + rng.integers(0, 600, size=n)
    before = np.cumsum(need) - need
    start = np.maximum.accumulate(wish - before) + before
    overflow = int(start[-1] + busy_s[-1]) - (END_TS - 1)
    if overflow > 0:
        start -= overflow
    return start


def plays_chunk(catalog: Catalog, users: Users, lo: int, hi: int, seed: int, chunk_no: int):
    """Rows of users ``lo..hi-1`` in file order: (user index, epoch seconds, track), each user by time descending."""
    rng = make_rng(seed, "lastfm/plays", chunk_no)
    unique = users.quota[lo:hi] - users.duplicates[lo:hi]
    lengths = [
        session_lengths(rng, int(unique[i]), float(users.mean_session[u]), bool(users.is_light[u]))
        for i, u in enumerate(range(lo, hi))
    ]
    n_sess = np.array([len(x) for x in lengths])
    sess_len = np.concatenate(lengths)
    sess_user = np.repeat(np.arange(lo, hi), n_sess)
    slot = (rng.random(len(sess_len))[:, None] > np.cumsum(users.theme_p[sess_user], axis=1)).sum(axis=1)
    tracks = walk_sessions(catalog, users.rotation[sess_user, np.minimum(slot, 3)], sess_len, rng)

    gap = catalog.duration[tracks] + rng.integers(1, 25, size=len(tracks))
    skip = rng.random(len(tracks)) < P_SKIP
    gap[skip] = rng.integers(10, 60, size=int(skip.sum()))
    sess_of_row = np.repeat(np.arange(len(sess_len)), sess_len)
    first_row = np.cumsum(sess_len) - sess_len
    gap_before = np.cumsum(gap) - gap
    offset_in_sess = gap_before - gap_before[first_row][sess_of_row]
    last_row = first_row + sess_len - 1
    busy = offset_in_sess[last_row] + catalog.duration[tracks[last_row]]
    sess_first = np.cumsum(n_sess) - n_sess
    starts = np.concatenate(
        [
            session_starts(rng, users, u, busy[sess_first[i] : sess_first[i] + n_sess[i]])
            for i, u in enumerate(range(lo, hi))
        ]
    )
    ts = starts[sess_of_row] + offset_in_sess
    return _finish_rows(rng, users, lo, hi, unique, ts, tracks)


def _finish_rows(rng, users: Users, lo: int, hi: int, unique: np.ndarray, ts: np.ndarray, tracks: np.ndarray):
    """Add each user's duplicate scrobbles and reverse each user's rows to time-descending order."""
    counts = np.ones(len(ts), dtype=np.int64)
    first = np.cumsum(unique) - unique
    for i, u in enumerate(range(lo, hi)):
        d = int(users.duplicates[u])
        if d:
            counts[first[i] + rng.choice(int(unique[i]), size=d, replace=False)] = 2
    ts, tracks = np.repeat(ts, counts), np.repeat(tracks, counts)
    rows = users.quota[lo:hi]
    row_user = np.repeat(np.arange(lo, hi), rows)
    start = np.cumsum(rows) - rows
    local = row_user - lo
    flip = start[local] + (start[local] + rows[local] - 1) - np.arange(len(ts))
    return row_user, ts[flip], tracks[flip]


def format_plays(users: Users, catalog: Catalog, row_user: np.ndarray, ts: np.ndarray, tracks: np.ndarray) -> str:
    """Tab-separated lines for the plays file, built with C-level list operations (no per-row Python code)."""
    prefixes = np.array([f"user_{num:06d}\t" for num in users.number.tolist()], dtype=object)
    pieces: list = [None] * (3 * len(ts))
    pieces[0::3] = prefixes[row_user].tolist()
    pieces[1::3] = np.datetime_as_string(ts.astype("datetime64[s]"), unit="s").tolist()
    pieces[2::3] = catalog.tails[tracks].tolist()
    return "".join(pieces)


def write_plays(handle: TextIO, catalog: Catalog, users: Users, seed: int, progress: bool) -> int:
    """Write the plays file chunk by chunk; returns the row count."""
    bar = Progress(LASTFM_PLAYS_FILE, int(users.quota.sum()), enabled=progress)
    for chunk_no, (lo, hi) in enumerate(user_chunks(users.quota)):
        row_user, ts, tracks = plays_chunk(catalog, users, lo, hi, seed, chunk_no)
        handle.write(format_plays(users, catalog, row_user, ts, tracks))
        bar.add(len(ts))
    return bar.done


# ---------------------------------------------------------------------------------------------------------------------
# Track tags
# ---------------------------------------------------------------------------------------------------------------------
def tag_vocabulary() -> tuple[list[str], np.ndarray]:
    """All tag names and the (themes, tags) affinity matrix used to draw each track's tags."""
    vocab: list[str] = []
    for _, _, tags in THEMES:
        vocab += [t for t in tags if t not in vocab]
    vocab += [t for t, _ in GENERIC_TAGS if t not in vocab]
    index = {t: i for i, t in enumerate(vocab)}
    affinity = np.full((len(THEMES), len(vocab)), 0.002)
    for tag, weight in GENERIC_TAGS:
        affinity[:, index[tag]] = weight
    for k, (_, _, tags) in enumerate(THEMES):
        for rank, tag in enumerate(tags):
            affinity[k, index[tag]] = 1.0 / (1.0 + 0.6 * rank)
    return vocab, affinity


def write_tags(handle: TextIO, catalog: Catalog, seed: int, progress: bool, chunk: int = 100_000) -> int:
    """Write ``track-tags.tsv``: per tagged track MBID (random order), its top tags with counts 100 -> 0."""
    rng = make_rng(seed, "lastfm/tags")
    vocab, affinity = tag_vocabulary()
    vocab_arr = np.array(vocab, dtype=object)
    count_text = np.array([f"\t{c}\n" for c in range(101)], dtype=object)
    mbid = np.array(catalog.track_mbid, dtype=object)
    tagged = np.flatnonzero(mbid != "")
    tagged = rng.permutation(tagged[ensure_some(rng.random(len(tagged)) >= P_UNTAGGED, 1, rng)])
    handle.write("traid\ttag\tcount\n")
    bar = Progress(LASTFM_TAGS_FILE + " (tracks)", len(tagged), every=200_000, enabled=progress)
    rows = 0
    for lo in range(0, len(tagged), chunk):
        t = tagged[lo : lo + chunk]
        n = len(t)
        score = affinity[catalog.track_theme[t]] * rng.lognormal(0.0, 0.6, size=(n, len(vocab)))
        top = np.argsort(-score, axis=1, kind="stable")[:, :MAX_TAGS]
        popular = 1.0 - catalog.pop_rank[t] / catalog.theme_size[catalog.track_theme[t]]
        n_tags = 1 + rng.binomial(MAX_TAGS - 1, 0.1 + 0.6 * popular**2)
        ratios = np.concatenate([np.ones((n, 1)), rng.uniform(0.45, 0.97, (n, MAX_TAGS - 1))], axis=1)
        decay = np.cumprod(ratios, axis=1)  # (n, MAX_TAGS), 1.0 then descending
        counts = np.floor(100 * decay).astype(np.int64)
        keep = np.arange(MAX_TAGS)[None, :] < n_tags[:, None]
        pieces: list = [None] * (3 * int(keep.sum()))
        pieces[0::3] = np.repeat(mbid[t], n_tags).tolist()
        pieces[1::3] = ["\t" + s for s in vocab_arr[top[keep]].tolist()]
        pieces[2::3] = count_text[counts[keep]].tolist()
        handle.write("".join(pieces))
        rows += int(keep.sum())
        bar.add(n)
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------------------
def generate(
    out_dir: str | Path, scale: float = DEFAULT_SCALE, seed: int = 0, progress: bool = True
) -> list[FileReport]:
    """Write the three Last.fm 1K files into ``out_dir`` (atomically, each via ``<name>.tmp``)."""
    out = check_output_dir(out_dir)
    sizes = sizes_for_scale(check_scale(scale))
    catalog = build_catalog(sizes, seed)
    users = build_users(sizes, catalog, seed)
    return [
        timed_write(out / LASTFM_PLAYS_FILE, write_plays, catalog, users, seed, progress),
        timed_write(out / LASTFM_PROFILE_FILE, write_profiles, users),
        timed_write(out / LASTFM_TAGS_FILE, write_tags, catalog, seed, progress),
    ]
