"""The MovieLens 100K -> Last.fm play-log converter (musicrec/movielens.py), on tiny inline files and the real
sample in ../shared/data."""

from __future__ import annotations

import pytest

from musicrec import movielens
from musicrec.schemas import LASTFM_PLAYS_FILE, LASTFM_TAGS_FILE

GENRES = "unknown|0\nAction|1\nComedy|2\n\n"
ITEMS = ("1|Toy Story (1995)|01-Jan-1995||http://x|0|0|1\n"
         "2|Heat\tNight (1995)|01-Jan-1995||http://y|0|1|1\n"
         "3|Caf\xe9 (1996)|01-Jan-1996||http://z|1|0|0\n")
RATINGS = "7\t2\t5\t881250950\n7\t1\t3\t881250949\n3\t3\t4\t0\n7\t3\t1\t881250949\n"


def write_inputs(folder, ratings=RATINGS, items=ITEMS):
    folder.mkdir()
    (folder / "u.genre").write_text(GENRES, encoding="latin-1")
    (folder / "u.item").write_text(items, encoding="latin-1")
    (folder / "u.data").write_text(ratings, encoding="utf-8")
    return folder


@pytest.mark.unit
def test_converts_ratings_to_plays_in_user_time_order_and_genres_to_tags(tmp_path):
    counts = movielens.convert(write_inputs(tmp_path / "ml"), tmp_path / "out")
    assert counts == {"plays": 4, "users": 2, "movies": 3, "tags": 3}
    plays = (tmp_path / "out" / LASTFM_PLAYS_FILE).read_text(encoding="utf-8").splitlines()
    t1, t2, t3 = movielens.track_id(1), movielens.track_id(2), movielens.track_id(3)
    assert plays == [
        f"user_000003\t1970-01-01T00:00:00Z\t\t\t{t3}\tCaf\u00e9 (1996)",  # latin-1 title read right
        f"user_000007\t1997-12-04T15:55:49Z\t\t\t{t1}\tToy Story (1995)",  # same second: by movie id
        f"user_000007\t1997-12-04T15:55:49Z\t\t\t{t3}\tCaf\u00e9 (1996)",
        f"user_000007\t1997-12-04T15:55:50Z\t\t\t{t2}\tHeat Night (1995)",  # a tab in a title would add a field
    ]
    assert all(len(line.split("\t")) == 6 for line in plays)
    tags = (tmp_path / "out" / LASTFM_TAGS_FILE).read_text(encoding="utf-8").splitlines()
    assert tags == ["traid\ttag\tcount", f"{t1}\tcomedy\t100", f"{t2}\taction\t100", f"{t2}\tcomedy\t100"]
    assert movielens.track_id(1) == t1 and t1 != t2  # stable and distinct


@pytest.mark.unit
def test_bad_input_names_the_file_and_line(tmp_path, capsys):
    with pytest.raises(movielens.ConversionError, match=r"u\.data line 2: expected 4 tab-separated integers"):
        movielens.convert(write_inputs(tmp_path / "a", ratings="1\t1\t5\t9\n1\tx\t5\t9\n"), tmp_path / "o")
    with pytest.raises(movielens.ConversionError, match=r"movie ids not in u\.item: \[9\]"):
        movielens.convert(write_inputs(tmp_path / "b", ratings="1\t9\t5\t9\n"), tmp_path / "o")
    with pytest.raises(movielens.ConversionError, match=r"u\.item line 1: expected id\|title"):
        movielens.convert(write_inputs(tmp_path / "c", items="1|Short\n"), tmp_path / "o")
    assert movielens.main(["--input", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "movielens: error: file" in capsys.readouterr().err


@pytest.mark.unit
def test_the_real_movielens_100k(shared_data, tmp_path):
    counts = movielens.convert(shared_data / "movielens-100k", tmp_path / "out")
    assert counts["plays"] == 100_000 and counts["users"] == 943 and counts["movies"] == 1682
    lines = (tmp_path / "out" / LASTFM_PLAYS_FILE).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 100_000 and all(len(line.split("\t")) == 6 for line in lines)
    assert len({line.split("\t")[4] for line in lines}) == 1682
