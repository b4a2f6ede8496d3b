"""The batches of a few ``Data`` loaders (2 shards, 2 training epochs and the validation split, per view) as one
``.npz`` file: ``python tests/profile_batches.py KKBOX_DIR LASTFM_DIR OUT.npz`` in one profile's venv, ``batches``
in another's, to check that both profiles' readers give the same batches (tests/test_current_profile.py)."""

from __future__ import annotations

import sys

import numpy as np

from musicrec.data import Data, DataConfig
from musicrec.data.reader import reader_name


def batches(kkbox_dir, lastfm_dir) -> dict[str, np.ndarray]:
    """{"<view>/<shard>/<loader>/<batch>/<column>": values} and {"reader": the reader used}."""
    out = {"reader": np.array(reader_name())}
    for folder, view in ((kkbox_dir, "rows"), (lastfm_dir, "next_song"), (lastfm_dir, "ncf")):
        for shard in (0, 1):
            data = Data(folder, view, DataConfig(batch_size=16, shuffle_buffer=40, cache_mb=0), seed=3,
                        cur_shard=shard, shard_count=2)
            for name, loader in (("e0", data.train_loader(0)), ("e1", data.train_loader(1)),
                                 ("valid", data.eval_loader("valid"))):
                for i, batch in enumerate(loader):
                    out.update({f"{view}/{shard}/{name}/{i}/{k}": v.numpy() for k, v in batch.items()})
    return out


if __name__ == "__main__":
    np.savez(sys.argv[3], **batches(sys.argv[1], sys.argv[2]))
