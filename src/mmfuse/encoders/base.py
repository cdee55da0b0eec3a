"""The encoder contract.

An encoder is an ``nn.Module`` with ``output_dim: int`` and ``output_kind`` in
{"vector", "sequence", "feature_map"}; ``forward(x, lengths=None)`` returns Tensor[B, D]
(vector), Tensor[B, T, D] (sequence, padded; see ``output_lengths``) or Tensor[B, C, *]
(feature map).

A :class:`StagedEncoder` can take part in intermediate fusion (e.g. MMTM): it exposes
``stages`` (an ``nn.ModuleList``), ``stage_channels`` (channels after each stage) and ``finish``
(last stage output -> vector). ``forward`` is ``finish(stages[-1](...stages[0](x)))``.
"""

from __future__ import annotations

from torch import Tensor, nn

OUTPUT_KINDS = ("vector", "sequence", "feature_map")


class Encoder(nn.Module):
    output_dim: int
    output_kind: str = "vector"
    #: True when forward accepts ``lengths`` (LongTensor[B]) of padded sequences.
    accepts_lengths: bool = False

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class StagedEncoder(Encoder):
    """An encoder made of stages that intermediate-fusion blocks can run between."""

    stages: nn.ModuleList
    stage_channels: list[int]

    def finish(self, h: Tensor) -> Tensor:
        """Map the last stage's output to the Tensor[B, output_dim] embedding."""
        raise NotImplementedError  # pragma: no cover - abstract

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.finish(x)


# -- frozen encoders: asked by the embedding cache (mmfuse.embedding_cache) and MultimodalModel.encode ---------------

#: A frozen encoder always runs on chunks of exactly this many rows (the last chunk zero-padded): CPU kernels
#: pick their blocking from the batch size, so a row's embedding could differ in its last bits between a batch
#: of 64 and one of 17. With a fixed chunk a row's embedding depends on the row alone (checked in
#: tests/test_embedding_cache.py), which makes cached and freshly computed embeddings the same floats.
FROZEN_CHUNK = 64


def _mode_sensitive(module: nn.Module) -> bool:
    """True when ``module`` computes differently in training mode (dropout with p > 0, batch norm)."""
    from torch.nn.modules.batchnorm import _NormBase
    from torch.nn.modules.dropout import _DropoutNd

    for sub in module.modules():
        if isinstance(sub, _DropoutNd) and sub.p > 0:
            return True
        if isinstance(sub, _NormBase) and sub.track_running_stats:
            return True
        p = getattr(sub, "dropout", None)
        if isinstance(p, float) and p > 0:  # e.g. nn.MultiheadAttention's functional dropout
            return True
    return False


def is_frozen(encoder: nn.Module) -> bool:
    """True when ``encoder``'s output is a fixed function of its input (so it can be computed once and cached).

    That needs: at least one parameter (there is something to save), none with ``requires_grad``, and a
    forward that does not change with training mode. An encoder that declares ``frozen`` (``efficientnet_lite0``,
    ``sentence_transformer``, ``hf_auto`` with ``freeze: true``: they keep their wrapped model in eval mode) is
    trusted on the last point; any other encoder must hold no dropout (p > 0) and no batch norm.
    """
    params = list(encoder.parameters())
    if not params or any(p.requires_grad for p in params):
        return False
    declared = getattr(encoder, "frozen", None)
    if isinstance(declared, bool):
        return declared
    return not _mode_sensitive(encoder)


def weights_digest(encoder: nn.Module) -> str:
    """SHA-256 (hex) of every parameter and buffer of ``encoder`` (names, dtypes, shapes and bytes)."""
    import hashlib

    import torch

    h = hashlib.sha256()
    tensors = dict(encoder.named_parameters())
    tensors.update(dict(encoder.named_buffers()))  # non-persistent buffers too (e.g. normalisation constants)
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update((t.view(torch.uint8) if t.dim() else t.reshape(1).view(torch.uint8)).numpy().tobytes())
    return h.hexdigest()


def encoder_identity(encoder: nn.Module, spec: dict | None = None) -> dict:
    """What makes ``encoder``'s outputs what they are: its registry name and options (``spec``, when known),
    its class and printed architecture, and :func:`weights_digest`."""
    return {
        "spec": spec,
        "class": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
        "architecture": repr(encoder),
        "output_dim": getattr(encoder, "output_dim", None),
        "weights": weights_digest(encoder),
    }


def call_encoder(encoder: nn.Module, x: Tensor, lengths: Tensor | None = None) -> Tensor:
    return encoder(x, lengths) if getattr(encoder, "accepts_lengths", False) else encoder(x)


def frozen_forward(encoder: nn.Module, x: Tensor, lengths: Tensor | None = None) -> Tensor:
    """``encoder(x)`` evaluated on chunks of :data:`FROZEN_CHUNK` rows (the last one zero-padded), so that each
    row's output does not depend on the other rows of its batch. Used for frozen encoders, with or without the
    embedding cache."""
    import torch

    n = x.shape[0]
    outs = []
    for s in range(0, n, FROZEN_CHUNK):
        xc = x[s:s + FROZEN_CHUNK]
        lc = None if lengths is None else lengths[s:s + FROZEN_CHUNK]
        k = xc.shape[0]
        if k < FROZEN_CHUNK:
            xc = torch.cat([xc, xc.new_zeros((FROZEN_CHUNK - k, *xc.shape[1:]))])
            if lc is not None:  # padded rows: one (pad) position, so no encoder divides by a zero length
                lc = torch.cat([lc, lc.new_ones(FROZEN_CHUNK - k)])
        outs.append(call_encoder(encoder, xc, lc)[:k])
    if not outs:
        return call_encoder(encoder, x, lengths)
    return outs[0] if len(outs) == 1 else torch.cat(outs)
