"""The learning settings of Ngiam et al. 2011 (Table 1) as a small evaluation protocol.

Features are learned from A + V (the ``model`` is already trained); a linear classifier
(scikit-learn ``LogisticRegression``; the paper used a linear SVM) is then trained and tested on the
model's representation computed with some modalities hidden (mask False, i.e. zeroed inputs):

==================================  ===================  ============
setting                             supervised training  test
==================================  ===================  ============
multimodal fusion                   A + V                A + V
cross-modality learning             V (or A)             V (or A)
shared representation learning      A (or V)             V (or A)
==================================  ===================  ============

``model`` is anything with ``shared_representation(x, mask) -> [B, K]`` (:class:`BimodalDBN`,
:class:`ShallowBimodalRBM`, the deep autoencoders, :class:`ConcatFeatures` for raw-input baselines)
or a callable ``f(x, mask)``. A representation that is not modality-invariant scores near chance
in the shared-representation rows — exactly what the raw-feature baseline shows.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataError
from ._checks import check_dims, check_inputs, zero_absent

CLASSIFIERS = ("logreg",)


class ConcatFeatures(nn.Module):
    """Raw-feature baseline: ``[x_a; x_v]`` with absent modalities zeroed (no learned parameters)."""

    def __init__(self, input_dims: Mapping[str, int]):
        super().__init__()
        self.input_dims = check_dims("input_dims", input_dims, "ConcatFeatures")
        self.output_dim = sum(self.input_dims.values())

    @torch.no_grad()
    def shared_representation(self, x: Mapping[str, torch.Tensor],
                              mask: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        xs, present, batch = check_inputs(x, self.input_dims, "ConcatFeatures", required=False, mask=mask)
        full = zero_absent(xs, present, self.input_dims, batch)
        return torch.cat([full[m] for m in self.input_dims], dim=1)

    forward = shared_representation


def _features(model: Any, x: Mapping[str, torch.Tensor], present: Sequence[str]) -> np.ndarray:
    n = next(iter(x.values())).shape[0]
    mask = {m: torch.full((n,), m in present, dtype=torch.bool) for m in x}
    fn: Callable = model.shared_representation if hasattr(model, "shared_representation") else model
    if isinstance(model, nn.Module):
        model.eval()
    with torch.no_grad():
        z = fn(dict(x), mask)
    return z.detach().cpu().numpy().astype(np.float64)


def _split(data_splits: Mapping[str, Any], name: str) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    if name not in data_splits:
        raise ConfigError(f"evaluate_settings: data_splits needs a {name!r} split, got {sorted(data_splits)}")
    item = data_splits[name]
    if hasattr(item, "inputs") and hasattr(item, "target"):  # a MultimodalBatch
        x, y = item.inputs, item.target
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        x, y = item
    else:
        raise ConfigError(f"evaluate_settings: data_splits[{name!r}] must be (inputs dict, targets) or a "
                          f"MultimodalBatch, got {type(item).__name__}")
    if not isinstance(x, Mapping) or len(x) < 2:
        raise ConfigError(f"evaluate_settings: data_splits[{name!r}] inputs must be a dict of >= 2 modalities")
    y = np.asarray(torch.as_tensor(y).cpu()).reshape(-1)
    n = next(iter(x.values())).shape[0]
    if len(y) != n:
        raise DataError(f"evaluate_settings: split {name!r} has {n} samples but {len(y)} targets")
    return dict(x), y


def _classifier(kind: str, seed: int, **kw: Any):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=kw.pop("max_iter", 2000),
                                                              random_state=seed, **kw))


def evaluate_settings(model: Any, data_splits: Mapping[str, Any], classifier: str = "logreg",
                      modalities: Sequence[str] | None = None, seed: int = 0,
                      **classifier_kwargs: Any) -> list[dict[str, Any]]:
    """Accuracy of a linear classifier on ``model``'s features in each learning setting.

    ``data_splits``: ``{"train": (x, y), "test": (x, y)}`` with ``x: {modality: [N, D_m]}`` (all
    present) and ``y: [N]`` class ids, or MultimodalBatches. ``modalities``: the two modalities
    (default: the first two sorted keys), named A and B in the table.

    Returns a tidy table: one dict per row with ``setting``, ``train`` and ``test`` (the modalities
    given to the model, joined by "+") and ``accuracy``. The classifier standardises the features
    (fitted on the training features) before the logistic regression.
    """
    if classifier not in CLASSIFIERS:
        raise ConfigError(f"evaluate_settings: classifier must be one of {list(CLASSIFIERS)}, got {classifier!r}")
    x_tr, y_tr = _split(data_splits, "train")
    x_te, y_te = _split(data_splits, "test")
    mods = sorted(x_tr) if modalities is None else list(modalities)
    if len(mods) < 2 or any(m not in x_tr or m not in x_te for m in mods):
        raise ConfigError(f"evaluate_settings: modalities must name two modalities present in both splits, "
                          f"got {mods}; available {sorted(x_tr)}")
    a, b = mods[:2]
    plan = [("multimodal fusion", (a, b), (a, b)),
            ("cross-modality learning", (a,), (a,)),
            ("cross-modality learning", (b,), (b,)),
            ("shared representation learning", (a,), (b,)),
            ("shared representation learning", (b,), (a,))]
    cache: dict[tuple, np.ndarray] = {}

    def feats(split: str, present: tuple) -> np.ndarray:
        key = (split, present)
        if key not in cache:
            cache[key] = _features(model, x_tr if split == "train" else x_te, present)
        return cache[key]

    rows = []
    fitted: dict[tuple, Any] = {}
    for setting, train_mods, test_mods in plan:
        if train_mods not in fitted:
            clf = _classifier(classifier, seed, **dict(classifier_kwargs))
            clf.fit(feats("train", train_mods), y_tr)
            fitted[train_mods] = clf
        acc = float((fitted[train_mods].predict(feats("test", test_mods)) == y_te).mean())
        rows.append({"setting": setting, "train": "+".join(train_mods), "test": "+".join(test_mods),
                     "accuracy": acc})
    return rows


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of a list of row dicts (columns default to the first row's keys)."""
    if not rows:
        return ""
    cols = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
