"""Readers for the standard formats of the papers' data, each registered as a dataset.

* ``multibench_avmnist``: MultiBench's AV-MNIST ``.npy`` folder (:mod:`.multibench_avmnist`);
* ``mmsa``: MMSA / MultiBench MOSI, MOSEI, SIMS feature pickles through a restricted
  unpickler (:mod:`.mmsa`, :mod:`.safe_pickle`);
* ``mmimdb``: MM-IMDb ``multimodal_imdb.hdf5`` (:mod:`.mmimdb`, needs ``h5py``);
* ``csd``: CMU-MultimodalSDK computational sequences aligned to words (:mod:`.csd`, needs ``h5py``);
* ``ntu_skeleton``: NTU RGB+D ``.skeleton`` text files (:mod:`.ntu_skeleton`).

Each takes the path of the user's local copy; none downloads anything.
"""

from . import csd as _csd  # noqa: F401
from . import mmimdb as _mmimdb  # noqa: F401  (importing registers the builders)
from . import mmsa as _mmsa  # noqa: F401
from . import multibench_avmnist as _multibench_avmnist  # noqa: F401
from . import ntu_skeleton as _ntu_skeleton  # noqa: F401
from .safe_pickle import SafeUnpickler, load_pickle

__all__ = ["SafeUnpickler", "load_pickle"]
