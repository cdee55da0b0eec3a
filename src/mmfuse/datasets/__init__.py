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
from . import avmnist as _avmnist  # noqa: F401  (importing registers the builders)
from . import basicmotions as _basicmotions  # noqa: F401
from . import easyvqa as _easyvqa  # noqa: F401
from . import readers as _readers  # noqa: F401  (standard formats: multibench_avmnist, mmsa, mmimdb, csd, ntu_skeleton)
from .table import TableSchemaError, load_table

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
    "load_table",
    "TableSchemaError",
]
