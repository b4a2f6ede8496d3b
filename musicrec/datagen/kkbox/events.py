"""``train.csv`` and ``test.csv``: one time-ordered stream of listening bursts, with the planted ``target``.

Each burst is one member playing 1-8 songs from one source context; a song comes from the member's library (local
contexts), a favourite genre or the popular songs; 3% of the songs played are missing from songs.csv.
"""

from __future__ import annotations

from typing import TextIO

import numpy as np

from musicrec.datagen import Progress, base64_ids, csv_writer, hash_uniform, make_rng, zipf_ranks
from musicrec.datagen.kkbox.model import GENRES, P_UNLISTED_SONG, Catalog, KkboxSizes, Members, values_and_p
from musicrec.schemas import KKBOX_TEST_FILE, KKBOX_TEST_SCHEMA, KKBOX_TRAIN_FILE, KKBOX_TRAIN_SCHEMA

EVENT_CHUNK = 200_000

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
                     rng.choice(len(GENRES), size=n, p=values_and_p(GENRES)[1]))
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
    writer = csv_writer(handle)
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
