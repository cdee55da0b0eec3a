"""``MultimodalModel``: encoders, then fusion, then a head — the *when* of fusion as a strategy.

Strategies
- ``early``: aligned modalities are joined along ``early_axis`` (of one sample) before one encoder.
- ``feature``: one encoder per modality, one fusion operator over the embeddings, one head.
- ``late``: one encoder and head per modality; a combiner merges the per-modality logits.
- ``intermediate``: staged encoders exchange information between stages (see ``models/intermediate.py``).

Shape legend: B batch, D_m embedding width of modality m, D fused width, K outputs.
Absent modalities (mask False) are zeros at the input; the fusion operator or the late combiner
keeps them out of the result (see ``fusion/base.py``).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from ..batch import MultimodalBatch, require_modalities
from ..encoders.base import call_encoder, frozen_forward, is_frozen
from ..errors import ConfigError, MissingModalityError, ShapeError
from ..fusion.base import FusionOp
from .output import ModelOutput

STRATEGIES = ("early", "feature", "late", "intermediate")
PRESENT_KEY = "present."  # ModelOutput.extras[PRESENT_KEY + m]: where modality m was present (after modality dropout)


def _pool(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Tensor[B, T, D] (zero-padded) -> Tensor[B, D] masked mean over real positions."""
    if lengths is None:
        return x.mean(1)
    valid = (torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]).to(x.dtype)
    return (x * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp_min(1.0)


def _imputed_lengths(emb: Mapping[str, Tensor], before: Mapping[str, Tensor], after: Mapping[str, Tensor] | None,
                     lengths: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Sequence lengths after imputation: rows the imputer filled and marked present get length 1.

    An absent row of a variable-length modality has length 0, so its imputed tokens (the imputer
    repeats one vector over all T positions of Tensor[B, T, D]) would all count as padding: a
    sequence fusion operator would ignore them and a learned token would never get a gradient.
    The imputed modality is one token (position 0), not T copies: with T copies the result would
    depend on the padded length of the batch (cross_attention's null key weighs against the
    number of keys). Rows still absent (imputer with ``mark_present=False``) keep their length.
    """
    out = dict(lengths)
    if after is None:
        return out
    for m, e in emb.items():
        if e.dim() != 3 or m not in out or m not in before or m not in after:
            continue
        filled = after[m].to(torch.bool) & ~before[m].to(torch.bool)
        if bool(filled.any()):
            ln = out[m]
            out[m] = torch.where(filled.to(ln.device), torch.ones_like(ln), ln)
    return out


class MultimodalModel(nn.Module):
    """A plain ``nn.Module``: ``forward(batch) -> ModelOutput``; usable without any trainer."""

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        head: nn.Module | Mapping[str, nn.Module],
        strategy: str = "feature",
        fusion: FusionOp | None = None,
        late_combiner: nn.Module | None = None,
        early_modalities: list[str] | None = None,
        early_axis: int = 0,
        modality_dropout: nn.Module | None = None,
        imputer: nn.Module | None = None,
    ):
        super().__init__()
        if strategy not in STRATEGIES[:3]:
            raise ConfigError(f"model.strategy: expected one of {STRATEGIES[:3]} here, got {strategy!r}"
                              + ("; build intermediate fusion with IntermediateFusionModel" if strategy == "intermediate" else ""))
        self.strategy = strategy
        self.encoders = nn.ModuleDict(dict(sorted(encoders.items())))
        self.fusion = fusion
        self.late_combiner = late_combiner
        self.modality_dropout = modality_dropout
        self.imputer = imputer
        self.early_modalities = sorted(early_modalities or [])
        self.early_axis = early_axis
        if strategy == "late":
            if not isinstance(head, Mapping) or set(head) != set(self.encoders):
                raise ConfigError("late fusion needs one head per modality (a dict with the encoders' keys)")
            if late_combiner is None:
                raise ConfigError("late fusion needs a late_combiner (e.g. 'mean_prob')")
            self.heads = nn.ModuleDict(dict(sorted(head.items())))
        else:
            if strategy == "feature" and fusion is None:
                raise ConfigError("feature fusion needs a fusion operator (model.fusion.name)")
            if strategy == "early" and (len(self.encoders) != 1 or not self.early_modalities):
                raise ConfigError("early fusion needs exactly one encoder and the list of modalities it joins")
            self.head = head

    @property
    def modalities(self) -> list[str]:
        return self.early_modalities if self.strategy == "early" else list(self.encoders)

    def encode(self, batch: MultimodalBatch, pool: bool = True) -> dict[str, Tensor]:
        """Per-modality embeddings: Tensor[B, D_m] (or Tensor[B, T, D_m] for sequence encoders when not pooled)."""
        return {m: self.encode_modality(m, batch.inputs[m], batch.lengths.get(m), pool) for m in self.encoders}

    def encode_modality(self, m: str, x: Tensor, lengths: Tensor | None = None, pool: bool = True) -> Tensor:
        """Modality ``m``'s embeddings of its inputs Tensor[N, *] alone (one row's embedding depends on that row only)."""
        enc = self.encoders[m]
        cache = self.__dict__.get("embedding_cache")  # mmfuse.embedding_cache.EmbeddingCache, when attached
        try:
            h = cache.lookup(m, x, lengths) if cache is not None else None
            if h is None:
                # a frozen encoder runs on fixed-size chunks: a row's embedding is the same floats in any batch,
                # so cached and fresh embeddings agree exactly (see encoders/base.py:frozen_forward)
                h = frozen_forward(enc, x, lengths) if is_frozen(enc) else call_encoder(enc, x, lengths)
        except ShapeError as exc:
            raise ShapeError(f"modality {m!r}: {exc}; the model was built for this modality's shape in the "
                             "training data, give inputs of that shape") from None
        if h.dim() == 3 and pool:
            h = _pool(h, lengths)
        return h

    # --- explanation split (mmfuse.explain): encode each modality alone, then fusion + head on embeddings ---

    def explain_split(self) -> bool:
        """True when ``forward`` (eval mode) equals :meth:`explain_decode` of per-modality :meth:`encode_modality`
        outputs: feature and late strategies (each encoder sees its own modality only; an absent modality is
        its zero input's embedding with mask False). Early fusion joins the inputs before one encoder: False."""
        return self.strategy in ("feature", "late") and type(self).forward is MultimodalModel.forward

    def explain_pool(self) -> bool:
        """Whether :meth:`explain_decode` expects pooled embeddings (False for sequence fusion operators)."""
        return not (self.strategy == "feature" and getattr(self.fusion, "accepts_sequences", False))

    def explain_decode(self, emb: Mapping[str, Tensor], mask: Mapping[str, Tensor],
                       lengths: Mapping[str, Tensor]) -> Tensor:
        """Logits Tensor[N, K] from per-modality embeddings (as :meth:`encode_modality` with ``pool=explain_pool()``
        gives them), presence masks and lengths of N rows: the part of ``forward`` after the encoders, in eval mode."""
        emb, lengths = dict(emb), dict(lengths)
        if self.imputer is not None:
            emb, new_mask = self.imputer.impute(emb, mask)
            lengths = _imputed_lengths(emb, mask, new_mask, lengths)
            mask = new_mask
        if self.strategy == "late":
            return self.late_combiner({m: self.heads[m](emb[m]) for m in self.encoders}, mask)
        kwargs = {}
        if not self.explain_pool():
            kwargs["token_mask"] = {
                m: torch.arange(e.shape[1], device=e.device)[None] < lengths[m][:, None]
                for m, e in emb.items() if e.dim() == 3 and m in lengths
            }
        return self.head(self.fusion(emb, mask, **kwargs))

    def forward(self, batch: MultimodalBatch) -> ModelOutput:
        require_modalities(batch, self.modalities)
        if self.training and self.modality_dropout is not None:
            batch = batch.with_mask(self.modality_dropout({m: batch.mask[m] for m in self.modalities}))
        present = {PRESENT_KEY + m: batch.mask[m] for m in self.modalities}
        if self.strategy == "early":
            out = self._forward_early(batch)
            out.extras.update(present)
            return out
        seq = self.strategy == "feature" and getattr(self.fusion, "accepts_sequences", False)
        emb = self.encode(batch, pool=not seq)
        mask = batch.mask
        lengths = dict(batch.lengths)
        losses = {}
        if self.imputer is not None:
            if self.training and hasattr(self.imputer, "reconstruction_loss"):  # e.g. the cross_modal regressor
                losses["imputer_reconstruction"] = self.imputer.reconstruction_loss(emb, mask)
            emb, mask = self.imputer.impute(emb, mask)
            lengths = _imputed_lengths(emb, batch.mask, mask, lengths)
        if self.strategy == "late":
            logits = {m: self.heads[m](emb[m]) for m in self.encoders}
            fused = self.late_combiner(logits, mask)
            return ModelOutput(fused, None, emb, logits, present, losses)
        kwargs = {}
        if seq:
            kwargs["token_mask"] = {
                m: torch.arange(e.shape[1], device=e.device)[None] < lengths[m][:, None]
                for m, e in emb.items() if e.dim() == 3 and m in lengths
            }
        fused = self.fusion(emb, mask, **kwargs)
        pooled = {m: (_pool(e, lengths.get(m)) if e.dim() == 3 else e) for m, e in emb.items()}
        return ModelOutput(self.head(fused), fused, pooled, None, present, losses)

    def _forward_early(self, batch: MultimodalBatch) -> ModelOutput:
        xs = [batch.inputs[m] for m in self.early_modalities]
        shapes = {m: tuple(x.shape[1:]) for m, x in zip(self.early_modalities, xs)}
        axis = self.early_axis % (xs[0].dim() - 1) + 1
        ref = xs[0].shape
        for m, x in zip(self.early_modalities, xs):
            if x.dim() != len(ref) or any(a != b for i, (a, b) in enumerate(zip(x.shape, ref)) if i != axis):
                raise MissingModalityError(
                    f"early fusion joins modalities along axis {self.early_axis}; their other dims must match, "
                    f"got per-sample shapes {shapes}. Use feature or late fusion for modalities that are not aligned"
                )
        (name, enc), = self.encoders.items()
        h = enc(torch.cat([x.float() for x in xs], dim=axis))
        return ModelOutput(self.head(h), h, {name: h})
