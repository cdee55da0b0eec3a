"""mmfuse.ensemble: Caruana greedy selection against a hand-computed sequence."""

import numpy as np
import pytest

from mmfuse.ensemble import blend, caruana, from_probs, seedwise, to_probs


def _neg_mse(y):
    return lambda p: float(((p - y) ** 2).mean())


def test_greedy_sequence_matches_hand_computation():
    y = np.array([1.0, 1.0])
    preds = {"A": np.array([1.2, 1.2]), "B": np.array([0.9, 0.9]), "C": np.array([0.5, 1.5])}
    # step 1: MSE A .04, B .01, C .25 -> B;  step 2: B+A -> 1.05 (.0025), B+B .01, B+C [.7, 1.2] (.065) -> A
    # step 3: +A -> 1.1 (.01), +B -> 1.0 (0), +C -> [.867, 1.2] (.0289) -> B
    w, chosen, trace = caruana(preds, _neg_mse(y), 3, direction="min")
    assert chosen == ["B", "A", "B"]
    assert w == pytest.approx({"B": 2 / 3, "A": 1 / 3})
    assert trace == pytest.approx([0.01, 0.0025, 0.0])
    assert blend(preds, w) == pytest.approx([1.0, 1.0])


def test_one_clearly_best_model_is_chosen_every_time():
    rng = np.random.default_rng(0)
    y = rng.normal(size=20)
    preds = {"noisy1": y + rng.normal(size=20), "exact": y.copy(), "noisy2": y + 2 * rng.normal(size=20)}
    w, chosen, _ = caruana(preds, _neg_mse(y), 4, direction="min")
    assert w == {"exact": 1.0} and chosen == ["exact"] * 4


def test_probabilities_round_trip_and_seedwise():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 3))
    assert to_probs(from_probs(to_probs(logits, "multiclass"), "multiclass"), "multiclass") == pytest.approx(
        to_probs(logits, "multiclass"))
    y = np.array([0, 1, 2, 0, 1, 2])
    good = np.eye(3)[y] * 5.0  # confident and right
    bad = np.eye(3)[(y + 1) % 3] * 5.0  # confident and wrong
    val = {"good": {0: good, 1: good}, "bad": {0: bad, 1: bad}}
    res = seedwise(val, val, y, y, "multiclass", "accuracy", "max", 2, [0, 1])
    assert [p["weights"] for p in res["per_seed"]] == [{"good": 1.0}, {"good": 1.0}]
    assert all(p["test"]["accuracy"] == 1.0 for p in res["per_seed"])


def test_candidates_are_ranked_on_validation_not_test(tmp_path):
    """compare's ensemble library: the top K by validation metric; a method best on test but worst on val is out."""
    from types import SimpleNamespace as NS

    import pandas as pd

    from mmfuse.compare import _ensemble
    from mmfuse.ensemble import rank_by_val

    y = np.array([0, 1, 2, 0, 1, 2])
    right, wrong = np.eye(3)[y] * 5.0, np.eye(3)[(y + 1) % 3] * 5.0
    half = right.copy()
    half[:3] = wrong[:3]  # 50 % right
    # (val scores, test scores): "testbest" is perfect on test but always wrong on val
    runs = {"testbest": (wrong, right), "valbest": (right, half), "mid": (half, wrong)}
    (tmp_path / "runs").mkdir()
    jobs = []
    for name, (v, t) in runs.items():
        for s in (0, 1):
            key = f"{name}-{s}"
            np.savez(tmp_path / "runs" / f"{key}.preds.npz", val_scores=v, test_scores=t, val_target=y, test_target=y)
            jobs.append(NS(point={}, method=NS(label=name), key=key, seed=s))
    ranked = rank_by_val({m: {0: v, 1: v} for m, (v, _) in runs.items()}, y, "multiclass", "accuracy", "max")
    assert ranked == [("valbest", 1.0), ("mid", 0.5), ("testbest", 0.0)]
    board = pd.DataFrame({"method": ["testbest", "valbest", "mid"], "params": [1, 1, 1],
                          "train_seconds": [1.0, 1.0, 1.0]})  # the test ranking puts testbest first
    cfg = NS(compare=NS(ensemble=NS(size=2, top=2), seeds=[0, 1]))
    res = _ensemble(cfg, NS(jobs=jobs), tmp_path, board, "multiclass", "accuracy", "max")
    assert res["info"]["candidates"] == ["valbest", "mid"]  # never testbest
    assert res["info"]["candidate_val"] == {"valbest": 1.0, "mid": 0.5, "testbest": 0.0}
    assert all(p["weights"] == {"valbest": 1.0} for p in res["info"]["per_seed"])
