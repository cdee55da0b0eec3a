"""Prediction heads: ``linear`` and ``mlp``; built as ``create_head(name, in_dim, out_dim, **options)``.

The task (multiclass, multilabel, regression) only changes the loss and the metrics, not the
head: every head returns raw scores Tensor[B, K] (logits, or regression outputs).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import HEADS


class MLPHead(nn.Module):
    """(B, D) -> [Linear -> ReLU -> Dropout] x len(hidden) -> Linear -> (B, K).

    Without hidden layers (the ``linear`` head) the dropout applies to the input of the one
    Linear layer: (B, D) -> Dropout -> Linear -> (B, K). Dropout is active in training mode only.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden=(), dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"head: dropout must be in [0, 1), got {dropout}")
        hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden or ())
        for what, v in (("in_dim", in_dim), ("out_dim (the number of outputs)", out_dim), *(("hidden", h) for h in hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"head: {what} must be a positive int, got {v!r}"
                                  + ("; use e.g. model.head.options.hidden: [64] (or [] for no hidden layer)"
                                     if what == "hidden" else
                                     "; pass the number of classes, labels or regression targets (>= 1)"
                                     if what.startswith("out_dim") else "; pass the width of the fused vector (>= 1)"))
        layers, d = [], in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(), nn.Dropout(dropout)]
            d = h
        layers.append(nn.Linear(d, out_dim))
        # a module of its own (no parameters), so ``net``'s state-dict keys do not depend on dropout
        self.input_dropout = nn.Dropout(dropout) if not hidden and dropout > 0 else nn.Identity()
        self.net = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.input_dropout(x))


@HEADS.register("linear")
def linear(in_dim: int, out_dim: int, dropout: float = 0.0):
    return MLPHead(in_dim, out_dim, (), dropout)


@HEADS.register("mlp", test_options={"hidden": (6,), "dropout": 0.5})
def mlp(in_dim: int, out_dim: int, hidden=(64,), dropout: float = 0.0):
    return MLPHead(in_dim, out_dim, hidden, dropout)


def create_head(name_or_module, in_dim: int, out_dim: int, **options) -> nn.Module:
    if isinstance(name_or_module, nn.Module):
        return name_or_module
    return HEADS.create(name_or_module, in_dim=in_dim, out_dim=out_dim, **options)
