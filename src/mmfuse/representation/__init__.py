"""Multimodal representations after Ngiam et al., "Multimodal Deep Learning" (ICML 2011).

* :mod:`.rbm`: :class:`SparseRBM` (Gaussian or binary visible, binary hidden; CD-k with the Lee et
  al. sparsity regulariser), :func:`train_rbm`.
* :mod:`.dbn`: :class:`ShallowBimodalRBM` on ``[a; v]`` and :class:`BimodalDBN` (per-modality RBMs +
  a joint RBM, greedy layer-wise training).
* :mod:`.autoencoder`: :class:`VideoOnlyDeepAE`, :class:`BimodalDeepAE` (denoising augmentation
  :func:`denoising_augment`), both optionally initialised from a trained DBN.
* :mod:`.settings`: :func:`evaluate_settings` — multimodal fusion, cross-modality learning and
  shared representation learning with a linear classifier on the learned features;
  :class:`ConcatFeatures` is the raw-input baseline.

Every model exposes ``shared_representation(x, mask) -> [B, K]`` with ``x: {modality: [B, D_m]}``
(flattened vectors) and ``mask: {modality: bool[B]}``. Benchmark: ``benchmarks/ngiam_avmnist.py``.
"""

from .autoencoder import BimodalDeepAE, VideoOnlyDeepAE, denoising_augment, reconstruction_loss
from .dbn import BimodalDBN, ShallowBimodalRBM
from .rbm import SparseRBM, enumerate_binary, train_rbm
from .settings import ConcatFeatures, evaluate_settings, format_table

__all__ = ["SparseRBM", "train_rbm", "enumerate_binary", "ShallowBimodalRBM", "BimodalDBN", "BimodalDeepAE",
           "VideoOnlyDeepAE", "denoising_augment", "reconstruction_loss", "ConcatFeatures", "evaluate_settings",
           "format_table"]
