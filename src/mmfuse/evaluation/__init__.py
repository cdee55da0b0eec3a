from .evaluate import NO_MODALITY, collect, evaluate, make_loader, observed_patterns, pattern_name, patterns_of
from .metrics import compute_metrics, primary_metric

__all__ = ["collect", "evaluate", "make_loader", "observed_patterns", "patterns_of", "pattern_name", "NO_MODALITY",
           "compute_metrics", "primary_metric"]
