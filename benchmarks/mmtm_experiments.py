"""MMTM vs late fusion vs feature-level concat, with the same encoders. Mean ± std over seeds.

Tasks:

* ``avmnist``: ``load_dataset("avmnist", variant="hard")`` (image (1, 28, 28) -> ``cnn2d`` with
  stages of 16, 32 channels; audio (40, 13) MFCC frames -> ``cnn1d`` with stages of 32, 64 channels).
* ``video``: ``benchmarks/mmtm_video_data.py`` (2000 samples), with moving MNIST digits
  (1, 8, 16, 16) -> ``cnn3d`` (stages of 16, 32 channels) and a blurred, occluded depth map
  (1, 16, 16) -> ``cnn2d`` (stages of 16, 32 channels). MMTM joins a 3-D stream, (B, C, T, H, W),
  with a 2-D one, (B, C, H, W).

Methods, all trained by the library's one training path (``mmfuse.fit``: config -> the registered
``training.scheme`` in the one LightningModule), the same for all (Adam, lr 3e-3, batch 64, 8 epochs on avmnist and 12 on video; the test accuracy at the best
validation epoch):

* ``late``: ``family: intermediate`` with no fusion point, trained with ``scheme: per_stream``,
  i.e. two independent unimodal networks whose logits are summed. This is the paper's late-fusion
  baseline.
* ``mmtm``: the same networks with an MMTM (paper preset: 2*sigma gate, C_Z = sum C / 4, ReLU, default
  init) after stage 0 and after stage 1 of both streams, trained with ``scheme: per_stream``
  (the official code's two optimisers).
* ``mmtm-identity``: the same, with ``init: identity`` (the excitation FCs are zeroed, so every block
  starts as the identity). Other variants, via ``--methods``: ``mmtm-joint`` (joint scheme),
  ``mmtm-code`` (code preset), ``mmtm-last`` (one block, after the last stages), ``late-joint``.
  They can be combined with "-".
* ``concat``: ``family: fusion``, ``strategy: feature`` with ``fusion: concat`` and a linear head over the two
  64-d embeddings, ``scheme: joint``.
* ``late+ft`` / ``mmtm+ft`` (the paper's procedure, on by default, ``--finetune-epochs 3``): start
  from the trained ``late`` model of the same seed (saved as a checkpoint). Fine-tune it for 3 more
  epochs through ``mmfuse.fit`` (Adam, lr 1e-3, ``training.scheme: per_stream``, warm-started with
  ``model.init_from``), either as it is (``late+ft``) or with identity-init MMTMs inserted at the same
  points (``mmtm+ft``; the blocks are new parameters, everything else is copied). The two start from
  the same function and get the same extra training, so their difference isolates the blocks.

The ``late`` model's streams are trained independently, so their logits also give the unimodal
accuracies (reported as ``<modality> only``). For the MMTM models, ``<method>: <modality> head`` is
the accuracy of that stream's own head. Its stream has received the other modality through the
blocks.

    PYTHONPATH=src .venv/bin/python benchmarks/mmtm_experiments.py [--tasks avmnist video] [--seeds 0 1 2] [--epochs N] [--methods ...]
    PYTHONPATH=src .venv/bin/python benchmarks/mmtm_experiments.py --quick   # smoke run: 1 seed, 1 epoch, few batches
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mmfuse import fit  # noqa: E402
from mmfuse.config import ExperimentConfig, parse_config  # noqa: E402
from mmfuse.evaluation import make_loader  # noqa: E402
from mmfuse.training.checkpoint import save_checkpoint  # noqa: E402

TASKS = {
    "avmnist": {
        "encoders": {"image": {"name": "cnn2d"}, "audio": {"name": "cnn1d"}},
        "points": [{"image": 0, "audio": 0}, {"image": 1, "audio": 1}],
        "epochs": 8,
    },
    "video": {
        "encoders": {
            "video": {"name": "cnn3d", "options": {"channels": [16, 32]}},
            "depth": {"name": "cnn2d", "options": {"channels": [16, 32]}},
        },
        "points": [{"video": 0, "depth": 0}, {"video": 1, "depth": 1}],
        "epochs": 12,
    },
}


def load(task: str, seed: int):
    if task == "avmnist":
        from mmfuse.datasets import load_dataset

        return load_dataset("avmnist", variant="hard", seed=seed)
    from mmtm_video_data import load_video_digits

    return load_video_digits(seed=seed)


def config(task: str, method: str, seed: int, epochs: int, lr: float = 3e-3, *,
           init_from: str | None = None, limit_train_batches: float | int | None = None) -> ExperimentConfig:
    spec = TASKS[task]
    model: dict = {"encoders": spec["encoders"]}
    scheme = "per_stream"
    if method == "late":
        model.update(family="intermediate", fusion_points=[])
    elif method.startswith("mmtm"):
        # variants: mmtm-joint (joint scheme), mmtm-identity (identity init), mmtm-code (code preset),
        # mmtm-last (one block, after the last stages only); combine them with "-", e.g. mmtm-joint-identity
        parts = method.split("-")[1:]
        opts: dict = {}
        points = spec["points"][-1:] if "last" in parts else spec["points"]
        if "identity" in parts:
            opts["init"] = "identity"
        if "code" in parts:
            opts["preset"] = "code"
        if "joint" in parts:
            scheme = "joint"
        unknown = set(parts) - {"last", "identity", "code", "joint"}
        if unknown:
            raise ValueError(f"unknown mmtm variant {sorted(unknown)}")
        model.update(family="intermediate", fusion_points=points, block="mmtm", block_options=opts)
    elif method == "late-joint":
        model.update(family="intermediate", fusion_points=[])
        scheme = "joint"
    elif method == "concat":
        model.update(family="fusion", strategy="feature", fusion={"name": "concat"}, head={"name": "linear"})
        scheme = "joint"
    else:
        raise ValueError(method)
    if init_from is not None:
        model["init_from"] = init_from
    # data.name is only a label here: the splits are passed to fit() in memory (the video task is not a
    # registered dataset), so name the registered avmnist for both
    return parse_config({
        "seed": seed,
        "data": {"name": "avmnist", "batch_size": 64},
        "model": model,
        "training": {"max_epochs": epochs, "lr": lr, "optimizer": "adam", "scheme": scheme, "progress": False,
                     "limit_train_batches": limit_train_batches},
    })


@torch.no_grad()
def unimodal_accuracy(model, dataset) -> dict[str, float]:
    model.eval()
    hits: dict[str, int] = {}
    n = 0
    for batch in make_loader(dataset, 256):
        out = model(batch)
        for m, lg in (out.unimodal_logits or {}).items():
            hits[m] = hits.get(m, 0) + int((lg.argmax(1) == batch.target).sum())
        n += batch.batch_size
    return {m: h / n for m, h in hits.items()}


@torch.no_grad()
def accuracy(model, dataset) -> float:
    model.eval()
    hits = n = 0
    for batch in make_loader(dataset, 256):
        hits += int((model(batch).logits.argmax(1) == batch.target).sum())
        n += batch.batch_size
    return hits / n


def finetune(late_ckpt: str, task: str, data, with_mmtm: bool, epochs: int, lr: float, seed: int,
             limit_train_batches=None) -> float:
    """Fine-tune the trained late-fusion model, with identity-init MMTMs inserted or without.

    This is the paper's use (the official code starts from pretrained unimodal checkpoints). The model is
    built from its config and warm-started from ``late_ckpt`` (``model.init_from``: every parameter whose
    name and shape match, i.e. the encoders and heads; the MMTM blocks are new). With ``init: identity`` the
    MMTM model starts out equal to the late model, so the two runs differ only by the blocks. Both are
    trained by ``mmfuse.fit`` with ``training.scheme: per_stream`` (two Adam optimisers, as in the official
    code), batch 64, and report the test accuracy at the best validation epoch.
    """
    method = "mmtm-identity" if with_mmtm else "late"
    cfg = config(task, method, seed, epochs, lr, init_from=late_ckpt, limit_train_batches=limit_train_batches)
    r = fit(cfg, datasets=data, save=False, progress=False, evaluate_patterns=False)
    return r.test["metrics"]["accuracy"]


def fmt(xs: list[float]) -> str:
    xs = [100 * x for x in xs]
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.1f} ± {sd:.1f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description="MMTM vs late fusion vs concat")
    ap.add_argument("--tasks", nargs="+", default=["avmnist", "video"], choices=list(TASKS))
    ap.add_argument("--methods", nargs="+", default=["late", "mmtm", "concat"])
    ap.add_argument("--finetune-epochs", type=int, default=3,
                    help="epochs of the late+ft / mmtm+ft comparison (0 = skip); needs 'late' in --methods")
    ap.add_argument("--finetune-lr", type=float, default=1e-3)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=None, help="default: 8 (avmnist), 12 (video)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: avmnist, seed 0, 1 epoch (and 1 fine-tuning epoch), 5 training batches per epoch")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    limit = None
    if args.quick:
        args.tasks, args.seeds, args.epochs, limit = ["avmnist"], [0], 1, 5
        args.finetune_epochs = min(args.finetune_epochs, 1)
    t_all = time.perf_counter()
    report = []
    for task in args.tasks:
        epochs = args.epochs or TASKS[task]["epochs"]
        acc: dict[str, list[float]] = {}
        secs: dict[str, float] = {}
        for seed in args.seeds:
            data = load(task, seed)
            for method in args.methods:
                t = time.perf_counter()
                cfg = config(task, method, seed, epochs, args.lr, limit_train_batches=limit)
                r = fit(cfg, datasets=data, save=False, progress=False, evaluate_patterns=False)
                secs[method] = secs.get(method, 0.0) + time.perf_counter() - t
                a = r.test["metrics"]["accuracy"]
                acc.setdefault(method, []).append(a)
                line = f"[{task}] seed {seed} {method:7s} test acc {100 * a:.1f} (best epoch {r.best_epoch})"
                for m, u in unimodal_accuracy(r.model, data["test"]).items():
                    name = f"{m} only" if method == "late" else f"{method}: {m} head"
                    acc.setdefault(name, []).append(u)
                    line += f"  {name} {100 * u:.1f}"
                print(line, flush=True)
                if method == "late" and args.finetune_epochs > 0:
                    with tempfile.TemporaryDirectory() as tmp:
                        train = data["train"]
                        meta = {"family": cfg.model.family, "task": r.task, "num_outputs": int(train.num_classes),
                                "input_shapes": {m: list(sh) for m, sh in train.shapes.items()}}
                        ckpt = save_checkpoint(Path(tmp) / "late", r.model, cfg, meta)
                        for with_mmtm, name in ((False, "late+ft"), (True, "mmtm+ft")):
                            t = time.perf_counter()
                            a = finetune(str(ckpt), task, data, with_mmtm, args.finetune_epochs, args.finetune_lr,
                                         seed, limit)
                            secs[name] = secs.get(name, 0.0) + time.perf_counter() - t
                            acc.setdefault(name, []).append(a)
                            print(f"[{task}] seed {seed} {name:7s} test acc {100 * a:.1f}", flush=True)
        diffs = [b - a for a, b in zip(acc.get("late", []), acc.get("mmtm", []))]
        ft_diffs = [b - a for a, b in zip(acc.get("late+ft", []), acc.get("mmtm+ft", []))]
        report.append(f"\n### {task} (test accuracy %, mean ± std over seeds {args.seeds}, {epochs} epochs, lr {args.lr:g})")
        report.append("| method | accuracy | train+eval seconds (all seeds) |\n|---|---|---|")
        for k, v in acc.items():
            report.append(f"| {k} | {fmt(v)} | {f'{secs[k]:.0f}' if k in secs else '-'} |")
        if diffs:
            report.append(f"\nMMTM - late per seed (points): {', '.join(f'{100 * d:+.1f}' for d in diffs)}; mean {fmt(diffs)}")
        if ft_diffs:
            report.append(f"mmtm+ft - late+ft per seed (points): {', '.join(f'{100 * d:+.1f}' for d in ft_diffs)}; "
                          f"mean {fmt(ft_diffs)}")
    print("\n".join(report))
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
