"""The latent KKBOX model: sizes for a scale, the catalogue (artists and songs) and the members, as numbers.

Song strings (ids, titles, people lists) are made per chunk while writing; what is held for the whole run is these
arrays, the artist names and the member ids. The member parameters (activity, re-listen propensity, library share,
favourite genres) and the song quality are the terms of the planted ``target`` (package docstring,
:mod:`musicrec.datagen.kkbox.events`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from musicrec.datagen import base64_ids, ensure_some, make_rng, stream_key
from musicrec.datagen.kkbox.names import artist_names

REAL_TRAIN, REAL_TEST, REAL_SONGS, REAL_MEMBERS = 7_377_418, 2_556_790, 2_296_320, 34_403
DEFAULT_SCALE = 0.007  # 51,642 train rows, 17,898 test rows, 16,074 songs, 241 members

P_UNLISTED_SONG = 0.03  # of events: a song missing from songs.csv
P_NEW_MEMBER = 0.12

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


def values_and_p(table) -> tuple[np.ndarray, np.ndarray]:
    """Values and probabilities of a ``[(value, weight), ...]`` table."""
    values, weights = zip(*table)
    w = np.asarray(weights, dtype=np.float64)
    return np.asarray(values), w / w.sum()


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
    genre_ids, genre_p = values_and_p(GENRES)
    lang_codes, lang_p = values_and_p(LANGUAGES)
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
    names = artist_names(rng, artist_language)
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
    _, genre_p = values_and_p(GENRES)
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
