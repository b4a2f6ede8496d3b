"""Last.fm 1K feature job: raw plays TSV (+ optional track tags) -> sessionized plays, vocabularies, session
sequences split by time, stats and manifest (docs/DATA_CONTRACT.md).

One module per stage, chained by ``job.run_job``:

- ``config``      conf/lastfm.yaml as typed sections (``LastfmConfig``), the time window;
- ``parse``       plays and tags lines -> typed columns + reject reasons, ``OUT/rejected/``;
- ``sessionize``  clean + dedup + sessionize in one fused pass (``with_play_levels``), ``OUT/plays/``;
- ``tags``        top-K tags per song, the tag policy, the song lookup (``OUT/song_tags/``);
- ``sequences``   one row per session, the time split, ``OUT/sessions/{train,valid,test}/``;
- ``holdout``     the per-user leave-one-out split instead (``split.protocol: leave_one_out``);
- ``job``         the driver (vocabularies, stats and manifest through ``musicrec.features`` / ``musicrec.io``).
"""

from musicrec.features.lastfm.config import LastfmConfig, resolve_config
from musicrec.features.lastfm.job import check_job, run_job

__all__ = ["LastfmConfig", "check_job", "resolve_config", "run_job"]
