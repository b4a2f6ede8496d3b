"""Train (or, for the baselines, fit and evaluate) one model on one feature-job output, tracked in MLflow.

    python jobs/train.py --model gru --data work/features/lastfm
    python jobs/train.py --model dnn --data work/features/kkbox --set train.lr=0.003 --epochs 5
    python jobs/train.py --model gru --data work/features/lastfm --resume      # continue runs/lastfm-gru/
    python jobs/train.py --model gru --data full/lastfm --max-steps 200        # a bounded run (train.max_steps)

Models: ncf, dnn, logreg and the baselines pop, rate, lightgbm on KKBOX; gru, ncf and the baselines pop, cooc, sknn
on Last.fm. The config is ``conf/<model>.yaml`` (or
``--conf``) with ``--set section.key=value`` overrides, then ``--epochs``/``--max-steps``/``--seed``/``--device``; the
resolved config is printed once. ``--max-steps N`` ends the training after N optimizer steps in all (then the last
epoch is validated and the best weights tested). Evaluation: ``eval.max_examples`` examples per split, a fixed sample
that is the same for every model on the same data (``auto``: every example on a GPU, a bound per protocol on a CPU,
so that a CPU evaluation at the real size takes minutes); the count is printed beside the metrics and logged.
Checkpoints go to ``--run-dir`` (default ``runs/<dataset>-<model>``): ``last.pt`` every epoch and ``best.pt``;
``--resume`` continues from ``last.pt`` (same MLflow run, same final weights as an uninterrupted run); a fresh run
in a folder with checkpoints stops (exit 2) unless ``--overwrite`` (they are kept in ``replaced/`` until it
finishes), and a second training in a busy folder is refused (docs/FAILURE_MODES.md).
Under a multi-worker launcher the distributed backend is picked automatically (``musicrec.distributed``):

    horovodrun -np 2 --gloo -H localhost:2 .venv/bin/python jobs/train.py --model dnn --data work/features/kkbox
    torchrun --standalone --nproc_per_node 2 jobs/train.py --model dnn --data work/features/kkbox   # torch.distributed

Every worker reads its Petastorm shard (row group i goes to rank i % N, so each split needs at least N row groups;
checked before training); ``data.batch_size`` is the GLOBAL batch (``train.global_batch``), split over the workers;
``train.lr_scaling`` scales the learning rate; only rank 0 prints, writes checkpoints and logs the one MLflow run;
on a CPU the workers of a host share its cores (``train.num_threads`` per worker; its "0 = PyTorch's default" becomes
cores / local workers, unless OMP_NUM_THREADS is set, and a warning says when the workers oversubscribe the cores).
The baselines (pop, cooc, sknn, rate, lightgbm: fitted on the training split, not trained by the loop): under a
launcher rank 0 evaluates them alone on all the data and the other workers exit at once. jobs/train_on_spark.py
runs the same job on Spark executors.
Exit status: 0 done, 2 bad arguments / data / config / checkpoint (one ``error:`` line, no traceback), 3 another
worker died or hangs (distributed; ``horovodrun`` then names the failed rank and exits 1; the limits are in
musicrec/distributed/horovod.py).

Debugging and fault injection (environment variables, read by every worker):
    MUSICREC_DEBUG_ROWS=1          write the ids of every training example each worker took, per epoch, to
                                   <run dir>/debug_rows/epoch<E>-rank<R>.npz (row_id, session_id, user/song, target)
    MUSICREC_FAULT_RANK=R MUSICREC_FAULT_AT_STEP=K
                                   worker R exits with status 17 (os._exit, no clean-up) when it takes its K-th
                                   training batch (counted from 1 in this process): a crash, to test failure and --resume

The arguments, the wiring and the exit statuses are ``musicrec.train.run`` (``main``), shared with the workers of
jobs/train_on_spark.py.
"""

from __future__ import annotations

import sys

from musicrec.train.run import main

if __name__ == "__main__":
    sys.exit(main())
