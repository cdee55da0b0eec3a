"""Train one fusion model on bundled data, evaluate it per missing-modality pattern, explain it."""

import mmfuse
from mmfuse.config import parse_config
from mmfuse.datasets import load_dataset
from mmfuse.explain import explain_dataset

data = load_dataset("avmnist", variant="hard")
cfg = parse_config({"model": {"fusion": {"name": "gated"}}, "training": {"max_epochs": 5}})
result = mmfuse.fit(cfg, data, out_dir="runs/quickstart")
print("test:", result.test["metrics"])
print("per pattern:", {k: round(v["accuracy"], 3) for k, v in result.test["patterns"].items()})
summary = explain_dataset(result.model, data["test"], "shapley", "runs/quickstart/explain", max_samples=200)
print("modality shares:", summary["mean_share"])
