"""Time per training step of gru, ncf and dnn at the demo's vocabulary sizes and at the real datasets' sizes, side by
side in one run: is a step's cost independent of the vocabulary?

    .venv/bin/python benchmarks/bench_step.py [--cases gru,ncf,dnn,gru-dense,ncf-dense] [--steps 20] [--warmup 3]
                                              [--dense-steps 2] [--repeats 2] [--distributed] [--record] [--note TEXT]

What one step is: ``optimizer.zero_grad()``, ``model.training_loss(batch)``, ``backward()`` and
``SingleProcess().optimizer_step`` (gradient clipping included) -- exactly what ``musicrec.train.loop`` does per batch
-- with the model and optimizer built from ``conf/<model>.yaml`` (``musicrec.models.build_model``,
``musicrec.optim.make_optimizer``) and ONE torch thread (the configs' ``train.num_threads``). The batches are
synthetic, with the real shapes (model-level step; the loader is benchmarks/bench_training.py's subject): the GRU
takes ``data.batch_size`` session prefixes of up to 50 songs (session lengths 2 + geometric, mean 18, capped at 50;
a prefix length uniform below it), song indices uniform over the vocabulary (the most distinct rows a batch can
touch: the worst case for sparse updates) and 5 tags per song from 2,000 tags; the popularity sampler gets
Zipf-like counts (1 / rank). NCF/DNN take ``data.batch_size`` rows with uniform indices, 3 values per multi-valued
field. The same batches (indices scaled to the vocabulary) feed both sizes of a case.

Sizes: ``small`` = the demo's (Last.fm 2,053 songs; KKBOX 3,270 songs, 212 users), ``large`` = the real sizes:
Last.fm 718,000 songs (the most the feature job keeps of the 960k tracks, issue 12) and 992 users; KKBOX ~420k songs
and 30,755 users (the training split), artists / composers / lyricists / genres with the real train split's
approximate counts (40,583 / 76,064 / 33,888 / 572). NCF on Last.fm keeps 992 users at both sizes, so only the
songs change. ``gru-dense`` / ``ncf-dense`` / ``dnn-dense`` are the previous training step (full softmax, dense
tables, dense Adam: ``model.sampled_softmax=0 model.sparse=false``) for contrast; ``gru-dense`` at the large size
(~10 s a step) for ``--dense-steps`` steps after one warm-up step, once.

Each (case, size) runs in a child process (its peak RSS is its own): model build, ``--warmup`` steps (the first one
allocates SparseAdam's moments), then ``--steps`` timed steps; the median, min and max are reported. ``--repeats``
runs every case's two sizes in the order small, large, then large, small (a drift in the machine's load affects both
sizes alike); the ratio large / small is of the medians over the repeats.

``--distributed``: what Horovod exchanges per step for the GRU's sparse tables, 2 workers (``horovodrun -np 2
--gloo``) on this host: the sparse gradients of one real step (what ``hvd.DistributedOptimizer`` allgathers, its
rows and bytes) against a dense allreduce of the same tables (``sparse_as_dense=True``), timed on both sizes; then the
full 2-worker training step through ``musicrec.distributed.horovod`` at both sizes.

``--record`` appends the tables, the command, the CPU model and ``uptime`` before/after to
benchmarks/RESULTS_step.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from measure import append_record, cpu_model  # a sibling of this script

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "RESULTS_step.md"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

LASTFM = {"small": {"song": 2_053, "user": 992, "tag": 2_000}, "large": {"song": 718_000, "user": 992, "tag": 2_000}}
KKBOX_SMALL = {"song": 3_270, "user": 212, "artist": 601, "composer": 866, "lyricist": 683, "genre": 39}
KKBOX_LARGE = {"song": 419_839, "user": 30_755, "artist": 40_583, "composer": 76_064, "lyricist": 33_888, "genre": 572}
KKBOX_FIXED = {"city": 21, "gender": 4, "isrc_country": 110, "isrc_year": 100, "language": 11, "registered_via": 6,
               "source_screen_name": 21, "source_system_tab": 10, "source_type": 13}
KKBOX_CATEGORICAL = {"user_idx": "user", "song_idx": "song", "city_idx": "city", "gender_idx": "gender",
                     "isrc_country_idx": "isrc_country", "isrc_year_idx": "isrc_year", "language_idx": "language",
                     "registered_via_idx": "registered_via", "source_screen_name_idx": "source_screen_name",
                     "source_system_tab_idx": "source_system_tab", "source_type_idx": "source_type"}
KKBOX_MULTI = {"artist_idx": "artist", "composer_idx": "composer", "genre_idx": "genre", "lyricist_idx": "lyricist"}
KKBOX_NUMERIC = ["song_length", "age", "membership_days", "registration_year", "song_count", "user_count",
                 "artist_count"]
DENSE = ["model.sampled_softmax=0", "model.sparse=false"]
# case -> (model, dataset, extra --set overrides, slow at the large size: timed for --dense-steps steps only)
CASES = {
    "gru": ("gru", "lastfm", [], False),
    "ncf": ("ncf", "lastfm", [], False),
    "ncf-kkbox": ("ncf", "kkbox", [], False),
    "dnn": ("dnn", "kkbox", [], False),
    "gru-dense": ("gru", "lastfm", DENSE, True),
    "ncf-dense": ("ncf", "lastfm", ["model.sparse=false"], False),
    "dnn-dense": ("dnn", "kkbox", ["model.sparse=false"], False),
}
SIZES = ("small", "large")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma list of {list(CASES)}")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per (case, size)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--dense-steps", type=int, default=2, help="timed steps of gru-dense at the large size")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each (case, size); orders alternate")
    parser.add_argument("--distributed", action="store_true", help="also measure the 2-worker Horovod exchange")
    parser.add_argument("--record", action="store_true", help=f"append the results to {RESULTS.relative_to(REPO)}")
    parser.add_argument("--note", default="", help="free text for the recorded entry")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--hvd-child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# ----------------------------------------------------------------------------------------------------------------
# One (case, size): model, batch, timed steps (a child process)
# ----------------------------------------------------------------------------------------------------------------
def manifest_for(dataset: str, size: str) -> dict:
    if dataset == "lastfm":
        return {"dataset": "lastfm", "vocab_sizes": dict(LASTFM[size])}
    sizes = {**(KKBOX_SMALL if size == "small" else KKBOX_LARGE), **KKBOX_FIXED}
    return {"dataset": "kkbox", "vocab_sizes": sizes,
            "features": {"categorical": KKBOX_CATEGORICAL, "multi_valued": KKBOX_MULTI, "numeric": KKBOX_NUMERIC,
                         "target": "target"}}


def synthetic_batch(model_name: str, dataset: str, sizes: dict, batch_size: int, seed: int = 0) -> dict:
    """One batch with the real shapes; uniform fractions scaled to each vocabulary, so both sizes share a layout."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def idx(shape, vocab):  # uniform over the real indices 2 .. V-1, from the same uniforms at every size
        return (2 + (torch.rand(shape, generator=g) * (sizes[vocab] - 2)).long()).clamp(max=sizes[vocab] - 1)

    if model_name == "gru":
        T = 50
        u = torch.rand(batch_size, generator=g).clamp(min=1e-12)
        session = (2 + torch.floor(torch.log(u) / math.log(1 - 1 / 17))).clamp(max=T + 1)  # 2 + geometric, mean 18
        lengths = (1 + (torch.rand(batch_size, generator=g) * (session - 1)).long()).clamp(1, T)
        valid = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
        return {"songs": idx((batch_size, T), "song").masked_fill(~valid, 0), "lengths": lengths,
                "song_tags": idx((batch_size, T, 5), "tag").masked_fill(~valid.unsqueeze(-1), 0),
                "next_song": idx((batch_size,), "song")}
    if model_name == "ncf":
        return {"user_idx": idx((batch_size,), "user"), "song_idx": idx((batch_size,), "song"),
                "target": (torch.rand(batch_size, generator=g) < 0.2).float()}
    batch = {col: idx((batch_size,), vocab) for col, vocab in KKBOX_CATEGORICAL.items()}
    batch.update({col: idx((batch_size, 3), vocab) for col, vocab in KKBOX_MULTI.items()})
    batch["numeric"] = torch.randn(batch_size, len(KKBOX_NUMERIC), generator=g)
    batch["target"] = (torch.rand(batch_size, generator=g) < 0.5).float()
    return batch


def build(case: str, size: str):
    """(model, optimizer, batch, train config) of one (case, size) from conf/<model>.yaml and the case's overrides."""
    import torch

    from musicrec.config import apply_overrides, load_config, typed
    from musicrec.models import build_model
    from musicrec.optim import make_optimizer
    from musicrec.train import TrainConfig

    model_name, dataset, overrides, _ = CASES[case]
    config = apply_overrides(load_config(None, default_name=model_name), overrides)
    train = typed(TrainConfig, config["train"], "train")
    torch.manual_seed(0)
    manifest = manifest_for(dataset, size)
    model = build_model(model_name, manifest, config["model"]).train()
    if getattr(model.config, "sampler", None) == "popularity":
        model.set_sampling_counts(1.0 / torch.arange(1, manifest["vocab_sizes"]["song"] + 1, dtype=torch.float64))
    batch = synthetic_batch(model_name, dataset, manifest["vocab_sizes"], int(config["data"]["batch_size"]))
    return model, make_optimizer(model, train), batch, train


def step_fn(model, optimizer, batch, train, backend=None):
    from musicrec.distributed import SingleProcess

    backend = backend or SingleProcess()
    clip = train.clip_grad_norm if train.clip_grad_norm is not None else getattr(model.config, "clip_grad_norm", None)

    def step():
        optimizer.zero_grad()
        model.training_loss(batch).backward()
        backend.optimizer_step(optimizer, None, model.parameters(), clip)
    return step


def timed(step, warmup: int, steps: int) -> list[float]:
    """Seconds of each of ``steps`` calls of ``step()`` after ``warmup`` untimed ones."""
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def run_child(case: str, size: str, steps: int, warmup: int) -> dict:
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    model, optimizer, batch, train = build(case, size)
    build_s = time.perf_counter() - started
    times = timed(step_fn(model, optimizer, batch, train), warmup, steps)
    return {"case": case, "size": size, "params": sum(p.numel() for p in model.parameters()),
            "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "steps": steps,
            "build_s": build_s, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "vocab": model.n_songs if hasattr(model, "n_songs") else None}


def spawn(case: str, size: str, steps: int, warmup: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", case, size, "--steps", str(steps),
           "--warmup", str(warmup)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{case} {size} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------------
# Horovod: the sparse exchange against a dense allreduce (a child of horovodrun)
# ----------------------------------------------------------------------------------------------------------------
def run_hvd_child(steps: int, warmup: int) -> None:
    """Per size, on every worker: the sparse gradients of one real GRU step and the time to allgather them (what
    Horovod does) vs to allreduce them densified; then the real 2-worker step. Rank 0 prints one JSON line per size."""
    import torch

    from musicrec.distributed.horovod import HorovodBackend

    torch.set_num_threads(1)
    backend = HorovodBackend()
    hvd = backend._hvd
    for size in ("small", "large"):
        model, optimizer, batch, train = build("gru", size)
        torch.manual_seed(backend.rank)
        model.training_loss(batch).backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None and p.grad.is_sparse}
        rows = sum(int(g._nnz()) for g in grads.values())
        sparse_bytes = sum(g._values().numel() * g._values().element_size() + g._nnz() * 8 for g in grads.values())
        dense_bytes = sum(g.numel() * 4 for g in grads.values())
        out = {"size": size, "workers": backend.size, "sparse_rows": rows, "sparse_mb": sparse_bytes / 2**20,
               "dense_mb": dense_bytes / 2**20}
        for kind in ("allgather", "dense allreduce"):
            times = []
            for i in range(1 + max(1, steps // 10 if kind == "dense allreduce" and size == "large" else steps // 2)):
                backend.barrier()
                t0 = time.perf_counter()
                for name, g in grads.items():
                    if kind == "allgather":
                        hvd.sparse_allreduce_async(g, name=f"{name}.{i}", op=hvd.Average)()  # returns a callable
                    else:
                        hvd.allreduce(g.to_dense(), name=f"{name}.dense.{i}", op=hvd.Average)
                if i:
                    times.append(time.perf_counter() - t0)
            out[f"{kind}_s"] = statistics.median(times)
        model.zero_grad(set_to_none=True)
        optimizer = backend.wrap_optimizer(optimizer, model)
        step = step_fn(model, optimizer, batch, train, backend)
        out.update(step_s=statistics.median(timed(step, warmup, steps)),
                   peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
        if backend.is_root:
            print("HVD " + json.dumps(out), flush=True)
        del model, optimizer, grads, step
        backend.barrier()


def distributed(args) -> list[dict]:
    cmd = [str(Path(sys.executable).parent / "horovodrun"), "-np", "2", "--gloo", "-H", "localhost:2", sys.executable,
           str(Path(__file__).resolve()), "--hvd-child", "--steps", str(args.steps), "--warmup", str(args.warmup)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    found = [json.loads(line.split("HVD ", 1)[1]) for line in proc.stdout.splitlines() if "HVD {" in line]
    if proc.returncode != 0 or len(found) != 2:
        raise RuntimeError(f"horovodrun failed (status {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return found


# ----------------------------------------------------------------------------------------------------------------
# The parent: plan, tables, record
# ----------------------------------------------------------------------------------------------------------------
def measure(args) -> list[dict]:
    results = []
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        if case not in CASES:
            raise SystemExit(f"bench_step.py: error: unknown case {case!r}; known: {', '.join(CASES)}")
        for repeat in range(args.repeats):
            for size in SIZES if repeat % 2 == 0 else reversed(SIZES):
                slow = CASES[case][3] and size == "large"
                if slow and repeat > 0:  # once is enough for the old 10 s step
                    continue
                steps, warmup = (args.dense_steps, 1) if slow else (args.steps, args.warmup)
                log(f"{case} {size} (repeat {repeat + 1}): {steps} steps after {warmup} warm-up")
                results.append({**spawn(case, size, steps, warmup), "repeat": repeat})
    return results


def step_table(results: list[dict]) -> str:
    lines = ["| case | size | songs | parameters | step s: median (min-max) of each run | peak RSS GiB | large / small |",
             "|---|---|---:|---:|---|---:|---:|"]
    cases = list(dict.fromkeys(r["case"] for r in results))
    for case in cases:
        medians = {}
        for size in ("small", "large"):
            runs = [r for r in results if r["case"] == case and r["size"] == size]
            if not runs:
                continue
            medians[size] = statistics.median(r["median_s"] for r in runs)
            ratio = f"**{medians['large'] / medians['small']:.2f}**" if size == "large" and "small" in medians else ""
            timing = ", ".join(f"{r['median_s']:.4f} ({r['min_s']:.4f}-{r['max_s']:.4f}, {r['steps']} steps)"
                               for r in runs)
            lines.append(f"| {case} | {size} | {_songs(case, size):,} | {runs[0]['params']:,} | {timing} | "
                         f"{max(r['peak_rss_gib'] for r in runs):.2f} | {ratio} |")
    return "\n".join(lines)


def _songs(case: str, size: str) -> int:
    return manifest_for(CASES[case][1], size)["vocab_sizes"]["song"]


def hvd_table(rows: list[dict]) -> str:
    lines = ["| size | songs | sparse rows sent per worker | sparse MiB | dense MiB | allgather s | dense allreduce s | "
             "2-worker step s | peak RSS GiB (rank 0) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['size']} | {LASTFM[r['size']]['song']:,} | {r['sparse_rows']:,} | {r['sparse_mb']:.1f} | "
                     f"{r['dense_mb']:,.1f} | {r['allgather_s']:.4f} | {r['dense allreduce_s']:.3f} | "
                     f"{r['step_s']:.4f} | {r['peak_rss_gib']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args.child[0], args.child[1], args.steps, args.warmup)))
        return 0
    if args.hvd_child:
        run_hvd_child(args.steps, args.warmup)
        return 0
    given = argv if argv is not None else sys.argv[1:]
    command = "benchmarks/bench_step.py " + " ".join(shlex.quote(a) for a in given)
    before, started = uptime(), time.time()
    results = measure(args)
    hvd = distributed(args) if args.distributed else []
    after = uptime()
    report = [f"## Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}", "",
              f"- Command: `.venv/bin/python {command}` ({time.time() - started:.0f} s)",
              f"- Machine: {os.cpu_count()} cores, {cpu_model()}; one torch thread per process",
              f"- `uptime` before: `{before}`", f"- `uptime` after: `{after}`"]
    if args.note:
        report.append(f"- Note: {args.note}")
    report += ["", step_table(results)]
    if hvd:
        report += ["", "Horovod, 2 workers (GRU, conf/gru.yaml, per worker per step):", "", hvd_table(hvd)]
    text = "\n".join(report) + "\n"
    print(text)
    if args.record:
        append_record(RESULTS, text)
        log(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
