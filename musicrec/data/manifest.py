"""The data contract on the training side (docs/DATA_CONTRACT.md): the manifest, the split folders, their Parquet
schema and the indices in them.

``read_manifest`` checks ``OUT/_MANIFEST.json`` (written last by a feature job, see ``musicrec.io.write_manifest``);
``check_columns`` checks a split folder's Parquet schema against the columns the manifest names and
``check_indices`` a column's values against its vocabulary size. Every problem is a ``DataError`` naming the folder,
file, column or key at fault.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from musicrec.columns import MANIFEST_NAME, SPLITS

DATASETS = ("lastfm", "kkbox")
_REQUIRED_KEYS = ("dataset", "fingerprint", "vocab_sizes", "features", "splits")


class DataError(ValueError):
    """The data folder, its manifest or its Parquet files do not match the data contract; the message names the path."""


def read_manifest(data_dir: str | Path) -> dict:
    """Read and check ``<data_dir>/_MANIFEST.json``; a ``DataError`` names the folder, file or key at fault."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data folder not found: {data_dir}")
    path = data_dir / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"{path}: manifest not found (the feature job writes it last; is its output complete?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON manifest: {exc}") from exc
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: the manifest must be a JSON object")
    missing = [key for key in _REQUIRED_KEYS if key not in manifest]
    if missing:
        raise DataError(f"{path}: manifest lacks key(s) {missing}")
    if manifest["dataset"] not in DATASETS:
        raise DataError(f"{path}: dataset {manifest['dataset']!r} is not one of {list(DATASETS)}")
    for split in SPLITS:
        if split not in manifest["splits"]:
            raise DataError(f"{path}: manifest 'splits' lacks {split!r}")
    return manifest


def manifest_fingerprint(manifest: Mapping[str, Any]) -> str:
    """The feature job's data fingerprint (inputs + job config), with the vocabulary sizes folded in."""
    vocab = json.dumps(manifest.get("vocab_sizes", {}), sort_keys=True)
    return hashlib.sha256(f"{manifest['fingerprint']}|{vocab}".encode()).hexdigest()[:16]


def split_dir(data_dir: str | Path, manifest: Mapping[str, Any], split: str) -> Path:
    """The Parquet folder of ``split``: ``manifest["splits"][split]`` relative to the data folder (the Last.fm job
    writes ``sessions/train``), or under ``sessions/`` for a Last.fm manifest that names only ``train``."""
    name = manifest["splits"][split]
    base = Path(data_dir).resolve()
    candidates = [base / name]
    if manifest["dataset"] == "lastfm":
        candidates.append(base / "sessions" / name)
    for path in candidates:
        if path.is_dir():
            return path
    raise DataError(f"{candidates[-1]}: folder of split {split!r} ({name!r} in {MANIFEST_NAME}) does not exist")


def parquet_schema(path: Path):
    """The Arrow schema of a Parquet folder (files starting with ``_`` or ``.`` are skipped, as Spark writes them)."""
    import pyarrow.dataset as ds

    try:
        dataset = ds.dataset(str(path), format="parquet")
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise DataError(f"{path}: cannot read the Parquet files: {exc}") from exc
    if not dataset.files:
        raise DataError(f"{path}: no Parquet files in the split folder")
    return dataset.schema


def check_columns(path: Path, expected: Mapping[str, str]) -> None:
    """Raise ``DataError`` unless the Parquet folder has every column of ``expected`` ({column: "int" | "float" |
    "array" | "timestamp"}) with a compatible type; the message names the column and the path."""
    import pyarrow as pa

    schema = parquet_schema(path)
    for col, kind in expected.items():
        if col not in schema.names:
            raise DataError(f"{path}: column {col!r} named in {MANIFEST_NAME} is missing from the Parquet schema "
                            f"(has: {schema.names})")
        typ = schema.field(col).type
        ok = {
            "int": pa.types.is_integer(typ),
            "float": pa.types.is_floating(typ) or pa.types.is_integer(typ),
            "array": (pa.types.is_list(typ) or pa.types.is_large_list(typ)) and pa.types.is_integer(typ.value_type),
            "timestamp": pa.types.is_timestamp(typ),
        }[kind]
        if not ok:
            raise DataError(f"{path}: column {col!r} has type {typ}, expected {kind} (docs/DATA_CONTRACT.md)")


def vocab_of(manifest: Mapping[str, Any], col: str, vocab: str) -> int:
    """The size of ``vocab`` (the vocabulary the manifest names for column ``col``) from ``vocab_sizes``."""
    sizes = manifest["vocab_sizes"]
    if vocab not in sizes:
        raise DataError(f"{MANIFEST_NAME}: column {col!r} uses vocab {vocab!r}, which is not in vocab_sizes {sorted(sizes)}")
    return int(sizes[vocab])


def check_indices(path: Path, col: str, values: np.ndarray, vocab_size: int) -> None:
    """Raise ``DataError`` if an index in ``values`` is negative, null or >= ``vocab_size``."""
    if values.size == 0:
        return
    if values.dtype.kind == "f" and np.isnan(values).any():
        raise DataError(f"{path}: column {col!r} has null indices (the contract maps missing values to 1 = OOV)")
    lo, hi = values.min(), values.max()
    if lo < 0 or hi >= vocab_size:
        bad = int(hi) if hi >= vocab_size else int(lo)
        raise DataError(f"{path}: column {col!r} has index {bad} outside [0, {vocab_size}) = its vocab size in "
                        f"{MANIFEST_NAME}; the data and the manifest do not belong together")


__all__ = ["DATASETS", "DataError", "check_columns", "check_indices", "manifest_fingerprint", "parquet_schema",
           "read_manifest", "split_dir", "vocab_of"]
