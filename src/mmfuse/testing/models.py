"""Checks for model families (registry ``MODELS``): ``factory(input_shapes, num_outputs, task) -> model``
with ``model(batch: MultimodalBatch) -> ModelOutput``.

The entry's ``test_options`` are its tiny ``model`` config (``family`` is added); ``test_shapes``
gives one sample's shape per modality (default ``{"a": (6,), "b": (4,)}``; a ``None`` axis gets
length 5 with ``batch.lengths``), ``test_vocab`` ``{modality: vocab_size}`` makes a modality
integer token ids, and ``test_no_grad`` lists parameter-name prefixes the training loss of a freshly
built model does not reach by design (e.g. parameters a scheme trains in its own step). The batch holds every presence pattern once (none present included) plus
random rows. The training loss is the one of :class:`mmfuse.training.system.FusionSystem`:
task loss + unimodal losses + ``sum(out.losses)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..batch import MultimodalBatch
from ._core import round_trip, grads_of, Case, accumulate, check, close, describe_row, fail, grads_reach, pattern_mask, target

DEFAULT_SHAPES = {"a": (6,), "b": (4,)}
SEQ_LEN = 5


def _shapes(case: Case) -> dict[str, tuple]:
    return {m: tuple(s) for m, s in dict(case.spec.get("shapes") or DEFAULT_SHAPES).items()}


def _values(case: Case, m: str, shape: tuple, batch: int, gen: torch.Generator) -> Tensor:
    full = tuple(SEQ_LEN if s is None else int(s) for s in shape)
    vocab = (case.spec.get("vocab") or {}).get(m)
    if vocab:
        return torch.randint(1, int(vocab), (batch, *full), generator=gen)
    return torch.randn(batch, *full, generator=gen)


def _batch(case: Case, gen: torch.Generator, extra: int = 2) -> MultimodalBatch:
    shapes = _shapes(case)
    mask = pattern_mask(shapes, extra, gen)
    batch = len(next(iter(mask.values())))
    xs, lengths = {}, {}
    for m, shape in shapes.items():
        x = _values(case, m, shape, batch, gen)
        if shape and shape[0] is None:
            ln = torch.randint(1, SEQ_LEN + 1, (batch,), generator=gen) * mask[m]
            keep = torch.arange(SEQ_LEN)[None] < ln[:, None]
            x = torch.where(keep.view(batch, SEQ_LEN, *([1] * (x.dim() - 2))), x, torch.zeros((), dtype=x.dtype))
            lengths[m] = ln
        keep = mask[m].view(-1, *([1] * (x.dim() - 1)))
        xs[m] = torch.where(keep, x, torch.zeros((), dtype=x.dtype))
    y = target(case.task, batch, case.num_outputs, gen)
    return MultimodalBatch(xs, mask, y, lengths, torch.arange(batch))


def _build(case: Case, seed: int | None = None):
    return case.build(_shapes(case), case.num_outputs, case.task, seed=seed)


def _logits(model, batch: MultimodalBatch) -> Tensor:
    from ..models.output import ModelOutput

    out = model(batch)
    if not isinstance(out, ModelOutput):
        fail(f"forward must return a ModelOutput, got {type(out).__name__}")
    return out.logits


def _loss(case: Case, model, batch: MultimodalBatch, out) -> Tensor:
    from ..config import TrainingConfig
    from ..training.system import FusionSystem

    system = FusionSystem(model, case.task, TrainingConfig(), family=case.name)
    return system.compute_loss(batch, out)


@check("model")
def check_output(case: Case) -> None:
    """Eval forward returns a ModelOutput with finite float logits Tensor[B, K] (K = the task's outputs)
    for every presence pattern, the row with every modality absent included."""
    gen = torch.Generator().manual_seed(case.seed)
    batch = _batch(case, gen)
    model = _build(case).eval()
    with torch.no_grad():
        logits = _logits(model, batch)
    want = (batch.batch_size, case.num_outputs)
    if not isinstance(logits, Tensor) or tuple(logits.shape) != want or not logits.is_floating_point():
        fail(f"logits must be a float tensor of shape {want} for a {case.task} task with "
             f"{case.num_outputs} outputs, got {getattr(logits, 'shape', type(logits))}")
    for r in range(batch.batch_size):
        if not torch.isfinite(logits[r]).all():
            fail(f"non-finite logits for presence pattern {describe_row(batch.mask, r)}")


@check("model")
def check_train_loss(case: Case, rounds: int = 2) -> None:
    """Train mode: every ``out.losses`` entry is a finite scalar tensor; the training loss (task loss +
    unimodal + sum(out.losses)) is finite and its backward reaches every trainable parameter."""
    gen = torch.Generator().manual_seed(case.seed + 1)
    model = _build(case).train()
    totals: dict[str, float] = {}
    for _ in range(rounds):
        batch = _batch(case, gen, extra=4)
        model.zero_grad()
        out = model(batch)
        for k, v in (getattr(out, "losses", None) or {}).items():
            if not isinstance(v, Tensor) or v.dim() != 0:
                fail(f"out.losses[{k!r}] must be a scalar tensor, got {getattr(v, 'shape', type(v))}")
            if not torch.isfinite(v):
                fail(f"out.losses[{k!r}] is not finite: {float(v)}")
        loss = _loss(case, model, batch, out)
        if loss.dim() != 0 or not torch.isfinite(loss):
            fail(f"the training loss is not a finite scalar: {loss}")
        grads_of(loss)
        accumulate(model, totals)
    grads_reach(model, totals, exempt=tuple(case.spec.get("no_grad") or ()))


@check("model")
def check_state_dict(case: Case) -> None:
    """state_dict loaded into a model built with another seed gives identical eval outputs."""
    batch = _batch(case, torch.Generator().manual_seed(case.seed + 2))
    model = _build(case).eval()
    other = _build(case, seed=case.seed + 7919).eval()
    round_trip(model, other, lambda m: _logits(m, batch))


@check("model")
def check_determinism(case: Case) -> None:
    """Eval is deterministic: two calls agree, and two models built with the same seed agree."""
    batch = _batch(case, torch.Generator().manual_seed(case.seed + 3))
    a, b = _build(case).eval(), _build(case).eval()
    with torch.no_grad():
        y = _logits(a, batch)
        if not torch.equal(y, _logits(a, batch)):
            fail("two eval calls on the same batch give different outputs")
        if not torch.equal(y, _logits(b, batch)):
            fail("two models built with the same seed give different outputs")


@check("model")
def check_batch_independence(case: Case) -> None:
    """In eval mode, a row's logits do not change when the other rows (values and masks) change."""
    gen = torch.Generator().manual_seed(case.seed + 4)
    batch = _batch(case, gen)
    other = _batch(case, gen)
    model = _build(case).eval()
    with torch.no_grad():
        ref = _logits(model, batch)
        for r in range(batch.batch_size):
            keep = torch.arange(batch.batch_size) == r
            mixed = MultimodalBatch(
                {m: torch.where(keep.view(-1, *([1] * (x.dim() - 1))), x, other.inputs[m]) for m, x in batch.inputs.items()},
                {m: torch.where(keep, v, other.mask[m]) for m, v in batch.mask.items()},
                batch.target, {m: torch.where(keep, v, other.lengths[m]) for m, v in batch.lengths.items()}, batch.index)
            if not close(_logits(model, mixed)[r], ref[r], 1e-5):
                fail(f"row {r} ({describe_row(batch.mask, r)}) changed when only the other rows changed")


@check("model")
def check_no_leak(case: Case) -> None:
    """Under every presence pattern, the placeholder values of an absent modality change nothing."""
    gen = torch.Generator().manual_seed(case.seed + 5)
    batch = _batch(case, gen)
    model = _build(case).eval()
    with torch.no_grad():
        ref = _logits(model, batch)
        for m, shape in _shapes(case).items():
            x = batch.inputs[m]
            noise = _values(case, m, shape, batch.batch_size, gen)
            if noise.is_floating_point():
                noise = noise * 10
            absent = ~batch.mask[m]
            x2 = torch.where(absent.view(-1, *([1] * (x.dim() - 1))), noise, x)
            out = _logits(model, MultimodalBatch({**batch.inputs, m: x2}, batch.mask, batch.target, batch.lengths, batch.index))
            for r in range(batch.batch_size):
                if not close(out[r], ref[r], 1e-5):
                    fail(f"the placeholder of absent modality {m!r} changed the logits for pattern "
                         f"{describe_row(batch.mask, r)}")
