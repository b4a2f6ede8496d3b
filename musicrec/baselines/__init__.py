"""Baselines, fitted on numpy arrays / Python iterables (no Spark), scored like the models.

Next song (Last.fm prefixes): ``fit`` on the training sessions, then ``score(batch) -> (B, V)`` (padding 0 and OOV 1
at -inf, so they plug into ``musicrec.metrics.target_ranks``) and ``target_ranks(batch, targets) -> (B,)``, the
same ranks (optimistic ties: 1 + the songs that score strictly higher) without the (B, V) scores, which is what the
evaluation calls at the real size (V ~ 480k-718k songs):

- ``MostPopular`` (``popularity.py``): training play counts (also ``score_candidates`` for the leave-one-out protocol);
- ``CoOccurrence`` (``cooc.py``): "song b follows song a within W positions" counts in a scipy CSR (V, V) matrix,
  scoring from the prefix's last song(s), with a small popularity fallback;
- ``SessionKNN`` (``sknn.py``): V-SKNN, the k most similar training sessions among the most recent ones sharing a
  song with the prefix, with the same popularity fallback.

KKBOX rows (``score_batch(batch) -> {"scores", "probs", "loss"}``, the binary protocol's scorer output):

- ``MostPopular``: ``fit(song_idx, target)``, rows ordered by the song's training count (ties by its smoothed mean);
- ``TargetRate`` (``rate.py``): the song's and the user's smoothed target rates, combined in log-odds.

Every baseline takes its vocabulary sizes explicitly (the manifest's ``vocab_sizes``). Fitting is vectorized over
all sessions / rows at once (bincounts, sparse matrices), never a (V,) pass per session; the LightGBM model of the
KKBOX rows, which trains, is ``musicrec.gbdt``. ``fit_baseline`` (``fitting.py``) builds one from a run config and
fits it on a run's data, for ``jobs/train.py``.
"""

from musicrec.baselines.cooc import CoOccurrence
from musicrec.baselines.fitting import NAMES, fit_baseline
from musicrec.baselines.popularity import MostPopular
from musicrec.baselines.rate import TargetRate
from musicrec.baselines.sknn import SessionKNN

__all__ = ["CoOccurrence", "MostPopular", "NAMES", "SessionKNN", "TargetRate", "fit_baseline"]
