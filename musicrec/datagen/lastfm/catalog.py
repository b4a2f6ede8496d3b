"""The catalogue: themes -> artists -> albums -> tracks in ring order, with names, MBIDs, durations and popularity.

Builds the themes and album rings of the planted structure (package docstring), and picks the artists and tracks
without an MBID by their expected share of the plays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from musicrec.datagen import allocate, make_rng
from musicrec.datagen.lastfm.names import artist_names, track_names, uuids
from musicrec.datagen.lastfm.sizes import LastfmSizes

ZIPF_EXPONENT = 0.95  # Zipf exponent of track popularity inside a theme (popular draws, expected play shares)
ROWS_NO_ARTIST_MBID = 0.03  # expected share of rows without an artist MBID (these have no track MBID either)
ROWS_NO_TRACK_MBID = 0.11  # expected share of rows without a track MBID, in all

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
