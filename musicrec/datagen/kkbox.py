"""Synthetic KKBOX WSDM 2018: train, test, songs, members and song_extra_info in the real CSV formats.

Formats (headers exactly as the real files, written with the ``csv`` module, LF line endings, minimal quoting):

* ``msno``/``song_id``: 44-character standard base64 (with ``+`` and ``/``) of 32 pseudo-random bytes, ending in ``=``.
* ``source_*``: the real vocabularies and their combinations, including empty fields and the literal ``null`` tab.
* ``songs.csv``: ``genre_ids`` like ``465`` or ``864|857|850`` (some empty); artists joined by ``|``, ``/``, ``\\``,
  ``;``, `` & ``, `` feat. ``; composer/lyricist lists like ``TEDDY|  FUTURE BOUNCE|  Bekuh BOOM``; names with
  ``"`` that need quoting; languages -1, 3, 10, 17, 24, 31, 38, 45, 52, 59.
* ``members.csv``: ``bd`` mostly 0 with negative and > 100 outliers, gender male/female/empty, ``yyyymmdd`` dates
  (one ``19700101`` expiration, as in the real file).
* ``song_extra_info.csv``: names with commas, quotes, U+00A0 and a few quoted newlines; ISRC like ``TWUM71200043``
  or empty. Covers ~98.5% of songs.csv, in another order.

Size: ``scale`` is the fraction of the real sizes (1.0 = 7,377,418 train rows, 2,556,790 test rows, 2,296,320
songs, 34,403 members). About 3% of played songs are absent from songs.csv.

Planted structure: ``train.csv`` then ``test.csv`` are one time-ordered stream of listening bursts (a member plays a
few songs from one source). ``target`` = sigmoid of: member re-listen propensity + song quality + member x genre
affinity + source context (my library / local-library far above radio and discover) + noise; overall ~0.5.
Members mix their own "library" (a stable per-member song set, played from local sources) with favourite-genre and
popular songs; 12% of members are new in the test period.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from musicrec.datagen import (
    FileReport,
    Progress,
    base64_ids,
    check_output_dir,
    check_scale,
    ensure_some,
    hash_uniform,
    make_rng,
    stream_key,
    timed_write,
    zipf_ranks,
)
from musicrec.schemas import (
    KKBOX_EXTRA_FILE,
    KKBOX_EXTRA_SCHEMA,
    KKBOX_MEMBERS_FILE,
    KKBOX_MEMBERS_SCHEMA,
    KKBOX_SONGS_FILE,
    KKBOX_SONGS_SCHEMA,
    KKBOX_TEST_FILE,
    KKBOX_TEST_SCHEMA,
    KKBOX_TRAIN_FILE,
    KKBOX_TRAIN_SCHEMA,
)

REAL_TRAIN, REAL_TEST, REAL_SONGS, REAL_MEMBERS = 7_377_418, 2_556_790, 2_296_320, 34_403
DEFAULT_SCALE = 0.007  # 51,642 train rows, 17,898 test rows, 16,074 songs, 241 members
EVENT_CHUNK = 200_000
SONG_CHUNK = 100_000

P_UNLISTED_SONG = 0.03  # of events: a song missing from songs.csv
P_EXTRA_INFO = 0.985
P_NEW_MEMBER = 0.12
LIBRARY_SIZE = 80
TARGET_BIAS = -1.0  # calibrated so that the overall target rate is about 0.5

# (source_system_tab, source_screen_name, source_type, weight, effect on the re-listen logit)
LOCAL_CONTEXTS = [
    ("my library", "Local playlist more", "local-library", 0.42, 1.0),
    ("my library", "Local playlist more", "local-playlist", 0.22, 0.9),
    ("my library", "My library", "local-library", 0.06, 1.3),
    ("my library", "My library", "local-playlist", 0.03, 1.1),
    ("my library", "", "local-library", 0.05, 0.8),
    ("my library", "", "local-playlist", 0.03, 0.8),
    ("my library", "Album more", "album", 0.03, 0.3),
    ("my library", "Search", "online-playlist", 0.02, 0.0),
    ("my library", "Search", "top-hits-for-artist", 0.01, 0.0),
    ("my library", "Online playlist more", "online-playlist", 0.02, 0.2),
    ("my library", "Artist more", "top-hits-for-artist", 0.01, 0.0),
    ("my library", "Local playlist more", "album", 0.006, 0.4),
    ("my library", "", "song", 0.006, 0.2),
    ("my library", "My library_Search", "local-library", 0.003, 0.8),
    ("search", "Local playlist more", "local-library", 0.004, 0.6),
    ("notification", "Local playlist more", "local-library", 0.001, 0.5),
    ("null", "Local playlist more", "local-library", 0.001, 0.5),
    ("null", "Discover Feature", "local-playlist", 0.001, 0.3),
    ("", "", "", 0.004, 0.6),
]
OTHER_CONTEXTS = [
    ("discover", "Online playlist more", "online-playlist", 0.25, -0.1),
    ("discover", "Discover Chart", "online-playlist", 0.05, 0.3),
    ("discover", "Discover Feature", "song-based-playlist", 0.05, -0.3),
    ("discover", "Discover Feature", "online-playlist", 0.04, -0.2),
    ("discover", "Online playlist more", "song-based-playlist", 0.03, -0.2),
    ("discover", "Album more", "album", 0.03, -0.1),
    ("discover", "Album more", "online-playlist", 0.02, -0.1),
    ("discover", "Album more", "top-hits-for-artist", 0.02, -0.2),
    ("discover", "Discover Genre", "online-playlist", 0.02, 0.0),
    ("discover", "Discover Genre", "song-based-playlist", 0.015, -0.1),
    ("discover", "Unknown", "online-playlist", 0.015, -0.4),
    ("discover", "Artist more", "top-hits-for-artist", 0.01, -0.2),
    ("discover", "Discover New", "online-playlist", 0.005, 0.0),
    ("discover", "", "song-based-playlist", 0.01, -0.2),
    ("radio", "Radio", "radio", 0.13, -1.3),
    ("search", "Artist more", "top-hits-for-artist", 0.05, -0.2),
    ("search", "Search", "song", 0.04, -0.1),
    ("search", "Album more", "album", 0.03, -0.1),
    ("search", "Online playlist more", "online-playlist", 0.02, -0.1),
    ("search", "Search Trends", "song", 0.004, -0.6),
    ("search", "Search Home", "song", 0.003, -0.5),
    ("listen with", "Others profile more", "listen-with", 0.05, -0.8),
    ("listen with", "Online playlist more", "online-playlist", 0.004, -0.3),
    ("listen with", "", "listen-with", 0.005, -0.8),
    ("explore", "Explore", "online-playlist", 0.03, -0.1),
    ("explore", "Online playlist more", "online-playlist", 0.015, -0.1),
    ("explore", "Explore", "topic-article-playlist", 0.002, -0.6),
    ("discover", "Others profile more", "artist", 0.002, -0.4),
    ("null", "", "online-playlist", 0.001, -0.2),
    ("notification", "Album more", "album", 0.001, 0.0),
    ("settings", "", "", 0.0005, 0.0),
    ("", "", "", 0.004, 0.0),
]

# genre id -> weight (465 dominates, as in the real songs.csv)
GENRES = [
    (465, 40.0), (1609, 6.0), (2022, 5.5), (958, 4.2), (921, 4.0), (2122, 3.6), (1259, 3.5), (458, 2.9),
    (786, 2.7), (359, 2.4), (444, 2.2), (437, 1.7), (726, 1.6), (139, 1.4), (1152, 1.1), (947, 1.1), (451, 1.1),
    (873, 0.8), (1011, 0.7), (940, 0.7), (1955, 0.4), (125, 0.4), (109, 0.4), (864, 0.3), (857, 0.3), (850, 0.3),
    (1572, 0.4), (275, 0.4), (829, 0.2), (1616, 0.2), (242, 0.2), (388, 0.2), (691, 0.2), (1180, 0.15),
    (2058, 0.15), (1138, 0.1), (1068, 0.1), (2072, 0.1),
]
P_GENRE_EMPTY, P_GENRE_MULTI = 0.018, 0.065
LANGUAGES = [(52, 0.42), (-1, 0.19), (3, 0.19), (17, 0.08), (31, 0.05), (24, 0.03), (10, 0.03), (59, 0.004),
             (45, 0.003), (38, 0.0005)]
SCRIPT_OF_LANGUAGE = {52: "en", -1: "en", 3: "zh", 10: "zh", 24: "zh", 17: "ja", 31: "ko", 59: "en", 45: "en", 38: "en"}
ARTIST_SEPARATORS = ["| ", "|", " | ", "/", "\\", ";", " & ", " feat. ", " and "]
P_MULTI_ARTIST = 0.06
P_COMPOSER_EMPTY, P_LYRICIST_EMPTY = 0.42, 0.73

CITIES = [(1, 19445), (13, 3395), (5, 2634), (4, 1732), (15, 1525), (22, 1467), (6, 913), (14, 708), (12, 491),
          (9, 309), (8, 289), (11, 285), (18, 259), (10, 216), (21, 213), (3, 204), (17, 152), (7, 93), (16, 35),
          (20, 27), (19, 11)]
REGISTERED_VIA = [(4, 11392), (7, 9433), (9, 8628), (3, 4879), (13, 70), (16, 1)]
REGISTRATION_YEARS = [(2004, 2), (2005, 3), (2006, 4), (2007, 4), (2008, 5), (2009, 6), (2010, 8), (2011, 11),
                      (2012, 12), (2013, 13), (2014, 15), (2015, 18), (2016, 22), (2017, 4)]
ISRC_COUNTRIES = [("US", 9922), ("TW", 5030), ("GB", 4412), ("JP", 3243), ("HK", 1867), ("DE", 1355), ("FR", 1271),
                  ("KR", 1251), ("TC", 1212), ("QM", 777), ("NL", 619), ("IT", 618), ("SE", 400), ("CN", 300)]

WORDS = {
    "en": ("Love Night Summer Heart Dream Forever Baby Girl Fire Rain Home Light Stay Tonight Without You Me Alone "
           "Shape Closer Faded Happy Sorry Secret Lonely Sugar Perfect Wild Young Stars Wonderful Dance Crazy Hello "
           "Goodbye Remember Ocean Blue Better Tomorrow Let Go Free Moment Story Sky").split(),
    "zh": "我們 原諒我 愛 你 的 心 夢 雨 天空 永遠 時間 回憶 幸福 寂寞 眼淚 朋友 告白 世界 青春 花 月亮 一個人 等待 溫柔 再見".split(),
    "ja": "恋 夢 桜 空 君 未来 約束 涙 さくら ひかり 世界 ありがとう 夜空 季節 メロディー".split(),
    "ko": "사랑 너 우리 오늘 밤 별 꿈 기억 눈물 하늘 처음 안녕 노래 마음".split(),
}
SURNAMES = {
    "en": "Smith Johnson Brown Lee Martin Garcia Wilson Clark Lewis Walker Young King Wright Lopez Hill Green".split(),
    "zh": "陳 林 黃 張 李 王 吳 劉 蔡 楊 許 鄭 謝 郭 洪 曾 周 董 何 方".split(),
    "ja": "佐藤 鈴木 高橋 田中 渡辺 伊藤 山本 中村 小林 加藤".split(),
    "ko": "김 이 박 최 정 강 조 윤 장 임".split(),
}
GIVEN = {
    "en": "Max Taylor Chris Jordan Alex Sam Jamie Katy Ed Justin Bruno Ariana Shawn Charlie Sia Adam Ryan Dua".split(),
    "zh": "啟弘 貞 信哲 志明 偉 華 美玲 怡君 宏 文傑 子 雨 安 心怡 家豪 俊傑 淑芬 雅婷".split(),
    "ja": "健太 翔 結衣 陽菜 蓮 美咲 大輝 さくら 拓海 葵".split(),
    "ko": "민수 지은 서연 태양 유진 수지 준호 하늘 지민 윤아".split(),
}
INSTRUMENTAL_ARTISTS = ["Various Artists", "Piano Cafe", "Relaxing Music", "Bach Collegium Japan"]
STAGE_NAMES = "TEDDY FUTURE BOUNCE Bekuh BOOM G-DRAGON TAEYANG ZICO YG Max Martin Shellback Ilya".split()
ROMANIZED = "Jeff Chang Jay Chou Eason Chan Jolin Tsai A-Mei JJ Lin Mayday Hebe Tien G.E.M.".split()


@dataclass(frozen=True)
class KkboxSizes:
    """How much to generate for a scale."""

    train: int
    test: int
    songs: int  # rows of songs.csv
    unlisted: int  # songs that appear in train/test but not in songs.csv
    members: int
    artists: int


def sizes_for_scale(scale: float) -> KkboxSizes:
    """Sizes for ``scale`` (fraction of the real sizes; 1.0 gives the real row counts)."""
    songs = max(2_000, round(REAL_SONGS * scale))
    return KkboxSizes(
        train=max(1_000, round(REAL_TRAIN * scale)),
        test=max(300, round(REAL_TEST * scale)),
        songs=songs,
        unlisted=max(20, round(songs * P_UNLISTED_SONG)),
        members=max(50, round(REAL_MEMBERS * scale)),
        artists=max(200, songs // 10),
    )


def _weights(table) -> tuple[np.ndarray, np.ndarray]:
    """Values and probabilities of a ``[(value, weight), ...]`` table."""
    values, weights = zip(*table)
    w = np.asarray(weights, dtype=np.float64)
    return np.asarray(values), w / w.sum()


# ---------------------------------------------------------------------------------------------------------------------
# Catalogue and members (numbers only; strings are made per chunk while writing)
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class Catalog:
    """Songs 0..songs-1 are in songs.csv, songs..songs+unlisted-1 are not. Genres are indices into ``GENRES``."""

    song_key: int  # hash key of song ids
    artist: np.ndarray  # (S,) artist index
    genre: np.ndarray  # (S,) primary genre index
    genre_extra: np.ndarray  # (S, 2) extra genre indices, -1 for none
    genre_empty: np.ndarray  # (S,) bool: genre_ids field left empty
    quality: np.ndarray  # (S,) float
    artist_language: np.ndarray  # (A,) language code
    artist_name: list  # (A,) str
    genre_start: np.ndarray  # (G,) listed songs of genre g by popularity: pop_order[genre_start[g]:+genre_size[g]]
    genre_size: np.ndarray
    pop_order: np.ndarray


def build_catalog(sizes: KkboxSizes, seed: int) -> Catalog:
    """Artists (language, genre, name) and songs (artist, genres, quality, popularity order)."""
    rng = make_rng(seed, "kkbox/catalog")
    genre_ids, genre_p = _weights(GENRES)
    lang_codes, lang_p = _weights(LANGUAGES)
    n_genres, n_songs = len(GENRES), sizes.songs + sizes.unlisted
    artist_language = lang_codes[rng.choice(len(lang_codes), size=sizes.artists, p=lang_p)]
    home_genres = rng.choice(n_genres, size=(len(lang_codes), 4), p=genre_p)
    lang_index = np.searchsorted(np.sort(lang_codes), artist_language)
    artist_genre = np.where(
        rng.random(sizes.artists) < 0.3,
        home_genres[lang_index, rng.integers(0, 4, size=sizes.artists)],
        rng.choice(n_genres, size=sizes.artists, p=genre_p),
    )
    artist_weight = rng.lognormal(0.0, 1.3, size=sizes.artists)
    artist = rng.choice(sizes.artists, size=n_songs, p=artist_weight / artist_weight.sum())
    genre = artist_genre[artist]
    multi = rng.random(n_songs) < P_GENRE_MULTI
    genre_extra = np.where(multi[:, None], rng.choice(n_genres, size=(n_songs, 2), p=genre_p), -1)
    genre_extra[rng.random(n_songs) < 0.6, 1] = -1
    genre_extra[genre_extra == genre[:, None]] = -1
    genre_empty = ensure_some(rng.random(n_songs) < P_GENRE_EMPTY, 1, rng)
    quality = rng.normal(0.0, 1.0, size=n_songs)

    listed = sizes.songs
    pop_key = 0.8 * quality[:listed] + 0.5 * np.log(artist_weight[artist[:listed]]) + rng.gumbel(size=listed)
    pop_order = np.lexsort((-pop_key, genre[:listed]))
    genre_size = np.bincount(genre[:listed], minlength=n_genres).astype(np.int64)
    genre_start = np.cumsum(genre_size) - genre_size
    names = _artist_names(rng, artist_language)
    return Catalog(
        song_key=stream_key(seed, "kkbox/song_id"),
        artist=artist,
        genre=genre,
        genre_extra=genre_extra,
        genre_empty=genre_empty,
        quality=quality,
        artist_language=artist_language,
        artist_name=names,
        genre_start=genre_start,
        genre_size=genre_size,
        pop_order=pop_order,
    )


@dataclass
class Members:
    """Per-member parameters."""

    key: int  # hash key of msno ids
    ids: list  # (M,) msno strings
    is_new: np.ndarray  # (M,) bool: only active in the test period
    activity: np.ndarray  # (M,) float weights
    relisten: np.ndarray  # (M,) float logit offset
    local_p: np.ndarray  # (M,) probability that a burst comes from "my library"
    fav_p: np.ndarray  # (M,) share of non-library plays from favourite genres
    fav_genre: np.ndarray  # (M, 3) genre indices
    fav_w: np.ndarray  # (M, 3) weights summing to 1
    library_key: int


def build_members(sizes: KkboxSizes, seed: int) -> Members:
    """Tastes, habits and ids of all members."""
    rng = make_rng(seed, "kkbox/members")
    m = sizes.members
    _, genre_p = _weights(GENRES)
    key = stream_key(seed, "kkbox/msno")
    gumbel = np.log(genre_p)[None, :] * 0.6 + rng.gumbel(size=(m, len(GENRES)))
    return Members(
        key=key,
        ids=base64_ids(key, np.arange(m)),
        is_new=ensure_some(rng.random(m) < P_NEW_MEMBER, 1, rng),
        activity=rng.lognormal(0.0, 1.2, size=m),
        relisten=rng.normal(0.0, 0.9, size=m),
        local_p=rng.beta(2.0, 2.0, size=m),
        fav_p=rng.beta(5.0, 2.0, size=m),
        fav_genre=np.argsort(-gumbel, axis=1)[:, :3],
        fav_w=rng.dirichlet(np.ones(3), size=m),
        library_key=stream_key(seed, "kkbox/library"),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------------------------------
def _person(rng: np.random.Generator, script: str) -> str:
    """One person name in ``script`` (Chinese names without a space, others "Given Surname")."""
    sur, given = SURNAMES[script], GIVEN[script]
    s, g = sur[int(rng.integers(len(sur)))], given[int(rng.integers(len(given)))]
    return s + g if script in ("zh", "ja", "ko") else f"{g} {s}"


def _artist_names(rng: np.random.Generator, languages: np.ndarray) -> list[str]:
    """Artist names matching each language's script, with romanized aliases and bands."""
    names = []
    for lang in languages.tolist():
        script = SCRIPT_OF_LANGUAGE[lang]
        r = rng.random()
        if script == "zh" and r < 0.3:
            names.append(f"{_person(rng, 'zh')} ({ROMANIZED[int(rng.integers(len(ROMANIZED)))]})")
        elif script == "ko" and r < 0.5:
            names.append("".join(rng.choice(list("ABCDEFGHIJKLMNOPRSTUVWXYZ"), size=int(rng.integers(3, 10)))))
        elif script == "en" and r < 0.35:
            words = WORDS["en"]
            names.append("The " + words[int(rng.integers(len(words)))] + "s" if r < 0.2
                         else f"{words[int(rng.integers(len(words)))]} & {words[int(rng.integers(len(words)))]}")
        elif lang == -1 and r < 0.5:
            names.append(INSTRUMENTAL_ARTISTS[int(rng.integers(len(INSTRUMENTAL_ARTISTS)))])
        else:
            names.append(_person(rng, script))
    return names


def _title(rng: np.random.Generator, script: str, r: float) -> str:
    """A song title; ``r`` picks rare shapes (quotes, commas, the "| " that KKBOX put where commas were)."""
    words = WORDS[script]
    w = [words[int(i)] for i in rng.integers(0, len(words), size=3)]
    sep = "" if script in ("zh", "ja") else " "
    title = sep.join(w[: 1 + int(rng.integers(0, 3))])
    if r < 0.008:
        title += f' (From "{WORDS["en"][int(rng.integers(len(WORDS["en"])))]} Story")'
    elif r < 0.011:
        title = f"{title}, {w[2]}"
    elif r < 0.016:
        title = f"Concerto No. {int(rng.integers(1, 20))} in E Major| Op. {int(rng.integers(1, 90))}"
    elif r < 0.0167:
        title = f"{title}\u00a0{w[2]}"
    elif r < 0.03:
        title += " (feat. " + _person(rng, "en") + ")"
    return title


def _people_list(rng: np.random.Generator, script: str, first: str | None = None) -> str:
    """Composer/lyricist field: 1-5 names joined by "| " (sometimes "|  "), rarely with a quoted nickname."""
    n = 1 + min(int(rng.geometric(0.5)) - 1, 4)
    people = [first] if first else []
    while len(people) < n:
        r = rng.random()
        if r < 0.05:
            people.append(STAGE_NAMES[int(rng.integers(len(STAGE_NAMES)))])
        elif r < 0.06:
            people.append(f'{GIVEN["en"][int(rng.integers(18))]} "{STAGE_NAMES[int(rng.integers(10))]}" Thiam')
        else:
            people.append(_person(rng, script))
    sep = "|  " if rng.random() < 0.15 else "| "
    return sep.join(people)


# ---------------------------------------------------------------------------------------------------------------------
# songs.csv, song_extra_info.csv, members.csv
# ---------------------------------------------------------------------------------------------------------------------
def _csv_writer(handle: TextIO):
    """The one CSV dialect of all KKBOX files: comma, minimal quoting with doubled quotes, LF."""
    return csv.writer(handle, lineterminator="\n", quoting=csv.QUOTE_MINIMAL, doublequote=True)


def _genre_text(catalog: Catalog, songs: np.ndarray) -> list[str]:
    """``genre_ids`` strings: "465", "864|857|850" or ""."""
    ids = np.array([str(g) for g, _ in GENRES], dtype=object)
    out = ids[catalog.genre[songs]].copy()
    for k in range(2):
        extra = catalog.genre_extra[songs, k]
        has = extra >= 0
        out[has] = out[has] + "|" + ids[extra[has]]
    out[catalog.genre_empty[songs]] = ""
    return out.tolist()


def write_songs(handle: TextIO, catalog: Catalog, sizes: KkboxSizes, seed: int, progress: bool) -> int:
    """Write ``songs.csv`` (listed songs 0..songs-1, chunk by chunk)."""
    writer = _csv_writer(handle)
    writer.writerow(KKBOX_SONGS_SCHEMA.fieldNames())
    bar = Progress(KKBOX_SONGS_FILE, sizes.songs, enabled=progress)
    for chunk_no, lo in enumerate(range(0, sizes.songs, SONG_CHUNK)):
        rng = make_rng(seed, "kkbox/songs", chunk_no)
        songs = np.arange(lo, min(lo + SONG_CHUNK, sizes.songs))
        n = len(songs)
        length = np.clip(rng.lognormal(np.log(233_000), 0.35, size=n), 4_922, 4_748_341).astype(np.int64)
        long_ones = rng.random(n) < 0.0005
        length[long_ones] = rng.integers(600_000, 4_748_341, size=int(long_ones.sum()))
        artist = catalog.artist[songs]
        language = catalog.artist_language[artist]
        scripts = [SCRIPT_OF_LANGUAGE[x] for x in language.tolist()]
        multi = ensure_some(rng.random(n) < P_MULTI_ARTIST, 1, rng)
        other = rng.integers(0, len(catalog.artist_name), size=n)
        sep = rng.integers(0, len(ARTIST_SEPARATORS), size=n)
        artist_text = [
            catalog.artist_name[a] + (ARTIST_SEPARATORS[s] + catalog.artist_name[o] if m else "")
            for a, o, s, m in zip(artist.tolist(), other.tolist(), sep.tolist(), multi.tolist())
        ]
        has_composer = ~ensure_some(rng.random(n) < P_COMPOSER_EMPTY, 1, rng)
        composer = [_people_list(rng, s) if h else "" for s, h in zip(scripts, has_composer.tolist())]
        lyricist_kind = rng.random(n)
        lyricist = [
            "" if k < P_LYRICIST_EMPTY else c.split("|")[0] if c and k < 0.85 else _people_list(rng, s)
            for k, c, s in zip(lyricist_kind.tolist(), composer, scripts)
        ]
        if not any(lyricist):
            lyricist[0] = _person(rng, scripts[0])
        ids = base64_ids(catalog.song_key, songs)
        writer.writerows(
            zip(ids, length.tolist(), _genre_text(catalog, songs), artist_text, composer, lyricist, language.tolist())
        )
        bar.add(n)
    return sizes.songs


def _isrc(rng: np.random.Generator, n: int) -> list[str]:
    """ISRC codes (country, 3-character registrant, 2-digit year, 5-digit number), ~13% empty."""
    countries, p = _weights(ISRC_COUNTRIES)
    alnum = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", dtype=np.uint8)
    chars = np.empty((n, 12), dtype=np.uint8)
    country = "".join(countries[rng.choice(len(countries), size=n, p=p)]).encode()
    chars[:, :2] = np.frombuffer(country, np.uint8).reshape(n, 2)
    chars[:, 2:5] = alnum[rng.integers(0, 26 + 10, size=(n, 3))]
    chars[:, 2] = alnum[rng.integers(0, 26, size=n)]
    year = rng.choice(np.r_[np.arange(0, 18), np.arange(60, 100)], size=n)
    digits = year * 100_000 + rng.integers(0, 100_000, size=n)
    for i in range(7):
        chars[:, 11 - i] = ord("0") + (digits // 10**i) % 10
    out = np.array(chars.view("S12").ravel().astype("U12"), dtype=object)
    out[ensure_some(rng.random(n) < 0.13, 1, rng)] = ""
    return out.tolist()


def write_extra(handle: TextIO, catalog: Catalog, sizes: KkboxSizes, seed: int, progress: bool) -> int:
    """Write ``song_extra_info.csv``: ~98.5% of listed songs in a random order, with a name and an ISRC."""
    rng = make_rng(seed, "kkbox/extra")
    covered = rng.permutation(np.flatnonzero(~ensure_some(rng.random(sizes.songs) >= P_EXTRA_INFO, 1, rng)))
    newline_rows = set(rng.choice(len(covered), size=max(2, round(len(covered) * 2e-5)), replace=False).tolist())
    writer = _csv_writer(handle)
    writer.writerow(KKBOX_EXTRA_SCHEMA.fieldNames())
    bar = Progress(KKBOX_EXTRA_FILE, len(covered), enabled=progress)
    for chunk_no, lo in enumerate(range(0, len(covered), SONG_CHUNK)):
        crng = make_rng(seed, "kkbox/extra", chunk_no + 1)
        songs = covered[lo : lo + SONG_CHUNK]
        language = catalog.artist_language[catalog.artist[songs]]
        shape = crng.random(len(songs))
        names = [_title(crng, SCRIPT_OF_LANGUAGE[x], r) for x, r in zip(language.tolist(), shape.tolist())]
        for row in sorted(i - lo for i in newline_rows if lo <= i < lo + len(songs)):
            names[row] = names[row] + " (Live),\n" + _title(crng, "en", 1.0)
        writer.writerows(zip(base64_ids(catalog.song_key, songs), names, _isrc(crng, len(songs))))
        bar.add(len(songs))
    return len(covered)


def _yyyymmdd(days: np.ndarray) -> list[str]:
    """Days since 1970-01-01 as ``yyyymmdd`` strings."""
    text = np.datetime_as_string(days.astype("datetime64[D]"), unit="D").astype("U10")
    return [t[:4] + t[5:7] + t[8:] for t in text.tolist()]


def write_members(handle: TextIO, members: Members, seed: int) -> int:
    """Write ``members.csv`` with the real file's distributions (bd 0 for most, outliers, empty genders)."""
    rng = make_rng(seed, "kkbox/member-profile")
    m = len(members.ids)
    cities, city_p = _weights(CITIES)
    via, via_p = _weights(REGISTERED_VIA)
    filled = rng.random(m) < 0.42
    bd = np.where(filled, np.clip(rng.normal(28.5, 9.0, size=m), 2, 97).astype(np.int64), 0)
    negative = ensure_some(rng.random(m) < 0.0007, 1, rng)
    over_100 = ensure_some(rng.random(m) < 0.0007, 1, rng) & ~negative
    bd[negative] = -rng.integers(1, 50, size=int(negative.sum()))
    bd[over_100] = rng.choice([101, 102, 105, 111, 112, 131, 144, 931, 1030, 1051], size=int(over_100.sum()))
    has_gender = filled ^ (rng.random(m) < 0.03)
    gender = np.where(has_gender, np.where(rng.random(m) < 0.51, "male", "female"), "")
    years, year_p = _weights(REGISTRATION_YEARS)
    year = years[rng.choice(len(years), size=m, p=year_p)]
    year_start = (year - 1970).astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)
    span = np.where(year == 2017, 59, 365)
    registration = year_start + (rng.random(m) * span).astype(np.int64)
    expiry_base = np.datetime64("2017-09-01", "D").astype(np.int64)
    kind = rng.random(m)
    expiration = np.where(
        kind < 0.8,
        expiry_base + rng.geometric(0.08, size=m).clip(1, 60) + 20,
        np.where(
            kind < 0.95,
            expiry_base - 180 + rng.integers(0, 300, size=m),
            expiry_base + rng.integers(120, 1140, size=m),
        ),
    )
    expiration[ensure_some(rng.random(m) < 0.0003, 1, rng)] = 0  # 19700101, as in the real file
    writer = _csv_writer(handle)
    writer.writerow(KKBOX_MEMBERS_SCHEMA.fieldNames())
    writer.writerows(
        zip(
            members.ids,
            cities[rng.choice(len(cities), size=m, p=city_p)].tolist(),
            bd.tolist(),
            gender.tolist(),
            via[rng.choice(len(via), size=m, p=via_p)].tolist(),
            _yyyymmdd(registration),
            _yyyymmdd(expiration),
        )
    )
    return m


# ---------------------------------------------------------------------------------------------------------------------
# train.csv and test.csv
# ---------------------------------------------------------------------------------------------------------------------
def _contexts() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All contexts as arrays: text columns (object, (C, 3)), local flag, in-group probability, logit effect."""
    rows = LOCAL_CONTEXTS + OTHER_CONTEXTS
    text = np.array([r[:3] for r in rows], dtype=object)
    is_local = np.array([i < len(LOCAL_CONTEXTS) for i in range(len(rows))])
    weight = np.array([r[3] for r in rows])
    effect = np.array([r[4] for r in rows])
    local_cum = np.cumsum(np.where(is_local, weight, 0)) / weight[is_local].sum()
    local_cum[len(LOCAL_CONTEXTS) - 1 :] = 1.0  # exact, so that searchsorted never runs past the group
    other_cum = np.cumsum(np.where(is_local, 0, weight)) / weight[~is_local].sum()
    other_cum[-1] = 1.0
    return text, is_local, local_cum, other_cum, effect


def _popular_song(catalog: Catalog, genre: np.ndarray, u: np.ndarray) -> np.ndarray:
    """A Zipf-popular listed song of each genre, from uniforms ``u`` (genres without songs fall back to genre 0)."""
    genre = np.where(catalog.genre_size[genre] > 0, genre, int(np.argmax(catalog.genre_size)))
    rank = zipf_ranks(u, catalog.genre_size[genre], 1.0)
    return catalog.pop_order[catalog.genre_start[genre] + rank]


def _pick_favourite(members: Members, member: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One of each member's three favourite genres, by their weights, from uniforms ``u``."""
    slot = (u[:, None] > np.cumsum(members.fav_w[member], axis=1)).sum(axis=1).clip(0, 2)
    return members.fav_genre[member, slot]


def _library_song(catalog: Catalog, members: Members, member: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A song from the member's personal library: entry k (Zipf over LIBRARY_SIZE) is fixed per (member, k)."""
    k = zipf_ranks(rng.random(len(member)), np.full(len(member), LIBRARY_SIZE), 0.8)
    slot = member.astype(np.uint64) * np.uint64(LIBRARY_SIZE) + k.astype(np.uint64)
    genre = _pick_favourite(members, member, hash_uniform(members.library_key, slot, 0))
    return _popular_song(catalog, genre, hash_uniform(members.library_key, slot, 1) ** 1.5)


def events_chunk(
    catalog: Catalog, members: Members, sizes: KkboxSizes, n: int, is_test: bool, rng: np.random.Generator
):
    """``n`` consecutive events: (member, song, context index, target) arrays, as bursts of 1-8 plays."""
    text, is_local, local_cum, other_cum, effect = _contexts()
    burst = np.minimum(rng.geometric(0.5, size=n), 8)
    n_bursts = int(np.searchsorted(np.cumsum(burst), n)) + 1
    burst = burst[:n_bursts]
    burst[-1] -= int(burst.sum()) - n
    weight = members.activity * np.where(members.is_new, 3.0 if is_test else 0.0, 1.0)
    member_b = rng.choice(len(weight), size=n_bursts, p=weight / weight.sum())
    local_b = rng.random(n_bursts) < members.local_p[member_b]
    ctx_b = np.where(local_b, np.searchsorted(local_cum, rng.random(n_bursts), side="right"),
                     np.searchsorted(other_cum, rng.random(n_bursts), side="right"))
    member, ctx, local = (np.repeat(x, burst) for x in (member_b, ctx_b, local_b))

    r = rng.random(n)
    fav = r < members.fav_p[member]
    genre = np.where(fav, _pick_favourite(members, member, rng.random(n)),
                     rng.choice(len(GENRES), size=n, p=_weights(GENRES)[1]))
    song = _popular_song(catalog, genre, rng.random(n))
    song = np.where(local, _library_song(catalog, members, member, rng), song)
    unlisted = rng.random(n) < P_UNLISTED_SONG
    n_unlisted = int(unlisted.sum())
    song[unlisted] = sizes.songs + zipf_ranks(rng.random(n_unlisted), np.full(n_unlisted, sizes.unlisted), 0.9)

    affinity = (members.fav_w[member] * (members.fav_genre[member] == catalog.genre[song][:, None])).sum(axis=1)
    logit = (TARGET_BIAS + members.relisten[member] + 0.6 * catalog.quality[song] + 1.5 * (affinity - 0.25)
             + effect[ctx] + rng.normal(0.0, 0.5, size=n))
    target = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return member, song, ctx, target


def write_events(handle: TextIO, catalog: Catalog, members: Members, sizes: KkboxSizes, seed: int, is_test: bool,
                 progress: bool) -> int:
    """Write ``train.csv`` (with target) or ``test.csv`` (with id), chunk by chunk in time order."""
    total = sizes.test if is_test else sizes.train
    name = KKBOX_TEST_FILE if is_test else KKBOX_TRAIN_FILE
    schema = KKBOX_TEST_SCHEMA if is_test else KKBOX_TRAIN_SCHEMA
    text = _contexts()[0]
    ids = np.array(members.ids, dtype=object)
    writer = _csv_writer(handle)
    writer.writerow(schema.fieldNames())
    bar = Progress(name, total, enabled=progress)
    for chunk_no, lo in enumerate(range(0, total, EVENT_CHUNK)):
        n = min(EVENT_CHUNK, total - lo)
        rng = make_rng(seed, "kkbox/" + name, chunk_no)
        member, song, ctx, target = events_chunk(catalog, members, sizes, n, is_test, rng)
        columns = [ids[member].tolist(), base64_ids(catalog.song_key, song)] + [text[ctx, k].tolist() for k in range(3)]
        if is_test:
            writer.writerows(zip(range(lo, lo + n), *columns))
        else:
            writer.writerows(zip(*columns, target.tolist()))
        bar.add(n)
    return total


# ---------------------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------------------
def generate(
    out_dir: str | Path, scale: float = DEFAULT_SCALE, seed: int = 0, progress: bool = True
) -> list[FileReport]:
    """Write the five KKBOX files into ``out_dir`` (atomically, each via ``<name>.tmp``)."""
    out = check_output_dir(out_dir)
    sizes = sizes_for_scale(check_scale(scale))
    catalog = build_catalog(sizes, seed)
    members = build_members(sizes, seed)
    return [
        timed_write(out / KKBOX_TRAIN_FILE, write_events, catalog, members, sizes, seed, False, progress),
        timed_write(out / KKBOX_TEST_FILE, write_events, catalog, members, sizes, seed, True, progress),
        timed_write(out / KKBOX_SONGS_FILE, write_songs, catalog, sizes, seed, progress),
        timed_write(out / KKBOX_MEMBERS_FILE, write_members, members, seed),
        timed_write(out / KKBOX_EXTRA_FILE, write_extra, catalog, sizes, seed, progress),
    ]
