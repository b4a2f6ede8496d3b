"""The job boundary, free of Spark: input files and headers, fingerprints, the atomic output folder, the manifest.

Both feature jobs check their inputs and OUT here before Spark starts (``check_output``), publish through
``AtomicOutput`` (OUT is replaced only when everything worked, and is present at every instant) and describe what
they wrote with ``write_manifest`` (docs/DATA_CONTRACT.md), which lists every file published; the training side
reads the same files back (``musicrec.data.manifest``) and refuses a split folder holding a file not listed. Nothing here imports pyspark, so the training
side can use it too; the Spark helpers for rejected rows are in ``musicrec.features.rejects``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
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
def _sha256_file(path: Path) -> str:
    return _scan_file(path, count_lines=False)[0]


def _scan_file(path: Path, *, count_lines: bool, chunk: int = 8 << 20) -> tuple[str, int]:
    """(sha256, lines) of a file in one streamed read (lines = 0 unless ``count_lines``: counting costs about as
    much as hashing). Lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r``, as Hadoop's line reader (Spark's text
    and line-by-line CSV scans) splits them; a last line without a break counts."""
    digest = hashlib.sha256()
    breaks, last = 0, b""
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
            if count_lines:
                breaks += block.count(b"\n") + block.count(b"\r") - block.count(b"\r\n")
                breaks -= last == b"\r" and block[:1] == b"\n"  # a \r\n cut between two blocks
            last = block[-1:]
    return digest.hexdigest(), (breaks + (last not in (b"", b"\n", b"\r"))) if count_lines else 0


def fingerprint_and_lines(path: Path) -> tuple[dict, int]:
    """``file_fingerprint(path)`` of a file and its number of lines (see ``_scan_file``), from one read."""
    path = Path(path)
    sha256, lines = _scan_file(path, count_lines=True)
    return {"bytes": path.stat().st_size, "sha256": sha256}, lines


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
_TMP, _OLD, _LOCK = "tmp", "old", "lock"  # .<OUT>.tmp-<token>: staging; .<OUT>.old-<token>: the previous OUT
_RENAME_EXCHANGE = 2  # renameat2(2) flag: swap two paths in one step
_AT_FDCWD = -100


def _sibling(final: Path, kind: str, token: str = "") -> Path:
    return final.parent / (f".{final.name}.{kind}-{token}" if token else f".{final.name}.{kind}")


def check_output(out_dir: str | Path) -> Path:
    """Check, before any work, that ``out_dir`` can be published: not a file, not a non-empty folder without a
    manifest, and its parent can be created and written (a probe folder is made there and removed). Returns the
    absolute path; every problem is one InputError naming OUT."""
    final = Path(os.path.abspath(out_dir))
    if final.exists() and not final.is_dir():
        raise InputError(f"output {final} exists and is not a folder")
    if final.is_dir() and any(final.iterdir()) and not (final / MANIFEST_NAME).is_file():
        raise InputError(f"output folder {final} exists and holds no {MANIFEST_NAME}: not a feature-job output, "
                         "refusing to replace it")
    ancestor = next(p for p in final.parents if p.exists())
    if not ancestor.is_dir():
        raise InputError(f"output {final}: cannot write there ({ancestor} is not a folder)")
    probe = _sibling(final, "probe", uuid.uuid4().hex[:12])
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise InputError(f"output {final}: cannot write there ({exc.strerror or exc})") from None
    return final


def _exchange(a: Path, b: Path) -> bool:
    """Swap the folders ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``: at no instant is either
    path missing); False where the system or the file system cannot (then nothing changed)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


class AtomicOutput:
    """Context manager that builds an output folder ``OUT`` next to it and swaps it in only on success.

    Entering takes the lock ``<parent>/.<name>.lock`` (another job writing the same OUT is an InputError), repairs
    what a killed earlier job left (``recover``) and makes the staging folder ``<parent>/.<name>.tmp-<token>``
    (``.path(rel)`` gives absolute paths for ``df.write``). On a clean exit the manifest (``write_manifest``) gets
    the listing of every file in the staging folder and is written last; then the staging folder and an existing
    ``OUT`` are exchanged in one ``renameat2(RENAME_EXCHANGE)`` (OUT is present at every instant) and the old one is
    deleted. Where the file system cannot exchange (not Linux, some network file systems), OUT is first renamed to
    ``.<name>.old-<token>``; a crash before the second rename leaves that folder, which the next run (or
    ``recover``) renames back. On an exception the staging folder is deleted and ``OUT`` is untouched. OUT must be
    on a file system shared by the driver and the executors (local disk for ``local[*]`` or a loopback cluster, NFS
    for a real one). An existing non-empty ``OUT`` without ``_MANIFEST.json`` is not a job output: entering raises
    InputError rather than replacing it.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.final = Path(os.path.abspath(out_dir))
        token = uuid.uuid4().hex[:12]
        self.staging = _sibling(self.final, _TMP, token)
        self._old = _sibling(self.final, _OLD, token)
        self._lock = _sibling(self.final, _LOCK)
        self._lock_fd: int | None = None
        self.manifest: dict | None = None

    def __enter__(self) -> "AtomicOutput":
        check_output(self.final)
        self._acquire()
        try:
            recover(self.final)
            self.staging.mkdir()
        except OSError as exc:
            self._release()
            raise InputError(f"output {self.final}: cannot write there ({exc.strerror or exc})") from None
        except BaseException:
            self._release()
            raise
        return self

    def path(self, rel: str = "") -> str:
        """Absolute path (string, for ``df.write``) of ``rel`` inside the staging folder."""
        return str(self.staging / rel) if rel else str(self.staging)

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is not None:
                shutil.rmtree(self.staging, ignore_errors=True)
                return False
            try:
                if self.manifest is not None:
                    self.manifest["files"] = file_listing(self.staging)
                    (self.staging / MANIFEST_NAME).write_text(
                        json.dumps(self.manifest, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8"
                    )
                self._publish()
            except BaseException:
                shutil.rmtree(self.staging, ignore_errors=True)
                raise
            return False
        finally:
            self._release()

    def _publish(self) -> None:
        """The staging folder becomes OUT; the previous OUT (if any) is deleted afterwards."""
        if not self.final.exists():
            os.rename(self.staging, self.final)
            return
        if _exchange(self.staging, self.final):
            shutil.rmtree(self.staging, ignore_errors=True)  # holds the previous OUT now
            return
        os.rename(self.final, self._old)  # recoverable: recover() renames it back if we die before the next line
        try:
            os.rename(self.staging, self.final)
        except OSError:
            os.rename(self._old, self.final)
            raise
        shutil.rmtree(self._old, ignore_errors=True)

    def _acquire(self) -> None:
        """Hold an exclusive ``flock`` on ``.<name>.lock`` (created here, deleted by ``_release``)."""
        while True:
            fd = os.open(self._lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise InputError(f"output {self.final} is being written by another job (it holds {self._lock}); "
                                 "wait for it or choose another --output") from None
            try:
                same = os.stat(self._lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # else the previous holder deleted the file between our open and our lock: take the new one
                self._lock_fd = fd
                return
            os.close(fd)

    def _release(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._lock)
            os.close(self._lock_fd)
            self._lock_fd = None


def recover(final: str | Path) -> list[str]:
    """Repair what killed jobs left beside ``final`` (call it holding the output lock): when OUT is missing, the
    newest complete ``.<name>.old-*`` (it holds a manifest) is renamed back to OUT; every other ``.old-*`` and
    every ``.tmp-*`` staging folder is deleted. Returns one line per action (also printed)."""
    final = Path(final)
    actions: list[str] = []
    olds = sorted(final.parent.glob(f".{final.name}.{_OLD}-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not final.exists():
        complete = [p for p in olds if (p / MANIFEST_NAME).is_file()]
        if complete:
            os.rename(complete[0], final)
            olds.remove(complete[0])
            actions.append(f"restored {final} from {complete[0].name} (a job was killed while publishing)")
    leftovers = olds + sorted(final.parent.glob(f".{final.name}.{_TMP}-*"))
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
        actions.append(f"removed {path.name} (left by a killed job)")
    for line in actions:
        print(f"[output] {line}", flush=True)
    return actions


def file_listing(root: str | Path) -> dict[str, dict]:
    """``{relative path: {"bytes", "sha256"}}`` of every file under ``root`` except the manifest (hidden and
    ``_`` files too): what ``_MANIFEST.json`` lists as ``files`` and the reader checks a split folder against."""
    root = Path(root)
    return {
        path.relative_to(root).as_posix(): {"bytes": path.stat().st_size, "sha256": _sha256_file(path)}
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.relative_to(root).as_posix() != MANIFEST_NAME
    }


def check_nonempty_splits(rows: dict[str, int], *, required: list[str], what: str, hint: str) -> None:
    """InputError when a split of ``required`` has no rows: a job never publishes (and so never replaces a good
    OUT with) an empty split that its config asks to fill. ``hint`` says where the rows went."""
    for split in required:
        if not rows.get(split):
            raise InputError(f"split {split!r} would have no {what} ({hint}): refusing to publish an empty split, "
                             "the output folder is left as it was")


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
    """Build the ``_MANIFEST.json`` dict (docs/DATA_CONTRACT.md) and hand it to ``out``, which adds ``files`` (the
    listing of every file it publishes: ``file_listing``) and writes it last.

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
