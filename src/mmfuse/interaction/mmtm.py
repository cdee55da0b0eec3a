"""MMTM: the Multimodal Transfer Module (Joze, Shaban, Iuzzolino, Koishida, CVPR 2020).

MMTM is a squeeze-and-excitation block shared by k >= 2 CNN streams. It recalibrates each stream's
channels with a gate computed from *all* streams, and returns features of the same shapes, so it
can be dropped between the stages of unimodal networks.

Shape legend: B batch, C_i channels of stream i, ``*`` any number of spatial/temporal dims
(none for a plain vector ``(B, C_i)``), C_Z the joint width. Features are channel-first.

Equations, for streams ``A_1 .. A_k`` with ``A_i: Tensor[B, C_i, *]``::

    s_i = mean of A_i over every dim but batch and channel          # squeeze  [B, C_i]
    Z   = act(W [s_1; ...; s_k] + b)                                 # joint    [B, C_Z]
    E_i = W_i Z + b_i                                                # excite   [B, C_i]
    out_i = gate_scale * sigmoid(E_i) (broadcast over *) * A_i       # gate

Presets (the paper and the released code disagree; see ``shared/specs/01-mmtm.md`` and
``specs/08-seed-vs-reference.md`` items 1-3):

=========  ============  ===================  =====  ==================================================
preset     gate_scale    C_Z                  ReLU   source
=========  ============  ===================  =====  ==================================================
"paper"    2 (gate 0-2)  int(sum C_i / 4)     on     paper eq. 3-5 (2*sigma gate, C_Z = (C+C')/4)
"code"     1 (gate 0-1)  int(sum C_i / 2)     on     reference code: sigmoid gate,
                                                     C_Z = int(2*(C+C')/ratio) with ratio=4
=========  ============  ===================  =====  ==================================================

ReLU is on in *both* presets. The paper's eq. 3 (as transcribed) shows no activation, but the
reference code applies ReLU after the joint FC, and the released numbers come from that code.
Without an activation the joint and excitation FCs collapse into one low-rank linear map. Pass
``relu=False`` to get the literal eq. 3. Any explicit ``gate_scale``, ``reduction``
(``C_Z = int(sum C_i / reduction)``, at least 1), ``joint_dim`` (the C_Z itself, which wins over
``reduction``) or ``relu`` overrides the preset.

``init="default"`` keeps PyTorch's ``nn.Linear`` init, as the reference code does (its
``init_weights`` hook only prints). Every gate then starts near ``gate_scale * 0.5``.
``init="identity"`` zeroes the excitation weights and biases: E_i is 0 and every gate equals
``gate_scale / 2``. That is exactly 1 with the paper's 2*sigma gate, so the block starts as the
identity and can be inserted between pretrained unimodal networks.

More than two streams (**inferred**): the official code only has the 2-stream module. This class
concatenates all k squeezes, uses one shared joint FC and k independent excitation FCs (held in an
``nn.ModuleDict`` keyed by stream name). This is the natural generalisation of the paper's
description.

Stream names may contain ``.`` (which ``nn.ModuleDict`` keys cannot): the parameter key of a
stream is :func:`stream_key` of its name (``.`` -> ``%2E``, ``%`` -> ``%25``; other names are
their own key, so state dicts of dot-free names are unchanged). Features, masks and gates are
always keyed by the stream's real name.

Absent streams (``mask[m][b]`` False). An absent stream's placeholder features (whatever its
encoder made of the zero input) must not steer the other streams. Its squeeze is replaced by a
substitute before the joint FC:

* ``absent="zero"`` (default): zeros. Then ``W_i s_i = 0`` and the absent stream adds nothing to
  Z, which depends only on the present streams and the bias. There is no rescaling. The streams
  enter Z through different weight blocks ``W_j``, so no single factor could make up for the
  missing term. A rescale would also turn a half-missing batch into one that looks like an
  out-of-distribution full one.
* ``absent="learned"``: a learned per-stream token (``nn.Parameter[C_i]``, initialised to zeros, so
  it starts out equal to ``"zero"``). Train it with modality dropout so that Z learns what "stream
  i missing" means. It adds sum C_i parameters.

An absent stream's own output is its input, unchanged (its gate is forced to exactly 1). The
present streams are still gated as usual.

Speed: the k excitation FCs run as one linear map (their weights concatenated, ``[sum C_i, C_Z]``),
so all gates come from one GEMM. When no mask is given (every stream present: what
``IntermediateFusionModel`` passes then) the whole block is one autograd function (``_FusedMMTM``):
its forward makes two passes over each feature map (squeeze, gate); its backward makes two more: one
read-only pass for the gate gradient (the dot product of every (sample, channel) row of the incoming
gradient with the input) and one that writes the input gradient ``grad * g + ds / N``; in between, the
small FC chain's backward runs by hand. The two passes use batch norm's kernels on a ``(1, B*C, N)``
view, with mean 0 and variance 1 (so they compute exactly a per-row dot product and a per-row affine map);
the composed ops would materialise the product, sum it, multiply and add (five passes). Tensors
those kernels do not take (not contiguous, e.g. channels-last or a broadcast gradient; other dtypes) or
do not speed up (smaller than ``ROW_KERNEL_MIN_BYTES``, about an L2 cache, or with short rows) use the
product-and-sum form. Double backward (``create_graph=True``) recomputes the block
with differentiable ops, so it stays exact. With a mask, the block uses the composed ops
(``_Squeeze``, ``_ChannelGate``: fewer passes than the plain ops, same gradients including double
backward). Both paths compute the forward with the same ops, so their outputs are bitwise equal.
``benchmarks/mmtm_overhead.py`` measures the cost.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from ..errors import ConfigError, MissingModalityError, ShapeError
from ..registry import INTERACTIONS

PRESETS: dict[str, dict[str, float | bool]] = {
    "paper": {"gate_scale": 2.0, "reduction": 4.0, "relu": True},
    "code": {"gate_scale": 1.0, "reduction": 2.0, "relu": True},
}
INITS = ("default", "identity")
ABSENT_MODES = ("zero", "learned")


def stream_key(name: str) -> str:
    """``name`` as an ``nn.ModuleDict`` / ``nn.ParameterDict`` key: ``%`` -> ``%25``, ``.`` -> ``%2E``.

    Injective (distinct names get distinct keys) and the identity on names without ``.`` or ``%``.
    """
    return name.replace("%", "%25").replace(".", "%2E")


class _Squeeze(torch.autograd.Function):
    """Mean over dims 2.. whose backward returns a broadcast *view* of ``grad / N``.

    The built-in mean materialises that full-size gradient. Here autograd adds the view straight
    into the gradient that arrives through the gate, which saves one pass over the feature map.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.shape = x.shape
        return x.flatten(2).mean(-1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        shape = ctx.shape
        n = 1
        for s in shape[2:]:
            n *= int(s)
        return (grad / n).view(grad.shape + (1,) * (len(shape) - 2)).expand(shape)


class _ChannelGate(torch.autograd.Function):
    """``x * g`` broadcast channel-wise (x: [B, C, *], g: [B, C]).

    The backward computes the gate gradient as a batched dot product (``bmm``), without materialising ``grad * x``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, g: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, g)
        return x * g.view(g.shape + (1,) * (x.dim() - 2))

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, g = ctx.saved_tensors
        gx = gg = None
        if ctx.needs_input_grad[0]:
            gx = grad * g.view(g.shape + (1,) * (x.dim() - 2))
        if ctx.needs_input_grad[1]:
            # one dot product per (sample, channel): read-only row kernel when it applies (not under
            # create_graph, whose double backward needs differentiable ops), else product and sum (measured
            # faster than a bmm of B*C 1xN by Nx1 products: 2.3x at 128 channels of 28x28)
            if not torch.is_grad_enabled() and _row_kernels_apply(grad, x, g):
                gg = _row_dots(grad, x)
            else:
                gg = (grad * x).flatten(2).sum(-1)
        return gx, gg


def squeeze(x: Tensor) -> Tensor:
    """Mean over every dim except batch and channel: Tensor[B, C, *] -> Tensor[B, C]."""
    if x.dim() == 2:
        return x
    return _Squeeze.apply(x)


def channel_gate(x: Tensor, g: Tensor) -> Tensor:
    """``x`` (Tensor[B, C, *]) times the gate ``g`` (Tensor[B, C]) broadcast over the remaining dims."""
    if x.dim() == 2:
        return x * g
    return _ChannelGate.apply(x, g)


def _joint_and_gates(s: Tensor, wj: Tensor, bj: Tensor, we: Tensor, be: Tensor, relu: bool, scale: float):
    """The FC chain on the concatenated squeezes ``s`` [B, sum C]: (pre-activation a, Z, sigmoid(E), gates)."""
    a = torch.nn.functional.linear(s, wj, bj)  # [B, C_Z]
    z = torch.relu(a) if relu else a
    sig = torch.sigmoid(torch.nn.functional.linear(z, we, be))  # [B, sum C]: every stream's E at once
    g = sig * scale if scale != 1.0 else sig
    return a, z, sig, g


def _bcast(t: Tensor, like: Tensor) -> Tensor:
    """``t`` [B, C] viewed as [B, C, 1, ...] to broadcast against ``like`` [B, C, *]."""
    return t.view(t.shape + (1,) * (like.dim() - 2))


#: The backward's per-row kernels pay a fixed cost per (sample, channel) row; they win only on feature maps
#: larger than a core's L2 cache (below it the extra passes of the product-and-sum form hit the cache) with
#: rows of some length. Measured per stream (CPU, 1 thread): 16x128x28x28 and 16x256x14x14 faster
#: (4.6 -> 4.1 ms, 2.3 -> 2.0 ms), the demo's 128x16x14x14 (1.6 MB) and 128x32x20 slower.
ROW_KERNEL_MIN_BYTES = 2 << 20
ROW_KERNEL_MIN_LENGTH = 32


def _row_kernels_apply(gr: Tensor, x: Tensor, g: Tensor) -> bool:
    """True when the backward uses the per-row kernels below: ``x`` [B, C, *] of rank > 2 on the CPU (where
    they were measured) with ``gr`` and ``g`` of the same float32 / float64 dtype, ``gr`` and ``x`` contiguous
    (viewable as rows), of at least :data:`ROW_KERNEL_MIN_BYTES` bytes with rows of at least
    :data:`ROW_KERNEL_MIN_LENGTH` positions."""
    return (
        x.dim() > 2 and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
        and gr.dtype == x.dtype and g.dtype == x.dtype
        and x.numel() * x.element_size() >= max(1, ROW_KERNEL_MIN_BYTES)
        and x.numel() >= ROW_KERNEL_MIN_LENGTH * x.shape[0] * x.shape[1]
        and x.is_contiguous() and gr.is_contiguous() and gr.shape == x.shape
    )


def _row_dots(gr: Tensor, x: Tensor) -> Tensor:
    """``(gr * x).flatten(2).sum(-1)`` [B, C] in one read-only pass over ``gr`` and ``x`` (no full-size product).

    Batch norm's backward computes, per channel, ``grad_weight = sum (x - mean) * invstd * grad``. On the
    ``(1, B*C, N)`` view of the two tensors, with mean 0 and invstd 1 (eval mode, running mean 0, running var
    1, eps 0: both exact), that is the dot product of every (sample, channel) row. Measured about 1.4x as fast
    as the product and sum at 128 channels of 28x28 and 256 of 14x14 (``benchmarks/README.md``, MMTM overhead).
    """
    n = x.shape[0] * x.shape[1]
    rows = (1, n, -1)
    return torch.ops.aten.native_batch_norm_backward(
        gr.view(rows), x.view(rows), None, x.new_zeros(n), x.new_ones(n), None, None, False, 0.0,
        [False, True, False])[1].view(x.shape[:2])


def _row_affine(gr: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """``gr * scale + shift`` for ``scale``, ``shift`` [B, C] broadcast over ``gr`` [B, C, *]'s positions: a new
    tensor, in one pass. Batch norm in eval mode on the ``(1, B*C, N)`` view (running mean 0, running var 1,
    eps 0, weight ``scale``, bias ``shift``) is exactly this per-row affine map; the multiply-then-add takes
    two passes over the result (the fused form may round once instead of twice)."""
    n = gr.shape[0] * gr.shape[1]
    return torch.batch_norm(gr.view(1, n, -1), scale.reshape(n), shift.reshape(n), gr.new_zeros(n), gr.new_ones(n),
                            False, 0.0, 0.0, False).view(gr.shape)


class _FusedMMTM(torch.autograd.Function):
    """The whole block for k present streams: ``(x_1..x_k, W_joint, b_joint, W_1..W_k, b_1..b_k) -> k outputs``.

    ``W_i`` [C_i, C_Z] / ``b_i`` [C_i] are the excitation FCs; they are concatenated inside (one GEMM for
    every gate) and get their own gradients back (None for a stream whose output has no gradient, as
    with separate FCs).
    Same forward ops as ``MMTM._gates`` without a mask (bitwise equal outputs); the backward is
    written out (see the module docstring) and, under ``create_graph``, recomputes the block with
    differentiable ops so that higher derivatives stay exact.
    """

    @staticmethod
    def forward(ctx, relu: bool, scale: float, k: int, *args: Tensor):  # type: ignore[override]
        xs, wj, bj = args[:k], args[k], args[k + 1]
        we, be = torch.cat(args[k + 2:2 * k + 2], 0), torch.cat(args[2 * k + 2:], 0)
        s = torch.cat([x.flatten(2).mean(-1) if x.dim() > 2 else x for x in xs], dim=1)
        a, z, sig, g = _joint_and_gates(s, wj, bj, we, be, relu, scale)
        gs = g.split([x.shape[1] for x in xs], dim=1)
        outs = tuple(x * _bcast(gi, x) for x, gi in zip(xs, gs))
        ctx.relu, ctx.scale, ctx.k = relu, scale, k
        ctx.set_materialize_grads(False)  # an output off the loss's path gives None (no zero-filled pass)
        ctx.save_for_backward(*xs, *args[k:], we, s, a, z, sig)
        return outs

    @staticmethod
    def backward(ctx, *grads: Tensor | None):  # type: ignore[override]
        k, relu, scale = ctx.k, ctx.relu, ctx.scale
        saved = ctx.saved_tensors
        xs, params, (we, s, a, z, sig) = saved[:k], saved[k:3 * k + 2], saved[3 * k + 2:]
        wj = params[0]
        needs = ctx.needs_input_grad[3:]
        if torch.is_grad_enabled():  # create_graph: differentiable recomputation (double backward)
            return (None, None, None) + _recompute_grads(xs, params, grads, needs, relu, scale)
        chans = [x.shape[1] for x in xs]
        B = s.shape[0]
        g = sig * scale if scale != 1.0 else sig
        # gate gradient sum_p grad * x per (sample, channel): one read-only pass where the row kernels apply,
        # else the product (kept as the buffer of the input gradient: a fresh full-size buffer costs page
        # faults on CPU) and its channel sums
        dg, bufs = [], []
        for x, gr, gi, c in zip(xs, grads, g.split(chans, 1), chans):
            t = None
            if gr is None:
                dg.append(x.new_zeros(B, c))
            elif x.dim() == 2:
                dg.append(gr * x)
            elif _row_kernels_apply(gr, x, gi):
                dg.append(_row_dots(gr, x))
            else:
                t = gr * x
                dg.append(t.flatten(2).sum(-1))
            bufs.append(t)
        dE = torch.cat(dg, dim=1) * (sig * (1 - sig))
        if scale != 1.0:
            dE = dE * scale
        dz = dE @ we  # [B, C_Z]
        da = dz * (a > 0) if relu else dz
        ds = da @ wj  # [B, sum C]
        out: list[Tensor | None] = []
        for i, (x, gr, t, gi, dsi) in enumerate(zip(xs, grads, bufs, g.split(chans, 1), ds.split(chans, 1))):
            if not needs[i]:
                out.append(None)
                continue
            n = 1
            for d in x.shape[2:]:
                n *= int(d)
            dsi = dsi / n if n != 1 else dsi
            if gr is None:
                out.append(_bcast(dsi, x).expand_as(x).clone())
            elif x.dim() == 2:
                out.append(torch.mul(gr, gi).add_(dsi))
            elif t is None:  # grad * g + ds / N in one pass
                out.append(_row_affine(gr, gi, dsi))
            else:  # the same, written into the product's buffer (no new full-size allocation)
                out.append(torch.mul(gr, _bcast(gi, x), out=t).add_(_bcast(dsi, x)))
        out += [da.t() @ s if needs[k] else None, da.sum(0) if needs[k + 1] else None]
        dEs = dE.split(chans, 1)
        out += [dEs[i].t() @ z if needs[k + 2 + i] and grads[i] is not None else None for i in range(k)]
        out += [dEs[i].sum(0) if needs[2 * k + 2 + i] and grads[i] is not None else None for i in range(k)]
        return (None, None, None, *out)


def _recompute_grads(xs, params, grads, needs, relu: bool, scale: float) -> tuple:
    """The block's input / parameter gradients through differentiable ops (for ``create_graph``)."""
    k = len(xs)
    wj, bj = params[0], params[1]
    we, be = torch.cat(params[2:k + 2], 0), torch.cat(params[k + 2:], 0)
    s = torch.cat([squeeze(x) for x in xs], dim=1)
    g = _joint_and_gates(s, wj, bj, we, be, relu, scale)[3]
    outs = [channel_gate(x, gi) for x, gi in zip(xs, g.split([x.shape[1] for x in xs], 1))]
    pairs = [(o, gr) for o, gr in zip(outs, grads) if gr is not None]
    inputs = [t for t, n in zip((*xs, *params), needs) if n]
    got = iter(torch.autograd.grad([o for o, _ in pairs], inputs, [gr for _, gr in pairs], create_graph=True,
                                   allow_unused=True) if pairs and inputs else ())
    res = []
    for t, n in zip((*xs, *params), needs):
        if not n:
            res.append(None)
            continue
        v = next(got, None)
        res.append(torch.zeros_like(t) if v is None else v)
    return tuple(res)


def _positive_number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != value:
        raise ConfigError(f"MMTM: {name} must be a positive number, got {value!r}")
    return float(value)


class MMTM(nn.Module):
    """Multimodal Transfer Module for k >= 2 channel-first streams of any rank >= 2.

    Args:
        channels: stream name -> number of channels ``C_i`` (dim 1 of that stream's features).
        preset: ``"paper"`` (2*sigma gate, C_Z = sum C / 4) or ``"code"`` (sigma gate, C_Z = sum C / 2).
            The table in the module docstring gives the details.
        gate_scale: the factor in front of the sigmoid. It overrides the preset.
        reduction: ``C_Z = max(1, int(sum C_i / reduction))``. It overrides the preset.
        joint_dim: C_Z given directly. It overrides ``reduction``.
        relu: apply ReLU to the joint representation Z. It overrides the preset (on in both).
        init: ``"default"`` (PyTorch's Linear init) or ``"identity"`` (the excitation FCs are zeroed).
        absent: the squeeze substitute for absent streams: ``"zero"`` or ``"learned"``.

    ``forward(features, mask=None)`` takes and returns ``dict[name, Tensor[B, C_i, *]]`` with the same
    keys and shapes. ``mask[name]`` is a ``BoolTensor[B]``, True where the stream is present.
    """

    def __init__(
        self,
        channels: Mapping[str, int],
        preset: str = "paper",
        gate_scale: float | None = None,
        reduction: float | None = None,
        joint_dim: int | None = None,
        relu: bool | None = None,
        init: str = "default",
        absent: str = "zero",
    ):
        super().__init__()
        if not isinstance(channels, Mapping) or len(channels) < 2:
            raise ConfigError(
                f"MMTM: channels must map at least 2 stream names to channel counts, got {channels!r}; "
                "MMTM recalibrates each stream from the others, so it needs two streams or more"
            )
        chans: dict[str, int] = {}
        for name in sorted(channels, key=str):
            c = channels[name]
            if not isinstance(name, str) or not name:
                raise ConfigError(f"MMTM: stream names must be non-empty strings, got {name!r}")
            if isinstance(c, bool) or not isinstance(c, int) or c < 1:
                raise ConfigError(f"MMTM: channels[{name!r}] must be a positive int, got {c!r}")
            chans[name] = c
        if preset not in PRESETS:
            raise ConfigError(f"MMTM: unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        if init not in INITS:
            raise ConfigError(f"MMTM: unknown init {init!r}; choose one of {list(INITS)}")
        if absent not in ABSENT_MODES:
            raise ConfigError(f"MMTM: unknown absent mode {absent!r}; choose one of {list(ABSENT_MODES)}")
        p = PRESETS[preset]
        self.preset = preset
        self.channels = chans
        self.streams = list(chans)
        self.gate_scale = _positive_number(p["gate_scale"] if gate_scale is None else gate_scale, "gate_scale")
        total = sum(chans.values())
        if joint_dim is not None:
            if isinstance(joint_dim, bool) or not isinstance(joint_dim, int) or joint_dim < 1:
                raise ConfigError(f"MMTM: joint_dim must be a positive int, got {joint_dim!r}")
            self.joint_dim = joint_dim
        else:
            r = _positive_number(p["reduction"] if reduction is None else reduction, "reduction")
            self.joint_dim = max(1, int(total / r))
        if relu is not None and not isinstance(relu, bool):
            raise ConfigError(f"MMTM: relu must be True, False or None (preset default), got {relu!r}")
        self.relu = bool(p["relu"]) if relu is None else relu
        self.init = init
        self.absent = absent

        self.joint = nn.Linear(total, self.joint_dim)
        self.excitation = nn.ModuleDict({stream_key(m): nn.Linear(self.joint_dim, c) for m, c in chans.items()})
        if absent == "learned":
            self.absent_token = nn.ParameterDict({stream_key(m): nn.Parameter(torch.zeros(c)) for m, c in chans.items()})
        else:
            self.absent_token = None
        if init == "identity":
            self.reset_identity()

    def reset_identity(self) -> None:
        """Zero every excitation FC, so every gate is ``gate_scale / 2`` (identity for the 2*sigma gate)."""
        with torch.no_grad():
            for fc in self.excitation.values():
                fc.weight.zero_()
                fc.bias.zero_()

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, joint_dim={self.joint_dim}, gate_scale={self.gate_scale:g}, "
            f"relu={self.relu}, preset={self.preset!r}, init={self.init!r}, absent={self.absent!r}"
        )

    # ------------------------------------------------------------------ validation
    def _check(self, features: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None) -> int:
        if not isinstance(features, Mapping):
            raise ShapeError(f"MMTM: features must be a dict of stream name to tensor, got {type(features).__name__}")
        unknown = sorted(set(features) - set(self.channels))
        if unknown:
            raise MissingModalityError(
                f"MMTM: unknown stream {unknown[0]!r}; this block was built for streams {self.streams}"
            )
        missing = [m for m in self.streams if m not in features]
        if missing:
            raise MissingModalityError(
                f"MMTM: features lack stream {missing[0]!r}; this block was built for {self.streams}. "
                "Pass every stream (for an absent one, its placeholder features with mask False)"
            )
        B = None
        for m in self.streams:
            x = features[m]
            if not isinstance(x, Tensor):
                raise ShapeError(f"MMTM: stream {m!r} must be a tensor, got {type(x).__name__}")
            if x.dim() < 2:
                raise ShapeError(
                    f"MMTM: stream {m!r} has shape {tuple(x.shape)} (rank {x.dim()}); expected channel-first "
                    f"(B, {self.channels[m]}, *) of rank >= 2"
                )
            if x.shape[1] != self.channels[m]:
                raise ShapeError(
                    f"MMTM: stream {m!r} has {x.shape[1]} channels (shape {tuple(x.shape)}), but the block was built "
                    f"with channels[{m!r}] = {self.channels[m]}; features must be channel-first (B, C, *)"
                )
            if B is None:
                B = int(x.shape[0])
            elif x.shape[0] != B:
                raise ShapeError(f"MMTM: stream {m!r} has batch size {x.shape[0]}, but {self.streams[0]!r} has {B}")
        assert B is not None
        if mask is not None:
            if not isinstance(mask, Mapping):
                raise ShapeError(f"MMTM: mask must be a dict of stream name to BoolTensor[B], got {type(mask).__name__}")
            unknown = sorted(set(mask) - set(self.channels))
            if unknown:
                raise MissingModalityError(
                    f"MMTM: mask names unknown stream {unknown[0]!r}; this block was built for {self.streams}"
                )
            for m, v in mask.items():
                if not isinstance(v, Tensor) or v.dtype != torch.bool or tuple(v.shape) != (B,):
                    raise ShapeError(
                        f"MMTM: mask[{m!r}] must be a BoolTensor of shape ({B},), got "
                        + (f"{v.dtype} of shape {tuple(v.shape)}" if isinstance(v, Tensor) else type(v).__name__)
                    )
        return B

    # ------------------------------------------------------------------ computation
    def gates(self, features: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The per-stream channel gates ``{name: Tensor[B, C_i]}`` (exactly 1 for absent samples)."""
        self._check(features, mask)
        return self._gates(features, mask)

    def _exc_params(self) -> tuple[Tensor, Tensor]:
        """The k excitation FCs as one linear map: weight [sum C_i, C_Z], bias [sum C_i] (stream order)."""
        fcs = [self.excitation[stream_key(m)] for m in self.streams]
        return torch.cat([fc.weight for fc in fcs], 0), torch.cat([fc.bias for fc in fcs], 0)

    def _gates(self, features: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        squeezes = []
        for m in self.streams:
            s = squeeze(features[m])
            if mask is not None and m in mask:
                present = mask[m].unsqueeze(1)
                if self.absent_token is not None:
                    fill = self.absent_token[stream_key(m)].to(s.dtype).expand_as(s)
                else:
                    fill = torch.zeros((), dtype=s.dtype, device=s.device)
                s = torch.where(present, s, fill)
            squeezes.append(s)
        we, be = self._exc_params()
        g_all = _joint_and_gates(torch.cat(squeezes, dim=1), self.joint.weight, self.joint.bias, we, be,
                                 self.relu, self.gate_scale)[3]
        out = {}
        for m, g in zip(self.streams, g_all.split([self.channels[m] for m in self.streams], dim=1)):
            if mask is not None and m in mask:
                g = torch.where(mask[m].unsqueeze(1), g, torch.ones((), dtype=g.dtype, device=g.device))
            out[m] = g
        return out

    def forward(self, features: Mapping[str, Tensor], mask: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        self._check(features, mask)
        if not mask:  # no mask (every stream present): the fused block, same forward ops as below
            fcs = [self.excitation[stream_key(m)] for m in self.streams]
            outs = _FusedMMTM.apply(self.relu, self.gate_scale, len(self.streams),
                                    *(features[m] for m in self.streams), self.joint.weight, self.joint.bias,
                                    *(fc.weight for fc in fcs), *(fc.bias for fc in fcs))
            return dict(zip(self.streams, outs))
        gates = self._gates(features, mask)
        return {m: channel_gate(features[m], gates[m]) for m in self.streams}


INTERACTIONS.register("mmtm", MMTM, search_space={"model.block_options.reduction": {"choices": [1.0, 2.0, 4.0, 8.0]}})
