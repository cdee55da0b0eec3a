"""Where a streamed `fit`'s memory goes, phase by phase (issue 12, item 1; benchmarks/README.md, table loader (d)).

One process, one table (a folder written by ``benchmarks/table_loader.py --stream-train``): the same config as
``table_loader.py``'s (d) runs (1 epoch, mlp encoders, batch 256, ``stream: true``, ``cache: false``). Before each
phase the peak resident set is reset (``echo 5 > /proc/self/clear_refs``: VmHWM := VmRSS), so each row's peak is
that phase's own. Columns: RSS before the phase, its peak, RSS after, anonymous and file-backed RSS after, all in
MB over the baseline taken after the imports (Lightning imported first, as ``fit`` does). Linux only.

    python benchmarks/table_phases.py /tmp/s4/benchA/s100000x16 [num_workers]
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")


def status() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) / 1024
    return out


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main() -> None:
    root = sys.argv[1]
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    from mmfuse.config import parse_config
    from mmfuse.training.system import import_lightning

    import importlib

    import mmfuse.evaluation as E
    import mmfuse.training.checkpoint as C

    F = importlib.import_module("mmfuse.training.fit")  # the module (the package exports a function of that name)
    L = import_lightning()
    base = status()
    rows: list[tuple] = []

    def record(name: str, before: dict) -> None:
        now = status()
        rows.append((name, before["VmRSS"] - base["VmRSS"], now["VmHWM"] - base["VmRSS"], now["VmRSS"] - base["VmRSS"],
                     now["RssAnon"] - base["RssAnon"], now["RssFile"] - base["RssFile"]))

    def phase(name, fn):
        def wrapped(*a, **k):
            before = status()
            reset_peak()
            try:
                return fn(*a, **k)
            finally:
                record(name, before)
        return wrapped

    E.evaluate = phase("evaluate", E.evaluate)
    F.save_checkpoint = phase("save_checkpoint", F.save_checkpoint)
    C.save_checkpoint = phase("save_epoch_checkpoint", C.save_checkpoint)
    F._diagnostics = phase("diagnostics", F._diagnostics)
    L.Trainer.fit = phase("trainer.fit", L.Trainer.fit)

    class Marks(L.Callback):
        def _mark(self, name):
            record(name, status())
            reset_peak()

        def on_train_start(self, *a):
            self._mark("to train start")

        def on_validation_start(self, *a):
            self._mark("training batches")

        def on_validation_end(self, *a):
            self._mark("validation loop")

    raw = {"data": {"name": "table", "options": {"schema": f"{root}/s.yaml", "stream": True, "cache": False},
                    "batch_size": 256, "eval_batch_size": 512, "num_workers": workers},
           "model": {"strategy": "feature", "encoders": {"img": {"name": "mlp", "options": {"hidden": [32]}},
                                                          "num": {"name": "mlp", "options": {"hidden": [8]}}},
                     "fusion": {"name": "concat"}},
           "training": {"max_epochs": 1, "progress": False}, "output_dir": f"{root}/run_phases", "seed": 0}
    cfg = parse_config(raw)
    datasets = phase("load_data", F.load_data)(cfg)
    result = phase("fit (whole)", F.fit)(cfg, datasets=datasets, callbacks=[Marks()])
    print(f"{'phase':24s} {'rss before':>10s} {'peak':>8s} {'rss after':>9s} {'anon':>7s} {'file':>7s}  (MB over the baseline)")
    for r in rows:
        print(f"{r[0]:24s} " + " ".join(f"{v:9.1f}" for v in r[1:]))
    print("test metrics", json.dumps(result.test["metrics"]))


if __name__ == "__main__":
    main()
