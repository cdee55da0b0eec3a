"""DataLoader workers alive during a streamed fit (issue 12, item 1): the process tree sampled every 0.05 s
(`Pss_Anon` of each process from /proc/<pid>/smaps_rollup), per Lightning phase (import + load until
`on_fit_start`, the training epoch, the validation loop, after it, after `on_fit_end`): the most worker processes
alive at once, the summed anonymous PSS of the tree and each process's own. One run, one process:

    python benchmarks/table_workers.py /tmp/s4/benchA/s100000x16 2
"""
import sys, os, time, json, threading
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tempfile
from table_loader import _anon_pss_kb, _tree, _pss_kb
root, workers = sys.argv[1], int(sys.argv[2])
from mmfuse.config import parse_config
from mmfuse.training.fit import fit
me = os.getpid()
phase = ["import"]
log = []
peak = {}
stop = threading.Event()
def sample():
    while not stop.is_set():
        procs = _tree(me)
        vals = {p: _anon_pss_kb(p) for p in procs}
        for p, v in vals.items():
            k = (p, phase[0])
            peak[k] = max(peak.get(k, 0), v)
        log.append((time.time(), phase[0], len(procs) - 1, sum(vals.values()), vals.get(me, 0)))
        stop.wait(0.05)
th = threading.Thread(target=sample, daemon=True); th.start()
raw = {"data": {"name": "table", "options": {"schema": root + "/s.yaml", "stream": True, "cache": False},
                "batch_size": 256, "eval_batch_size": 512, "num_workers": workers},
       "model": {"strategy": "feature", "encoders": {"img": {"name": "mlp", "options": {"hidden": [32]}},
                                                      "num": {"name": "mlp", "options": {"hidden": [8]}}},
                 "fusion": {"name": "concat"}},
       "training": {"max_epochs": 1, "diagnostics": True, "progress": False}, "output_dir": tempfile.mkdtemp(prefix="mmfuse-workers-"), "seed": 0}
cfg = parse_config(raw)
from mmfuse.training.system import import_lightning
L = import_lightning()
class Ph(L.Callback):
    def on_fit_start(self, t, m):
        phase[0] = "fit_start"
    def on_train_epoch_start(self, t, m): phase[0] = "train"
    def on_validation_start(self, t, m): phase[0] = "val"
    def on_validation_end(self, t, m): phase[0] = "after_val"
    def on_fit_end(self, t, m): phase[0] = "post_fit"
fit(cfg, callbacks=[Ph()])
phase[0] = "done"
time.sleep(0.2)
stop.set(); th.join()
import collections
per_phase = collections.defaultdict(dict)
for (p, ph), v in peak.items():
    per_phase[ph]["main" if p == me else str(p)] = round(v / 1024, 1)
maxkids = collections.defaultdict(int); maxsum = collections.defaultdict(int)
for t, ph, n, s, m in log:
    maxkids[ph] = max(maxkids[ph], n); maxsum[ph] = max(maxsum[ph], s)
print(json.dumps({"per_phase": per_phase, "max_children": maxkids, "max_tree_anon_mb": {k: round(v/1024, 1) for k, v in maxsum.items()}}, indent=0))
