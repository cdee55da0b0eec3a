"""Feature maskers: how one modality of one sample is cut into features and how a feature is hidden.

A masker turns one sample's tensor ``x`` (no batch dim) into a :class:`FeatureLayout`: a
*feature map* LongTensor with x's shape giving, per element, the feature it belongs to
(−1 = never masked: padding, special tokens, remainder pixels), and the number of features n.
:meth:`FeatureMasker.apply` then builds K masked copies Tensor[K, *x.shape] from a keep matrix
BoolTensor[K, n] in one vectorised ``torch.where``: hidden elements take the *baseline* (0 by
default, a scalar, or a tensor broadcastable to x such as the dataset mean; the pad id for tokens).

Built-in kinds (registered in :data:`MASKERS`):

==========  ===================  =====================================================================
name        sample shape         features
==========  ===================  =====================================================================
tokens      [T] int ids          each token position < length; ``keep_positions`` / ``keep_ids`` never masked
patches     [..., H, W]          grid gh×gw of (H//gh)×(W//gw) patches (same patch in every channel);
                                 remainder rows/cols never masked; ``grid="auto"``: p = ceil(√n_text)
windows     [T] or [T, C]        ``n_windows`` contiguous time windows over the valid length
video       [..., T, H, W]       grid cells × ``n_windows`` time windows (1 = same patch in every frame)
vector      any                  ``n_chunks`` contiguous chunks of the flattened values (None = each value)
==========  ===================  =====================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

from ..errors import ConfigError, ShapeError
from ..registry import Registry

MASKERS = Registry("feature masker")


def patch_grid_for_tokens(n_text_tokens: int) -> int:
    """MM-SHAP's reference rule p = ceil(√n): p² ≥ n > (p−1)², at least 1."""
    if n_text_tokens <= 0:
        return 1
    p = math.isqrt(n_text_tokens)
    return p if p * p == n_text_tokens else p + 1


@dataclass
class FeatureLayout:
    """One modality of one sample: ``fmap`` LongTensor[*x.shape] (−1 = never masked), ``n`` features."""

    modality: str
    kind: str
    fmap: Tensor
    n: int
    info: dict[str, Any] = field(default_factory=dict)


class FeatureMasker:
    """Base class; subclasses implement :meth:`feature_map`."""

    kind = "base"

    def __init__(self, baseline: float | Tensor = 0.0):
        if not isinstance(baseline, (int, float, Tensor)) or isinstance(baseline, bool):
            raise ConfigError(f"{self.kind} masker: baseline must be a number or a tensor, got {type(baseline).__name__}")
        self.baseline = baseline

    def feature_map(self, x: Tensor, length: int | None, context: dict, modality: str) -> tuple[Tensor, int, dict]:
        raise NotImplementedError  # pragma: no cover - abstract

    def layout(self, x: Tensor, length: int | None = None, context: dict | None = None,
               modality: str = "?") -> FeatureLayout:
        fmap, n, info = self.feature_map(x, length, {} if context is None else context, modality)
        return FeatureLayout(modality, self.kind, fmap, n, info)

    def baseline_for(self, x: Tensor, modality: str) -> Tensor:
        if not isinstance(self.baseline, Tensor):  # a number: broadcasts to anything
            return torch.tensor(self.baseline, dtype=x.dtype, device=x.device)
        b = torch.as_tensor(self.baseline, dtype=x.dtype, device=x.device)
        try:
            torch.broadcast_shapes(b.shape, x.shape)
        except RuntimeError:
            raise ShapeError(
                f"modality {modality!r}: baseline of shape {tuple(b.shape)} does not broadcast to the "
                f"sample shape {tuple(x.shape)}; give a scalar or a tensor of one sample's shape"
            ) from None
        return b

    def apply(self, x: Tensor, layout: FeatureLayout, keep: Tensor) -> Tensor:
        """Masked copies Tensor[K, *x.shape] of ``x`` for the keep matrix BoolTensor[K, n]."""
        K = keep.shape[0]
        ext = torch.cat([keep.to(torch.bool), torch.ones(K, 1, dtype=torch.bool, device=keep.device)], 1).to(x.device)
        idx = torch.where(layout.fmap < 0, layout.n, layout.fmap).reshape(-1).to(x.device)
        sel = ext[:, idx].view((K,) + tuple(x.shape))
        return torch.where(sel, x.unsqueeze(0), self.baseline_for(x, layout.modality).unsqueeze(0))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


def _valid_length(x: Tensor, length: int | None, modality: str) -> int:
    T = int(x.shape[0]) if x.dim() else 1
    if length is None:
        return T
    if length < 0 or length > T:
        raise ShapeError(f"modality {modality!r}: length {length} outside 0..{T}")
    return int(length)


@MASKERS.register("tokens")
class TokenMasker(FeatureMasker):
    """Each token position < length is a feature; masking writes ``pad_id``.

    ``keep_positions``: positions never masked (negatives count from the valid length, e.g.
    ``(0, -1)`` for [CLS] … [SEP]); ``keep_ids``: token ids never masked. Sets
    ``context["n_text_tokens"]`` (summed over token modalities) for ``grid="auto"`` patches.
    """

    kind = "tokens"

    def __init__(self, pad_id: int = 0, keep_positions: Sequence[int] = (), keep_ids: Sequence[int] = ()):
        if isinstance(pad_id, bool) or not isinstance(pad_id, int):
            raise ConfigError(f"tokens masker: pad_id must be an int, got {pad_id!r}")
        super().__init__(pad_id)
        self.pad_id = pad_id
        self.keep_positions = tuple(int(p) for p in keep_positions)
        self.keep_ids = tuple(int(i) for i in keep_ids)

    def feature_map(self, x, length, context, modality):
        if x.dim() != 1:
            raise ShapeError(
                f"modality {modality!r}: the tokens masker needs one sample of shape [T] (token ids), "
                f"got {tuple(x.shape)}; choose another masker kind for this modality"
            )
        L = _valid_length(x, length, modality)
        feat = torch.zeros(x.shape[0], dtype=torch.bool)
        feat[:L] = True
        for p in self.keep_positions:
            q = p + L if p < 0 else p
            if 0 <= q < L:
                feat[q] = False
        for i in self.keep_ids:
            feat &= x.cpu() != i
        fmap = torch.full(x.shape, -1, dtype=torch.long)
        positions = feat.nonzero().flatten()
        fmap[positions] = torch.arange(positions.numel())
        context["n_text_tokens"] = context.get("n_text_tokens", 0) + L
        return fmap, int(positions.numel()), {"positions": positions, "token_ids": x[:L].cpu(), "length": L}


def _grid_pair(grid: Any, name: str) -> tuple[int, int] | str:
    if grid == "auto":
        return "auto"
    if isinstance(grid, int) and not isinstance(grid, bool):
        grid = (grid, grid)
    if (not isinstance(grid, (tuple, list)) or len(grid) != 2
            or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in grid)):
        raise ConfigError(f"{name} masker: grid must be 'auto', an int >= 1 or a pair (rows, cols), got {grid!r}")
    return int(grid[0]), int(grid[1])


def _cell_map(H: int, W: int, gh: int, gw: int) -> Tensor:
    """LongTensor[H, W] of grid cell ids (row-major), −1 on remainder pixels."""
    ph, pw = H // gh, W // gw
    r = torch.arange(H) // ph
    c = torch.arange(W) // pw
    cell = r.view(-1, 1) * gw + c.view(1, -1)
    outside = (r.view(-1, 1) >= gh) | (c.view(1, -1) >= gw)
    return cell.masked_fill(outside, -1)


def _resolve_grid(grid, context, x, modality, kind):
    H, W = int(x.shape[-2]), int(x.shape[-1])
    if grid == "auto":
        if "n_text_tokens" not in context:
            raise ConfigError(
                f"modality {modality!r}: grid='auto' (p = ceil(sqrt(#text tokens))) needs a 'tokens' modality "
                "among the explained modalities; give an explicit grid instead"
            )
        p = patch_grid_for_tokens(int(context["n_text_tokens"]))
        gh, gw = p, p
    else:
        gh, gw = grid
    if gh > H or gw > W:
        raise ConfigError(
            f"modality {modality!r}: {kind} grid {gh}x{gw} is larger than the image {H}x{W}; "
            f"use a grid of at most {H}x{W}"
        )
    return gh, gw


@MASKERS.register("patches")
class PatchMasker(FeatureMasker):
    """A gh×gw grid of patches over the last two dims (every channel of a patch masked together)."""

    kind = "patches"

    def __init__(self, grid: int | tuple[int, int] | str = 4, baseline: float | Tensor = 0.0):
        super().__init__(baseline)
        self.grid = _grid_pair(grid, self.kind)

    def feature_map(self, x, length, context, modality):
        if x.dim() < 2:
            raise ShapeError(f"modality {modality!r}: the patches masker needs [..., H, W], got {tuple(x.shape)}")
        gh, gw = _resolve_grid(self.grid, context, x, modality, self.kind)
        cells = _cell_map(int(x.shape[-2]), int(x.shape[-1]), gh, gw)
        H, W = int(x.shape[-2]), int(x.shape[-1])
        return cells.expand(x.shape).contiguous(), gh * gw, {"grid": (gh, gw), "patch": (H // gh, W // gw)}


def _window_ids(T: int, L: int, n: int) -> Tensor:
    """LongTensor[T]: window of each step t < L (n near-equal windows), −1 beyond L."""
    t = torch.arange(T)
    return torch.where(t < L, (t * n) // max(L, 1), torch.full_like(t, -1))


@MASKERS.register("windows")
class WindowMasker(FeatureMasker):
    """``n_windows`` contiguous windows along the first (time) axis of a [T] or [T, C] sample.

    A sequence shorter than ``n_windows`` valid steps gets one window per step.
    """

    kind = "windows"

    def __init__(self, n_windows: int = 8, baseline: float | Tensor = 0.0):
        super().__init__(baseline)
        if isinstance(n_windows, bool) or not isinstance(n_windows, int) or n_windows < 1:
            raise ConfigError(f"windows masker: n_windows must be an integer >= 1, got {n_windows!r}")
        self.n_windows = n_windows

    def feature_map(self, x, length, context, modality):
        if x.dim() not in (1, 2):
            raise ShapeError(f"modality {modality!r}: the windows masker needs [T] or [T, C], got {tuple(x.shape)}")
        L = _valid_length(x, length, modality)
        n = min(self.n_windows, L)
        ids = _window_ids(int(x.shape[0]), L, n)
        fmap = ids.view((-1,) + (1,) * (x.dim() - 1)).expand(x.shape).contiguous()
        return fmap, n, {"n_windows": n, "length": L}


@MASKERS.register("video")
class VideoMasker(FeatureMasker):
    """Grid cells × time windows over the last three dims [..., T, H, W] (e.g. (C, T, H, W)).

    ``n_windows=1`` masks the same spatial patch in every frame. Feature id = window·gh·gw + cell.
    """

    kind = "video"

    def __init__(self, grid: int | tuple[int, int] = 4, n_windows: int = 1, baseline: float | Tensor = 0.0):
        super().__init__(baseline)
        self.grid = _grid_pair(grid, self.kind)
        if self.grid == "auto":
            raise ConfigError("video masker: grid='auto' is only for image patches; give an int or a pair")
        if isinstance(n_windows, bool) or not isinstance(n_windows, int) or n_windows < 1:
            raise ConfigError(f"video masker: n_windows must be an integer >= 1, got {n_windows!r}")
        self.n_windows = n_windows

    def feature_map(self, x, length, context, modality):
        if x.dim() < 3:
            raise ShapeError(f"modality {modality!r}: the video masker needs [..., T, H, W], got {tuple(x.shape)}")
        T, H, W = (int(s) for s in x.shape[-3:])
        gh, gw = _resolve_grid(self.grid, context, x, modality, self.kind)
        nw = min(self.n_windows, T)
        cells = _cell_map(H, W, gh, gw)  # [H, W]
        win = _window_ids(T, T, nw)  # [T]
        fmap = torch.where(cells.unsqueeze(0) < 0, -1, win.view(-1, 1, 1) * (gh * gw) + cells.unsqueeze(0))
        info = {"grid": (gh, gw), "patch": (H // gh, W // gw), "n_windows": nw}
        return fmap.expand(x.shape).contiguous(), nw * gh * gw, info


@MASKERS.register("vector")
class VectorMasker(FeatureMasker):
    """``n_chunks`` contiguous chunks of the flattened sample (None: every value is a feature)."""

    kind = "vector"

    def __init__(self, n_chunks: int | None = None, baseline: float | Tensor = 0.0):
        super().__init__(baseline)
        if n_chunks is not None and (isinstance(n_chunks, bool) or not isinstance(n_chunks, int) or n_chunks < 1):
            raise ConfigError(f"vector masker: n_chunks must be None or an integer >= 1, got {n_chunks!r}")
        self.n_chunks = n_chunks

    def feature_map(self, x, length, context, modality):
        N = max(1, x.numel())
        n = N if self.n_chunks is None else min(self.n_chunks, N)
        fmap = ((torch.arange(x.numel()) * n) // N).view(x.shape)
        return fmap, n if x.numel() else 0, {"n_chunks": n}


def default_masker(x: Tensor, has_lengths: bool) -> FeatureMasker:
    """The masker used when none is given for a modality (one sample ``x``, no batch dim).

    Integer [T] → tokens; [D] float → vector; [T, C] → windows when the modality has lengths or
    either side is < 8, else patches; [C, H, W] → patches; 4-D → video.
    """
    if x.dim() == 1:
        return TokenMasker() if not x.is_floating_point() else VectorMasker()
    if x.dim() == 2:
        if has_lengths or min(x.shape) < 8:
            return WindowMasker()
        return PatchMasker()
    if x.dim() == 3:
        return PatchMasker()
    if x.dim() == 4:
        return VideoMasker()
    return VectorMasker()


def resolve_masker(spec: FeatureMasker | str | dict | None, x: Tensor, has_lengths: bool, modality: str) -> FeatureMasker:
    """A masker from an instance, a registered name, ``{"kind": name, **kwargs}``, or None (default)."""
    if spec is None:
        return default_masker(x, has_lengths)
    if isinstance(spec, FeatureMasker):
        return spec
    if isinstance(spec, str):
        return MASKERS.create(spec)
    if isinstance(spec, dict):
        kw = dict(spec)
        kind = kw.pop("kind", None)
        if kind is None:
            raise ConfigError(f"maskers[{modality!r}]: a dict spec needs a 'kind' key, one of {MASKERS.list()}")
        return MASKERS.create(kind, **kw)
    raise ConfigError(
        f"maskers[{modality!r}]: expected a FeatureMasker, a name in {MASKERS.list()} or a dict, got {type(spec).__name__}"
    )
