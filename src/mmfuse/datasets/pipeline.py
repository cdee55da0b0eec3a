"""The fitted data pipeline of a user table, saved with a checkpoint (JSON + safetensors, never pickle).

:class:`TablePipeline` holds the table's schema, one fitted column loader per modality
(:mod:`mmfuse.datasets.columns`) and the fitted target encoder (class list and order). ``mmfuse
evaluate`` / ``predict`` / ``explain`` reapply it unchanged, so a row's prediction depends only on
that row and the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write as _atomic
from ..errors import CheckpointError
from .columns import ColumnLoader, TargetEncoder

PIPELINE_JSON, PIPELINE_TENSORS = "pipeline.json", "pipeline.safetensors"
FORMAT = "mmfuse-table-pipeline-1"


class TablePipeline:
    """Schema + fitted loaders + fitted target of a table."""

    def __init__(self, schema: dict[str, Any], schema_dir: str, loaders: dict[str, ColumnLoader],
                 target: TargetEncoder | None, id_column: str | None = None):
        self.schema = schema
        self.schema_dir = str(schema_dir)
        self.loaders = loaders
        self.target = target
        self.id_column = id_column

    @property
    def class_names(self) -> list[str] | None:
        return None if self.target is None else self.target.class_names

    # -- serialisation
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able description, arrays): arrays are referenced from the JSON by their key."""
        arrays: dict[str, np.ndarray] = {}
        mods = {}
        for m, ld in self.loaders.items():
            st = {}
            for k, v in ld.state_dict().items():
                if isinstance(v, np.ndarray):
                    key = f"{m}.{k}"
                    arrays[key] = np.ascontiguousarray(v)
                    st[k] = {"__tensor__": key}
                else:
                    st[k] = v
            mods[m] = {"loader": ld.loader_name, "class": f"{type(ld).__module__}.{type(ld).__qualname__}",
                       "columns": ld.columns, "options": ld.options.model_dump(mode="json"), "state": st}
        doc = {"format": FORMAT, "schema": self.schema, "schema_dir": self.schema_dir, "id": self.id_column,
               "target": None if self.target is None else self.target.state_dict(), "modalities": mods}
        json.dumps(doc)  # fail here, not half-way through a write, when a loader's state is not JSON-able
        return doc, arrays

    @classmethod
    def from_state(cls, doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> "TablePipeline":
        from ..registry import COLUMN_LOADERS

        if doc.get("format") != FORMAT:
            raise CheckpointError(f"table pipeline: unknown format {doc.get('format')!r}")
        loaders = {}
        for m, d in doc["modalities"].items():
            if d["loader"] not in COLUMN_LOADERS:
                raise CheckpointError(f"table pipeline: modality {m!r} uses column loader {d['loader']!r}, which is "
                                      "not registered in this process; import the module that registers it first")
            klass = COLUMN_LOADERS.get(d["loader"])
            ld = klass(m, d["columns"], d["options"])
            state = {k: (arrays[v["__tensor__"]] if isinstance(v, dict) and "__tensor__" in v else v)
                     for k, v in d["state"].items()}
            loaders[m] = ld.load_state(state)
        target = None if doc.get("target") is None else TargetEncoder.from_state(doc["target"])
        return cls(doc["schema"], doc["schema_dir"], loaders, target, doc.get("id"))

    def save(self, directory: str | Path) -> dict[str, str]:
        """Write ``pipeline.json`` and ``pipeline.safetensors`` atomically; returns their sha256 digests."""
        from safetensors.numpy import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        doc, arrays = self.state()
        _atomic(d / PIPELINE_TENSORS, lambda tmp: save_file(arrays, tmp))
        _atomic(d / PIPELINE_JSON, lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=2)))
        return {name: sha256(d / name) for name in (PIPELINE_JSON, PIPELINE_TENSORS)}

    @classmethod
    def load(cls, directory: str | Path, digests: dict[str, str] | None = None) -> "TablePipeline":
        from safetensors.numpy import load_file

        d = Path(directory)
        for name in (PIPELINE_JSON, PIPELINE_TENSORS):
            if not (d / name).is_file():
                raise CheckpointError(f"{d}: lacks {name} (the fitted table pipeline); retrain or restore it")
            if digests and name in digests and sha256(d / name) != digests[name]:
                raise CheckpointError(f"{d / name}: its sha256 does not match the one recorded in config.json; "
                                      "the file was edited or is damaged, retrain or restore it")
        try:
            doc = json.loads((d / PIPELINE_JSON).read_text())
            arrays = load_file(str(d / PIPELINE_TENSORS))
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{d}: cannot read the table pipeline ({type(exc).__name__}: {exc})") from None
        return cls.from_state(doc, arrays)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def has_pipeline(directory: str | Path) -> bool:
    return (Path(directory) / PIPELINE_JSON).is_file()


