"""Training throughput per model on CPU, fed by the Petastorm loader and by the same batches preloaded in memory.

    .venv/bin/python benchmarks/bench_training.py [--work DIR] [--lastfm OUT] [--kkbox OUT] [--cases gru,ncf,...]
                                                  [--epochs 2] [--repeats 3] [--max-steps N] [--threads N]
                                                  [--record] [--note TEXT]

Data: the feature jobs' output for the default-scale generated data. Without ``--lastfm``/``--kkbox`` the script
makes it under ``--work`` (default ``/tmp/musicrec-bench``), reusing what is already there:
``python -m musicrec.datagen lastfm|kkbox --out WORK/raw-<dataset>`` then
``./spark-submit.sh jobs/features.py lastfm|kkbox --input WORK/raw-<dataset> --output WORK/<dataset>``.

Cases (``--cases``): ``gru`` (Last.fm next song), ``ncf`` (KKBOX rows), ``ncf-lastfm`` (Last.fm pairs with sampled
negatives), ``dnn`` and ``logreg`` (KKBOX rows); each with its ``conf/<model>.yaml`` (data and train sections, model
section as is), ``--epochs`` epochs, early stopping off.

What it measures, per case and repeat, in this one process (so the two sides see the same machine load):

* ``loader``: ``musicrec.train.fit`` with ``Data.train_loader`` (Petastorm reading, prefix expansion, shuffle
  buffer, collation, tensors), i.e. the real training path;
* ``memory``: the same ``fit`` from the same initial weights over the very same batches, read beforehand into a list
  of tensors (``--epochs`` epochs of them), so nothing but the loader differs. The final weights of the two runs are
  compared (they must be equal: same batches, same seeds).

Throughput is ``fit``'s own ``samples_per_s`` (training examples / seconds of the training loop of an epoch, i.e.
without the per-epoch validation, which here is only the first ``--eval-batches`` validation batches). In-memory: the
mean over a run's epochs. Loader: epoch 1 (a fresh ``Data`` per run: Petastorm reads and decodes everything) and the
mean of epochs 2+ (the split replayed from the in-memory cache when it fits ``data.cache_mb``). Throughputs are the
median over ``--repeats`` loader / memory run pairs, run back to back in the order loader, memory, memory, loader,
... (so a steady drift of the machine's load cancels). ``loader cost`` = 1 - loader / in-memory: the share of
throughput the loader takes (goal: at most 20%), computed per pair and reported as the median of the pairs (the two
runs of a pair see about the same load; medians taken separately of each side would not). The same ratio is also
given per CPU second of the process (examples / ``time.process_time()`` over the whole ``fit`` call, all epochs, all
threads): less sensitive to other processes' load, and it counts the loader's background threads in full.

``loader alone``: the same ``train_loader`` epochs iterated without training (a fresh ``Data``: epoch 1 reads and
decodes, epoch 2 replays the cache), examples per second of wall and of process CPU: what the loader would cost if
nothing overlapped it. ``--record`` appends the tables, the command and the load to benchmarks/RESULTS_training.md.

``--threads`` overrides ``train.num_threads`` (0 = PyTorch's default). Prints a markdown table on stdout; progress on
stderr. Results and the machine's load: benchmarks/RESULTS_training.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from measure import cpu_model  # a sibling of this script

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "RESULTS_training.md"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# case -> (model, dataset)
CASES = {
    "gru": ("gru", "lastfm"),
    "ncf": ("ncf", "kkbox"),
    "ncf-lastfm": ("ncf", "lastfm"),
    "dnn": ("dnn", "kkbox"),
    "logreg": ("logreg", "kkbox"),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/musicrec-bench"),
                        help="where generated raw data and feature outputs go (reused when present)")
    parser.add_argument("--lastfm", type=Path, default=None, help="an existing Last.fm feature output (skips making one)")
    parser.add_argument("--kkbox", type=Path, default=None, help="an existing KKBOX feature output (skips making one)")
    parser.add_argument("--cases", default="gru,ncf,ncf-lastfm,dnn,logreg", help=f"comma list of {sorted(CASES)}")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run")
    parser.add_argument("--repeats", type=int, default=3, help="loader/memory run pairs per case; medians are reported")
    parser.add_argument("--max-steps", type=int, default=0,
                        help="cap on the training steps of an epoch (0 = all); the loader side then looks slower than "
                             "it is: it still reads the whole split first, and a cut epoch is never cached")
    parser.add_argument("--eval-batches", type=int, default=2, help="validation batches evaluated after each epoch")
    parser.add_argument("--threads", type=int, default=None, help="override train.num_threads (0 = PyTorch's default)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a conf/<model>.yaml value for every case, e.g. --set data.prefetch=0")
    parser.add_argument("--record", action="store_true", help=f"append the results to {RESULTS.relative_to(REPO)}")
    parser.add_argument("--note", default="", help="free text for the recorded entry")
    return parser.parse_args(argv)


def machine() -> str:
    """CPU model, core count and load average, in words."""
    model = cpu_model()
    return f"{os.cpu_count()} cores ({model})"


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ensure_data(dataset: str, args: argparse.Namespace) -> Path:
    """The feature output of ``dataset``: ``--lastfm``/``--kkbox`` if given, else made under ``--work``."""
    given = getattr(args, dataset)
    if given is not None:
        return given
    out = args.work / dataset
    if (out / "_MANIFEST.json").is_file():
        return out
    raw = args.work / f"raw-{dataset}"
    args.work.mkdir(parents=True, exist_ok=True)
    log(f"generating {dataset} (default scale) into {raw}")
    subprocess.run([sys.executable, "-m", "musicrec.datagen", dataset, "--out", str(raw), "--quiet"], cwd=REPO, check=True)
    log(f"feature job {dataset} -> {out}")
    subprocess.run([str(REPO / "spark-submit.sh"), "jobs/features.py", dataset, "--input", str(raw), "--output", str(out)],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return out


def _limit(batches, max_steps: int):
    return itertools.islice(batches, max_steps) if max_steps else batches


def run_case(case: str, data_dir: Path, args: argparse.Namespace) -> dict:
    import torch

    from musicrec.config import apply_overrides, load_config, typed
    from musicrec.data import Data, DataConfig, read_manifest, view_for
    from musicrec.models import build_model
    from musicrec.train import TrainConfig, fit

    model_name, _dataset = CASES[case]
    config = apply_overrides(load_config(None, default_name=model_name), args.overrides)
    manifest = read_manifest(data_dir)
    data = Data(data_dir, view_for(manifest["dataset"], model_name), typed(DataConfig, config.get("data"), "data"),
                seed=args.seed, manifest=manifest)
    train = dict(config.get("train") or {}, epochs=args.epochs, patience=0, progress=False, seed=args.seed, device="cpu")
    if args.threads is not None:
        train["num_threads"] = args.threads
    train_config = typed(TrainConfig, train, "train")
    kind = {"rows": "binary", "next_song": "next_song", "ncf": "loo"}[data.view]

    torch.manual_seed(args.seed)
    initial = build_model(model_name, manifest, config.get("model"))
    eval_batches = list(itertools.islice(iter(data.eval_loader("valid")), args.eval_batches))
    preloaded = [list(_limit(data.train_loader(epoch), args.max_steps)) for epoch in range(args.epochs)]
    n_examples = sum(len(next(iter(b.values()))) for b in preloaded[0])

    def one_run(side: str) -> tuple[list[float], float, dict]:
        model = copy.deepcopy(initial)
        if side == "loader":  # a fresh Data: its first epoch reads and decodes, later ones may replay its cache
            fresh = Data(data_dir, data.view, data.config, seed=args.seed, manifest=manifest)
            train_loader = lambda epoch: _limit(fresh.train_loader(epoch), args.max_steps)  # noqa: E731
        else:
            train_loader = lambda epoch: iter(preloaded[epoch])  # noqa: E731
        cpu = time.process_time()
        with contextlib.redirect_stdout(sys.stderr):  # fit's epoch lines: progress, not results
            result = fit(model, train_loader=train_loader, eval_loader=lambda split: iter(eval_batches), kind=kind,
                         config=train_config, device="cpu", model_name=model_name, test_split=None)
        cpu = time.process_time() - cpu  # every thread of the process: the loader's threads count too
        examples = sum(sum(len(next(iter(b.values()))) for b in epoch) for epoch in preloaded)
        return [r["samples_per_s"] for r in result.history], examples / cpu, model.state_dict()

    def loader_alone() -> list[tuple[float, float]]:
        """(examples per wall second, per CPU second) of a fresh Data's epochs 1 and 2, iterated without training."""
        fresh = Data(data_dir, data.view, data.config, seed=args.seed, manifest=manifest)
        rates = []
        for epoch in range(2):
            wall, cpu, n = time.perf_counter(), time.process_time(), 0
            for batch in _limit(fresh.train_loader(epoch), args.max_steps):
                n += len(next(iter(batch.values())))
            rates.append((n / (time.perf_counter() - wall), n / max(time.process_time() - cpu, 1e-9)))
        return rates

    runs: dict[str, list[list[float]]] = {"loader": [], "memory": []}
    cpu_rates: dict[str, list[float]] = {"loader": [], "memory": []}
    states = {}
    load_before = load()
    alone = [loader_alone() for _ in range(args.repeats)]
    for rep in range(args.repeats):
        for side in (("loader", "memory") if rep % 2 == 0 else ("memory", "loader")):
            epochs, cpu_rate, states[side] = one_run(side)
            runs[side].append(epochs)
            cpu_rates[side].append(cpu_rate)
            log(f"  {case} rep {rep + 1} {side}: epochs {', '.join(f'{x:,.0f}' for x in epochs)} samples/s; "
                f"{cpu_rate:,.0f} per CPU second (load {load()})")
    same = all(torch.equal(states["loader"][k], states["memory"][k]) for k in states["loader"])
    median = statistics.median
    nan = float("nan")
    mem = [statistics.mean(r) for r in runs["memory"]]
    firsts = [r[0] for r in runs["loader"]]
    laters = [statistics.mean(r[1:]) if args.epochs > 1 else nan for r in runs["loader"]]
    pairs = range(args.repeats)
    return {
        "case": case, "model": model_name, "data": manifest["dataset"], "examples": n_examples,
        "batch": data.config.batch_size, "threads": torch.get_num_threads(), "memory": median(mem),
        "first": median(firsts), "later": median(laters),
        # costs per loader / memory pair (same load), then the median over the pairs
        "cost_first": median(1.0 - firsts[i] / mem[i] for i in pairs),
        "cost_later": median(1.0 - laters[i] / mem[i] for i in pairs),
        "cpu_loader": median(cpu_rates["loader"]), "cpu_memory": median(cpu_rates["memory"]),
        "cpu_cost": median(1.0 - cpu_rates["loader"][i] / cpu_rates["memory"][i] for i in pairs),
        "alone": [tuple(median(a[e][k] for a in alone) for k in range(2)) for e in range(2)],
        "runs": runs, "cpu_rates": cpu_rates, "same_weights": same, "load": f"{load_before} -> {load()}",
    }


def report(rows: list[dict], args: argparse.Namespace) -> str:
    """The markdown tables of a run."""
    overrides = f"; overrides {' '.join(args.overrides)}" if args.overrides else ""
    lines = [f"machine: {machine()}; epochs {args.epochs}, repeats {args.repeats}, "
             f"max steps {args.max_steps or 'all'}{overrides}",
             "",
             "| case | data | examples/epoch | batch | threads | in-memory samples/s | loader samples/s: epoch 1 / "
             "epochs 2+ | loader cost: epoch 1 / epochs 2+ | per CPU s: loader / in-memory (cost) | same weights | "
             "load (1/5/15 min) |",
             "|---|---|---|---|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['data']} | {r['examples']:,} | {r['batch']} | {r['threads']} | {r['memory']:,.0f} | "
            f"{r['first']:,.0f} / {r['later']:,.0f} | {100 * r['cost_first']:.1f}% / {100 * r['cost_later']:.1f}% | "
            f"{r['cpu_loader']:,.0f} / {r['cpu_memory']:,.0f} ({100 * r['cpu_cost']:.1f}%) | "
            f"{'yes' if r['same_weights'] else 'NO'} | {r['load']} |")
    lines += ["", "Loader alone (no training; median of the repeats), examples/s:", "",
              "| case | epoch 1 (read + decode): wall / CPU | epoch 2 (cache replay): wall / CPU |",
              "|---|---:|---:|"]
    for r in rows:
        (w1, c1), (w2, c2) = r["alone"]
        lines.append(f"| {r['case']} | {w1:,.0f} / {c1:,.0f} | {w2:,.0f} / {c2:,.0f} |")
    lines += ["", "Runs (samples/s per epoch; loader | in-memory; per CPU s in brackets), in run order of the pairs:"]
    fmt = lambda runs: "; ".join(", ".join(f"{x:,.0f}" for x in run) for run in runs)  # noqa: E731
    for r in rows:
        cpu = lambda side: ", ".join(f"{x:,.0f}" for x in r["cpu_rates"][side])  # noqa: E731
        lines.append(f"- {r['case']}: {fmt(r['runs']['loader'])} [{cpu('loader')}] | "
                     f"{fmt(r['runs']['memory'])} [{cpu('memory')}]")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    argv_used = list(argv if argv is not None else sys.argv[1:])
    load_start, started_at = load(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    wall_start = time.perf_counter()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; known: {sorted(CASES)}")
    dirs = {ds: ensure_data(ds, args) for ds in sorted({CASES[c][1] for c in cases})}
    log(f"machine: {machine()}, load {load()}")
    rows = []
    for case in cases:
        started = time.perf_counter()
        rows.append(run_case(case, dirs[CASES[case][1]], args))
        log(f"{case}: done in {time.perf_counter() - started:.0f} s")
    text = report(rows, args)
    print(text, end="")
    if args.record:
        entry = [f"### Run of {started_at}", "",
                 f"- command: `.venv/bin/python benchmarks/bench_training.py {shlex.join(argv_used)}` "
                 "(from the repository root)",
                 f"- machine: {machine()}, torch {_torch_version()}, device cpu",
                 f"- load average (1/5/15 min) at the start: {load_start}, at the end: {load()}; "
                 f"wall time {time.perf_counter() - wall_start:.0f} s"]
        if args.note:
            entry.append(f"- note: {args.note}")
        header = "" if RESULTS.exists() else "# Training throughput: Petastorm loader vs in-memory tensors " \
                                             "(benchmarks/bench_training.py)\n"
        with open(RESULTS, "a", encoding="utf-8") as handle:
            handle.write(header + "\n" + "\n".join(entry) + "\n\n" + text)
        log(f"recorded in {RESULTS}")
    return 0


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    sys.exit(main())
