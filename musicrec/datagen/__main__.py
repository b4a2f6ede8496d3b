"""Command line: ``python -m musicrec.datagen {lastfm,kkbox} --out DIR [--scale S] [--seed N] [--quiet]``.

Bad arguments (unknown dataset, scale not in (0, 10], unusable output directory) print one ``error:`` line on stderr
and exit with status 2; a failure while writing (disk full, ...) prints one line and exits with status 1; Ctrl-C
exits with 130. A file is only renamed from ``NAME.tmp`` to ``NAME`` once complete, so no half-written file remains.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import NoReturn, Sequence

from musicrec.datagen import DATASETS, MAX_SCALE, DatagenError, check_scale

PROG = "python -m musicrec.datagen"

EPILOG = """\
scale (fraction of the real dataset's size):
  lastfm  rows = round(19,098,853 x S), users = max(30, round(992 x sqrt(S))), tracks = max(3,000, 960,000 x S).
          Default S = 0.003: 57,297 rows, 54 users (about 1 s). S = 1.0: the real 19,098,853 rows and 992 users.
  kkbox   train/test/songs/members = round(7,377,418 / 2,556,790 / 2,296,320 / 34,403 x S) (with small minimums).
          Default S = 0.007: 51,642 train, 17,898 test rows, 16,074 songs, 241 members. S = 1.0: the real sizes.

files written (each via NAME.tmp, renamed when complete):
  lastfm  userid-timestamp-artid-artname-traid-traname.tsv, userid-profile.tsv, track-tags.tsv
  kkbox   train.csv, test.csv, songs.csv, members.csv, song_extra_info.csv

The same dataset, scale and seed always give byte-identical files.
"""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _scale(text: str) -> float:
    """argparse type for --scale: a finite number in (0, MAX_SCALE]."""
    try:
        return check_scale(float(text))
    except (ValueError, DatagenError):
        raise argparse.ArgumentTypeError(f"must be a number > 0 and <= {MAX_SCALE:g}, got {text!r}") from None


def _seed(text: str) -> int:
    """argparse type for --seed: an integer in [0, 2**63)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**63), got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = _Parser(
        prog=PROG,
        description="Write seeded synthetic data in the exact real formats of Last.fm 1K or KKBOX WSDM 2018.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", choices=DATASETS, help="which dataset's files to write")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    parser.add_argument("--scale", type=_scale, default=None, metavar="S",
                        help=f"fraction of the real size, 0 < S <= {MAX_SCALE:g} (default: lastfm 0.003, kkbox 0.007)")
    parser.add_argument("--seed", type=_seed, default=0, metavar="N", help="random seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress or summary lines on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, generate the dataset, print a summary on stderr; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.dataset == "lastfm":
        from musicrec.datagen import lastfm as module
    else:
        from musicrec.datagen import kkbox as module
    scale = module.DEFAULT_SCALE if args.scale is None else args.scale
    start = time.perf_counter()
    try:
        reports = module.generate(args.out, scale=scale, seed=args.seed, progress=not args.quiet)
    except DatagenError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, MemoryError) as exc:
        print(f"{PROG}: failed while writing {args.dataset} into {args.out!r}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; files not finished were removed", file=sys.stderr)
        return 130
    if not args.quiet:
        for report in reports:
            print(f"[datagen] {report.line()}", file=sys.stderr)
        print(f"[datagen] {args.dataset} scale={scale:g} seed={args.seed}: {time.perf_counter() - start:.1f} s "
              f"-> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
