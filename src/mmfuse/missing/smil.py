"""SMIL: multimodal learning with severely missing modality (Ma et al., AAAI 2021).

Building blocks (the meta-learning loop is in :mod:`mmfuse.missing.meta`):

* :func:`kmeans_priors` / :func:`pca_priors`: the modality priors ``M`` (Tensor[K, D]) built from
  the missing modality's *features* on the modality-complete subset.
* :class:`ReconstructionNet` (φ_c): weights ω over the priors from the present modality's
  feature, and the reconstruction ``x̂ = Σ_k ω_k M_k / Σ_k ω_k``.
* :class:`FeatureRegularizer` (φ_r): ``h ← h ∘ softplus(r)``, ``r ~ N(μ, σ)``, ``μ = f(h_prev)``.
* :class:`SMILModel`: a two-modality model (a "full" modality present in (almost) every
  sample and a "missing" modality present in some samples) that uses the real feature of the
  missing modality where it is present and the reconstruction where it is absent, sample by sample.
* :class:`LeNetEncoder` / :class:`SNetEncoder`: the av-MNIST encoders of the official code,
  registered as the encoders ``lenet`` and ``snet``; any encoder with ``output_dim`` works instead.

Training goes through the one LightningModule with the ``smil_meta`` scheme
(:mod:`mmfuse.schemes.smil_meta`; family ``smil`` in :mod:`mmfuse.families.smil`).

A row that lacks the *full* modality (explanations mask modalities; ``evaluate`` scores every
pattern of present modalities) is not an error: its full-modality feature is the full encoder
applied to zeros (the input of an absent modality is zeros, as in every other family), and the
missing modality's real feature or its reconstruction from that feature is used as usual.

Paper vs official code (both available; defaults follow the code)
------------------------------------------------------------------
===================  =====================================  =========================================
choice               official code (``preset="code"``)      paper (``preset="paper"``)
===================  =====================================  =========================================
priors               K-means, K=10, in feature space         K-means or PCA (both offered)
ω                    deterministic softplus(Linear(h))       ω = μ + σ⊙ε in training (μ, σ heads),
                                                             μ at eval; softplus then normalised
x̂                    Σ ω_k M_k / Σ ω_k (convex)              same (the paper's ⟨ω, M⟩ normalised so
                                                             that x̂ stays in the priors' hull)
regulariser op ∘     addition                                addition or multiplication (``op``)
regulariser σ        fixed to 1 (σ head unused)              learned (``learn_sigma=True``)
noise                meta-train only; μ at meta-test / eval  same
KL term              absent                                  optional ``kl_weight`` (scheme option)
===================  =====================================  =========================================

Regularisers are applied only on rows that use the reconstruction (the code's real-audio path
has no regulariser); ``regularize_real=True`` applies them to every row.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..batch import MultimodalBatch, zero_absent
from ..errors import ConfigError, DataError, MissingModalityError, ShapeError
from ..models.output import ModelOutput
from ..registry import ENCODERS

RECON_MODES = ("code", "paper")
PRIOR_KINDS = ("kmeans", "pca")
REG_OPS = ("add", "mul")
REG_SITES = ("fc1", "fc2")


# --------------------------------------------------------------------------- priors
def _features_2d(features, who: str) -> np.ndarray:
    if isinstance(features, Tensor):
        arr = features.detach().cpu().double().numpy()
    else:
        try:
            arr = np.asarray(features, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{who}: features must be a Tensor[N, D] or array, got {type(features).__name__} ({exc})") from None
    if arr.ndim != 2:
        raise ShapeError(f"{who}: features must be 2-D (N samples, D dims), got shape {arr.shape}; flatten the features first")
    if not np.isfinite(arr).all():
        raise DataError(f"{who}: features contain NaN or infinite values")
    return arr


def _check_k(k, n: int, who: str, what: str = "samples") -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"{who}: k must be a positive int, got {k!r}")
    if k > n:
        raise DataError(f"{who}: k={k} priors need at least {k} {what}, got {n}; lower k or use more modality-complete samples")
    return k


def kmeans_priors(features, k: int = 10, seed: int = 0, n_init: int = 10) -> Tensor:
    """K-means centres of ``features`` (Tensor[N, D]) -> float32 Tensor[k, D].

    sklearn ``KMeans(n_clusters=k, random_state=seed, n_init=n_init)`` (the code uses K=10,
    random_state 0). Deterministic for a fixed seed.
    """
    from sklearn.cluster import KMeans

    arr = _features_2d(features, "kmeans_priors")
    k = _check_k(k, arr.shape[0], "kmeans_priors")
    if isinstance(n_init, bool) or not isinstance(n_init, int) or n_init < 1:
        raise ConfigError(f"kmeans_priors: n_init must be a positive int, got {n_init!r}")
    km = KMeans(n_clusters=k, random_state=int(seed), n_init=n_init).fit(arr)
    return torch.as_tensor(km.cluster_centers_, dtype=torch.float32)


def pca_priors(features, k: int = 10, scale: float = 2.0) -> Tensor:
    """PCA priors -> Tensor[k, D]: the mean (when k is odd) and the pairs
    ``mean ± scale·sqrt(λ_j)·v_j`` for the top ⌊k/2⌋ principal directions.

    The paper names PCA as an alternative to K-means without details; principal directions on
    their own are not points of the feature space, so a convex combination of them would not be a
    plausible feature. The symmetric pairs make the priors' convex hull a box around the mean
    along the main axes of variation (``scale`` standard deviations wide). Deterministic.
    """
    arr = _features_2d(features, "pca_priors")
    k = _check_k(k, arr.shape[0], "pca_priors")
    half = k // 2
    if half > min(arr.shape):
        raise DataError(f"pca_priors: k={k} needs {half} principal components but the features allow {min(arr.shape)}")
    mean = arr.mean(0)
    centred = arr - mean
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    # fix the sign of each direction so that the result is deterministic
    signs = np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(1)])
    signs[signs == 0] = 1.0
    vt = vt * signs[:, None]
    std = s / np.sqrt(max(arr.shape[0] - 1, 1))
    rows = [mean] if k % 2 else []
    for j in range(half):
        rows.append(mean + scale * std[j] * vt[j])
        rows.append(mean - scale * std[j] * vt[j])
    return torch.as_tensor(np.stack(rows), dtype=torch.float32)


# --------------------------------------------------------------------------- φ_c
class ReconstructionNet(nn.Module):
    """φ_c: predicts weights ω over the priors ``M`` (a buffer, Tensor[K, D]) from a feature
    of the present modality (Tensor[B, in_dim]) and returns ``x̂`` (Tensor[B, D]) and the
    normalised weights (Tensor[B, K], ≥ 0, rows sum to 1).

    ``mode="code"``: ω = softplus(Linear(h)) — deterministic.
    ``mode="paper"``: ω_raw = μ(h) + σ(h)⊙ε with ε ~ N(0, I) when sampling (training by default),
    ω_raw = μ(h) otherwise; ω = softplus(ω_raw); σ = softplus(Linear(h)). The last KL divergence
    of ω_raw against N(0, I) is kept in ``self.last_kl`` (for an optional KL term).
    """

    def __init__(self, in_dim: int, priors: Tensor, mode: str = "code", eps: float = 1e-8):
        super().__init__()
        if isinstance(in_dim, bool) or not isinstance(in_dim, int) or in_dim < 1:
            raise ConfigError(f"ReconstructionNet: in_dim must be a positive int, got {in_dim!r}")
        if mode not in RECON_MODES:
            raise ConfigError(f"ReconstructionNet: mode must be one of {RECON_MODES}, got {mode!r}")
        if not isinstance(priors, Tensor) or priors.dim() != 2 or priors.shape[0] < 1:
            raise ShapeError(
                f"ReconstructionNet: priors must be a Tensor[K, D] (e.g. from kmeans_priors), got "
                f"{tuple(priors.shape) if isinstance(priors, Tensor) else type(priors).__name__}"
            )
        if not torch.isfinite(priors).all():
            raise DataError("ReconstructionNet: priors contain NaN or infinite values")
        self.mode = mode
        self.eps = eps
        self.register_buffer("priors", priors.detach().float().clone())
        k = priors.shape[0]
        self.in_dim = in_dim
        self.weights = nn.Linear(in_dim, k)  # μ of ω (the code's only layer)
        self.sigma = nn.Linear(in_dim, k) if mode == "paper" else None
        self.last_kl: Tensor | None = None

    @property
    def num_priors(self) -> int:
        return int(self.priors.shape[0])

    @property
    def output_dim(self) -> int:
        return int(self.priors.shape[1])

    def combine(self, weights: Tensor) -> tuple[Tensor, Tensor]:
        """Non-negative ``weights`` (Tensor[B, K]) -> (``x̂`` Tensor[B, D], normalised weights)."""
        if weights.dim() != 2 or weights.shape[1] != self.num_priors:
            raise ShapeError(f"ReconstructionNet: weights must be (B, {self.num_priors}), got {tuple(weights.shape)}")
        w = weights / (weights.sum(dim=1, keepdim=True) + self.eps)
        return w @ self.priors.to(w.dtype), w

    def forward(self, h: Tensor, sample: bool | None = None) -> tuple[Tensor, Tensor]:
        if h.dim() != 2 or h.shape[1] != self.in_dim:
            raise ShapeError(f"ReconstructionNet: input must be (B, {self.in_dim}), got {tuple(h.shape)}")
        mu = self.weights(h)
        if self.mode == "paper":
            sigma = F.softplus(self.sigma(h)) + 1e-6
            sample = self.training if sample is None else sample
            raw = mu + sigma * torch.randn_like(mu) if sample else mu
            self.last_kl = (0.5 * (sigma**2 + mu**2 - 1.0) - torch.log(sigma)).sum(1).mean()
        else:
            raw = mu
        return self.combine(F.softplus(raw) + self.eps)


# --------------------------------------------------------------------------- φ_r
class FeatureRegularizer(nn.Module):
    """φ_r: ``h ← h ∘ softplus(r)`` with ``r ~ N(μ, σ)``, ``μ = Linear(in_dim → out_dim)(h_prev)``.

    ``op="add"`` (code) or ``"mul"``. Noisy (training) passes draw ``r = μ + ε`` with ε ~ N(0, I)
    (the code: σ fixed to 1), or ``r = μ + σ⊙ε`` with ``σ = clamp(exp(s/2), 0, 1)`` from a second
    head when ``learn_sigma=True`` (the paper's learned variance; the code computes this σ but
    does not use it). Deterministic passes use ``r = μ``. ``noisy`` defaults to ``self.training``.
    """

    def __init__(self, in_dim: int, out_dim: int, op: str = "add", learn_sigma: bool = False):
        super().__init__()
        for name, v in (("in_dim", in_dim), ("out_dim", out_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"FeatureRegularizer: {name} must be a positive int, got {v!r}")
        if op not in REG_OPS:
            raise ConfigError(f"FeatureRegularizer: op must be one of {REG_OPS}, got {op!r}")
        self.in_dim, self.out_dim, self.op, self.learn_sigma = in_dim, out_dim, op, bool(learn_sigma)
        self.mu = nn.Linear(in_dim, out_dim)
        self.log_var = nn.Linear(in_dim, out_dim) if learn_sigma else None
        self.last_kl: Tensor | None = None

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, op={self.op!r}, learn_sigma={self.learn_sigma}"

    def factor(self, h_prev: Tensor, noisy: bool | None = None) -> Tensor:
        """``softplus(r)`` (Tensor[B, out_dim], > 0)."""
        if h_prev.dim() != 2 or h_prev.shape[1] != self.in_dim:
            raise ShapeError(f"FeatureRegularizer: h_prev must be (B, {self.in_dim}), got {tuple(h_prev.shape)}")
        mu = self.mu(h_prev)
        noisy = self.training if noisy is None else noisy
        if self.log_var is not None:
            std = torch.clamp(torch.exp(self.log_var(h_prev) / 2), 0.0, 1.0)
            self.last_kl = (0.5 * (std**2 + mu**2 - 1.0) - torch.log(std + 1e-8)).sum(1).mean()
        else:
            std = None
            self.last_kl = None
        if noisy:
            eps = torch.randn_like(mu)
            r = mu + (eps if std is None else std * eps)
        else:
            r = mu
        return F.softplus(r)

    def forward(self, h: Tensor, h_prev: Tensor, noisy: bool | None = None) -> Tensor:
        if h.dim() != 2 or h.shape[1] != self.out_dim:
            raise ShapeError(f"FeatureRegularizer: h must be (B, {self.out_dim}), got {tuple(h.shape)}")
        f = self.factor(h_prev, noisy)
        return h + f if self.op == "add" else h * f


# --------------------------------------------------------------------------- encoders (smil preset)
def _as_image(x: Tensor, who: str) -> Tensor:
    if x.dim() == 3:
        return x.unsqueeze(1)
    if x.dim() == 4:
        return x
    raise ShapeError(f"{who}: expected (B, H, W) or (B, C, H, W), got {tuple(x.shape)}")


class LeNetEncoder(nn.Module):
    """The av-MNIST image encoder of the SMIL code (LeNet-5 variant), for (1, 28, 28) images:
    conv 1→5 (5×5), maxpool 2, ReLU → conv 5→10 (5×5), dropout 0.5, maxpool 2, ReLU → flatten (160).

    Other image sizes work too: the output width is computed from ``input_shape``.
    """

    output_kind = "vector"
    accepts_lengths = False

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), channels: Sequence[int] = (5, 10), dropout: float = 0.5):
        super().__init__()
        shp = tuple(input_shape)
        if len(shp) == 2:
            shp = (1,) + shp
        if len(shp) != 3 or any((not isinstance(s, int)) or s < 1 for s in shp):
            raise ConfigError(f"LeNetEncoder: input_shape must be (C, H, W) or (H, W) of positive ints, got {input_shape!r}")
        c1, c2 = channels
        self.conv1 = nn.Conv2d(shp[0], c1, 5)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        h, w = shp[1], shp[2]
        h, w = (h - 4) // 2, (w - 4) // 2
        h, w = (h - 4) // 2, (w - 4) // 2
        if h < 1 or w < 1:
            raise ConfigError(f"LeNetEncoder: input_shape {input_shape!r} is too small (need at least 16×16)")
        self.input_shape = shp
        self.output_dim = c2 * h * w

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        x = _as_image(x, "LeNetEncoder")
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.drop(self.conv2(x)), 2))
        return x.flatten(1)


class SNetEncoder(nn.Module):
    """The av-MNIST audio encoder of the SMIL code ("SNetPlus"), for a 20×20 MFCC:
    3 × [conv 2×2 + BatchNorm + ReLU] (32, 48, 20 channels) → maxpool(k=2, stride 4) → dropout .25
    → flatten (20·4·4 = 320). For other input sizes the pooling is adaptive to ``pool_size``
    (4×4 for 20×20, as in the code), so the width is always ``channels[-1]·pool²``.
    """

    output_kind = "vector"
    accepts_lengths = False

    def __init__(self, input_shape: Sequence[int | None] = (1, 20, 20), channels: Sequence[int] = (32, 48, 20),
                 dropout: float = 0.25, pool_size: int = 4):
        super().__init__()
        shp = tuple(input_shape)
        if len(shp) == 2:
            shp = (1,) + shp
        if len(shp) != 3:
            raise ConfigError(f"SNetEncoder: input_shape must be (C, H, W) or (H, W), got {input_shape!r}")
        layers: list[nn.Module] = []
        c_in = int(shp[0])
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 2), nn.BatchNorm2d(c), nn.ReLU()]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.fixed = tuple(shp[1:]) == (20, 20)
        self.pool = nn.MaxPool2d(2, stride=4) if self.fixed else nn.AdaptiveMaxPool2d(pool_size)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.input_shape = shp
        self.output_dim = c_in * pool_size * pool_size if not self.fixed else c_in * 16

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        x = _as_image(x, "SNetEncoder")
        if x.shape[-1] < 4 or x.shape[-2] < 4:
            raise ShapeError(f"SNetEncoder: input {tuple(x.shape)} is smaller than 4×4")
        return self.drop(self.pool(self.features(x))).flatten(1)


def smil_encoders(image_shape: Sequence[int] = (1, 28, 28), audio_shape: Sequence[int | None] = (1, 20, 20)):
    """The ``smil`` preset: (LeNetEncoder, SNetEncoder) for the given per-sample shapes."""
    return LeNetEncoder(image_shape), SNetEncoder(audio_shape)


ENCODERS.register("lenet", LeNetEncoder, test_options={"input_shape": (1, 16, 16), "channels": (2, 3)})
ENCODERS.register("snet", SNetEncoder, test_options={"input_shape": (8, 6), "channels": (4, 4, 2), "pool_size": 2})


def _encoder_dim(enc: nn.Module, who: str) -> int:
    d = getattr(enc, "output_dim", None)
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ConfigError(f"SMILModel: the {who} encoder ({type(enc).__name__}) needs an int attribute output_dim")
    return d


def encode_rows(encoder: nn.Module, x: Tensor, present: Tensor, out_dim: int, lengths: Tensor | None = None) -> Tensor:
    """Run ``encoder`` on the rows where ``present`` is True only (so absent zero rows never reach
    batch-norm statistics); absent rows of the result are zeros. Returns Tensor[B, out_dim]."""
    B = x.shape[0]
    if bool(present.all()):
        h = encoder(x) if lengths is None else encoder(x, lengths)
        return h
    out = x.new_zeros((B, out_dim))
    if bool(present.any()):
        idx = present.nonzero(as_tuple=True)[0]
        h = encoder(x[idx]) if lengths is None else encoder(x[idx], lengths[idx])
        out = out.index_put((idx,), h.to(out.dtype))
    return out


class SMILHead(nn.Module):
    """The fused head of the code: Linear(in→hidden) → ReLU → [fc2 regulariser] → dropout → Linear(hidden→C)
    (C outputs: classes, labels or regression targets)."""

    def __init__(self, in_dim: int, hidden: int, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)


class SMILModel(nn.Module):
    """Two-modality SMIL model.

    ``num_classes`` is the number of outputs of the head (raw scores): classes (multiclass), labels
    (multilabel) or regression targets; the task loss is chosen by the trainer (see
    :mod:`mmfuse.missing.meta`), not by the model.

    ``forward(batch, reconstruct="auto", noisy=None) -> ModelOutput``:

    * the full modality (``full``, e.g. "image") is encoded to h; a row where it is absent is
      encoded from zeros (the absent-input convention of every family), so masking it (Shapley
      coalitions, per-pattern evaluation) never raises;
    * the missing modality's real feature a is computed on its present rows only;
    * ``x̂ = ReconstructionNet(h)`` for every row (unless ``reconstruct="never"``);
    * ``reconstruct="auto"``: rows with the modality present use a, others x̂ (SMIL's switch);
      ``"always"``: x̂ everywhere; ``"never"``: a everywhere (absent rows then raise);
    * on rows that use x̂, the 'fc1' regulariser (μ from h) acts on ``z = [h; x̂]`` and the
      'fc2' regulariser (μ from the regularised z) on ``ReLU(fc1(z))``;
    * ``noisy`` (default: ``self.training``) draws the regulariser noise.

    Submodules: ``full_encoder``, ``missing_encoder``, ``head`` (θ), ``reconstruction`` and
    ``regularizers`` (ψ). ``extras``: ``recon`` x̂, ``real`` a (zeros where absent), ``concat`` z,
    ``hidden`` (64-d, before dropout), ``weights`` ω, ``used_recon`` (BoolTensor[B]).

    The priors are a buffer (``reconstruction.priors``, in the state dict, so a checkpoint restores
    them); ``prior`` ("kmeans" or "pca") says how the ``smil_meta`` scheme computes them.
    """

    def __init__(
        self,
        full_encoder: nn.Module,
        missing_encoder: nn.Module,
        priors: Tensor,
        num_classes: int,
        full: str = "image",
        missing: str = "audio",
        hidden: int = 64,
        dropout: float = 0.5,
        recon_mode: str = "code",
        reg_op: str = "add",
        learn_sigma: bool = False,
        regularize: Sequence[str] = REG_SITES,
        regularize_real: bool = False,
        prior: str = "kmeans",
    ):
        super().__init__()
        if prior not in PRIOR_KINDS:
            raise ConfigError(f"SMILModel: prior must be one of {PRIOR_KINDS}, got {prior!r}")
        if not isinstance(full_encoder, nn.Module) or not isinstance(missing_encoder, nn.Module):
            raise ConfigError("SMILModel: full_encoder and missing_encoder must be nn.Module instances")
        if full == missing:
            raise ConfigError(f"SMILModel: full and missing modalities must differ, both are {full!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"SMILModel: num_classes (the number of outputs) must be an int >= 1, got {num_classes!r}")
        bad = [s for s in regularize if s not in REG_SITES]
        if bad:
            raise ConfigError(f"SMILModel: unknown regulariser site {bad[0]!r}; choose from {REG_SITES}")
        self.full, self.missing = full, missing
        self.full_encoder, self.missing_encoder = full_encoder, missing_encoder
        self.full_dim = _encoder_dim(full_encoder, "full")
        self.missing_dim = _encoder_dim(missing_encoder, "missing")
        if not isinstance(priors, Tensor) or priors.dim() != 2 or priors.shape[1] != self.missing_dim:
            raise ShapeError(
                f"SMILModel: priors must be Tensor[K, {self.missing_dim}] (the missing encoder's output_dim), got "
                f"{tuple(priors.shape) if isinstance(priors, Tensor) else type(priors).__name__}"
            )
        cat = self.full_dim + self.missing_dim
        self.head = SMILHead(cat, hidden, num_classes, dropout)
        self.reconstruction = ReconstructionNet(self.full_dim, priors, mode=recon_mode)
        regs = {}
        if "fc1" in regularize:
            regs["fc1"] = FeatureRegularizer(self.full_dim, cat, op=reg_op, learn_sigma=learn_sigma)
        if "fc2" in regularize:
            regs["fc2"] = FeatureRegularizer(cat, hidden, op=reg_op, learn_sigma=learn_sigma)
        self.regularizers = nn.ModuleDict(regs)
        self.regularize_real = regularize_real
        self.prior = prior
        self.num_classes = num_classes
        self.hidden = hidden

    @property
    def modalities(self) -> list[str]:
        return sorted([self.full, self.missing])

    def set_priors(self, priors: Tensor) -> None:
        """Replace the priors (same K and D), e.g. after re-clustering."""
        if priors.shape != self.reconstruction.priors.shape:
            raise ShapeError(f"SMILModel.set_priors: expected {tuple(self.reconstruction.priors.shape)}, got {tuple(priors.shape)}")
        self.reconstruction.priors.copy_(priors)

    def _inputs(self, batch: MultimodalBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if not isinstance(batch, MultimodalBatch):
            raise ConfigError(f"SMILModel: forward expects a MultimodalBatch, got {type(batch).__name__}")
        for m in (self.full, self.missing):
            if m not in batch.inputs:
                raise MissingModalityError(
                    f"SMILModel: batch lacks modality {m!r} (has {batch.modalities}); "
                    "every modality must be in inputs, zeros with mask False when absent"
                )
        fm = batch.mask[self.full]
        # an absent full modality: the encoder of zeros (never an error; see the class docstring)
        x_full = batch.inputs[self.full] if bool(fm.all()) else zero_absent(batch.inputs[self.full], fm)
        return x_full, batch.inputs[self.missing], fm, batch.mask[self.missing]

    def forward(self, batch: MultimodalBatch, reconstruct: str = "auto", noisy: bool | None = None) -> ModelOutput:
        if reconstruct not in ("auto", "always", "never"):
            raise ConfigError(f"SMILModel: reconstruct must be 'auto', 'always' or 'never', got {reconstruct!r}")
        x_full, x_miss, _, present = self._inputs(batch)
        noisy = self.training if noisy is None else noisy
        full_len = batch.lengths.get(self.full)
        h = self.full_encoder(x_full) if full_len is None else self.full_encoder(x_full, full_len)
        if reconstruct == "always":
            use_recon = torch.ones_like(present)
        elif reconstruct == "never":
            if not bool(present.all()):
                raise MissingModalityError(
                    f"SMILModel: reconstruct='never' but {int((~present).sum())} rows lack {self.missing!r}"
                )
            use_recon = torch.zeros_like(present)
        else:
            use_recon = ~present
        need_real = present & ~use_recon
        real = encode_rows(self.missing_encoder, x_miss, need_real, self.missing_dim, batch.lengths.get(self.missing)) \
            if bool(need_real.any()) else h.new_zeros((h.shape[0], self.missing_dim))
        if bool(use_recon.any()):
            recon, w = self.reconstruction(h, sample=noisy if self.reconstruction.mode == "paper" else None)
        else:
            recon = h.new_zeros((h.shape[0], self.missing_dim))
            w = h.new_zeros((h.shape[0], self.reconstruction.num_priors))
        rows = use_recon.view(-1, 1)
        a = torch.where(rows, recon, real)
        z = torch.cat([h, a], dim=1)
        reg_rows = torch.ones_like(rows) if self.regularize_real else rows
        if "fc1" in self.regularizers and bool(reg_rows.any()):
            z = torch.where(reg_rows, self.regularizers["fc1"](z, h, noisy), z)
        hid = F.relu(self.head.fc1(z))
        if "fc2" in self.regularizers and bool(reg_rows.any()):
            hid = torch.where(reg_rows, self.regularizers["fc2"](hid, z, noisy), hid)
        logits = self.head.fc2(self.head.drop(hid))
        return ModelOutput(
            logits=logits,
            fused=hid,
            embeddings={self.full: h, self.missing: a},
            extras={"recon": recon, "real": real, "concat": z, "hidden": hid, "weights": w, "used_recon": use_recon},
        )

    def kl(self) -> Tensor | None:
        """Sum of the KL terms left by the last forward (paper mode / learned σ), or None."""
        terms = [t for t in [self.reconstruction.last_kl] + [r.last_kl for r in self.regularizers.values()] if t is not None]
        return torch.stack(terms).sum() if terms else None
