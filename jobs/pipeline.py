"""The main job, end to end: raw files -> Spark feature jobs -> training (Horovod) -> MLflow comparison.

    ./run.sh demo                      # generated default data (real formats), everything else default
    ./run.sh demo --lastfm DIR --kkbox DIR   # real Last.fm 1K / KKBOX files instead of generated ones

Every stage is a separate command (the same ones a user runs by hand, printed as they run), and each stage
records what it was run on in a small ``.stamp.json``; a second run reuses every stage whose inputs and settings
are unchanged instead of redoing it. The stages are ``musicrec.pipeline``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from musicrec import pipeline


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.sh demo",
        description="Run the whole pipeline: data -> Spark features -> training -> MLflow comparison.",
    )
    parser.add_argument("--lastfm", type=Path, help="folder with the real Last.fm 1K files (default: generated)")
    parser.add_argument("--kkbox", type=Path, help="folder with the real KKBOX files (default: generated)")
    parser.add_argument("--workdir", type=Path, default=pipeline.REPO / "work", help="where data and features go (default: work/)")
    parser.add_argument("--scale", type=float, default=None, help="generated data scale (default: the generator's small default)")
    parser.add_argument("--seed", type=int, default=7, help="seed for generated data and training (default: 7)")
    parser.add_argument("--np", dest="num_proc", type=int, default=2, help="horovodrun processes per learned model (default: 2)")
    parser.add_argument("--epochs", type=int, default=None, help="override every model's epoch count")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the project's local store)")
    parser.add_argument("--skip-train", action="store_true", help="stop after the feature jobs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return pipeline.run_demo(args.workdir, args.lastfm, args.kkbox, scale=args.scale, seed=args.seed,
                             num_proc=args.num_proc, epochs=args.epochs, tracking_uri=args.tracking_uri,
                             skip_train=args.skip_train)


if __name__ == "__main__":
    sys.exit(main())
