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
