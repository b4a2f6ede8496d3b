"""KKBOX WSDM 2018 feature job: the five raw CSVs -> OUT/{train,valid,test} Parquet, vocabularies, stats, manifest.

    spark-submit jobs/features.py kkbox --input DIR --output OUT [--conf conf/kkbox.yaml] [--set section.key=v]

The output layout is docs/DATA_CONTRACT.md (KKBOX section). ``job.run_job`` runs these stages, each a
DataFrame -> DataFrame transformation or a column function, pinned by tests/test_features_kkbox.py:

1. ``read``      ``read_kkbox_csv`` (declared schema, columns taken in the file's header order, ``_corrupt_record``,
                 ``_file``, ``_mid``), ``utf8_check`` + the ``*_checks`` lists -> ``with_reject_reason``,
                 ``with_raw_record``;
                 ``with_duplicate_reason`` for the keyed side tables; ``partition_offsets`` + ``with_row_id`` give a
                 consecutive 0-based row number in file order; ``with_line_number`` for rejected/.
2. ``side``      ``with_isrc_fields``, ``with_member_features`` (age from ``bd``, membership days, registration
                 year), ``with_song_lists`` (``split_names`` on the separators the data uses).
3. ``entities``  ``with_split``: train.csv rows before ``valid_cut`` -> train, the rest -> valid; test.csv -> test.
                 ``song_table`` / ``user_table``: ``plays_by_split`` (one row per song / user / source context of the
                 events, with its events per split), ``join_song_info`` (songs.csv + song_extra_info.csv),
                 ``with_artist_counts``, ``join_member_info``; ``entity_vocabs`` (every vocabulary in three
                 ``vocab.build_vocabs`` aggregations, counts weighted by train-part plays = the number of train
                 events with the token), written with ``vocab.write_vocabs``.
4. ``numeric``   ``with_numeric_features``; ``moment_sums`` + ``standardization_stats`` (train-part, event-weighted,
                 exact sums), ``with_standardized``; ``split_summary`` (unknown songs / members per split).
                 ``entities.song_features`` / ``user_features`` index every column of an entity table in one
                 ``vocab.with_indices`` lookup.
5. ``output``    ``join_features`` (events x indexed user and song tables, both broadcast),
                 ``with_context_indices``, ``select_output_columns``, ``write_splits`` (all three splits in one pass,
                 no shuffle); rejected rows (``features.rejects``), the stats report and the manifest
                 (``musicrec.io``), all inside one ``AtomicOutput``.

Working per entity is what keeps the job fast: the 10M events are parsed once, cached narrow (ids and source
strings), aggregated three times and streamed once through broadcast joins into the output; they are never
shuffled. Everything else (vocabularies, statistics, indices) happens on the song and user tables.

Every raw row is accounted for: for train.csv, train + valid + rejected = input rows, checked before anything is
published (``check_row_accounting``) and recorded in the manifest (``row_accounting``) and in stats.json. More than
``clean.max_rejected_fraction`` of any file's rows rejected, or a split left without rows, fails the job instead.
"""

from musicrec.features.kkbox.config import KkboxConfig
from musicrec.features.kkbox.job import check_job, run_job

__all__ = ["KkboxConfig", "check_job", "run_job"]
