"""``track-tags.tsv``: per tagged track MBID, its top tags (its theme's tags and generic ones) with counts 100 -> 0."""

from __future__ import annotations

from typing import TextIO

import numpy as np

from musicrec.datagen import Progress, ensure_some, make_rng
from musicrec.datagen.lastfm.catalog import THEMES, Catalog
from musicrec.schemas import LASTFM_TAGS_FILE

P_UNTAGGED = 0.15
MAX_TAGS = 20
GENERIC_TAGS = [
    ("seen live", 0.35), ("favorites", 0.3), ("love", 0.25), ("awesome", 0.25), ("beautiful", 0.2),
    ("male vocalists", 0.2), ("female vocalists", 0.15), ("00s", 0.2), ("90s", 0.15), ("mellow", 0.12),
    ("chill", 0.12), ("favourite songs", 0.1), ("british", 0.1), ("american", 0.1), ("german", 0.05),
    ("swedish", 0.05), ("cover", 0.05), ("live", 0.05), ("remix", 0.05), ("sad", 0.08), ("happy", 0.06),
    ("Awesome", 0.03), ("Favorite", 0.03), ("my favorites", 0.06), ("party", 0.05), ("sexy", 0.04),
]


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
