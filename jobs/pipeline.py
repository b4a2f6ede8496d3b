"""The main job, end to end: raw files -> Spark feature jobs -> training (Horovod or torch.distributed) -> MLflow
comparison.

    ./run.sh demo                      # generated default data (real formats), everything else default
    ./run.sh demo --lastfm DIR --kkbox DIR   # real Last.fm 1K / KKBOX files instead of generated ones
    ./run.sh demo --scale 1.0 --max-steps 200   # the real size, every training bounded to 200 steps
    ./run.sh demo --launcher torchrun  # the learned models under torchrun (torch.distributed) instead of horovodrun

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
    parser.add_argument("--np", dest="num_proc", type=int, default=2,
                        help="workers per learned model, started by --launcher (default: 2; 1 = one process)")
    parser.add_argument("--launcher", choices=pipeline.LAUNCHERS, default=pipeline.LAUNCHERS[0],
                        help="what starts a learned model's workers: horovodrun (Horovod, the default) or torchrun "
                             "(torch.distributed: gloo on CPU, NCCL on GPU)")
    parser.add_argument("--epochs", type=int, default=None, help="override every model's epoch count")
    parser.add_argument("--max-steps", type=int, default=None, metavar="N",
                        help="a step budget for every training (jobs/train.py --max-steps N, train.max_steps): each "
                             "learned model stops after N optimizer steps in all, then evaluates; for a bounded run "
                             "at the real size (--scale 1.0) on a CPU")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the project's local store)")
    parser.add_argument("--skip-train", action="store_true", help="stop after the feature jobs")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_steps is not None and args.max_steps < 0:
        parser.error(f"--max-steps must be >= 0, got {args.max_steps}")
    return pipeline.run_demo(args.workdir, args.lastfm, args.kkbox, scale=args.scale, seed=args.seed,
                             num_proc=args.num_proc, epochs=args.epochs, max_steps=args.max_steps,
                             tracking_uri=args.tracking_uri, skip_train=args.skip_train, launcher=args.launcher)


if __name__ == "__main__":
    sys.exit(main())
