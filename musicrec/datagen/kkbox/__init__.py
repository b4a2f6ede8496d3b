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

Modules: ``model`` (sizes, catalogue and members as numbers), ``names`` (artist names, titles, people lists),
``events`` (train.csv, test.csv), ``songs`` (songs.csv, song_extra_info.csv) and ``profiles`` (members.csv).
"""

from __future__ import annotations

from pathlib import Path

from musicrec.datagen import FileReport, checked_arguments, timed_write
from musicrec.datagen.kkbox.events import write_events
from musicrec.datagen.kkbox.model import DEFAULT_SCALE, build_catalog, build_members, sizes_for_scale
from musicrec.datagen.kkbox.profiles import write_members
from musicrec.datagen.kkbox.songs import write_extra, write_songs
from musicrec.schemas import KKBOX_EXTRA_FILE, KKBOX_MEMBERS_FILE, KKBOX_SONGS_FILE, KKBOX_TEST_FILE, KKBOX_TRAIN_FILE

def generate(
    out_dir: str | Path, scale: float = DEFAULT_SCALE, seed: int = 0, progress: bool = True
) -> list[FileReport]:
    """Write the five KKBOX files into ``out_dir`` (atomically, each via ``<name>.tmp``)."""
    out, sizes = checked_arguments(out_dir, scale, sizes_for_scale)
    catalog = build_catalog(sizes, seed)
    members = build_members(sizes, seed)
    return [
        timed_write(out / KKBOX_TRAIN_FILE, write_events, catalog, members, sizes, seed, False, progress),
        timed_write(out / KKBOX_TEST_FILE, write_events, catalog, members, sizes, seed, True, progress),
        timed_write(out / KKBOX_SONGS_FILE, write_songs, catalog, sizes, seed, progress),
        timed_write(out / KKBOX_MEMBERS_FILE, write_members, members, seed),
        timed_write(out / KKBOX_EXTRA_FILE, write_extra, catalog, sizes, seed, progress),
    ]
