"""Evaluation of a model on a dataset, overall and per missing-modality pattern, in two senses:

* **simulated** (``report["patterns"]``): a pattern is the set of modalities *kept* at test time;
  every other modality is hidden through the batch mask (the model's own missing-modality path) in
  every row. A modality a row really lacks stays absent (a hidden placeholder is never shown as data),
  so the all-kept pattern is exactly the overall figure.
* **observed** (``report["observed"]``): the rows grouped by what each row really has (its own mask,
  restricted to the modalities the model uses), with ``n`` rows per pattern; nothing is hidden.
  Rows with no modality present form the pattern ``"none"`` and are also flagged in
  ``report["rows_without_modality"]`` (their count and dataset indices).
"""

from __future__ import annotations

from itertools import combinations
from typing import Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from ..batch import MultimodalBatch, _check_finite
from ..errors import DataError
from .metrics import compute_metrics, dataset_metrics


class Indexed(torch.utils.data.Dataset):
    """Yields ``(index, sample)`` so that collate errors name the dataset index of a bad sample."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return int(i), self.dataset[i]


class Batched(torch.utils.data.Dataset):
    """Vectorised batches: ``view[list of indices]`` is ``dataset.batch(indices)``, checked for NaN/inf.

    Used for in-memory datasets that implement ``batch`` (``ArrayDataset``): one gather per
    modality instead of a Python loop over samples (the collate step was ~15 % of an epoch).
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices) -> MultimodalBatch:
        b = self.dataset.batch(indices)
        idx = b.index.tolist()
        for m, x in b.inputs.items():
            _check_finite(x, b.mask[m], idx, m)
        return b


def _identity(x):
    return x


class ChunkedRandomSampler(RandomSampler):
    """``RandomSampler``'s order (the same draws of its generator, so the same batches and the same resumed
    state), yielded from the permutation tensor a chunk at a time: torch's own ``__iter__`` turns the whole
    permutation into a list of n Python ints (~36 bytes a row held for the epoch)."""

    CHUNK = 4096

    def __iter__(self):
        if self.replacement or self.generator is None:
            yield from super().__iter__()
            return
        n, g = len(self.data_source), self.generator
        for _ in range(self.num_samples // n):
            for part in torch.randperm(n, generator=g).split(self.CHUNK):
                yield from part.tolist()
        yield from torch.randperm(n, generator=g)[: self.num_samples % n].tolist()  # as torch: a second draw


class WorkerLoader(DataLoader):
    """A ``DataLoader`` whose worker processes end with the pass that needs them: its iterator asks for the batch
    after the one it yields (the same batches, in the same order), so the pass's last batch is followed by the
    ``next`` that ends torch's iterator, which shuts its workers down then. Lightning stops a pass after ``len``
    batches without that ``next``: the training loader's workers stayed alive through the validation loop (four
    worker processes with two validation workers), and the validation loader's through the next epoch. The C heap
    is trimmed before the workers start and every :data:`~mmfuse.datasets.streaming.TRIM_EVERY` batches while the
    batches arrive (:func:`~mmfuse.datasets.streaming.trim_every`)."""

    def __iter__(self):
        from ..datasets.streaming import trim_every, trim_heap

        trim_heap()  # before the workers fork: the heap's free pages are not inherited (copied on their writes)
        it = super().__iter__()
        end = object()
        item = next(it, end)
        while item is not end:
            ahead = next(it, end)  # after the last batch: StopIteration inside torch, the workers shut down
            trim_every()  # this process unpickles the workers' batches: its freed blocks are handed back too
            yield item
            item = ahead


def make_loader(dataset, batch_size: int = 256, shuffle: bool = False, seed: int = 0, num_workers: int = 0) -> DataLoader:
    """A DataLoader of ``MultimodalBatch`` over ``dataset``, with a seeded batch order.

    Error messages name the dataset index of a bad sample: batches carry ``index``. With ``num_workers`` > 0 a
    :class:`WorkerLoader` (its workers end with each pass).
    """
    g = torch.Generator()
    g.manual_seed(seed)
    cls = WorkerLoader if num_workers > 0 else DataLoader
    if callable(getattr(dataset, "batch", None)):
        base = ChunkedRandomSampler(dataset, generator=g) if shuffle else SequentialSampler(dataset)
        return cls(Batched(dataset), batch_size=None, sampler=BatchSampler(base, batch_size, drop_last=False),
                   collate_fn=_identity, num_workers=num_workers)
    return cls(Indexed(dataset), batch_size=batch_size, shuffle=shuffle, collate_fn=dataset.collate_fn,
               generator=g, num_workers=num_workers)


@torch.no_grad()
def collect(model: nn.Module, loader: Iterable[MultimodalBatch], keep: Iterable[str] | None = None,
            embeddings: bool = False, masks: bool = False) -> dict[str, np.ndarray]:
    """Run ``model`` in eval mode; returns scores [N, K], targets, and optionally fused/unimodal embeddings.

    Regression scores are on the targets' original scale (``model.target_scale`` inverted, when set).

    ``keep``: hide every modality not in ``keep`` (a row's really-absent modality stays absent).
    ``masks``: also return each row's real presence ``present_<modality>`` [N] (before ``keep``) and its
    dataset ``index`` [N].
    """
    was = model.training
    model.eval()
    out: dict[str, list] = {"scores": [], "target": []}
    try:
        for batch in loader:
            if masks:
                for m, v in batch.mask.items():
                    out.setdefault(f"present_{m}", []).append(v.bool().cpu())
                if batch.index is not None:
                    out.setdefault("index", []).append(torch.as_tensor(batch.index).cpu())
            if keep is not None:
                keep_set = set(keep)
                batch = batch.with_mask({m: v.bool() & (m in keep_set) for m, v in batch.mask.items()})
            o = model(batch)
            out["scores"].append(o.logits.float().cpu())
            if batch.target is not None:
                out["target"].append(batch.target.cpu())
            if embeddings:
                if o.fused is not None:
                    out.setdefault("fused", []).append(o.fused.float().cpu())
                for m, e in o.embeddings.items():
                    out.setdefault(f"emb_{m}", []).append(e.float().cpu())
    finally:
        model.train(was)
    res = {k: torch.cat(v).numpy() for k, v in out.items() if v}
    scale = getattr(model, "target_scale", None)  # regression trained on standardised targets: original scale
    if scale is not None and "scores" in res:
        res["scores"] = scale.invert(res["scores"])
    return res


def patterns_of(modalities: list[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of modalities, largest first."""
    mods = sorted(modalities)
    return [c for r in range(len(mods), 0, -1) for c in combinations(mods, r)]


def pattern_name(pattern: Iterable[str]) -> str:
    return "+".join(sorted(pattern))


NO_MODALITY = "none"


def observed_patterns(res: dict[str, np.ndarray], modalities: Iterable[str], task: str) -> dict:
    """Metrics per *observed* presence pattern of the rows of ``res`` (a :func:`collect` result with
    ``masks=True``), over ``modalities``: ``{"observed": {pattern: {"n": rows, "metrics": {...}}},
    "rows_without_modality": {"n": rows, "index": [dataset indices]}}``. Patterns are listed largest
    first (as :func:`patterns_of`), then ``"none"``; a pattern no row has is left out."""
    mods = sorted(modalities)
    n = len(res["scores"])
    present = np.stack([np.asarray(res[f"present_{m}"], dtype=bool) if f"present_{m}" in res else np.zeros(n, bool)
                        for m in mods], 1) if mods else np.zeros((n, 0), bool)
    index = np.asarray(res["index"]) if "index" in res and len(res["index"]) == n else np.arange(n)
    out: dict = {}
    for p in patterns_of(mods) + [()]:
        want = np.array([m in p for m in mods], dtype=bool)
        rows = np.flatnonzero((present == want).all(1))
        if len(rows):
            out[pattern_name(p) or NO_MODALITY] = {
                "n": int(len(rows)), "metrics": compute_metrics(task, res["scores"][rows], res["target"][rows])}
    none = np.flatnonzero(~present.any(1))
    return {"observed": out, "rows_without_modality": {"n": int(len(none)), "index": [int(i) for i in index[none]]}}


def evaluate(model: nn.Module, dataset, task: str, batch_size: int = 256, per_pattern: bool = True,
             modalities: list[str] | None = None, observed: bool = True) -> dict:
    """``{"metrics": {...}, "patterns": {...}, "observed": {...}, "rows_without_modality": {...}}``.

    ``patterns`` (when ``per_pattern``): *simulated* patterns, ``{"audio+image": metrics, "audio": metrics,
    ...}``, the modalities named kept and the others hidden in every row. ``observed`` (when ``observed``):
    the rows grouped by the modalities they really have, ``{"audio+image": {"n": 54, "metrics": {...}},
    ..., "none": {...}}`` (see :func:`observed_patterns`).
    """
    if len(dataset) == 0:
        raise DataError(f"evaluate: the evaluation set {getattr(dataset, 'name', '')!r} is empty (no rows); give "
                        "a split with rows (check the split fractions, or --split) before evaluating")
    loader = make_loader(dataset, batch_size)
    res = collect(model, loader, masks=observed)
    report = {"metrics": compute_metrics(task, res["scores"], res["target"]), "patterns": {}}
    report["metrics"].update(dataset_metrics(dataset, task, res["scores"], res["target"]))  # e.g. MOSI's Acc-2/Acc-7
    mods = modalities or getattr(model, "modalities", None) or dataset.modalities
    if observed:
        report.update(observed_patterns(res, list(mods), task))
        ids = getattr(dataset, "ids", None)
        none = report["rows_without_modality"]
        if ids is not None and len(ids) == len(dataset) and none["n"]:
            none["ids"] = [int(ids[i]) for i in none["index"]]  # the rows' identifiers in their source table
    if per_pattern:
        for p in patterns_of(list(mods)):
            if set(p) == set(mods):  # every modality the model uses present: the overall run already is this
                report["patterns"][pattern_name(p)] = dict(report["metrics"])
                continue
            r = collect(model, loader, keep=p)
            report["patterns"][pattern_name(p)] = compute_metrics(task, r["scores"], r["target"])
    return report
