"""Feature jobs: raw listening logs -> Parquet tables, vocabularies, stats and a manifest (docs/DATA_CONTRACT.md).

``lastfm/`` and ``kkbox/`` hold one pipeline each, entered through ``run_job(spark, input_dir, output_dir, config)
-> summary dict`` (called by ``musicrec.features.cli``, which ``jobs/features.py`` runs); what both share is one module each: ``vocab`` (build, write and
look up vocabularies), ``stats`` (the per-stage stats report), ``rejects`` (rejected rows and their line numbers)
and ``progress`` (step timing); the Spark-free job boundary (input checks, atomic output, manifest) is
``musicrec.io``.
"""
