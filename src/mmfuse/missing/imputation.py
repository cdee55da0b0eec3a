"""Imputers: fill the embeddings of absent modalities before a feature-level fusion operator.

Every imputer is an ``nn.Module`` with ``forward(embeddings: dict, mask: dict) -> dict``: rows
where ``mask[m]`` is False are replaced, rows where it is True are returned untouched (the same
values, gradients flow through them). Modalities missing from ``mask`` count as present.
Embeddings may be Tensor[B, D], Tensor[B, T, D] (a sequence; a token is repeated over T) or, for
:class:`ZeroImputer`, any Tensor[B, *].

What mask goes to the fusion operator afterwards?
-------------------------------------------------
Fusion operators never let an absent modality's placeholder leak into their result. If the
imputed embedding were passed with ``mask`` False, masked operators (sum, mean, max, gated,
tensor, ...) would ignore it and imputation would change nothing. So each imputer has an
option ``mark_present`` (default **True**): ``imputer.output_mask(mask)`` then returns an
all-True mask for the imputed modalities ("treated as present"), and the fusion operator uses
the imputed values like real ones. With ``mark_present=False`` the original mask is kept and the
operator's own missing-modality handling applies (useful with concat, whose absent slot is
zeros anyway, or to compare both behaviours). ``impute(embeddings, mask)`` returns both::

    emb, fmask = imputer.impute(model.encode(batch), batch.mask)
    fused = fusion(emb, fmask)
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import ConfigError, MissingModalityError, ShapeError


def _check_dims(input_dims: Mapping[str, int], who: str) -> dict[str, int]:
    if not isinstance(input_dims, Mapping) or not input_dims:
        raise ConfigError(f"{who}: input_dims must map modality names to embedding widths, got {input_dims!r}")
    out = {}
    for m in sorted(input_dims):
        d = input_dims[m]
        if not isinstance(m, str) or not m or "." in m:
            raise ConfigError(f"{who}: modality names must be non-empty strings without '.', got {m!r}")
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ConfigError(f"{who}: input_dims[{m!r}] must be a positive int, got {d!r}")
        out[m] = d
    return out


def _row_mask(present: Tensor, x: Tensor, who: str, m: str) -> Tensor:
    if not isinstance(present, Tensor) or present.dim() != 1 or present.shape[0] != x.shape[0]:
        raise ShapeError(
            f"{who}: mask[{m!r}] must be a BoolTensor[{x.shape[0]}] matching the embedding's batch size, "
            f"got {getattr(present, 'shape', type(present))}"
        )
    return present.to(torch.bool).view((-1,) + (1,) * (x.dim() - 1))


class Imputer(nn.Module):
    """Base class. Subclasses implement ``fill(m, x, present) -> Tensor`` of ``x``'s shape."""

    def __init__(self, mark_present: bool = True):
        super().__init__()
        if not isinstance(mark_present, bool):
            raise ConfigError(f"{type(self).__name__}: mark_present must be True or False, got {mark_present!r}")
        self.mark_present = mark_present

    def fill(self, m: str, x: Tensor, present: Tensor, embeddings: Mapping[str, Tensor], mask: Mapping[str, Tensor]) -> Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    def _validate(self, embeddings: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None) -> None:
        who = type(self).__name__
        if not isinstance(embeddings, Mapping) or not embeddings:
            raise ConfigError(f"{who}: embeddings must be a non-empty dict {{modality: Tensor[B, D]}}")
        if mask is not None and not isinstance(mask, Mapping):
            raise ConfigError(f"{who}: mask must be a dict {{modality: BoolTensor[B]}} or None")
        for m, x in embeddings.items():
            if not isinstance(x, Tensor) or x.dim() < 1:
                raise ShapeError(f"{who}: embeddings[{m!r}] must be a tensor with a batch axis, got {type(x).__name__}")

    def forward(self, embeddings: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        self._validate(embeddings, mask)
        out: dict[str, Tensor] = {}
        for m in sorted(embeddings):
            x = embeddings[m]
            if mask is None or m not in mask:
                out[m] = x
                continue
            present = _row_mask(mask[m], x, type(self).__name__, m)
            if bool(present.all()):
                out[m] = x
                self.observe(m, x, present)
                continue
            filled = self.fill(m, x, present, embeddings, mask)
            out[m] = torch.where(present, x, filled.to(x.dtype))
            self.observe(m, x, present)
        return out

    def observe(self, m: str, x: Tensor, present: Tensor) -> None:
        """Hook for imputers that learn statistics from present rows (training mode)."""

    def output_mask(self, mask: Mapping[str, Tensor] | None) -> dict[str, Tensor] | None:
        """The mask to hand the fusion operator after imputation (see the module docs)."""
        if mask is None:
            return None
        if not self.mark_present:
            return dict(mask)
        return {m: torch.ones_like(v, dtype=torch.bool) for m, v in mask.items()}

    def impute(self, embeddings: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None):
        """``(imputed embeddings, mask for the fusion operator)``."""
        return self(embeddings, mask), self.output_mask(mask)

    def extra_repr(self) -> str:
        return f"mark_present={self.mark_present}"


class ZeroImputer(Imputer):
    """Absent rows become zeros (what :func:`mmfuse.batch.collate` puts in the input anyway;
    at the embedding level it differs from ``encoder(zeros)``)."""

    def __init__(self, input_dims: Mapping[str, int] | None = None, mark_present: bool = True):
        super().__init__(mark_present)
        self.input_dims = None if input_dims is None else _check_dims(input_dims, "ZeroImputer")

    def fill(self, m, x, present, embeddings, mask):
        return torch.zeros_like(x)


class _PerModality(Imputer):
    def __init__(self, input_dims: Mapping[str, int], mark_present: bool = True):
        super().__init__(mark_present)
        self.input_dims = _check_dims(input_dims, type(self).__name__)

    def _dim_check(self, m: str, x: Tensor) -> None:
        if m not in self.input_dims:
            raise MissingModalityError(
                f"{type(self).__name__}: modality {m!r} is absent in some rows but the imputer was built for "
                f"{sorted(self.input_dims)}; add it to input_dims"
            )
        if x.dim() not in (2, 3) or x.shape[-1] != self.input_dims[m]:
            raise ShapeError(
                f"{type(self).__name__}: embeddings[{m!r}] has shape {tuple(x.shape)}, expected (B, {self.input_dims[m]}) "
                f"or (B, T, {self.input_dims[m]})"
            )


class LearnedTokenImputer(_PerModality):
    """Absent rows become a learned vector per modality (an ``nn.Parameter`` of width D_m,
    initialised at zero so that training starts from zero imputation)."""

    def __init__(self, input_dims: Mapping[str, int], mark_present: bool = True, init_std: float = 0.0):
        super().__init__(input_dims, mark_present)
        self.tokens = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(d) * float(init_std)) for m, d in self.input_dims.items()}
        )

    def fill(self, m, x, present, embeddings, mask):
        self._dim_check(m, x)
        return self.tokens[m].to(x.dtype).expand_as(x)


class MeanImputer(_PerModality):
    """Absent rows become the mean embedding of the present rows seen in training.

    The mean lives in a buffer ``mean_<m>`` (saved in ``state_dict``). In training mode it is
    updated (without gradient) from the present rows of every batch: a cumulative average when
    ``momentum`` is None (default), else ``mean ← (1 - momentum)·mean + momentum·batch_mean``.
    The mean is taken over the batch (and over T for sequences). Before any update it is zero.
    """

    def __init__(self, input_dims: Mapping[str, int], mark_present: bool = True, momentum: float | None = None):
        super().__init__(input_dims, mark_present)
        if momentum is not None and (isinstance(momentum, bool) or not 0.0 < float(momentum) <= 1.0):
            raise ConfigError(f"MeanImputer: momentum must be None or in (0, 1], got {momentum!r}")
        self.momentum = momentum
        for m, d in self.input_dims.items():
            self.register_buffer(f"mean_{m}", torch.zeros(d))
            self.register_buffer(f"count_{m}", torch.zeros((), dtype=torch.float64))

    def running_mean(self, m: str) -> Tensor:
        return getattr(self, f"mean_{m}")

    def fill(self, m, x, present, embeddings, mask):
        self._dim_check(m, x)
        return self.running_mean(m).to(x.dtype).expand_as(x)

    @torch.no_grad()
    def observe(self, m, x, present):
        if not self.training or m not in self.input_dims:
            return
        self._dim_check(m, x)
        rows = x[present.view(-1)].detach()
        if rows.shape[0] == 0:
            return
        rows = rows.reshape(-1, rows.shape[-1]).to(self.running_mean(m).dtype)
        mean, count = self.running_mean(m), getattr(self, f"count_{m}")
        n = rows.shape[0]
        if self.momentum is None:
            total = count + n
            mean.mul_((count / total).to(mean.dtype)).add_(rows.sum(0) / total.to(mean.dtype))
        else:
            batch_mean = rows.mean(0)
            mean.copy_(batch_mean if count == 0 else (1 - self.momentum) * mean + self.momentum * batch_mean)
        count.add_(n)

    def extra_repr(self) -> str:
        return f"input_dims={self.input_dims}, momentum={self.momentum}, mark_present={self.mark_present}"


class CrossModalImputer(_PerModality):
    """Predict an absent modality's embedding from the other modalities' embeddings (the
    "AE"/regressor baseline of SMIL): for each target ``m``, an MLP maps the concatenation of the
    other modalities' embeddings (their absent rows zeroed) to D_m.

    Train it with ``reconstruction_loss(embeddings, mask)``: the MSE between prediction and the
    real embedding on rows where the target is present (the target is detached by default, so
    the loss does not pull the target encoder towards the predictor).
    Only vector embeddings Tensor[B, D] are supported.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        targets: Sequence[str] | None = None,
        hidden: int = 256,
        mark_present: bool = True,
        detach_target: bool = True,
    ):
        super().__init__(input_dims, mark_present)
        if len(self.input_dims) < 2:
            raise ConfigError("CrossModalImputer: needs at least two modalities (sources and a target)")
        targets = list(self.input_dims) if targets is None else list(targets)
        for t in targets:
            if t not in self.input_dims:
                raise ConfigError(f"CrossModalImputer: target {t!r} is not in input_dims {sorted(self.input_dims)}")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ConfigError(f"CrossModalImputer: hidden must be a positive int, got {hidden!r}")
        self.targets = sorted(targets)
        self.detach_target = detach_target
        self.predictors = nn.ModuleDict()
        for t in self.targets:
            d_in = sum(d for m, d in self.input_dims.items() if m != t)
            self.predictors[t] = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, self.input_dims[t]))

    def predict(self, target: str, embeddings: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None) -> Tensor:
        parts = []
        for m in self.input_dims:
            if m == target:
                continue
            if m not in embeddings:
                raise MissingModalityError(f"CrossModalImputer: source modality {m!r} missing from embeddings")
            x = embeddings[m]
            if x.dim() != 2 or x.shape[-1] != self.input_dims[m]:
                raise ShapeError(f"CrossModalImputer: embeddings[{m!r}] must be (B, {self.input_dims[m]}), got {tuple(x.shape)}")
            if mask is not None and m in mask:
                x = x * mask[m].to(x.dtype).view(-1, 1)
            parts.append(x)
        return self.predictors[target](torch.cat(parts, dim=-1))

    def fill(self, m, x, present, embeddings, mask):
        self._dim_check(m, x)
        if m not in self.predictors:
            raise MissingModalityError(
                f"CrossModalImputer: modality {m!r} is absent in some rows but is not a target ({self.targets}); "
                "add it to targets"
            )
        return self.predict(m, embeddings, mask)

    def reconstruction_loss(self, embeddings: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None) -> Tensor:
        """Mean over targets of the MSE on rows where the target (and so a label for it) is present."""
        losses = []
        for t in self.targets:
            y = embeddings[t].detach() if self.detach_target else embeddings[t]
            rows = torch.ones(y.shape[0], dtype=torch.bool, device=y.device) if mask is None or t not in mask else mask[t]
            if not bool(rows.any()):
                continue
            pred = self.predict(t, embeddings, mask)
            losses.append(F.mse_loss(pred[rows], y[rows]))
        if not losses:
            ref = next(iter(embeddings.values()))
            return ref.new_zeros(()) + sum(p.sum() * 0 for p in self.parameters())
        return torch.stack(losses).mean()
