"""Multimodal datasets: built-in benchmarks from packaged data, user tables and arrays.

``load_dataset(name, seed=0, cache_dir=None, **options)`` returns ``{"train", "val", "test"}``
:class:`MultimodalDataset` splits; ``list_datasets()`` lists the names. Built-ins:

* ``avmnist`` / ``avmnist-smil``: FSDD spoken-digit MFCCs paired with MNIST images
  (:mod:`mmfuse.datasets.avmnist`);
* ``easyvqa``: synthetic shape images + questions, 13 answers (:mod:`mmfuse.datasets.easyvqa`);
* ``basicmotions``: smart-watch accelerometer + gyroscope, 4 activities
  (:mod:`mmfuse.datasets.basicmotions`);
* ``table``: a user's CSV/Parquet file described by a YAML schema (:mod:`mmfuse.datasets.table`).

Users with numpy arrays call :func:`from_arrays`.
"""

from __future__ import annotations

from .base import ArrayDataset, Gather, MultimodalDataset, from_arrays, stratified_split
from .loading import DATASETS, cache_root, list_datasets, load_dataset, register_dataset
from . import avmnist as _avmnist  # noqa: F401  (registers the builders)

__all__ = [
    "ArrayDataset",
    "DATASETS",
    "Gather",
    "MultimodalDataset",
    "cache_root",
    "from_arrays",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "stratified_split",
]
