"""Tiny datasets that follow docs/DATA_CONTRACT.md, for the loader, training and CLI tests.

Both writers produce what the feature jobs would write (Parquet folders with several files and several row groups
per split, ``vocab/<name>/``, and ``_MANIFEST.json`` written last), small enough for a test and learnable:

- Last.fm sessions follow a noisy "next song = song + user step" chain, so a sequence model beats popularity and
  each user has a favourite song range (for NCF).
- KKBOX targets depend on a hidden user x song affinity and on ``source_type_idx``, so AUC > 0.5 is reachable.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from musicrec.columns import FIRST_TOKEN_INDEX as FIRST  # first real token index: 0 = padding, 1 = out-of-vocabulary
from musicrec.columns import MANIFEST_NAME
from musicrec.io import file_listing

KKBOX_CATEGORICAL = {
    "user_idx": "user",
    "song_idx": "song",
    "source_system_tab_idx": "source_system_tab",
    "source_screen_name_idx": "source_screen_name",
    "source_type_idx": "source_type",
    "city_idx": "city",
    "gender_idx": "gender",
    "registered_via_idx": "registered_via",
    "language_idx": "language",
    "isrc_country_idx": "isrc_country",
    "isrc_year_idx": "isrc_year",
}
KKBOX_MULTI = {"genre_idx": "genre", "artist_idx": "person", "composer_idx": "person", "lyricist_idx": "person"}
KKBOX_NUMERIC = ["song_length", "age", "membership_days", "registration_year", "song_count", "user_count", "artist_count"]


def _write_split(df_or_table, folder: Path, n_files: int, row_group_size: int) -> None:
    """Write ``n_files`` Parquet files of small row groups, plus a Spark-like ``_SUCCESS`` marker."""
    folder.mkdir(parents=True, exist_ok=True)
    table = df_or_table if isinstance(df_or_table, pa.Table) else pa.Table.from_pandas(df_or_table, preserve_index=False)
    bounds = np.linspace(0, table.num_rows, n_files + 1).astype(int)
    for i in range(n_files):
        part = table.slice(bounds[i], bounds[i + 1] - bounds[i])
        pq.write_table(part, folder / f"part-{i:05d}.snappy.parquet", row_group_size=row_group_size)
    (folder / "_SUCCESS").write_text("")


def _write_vocab(out: Path, name: str, size: int) -> None:
    tokens = [f"{name}_{i}" for i in range(FIRST, size)]
    vocab = pa.table(
        {
            "token": pa.array(tokens, pa.string()),
            "index": pa.array(np.arange(FIRST, size), pa.int32()),
            "count": pa.array(np.arange(size - FIRST, 0, -1), pa.int64()),
        }
    )
    _write_split(vocab, out / "vocab" / name, 1, max(len(tokens), 1))


def _write_manifest(out: Path, manifest: dict) -> dict:
    blob = json.dumps({k: manifest[k] for k in ("config", "inputs")}, sort_keys=True).encode()
    manifest = {**manifest, "fingerprint": hashlib.sha256(blob).hexdigest(), "files": file_listing(out)}
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return manifest


def write_lastfm(
    out,
    *,
    n_users: int = 12,
    n_songs: int = 40,
    n_tags: int = 15,
    sessions_per_user: tuple[int, int, int] = (8, 2, 2),
    min_len: int = 2,
    max_len: int = 8,
    top_k_tags: int = 3,
    n_files: int = 2,
    row_group_size: int = 10,
    seed: int = 0,
) -> dict:
    """Write a Last.fm-layout output folder under ``out``; returns the manifest."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    song_vocab, user_vocab, tag_vocab = n_songs + FIRST, n_users + FIRST, n_tags + FIRST
    songs_all = np.arange(FIRST, song_vocab)
    # every song has top_k tag slots, some 0-padded
    tags_of = {int(s): np.array(sorted(rng.choice(np.arange(FIRST, tag_vocab), top_k_tags, replace=False)), np.int32) for s in songs_all}
    for s in songs_all[::4]:
        tags_of[int(s)][-1] = 0
    tags_of[1] = np.zeros(top_k_tags, np.int32)  # an OOV song has no tags

    rows = {name: [] for name in ("train", "valid", "test")}
    session_id = 0
    t0 = pd.Timestamp("2009-01-01", tz="UTC")
    split_start = {"train": 0, "valid": 1000, "test": 2000}  # every test session after every train session (hours)
    for split, n_per_user in zip(("train", "valid", "test"), sessions_per_user):
        for u in range(FIRST, user_vocab):
            step = 1 + (u % 3)  # each user walks the catalogue at its own pace
            home = FIRST + (u * 7) % n_songs  # and starts near its own favourite region
            for j in range(n_per_user):
                length = int(rng.integers(min_len, max_len + 1))
                cur = home + int(rng.integers(0, 4))
                seq = []
                for _ in range(length):
                    seq.append(FIRST + (cur - FIRST) % n_songs)
                    cur += step if rng.random() < 0.85 else int(rng.integers(1, n_songs))
                if rng.random() < 0.1:
                    seq[-1] = 1  # an out-of-vocabulary (rare) song now and then
                tags = np.concatenate([tags_of[s] for s in seq]).astype(np.int32)
                start = t0 + pd.Timedelta(hours=split_start[split] + j * 10 + (u % 5))
                rows[split].append((session_id, u, start, seq, tags.tolist(), length))
                session_id += 1

    schema = pa.schema(
        [
            ("session_id", pa.int64()),
            ("user_idx", pa.int32()),
            ("start_ts", pa.timestamp("us", tz="UTC")),
            ("songs", pa.list_(pa.int32())),
            ("song_tags", pa.list_(pa.int32())),
            ("length", pa.int32()),
        ]
    )
    counts = {}
    for split, data in rows.items():
        order = rng.permutation(len(data))  # Spark writes in no particular order
        cols = list(zip(*[data[i] for i in order]))
        table = pa.Table.from_arrays([pa.array(list(c), type=f.type) for c, f in zip(cols, schema)], schema=schema)
        _write_split(table, out / "sessions" / split, n_files, row_group_size)
        counts[split] = len(data)

    song_tags = pa.table(
        {
            "song_idx": pa.array(songs_all, pa.int32()),
            "tags": pa.array([tags_of[int(s)].tolist() for s in songs_all], pa.list_(pa.int32())),
        }
    )
    _write_split(song_tags, out / "song_tags", 1, len(songs_all))
    vocab_sizes = {"user": user_vocab, "song": song_vocab, "artist": 10 + FIRST, "tag": tag_vocab}
    for name, size in vocab_sizes.items():
        _write_vocab(out, name, size)
    manifest = {
        "dataset": "lastfm",
        "created_by": "musicrec 0.1.0 (tests/fakedata.py)",
        "config": {"seed": seed, "n_users": n_users, "n_songs": n_songs, "max_session_length": max_len},
        "inputs": {"fake-lastfm": {"bytes": 0, "sha256": f"seed{seed}"}},
        "row_counts": {**counts, "rejected": 0},
        "vocab_sizes": vocab_sizes,
        "features": {
            "categorical": {"user_idx": "user"},
            "multi_valued": {"songs": "song", "song_tags": "tag"},
            "numeric": [],
            "target": None,
        },
        "splits": {"train": "train", "valid": "valid", "test": "test"},
        "top_k_tags": top_k_tags,
        "max_session_length": max_len,
    }
    return _write_manifest(out, manifest)


def write_kkbox(
    out,
    *,
    n_users: int = 30,
    n_songs: int = 50,
    n_train: int = 400,
    n_test: int = 60,
    max_multi: int = 3,
    n_files: int = 2,
    row_group_size: int = 50,
    test_has_target: bool = False,
    seed: int = 0,
) -> dict:
    """Write a KKBOX-layout output folder under ``out``; returns the manifest (test targets are null, as in test.csv)."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    vocab_sizes = {"user": n_users + FIRST, "song": n_songs + FIRST, "source_system_tab": 6, "source_screen_name": 8,
                   "source_type": 7, "city": 9, "gender": 4, "registered_via": 6, "language": 7,
                   "isrc_country": 8, "isrc_year": 10, "genre": 12, "person": 20}
    user_vec = rng.normal(size=(vocab_sizes["user"], 4))
    song_vec = rng.normal(size=(vocab_sizes["song"], 4))

    def events(n: int, labelled: bool, row_offset: int = 0) -> pd.DataFrame:
        df = pd.DataFrame({"row_id": np.arange(row_offset, row_offset + n, dtype=np.int64)})
        for col, vocab in KKBOX_CATEGORICAL.items():
            df[col] = rng.integers(1, vocab_sizes[vocab], size=n).astype(np.int32)  # 1 = OOV shows up too
        for col, vocab in KKBOX_MULTI.items():
            lens = rng.integers(1, max_multi + 1, size=n)
            df[col] = [rng.integers(1, vocab_sizes[vocab], size=k).astype(np.int32).tolist() for k in lens]
        for col in KKBOX_NUMERIC:
            df[col] = rng.normal(size=n).astype(np.float32)
        affinity = (user_vec[df.user_idx] * song_vec[df.song_idx]).sum(1) + 0.8 * (df.source_type_idx % 2) - 0.4
        target = (rng.random(n) < 1 / (1 + np.exp(-2 * affinity))).astype(np.int32)
        df["target"] = pd.array(target if labelled else [None] * n, dtype="Int32")
        return df

    train_all = events(n_train, True)
    cut = int(len(train_all) * 0.8)  # train/valid from train.csv in file order: last 20% = valid
    splits = {"train": train_all.iloc[:cut], "valid": train_all.iloc[cut:], "test": events(n_test, test_has_target)}
    id_col = {"train": None, "valid": None, "test": np.arange(n_test, dtype=np.int32)}
    schema_fields = [("row_id", pa.int64()), ("id", pa.int32()), ("target", pa.int32())]
    schema_fields += [(c, pa.int32()) for c in KKBOX_CATEGORICAL]
    schema_fields += [(c, pa.list_(pa.int32())) for c in KKBOX_MULTI]
    schema_fields += [(c, pa.float32()) for c in KKBOX_NUMERIC]
    schema = pa.schema(schema_fields)
    counts = {}
    for split, df in splits.items():
        df = df.reset_index(drop=True)
        df["id"] = pd.array(id_col[split] if id_col[split] is not None else [None] * len(df), dtype="Int32")
        table = pa.Table.from_pandas(df[[f[0] for f in schema_fields]], schema=schema, preserve_index=False)
        _write_split(table, out / split, n_files, row_group_size)
        counts[split] = len(df)
    for name, size in vocab_sizes.items():
        _write_vocab(out, name, size)
    manifest = {
        "dataset": "kkbox",
        "created_by": "musicrec 0.1.0 (tests/fakedata.py)",
        "config": {"seed": seed, "max_multi": max_multi, "shared_person_vocab": True},
        "inputs": {"fake-kkbox": {"bytes": 0, "sha256": f"seed{seed}"}},
        "row_counts": {**counts, "rejected": 0},
        "vocab_sizes": vocab_sizes,
        "features": {"categorical": dict(KKBOX_CATEGORICAL), "multi_valued": dict(KKBOX_MULTI),
                     "numeric": list(KKBOX_NUMERIC), "target": "target"},
        "splits": {"train": "train", "valid": "valid", "test": "test"},
    }
    return _write_manifest(out, manifest)
