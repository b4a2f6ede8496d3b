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

Modules, in the order :func:`generate` uses them: ``sizes`` (how much for a scale), ``catalog`` (themes, album rings,
popularity, MBIDs; names from ``names``), ``users`` (quotas, tastes, favourite rotations, and the profile file),
``plays`` (sessions, the walk, timestamps, the plays file) and ``tags`` (the tags file).
"""

from __future__ import annotations

from pathlib import Path

from musicrec.datagen import FileReport, checked_arguments, timed_write
from musicrec.datagen.lastfm.catalog import build_catalog
from musicrec.datagen.lastfm.plays import write_plays
from musicrec.datagen.lastfm.sizes import DEFAULT_SCALE, sizes_for_scale
from musicrec.datagen.lastfm.tags import write_tags
from musicrec.datagen.lastfm.users import build_users, write_profiles
from musicrec.schemas import LASTFM_PLAYS_FILE, LASTFM_PROFILE_FILE, LASTFM_TAGS_FILE

def generate(
    out_dir: str | Path, scale: float = DEFAULT_SCALE, seed: int = 0, progress: bool = True
) -> list[FileReport]:
    """Write the three Last.fm 1K files into ``out_dir`` (atomically, each via ``<name>.tmp``)."""
    out, sizes = checked_arguments(out_dir, scale, sizes_for_scale)
    catalog = build_catalog(sizes, seed)
    users = build_users(sizes, catalog, seed)
    return [
        timed_write(out / LASTFM_PLAYS_FILE, write_plays, catalog, users, seed, progress),
        timed_write(out / LASTFM_PROFILE_FILE, write_profiles, users),
        timed_write(out / LASTFM_TAGS_FILE, write_tags, catalog, seed, progress),
    ]
