"""The seeds' claims under the fair protocol (issue 14, item 6), on AV-MNIST hard and on easy-VQA.

Claims, each tested with 5 seeds, paired by seed (paired t-test and Wilcoxon signed-rank, two-sided):

* (a) MultConcat >= concat: feature fusion with ``fusion: multconcat`` vs ``fusion: concat``.
* (b1) MMTM > late fusion, from scratch: ``family: intermediate`` with MMTM blocks after both stages of both
  streams vs the late model (``family: intermediate``, ``fusion_points: []`` = two independent streams whose
  logits are summed); both ``training.scheme: per_stream`` (the paper's two optimisers), both tuned with the
  same Optuna budget.
* (b2) MMTM > late fusion, the paper's procedure: per seed, start from that seed's trained late model (the
  tuned one of (b1): pretrained unimodal streams), then either fine-tune it as it is (``late+ft``) or insert
  identity-init MMTM blocks at the same points and fine-tune (``mmtm+ft``), the same epochs and learning rate,
  warm-started with ``model.init_from``.
* (c) the best fusion > the best unimodal model (best = highest mean test accuracy over the 5 seeds, among
  concat, multconcat, late, mmtm, and among the unimodal models).

Every method goes through ``mmfuse compare`` (``mmfuse.compare.run_compare``): ``compare.tuning.trials`` Optuna
trials per method (lr, weight decay, head dropout and the method's own knobs; early stopping on val accuracy),
then the best setting retrained on seeds 0..4; every run is stored in ``OUT/<dataset>/runs`` so rerunning the
same command continues where it stopped. The (b2) fine-tunings are one small compare per seed in
``OUT/<dataset>/b2_seed<s>`` (no tuning: the same fixed fine-tuning for both methods).

easy-VQA: MMTM needs a staged encoder (``StagedEncoder``: ``stages``, ``stage_channels``, ``finish``) on both
streams. The library's question encoders for token ids (gru, lstm, transformer, mlp) are not staged, and
``cnn1d`` takes a float (T, C) sequence, not token ids. So this script registers ``token_cnn1d`` (a
``ConvEncoder`` whose first stage starts with an ``nn.Embedding``: word embeddings -> 1-D conv stages) and uses
it for the question in every method on easy-VQA (so that all methods share the same encoders). It is registered
at import of this module, which the spawned compare workers re-import.

    cd /work/main && nohup .venv/bin/python benchmarks/claims.py > /tmp/claims.log 2>&1 &
    .venv/bin/python benchmarks/claims.py --smoke          # 1 trial, 2 seeds, 1 epoch, separate folder

Writes benchmarks/results/claims.json (not in --smoke mode) and prints the claims table.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from mmfuse.encoders.cnn import ConvEncoder
from mmfuse.errors import ConfigError, ShapeError
from mmfuse.registry import ENCODERS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


class _TokenEmbedding(nn.Module):
    """Token ids -> embeddings. Casts back to int64: the intermediate model passes each stream's input as float
    (``x.float()`` in models/intermediate.py), which is exact for ids below 2**24."""

    def __init__(self, vocab_size: int, dim: int, pad_id: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_id)

    def forward(self, x):
        ids = x.round().long() if x.is_floating_point() else x.long()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ShapeError(f"encoder 'token_cnn1d': token id {int(ids.max())} outside [0, {self.vocab_size}); "
                             "raise vocab_size")
        return self.embed(ids)


class TokenCNN1d(ConvEncoder):
    """Token ids (B, T) -> word embeddings -> 1-D conv stages (a StagedEncoder over a question)."""

    def __init__(self, vocab_size: int, embed_dim: int = 32, channels=(32, 64), output_dim: int = 64,
                 kernel_size: int = 3, stride: int = 2, dropout: float = 0.0, grid: int = 4, pad_id: int = 0):
        super().__init__(1, embed_dim, channels, output_dim, kernel_size, stride, dropout, prepare="channels_first",
                         name="token_cnn1d", grid=grid)
        if not isinstance(vocab_size, int) or vocab_size < 2:
            raise ConfigError(f"encoder 'token_cnn1d': vocab_size must be an int >= 2, got {vocab_size!r}")
        self.vocab_size = vocab_size
        self.stages[0] = nn.Sequential(_TokenEmbedding(vocab_size, embed_dim, pad_id), *self.stages[0])
        self.input_rank = 2


if "token_cnn1d" not in ENCODERS.list():
    @ENCODERS.register("token_cnn1d")
    def token_cnn1d(input_shape, vocab_size: int = 0, embed_dim: int = 32, channels=(32, 64), output_dim: int = 64,
                    kernel_size: int = 3, stride: int = 2, dropout: float = 0.0, grid: int = 4):
        return TokenCNN1d(int(vocab_size), embed_dim, channels, output_dim, kernel_size, stride, dropout, grid)


# --------------------------------------------------------------------------- the studies
def base_config(dataset: str, args) -> dict:
    training = {"max_epochs": args.epochs[dataset], "lr": 0.003, "weight_decay": 1e-4, "monitor": "val_accuracy",
                "patience": args.patience, "progress": False, "diagnostics": "no_probe", "evaluate_patterns": False,
                "plots": False, "limit_train_batches": args.limit_train_batches}
    head = {"name": "mlp", "options": {"hidden": [64], "dropout": 0.1}}
    if dataset == "avmnist":
        data = {"name": "avmnist", "options": {"variant": "hard"}, "batch_size": 128}
        encoders = {"image": {"name": "cnn2d", "options": {"channels": [32, 64], "output_dim": 64}},
                    "audio": {"name": "cnn1d", "options": {"channels": [32, 64], "output_dim": 64, "kernel_size": 5}}}
    else:
        opts = dict(EASYVQA_DATA, max_train=args.easyvqa_max_train)
        from mmfuse.datasets import load_dataset

        vocab = len(load_dataset("easyvqa", **opts)["train"].vocab)
        data = {"name": "easyvqa", "options": opts, "batch_size": 128}
        encoders = {"image": {"name": "cnn2d", "options": {"channels": [32, 64], "output_dim": 64}},
                    "question": {"name": "token_cnn1d",
                                 "options": {"vocab_size": vocab, "embed_dim": 32, "channels": [32, 64],
                                             "output_dim": 64, "kernel_size": 3}}}
    return {"seed": 0, "data": data, "model": {"encoders": encoders, "head": head}, "training": training}


EASYVQA_DATA = {"max_train": 5000, "max_val": 1000, "max_test": 2000}
MODALITIES = {"avmnist": ["audio", "image"], "easyvqa": ["image", "question"]}
FUSION_METHODS = ["fusion:concat", "fusion:multconcat", "late", "mmtm"]


def points(mods: list[str]) -> list[dict[str, int]]:  # after stage 0 and stage 1 of both (2-stage) streams
    return [{m: 0 for m in mods}, {m: 1 for m in mods}]


def main_study(dataset: str, args) -> dict:
    from mmfuse.compare import run_compare
    from mmfuse.config import parse_config

    mods = MODALITIES[dataset]
    raw = base_config(dataset, args)
    raw["compare"] = {
        "methods": ["fusion:concat", "fusion:multconcat", "late", "mmtm"] + [f"unimodal:{m}" for m in mods],
        "overlays": {
            "late": {"model": {"family": "intermediate", "fusion_points": []}, "training": {"scheme": "per_stream"}},
            "mmtm": {"model": {"family": "intermediate", "fusion_points": points(mods), "block": "mmtm"},
                     "training": {"scheme": "per_stream"}},
        },
        "seeds": args.seeds, "workers": args.workers, "tsne": False, "missing_patterns": False,
        "save_checkpoints": True, "test": "ttest",
        "tuning": {"trials": args.trials[dataset], "seed": 0, "patience": args.patience,
                   "epochs": args.tuning_epochs[dataset]},
    }
    out = Path(args.out) / dataset
    raw["output_dir"] = str(out)
    cfg = parse_config(raw)
    t = time.perf_counter()
    run_compare(cfg, out, progress=False)
    wall = time.perf_counter() - t
    import pandas as pd

    runs = pd.read_csv(out / "runs.csv")
    lb = pd.read_csv(out / "leaderboard.csv")
    acc = {m: {int(s): float(a) for s, a in zip(g["seed"], g["test_accuracy"])} for m, g in runs.groupby("method")}
    conv = dict(zip(lb["method"], lb["converged"]))
    late_runs = {int(s): str(k) for s, k in zip(runs[runs.method == "late"]["seed"], runs[runs.method == "late"]["run"])}
    return {"acc": acc, "converged": conv, "late_runs": late_runs, "wall_seconds": wall, "out": str(out)}


def finetune_studies(dataset: str, args, late_runs: dict[int, str]) -> dict:
    """(b2): per seed, late+ft vs mmtm+ft from that seed's trained late model."""
    from mmfuse.compare import run_compare
    from mmfuse.config import parse_config

    mods = MODALITIES[dataset]
    root = Path(args.out) / dataset
    acc: dict[str, dict[int, float]] = {"late+ft": {}, "mmtm+ft": {}}
    conv: dict[str, dict[int, str]] = {"late+ft": {}, "mmtm+ft": {}}
    t = time.perf_counter()
    for seed in args.seeds:
        stored = json.loads((root / "runs" / f"{late_runs[seed]}.json").read_text())
        # stored paths are relative to the study folder (absolute in studies written before 8419ce3)
        ckpt = str(root / stored["checkpoint"]) if stored.get("checkpoint") else str(
            root / "runs" / late_runs[seed] / "checkpoint")
        if not Path(ckpt).is_dir():
            raise SystemExit(f"(b2) {dataset} seed {seed}: the late model's checkpoint {ckpt} is missing")
        raw = copy.deepcopy(stored["config"])
        for k in ("compare", "output_dir"):
            raw.pop(k, None)
        raw["model"]["init_from"] = ckpt
        raw["training"].update(max_epochs=args.ft_epochs, lr=args.ft_lr, scheme="per_stream", patience=None,
                               limit_train_batches=args.limit_train_batches)
        raw["compare"] = {
            "methods": ["late+ft", "mmtm+ft"],
            "overlays": {"late+ft": {"training.scheme": "per_stream"},
                         "mmtm+ft": {"model": {"fusion_points": points(mods), "block": "mmtm",
                                               "block_options": {"init": "identity"}}}},
            "seeds": [seed], "workers": args.workers, "tsne": False, "missing_patterns": False, "test": "ttest",
        }
        out = root / f"b2_seed{seed}"
        raw["output_dir"] = str(out)
        run_compare(parse_config(raw), out, progress=False)
        import pandas as pd

        runs = pd.read_csv(out / "runs.csv")
        for m, a, be, er in zip(runs["method"], runs["test_accuracy"], runs["best_epoch"], runs["epochs_run"]):
            acc[m][seed] = float(a)
            conv[m][seed] = f"best epoch {int(be) + 1} of {int(er)}"
    return {"acc": acc, "epochs": conv, "wall_seconds": time.perf_counter() - t}


# --------------------------------------------------------------------------- statistics
def ms(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else float("nan"))


NONINF_MARGIN = 0.01  # "A >= B" = non-inferiority: the one-sided 95 % lower bound of mean(A - B) above -1 point


def paired(a: dict[int, float], b: dict[int, float], claim: str) -> dict:
    """a vs b by seed (mmfuse.stats.paired_p: the paired t-test, the exact sign-flip p when the differences have no
    variance; and Wilcoxon). claim '>' (a better than b: significant and positive) or '>=' (a not worse than b:
    non-inferiority, the one-sided 95 % lower confidence bound of the mean difference above -NONINF_MARGIN; a
    non-significant difference alone is not evidence of "not worse")."""
    from scipy import stats as st

    from mmfuse.stats import paired_p

    seeds = sorted(set(a) & set(b))
    xa, xb = [a[s] for s in seeds], [b[s] for s in seeds]
    d = [x - y for x, y in zip(xa, xb)]
    res = {"seeds": seeds, "a_values": xa, "b_values": xb, "diff": d, "a_mean_std": ms(xa), "b_mean_std": ms(xb),
           "diff_mean_std": ms(d)}
    res.update(p_ttest=paired_p(xa, xb, "ttest") if len(seeds) >= 2 else float("nan"),
               p_wilcoxon=paired_p(xa, xb, "wilcoxon") if len(seeds) >= 2 else float("nan"))
    n, (mean_d, sd_d) = len(d), res["diff_mean_std"]
    lower = mean_d - float(st.t.ppf(0.95, n - 1)) * sd_d / math.sqrt(n) if n >= 2 else float("nan")
    res["diff_lower95_one_sided"] = lower
    res["claim"] = claim
    return res


def verdict(res: dict, p: float, alpha: float = 0.05) -> str:
    """The verdict of one claim at (Holm-corrected) p."""
    mean_d = res["diff_mean_std"][0]
    sig = not math.isnan(p) and p < alpha
    side = "A better on average" if mean_d > 0 else "A worse on average" if mean_d < 0 else "equal on average"
    if res["claim"] == ">":
        return ("holds" if sig and mean_d > 0 else "does not hold (significantly the other way)"
                if sig and mean_d < 0 else f"not shown ({side}, not significant)")
    lower = res["diff_lower95_one_sided"]
    if not math.isnan(lower) and lower > -NONINF_MARGIN:
        return f"holds (non-inferior: lower 95 % bound {100 * lower:+.1f} points > -{100 * NONINF_MARGIN:.0f})"
    if sig and mean_d < 0:
        return "does not hold (significantly worse)"
    return (f"not shown ({side}; lower 95 % bound {100 * lower:+.1f} points, non-inferiority needs > "
            f"-{100 * NONINF_MARGIN:.0f})")


def best_by_val(out: Path, methods: list[str]) -> tuple[str, dict[str, float]]:
    """The method with the highest mean (over seeds) best validation accuracy of its final runs (its learning
    curve's maximum, from OUT/runs/<key>.json): selection on validation, never on the test rows it is scored on."""
    import pandas as pd

    runs = pd.read_csv(out / "runs.csv")
    val = {}
    for m in methods:
        vs = []
        for key in runs[runs["method"] == m]["run"]:
            curve = json.loads((out / "runs" / f"{key}.json").read_text())["curve"]
            vs.append(max(v for v in curve if v == v))
        val[m] = statistics.mean(vs)
    return max(methods, key=lambda m: val[m]), val


def claims_for(dataset: str, study: dict, ft: dict | None) -> dict:
    acc = study["acc"]
    out = {"(a) multconcat >= concat": {"a": "fusion:multconcat", "b": "fusion:concat",
                                        **paired(acc["fusion:multconcat"], acc["fusion:concat"], ">=")},
           "(b1) mmtm > late, from scratch": {"a": "mmtm", "b": "late", **paired(acc["mmtm"], acc["late"], ">")}}
    if ft is not None:
        out["(b2) mmtm+ft > late+ft, paper's procedure"] = {"a": "mmtm+ft", "b": "late+ft",
                                                            **paired(ft["acc"]["mmtm+ft"], ft["acc"]["late+ft"], ">")}
    best_f, val_f = best_by_val(Path(study["out"]), FUSION_METHODS)
    best_u, val_u = best_by_val(Path(study["out"]), [m for m in acc if m.startswith("unimodal:")])
    out["(c) best fusion > best unimodal"] = {"a": best_f, "b": best_u, "selected_on": "mean best val accuracy",
                                              "val": {**val_f, **val_u}, **paired(acc[best_f], acc[best_u], ">")}
    return out


def add_verdicts(results: dict) -> None:
    """Holm correction over every claim of every dataset (the t-test p-values), then each claim's verdict."""
    from mmfuse.stats import holm

    items = [(ds, c) for ds, r in results.items() for c in r["claims"]]
    ph = holm([results[ds]["claims"][c]["p_ttest"] for ds, c in items])
    for (ds, c), p in zip(items, ph):
        res = results[ds]["claims"][c]
        res["p_ttest_holm"] = p
        res["verdict"] = verdict(res, p)


def fmt(x: tuple[float, float], pts: bool = False) -> str:
    k = 100.0
    return f"{k * x[0]:+.1f} ± {k * x[1]:.1f}" if pts else f"{k * x[0]:.1f} ± {k * x[1]:.1f}"


def table(results: dict) -> str:
    lines = ["| dataset | claim | A | A acc % | B | B acc % | A − B (points) | t-test p | Holm p (all claims) | "
             "Wilcoxon p | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for ds, r in results.items():
        for claim, c in r["claims"].items():
            lines.append(f"| {ds} | {claim} | {c['a']} | {fmt(c['a_mean_std'])} | {c['b']} | {fmt(c['b_mean_std'])} | "
                         f"{fmt(c['diff_mean_std'], True)} | {c['p_ttest']:.3g} | {c['p_ttest_holm']:.3g} | "
                         f"{c['p_wilcoxon']:.3g} | {c['verdict']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["avmnist", "easyvqa"], choices=["avmnist", "easyvqa"])
    ap.add_argument("--out", default=str(ROOT / "runs" / "claims"))
    ap.add_argument("--trials", type=int, default=3, help="Optuna trials per method on AV-MNIST")
    ap.add_argument("--trials-easyvqa", type=int, default=2, help="Optuna trials per method on easy-VQA")
    ap.add_argument("--tuning-epochs-avmnist", type=int, default=None, help="max epochs of a trial (default: --epochs-*)")
    ap.add_argument("--tuning-epochs-easyvqa", type=int, default=4)
    ap.add_argument("--easyvqa-max-train", type=int, default=3000, help="training questions (easy-VQA)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--epochs-avmnist", type=int, default=12)
    ap.add_argument("--epochs-easyvqa", type=int, default=6)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--ft-epochs", type=int, default=3)
    ap.add_argument("--ft-lr", type=float, default=1e-3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-b2", action="store_true")
    ap.add_argument("--analyse", action="store_true", help="no training: recompute the claims, their Holm-corrected "
                    "tests and verdicts from benchmarks/results/claims.json's per-seed accuracies and the stored runs "
                    "(validation curves for the selection of (c)), and rewrite claims.json")
    ap.add_argument("--smoke", action="store_true", help="1 trial, seeds 0 1, 1 epoch, 5 batches an epoch, "
                                                         "folder OUT_smoke, claims.json not written")
    args = ap.parse_args(argv)
    args.limit_train_batches = None
    if args.smoke:
        args.trials, args.trials_easyvqa, args.seeds, args.ft_epochs, args.limit_train_batches = 1, 1, [0, 1], 1, 5
        args.tuning_epochs_easyvqa = None
        args.epochs_avmnist = args.epochs_easyvqa = 1
        args.out = args.out + "_smoke"
    args.epochs = {"avmnist": args.epochs_avmnist, "easyvqa": args.epochs_easyvqa}
    args.trials = {"avmnist": args.trials, "easyvqa": args.trials_easyvqa}
    args.tuning_epochs = {"avmnist": args.tuning_epochs_avmnist, "easyvqa": args.tuning_epochs_easyvqa}
    t0 = time.perf_counter()
    if args.analyse:
        return analyse(HERE / "results" / "claims.json")
    results = {}
    for ds in args.datasets:
        study = main_study(ds, args)
        print(f"[{ds}] main study done ({study['wall_seconds']:.0f} s this invocation)", flush=True)
        ft = None if args.skip_b2 else finetune_studies(ds, args, study["late_runs"])
        if ft:
            print(f"[{ds}] (b2) fine-tunings done ({ft['wall_seconds']:.0f} s this invocation)", flush=True)
        results[ds] = {"per_seed_accuracy": study["acc"], "converged": study["converged"],
                       "finetune": ft, "claims": claims_for(ds, study, ft), "out": study["out"],
                       "wall_seconds_this_invocation": study["wall_seconds"] + (ft["wall_seconds"] if ft else 0.0)}
    add_verdicts(results)
    wall = time.perf_counter() - t0
    print(table(results))
    for ds, r in results.items():
        print(f"[{ds}] convergence: " + "; ".join(f"{m}: {c}" for m, c in r["converged"].items()))
    payload = {"command": "cd /work/main && .venv/bin/python benchmarks/claims.py " + " ".join(sys.argv[1:]),
               "budget": {"trials_per_method": args.trials, "trial_max_epochs": args.tuning_epochs, "seeds": args.seeds,
                          "max_epochs": args.epochs,
                          "patience": args.patience, "ft_epochs": args.ft_epochs, "ft_lr": args.ft_lr,
                          "workers": args.workers, "easyvqa_data": dict(EASYVQA_DATA, max_train=args.easyvqa_max_train)},
               "wall_seconds_this_invocation": wall, "load_average": os.getloadavg(), "results": results}
    if not args.smoke:
        path = HERE / "results" / "claims.json"
        path.write_text(json.dumps(payload, indent=1, default=str, allow_nan=True))
        print(f"wrote {path}")
    print(f"total {wall:.0f} s")
    return 0


def analyse(path: Path) -> int:
    """``--analyse``: the claims again from the stored numbers (no training)."""
    doc = json.loads(path.read_text())
    for ds, r in doc["results"].items():
        study = {"acc": {m: {int(k): v for k, v in d.items()} for m, d in r["per_seed_accuracy"].items()},
                 "out": r["out"]}
        ft = r.get("finetune")
        if ft:
            ft = {**ft, "acc": {m: {int(k): v for k, v in d.items()} for m, d in ft["acc"].items()}}
        r["claims"] = claims_for(ds, study, ft)
    add_verdicts(doc["results"])
    doc["note"] = ("claims recomputed by `benchmarks/claims.py --analyse` from the stored per-seed test accuracies "
                   "(no retraining): paired t-test via mmfuse.stats (exact sign-flip p when the differences have no "
                   "variance), Holm over all claims, (c) selected on validation, (a) as non-inferiority with a "
                   f"{100 * NONINF_MARGIN:.0f}-point margin")
    path.write_text(json.dumps(doc, indent=1, default=str, allow_nan=True))
    print(table(doc["results"]))
    print(f"rewrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
