"""Users: ids, row quotas, theme mixtures, favourite rotations, hours and activity spans, and ``userid-profile.tsv``.

The theme mixtures and rotations of favourites are the per-user half of the planted structure (package docstring);
the profile fields are drawn with the real file's distributions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

import numpy as np

from musicrec.datagen import allocate, ensure_some, make_rng, zipf_ranks
from musicrec.datagen.lastfm.catalog import THEMES, Catalog
from musicrec.datagen.lastfm.sizes import DAY_S, END_TS, FIRST_TS, LastfmSizes

ROTATION = 8  # favourites per user and theme slot
ROTATION_EXPONENT = 0.5  # favourites are drawn by a flatter popularity than plays: tastes differ between users
P_DUPLICATE = 0.005
P_LIGHT_USER = 0.03

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
