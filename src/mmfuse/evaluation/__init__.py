from .evaluate import collect, evaluate, make_loader, pattern_name, patterns_of
from .metrics import compute_metrics, primary_metric

__all__ = ["collect", "evaluate", "make_loader", "patterns_of", "pattern_name", "compute_metrics", "primary_metric"]
