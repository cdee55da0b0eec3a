"""Cost of handing the C heap back in a streamed epoch (issue 12, item 1; `datasets/streaming.py`: `trim_heap`).

Paired whole processes, the order alternated within each pair: a 1-epoch streamed `fit` (`num_workers: 0`, mlp
encoders, batch 256, 1 thread, diagnostics off) over a table written by `table_loader.py --stream-train`, with

- every: `malloc_trim(0)` before each streamed batch (the earlier code),
- thresh: the default (`trim_every`: once every `TRIM_EVERY` = 8 batches).

Measured from Lightning's `on_fit_start` to `on_fit_end` (the epoch and its validation loop; the load and the
imports before it are the same on both sides): process CPU time (user + system), minor page faults, the number
of `malloc_trim` calls, and `ru_maxrss`. Prints each pair and the median and IQR of the CPU ratio every/thresh.

    python benchmarks/table_trim.py /tmp/s4/benchA/s10000x16 --pairs 6
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys


def worker(mode: str, root: str) -> dict:
    import torch

    torch.set_num_threads(1)
    import mmfuse.datasets.streaming as S

    lib = S._glibc()
    calls = [0]
    if lib:
        trim0 = lib[0]

        def counted(x):
            calls[0] += 1
            return trim0(x)

        S._LIBC = (counted, lib[1])
    if mode == "every":
        S.TRIM_EVERY = 1  # trim_every(): a trim before each batch
    from mmfuse.config import parse_config
    from mmfuse.training.fit import fit
    from mmfuse.training.system import import_lightning

    L = import_lightning()
    raw = {"data": {"name": "table", "options": {"schema": root + "/s.yaml", "stream": True, "cache": False},
                    "batch_size": 256, "eval_batch_size": 512, "num_workers": 0},
           "model": {"strategy": "feature", "encoders": {"img": {"name": "mlp", "options": {"hidden": [32]}},
                                                          "num": {"name": "mlp", "options": {"hidden": [8]}}},
                     "fusion": {"name": "concat"}},
           "training": {"max_epochs": 1, "diagnostics": False, "progress": False, "plots": False,
                        "evaluate_patterns": False}, "seed": 0}
    at: dict = {}

    class Span(L.Callback):
        def on_fit_start(self, trainer, module):
            ru = resource.getrusage(resource.RUSAGE_SELF)
            at.update(c0=ru.ru_utime + ru.ru_stime, f0=ru.ru_minflt, t0=calls[0])

        def on_fit_end(self, trainer, module):
            ru = resource.getrusage(resource.RUSAGE_SELF)
            at.update(cpu=ru.ru_utime + ru.ru_stime - at["c0"], faults=ru.ru_minflt - at["f0"],
                      trims=calls[0] - at["t0"], maxrss_mb=ru.ru_maxrss / 1024)

    fit(parse_config(raw), save=False, callbacks=[Span()])
    return {"mode": mode, "cpu": at["cpu"], "faults": at["faults"], "trims": at["trims"], "maxrss_mb": at["maxrss_mb"]}


def run(mode: str, root: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, __file__, root, "--worker", mode], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def iqr(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return f"median {statistics.median(xs):.3f} (IQR {q[0]:.3f}-{q[2]:.3f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", help="a table folder written by table_loader.py --stream-train (s.yaml inside)")
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--worker", default=None)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.root)))
        return
    print(f"uptime: {os.popen('uptime').read().strip()}; threads: 1; table {a.root}")
    run("thresh", a.root)  # warm-up (page cache), discarded
    res: dict[str, list[dict]] = {"every": [], "thresh": []}
    for i in range(a.pairs):
        for m in (("every", "thresh") if i % 2 == 0 else ("thresh", "every")):
            res[m].append(run(m, a.root))
        e, t = res["every"][-1], res["thresh"][-1]
        print(f"pair {i + 1}: every cpu {e['cpu']:.2f} s, faults {e['faults']}, trims {e['trims']} | thresh cpu "
              f"{t['cpu']:.2f} s, faults {t['faults']}, trims {t['trims']} | maxrss {e['maxrss_mb']:.1f} / "
              f"{t['maxrss_mb']:.1f} MB", flush=True)
    ratio = [e["cpu"] / t["cpu"] for e, t in zip(res["every"], res["thresh"])]
    print(f"CPU every/thresh: {iqr(ratio)}; > 1 in {sum(r > 1 for r in ratio)} of {len(ratio)} pairs")
    for m in res:
        print(f"  {m}: cpu s {iqr([x['cpu'] for x in res[m]])}; minor faults {iqr([x['faults'] for x in res[m]])}; "
              f"trims {iqr([x['trims'] for x in res[m]])}")
    print(f"uptime after: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
