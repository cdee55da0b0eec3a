"""The ``mmfuse`` command line: train | evaluate | predict | compare | explain | missing-study | report | list | demo.

Every command validates its whole config before any compute; an mmfuse error is printed as one
clear message (exit code 2), never as a traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import warnings
from pathlib import Path

from .errors import MMFuseError
from .predictor import prediction_frame  # noqa: F401  (the predictions CSV's frame; shared with mmfuse.Predictor)

DEMO_CONFIG = {
    "seed": 0,
    "data": {"name": "avmnist", "options": {"variant": "hard"}, "batch_size": 128},
    "model": {
        "encoders": {
            "image": {"name": "cnn2d", "options": {"channels": [32, 64], "output_dim": 64}},
            "audio": {"name": "cnn1d", "options": {"channels": [32, 64], "output_dim": 64, "kernel_size": 5}},
        },
        "head": {"name": "mlp", "options": {"hidden": [64], "dropout": 0.1}},
    },
    # diagnostics without the per-modality linear probe: in a compare the unimodal runs are the reference (the
    # probe costs more than a demo run's training on 2 cores)
    "training": {"max_epochs": 20, "lr": 0.005, "weight_decay": 0.0001, "monitor": "val_accuracy", "patience": 2,
                 "progress": False, "diagnostics": "no_probe"},
    # the fair protocol (mmfuse.tuning) within ~5 minutes on 2 cores: 6 methods (4 fusions, 2 unimodal references),
    # each gets the same 4 short Optuna trials (≤ 3 epochs: lr, weight decay, dropout and its own knobs; the first
    # trial is the config's setting), then its best setting is retrained to convergence (≤ 20 epochs, early
    # stopping patience 2; every run stopped by epoch 17 when measured) on 3 seeds; paired t-tests against the best (Holm), convergence marks and the budget
    # are on the leaderboard; then the best fused run is explained (exact modality Shapley + interaction, 40 rows)
    "compare": {
        "methods": ["fusion:concat", "fusion:gated", "fusion:low_rank", "fusion:late", "unimodal:image",
                    "unimodal:audio"],
        "seeds": [0, 1, 2], "workers": 2, "tuning": {"trials": 4, "epochs": 3, "seed": 0},
        "ensemble": {"size": 5, "top": 4},
    },
    "output_dir": "runs/demo",
}


def _print_table(rows: list[tuple[str, str]], title: str | None = None) -> None:
    if title:
        print(title)
    w = max((len(k) for k, _ in rows), default=0)
    for k, v in rows:
        print(f"  {k.ljust(w)}  {v}")


def _metrics_rows(report: dict) -> list[tuple[str, str]]:
    """Overall metrics, then the *simulated* patterns (modalities hidden at test time in every row)."""
    rows = [(k, f"{v:.4f}") for k, v in report.get("metrics", {}).items()]
    for pat, mets in report.get("patterns", {}).items():
        key = next(iter(mets), None)
        if key:
            rows.append((f"simulated: only {pat} present: {key}", f"{mets[key]:.4f}"))
    return rows


def _observed_lines(report: dict) -> list[str]:
    """The table of metrics per *observed* presence pattern (rows grouped by the modalities they really
    have, n rows each), and a warning line counting the rows that have no modality at all."""
    obs = report.get("observed") or {}
    if not obs:
        return []
    names = list(dict.fromkeys(k for o in obs.values() for k in o.get("metrics", {})))
    labels = {pat: f"observed: {'no modality' if pat == 'none' else pat} (n={o['n']})" for pat, o in obs.items()}
    w = max(len(v) for v in labels.values())
    widths = [max(len(k), 6) for k in names]
    lines = ["observed presence patterns (test rows grouped by the modalities they really have; nothing hidden):",
             "  " + "pattern".ljust(w) + "".join(f"  {k.rjust(cw)}" for k, cw in zip(names, widths))]
    for pat, o in obs.items():
        m = o.get("metrics", {})
        lines.append("  " + labels[pat].ljust(w) + "".join(
            f"  {(f'{m[k]:.4f}' if k in m else '—').rjust(cw)}" for k, cw in zip(names, widths)))
    none = report.get("rows_without_modality") or {}
    if none.get("n"):
        what, idx = ("ids", none["ids"]) if none.get("ids") else ("dataset indices", none.get("index", []))
        shown = ", ".join(map(str, idx[:10])) + (", ..." if len(idx) > 10 else "")
        lines.append(f"  warning: {none['n']} row(s) have no modality present ({what} {shown}); "
                     "their predictions use no input at all")
    return lines


def _print_report(report: dict, title: str) -> None:
    _print_table(_metrics_rows(report), title)
    for line in _observed_lines(report):
        print(line)
    diag = report.get("diagnostics")
    if diag:  # mmfuse train: ignored-modality warnings, encoder gradient-norm ratios (mmfuse.diagnostics)
        from .diagnostics import warning_lines

        for line in ([f"warning: {diag['error']}"] if diag.get("error") else []) + warning_lines(diag):
            print(line)


def _auto_report(run_dir) -> None:
    """The HTML report written at the end of train / compare / explain; a failure only warns (the run is kept)."""
    try:
        from .report import write_report

        print(f"report: {write_report(run_dir)}")
    except Exception as exc:  # noqa: BLE001  (the run's outputs are already written: never lose them here)
        print(f"warning: the HTML report of {run_dir} could not be written ({type(exc).__name__}: {exc}); "
              f"the run's files are complete; retry with: mmfuse report {run_dir}", file=sys.stderr)


def cmd_report(args) -> int:
    """``mmfuse report RUN_DIR [--out FILE]``: one self-contained HTML page of a train / compare / explain folder."""
    from .report import write_report

    print(f"wrote {write_report(args.run_dir, args.out)}")
    return 0


def cmd_train(args) -> int:
    from .config import load_config
    from .guards import check_output_path
    from .training import fit

    from .training.signals import TrainingInterrupted

    cfg = load_config(args.config, list(args.set) + (["training.resume=true"] if args.resume else []))
    out = Path(args.out or cfg.output_dir)
    check_output_path(out, "dir", "--out" if args.out else "output_dir")  # before any compute
    try:
        res = fit(cfg, out_dir=out)
    except TrainingInterrupted as exc:  # SIGTERM / SIGINT: the last finished epoch is in OUT/last
        how = " ".join(["mmfuse train", args.config, *(f"--set {s}" for s in args.set),
                        *(["--out", str(args.out)] if args.out else []), "--resume"])
        print(f"mmfuse train: {exc}; continue with: {how}", file=sys.stderr)
        return exc.exit_code
    if res.extras.get("resumed_from_epoch"):
        print(f"resumed after epoch {res.extras['resumed_from_epoch']} from {out / 'last'}")
    if not res.extras.get("global_zero", True):  # distributed training: only rank 0 writes and reports
        return 0
    (out / "metrics.json").write_text(json.dumps({"val": res.val, "test": res.test, "history": res.history,
                                                   "params": res.params, "train_seconds": res.train_seconds}, indent=2))
    plots = cfg.training.plots
    if plots is True or (plots == "auto" and len(res.history) >= 2):  # "auto": a curve needs two epochs to draw
        from .plots import learning_curves  # matplotlib: only when a figure is drawn

        metric = "val_accuracy" if res.task == "multiclass" else "val_loss"
        learning_curves({"model": [[h.get(metric, float("nan")) for h in res.history]]}, out / "learning_curve.png",
                        metric, seeds=[cfg.seed])
    _print_report(res.test, f"test metrics ({res.params:,} parameters, {res.train_seconds:.1f} s training):")
    print(f"checkpoint: {res.checkpoint}")
    _auto_report(out)
    return 0


def _data_for(cfg, overrides):
    from .config import parse_config
    from .training.fit import load_data

    if overrides:
        cfg = parse_config(cfg.model_dump(), overrides, devices=False)  # no training here: any device will do
    return cfg, load_data(cfg)


def _split(datasets: dict, split: str):
    from .errors import ConfigError

    if split not in datasets or len(datasets[split]) == 0:
        raise ConfigError(f"--split: the data has no non-empty split {split!r}; choose from {sorted(datasets)}")
    return datasets[split]


def cmd_evaluate(args) -> int:
    from .evaluation import evaluate
    from .guards import check_output_path
    from .training import load_checkpoint

    check_output_path(args.out, "file", "--out")  # before any compute
    model, cfg, meta = load_checkpoint(args.checkpoint)
    cfg, datasets = _data_for(cfg, args.set)
    report = evaluate(model, _split(datasets, args.split), meta["task"], cfg.data.eval_batch_size)
    _print_report(report, f"{args.split} metrics of {args.checkpoint}:")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


def cmd_predict(args) -> int:
    from .predictor import predict_dataset
    from .guards import check_output_path
    from .training import load_checkpoint

    check_output_path(args.out, "file", "--out")  # before any compute
    model, cfg, meta = load_checkpoint(args.checkpoint)
    if getattr(args, "table", None):
        return _predict_table(args, model, cfg, meta)
    if getattr(args, "schema", None):
        from .errors import ConfigError

        raise ConfigError("predict: --schema describes the table given with --table; add --table NEW.csv")
    cfg, datasets = _data_for(cfg, args.set)
    ds = _split(datasets, args.split)
    df = predict_dataset(model, ds, meta["task"], meta.get("class_names") or None,
                         args.batch_size or cfg.data.eval_batch_size)
    out = Path(args.out)
    df.to_csv(out, index=False)
    print(f"wrote {len(df)} predictions to {out}")
    return 0


def _predict_table(args, model, cfg, meta) -> int:
    """``mmfuse predict CKPT --table new.csv``: every row, through the checkpoint's fitted pipeline (no split,
    no refit); labels optional (metrics when present); rows keyed by the schema's ``id`` column."""
    from .evaluation import evaluate
    from .predictor import table_predictions

    # batch size 1 by default: each row in its own forward pass, so its probabilities are bit-identical whatever
    # other rows the table holds (batched float32 kernels can differ in the last digits with the batch's make-up)
    df, ds = table_predictions(model, meta, args.table, args.schema, args.batch_size or 1)
    out = Path(args.out)
    df.to_csv(out, index=False)
    print(f"wrote {len(df)} predictions (every row of {args.table}) to {out}")
    if ds.has_labels:
        report = evaluate(model, ds, meta["task"], cfg.data.eval_batch_size, per_pattern=False)
        _print_table(_metrics_rows(report), f"metrics on the labels of {args.table}:")
    return 0


def cmd_compare(args) -> int:
    from .config import load_config

    cfg = load_config(args.config, args.set)
    return _run_compare(cfg, args.out)


def _run_compare(cfg, out, after=None) -> int:
    """``after(out, summary, cfg)``: run before the HTML report (the demo's explanation of the best fused run)."""
    from .compare import run_compare
    from .guards import check_output_path

    from .training.signals import TrainingInterrupted

    out = check_output_path(Path(out or cfg.output_dir), "dir", "--out")  # before any compute
    try:
        run_compare(cfg, out)
    except TrainingInterrupted as exc:  # SIGTERM / SIGINT: workers ended, finished runs stored in OUT/runs
        print(f"mmfuse compare: {exc}", file=sys.stderr)
        return exc.exit_code
    print((out / "leaderboard.md").read_text())
    summ = json.loads((out / "summary.json").read_text())
    if "margin" in summ:
        print(f"best fusion {summ['best_fusion']} ({summ['best_fusion_mean']:.4f} ± {summ['best_fusion_std']:.4f}) vs best "
              f"unimodal {summ['best_unimodal']} ({summ['best_unimodal_mean']:.4f} ± {summ['best_unimodal_std']:.4f}): "
              f"margin {summ['margin']:+.4f}" + (f" (paired p = {summ['margin_p']:.3g}, {summ['margin_test']})"
                                                  if summ.get("margin_p") is not None
                                                  else f" ({summ['margin_test']})" if summ.get("margin_test") else ""))
    names = ["leaderboard.md", "leaderboard.csv", "runs.csv", "learning_curves.png", "leaderboard.png", "tsne.png",
             "summary.json", "tuning.db"]
    print(f"files in {out}: " + ", ".join(n for n in names if (out / n).is_file()))
    if summ.get("best_checkpoint"):
        print(f"best model ({summ['best_method']}, seed {summ.get('best_seed')}): {out / summ['best_checkpoint']} "
              "(mmfuse evaluate / predict / explain take it)")
        if after is not None:
            after(out, summ, cfg)
    _auto_report(out)
    return 0


def cmd_missing_study(args) -> int:
    """``mmfuse missing-study CONFIG``: ``mmfuse compare`` over η plus the study's table, verdicts and plot."""
    from .config import load_config
    from .missing.report import run_missing_study

    from .guards import check_output_path

    from .training.signals import TrainingInterrupted

    cfg = load_config(args.config, args.set)
    out = check_output_path(Path(args.out or cfg.output_dir), "dir", "--out")  # before any compute
    try:
        res = run_missing_study(cfg, out)
    except TrainingInterrupted as exc:  # SIGTERM / SIGINT: as compare: workers ended, finished runs stored
        print(f"mmfuse missing-study: {exc}", file=sys.stderr)
        return exc.exit_code
    print(res.markdown)
    print("written: " + ", ".join(res.paths.values()))
    _auto_report(out)  # like compare: the study folder is a compare folder
    return 0


def cmd_demo(args) -> int:
    from .config import parse_config

    overrides = list(args.set or [])
    if args.quick:  # a smoke run of the same protocol (see DEMO_QUICK)
        overrides = DEMO_QUICK + overrides
    cfg = parse_config(json.loads(json.dumps(DEMO_CONFIG)), overrides)
    c = cfg.compare
    n = c.tuning.trials
    te = c.tuning.epochs or cfg.training.max_epochs
    tuned = (f"each tuned with the same {n} Optuna trial{'s' if n != 1 else ''} (≤ {te} epoch{'s' if te != 1 else ''} "
             "each)" if n else "no tuning")
    print(f"mmfuse demo: which fusion works best on AV-MNIST (hard)? {len(c.methods or [])} methods "
          f"({', '.join(c.methods or [])}), {tuned}, then retrained on seeds {c.seeds} "
          f"(≤ {cfg.training.max_epochs} epochs, early stopping patience {cfg.training.patience}); then the best fused "
          f"run's modality contributions and interaction (exact Shapley, {DEMO_EXPLAIN_SAMPLES} test rows)", flush=True)
    return _run_compare(cfg, args.out, after=_demo_explain)


DEMO_EXPLAIN_SAMPLES = 40
# `mmfuse demo --quick`: the same protocol, smaller: 4 methods, 2 one-epoch trials each, ≤ 3 epochs on 3 seeds (the
# paired test needs 3), no ensemble
DEMO_QUICK = ["compare.seeds=[0,1,2]", "training.max_epochs=3", "training.patience=1", "compare.tuning.trials=2",
              "compare.tuning.epochs=1", "compare.ensemble.size=0",
              "compare.methods=[fusion:concat,fusion:late,unimodal:image,unimodal:audio]"]


def _demo_explain(out: Path, summ: dict, ccfg) -> None:
    """The demo's last step: exact modality Shapley values and the pairwise interaction of the best *fused* run
    (the best run when it is fused, else the best fusion's first-seed run), on the first test rows, in
    ``OUT/explain_shapley`` (the compare report then shows them)."""
    import csv
    import time

    from .predictor import explain_model
    from .training import load_checkpoint

    t0 = time.perf_counter()
    fused = summ.get("best_fusion")
    if not fused:
        return
    ckpt = out / summ["best_checkpoint"]  # relative to the study folder (an absolute path stays as it is)
    if fused != summ["best_method"]:  # the best fusion's first-seed run keeps its checkpoint (compare's pruning)
        with open(out / "runs.csv", newline="") as f:
            key = next(r["run"] for r in csv.DictReader(f)
                       if r["method"] == fused and str(r["seed"]) == str(ccfg.compare.seeds[0]))
        ckpt = out / "runs" / key / "checkpoint"
    model, cfg, meta = load_checkpoint(ckpt)
    datasets = _data_for(cfg, None)[1]
    print(f"explaining {fused} (seed {ccfg.compare.seeds[0]}) ...", flush=True)
    summ = explain_model(model, meta, _split(datasets, "test"), "shapley", out / "explain_shapley", seed=cfg.seed,
                         max_samples=DEMO_EXPLAIN_SAMPLES)
    shares = ", ".join(f"{m} {v:.2f}" for m, v in summ["mean_share"].items())
    inter = (summ.get("interactions") or {}).get("mean") or {}
    pairs = ", ".join(f"{p} {v:+.3f}" for p, v in inter.items())
    print(f"explained the best run on {summ['n_samples']} test rows (exact modality Shapley of the predicted class's "
          f"probability): mean share {shares}" + (f"; interaction (SII, > 0 synergy) {pairs}" if pairs else "")
          + f" ({time.perf_counter() - t0:.1f} s); files: {summ['out_dir']}")


def cmd_explain(args) -> int:
    from .predictor import explain_model
    from .guards import check_output_path
    from .training import load_checkpoint

    from .errors import ConfigError

    for flag, value in (("--max-samples", args.max_samples), ("--permutations", args.permutations)):
        if value < 1:
            raise ConfigError(f"{flag}: must be an integer >= 1, got {value}; use e.g. {flag} 10")
    check_output_path(args.out, "dir", "--out")  # before any compute
    model, cfg, meta = load_checkpoint(args.checkpoint)
    out = check_output_path(Path(args.out or Path(meta["_dir"]).parent / f"explain_{args.method}"), "dir", "--out")
    cfg, datasets = _data_for(cfg, args.set)
    ds = _split(datasets, args.split)
    if cfg.training.embedding_cache == "auto":  # frozen encoders: embeddings of the split computed once / read
        from .embedding_cache import attach_embedding_cache

        attach_embedding_cache(model, [ds], specs=cfg.model.encoders, batch_size=cfg.data.eval_batch_size)
    # per_sample.csv keys each row by its id (the table's id column, else its row number), as predict does
    summary = explain_model(model, meta, ds, args.method, out, seed=cfg.seed, n_permutations=args.permutations,
                            max_samples=args.max_samples, target=args.target)
    _print_summary(summary)
    print(f"files: {out}")
    _auto_report(out)
    for run in (out.parent, out.parent.parent):  # the train / compare folder's report now shows the contributions
        if (run / "report.html").is_file():
            _auto_report(run)
    return 0


def _print_summary(summary: dict) -> None:
    shares = summary.get("mean_share") or summary.get("shares") or {}
    if isinstance(shares, dict) and shares:
        _print_table([(m, f"{v:.3f}" if isinstance(v, float) else str(v)) for m, v in shares.items()],
                     "mean share of each modality:")
    rest = {k: v for k, v in summary.items() if k not in ("mean_share", "shares")}
    print(json.dumps(rest, indent=2, default=str))


def cmd_list(args) -> int:
    import mmfuse

    from .errors import ConfigError
    from .registry import suggestion

    groups = mmfuse.catalog()
    if args.what is not None and args.what not in groups:
        raise ConfigError(f"list: unknown kind {args.what!r}; {suggestion(args.what, list(groups))}")
    for kind, names in groups.items():
        if args.what in (None, kind):
            print(f"{kind}: {', '.join(names)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmfuse", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def with_set(sp):
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set training.max_epochs=5 (repeatable)")
        return sp

    sp = with_set(sub.add_parser("train", help="train one model from a YAML config"))
    sp.add_argument("config")
    sp.add_argument("--out", help="output folder (default: output_dir of the config)")
    sp.add_argument("--resume", action="store_true",
                    help="continue the run saved in OUT/last (per-epoch checkpoint; same as training.resume=true)")
    sp.set_defaults(fn=cmd_train)
    for name, fn, hlp in (("evaluate", cmd_evaluate, "evaluate a checkpoint, overall and per missing-modality pattern"),
                          ("predict", cmd_predict, "write predictions of a checkpoint as CSV")):
        sp = with_set(sub.add_parser(name, help=hlp))
        sp.add_argument("checkpoint")
        sp.add_argument("--split", default="test")
        sp.add_argument("--out", default="predictions.csv" if name == "predict" else None)
        if name == "predict":
            sp.add_argument("--table", default=None, help="predict every row of this CSV / Parquet table (no split, "
                                                          "no label needed) with the checkpoint's fitted pipeline")
            sp.add_argument("--schema", default=None, help="the table's schema (default: the checkpoint's)")
            sp.add_argument("--batch-size", type=int, default=None,
                            help="with --table: rows per forward pass (default 1: every row's probabilities are "
                                 "exactly reproducible; larger is faster, last float digits may vary)")
        sp.set_defaults(fn=fn)
    sp = with_set(sub.add_parser("compare", help="compare methods of any family × seeds (× compare.grid); "
                                                "writes a leaderboard"))
    sp.add_argument("config")
    sp.add_argument("--out")
    sp.set_defaults(fn=cmd_compare)
    sp = with_set(sub.add_parser("demo", help="the fair comparison on AV-MNIST hard (bundled data): 6 methods, "
                                              "4 Optuna trials each, retrained on 3 seeds, paired tests; ~5 min"))
    sp.add_argument("--out", default=None)
    sp.add_argument("--quick", action="store_true",
                    help="a smoke run of the same protocol: 4 methods (concat, late, image-only, audio-only), "
                         "2 one-epoch trials each, retrained ≤ 3 epochs on 3 seeds, no ensemble")
    sp.set_defaults(fn=cmd_demo)
    sp = with_set(sub.add_parser("explain", help="modality contributions of a checkpoint (Shapley / MM-SHAP)"))
    sp.add_argument("checkpoint")
    sp.add_argument("--method", choices=["shapley", "mmshap"], default="shapley")
    sp.add_argument("--split", default="test")
    sp.add_argument("--out", default=None)
    sp.add_argument("--max-samples", type=int, default=500)
    sp.add_argument("--permutations", type=int, default=10)
    sp.add_argument("--target", choices=["predicted", "logit"], default="predicted",
                    help="the score explained: the predicted class's probability, or its logit (multilabel: "
                         "each label's sigmoid probability, or its logit; regression: the prediction either way)")
    sp.set_defaults(fn=cmd_explain)
    sp = with_set(sub.add_parser("missing-study", help="missing-modality study over η: a compare grid of "
                                                      "imputation, dropout, SMIL, bounds (examples/missing_study.yaml)"))
    sp.add_argument("config")
    sp.add_argument("--out")
    sp.set_defaults(fn=cmd_missing_study)
    sp = sub.add_parser("report", help="one self-contained HTML report (RUN_DIR/report.html) of a train, "
                                       "compare or explain folder")
    sp.add_argument("run_dir", metavar="RUN_DIR")
    sp.add_argument("--out", default=None, help="the HTML file (default: RUN_DIR/report.html)")
    sp.set_defaults(fn=cmd_report)
    sp = sub.add_parser("list", help="list registered encoders, fusions, heads, late combiners, blocks, datasets")
    sp.add_argument("what", nargs="?", default=None)
    sp.set_defaults(fn=cmd_list)
    return p


def _original_message(exc: BaseException) -> str:
    """An mmfuse error raised in a DataLoader worker comes back re-wrapped by torch ("Caught DataError in
    DataLoader worker process 1. Original Traceback ..."): the user sees only the original message."""
    s = str(exc)
    if s.startswith("Caught ") and "\nOriginal Traceback" in s:
        import re

        tail = max(s.rfind('\n  File "'), 0)  # the exception line follows the last frame of the traceback
        hit = re.compile(rf"^(?:[\w.]+\.)?{re.escape(type(exc).__name__)}: ", re.M).search(s, tail)
        if hit:
            return s[hit.end():].rstrip()
    return s


_PACKAGE_DIR = Path(__file__).resolve().parent


def _format_warning(message, category, filename, lineno, line=None, _default=None) -> str:
    """mmfuse's own warnings as one ``warning: ...`` line, like the CLI's other notes (not a source file, a line
    number and a line of mmfuse's code); other packages' warnings keep Python's format."""
    try:
        ours = Path(filename).resolve().is_relative_to(_PACKAGE_DIR)
    except (OSError, TypeError, ValueError):
        ours = False
    if ours:
        return f"warning: {message}\n"
    return (_default or warnings.formatwarning)(message, category, filename, lineno, line)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    default_format = warnings.formatwarning
    warnings.formatwarning = functools.partial(_format_warning, _default=default_format)
    try:
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}; remove them (see `mmfuse "
                         f"{argv[0] if argv and not argv[0].startswith('-') else ''} --help` for the valid options)")
        return args.fn(args)
    except MMFuseError as exc:
        print(f"mmfuse {args.command}: error: {_original_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = default_format


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
