"""Training schemes (registry ``SCHEMES``): what one training step of the one LightningModule does.

``joint`` (default), ``per_stream`` (MMTM's official scheme), ``smil_meta`` (SMIL's Bayesian
meta-learning step), ``greedy_pretrain`` (layer-wise CD-k pre-training of RBM stacks, then
fine-tuning). See :mod:`mmfuse.schemes.base` for the hooks.
"""

from __future__ import annotations

import importlib

from pydantic import ValidationError

from ..registry import MODELS, SCHEMES
from .base import NoOptions, Scheme
import pkgutil  # noqa: E402

# every module of this package registers its scheme on import: a new scheme is a new file, no edit here
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
    if _info.name not in ("base",) and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")


def resolve_scheme(training, family: str) -> str:
    """The scheme name a run uses: ``training.scheme``, or the family's default when it is ``auto``.
    ``training``: a TrainingConfig or a raw dict."""
    scheme = training.get("scheme", "auto") if isinstance(training, dict) else training.scheme
    if scheme != "auto":
        return scheme
    return MODELS.info(family).get("default_scheme", "joint") if family in MODELS else "joint"


def create_scheme(training, family: str) -> Scheme:
    name = resolve_scheme(training, family)
    return SCHEMES.get(name)(training.scheme_options)


def check_scheme_options(cfg) -> list[str]:
    """Problems with ``training.scheme`` / ``training.scheme_options``, one line each with its dotted path.
    ``cfg``: a validated ExperimentConfig or the raw dict (so that these are reported with every other problem)."""
    if isinstance(cfg, dict):
        model, training = cfg.get("model"), cfg.get("training")
        family = model.get("family", "fusion") if isinstance(model, dict) else "fusion"
        training = training if isinstance(training, dict) else {}
        options = training.get("scheme_options", {})
    else:
        family, training, options = cfg.model.family, cfg.training, cfg.training.scheme_options
    if not isinstance(family, str) or not isinstance(options, dict):
        return []  # reported by pydantic
    name = resolve_scheme(training, family)
    if not isinstance(name, str) or name not in SCHEMES:
        return []  # reported by check_names
    cls = SCHEMES.get(name)
    allowed = MODELS.info(family).get("schemes") if family in MODELS else None
    out = []
    if allowed is not None and name not in allowed:
        out.append(f"training.scheme: {name!r} cannot train the {family!r} family; it supports {list(allowed)}")
    try:
        opts = cls.Options.model_validate(dict(options))
    except ValidationError as exc:
        from ..config import format_validation_error

        out += format_validation_error(exc, cls.Options, prefix=("training", "scheme_options"))
    else:
        out += cls.check(opts, training)
    return out


__all__ = ["Scheme", "NoOptions", "SCHEMES", "create_scheme", "resolve_scheme", "check_scheme_options"]
