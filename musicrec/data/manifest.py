"""The data contract on the training side (docs/DATA_CONTRACT.md): the manifest, the split folders, their Parquet
schema and the indices in them.

``read_manifest`` checks ``OUT/_MANIFEST.json`` (written last by a feature job, see ``musicrec.io.write_manifest``)
and every split folder against the manifest's ``files`` listing (``check_split_files``): a file the job did not
write (say a planted ``_common_metadata``, which Petastorm would unpickle) or one whose size changed is refused
before anything reads it. ``data_files`` names the Parquet files of a split, the only files the reader opens;
``check_columns`` checks a split folder's Parquet schema against the columns the manifest names and
``check_indices`` a column's values against its vocabulary size. Every problem is a ``DataError`` naming the folder,
file, column or key at fault.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from musicrec.columns import MANIFEST_NAME, SPLITS

DATASETS = ("lastfm", "kkbox")
_REQUIRED_KEYS = ("dataset", "fingerprint", "vocab_sizes", "features", "splits")


class DataError(ValueError):
    """The data folder, its manifest or its Parquet files do not match the data contract; the message names the path."""


def read_manifest(data_dir: str | Path) -> dict:
    """Read and check ``<data_dir>/_MANIFEST.json`` and the files of its split folders (``check_split_files``); a
    ``DataError`` names the folder, file or key at fault."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        olds = sorted(data_dir.parent.glob(f".{data_dir.name}.old-*"))
        hint = (f" ({olds[-1].name} beside it is its previous version, left by a feature job killed while "
                "publishing: rerun the job, which restores or replaces it)") if olds else ""
        raise DataError(f"data folder not found: {data_dir}{hint}")
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
    check_split_files(data_dir, manifest)
    return manifest


_WARNED_UNLISTED: set[Path] = set()  # data folders whose missing listing was reported (once per process)


def _listing(data_dir: Path, manifest: Mapping[str, Any]) -> dict[str, int] | None:
    """``{relative path: bytes}`` from the manifest's ``files`` (None for a manifest written before it existed)."""
    files = manifest.get("files")
    if files is None:
        return None
    if not isinstance(files, dict) or not all(isinstance(v, dict) and isinstance(v.get("bytes"), int)
                                              for v in files.values()):
        raise DataError(f"{data_dir / MANIFEST_NAME}: 'files' must map each path to {{\"bytes\": ..., \"sha256\": ...}}")
    return {name: entry["bytes"] for name, entry in files.items()}


def check_split_files(data_dir: str | Path, manifest: Mapping[str, Any]) -> None:
    """Every file in every split folder must be listed in the manifest's ``files`` with the size listed there, and
    every listed file of a split must exist; a Parquet summary file (``_metadata``, ``_common_metadata``: the feature
    jobs never write one, and Petastorm unpickles what it finds in them) is refused even when listed.

    A manifest without ``files`` (written before the listing existed) is read with a one-line warning: its folders
    cannot be checked for planted files, but the reader still opens only ``data_files`` and never a summary file.
    """
    base = Path(data_dir).resolve()
    listing = _listing(base, manifest)
    for split in SPLITS:
        folder = split_dir(base, manifest, split)
        present = sorted(p for p in folder.rglob("*") if p.is_file())
        for file in present:
            rel = file.relative_to(base).as_posix()
            if listing is not None and rel not in listing:
                raise DataError(f"{file}: not listed in {MANIFEST_NAME} (the feature job did not write it): remove it "
                                "or rerun the feature job")
            if file.name.endswith("_metadata"):
                raise DataError(f"{file}: a Parquet summary file in a split folder (the feature jobs never write one, "
                                "and Petastorm would unpickle it, which can run code): remove it")
            if listing is not None and file.stat().st_size != listing[rel]:
                raise DataError(f"{file}: {file.stat().st_size} bytes, {MANIFEST_NAME} lists {listing[rel]} (changed "
                                "or truncated since the feature job wrote it): rerun the feature job")
        if listing is None:
            continue
        prefix = folder.relative_to(base).as_posix() + "/"
        missing = sorted(set(n for n in listing if n.startswith(prefix)) - {p.relative_to(base).as_posix() for p in present})
        if missing:
            raise DataError(f"{base / missing[0]}: listed in {MANIFEST_NAME} but missing: rerun the feature job")
    if listing is None and base not in _WARNED_UNLISTED:
        _WARNED_UNLISTED.add(base)
        print(f"warning: {base / MANIFEST_NAME} has no 'files' listing (written before musicrec listed its files): "
              "its split folders are not checked for files the feature job did not write; rerun the feature job to "
              "add it", file=sys.stderr, flush=True)


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


def data_files(path: Path) -> list[Path]:
    """The data files of a split folder in name order: what the reader opens, nothing else. Names starting with
    ``_`` or ``.`` and ``*.crc`` checksums are skipped, like pyarrow's folder reader, which Petastorm used: so the
    files, and the row groups' order, are the ones it read from the folder (without its summary files)."""
    return sorted(p for p in Path(path).iterdir()
                  if p.is_file() and not p.name.startswith(("_", ".")) and not p.name.endswith(".crc"))


def parquet_schema(path: Path):
    """The Arrow schema of a Parquet split folder (its ``data_files``); every file's footer is read, so a truncated
    or foreign file is a ``DataError`` naming it."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    files = data_files(path)
    if not files:
        raise DataError(f"{path}: no Parquet files in the split folder")
    for file in files:
        try:
            pq.read_metadata(file)
        except Exception as exc:  # pyarrow raises several types for unreadable files
            raise DataError(f"{file}: not a readable Parquet file ({exc}): rerun the feature job") from None
    return ds.dataset([str(f) for f in files], format="parquet").schema


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


__all__ = ["DATASETS", "DataError", "check_columns", "check_indices", "check_split_files", "data_files",
           "manifest_fingerprint", "parquet_schema", "read_manifest", "split_dir", "vocab_of"]
