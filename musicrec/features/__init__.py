"""Feature jobs: raw listening logs -> Parquet tables, vocabularies, stats and a manifest (docs/DATA_CONTRACT.md).

``common`` holds the stage helpers both jobs share; ``lastfm`` and ``kkbox`` hold one pipeline each, entered
through ``run_job(spark, input_dir, output_dir, config) -> summary dict`` (called by ``jobs/features.py``).
"""
