"""musicrec: raw music listening logs -> Spark features -> Parquet -> Petastorm -> PyTorch/Horovod -> MLflow."""

__version__ = "0.1.0"
