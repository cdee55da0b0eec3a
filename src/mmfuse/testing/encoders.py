"""Checks for encoders: ``factory() -> enc`` (``input_shape`` and options from the entry's
``test_options``) with ``enc(x, lengths=None)`` -> Tensor[B, D] (vector), Tensor[B, T, D]
(sequence) or Tensor[B, C, *] (feature map).

Inputs: ``randn`` of one sample's ``input_shape`` per row (a ``None`` axis gets length 7); token ids
in ``[1, vocab_size)`` when the options set ``vocab_size``. Encoders whose first axis is ``None``
(variable length) are also checked with ``lengths``: padding positions must not leak.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..encoders.base import OUTPUT_KINDS
from ._core import round_trip, grads_of, Case, CheckSkipped, accumulate, check, close, fail, grads_reach

SEQ_LEN = 7


def _data(case: Case, batch: int, gen: torch.Generator) -> Tensor:
    shape = tuple(SEQ_LEN if s is None else int(s) for s in case.spec.get("input_shape", (6,)))
    vocab = case.spec.get("vocab_size")
    if vocab:
        return torch.randint(1, int(vocab), (batch, *shape), generator=gen)
    return torch.randn(batch, *shape, generator=gen)


def _positive(x: Tensor) -> Tensor:
    return x.abs() + 0.1 if x.is_floating_point() else x  # keep ReLUs alive


@check("encoder")
def check_output_contract(case: Case) -> None:
    """``output_kind`` is known, ``output_dim`` a positive int, and the output has the declared shape."""
    enc = case.build().eval()
    kind, dim = getattr(enc, "output_kind", "vector"), getattr(enc, "output_dim", None)
    if kind not in OUTPUT_KINDS:
        fail(f"output_kind must be one of {OUTPUT_KINDS}, got {kind!r}")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        fail(f"output_dim must be a positive int, got {dim!r}")
    x = _data(case, 3, torch.Generator().manual_seed(case.seed))
    with torch.no_grad():
        y = enc(x)
    want = {"vector": (3, dim), "sequence": (3, x.shape[1], dim)}.get(kind)
    if want is not None and tuple(y.shape) != want:
        fail(f"a {kind} encoder must return shape {want}, got {tuple(y.shape)}")
    if kind == "feature_map" and (y.dim() < 3 or y.shape[:2] != (3, dim)):
        fail(f"a feature_map encoder must return (3, {dim}, ...), got {tuple(y.shape)}")
    if not y.is_floating_point() or not torch.isfinite(y).all():
        fail("the output must be a finite floating-point tensor")


@check("encoder")
def check_gradients(case: Case, rounds: int = 2) -> None:
    """loss = sum(out^2) gives every trainable parameter a finite, non-zero gradient."""
    enc = case.build().train()
    if not any(p.requires_grad for p in enc.parameters()):
        raise CheckSkipped("the encoder has no trainable parameters")
    gen = torch.Generator().manual_seed(case.seed + 1)
    totals: dict[str, float] = {}
    for _ in range(rounds):
        enc.zero_grad()
        grads_of(enc(_positive(_data(case, 4, gen))).pow(2).sum())
        accumulate(enc, totals)
    grads_reach(enc, totals)


@check("encoder")
def check_state_dict(case: Case) -> None:
    """state_dict loaded into an instance built with another seed gives identical outputs."""
    enc = case.build().eval()
    other = case.build(seed=case.seed + 7919).eval()
    x = _data(case, 5, torch.Generator().manual_seed(case.seed + 2))
    round_trip(enc, other, lambda m: m(x))


@check("encoder")
def check_batch_independence(case: Case) -> None:
    """In eval mode, row 0's output does not change when the other rows change."""
    enc = case.build().eval()
    gen = torch.Generator().manual_seed(case.seed + 3)
    x = _data(case, 5, gen)
    with torch.no_grad():
        y = enc(x)
        x2 = x.clone()
        x2[1:] = _data(case, 4, gen)
        if not close(enc(x2)[0], y[0], 1e-5):
            fail("row 0 changed when only the other rows changed")


@check("encoder")
def check_determinism(case: Case) -> None:
    """The same seed builds the same encoder; eval calls repeat exactly."""
    a, b = case.build().eval(), case.build().eval()
    x = _data(case, 4, torch.Generator().manual_seed(case.seed + 4))
    with torch.no_grad():
        y = a(x)
        if not torch.equal(y, b(x)) or not torch.equal(y, a(x)):
            fail("two encoders built with the same seed (or two eval calls) give different outputs")


@check("encoder")
def check_padding(case: Case) -> None:
    """(variable-length inputs) values past a row's length change nothing; neither does extra padding."""
    shape = tuple(case.spec.get("input_shape", (6,)))
    if not shape or shape[0] is not None:
        raise CheckSkipped("the input has a fixed first axis (no padding)")
    enc = case.build().eval()
    gen = torch.Generator().manual_seed(case.seed + 5)
    x = _data(case, 3, gen)
    lengths = torch.tensor([4, SEQ_LEN, 1])
    with torch.no_grad():
        y = enc(x, lengths)
        x2 = x.clone()
        fresh = _data(case, 3, gen)
        for r, n in enumerate(lengths.tolist()):
            x2[r, n:] = fresh[r, n:]
        if not close(enc(x2, lengths), y, 1e-5):
            fail("values in padding positions (past lengths) changed the output")
        longer = torch.cat([x, _data(case, 3, gen)[:, :2]], dim=1)
        y_long = enc(longer, lengths)
        if getattr(enc, "output_kind", "vector") == "sequence":
            y_long = y_long[:, : x.shape[1]]
        if not close(y_long, y, 1e-5):
            fail("extra padding (a longer padded length) changed the output")


@check("encoder")
def check_stages(case: Case) -> None:
    """(StagedEncoder) each stage yields ``stage_channels`` channels; ``finish`` of the last stage = forward."""
    from ..encoders.base import StagedEncoder

    enc = case.build().eval()
    if not isinstance(enc, StagedEncoder):
        raise CheckSkipped("not a StagedEncoder")
    if len(enc.stages) != len(enc.stage_channels) or len(enc.stages) == 0:
        fail(f"{len(enc.stages)} stages but stage_channels {enc.stage_channels}")
    x = _data(case, 2, torch.Generator().manual_seed(case.seed + 6))
    with torch.no_grad():
        h = x
        for i, (stage, c) in enumerate(zip(enc.stages, enc.stage_channels)):
            h = stage(h)
            if h.shape[1] != c:
                fail(f"stage {i} gives {h.shape[1]} channels, stage_channels says {c}")
        if not close(enc.finish(h), enc(x), 1e-6):
            fail("finish(stages(x)) differs from forward(x)")
