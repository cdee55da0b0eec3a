"""Models for the missing-modality baselines of SMIL's av-MNIST study.

* :class:`UnimodalClassifier`: one encoder + MLP head (the *lower bound* when trained on the
  full modality alone; also the pre-training model of each encoder).
* :class:`ImputedFusionModel`: per-modality encoders (run only on present rows) → optional
  :class:`~mmfuse.missing.dropout.ModalityDropout` on the mask (training) → an imputer →
  a fusion operator (concatenation by default, or any registered ``FUSIONS`` operator) → head
  Linear → ReLU → dropout → Linear (the same head as SMIL's). With
  ``ZeroImputer`` it is the *zero-imputation* baseline (and the *upper bound* when trained on
  complete pairs), with dropout the *modality-dropout* baseline, with
  ``CrossModalImputer`` the *AE* baseline (train with ``auxiliary_loss``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from ..batch import MultimodalBatch
from ..errors import ConfigError, MissingModalityError
from ..models.output import ModelOutput
from .dropout import ModalityDropout
from .imputation import CrossModalImputer, Imputer, ZeroImputer
from .smil import encode_rows


def _dim(enc: nn.Module, m: str) -> int:
    d = getattr(enc, "output_dim", None)
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ConfigError(f"encoder for {m!r} ({type(enc).__name__}) needs an int attribute output_dim")
    return d


class UnimodalClassifier(nn.Module):
    """``encoder`` on ``modality`` → MLP head (``hidden`` widths, ReLU). The code's image
    head is 160→32→10 (``hidden=(32,)``) and its audio head 320→160→32→10 (``(160, 32)``)."""

    def __init__(self, encoder: nn.Module, modality: str, num_classes: int, hidden: Sequence[int] = (32,)):
        super().__init__()
        self.encoder, self.modality = encoder, modality
        layers: list[nn.Module] = []
        d = _dim(encoder, modality)
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        layers.append(nn.Linear(d, num_classes))
        self.head = nn.Sequential(*layers)

    def forward(self, batch: MultimodalBatch) -> ModelOutput:
        if self.modality not in batch.inputs:
            raise MissingModalityError(f"UnimodalClassifier: batch lacks modality {self.modality!r} (has {batch.modalities})")
        if not bool(batch.mask[self.modality].all()):
            raise MissingModalityError(
                f"UnimodalClassifier: {int((~batch.mask[self.modality]).sum())} rows lack {self.modality!r}; "
                "a unimodal model needs its modality in every sample"
            )
        h = self.encoder(batch.inputs[self.modality])
        return ModelOutput(logits=self.head(h), fused=h, embeddings={self.modality: h})


class ImputedFusionModel(nn.Module):
    """Feature-level fusion with missing-modality handling (see the module docs).

    ``fusion``: None for plain concatenation of the imputed embeddings, or a ``FUSIONS`` name /
    ``FusionOp`` instance, which receives ``imputer.output_mask(mask)``.
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        num_classes: int,
        imputer: Imputer | None = None,
        modality_dropout: ModalityDropout | None = None,
        fusion: str | nn.Module | None = None,
        hidden: int = 64,
        dropout: float = 0.5,
    ):
        super().__init__()
        if not isinstance(encoders, Mapping) or len(encoders) < 1:
            raise ConfigError("ImputedFusionModel: encoders must map modality names to nn.Modules")
        self.encoders = nn.ModuleDict({m: encoders[m] for m in sorted(encoders)})
        self.dims = {m: _dim(e, m) for m, e in self.encoders.items()}
        self.imputer = imputer if imputer is not None else ZeroImputer(self.dims)
        self.modality_dropout = modality_dropout
        if fusion is None:
            self.fusion = None
            fused_dim = sum(self.dims.values())
        else:
            from ..registry import FUSIONS

            self.fusion = FUSIONS.create(fusion, input_dims=self.dims)
            fused_dim = int(self.fusion.output_dim)
        self.head = nn.Sequential(nn.Linear(fused_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    def encode(self, batch: MultimodalBatch, mask: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        mask = batch.mask if mask is None else mask
        out = {}
        for m, enc in self.encoders.items():
            if m not in batch.inputs:
                raise MissingModalityError(f"ImputedFusionModel: batch lacks modality {m!r} (has {batch.modalities})")
            out[m] = encode_rows(enc, batch.inputs[m], mask[m], self.dims[m], batch.lengths.get(m))
        return out

    def forward(self, batch: MultimodalBatch) -> ModelOutput:
        mask = dict(batch.mask)
        if self.modality_dropout is not None:
            mask = self.modality_dropout.drop({m: mask[m] for m in self.encoders})
        emb = self.encode(batch, mask)
        filled, fmask = self.imputer.impute(emb, {m: mask[m] for m in self.encoders})
        if self.fusion is None:
            z = torch.cat([filled[m] for m in self.encoders], dim=1)
        else:
            z = self.fusion(filled, fmask)
        return ModelOutput(logits=self.head(z), fused=z, embeddings=filled, extras={"real": emb, "mask": mask})

    def auxiliary_loss(self, batch: MultimodalBatch, out: ModelOutput) -> Tensor:
        """The imputer's reconstruction loss (CrossModalImputer), else 0."""
        if isinstance(self.imputer, CrossModalImputer):
            return self.imputer.reconstruction_loss(out.extras["real"], out.extras["mask"])
        return out.logits.new_zeros(())
