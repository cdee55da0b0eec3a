"""Intermediate fusion: staged unimodal encoders that exchange information between stages (e.g. MMTM).

``IntermediateFusionModel`` runs one :class:`~mmfuse.encoders.base.StagedEncoder` per stream, stage
by stage. At each *fusion point* the features of the streams named there meet in one interaction
block (``mmfuse.registry.INTERACTIONS``, "mmtm" by default), which returns recalibrated features of
the same shapes. Each stream then continues on its own. At the end every stream's ``finish``
gives its embedding, and its own head gives its logits. The prediction is the **sum of the
per-stream logits**, the scheme of the official MMTM code (argmax of visual + skeleton logits).

Fusion points: ``fusion_points=[{"image": 0, "audio": 1}, {"image": 1, "audio": 2}]`` means
"after ``encoders['image'].stages[0]`` and ``encoders['audio'].stages[1]`` the two streams meet in
block 0; after image stage 1 and audio stage 2 they meet in block 1". Stage numbers are 0-based
indices into ``stages`` (the block's channel count for a stream is ``stage_channels[i]``).
Negative indices count from the end (``-1`` = the last stage). A point names two streams or more.
Streams may have different numbers of stages, and a stream may sit out some points. Within one
stream the stage numbers must strictly increase from point to point. Under that rule, running
the points in list order (advance each named stream to the stage the point needs, apply the
block, go on) is always possible.

Stream names may contain ``.``: the encoders and heads are stored under
:func:`~mmfuse.interaction.mmtm.stream_key` of the name (``.`` -> ``%2E``); use :meth:`encoder` and
:meth:`head` to get a stream's modules by its real name.

Absent streams (``batch.mask[m]`` False): the stream still runs on its zero placeholder (shapes
stay static). The block keeps its placeholder out of the other streams (see ``interaction/mmtm.py``).
Its logits are left out of the sum, and its embedding is zero in ``embeddings`` and ``fused``.

Padded variable-length inputs: the stages get the padded tensor (``batch.lengths`` is not used),
so an MMTM squeeze also averages over the padding. Use fixed-length inputs (e.g. cropped or padded
MFCC frames) for intermediate fusion.

Training schemes:

* ``joint``: one optimiser over all parameters, with the loss on ``output.logits``.
* ``per_stream`` (the official MMTM code): one optimiser per stream over {that stream's
  encoder + head + *all* blocks} (:func:`per_stream_param_groups`). For each batch, and for each
  stream in turn: zero the grads, run the forward pass, compute the task loss on that stream's logits
  over the rows where the stream is present, backpropagate, and step that stream's optimiser: the
  registered scheme ``training.scheme: per_stream`` (:mod:`mmfuse.schemes.per_stream`).

Shape legend: B batch, C channels, K outputs, D_m embedding width of stream m.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from .. import interaction as _interaction  # noqa: F401  (registers the built-in blocks, e.g. "mmtm")
from ..batch import MultimodalBatch, require_modalities, zero_absent
from ..errors import ConfigError, MMFuseError, ShapeError
from ..interaction.mmtm import stream_key
from ..registry import INTERACTIONS
from .heads import MLPHead
from .output import ModelOutput

COMBINES = ("sum", "mean")
TASKS = ("multiclass", "multilabel", "regression")
PRESENT_KEY = "present."  # ModelOutput.extras[PRESENT_KEY + m]: BoolTensor[B], where stream m was present


def _check_staged(name: str, enc: Any) -> int:
    """Check that ``enc`` exposes the staged-encoder interface; return its number of stages."""
    if not isinstance(enc, nn.Module):
        raise ConfigError(f"intermediate fusion: encoder {name!r} must be an nn.Module, got {type(enc).__name__}")
    stages = getattr(enc, "stages", None)
    if not isinstance(stages, (nn.ModuleList, nn.Sequential)) or len(stages) == 0:
        raise ConfigError(
            f"intermediate fusion: encoder {name!r} ({type(enc).__name__}) has no stages; intermediate fusion needs "
            "StagedEncoders (e.g. cnn1d, cnn2d, cnn3d) exposing `stages` (a non-empty nn.ModuleList), "
            "`stage_channels` and `finish`"
        )
    chans = getattr(enc, "stage_channels", None)
    if (
        not isinstance(chans, Sequence)
        or len(chans) != len(stages)
        or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in chans)
    ):
        raise ConfigError(
            f"intermediate fusion: encoder {name!r} must expose `stage_channels`, one positive int per stage "
            f"({len(stages)} stages), got {chans!r}"
        )
    if not callable(getattr(enc, "finish", None)):
        raise ConfigError(f"intermediate fusion: encoder {name!r} needs a `finish(h) -> Tensor[B, output_dim]` method")
    d = getattr(enc, "output_dim", None)
    if not isinstance(d, int) or isinstance(d, bool) or d < 1:
        raise ConfigError(
            f"intermediate fusion: encoder {name!r} needs a positive int `output_dim` (the width `finish` returns), got {d!r}"
        )
    return len(stages)


#: How many of the top stages get a block by default (``fusion_points="auto"`` / config ``None``).
DEFAULT_TOP_STAGES = 2


def default_fusion_points(num_stages: Mapping[str, int], count: int | None = None) -> list[dict[str, int]]:
    """Fusion points that join *all* streams after their last ``count`` stages, aligned from the end.

    ``count`` defaults to :data:`DEFAULT_TOP_STAGES` (2), or fewer when a stream has fewer stages:
    the paper places its MMTMs in the upper layers, and a block after the high-resolution early
    stages costs the most time for the least gain (``benchmarks/mmtm_overhead.py``). Example:
    ``{"image": 3, "audio": 4}`` gives ``[{"audio": 2, "image": 1}, {"audio": 3, "image": 2}]``, one
    block after each of the top two stages; ``{"image": 1, "audio": 3}`` gives one block,
    ``[{"audio": 2, "image": 0}]``. ``fusion_points="auto"`` uses this; pass explicit points to
    place blocks lower (e.g. after every stage).
    """
    if len(num_stages) < 2:
        raise ConfigError(f"intermediate fusion needs at least 2 streams for a fusion point, got {sorted(num_stages)}")
    low = min(num_stages.values())
    k = min(DEFAULT_TOP_STAGES, low) if count is None else count
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= low:
        raise ConfigError(f"default_fusion_points: count must be an int in 1..{low} (the fewest stages), got {count!r}")
    return [{m: n - k + j for m, n in sorted(num_stages.items())} for j in range(k)]


def normalize_fusion_points(
    fusion_points: Sequence[Mapping[str, int]] | str, num_stages: Mapping[str, int]
) -> list[dict[str, int]]:
    """Validate ``fusion_points`` against the streams' stage counts. Returns 0-based, non-negative indices.

    ``"auto"`` gives :func:`default_fusion_points`. Every error names the point index (``fusion_points[i]``),
    what was found and how to fix it.
    """
    if fusion_points == "auto":
        return default_fusion_points(num_stages)
    if isinstance(fusion_points, Mapping) or not isinstance(fusion_points, Sequence) or isinstance(fusion_points, str):
        raise ConfigError(
            f"fusion_points must be a list of {{stream: stage}} dicts, e.g. [{{'image': 0, 'audio': 1}}], got {fusion_points!r}"
        )
    streams = sorted(num_stages)
    out: list[dict[str, int]] = []
    last: dict[str, tuple[int, int]] = {}  # stream -> (point index, stage)
    for p, point in enumerate(fusion_points):
        where = f"fusion_points[{p}]"
        if not isinstance(point, Mapping):
            raise ConfigError(f"{where}: expected a dict {{stream: stage index}}, got {point!r}")
        if len(point) < 2:
            raise ConfigError(
                f"{where} = {dict(point)!r}: a fusion point joins at least 2 streams; name two or more of {streams}"
            )
        norm: dict[str, int] = {}
        for m in sorted(point, key=str):
            idx = point[m]
            if m not in num_stages:
                raise ConfigError(f"{where}: unknown stream {m!r}; the model's streams are {streams}")
            n = num_stages[m]
            if isinstance(idx, bool) or not isinstance(idx, int):
                raise ConfigError(f"{where}[{m!r}]: the stage must be an int index into the encoder's stages, got {idx!r}")
            if not -n <= idx < n:
                raise ConfigError(
                    f"{where}[{m!r}] = {idx}: stream {m!r} has {n} stages (valid indices 0..{n - 1}, or -{n}..-1 "
                    "from the end)"
                )
            i = idx % n
            if m in last and i <= last[m][1]:
                q, j = last[m]
                raise ConfigError(
                    f"{where}[{m!r}] = {idx} (stage {i}) does not come after stage {j} used by fusion_points[{q}]; "
                    f"the stages of a stream must strictly increase from point to point. Reorder the points"
                )
            norm[m] = i
        for m, i in norm.items():
            last[m] = (p, i)
        out.append(norm)
    return out


class IntermediateFusionModel(nn.Module):
    """Staged encoders joined by interaction blocks at the given fusion points. Per-stream heads, summed logits.

    Args:
        encoders: stream (modality) name -> staged encoder (``stages``, ``stage_channels``, ``finish``,
            ``output_dim``), built-in or the user's own module.
        fusion_points: list of ``{stream: stage index}``. The module docstring explains them. ``[]`` gives
            plain late fusion (sum of the per-stream logits) with the same encoders and heads. ``"auto"``
            joins all streams after each of their top two stages, aligned from the end (fewer if a
            stream has fewer stages; :func:`default_fusion_points`).
        num_outputs: K, the width of every stream's logits.
        block: an ``INTERACTIONS`` name ("mmtm"), or a callable ``factory(channels=..., **block_options)``,
            or a list with one ``nn.Module`` per fusion point.
        block_options: keyword options of every block, e.g. ``{"preset": "code", "init": "identity"}``.
        head_hidden: hidden widths of each stream's MLP head (None or [] = one linear layer).
        head_dropout: dropout before each head's layers (the official NTU code uses 0.4).
        heads: optional ready-made heads, one per stream (``(B, output_dim) -> (B, K)``), instead of the above.
        combine: "sum" (default, the official scheme) or "mean" of the present streams' logits.
        modality_dropout: optional module ``mask -> mask`` applied in training (``mmfuse.missing``).
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        fusion_points: Sequence[Mapping[str, int]] | str,
        *,
        num_outputs: int,
        block: str | Callable[..., nn.Module] | Sequence[nn.Module] = "mmtm",
        block_options: Mapping[str, Any] | None = None,
        head_hidden: int | Sequence[int] | None = None,
        head_dropout: float = 0.0,
        heads: Mapping[str, nn.Module] | None = None,
        combine: str = "sum",
        modality_dropout: nn.Module | None = None,
    ):
        super().__init__()
        if not isinstance(encoders, Mapping) or len(encoders) < 1:
            raise ConfigError(f"intermediate fusion: encoders must map stream names to staged encoders, got {encoders!r}")
        num_stages = {m: _check_staged(m, encoders[m]) for m in sorted(encoders)}
        if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 1:
            raise ConfigError(f"intermediate fusion: num_outputs must be a positive int, got {num_outputs!r}")
        if combine not in COMBINES:
            raise ConfigError(f"intermediate fusion: combine must be one of {list(COMBINES)}, got {combine!r}")
        if not 0.0 <= head_dropout < 1.0:
            raise ConfigError(f"intermediate fusion: head_dropout must be in [0, 1), got {head_dropout!r}")
        self.streams = sorted(encoders)
        self.encoders = nn.ModuleDict({stream_key(m): encoders[m] for m in self.streams})
        self.fusion_points = normalize_fusion_points(fusion_points, num_stages)
        self.num_stages = num_stages
        self.num_outputs = num_outputs
        self.combine = combine
        self.modality_dropout = modality_dropout
        self.blocks = nn.ModuleList(self._build_blocks(block, dict(block_options or {})))

        if heads is not None:
            if not isinstance(heads, Mapping) or set(heads) != set(self.streams):
                raise ConfigError(
                    f"intermediate fusion: heads must have one module per stream {self.streams}, got "
                    f"{sorted(heads) if isinstance(heads, Mapping) else type(heads).__name__}"
                )
            self.heads = nn.ModuleDict({stream_key(m): heads[m] for m in self.streams})
        else:
            hidden = (head_hidden,) if isinstance(head_hidden, int) else tuple(head_hidden or ())
            if not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden):
                raise ConfigError(f"intermediate fusion: head_hidden must be positive ints, got {head_hidden!r}")
            self.heads = nn.ModuleDict(
                {stream_key(m): MLPHead(int(self.encoder(m).output_dim), num_outputs, hidden, head_dropout)
                 for m in self.streams}
            )
        self.output_dim = sum(int(self.encoder(m).output_dim) for m in self.streams)

    def _build_blocks(self, block: Any, options: dict[str, Any]) -> list[nn.Module]:
        points = self.fusion_points
        if isinstance(block, nn.Module):
            if len(points) != 1:
                raise ConfigError(
                    f"intermediate fusion: a single block module was given for {len(points)} fusion points; pass a "
                    "registry name (e.g. 'mmtm'), a factory, or a list with one module per point"
                )
            block = [block]
        if isinstance(block, (list, tuple)):
            if len(block) != len(points) or not all(isinstance(b, nn.Module) for b in block):
                raise ConfigError(
                    f"intermediate fusion: block list must hold one nn.Module per fusion point ({len(points)}), "
                    f"got {len(block)} item(s)"
                )
            return list(block)
        out = []
        for p, point in enumerate(points):
            channels = {m: int(self.encoder(m).stage_channels[i]) for m, i in point.items()}
            try:
                if isinstance(block, str):
                    b = INTERACTIONS.create(block, channels=channels, **options)
                elif callable(block):
                    b = block(channels=channels, **options)
                else:
                    raise ConfigError(
                        f"intermediate fusion: block must be a registry name, a factory or a list of modules, "
                        f"got {type(block).__name__}"
                    )
            except MMFuseError as exc:
                raise type(exc)(f"fusion_points[{p}] = {point}: {exc}") from exc
            out.append(b)
        return out

    def extra_repr(self) -> str:
        return f"fusion_points={self.fusion_points}, combine={self.combine!r}, num_outputs={self.num_outputs}"

    @property
    def modalities(self) -> list[str]:
        return list(self.streams)

    def encoder(self, m: str) -> nn.Module:
        """The staged encoder of stream ``m`` (by its real name, which may contain '.')."""
        return self.encoders[stream_key(m)]

    def head(self, m: str) -> nn.Module:
        """The head of stream ``m`` (by its real name)."""
        return self.heads[stream_key(m)]

    # ------------------------------------------------------------------ forward
    def _run_to(self, m: str, h: Tensor, done: int, stop: int) -> Tensor:
        stages = self.encoder(m).stages
        for i in range(done, stop):
            h = stages[i](h)
        return h

    def forward(self, batch: MultimodalBatch) -> ModelOutput:
        require_modalities(batch, self.streams)
        if self.training and self.modality_dropout is not None:  # drop only among the streams this model uses
            batch = batch.with_mask(self.modality_dropout({m: batch.mask[m] for m in self.streams}))
        present = {m: batch.mask[m] for m in self.streams}
        all_present = all(bool(v.all()) for v in present.values())
        h: dict[str, Tensor] = {}
        for m in self.streams:
            x = batch.inputs[m]
            h[m] = x if x.is_floating_point() else x.float()
        done = {m: 0 for m in self.streams}
        for p, (point, block) in enumerate(zip(self.fusion_points, self.blocks)):
            for m, i in point.items():
                h[m] = self._run_to(m, h[m], done[m], i + 1)
                done[m] = i + 1
            feats = {m: h[m] for m in point}
            mask = None if all_present else {m: present[m] for m in point}
            try:
                out = block(feats, mask=mask)
            except MMFuseError as exc:
                raise type(exc)(f"fusion_points[{p}] = {point}: {exc}") from exc
            for m in point:
                if m not in out or out[m].shape != feats[m].shape:
                    raise ShapeError(
                        f"fusion_points[{p}]: block {type(block).__name__} must return stream {m!r} with shape "
                        f"{tuple(feats[m].shape)}, got {None if m not in out else tuple(out[m].shape)}"
                    )
                h[m] = out[m]
        embeddings: dict[str, Tensor] = {}
        logits: dict[str, Tensor] = {}
        for m in self.streams:
            hm = self._run_to(m, h[m], done[m], self.num_stages[m])
            e = self.encoder(m).finish(hm)
            logits[m] = self.head(m)(e)
            embeddings[m] = e if all_present else zero_absent(e, present[m])
        total = None
        for m in self.streams:
            term = logits[m] if all_present else zero_absent(logits[m], present[m])
            total = term if total is None else total + term
        assert total is not None
        if self.combine == "mean":
            count = torch.stack([present[m] for m in self.streams], 1).sum(1, keepdim=True).clamp_min(1)
            total = total / count.to(total.dtype)
        fused = torch.cat([embeddings[m] for m in self.streams], dim=1)
        extras = {PRESENT_KEY + m: present[m] for m in self.streams}
        return ModelOutput(total, fused, embeddings, logits, extras)


# ---------------------------------------------------------------------- per-stream training
def per_stream_param_groups(model: IntermediateFusionModel) -> dict[str, list[nn.Parameter]]:
    """Per stream: the parameters of its encoder, its head and *all* interaction blocks.

    This is the official MMTM scheme: one optimiser per stream, and every optimiser also updates the
    shared blocks. Parameters outside these (e.g. a learned modality-dropout module) are not included.
    """
    if not isinstance(model, IntermediateFusionModel):
        raise ConfigError(
            f"per_stream_param_groups needs an IntermediateFusionModel (training.scheme: per_stream), got {type(model).__name__}"
        )
    shared = list(model.blocks.parameters())
    groups: dict[str, list[nn.Parameter]] = {}
    for m in model.streams:
        seen: set[int] = set()
        params = []
        for p in [*model.encoder(m).parameters(), *model.head(m).parameters(), *shared]:
            if id(p) not in seen and p.requires_grad:
                seen.add(id(p))
                params.append(p)
        groups[m] = params
    return groups
