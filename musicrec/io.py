"""The job boundary, free of Spark: input files and headers, fingerprints, the atomic output folder, the manifest.

Both feature jobs check their inputs here before Spark starts, publish through ``AtomicOutput`` (OUT is replaced
only when everything worked) and describe what they wrote with ``write_manifest`` (docs/DATA_CONTRACT.md); the
training side reads the same files back (``musicrec.data.manifest``). Nothing here imports pyspark, so the training
side can use it too; the Spark helpers for rejected rows are in ``musicrec.features.rejects``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable

from musicrec import __version__
from musicrec.columns import MANIFEST_NAME


class InputError(Exception):
    """Unusable input (missing folder/file, empty file, missing column, malformed lines); the message names the file
    and the line or column. The jobs print it and exit with status 2."""


# ---------------------------------------------------------------------------------------------------------------
# Input files and headers
# ---------------------------------------------------------------------------------------------------------------
def require_files(input_dir: Path, names: list[str], *, optional: Iterable[str] = ()) -> dict[str, Path]:
    """Return ``{name: path}`` for the files ``names`` in ``input_dir``; a missing folder or file is an InputError.

    Names in ``optional`` are returned only when present (a missing optional file is not an error).
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(f"input folder {input_dir} not found")
    found: dict[str, Path] = {}
    for name in names:
        path = input_dir / name
        if not path.is_file():
            raise InputError(f"file {path} not found (expected in input folder {input_dir})")
        found[name] = path
    for name in optional:
        path = input_dir / name
        if path.is_file():
            found[name] = path
    return found


def require_nonempty(path: Path) -> None:
    """Raise InputError "file X is empty" when ``path`` has no bytes (or only blank lines in its first 64 KiB)."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise InputError(f"file {path} is empty")
    with open(path, "rb") as handle:
        head = handle.read(65536)
    if len(head) < 65536 and not head.strip():
        raise InputError(f"file {path} is empty (only blank lines)")


def first_line(path: Path) -> str:
    """The first line of ``path`` as text, without its line break and a leading byte-order mark ("" when empty)."""
    with open(path, "r", encoding="utf-8", errors="replace", newline="") as handle:
        return handle.readline().lstrip("\ufeff").rstrip("\r\n")


def read_header(path: Path, sep: str) -> list[str]:
    """The column names of the first line of ``path`` (each stripped of spaces and quotes), in file order."""
    return [name.strip().strip('"') for name in first_line(path).split(sep)]


def check_header(path: Path, expected: list[str], sep: str) -> None:
    """Check that the first line of ``path`` (read with plain Python, nothing else) names every expected column.

    Empty file -> InputError "file X is empty"; a missing column -> InputError
    "file X: missing column 'c' (header has a, b, ...)". Extra columns and column order are allowed.
    """
    path = Path(path)
    if not first_line(path).strip():
        raise InputError(f"file {path} is empty" if path.stat().st_size == 0 else
                         f"file {path} line 1: empty header line")
    header = read_header(path, sep)
    for name in expected:
        if name not in header:
            raise InputError(f"file {path}: missing column {name!r} (header has {', '.join(header)})")


# ---------------------------------------------------------------------------------------------------------------
# Fingerprints, Parquet row counts
# ---------------------------------------------------------------------------------------------------------------
def _sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path: Path) -> dict:
    """``{"bytes", "sha256"}`` of a file (streamed); for a folder, over its files in name order (hidden and
    ``_``-prefixed names skipped) with ``"files"`` = how many."""
    path = Path(path)
    if path.is_file():
        return {"bytes": path.stat().st_size, "sha256": _sha256_file(path)}
    if not path.is_dir():
        raise InputError(f"file {path} not found")
    digest = hashlib.sha256()
    total = 0
    files = 0
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = child.relative_to(path).as_posix()
        if any(part.startswith((".", "_")) for part in rel.split("/")):
            continue
        size = child.stat().st_size
        digest.update(f"{rel}\0{size}\0{_sha256_file(child)}\n".encode())
        total += size
        files += 1
    return {"bytes": total, "sha256": digest.hexdigest(), "files": files}


def parquet_rows(path: str | Path) -> int:
    """Rows of a Parquet folder from its file footers (pyarrow, no Spark job; the folder is on a local or shared
    file system the driver sees, as ``AtomicOutput`` requires)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in sorted(Path(path).glob("*.parquet")))



# ---------------------------------------------------------------------------------------------------------------
# Atomic output and manifest
# ---------------------------------------------------------------------------------------------------------------
class AtomicOutput:
    """Context manager that builds an output folder ``OUT`` next to it and swaps it in only on success.

    Writes go to a staging folder ``<parent>/.<name>.tmp-<uuid>`` (``.path(rel)`` gives absolute paths for
    ``df.write``). On a clean exit the manifest (``write_manifest``) is written last, an existing ``OUT`` is moved
    aside, the staging folder is renamed to ``OUT`` and the old one deleted. On an exception the staging folder is
    deleted and ``OUT`` is untouched. OUT must be on a file system shared by the driver and the executors (local
    disk for ``local[*]`` or a loopback cluster, NFS for a real one).

    An existing non-empty ``OUT`` without ``_MANIFEST.json`` is not a job output: entering raises InputError
    rather than replacing it.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.final = Path(os.path.abspath(out_dir))
        token = uuid.uuid4().hex[:12]
        self.staging = self.final.parent / f".{self.final.name}.tmp-{token}"
        self._old = self.final.parent / f".{self.final.name}.old-{token}"
        self.manifest: dict | None = None

    def __enter__(self) -> "AtomicOutput":
        if self.final.exists():
            if not self.final.is_dir():
                raise InputError(f"output {self.final} exists and is not a folder")
            if any(self.final.iterdir()) and not (self.final / MANIFEST_NAME).is_file():
                raise InputError(
                    f"output folder {self.final} exists and holds no {MANIFEST_NAME}: not a feature-job output, "
                    "refusing to replace it"
                )
        self.staging.mkdir(parents=True)
        return self

    def path(self, rel: str = "") -> str:
        """Absolute path (string, for ``df.write``) of ``rel`` inside the staging folder."""
        return str(self.staging / rel) if rel else str(self.staging)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            return False
        try:
            if self.manifest is not None:
                (self.staging / MANIFEST_NAME).write_text(
                    json.dumps(self.manifest, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8"
                )
            moved_old = False
            if self.final.exists():
                os.rename(self.final, self._old)
                moved_old = True
            try:
                os.rename(self.staging, self.final)
            except OSError:
                if moved_old:
                    os.rename(self._old, self.final)
                raise
            if moved_old:
                shutil.rmtree(self._old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(self.staging, ignore_errors=True)
            raise
        return False


def config_fingerprint(inputs: dict, config: dict) -> str:
    """sha256 over the input fingerprints and the resolved config (canonical JSON)."""
    payload = json.dumps({"inputs": inputs, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def write_manifest(
    out: AtomicOutput,
    *,
    dataset: str,
    config: dict,
    inputs: dict,
    row_counts: dict,
    vocab_sizes: dict,
    features: dict,
    extra: dict | None = None,
    splits: dict | None = None,
) -> dict:
    """Build the ``_MANIFEST.json`` dict (docs/DATA_CONTRACT.md) and hand it to ``out``, which writes it last.

    ``splits`` maps split name -> folder relative to OUT (default ``{"train": "train", ...}``); ``extra`` keys are
    added at the top level (e.g. ``top_k_tags``). Returns the manifest.
    """
    manifest = {
        "dataset": dataset,
        "created_by": f"musicrec {__version__}",
        "config": config,
        "inputs": inputs,
        "fingerprint": config_fingerprint(inputs, config),
        "row_counts": {key: int(value) for key, value in row_counts.items()},
        "vocab_sizes": {key: int(value) for key, value in vocab_sizes.items()},
        "features": features,
        "splits": splits if splits is not None else {"train": "train", "valid": "valid", "test": "test"},
    }
    manifest.update(extra or {})
    out.manifest = manifest
    return manifest
