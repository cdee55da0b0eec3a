"""``mmfuse.Predictor``: a scikit-learn / AutoGluon-style front object over the config, pipeline and checkpoint.

    >>> p = mmfuse.Predictor(fusion="gated", max_epochs=5, out_dir="runs/mine")
    >>> p.fit("schema.yaml")                       # or fit("data.csv", schema=...), fit("avmnist"), fit(splits)
    >>> p.predict("new.csv")                       # every row, keyed by the schema's id column; no label needed
    >>> p.predict_proba("new.csv"); p.evaluate("test"); p.explain("test")
    >>> p.save("model/"); q = mmfuse.Predictor.load("model/")

It is a thin layer, not a second path: the constructor builds an :class:`~mmfuse.config.ExperimentConfig`
with :func:`~mmfuse.config.parse_config` (dotted overrides, all errors at once); ``fit`` calls
:func:`mmfuse.fit`, which writes the checkpoint (weights, config, fitted table pipeline), and the
predictor then serves from that checkpoint exactly as ``mmfuse evaluate / predict / explain`` do
(:func:`load_checkpoint`, :func:`predict_dataset`, :func:`table_predictions`, :func:`explain_model`; the
CLI calls the same functions).

Data accepted by ``fit``: a table schema (``.yaml`` path), a table (``.csv`` / ``.tsv`` / ``.parquet``)
with ``schema=`` (a dict or a YAML path; its ``table`` key is replaced), a built-in dataset name
(``mmfuse list datasets``; ``options=`` its options) or a dict of splits ``{"train", "val"[, "test"]}``.

Data accepted by ``predict`` / ``predict_proba`` / ``evaluate`` / ``explain``: a table path (every row,
through the checkpoint's fitted pipeline), a schema path (every row of its table), a split name
(``"train" | "val" | "test"`` of the data the model was fitted on), a dataset object, or a dict of
splits (``split=`` picks one).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError, ConfigError, DataError

TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")
SCHEMA_SUFFIXES = (".yaml", ".yml")
SPLIT_NAMES = ("train", "val", "test")


# ----------------------------------------------------------------------------------------------------------------
# the shared serving functions (``mmfuse predict`` / ``explain`` call them too)


def prediction_frame(res: dict, task: str, class_names=None, ids=None):
    """The predictions CSV of ``mmfuse predict`` as a DataFrame, with columns per task:

    * multiclass: ``prediction`` (class name), ``p[<class>]`` per class, ``target`` (the class name too when
      ``class_names`` are given, else the class index);
    * multilabel: ``pred[<label>]`` (0/1, probability > 0.5) and ``p[<label>]`` = sigmoid(logit) per
      label, ``target[<label>]``;
    * regression: ``prediction`` (one output) or ``prediction[<output>]`` per output, and ``target`` /
      ``target[<output>]`` alike.

    ``index`` is the row's position in the split, ``id`` its identifier in the source (``ds.ids``).
    """
    import pandas as pd

    scores = np.asarray(res["scores"], dtype=np.float64)
    n, k = scores.shape
    df = pd.DataFrame({"index": np.arange(n)})
    if ids is not None and len(ids) == n:
        df["id"] = np.asarray(ids)
    names = list(class_names) if class_names is not None and len(class_names) == k else [str(i) for i in range(k)]
    target = res.get("target")
    if task == "multiclass":
        z = np.exp(scores - scores.max(1, keepdims=True))
        probs = z / z.sum(1, keepdims=True)
        df["prediction"] = [names[i] for i in scores.argmax(1)]
        for j, name in enumerate(names):
            df[f"p[{name}]"] = probs[:, j]
        if target is not None:
            t = np.asarray(target).reshape(n)
            if class_names is not None and len(class_names) == k and np.issubdtype(t.dtype, np.number):
                # the class name, like ``prediction`` (and the label column of the user's table): comparing the two
                # columns must compare like with like
                ti = t.astype(np.int64)
                if len(ti) and ((ti == t) & (ti >= 0) & (ti < k)).all():
                    t = np.asarray([names[i] for i in ti], dtype=object)
            df["target"] = t
        return df
    if task == "multilabel":
        probs = 1.0 / (1.0 + np.exp(-scores))
        for j, name in enumerate(names):
            df[f"pred[{name}]"] = (scores[:, j] > 0).astype(int)
        for j, name in enumerate(names):
            df[f"p[{name}]"] = probs[:, j]
        cols = {f"target[{name}]": j for j, name in enumerate(names)}
    else:
        single = k == 1
        for j, name in enumerate(names):
            df["prediction" if single else f"prediction[{name}]"] = scores[:, j]
        cols = {("target" if single else f"target[{name}]"): j for j, name in enumerate(names)}
    if target is not None:
        t = np.asarray(target).reshape(n, -1)
        for col, j in cols.items():
            df[col] = t[:, j].astype(int) if task == "multilabel" else t[:, j]
    return df


def predict_dataset(model, ds, task: str, class_names=None, batch_size: int = 1, index: bool = True):
    """Predictions of ``model`` on every row of ``ds`` as a :func:`prediction_frame`, keyed by the rows' ids
    (:func:`mmfuse.explain.rows.sample_ids`), plus ``has[<modality>]`` (1 = the row has it). No ``target``
    column when the dataset has no labels (``ds.has_labels`` False). ``index=False`` drops the position column.

    ``batch_size`` 1 (the default) runs each row in its own forward pass, so its probabilities are
    bit-identical whatever other rows the data holds (batched float32 kernels can differ in the last digits
    with the batch's make-up)."""
    from .evaluation import collect, make_loader
    from .explain.rows import sample_ids

    res = collect(model, make_loader(ds, batch_size))
    if getattr(ds, "has_labels", True) is False:
        res.pop("target", None)
    df = prediction_frame(res, task, class_names, sample_ids(ds))
    if not index:
        df = df.drop(columns=["index"])
    present = getattr(ds, "present", None)
    if isinstance(present, Mapping):
        for m in sorted(getattr(ds, "modalities", present)):
            df[f"has[{m}]"] = np.asarray(present.get(m, np.ones(len(df), bool)), dtype=int)
        has = [c for c in df.columns if c.startswith("has[")]
        none = np.flatnonzero((df[has].to_numpy() == 0).all(1)) if has else []
        if len(none):  # kept (aligned with the table) but predicted from the model's prior alone: say so
            import warnings

            from .errors import NoModalityWarning

            key = "id" if "id" in df.columns else "index"
            shown = ", ".join(str(v) for v in df[key].to_numpy()[none][:10]) + (", ..." if len(none) > 10 else "")
            warnings.warn(f"{len(none)} row(s) have no modality present ({key} {shown}): their predictions come from "
                          "the model's prior alone, not from any input; drop these rows or give them at least one "
                          "modality (the has[...] columns are all 0 for them)", NoModalityWarning, stacklevel=2)
    return df


def load_table_rows(meta: dict, table=None, schema=None):
    """Every row of ``table`` (or of ``schema``'s table) through the checkpoint's fitted pipeline, in table
    order, no split, labels optional; a ConfigError when the checkpoint was not trained on a table."""
    from .datasets.table import load_table
    from .training.checkpoint import load_pipeline

    if not meta.get("pipeline"):
        raise ConfigError(f"{meta.get('_dir', 'this model')}: was not trained on a user table, so it holds no table "
                          "pipeline to read a new table with; pass a dataset or a split name instead of --table")
    ds = load_table(schema, pipeline=load_pipeline(meta), table=table, split="none")
    warn_unknown_words(ds)
    return ds


def unknown_word_rows(ds) -> dict[str, list[int]]:
    """``{modality: row positions}`` of the present text cells (vocabulary loader) whose every word is unknown to the
    checkpoint's vocabulary (fitted on the training rows): an unseen category or a text of new words is read as the
    unknown token only, so the model gets nothing from that modality for the row though ``has[...]`` says 1."""
    pipe = getattr(ds, "pipeline", None)
    arrays = getattr(ds, "arrays", None)
    present = getattr(ds, "present", None)
    out: dict[str, list[int]] = {}
    if pipe is None or not isinstance(arrays, Mapping):
        return out
    for m, loader in getattr(pipe, "loaders", {}).items():
        if hasattr(loader, "unseen_rows") and m in arrays:  # categorical: any category unseen in training
            rows = loader.unseen_rows(arrays[m], (present or {}).get(m), len(ds))
            if rows:
                out[m] = rows
            continue
        if getattr(loader, "token_kind", None) != "vocab" or m not in arrays:
            continue
        col, have = arrays[m], (present or {}).get(m)
        n = len(ds)
        if isinstance(col, np.ndarray) and col.ndim >= 1 and len(col) >= n and col.dtype.kind in "iu":
            ids = col[:n].reshape(n, -1)  # padded id matrix: 0 = padding, 1 = unknown
            hit = ((ids == 0) | (ids == 1)).all(1) & (ids != 0).any(1)
            if have is not None:
                hit &= np.asarray(have[:n], dtype=bool)
            rows = np.flatnonzero(hit).tolist()
        else:  # ragged ids: row by row
            rows = []
            for i in range(n):
                if have is not None and not have[i]:
                    continue
                ids = np.asarray(col[i]).reshape(-1)
                ids = ids[ids != 0]
                if ids.size and bool((ids == 1).all()):
                    rows.append(i)
        if rows:
            out[m] = rows
    return out


def warn_unknown_words(ds) -> None:
    """Warn (naming the rows and the column) about the rows of :func:`unknown_word_rows`."""
    found = unknown_word_rows(ds)
    if not found:
        return
    import warnings

    from .errors import UnknownWordsWarning
    from .explain.rows import sample_ids

    ids = sample_ids(ds) or list(range(len(ds)))
    pipe = ds.pipeline
    for m, rows in found.items():
        cols = ", ".join(repr(c) for c in getattr(pipe.loaders[m], "columns", [m]))
        shown = ", ".join(str(ids[i]) for i in rows[:10]) + (", ..." if len(rows) > 10 else "")
        if hasattr(pipe.loaders[m], "unseen_rows"):  # the categorical loader
            warnings.warn(f"column {cols} (modality {m!r}): {len(rows)} row(s) ({shown}) hold a category never seen in "
                          "the training rows; its one-hot block is all zero, so that column adds nothing to the "
                          f"prediction (has[{m}] is still 1). Check the category names, or leave "
                          "the cell empty to mark the modality absent", UnknownWordsWarning, stacklevel=3)
            continue
        warnings.warn(f"column {cols} (modality {m!r}): {len(rows)} row(s) ({shown}) hold only words / categories never "
                      "seen in the training rows; the model reads them as the unknown token, so these rows get no "
                      f"information from {m!r} (has[{m}] is still 1). Check the spelling / category names, or leave the "
                      "cell empty to mark the modality absent", UnknownWordsWarning, stacklevel=3)


def table_predictions(model, meta: dict, table=None, schema=None, batch_size: int = 1):
    """``mmfuse predict CKPT --table new.csv``: (predictions DataFrame of every row keyed by ``id``, dataset)."""
    ds = load_table_rows(meta, table, schema)
    return predict_dataset(model, ds, meta["task"], meta.get("class_names") or None, batch_size, index=False), ds


def explain_model(model, meta: dict, ds, method: str, out_dir, *, seed: int = 0, **kwargs) -> dict:
    """``mmfuse explain``: :func:`mmfuse.explain.explain_dataset` of a checkpoint's model on ``ds``, with the
    checkpoint's class names, the dataset's vocabulary (token labels) and its rows' ids in ``per_sample.csv``."""
    from .explain import explain_dataset

    vocab = next(iter((getattr(ds, "vocabs", None) or {}).values()), None) or getattr(ds, "vocab", None)
    return explain_dataset(model, ds, method, out_dir, class_names=meta.get("class_names") or None, vocab=vocab,
                           seed=seed, task=meta["task"], **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# the front object


def _dotted(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """``{"training.lr": 0.01}`` or ``["training.lr=0.01"]`` -> ``--set`` strings (JSON values are YAML)."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        out = []
        for k, v in overrides.items():
            if not isinstance(k, str) or not k:
                raise ConfigError(f"Predictor: override keys are dotted config paths like 'training.lr', got {k!r}")
            try:
                out.append(f"{k}={json.dumps(v)}")
            except TypeError:
                raise ConfigError(f"Predictor: override {k!r}: value {v!r} is not a plain value "
                                  "(number, string, list, dict)") from None
        return out
    if isinstance(overrides, str) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError("Predictor: overrides must be a dict {'training.lr': 0.01} or a list of 'key=value' strings")
    return list(overrides)


def _raw_config(config) -> tuple[dict, Path | None]:
    from .config import ExperimentConfig

    if config is None:
        return {}, None
    if isinstance(config, ExperimentConfig):
        return config.model_dump(mode="json"), None
    if isinstance(config, Mapping):
        return json.loads(json.dumps(dict(config), default=str)), None
    if isinstance(config, (str, os.PathLike)):
        from .config import read_config_file

        return read_config_file(config, "Predictor: config file"), Path(config).parent
    raise ConfigError(f"Predictor: config must be None, a dict, an ExperimentConfig or a YAML path, "
                      f"got {type(config).__name__}")


def _is_dataset(v) -> bool:
    return (not isinstance(v, (str, bytes, os.PathLike, Mapping)) and hasattr(v, "__len__")
            and hasattr(v, "__getitem__"))


def _is_splits(data) -> bool:
    return (isinstance(data, Mapping) and bool(data) and set(data) <= {*SPLIT_NAMES}
            and all(_is_dataset(v) for v in data.values()))


class Predictor:
    """Fit, predict, evaluate, explain, save and load a multimodal model in a few lines.

    ``config``: a config dict, an :class:`ExperimentConfig`, a YAML path or None (the defaults).
    ``family`` / ``fusion`` / ``encoders`` / ``max_epochs`` / ``seed`` / ``out_dir``: shortcuts for
    ``model.family``, ``model.fusion.name``, ``model.encoders`` (``{modality: name or {name, options}}``),
    ``training.max_epochs``, ``seed`` and ``output_dir``.
    ``overrides``: more dotted keys, ``{"training.lr": 0.01, "model.missing.modality_dropout": 0.3}``
    (or ``["training.lr=0.01"]``, as ``--set``). The config is validated here, all errors at once
    (a ConfigError); data-dependent checks run again in :meth:`fit`.

    After :meth:`fit` or :meth:`load`: ``checkpoint_`` (the folder served from), ``model_``,
    ``config_``, ``task_``, ``classes_``; after :meth:`fit` also ``result_`` (:class:`RunResult`:
    history, val / test reports).
    """

    def __init__(self, config=None, *, family: str | None = None, fusion: str | None = None,
                 encoders: Mapping[str, Any] | None = None, max_epochs: int | None = None, seed: int | None = None,
                 out_dir: str | os.PathLike | None = None,
                 overrides: Mapping[str, Any] | Sequence[str] | None = None):
        from .config import parse_config

        raw, base = _raw_config(config)
        if encoders is not None and not isinstance(encoders, Mapping):
            raise ConfigError("Predictor: encoders maps modality -> encoder name or {name, options}, e.g. "
                              "{'caption': {'name': 'gru', 'options': {'vocab_size': 1000}}}")
        sets = []
        for key, value in (("model.family", family), ("model.fusion.name", fusion),
                           *((f"model.encoders.{m}", {"name": e} if isinstance(e, str) else e)
                             for m, e in (encoders or {}).items()),
                           ("training.max_epochs", max_epochs), ("seed", seed),
                           ("output_dir", None if out_dir is None else str(out_dir))):
            if value is not None:
                try:
                    sets.append(f"{key}={json.dumps(value)}")
                except TypeError:
                    raise ConfigError(f"Predictor: {key}: {value!r} is not a plain value") from None
        self._raw, self._base, self._sets = raw, base, sets + _dotted(overrides)
        probe = json.loads(json.dumps(raw, default=str))
        data = probe.get("data")
        if data is None or (isinstance(data, dict) and "name" not in data):
            # no data yet: validate everything that does not depend on it (a schema-like name skips data checks)
            probe["data"] = {**(data or {}), "name": "<data given to fit>.yaml"}
        self.config_ = parse_config(probe, self._sets)
        self.checkpoint_: Path | None = None
        self.model_ = None
        self.result_ = None
        self._meta: dict | None = None
        self._splits: dict | None = None

    # -------------------------------------------------------------------------------------------------- fit
    def _data_section(self, data, schema, options) -> tuple[dict, dict | None]:
        """(config ``data`` section, splits to train on or None)."""
        from .registry import DATASETS, suggestion

        if _is_splits(data):
            if schema is not None or options:
                raise ConfigError("Predictor.fit: schema= and options= describe a table or a named dataset, "
                                  "not a dict of splits")
            return {}, dict(data)
        if isinstance(data, Mapping):
            raise DataError(f"Predictor.fit: a dict of data must map split names {list(SPLIT_NAMES)} to datasets, "
                            f"got keys {sorted(map(str, data))[:5]}")
        if not isinstance(data, (str, os.PathLike)):
            raise DataError(f"Predictor.fit: data must be a table / schema path, a dataset name or a dict of splits, "
                            f"got {type(data).__name__}")
        opts = dict(options or {})
        path = Path(data).expanduser()
        suffix = path.suffix.lower()
        if suffix in SCHEMA_SUFFIXES:
            if schema is not None:
                raise ConfigError("Predictor.fit: data is already a schema; give schema= only with a table file")
            if not path.is_file():
                raise ConfigError(f"Predictor.fit: schema file {str(path)!r} not found")
            return {"name": str(path.resolve()), "options": opts}, None
        if suffix in TABLE_SUFFIXES:
            if not path.is_file():
                raise DataError(f"Predictor.fit: table {str(path)!r} not found")
            if schema is None:
                raise ConfigError(f"Predictor.fit: the table {str(path)!r} needs a schema: fit(table, schema=dict or "
                                  "'schema.yaml') naming its target and modality columns (see examples/table_schema.yaml)")
            raw, base = self._schema_dict(schema)
            base = base or path.resolve().parent  # a dict schema: relative paths are the table's folder's
            raw["table"] = str(path.resolve())
            return {"name": "table", "options": {**opts, "schema": raw, "base_dir": str(base)}}, None
        name = str(data)
        import mmfuse.datasets  # noqa: F401  (fill the registry)

        if name in DATASETS and name != "table":
            if schema is not None:
                raise ConfigError(f"Predictor.fit: {name!r} is a built-in dataset; schema= describes a table file")
            return {"name": name, "options": opts}, None
        if path.exists():
            raise DataError(f"Predictor.fit: {name!r} is neither a table ({', '.join(TABLE_SUFFIXES)}) nor a schema "
                            f"({', '.join(SCHEMA_SUFFIXES)})")
        raise ConfigError(f"Predictor.fit: {name!r} is no file and no built-in dataset; "
                          f"{suggestion(name, [d for d in DATASETS.list() if d != 'table'])}")

    @staticmethod
    def _schema_dict(schema) -> tuple[dict, Path | None]:
        """(schema dict, the folder of its YAML file or None for a dict)."""
        import yaml

        if isinstance(schema, Mapping):
            return json.loads(json.dumps(dict(schema), default=str)), None
        if isinstance(schema, (str, os.PathLike)):
            p = Path(schema).expanduser()
            if not p.is_file():
                raise ConfigError(f"Predictor.fit: schema file {str(p)!r} not found")
            try:
                raw = yaml.safe_load(p.read_text())
            except yaml.YAMLError as exc:
                raise ConfigError(f"Predictor.fit: schema {str(p)!r} is not valid YAML: {exc}") from None
            if not isinstance(raw, dict):
                raise ConfigError(f"Predictor.fit: schema {str(p)!r} must be a mapping with keys table, target, "
                                  "modalities")
            return raw, p.resolve().parent
        raise ConfigError(f"Predictor.fit: schema must be a dict or a YAML path, got {type(schema).__name__}")

    def fit(self, data, *, schema=None, options: Mapping[str, Any] | None = None) -> "Predictor":
        """Train with :func:`mmfuse.fit` on ``data`` (see the module docstring) and serve from its checkpoint
        (written to ``out_dir`` / the config's ``output_dir`` + ``/checkpoint``). Returns ``self``."""
        from .config import _resolve_schema_paths, parse_config
        from .training import fit

        section, splits = self._data_section(data, schema, options)
        raw = json.loads(json.dumps(self._raw))
        if section:
            raw["data"] = {**{k: v for k, v in (raw.get("data") or {}).items() if k not in ("name", "options")},
                           **section}
        elif self._base is not None:
            _resolve_schema_paths(raw, self._base)
        cfg = parse_config(raw, self._sets)
        out = Path(cfg.output_dir)
        self.result_ = fit(cfg, datasets=splits, out_dir=out)
        self._splits = splits
        self._attach(self.result_.checkpoint)
        return self

    # -------------------------------------------------------------------------------------------------- serve
    def _attach(self, path) -> None:
        from .training import load_checkpoint
        from .training.checkpoint import read_meta

        self.model_, self.config_, _ = load_checkpoint(path)
        self._meta = read_meta(path)
        self.checkpoint_ = Path(self._meta["_dir"])

    def _need_fit(self) -> dict:
        if self._meta is None:
            raise ConfigError("Predictor: not fitted; call .fit(data) or Predictor.load(checkpoint) first")
        return self._meta

    @property
    def task_(self) -> str:
        return self._need_fit()["task"]

    @property
    def classes_(self) -> list[str] | None:
        return self._need_fit().get("class_names") or None

    def _dataset(self, data, split: str, labels: bool = False):
        """One dataset from any accepted form of ``data`` (through the checkpoint's pipeline for tables)."""
        from .config import parse_config
        from .datasets import load_dataset
        from .training.fit import data_seed, load_data

        meta = self._need_fit()
        if isinstance(data, Mapping):
            if split not in data:
                raise ConfigError(f"Predictor: split {split!r} is not in the data; choose from {sorted(data)}")
            data = data[split]
        if isinstance(data, (str, os.PathLike)):
            path = Path(data).expanduser()
            suffix = path.suffix.lower()
            if suffix in TABLE_SUFFIXES or suffix in SCHEMA_SUFFIXES:
                if not path.is_file():
                    raise DataError(f"Predictor: file {str(path)!r} not found")
                ds = (load_table_rows(meta, table=path) if suffix in TABLE_SUFFIXES
                      else load_table_rows(meta, schema=path))
                if labels and not ds.has_labels:
                    raise DataError(f"Predictor: {str(path)!r} has no label column; evaluating needs the labels")
                return ds
            name = str(data)
            if name in SPLIT_NAMES:
                splits = self._splits
                if splits is None:
                    cfg = parse_config(self.config_.model_dump(), devices=False)
                    splits = load_data(cfg)
                split, where = name, "the fitted data"
            else:
                from .registry import DATASETS, suggestion

                if name not in DATASETS:
                    raise ConfigError(f"Predictor: {name!r} is no table file, split name {list(SPLIT_NAMES)} or "
                                      f"dataset; {suggestion(name, DATASETS.list())}")
                splits, where = load_dataset(name, seed=data_seed(self.config_)), f"dataset {name!r}"
            if split not in splits or len(splits[split]) == 0:
                raise ConfigError(f"Predictor: {where} has no non-empty split {split!r}; choose from {sorted(splits)}")
            return splits[split]
        if _is_dataset(data):
            return data
        raise DataError(f"Predictor: cannot read data of type {type(data).__name__}; give a table path, a schema "
                        "path, a split name, a dataset or a dict of splits")

    def predict(self, data="test", *, split: str = "test", batch_size: int = 1):
        """Predictions DataFrame indexed by each row's ``id`` (the schema's id column, else the row number):
        ``prediction`` + ``p[<class>]`` (multiclass), ``pred[<label>]`` + ``p[<label>]`` (multilabel) or
        ``prediction`` (regression), ``target`` when the data has labels, ``has[<modality>]``.
        The same frame ``mmfuse predict`` writes; ``batch_size`` 1 makes each row's output independent of
        the others bit for bit."""
        meta = self._need_fit()
        ds = self._dataset(data, split)
        df = predict_dataset(self.model_, ds, meta["task"], self.classes_, batch_size)
        return df.drop(columns=["index"]).set_index("id") if "id" in df else df.set_index("index")

    def predict_proba(self, data="test", *, split: str = "test", batch_size: int = 1):
        """Class probabilities (multiclass: softmax, rows sum to 1; multilabel: one sigmoid per label), one
        column per class / label, indexed like :meth:`predict`. A ConfigError for regression."""
        if self.task_ == "regression":
            raise ConfigError("Predictor.predict_proba: a regression model predicts values, not probabilities; "
                              "use .predict")
        df = self.predict(data, split=split, batch_size=batch_size)
        cols = [c for c in df.columns if c.startswith("p[") and c.endswith("]")]
        return df[cols].rename(columns=lambda c: c[2:-1])

    def evaluate(self, data="test", *, split: str = "test", per_pattern: bool = True) -> dict:
        """The report of ``mmfuse evaluate``: ``metrics``, ``patterns`` (simulated: modalities hidden at test
        time), ``observed`` (rows grouped by the modalities they really have, n each) and
        ``rows_without_modality``. The data needs labels."""
        from .evaluation import evaluate

        meta = self._need_fit()
        ds = self._dataset(data, split, labels=True)
        return evaluate(self.model_, ds, meta["task"], self.config_.data.eval_batch_size, per_pattern=per_pattern)

    def explain(self, data="test", method: str = "shapley", *, split: str = "test", out_dir=None,
                max_samples: int | None = 500, permutations: int = 10, target: str = "predicted") -> dict:
        """Modality contributions (``mmfuse explain``): writes ``per_sample.csv`` (rows keyed by ``id``),
        ``breakdown.csv`` and figures to ``out_dir`` (default: next to the checkpoint,
        ``explain_<method>``) and returns the summary (``mean_share`` per modality, ...)."""
        meta = self._need_fit()
        ds = self._dataset(data, split)
        out = Path(out_dir) if out_dir is not None else self.checkpoint_.parent / f"explain_{method}"
        return explain_model(self.model_, meta, ds, method, out, seed=self.config_.seed, n_permutations=permutations,
                             max_samples=max_samples, target=target)

    # -------------------------------------------------------------------------------------------------- files
    def save(self, path) -> Path:
        """Copy the checkpoint folder (weights, config, fitted pipeline) to ``path``; returns it.
        ``path`` must be new, empty, or an earlier mmfuse checkpoint (its files are replaced)."""
        self._need_fit()
        dst = Path(path).expanduser()
        src = self.checkpoint_
        if dst.resolve() == src.resolve():
            return dst
        if dst.exists():
            if not dst.is_dir():
                raise ConfigError(f"Predictor.save: {str(dst)!r} is a file; give a folder")
            if any(dst.iterdir()) and not (dst / "config.json").is_file():
                raise ConfigError(f"Predictor.save: {str(dst)!r} is a non-empty folder that is not an mmfuse "
                                  "checkpoint; give a new or empty folder")
        dst.mkdir(parents=True, exist_ok=True)
        names = {p.name for p in src.iterdir() if p.is_file()}
        for old in dst.iterdir():  # files of an earlier checkpoint that this one does not have (a stale pipeline)
            if old.is_file() and old.name not in names:
                old.unlink()
        for name in sorted(names - {"config.json"}) + ["config.json"]:  # config.json (digests) last
            shutil.copy2(src / name, dst / name)
        return dst

    @classmethod
    def load(cls, path) -> "Predictor":
        """A predictor serving the checkpoint folder ``path`` (written by :meth:`save`, :meth:`fit` or
        ``mmfuse train``)."""
        if not Path(path).expanduser().is_dir():
            raise CheckpointError(f"Predictor.load: {str(path)!r} is not a checkpoint folder")
        self = cls.__new__(cls)
        self._raw, self._base, self._sets = {}, None, []
        self.result_, self._splits = None, None
        self._attach(Path(path).expanduser())
        self._raw = self.config_.model_dump(mode="json")
        self._raw.get("data", {}).get("options", {}).pop("pipeline", None)
        return self

    def __repr__(self) -> str:
        cfg = self.config_
        state = f"checkpoint={str(self.checkpoint_)!r}" if self.checkpoint_ is not None else "not fitted"
        return f"Predictor(family={cfg.model.family!r}, {state})"
