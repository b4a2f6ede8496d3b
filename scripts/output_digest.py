"""A content digest of a feature-job output folder, to check that two runs (or two versions of a job) wrote the same.

    python scripts/output_digest.py OUT [--json digest.json]          # print (and save) the digest
    python scripts/output_digest.py OUT --compare digest.json         # exit 1 and name every difference
    python scripts/output_digest.py OUT --fast ...                    # the tables hashed by DuckDB (full size)

Per Parquet table (every folder holding ``*.parquet`` files): row count, schema and the sha256 of its rows, each row
as canonical JSON and the rows sorted, so the digest does not depend on file names, row-group layout or the order
Spark wrote the rows in (pure Python: about 15 minutes for a full-size Last.fm output). ``--fast`` hashes each table
with DuckDB instead: row count and the sum of its rows' 64-bit hashes (also order-free; seconds at full size; a
``--fast`` digest compares only with another ``--fast`` one). ``stats.json`` and ``stats.md`` are hashed whole;
``_MANIFEST.json`` is hashed with its time-dependent keys left out (``TIME_KEYS``). Used by the structural redesign
and the speed work (issues 11, 16): outputs before and after must be identical.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sys
from pathlib import Path

TIME_KEYS = ("created_at", "seconds", "started", "finished")  # manifest keys whose values change between runs


def _canonical(value):
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def table_digest(folder: Path) -> dict:
    """Rows, schema and sorted-row sha256 of one Parquet folder."""
    import pyarrow.parquet as pq

    files = sorted(p for p in folder.glob("*.parquet"))
    rows: list[str] = []
    schema = None
    for path in files:
        table = pq.read_table(path)
        schema = schema or [f"{f.name}:{f.type}" for f in table.schema]
        rows += [json.dumps(_canonical(r), sort_keys=True, default=str) for r in table.to_pylist()]
    rows.sort()
    digest = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    return {"rows": len(rows), "schema": schema, "sha256": digest}


def table_digest_fast(folder: Path) -> dict:
    """Rows, schema and the sum of the rows' DuckDB hashes of one Parquet folder (order-free, like ``table_digest``)."""
    import duckdb

    relation = duckdb.connect().read_parquet(str(folder / "*.parquet"))
    schema = [f"{name}:{kind}" for name, kind in zip(relation.columns, relation.types)]
    [(rows, hash_sum)] = relation.query("t", "SELECT count(*), sum(hash(t))::VARCHAR FROM t").fetchall()
    return {"rows": int(rows), "schema": schema, "hash_sum": hash_sum}


def manifest_digest(path: Path) -> str:
    manifest = json.loads(path.read_text(encoding="utf-8"))

    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in TIME_KEYS}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return hashlib.sha256(json.dumps(strip(manifest), sort_keys=True).encode()).hexdigest()


def folder_digest(out: Path, *, fast: bool = False) -> dict:
    out = Path(out)
    digest: dict[str, object] = {}
    for folder in sorted({p.parent for p in out.rglob("*.parquet")}):
        digest[f"table:{folder.relative_to(out).as_posix()}"] = (table_digest_fast if fast else table_digest)(folder)
    for name in ("stats.json", "stats.md"):
        if (out / name).is_file():
            digest[f"file:{name}"] = hashlib.sha256((out / name).read_bytes()).hexdigest()
    if (out / "_MANIFEST.json").is_file():
        digest["file:_MANIFEST.json (minus times)"] = manifest_digest(out / "_MANIFEST.json")
    return digest


def differences(before: dict, after: dict) -> list[str]:
    lines = []
    for key in sorted(set(before) | set(after)):
        if key not in after:
            lines.append(f"{key}: missing now")
        elif key not in before:
            lines.append(f"{key}: new")
        elif before[key] != after[key]:
            lines.append(f"{key}: {before[key]} -> {after[key]}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="a feature-job output folder")
    parser.add_argument("--json", type=Path, help="write the digest to this file")
    parser.add_argument("--compare", type=Path, help="a digest written earlier: exit 1 when they differ")
    parser.add_argument("--fast", action="store_true", help="hash the tables with DuckDB (seconds at full size)")
    args = parser.parse_args(argv)
    if not (args.out / "_MANIFEST.json").is_file():
        print(f"output_digest.py: error: {args.out} holds no _MANIFEST.json", file=sys.stderr)
        return 2
    digest = folder_digest(args.out, fast=args.fast)
    if args.json:
        args.json.write_text(json.dumps(digest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    if args.compare:
        diff = differences(json.loads(args.compare.read_text(encoding="utf-8")), digest)
        print("\n".join(diff) if diff else f"identical: {len(digest)} entries")
        return 1 if diff else 0
    print(json.dumps(digest, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
