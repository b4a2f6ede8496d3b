"""``songs.csv`` and ``song_extra_info.csv``: the strings of the listed songs, chunk by chunk."""

from __future__ import annotations

from typing import TextIO

import numpy as np

from musicrec.datagen import Progress, base64_ids, csv_writer, ensure_some, make_rng
from musicrec.datagen.kkbox.model import GENRES, Catalog, KkboxSizes, values_and_p
from musicrec.datagen.kkbox.names import SCRIPT_OF_LANGUAGE, people_list, person_name, song_title
from musicrec.schemas import KKBOX_EXTRA_FILE, KKBOX_EXTRA_SCHEMA, KKBOX_SONGS_FILE, KKBOX_SONGS_SCHEMA

SONG_CHUNK = 100_000

ARTIST_SEPARATORS = ["| ", "|", " | ", "/", "\\", ";", " & ", " feat. ", " and "]
P_MULTI_ARTIST = 0.06
P_COMPOSER_EMPTY, P_LYRICIST_EMPTY = 0.42, 0.73

P_EXTRA_INFO = 0.985
ISRC_COUNTRIES = [("US", 9922), ("TW", 5030), ("GB", 4412), ("JP", 3243), ("HK", 1867), ("DE", 1355), ("FR", 1271),
                  ("KR", 1251), ("TC", 1212), ("QM", 777), ("NL", 619), ("IT", 618), ("SE", 400), ("CN", 300)]


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
    writer = csv_writer(handle)
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
        composer = [people_list(rng, s) if h else "" for s, h in zip(scripts, has_composer.tolist())]
        lyricist_kind = rng.random(n)
        lyricist = [
            "" if k < P_LYRICIST_EMPTY else c.split("|")[0] if c and k < 0.85 else people_list(rng, s)
            for k, c, s in zip(lyricist_kind.tolist(), composer, scripts)
        ]
        if not any(lyricist):
            lyricist[0] = person_name(rng, scripts[0])
        ids = base64_ids(catalog.song_key, songs)
        writer.writerows(
            zip(ids, length.tolist(), _genre_text(catalog, songs), artist_text, composer, lyricist, language.tolist())
        )
        bar.add(n)
    return sizes.songs


def _isrc(rng: np.random.Generator, n: int) -> list[str]:
    """ISRC codes (country, 3-character registrant, 2-digit year, 5-digit number), ~13% empty."""
    countries, p = values_and_p(ISRC_COUNTRIES)
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
    writer = csv_writer(handle)
    writer.writerow(KKBOX_EXTRA_SCHEMA.fieldNames())
    bar = Progress(KKBOX_EXTRA_FILE, len(covered), enabled=progress)
    for chunk_no, lo in enumerate(range(0, len(covered), SONG_CHUNK)):
        crng = make_rng(seed, "kkbox/extra", chunk_no + 1)
        songs = covered[lo : lo + SONG_CHUNK]
        language = catalog.artist_language[catalog.artist[songs]]
        shape = crng.random(len(songs))
        names = [song_title(crng, SCRIPT_OF_LANGUAGE[x], r) for x, r in zip(language.tolist(), shape.tolist())]
        for row in sorted(i - lo for i in newline_rows if lo <= i < lo + len(songs)):
            names[row] = names[row] + " (Live),\n" + song_title(crng, "en", 1.0)
        writer.writerows(zip(base64_ids(catalog.song_key, songs), names, _isrc(crng, len(songs))))
        bar.add(len(songs))
    return len(covered)
