"""What a minimum song count does to a Last.fm feature output: songs kept, plays mapped to OOV, sessions and
evaluation examples that lose their in-vocabulary targets, for several cut-offs, from ONE job output made with
``vocab.song_min_count: 1`` (issue 12: the default cut-off is chosen from these figures).

    .venv/bin/python benchmarks/vocab_cutoffs.py OUT [--min-counts 1 2 3 5 10] [--record]

A song seen fewer than k times (its ``count`` in ``OUT/vocab/song/``: plays after the tag policy) would be out of
the vocabulary with ``song_min_count = k``: its plays become index 1 (OOV) and it can never be recommended. The
job does not drop sessions for that, but a session with fewer than 2 in-vocabulary songs gives no training example
with a real song on both sides, and a prefix whose next song is OOV is an evaluation example no model can hit.
Everything is read with pyarrow (no Spark): the vocabulary and the session tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

from measure import append_record  # a sibling of this script

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "RESULTS_scale.md"


def song_counts(out: Path) -> np.ndarray:
    """count by vocab index (0 and 1 = 0)."""
    table = ds.dataset(str(out / "vocab" / "song"), format="parquet").to_table(columns=["index", "count"])
    index = table.column("index").to_numpy()
    counts = np.zeros(int(index.max()) + 1 if index.size else 2, dtype=np.int64)
    counts[index] = table.column("count").to_numpy()
    return counts


def cutoff_table(out: Path, min_counts: list[int]) -> list[dict]:
    manifest = json.loads((out / "_MANIFEST.json").read_text())
    if int(manifest["config"]["vocab"]["song_min_count"]) != 1:
        raise SystemExit(f"{out}: made with vocab.song_min_count={manifest['config']['vocab']['song_min_count']}, "
                         "need 1 (every song in the vocabulary)")
    counts = song_counts(out)
    songs_by_split = {}
    for split, folder in manifest["splits"].items():
        column = ds.dataset(str(out / folder), format="parquet").to_table(columns=["songs"]).column("songs")
        column = column.combine_chunks()
        songs_by_split[split] = (column.flatten().to_numpy().astype(np.int64), column.offsets.to_numpy())
    total_plays = int(counts.sum())
    rows = []
    for k in min_counts:
        in_vocab = counts >= k  # by index
        row = {"min_count": k, "songs_kept": int(in_vocab[2:].sum()), "songs_all": int((counts[2:] > 0).sum()),
               "plays_to_oov": int(counts[~in_vocab].sum()), "plays": total_plays}
        for split, (values, offsets) in songs_by_split.items():
            ok = in_vocab[values]
            per_session = np.add.reduceat(ok.astype(np.int64), offsets[:-1]) if values.size else np.zeros(0)
            starts = np.zeros(values.size, dtype=bool)
            starts[offsets[:-1][offsets[:-1] < values.size]] = True
            targets = ~starts  # every position after the first is a next-song target
            row[f"{split}_sessions"] = int(offsets.size - 1)
            row[f"{split}_sessions_lost"] = int((per_session < 2).sum())
            row[f"{split}_targets"] = int(targets.sum())
            row[f"{split}_oov_targets"] = int((targets & ~ok).sum())
        rows.append(row)
    return rows


def markdown(out: Path, rows: list[dict], seconds: float) -> str:
    pct = lambda a, b: f"{a:,} ({100 * a / b:.2f}%)" if b else "0"  # noqa: E731
    lines = [f"### Song vocabulary cut-offs on {out} ({time.strftime('%Y-%m-%d')})", "",
             f"Command: `.venv/bin/python benchmarks/vocab_cutoffs.py {out}` ({seconds:.0f} s, pyarrow only).", "",
             "| min count | songs kept (of seen) | plays -> OOV | train sessions with < 2 in-vocab songs | "
             "test next-song targets that are OOV |", "|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['min_count']} | {pct(r['songs_kept'], r['songs_all'])} | {pct(r['plays_to_oov'], r['plays'])} | "
                     f"{pct(r['train_sessions_lost'], r['train_sessions'])} | {pct(r['test_oov_targets'], r['test_targets'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="a Last.fm feature-job output made with vocab.song_min_count=1")
    parser.add_argument("--min-counts", type=int, nargs="+", default=[1, 2, 3, 5, 10])
    parser.add_argument("--record", action="store_true", help=f"append the table to {RESULTS.relative_to(REPO)}")
    args = parser.parse_args(argv)
    started = time.time()
    rows = cutoff_table(args.out, args.min_counts)
    text = markdown(args.out, rows, time.time() - started)
    print(text)
    print(json.dumps(rows, indent=1))
    if args.record:
        append_record(RESULTS, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
