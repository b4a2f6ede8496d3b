"""musicrec: the reference pipeline for training music recommenders at scale.

Install with ``./run.sh setup`` (creates .venv, installs the pinned set from requirements/constraints.txt and
builds Horovod); ``pip install -e .[test]`` alone will not build Horovod 0.28.1 against torch 2.13 (see README).
"""

from setuptools import find_packages, setup

setup(
    name="musicrec",
    version="0.1.0",
    description="Music recommenders from raw listening logs: PySpark features, PyTorch models, Horovod, MLflow",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["musicrec", "musicrec.*"]),
    install_requires=[
        # exact versions that co-install live in requirements/constraints.txt (the lock)
        "pyspark>=4.0,<5",
        "torch>=2.1",
        "numpy<2",  # pyarrow 14 is built against numpy 1.x
        "pandas>=2.2,<2.3",
        "pyarrow>=14,<15",  # petastorm 0.12 needs pyarrow < 15
        "petastorm==0.12.1",
        "mlflow>=3,<4",
        "horovod[pytorch]==0.28.1",
        "pyyaml>=6",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "duckdb>=1.0",  # single-machine reference in benchmarks
        "pylast>=7,<8",  # fetching Last.fm tags for real users
        "psutil>=5",
        "lightgbm==4.7.0",  # the gradient-boosted trees baseline on KKBOX rows (musicrec/gbdt.py)
        "scipy>=1.10",  # sparse matrices of the co-occurrence and session-kNN baselines
    ],
    extras_require={
        "test": ["pytest>=8", "chispa==0.12.0", "nbclient>=0.10", "nbformat>=5", "ipykernel>=6", "scikit-learn>=1.3"],
    },
)
