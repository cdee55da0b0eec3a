"""Multimodal representations after Ngiam et al., "Multimodal Deep Learning" (ICML 2011).

* :mod:`.rbm`: :class:`SparseRBM` (Gaussian or binary visible, binary hidden; one CD-k update per
  batch with the Lee et al. sparsity regulariser, :meth:`SparseRBM.cd_step`).
* :mod:`.dbn`: :class:`ShallowBimodalRBM` on ``[a; v]`` and :class:`BimodalDBN` (per-modality RBMs +
  a joint RBM).
* :mod:`.autoencoder`: :class:`VideoOnlyDeepAE`, :class:`BimodalDeepAE` (denoising augmentation
  :func:`denoising_augment`), both optionally initialised from a pre-trained DBN.
* :mod:`.settings`: the learning settings (multimodal fusion, cross-modality learning, shared
  representation learning) as the head's presence mask, :func:`head_mask`.

They are trained through the one training loop: the ``ngiam`` model family
(:mod:`mmfuse.families.ngiam`, ``model.family: ngiam``) wraps them with a supervised head, and the
``greedy_pretrain`` scheme (:mod:`mmfuse.schemes.greedy_pretrain`) runs the layer-wise CD-k
pre-training before the joint fine-tuning. Every model exposes ``shared_representation(x, mask) ->
[B, K]`` with ``x: {modality: [B, D_m]}`` (flattened vectors) and ``mask: {modality: bool[B]}``.
Benchmark: ``benchmarks/ngiam_avmnist.py``.
"""

from .autoencoder import BimodalDeepAE, VideoOnlyDeepAE, denoising_augment, reconstruction_loss
from .dbn import BimodalDBN, ShallowBimodalRBM
from .rbm import SparseRBM, enumerate_binary
from .settings import SETTINGS, format_table, head_mask

__all__ = ["SparseRBM", "enumerate_binary", "ShallowBimodalRBM", "BimodalDBN", "BimodalDeepAE",
           "VideoOnlyDeepAE", "denoising_augment", "reconstruction_loss", "SETTINGS", "head_mask", "format_table"]
