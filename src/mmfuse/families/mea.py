"""``family: mea``: MEA (Yang et al. 2024), modality-exclusive and -agnostic representations of
asynchronous sequences (:class:`~mmfuse.sequence.MEAModel`).

Inputs. MEA reads every modality as a channels-last sequence [B, T_m, F_m]; the modalities need not
be aligned (each keeps its own T_m, variable lengths are padded and masked with ``batch.lengths``).
One sample's shape (``dataset.shapes[m]``) is mapped by a parameter-free
:class:`~mmfuse.sequence.mea.SequenceView` built with the model (so the checkpoint rebuilds it):

* (T, F), T fixed or None (variable length): used as is;
* (F,) (a vector): one step, T = 1 (its self-attention then has one key, so the query / key
  weights of its PSA layers get no gradient; a vector carries no temporal context);
* (d_1, ..., d_k, F) with k ≥ 2 (an image (1, 28, 28), a spectrogram (1, 112, 112), a video):
  every leading dim is flattened into time, T = d_1·…·d_k, and the last dim stays the features
  (an image becomes a sequence of its rows). Only d_1 may be None; its lengths are scaled.

Token-id modalities (variable-length (None,) ints) are not sequences of features: give them a
feature axis in the dataset, or use ``family: fusion`` with a ``transformer`` / ``gru`` encoder.

Config (``MEAModelConfig``): ``dim``, ``heads``, ``psa_layers``, ``hca_layers``, ``mu``,
``graph_rounds``, ``alpha`` (disparity weight), ``beta`` (adversarial weight), ``grl_lambda``,
``dropout``, ``hsic_kernel``; the shared ``modalities`` (≥ 2 of them), ``head`` (a registered head
from the fused width ``dim`` to K outputs), ``missing.modality_dropout`` (applied to the mask in
training). MEA has its own per-modality front end (Conv1d + positions), so ``encoders`` must be
empty, and no embedding to impute, so ``missing.imputer`` is rejected (both by ``MEAModelConfig``).

Loss: the model puts ``{"mea.disparity": α·disparity, "mea.adversarial": β·adversarial}`` into
``ModelOutput.losses`` while training; the one training loop (``FusionSystem.compute_loss``) adds
them to the task loss. All three task types work: the head returns K raw scores and the
constraints use modality labels, not targets.
"""

from __future__ import annotations

from typing import Mapping

from ..config import MEAModelConfig
from ..errors import ConfigError
from ..models.build import check_modalities, modality_dropout_of
from ..models.heads import create_head
from ..registry import MODELS


@MODELS.register("mea", default_scheme="joint", schemes=("joint",),
                 tasks=("multiclass", "multilabel", "regression"),
                 test_options={"dim": 8, "heads": 2, "psa_layers": 1, "hca_layers": 1, "graph_rounds": 1},
                 test_shapes={"audio": (None, 3), "image": (1, 6, 6)},
                 search_space={"model.dropout": {"low": 0.0, "high": 0.3},
                               "model.alpha": {"low": 0.005, "high": 0.1, "log": True}})
def build_mea(cfg: MEAModelConfig, input_shapes: Mapping[str, tuple], num_outputs: int, task: str):
    from ..sequence.mea import MEAModel, SequenceView

    mods = check_modalities(cfg, input_shapes)
    if len(mods) < 2:
        raise ConfigError(f"model.modalities: MEA fuses at least 2 modalities (its cross-modal attention needs a "
                          f"source), got {mods}; list two or more, or use family fusion for a unimodal model")
    # model.encoders and model.missing.imputer are rejected by MEAModelConfig (pydantic) before this
    views = {}
    for m in mods:
        try:
            views[m] = SequenceView(tuple(input_shapes[m]), m)
        except ConfigError as exc:
            raise ConfigError(f"model.modalities: {str(exc).removeprefix('MEAModel: ')}; "
                              f"leave {m!r} out with model.modalities") from None
    try:
        head = create_head(cfg.head.name, cfg.dim, num_outputs, **cfg.head.options)
    except ConfigError as exc:
        raise ConfigError(f"model.head: {exc}") from None
    try:
        return MEAModel(
            {m: v.features for m, v in views.items()}, num_outputs, dim=cfg.dim, heads=cfg.heads,
            psa_layers=cfg.psa_layers, hca_layers=cfg.hca_layers, mu=cfg.mu, graph_rounds=cfg.graph_rounds,
            alpha=cfg.alpha, beta=cfg.beta, grl_lambda=cfg.grl_lambda, dropout=cfg.dropout,
            hsic_kernel=cfg.hsic_kernel, input_shapes={m: tuple(input_shapes[m]) for m in mods}, head=head,
            modality_dropout=modality_dropout_of(cfg),
        )
    except ConfigError as exc:
        raise ConfigError(f"model: {exc}") from None
