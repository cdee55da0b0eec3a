"""Small, deterministic training and evaluation loops for the missing-modality study.

The study trains dozens of tiny models; a plain loop keeps each run to seconds and bit-for-bit
reproducible under a seed on CPU. Every model here is a plain ``nn.Module`` whose
``forward(batch)`` returns a :class:`~mmfuse.models.output.ModelOutput` (or logits), so the
project's Lightning trainer can train the same modules.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import Subset

from ..batch import Collator, MultimodalBatch
from ..errors import ConfigError, DataError
from ..models.output import ModelOutput


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU) generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def logits_of(out: Any) -> Tensor:
    if isinstance(out, ModelOutput):
        return out.logits
    if isinstance(out, Tensor):
        return out
    raise ConfigError(f"model returned {type(out).__name__}; expected a ModelOutput or a logits tensor")


def collate_fn_of(dataset: Any) -> Callable:
    """The dataset's ``collate_fn`` (unwrapping ``Subset``), else a :class:`Collator` over its modalities."""
    base = dataset
    while isinstance(base, Subset):
        base = base.dataset
    fn = getattr(base, "collate_fn", None)
    if fn is not None:
        return fn
    mods = getattr(base, "modalities", None)
    if mods is None:
        first = base[0]
        mods = [k for k in first if k != "target"]
    return Collator(mods, getattr(base, "shapes", None))


class BatchLoader:
    """Mini-batches sliced from one pre-collated :class:`MultimodalBatch` (fast for small in-memory
    data: samples are collated once, not every epoch). Reshuffles each pass with a seeded generator."""

    def __init__(self, batch: MultimodalBatch, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch, self.shuffle = batch, shuffle
        n = batch.batch_size
        self.batch_size = min(batch_size, n)
        self.drop_last = drop_last and n > self.batch_size
        self.generator = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        n = self.batch.batch_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[MultimodalBatch]:
        n = self.batch.batch_size
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for i in range(len(self)):
            yield self.batch.select(order[i * self.batch_size:(i + 1) * self.batch_size])


def collate_all(dataset: Any, indices: Sequence[int] | None = None) -> MultimodalBatch:
    """The whole dataset (or ``indices``) as one batch, via its collate function."""
    idx = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    if not idx:
        raise DataError("collate_all: the dataset (or the selected subset) is empty")
    samples = [dataset[i] for i in idx]
    batch = collate_fn_of(dataset)(samples)
    batch.index = torch.tensor(idx)
    return batch


def make_loader(dataset: Any, batch_size: int, shuffle: bool, seed: int = 0, indices: Sequence[int] | None = None,
                drop_last: bool = False) -> BatchLoader:
    """A seeded :class:`BatchLoader` over ``dataset`` (or the subset ``indices``)."""
    return BatchLoader(collate_all(dataset, indices), batch_size, shuffle, seed, drop_last)


def cycle(loader: Iterable) -> Iterator:
    """Iterate a loader forever (reshuffling every pass)."""
    while True:
        yielded = False
        for b in loader:
            yielded = True
            yield b
        if not yielded:
            raise DataError("cycle: the loader yields no batches")


def presence_indices(dataset: Any, modality: str) -> tuple[list[int], list[int]]:
    """(indices where ``modality`` is present, indices where it is absent) of a dataset of sample dicts."""
    present, absent = [], []
    for i in range(len(dataset)):
        s = dataset[i]
        if isinstance(s, tuple) and len(s) == 2 and isinstance(s[0], int):
            s = s[1]
        if not isinstance(s, Mapping):
            raise DataError(f"sample {i}: expected a dict of modality name to value, got {type(s).__name__}")
        if modality not in s and modality not in getattr(dataset, "modalities", [modality]):
            raise DataError(f"sample {i}: no modality {modality!r}; it has {sorted(k for k in s if k != 'target')}")
        (present if s.get(modality) is not None else absent).append(i)
    return present, absent


def without(batch: MultimodalBatch, modality: str) -> MultimodalBatch:
    """The batch with ``modality`` marked absent (and zeroed) in every row."""
    return batch.with_mask({modality: torch.zeros(batch.batch_size, dtype=torch.bool)})


def train_classifier(
    model: nn.Module,
    loader: Iterable[MultimodalBatch],
    epochs: int,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    step_size: int | None = None,
    gamma: float = 0.1,
    params: Iterable[nn.Parameter] | None = None,
    forward: Callable[[nn.Module, MultimodalBatch], Any] | None = None,
    extra_loss: Callable[[nn.Module, MultimodalBatch, Any], Tensor] | None = None,
    transform: Callable[[MultimodalBatch], MultimodalBatch] | None = None,
) -> list[float]:
    """Adam + optional StepLR (per epoch), cross-entropy on ``forward(model, batch)``'s logits
    plus ``extra_loss(model, batch, out)``. Returns the mean loss per epoch."""
    if epochs < 0:
        raise ConfigError(f"train_classifier: epochs must be >= 0, got {epochs}")
    params = [p for p in (model.parameters() if params is None else params) if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=gamma) if step_size else None
    history = []
    for _ in range(epochs):
        model.train()
        total, n = 0.0, 0
        for batch in loader:
            if transform is not None:
                batch = transform(batch)
            out = forward(model, batch) if forward is not None else model(batch)
            loss = F.cross_entropy(logits_of(out), batch.target.long())
            if extra_loss is not None:
                loss = loss + extra_loss(model, batch, out)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * batch.batch_size
            n += batch.batch_size
        if sched is not None:
            sched.step()
        history.append(total / max(n, 1))
    return history


@torch.no_grad()
def accuracy(model: nn.Module, loader: Iterable[MultimodalBatch],
             transform: Callable[[MultimodalBatch], MultimodalBatch] | None = None,
             forward: Callable[[nn.Module, MultimodalBatch], Any] | None = None) -> float:
    """Top-1 accuracy in eval mode (``transform`` e.g. removes a modality)."""
    was = model.training
    model.eval()
    correct = total = 0
    try:
        for batch in loader:
            if transform is not None:
                batch = transform(batch)
            out = forward(model, batch) if forward is not None else model(batch)
            pred = logits_of(out).argmax(1)
            if not torch.isfinite(logits_of(out)).all():
                raise DataError("accuracy: the model produced NaN or infinite logits")
            correct += int((pred == batch.target.long()).sum())
            total += batch.batch_size
    finally:
        model.train(was)
    return correct / max(total, 1)


@torch.no_grad()
def collect_features(encoder: nn.Module, loader: Iterable[MultimodalBatch], modality: str) -> Tensor:
    """Encoder outputs (eval mode) over the rows where ``modality`` is present -> Tensor[N, D]."""
    was = encoder.training
    encoder.eval()
    feats = []
    try:
        for batch in loader:
            rows = batch.mask[modality]
            if bool(rows.any()):
                feats.append(encoder(batch.inputs[modality][rows]).flatten(1))
    finally:
        encoder.train(was)
    if not feats:
        raise DataError(f"collect_features: no sample has modality {modality!r}")
    return torch.cat(feats)
