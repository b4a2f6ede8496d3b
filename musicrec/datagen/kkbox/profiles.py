"""``members.csv``: the member profiles, drawn with the real file's distributions."""

from __future__ import annotations

from typing import TextIO

import numpy as np

from musicrec.datagen import csv_writer, ensure_some, make_rng
from musicrec.datagen.kkbox.model import Members, values_and_p
from musicrec.schemas import KKBOX_MEMBERS_SCHEMA

CITIES = [(1, 19445), (13, 3395), (5, 2634), (4, 1732), (15, 1525), (22, 1467), (6, 913), (14, 708), (12, 491),
          (9, 309), (8, 289), (11, 285), (18, 259), (10, 216), (21, 213), (3, 204), (17, 152), (7, 93), (16, 35),
          (20, 27), (19, 11)]
REGISTERED_VIA = [(4, 11392), (7, 9433), (9, 8628), (3, 4879), (13, 70), (16, 1)]
REGISTRATION_YEARS = [(2004, 2), (2005, 3), (2006, 4), (2007, 4), (2008, 5), (2009, 6), (2010, 8), (2011, 11),
                      (2012, 12), (2013, 13), (2014, 15), (2015, 18), (2016, 22), (2017, 4)]


def _yyyymmdd(days: np.ndarray) -> list[str]:
    """Days since 1970-01-01 as ``yyyymmdd`` strings."""
    text = np.datetime_as_string(days.astype("datetime64[D]"), unit="D").astype("U10")
    return [t[:4] + t[5:7] + t[8:] for t in text.tolist()]


def write_members(handle: TextIO, members: Members, seed: int) -> int:
    """Write ``members.csv`` with the real file's distributions (bd 0 for most, outliers, empty genders)."""
    rng = make_rng(seed, "kkbox/member-profile")
    m = len(members.ids)
    cities, city_p = values_and_p(CITIES)
    via, via_p = values_and_p(REGISTERED_VIA)
    filled = rng.random(m) < 0.42
    bd = np.where(filled, np.clip(rng.normal(28.5, 9.0, size=m), 2, 97).astype(np.int64), 0)
    negative = ensure_some(rng.random(m) < 0.0007, 1, rng)
    over_100 = ensure_some(rng.random(m) < 0.0007, 1, rng) & ~negative
    bd[negative] = -rng.integers(1, 50, size=int(negative.sum()))
    bd[over_100] = rng.choice([101, 102, 105, 111, 112, 131, 144, 931, 1030, 1051], size=int(over_100.sum()))
    has_gender = filled ^ (rng.random(m) < 0.03)
    gender = np.where(has_gender, np.where(rng.random(m) < 0.51, "male", "female"), "")
    years, year_p = values_and_p(REGISTRATION_YEARS)
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
    writer = csv_writer(handle)
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
