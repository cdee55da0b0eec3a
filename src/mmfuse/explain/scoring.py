"""The scalar score an explanation explains, and how the explainers call it.

A *score function* maps a :class:`~mmfuse.batch.MultimodalBatch` of B rows to Tensor[B]. Any
callable with that signature works. :func:`make_score_fn` builds one from a model
(``model(batch)`` returning an object with ``.logits`` Tensor[B, C], or the logits themselves):

* ``target="predicted"``: softmax probability of the class the model predicts on the *full*
  input (MM-SHAP's choice for VQA); the class is fixed per sample before any masking.
* ``target="class"``: softmax probability of ``class_index`` (an int, or LongTensor[B] with one
  class per sample, e.g. the true labels).
* ``target="logit"``: the raw logit of ``class_index`` or, when it is None, of the predicted class.

With a single output column (C = 1, binary), probabilities are ``sigmoid(logit)``.

The score depends on the model's ``task`` (default ``"multiclass"``, the behaviour above):

* ``"multilabel"``: each label is an independent yes/no, so a label's score is its own
  ``sigmoid(logit)`` (``target="logit"``: the logit), never a softmax across labels (which would
  let a modality that drives label A move the score of label B). Without ``class_index`` every
  label is explained: the score is Tensor[B, L] and the explainers return per-label values.
* ``"regression"``: the prediction itself (Tensor[B, K]; Tensor[B] for one output); ``target``
  "predicted" and "logit" are the same thing, ``class_index`` picks one output.

A score function does not change the model's mode for good: each call runs the model in eval
mode (no dropout, frozen batch-norm statistics) and restores the training flag afterwards.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..batch import MultimodalBatch
from ..errors import ConfigError, ShapeError
from ..registry import TASKS
from .rows import SplitRows

TARGETS = ("predicted", "class", "logit")


def output_logits(output: Any) -> Tensor:
    """The logits Tensor[B, C] of a model output (an object with ``.logits``, or a Tensor)."""
    logits = getattr(output, "logits", output)
    if not isinstance(logits, Tensor):
        raise ShapeError(
            f"explain: the model returned {type(output).__name__}; expected a Tensor[B, C] of logits "
            "or an object with a .logits attribute"
        )
    if logits.dim() == 1:
        logits = logits.unsqueeze(1)
    if logits.dim() != 2:
        raise ShapeError(f"explain: logits must be Tensor[B, C], got shape {tuple(logits.shape)}")
    return logits


def _to_eval(module: nn.Module | None) -> list[nn.Module]:
    """Put every sub-module of ``module`` that is in training mode into eval mode; return them (for
    :func:`_restore`). Only their flags change, so the modules' own train()/eval() overrides are not run and a
    model already in eval mode costs one walk over its modules."""
    if module is None:
        return []
    training = [m for m in module.modules() if m.training]
    for m in training:
        m.training = False
    return training


def _restore(training: list[nn.Module]) -> None:
    for m in training:
        m.training = True


class _Rows:
    """Stands for a batch of B rows where only ``batch_size`` is read."""

    def __init__(self, b: int):
        self.batch_size = b


class ScoreFunction:
    """``score(batch, classes=None) -> Tensor[B]``; ``classes(batch)`` fixes the explained class per row.

    The explainers call :meth:`classes` once on the unmasked batch and pass the result (repeated
    for every masked copy) to each call, so "predicted" means predicted on the full input.
    """

    def __init__(self, model: Callable[[MultimodalBatch], Any], target: str = "predicted",
                 class_index: int | Tensor | None = None, task: str = "multiclass"):
        if task not in TASKS:
            raise ConfigError(f"task must be one of {list(TASKS)}, got {task!r}")
        if target not in TARGETS:
            raise ConfigError(f"target must be one of {TARGETS}, got {target!r}; choose one of them")
        if target == "class" and class_index is None:
            raise ConfigError("target='class' needs class_index (an int, or one class per sample)")
        if class_index is not None and not isinstance(class_index, (int, Tensor)):
            raise ConfigError(f"class_index must be an int or a LongTensor[B], got {type(class_index).__name__}")
        self.model = model
        self.target = target
        self.class_index = class_index
        self.task = task
        #: use the model's explanation split when it has one (set False to force whole-model calls)
        self.use_split = True

    @property
    def multi_output(self) -> bool:
        """True when one call scores every output of a row (Tensor[B, K]): multilabel / regression
        without ``class_index``."""
        return self.task != "multiclass" and self.class_index is None

    def logits(self, batch: MultimodalBatch) -> Tensor:
        """The model's logits Tensor[B, C], computed in eval mode; the model's training flag is restored."""
        module = self.model if isinstance(self.model, nn.Module) else None
        training = _to_eval(module)  # explanations are about the deterministic predictor (no dropout)
        try:
            with torch.no_grad():
                return self._original_scale(output_logits(self.model(batch)))
        finally:
            _restore(training)

    def _original_scale(self, logits: Tensor) -> Tensor:
        """Regression outputs of a model trained on standardised targets (``model.target_scale``), inverted: the
        explained prediction is in the target's units."""
        scale = getattr(self.model, "target_scale", None) if self.task == "regression" else None
        return logits if scale is None else scale.invert(logits)

    def classes(self, batch: MultimodalBatch, logits: Tensor | None = None) -> Tensor | None:
        """LongTensor[B]: the class (label, output) explained for each row of the full ``batch``;
        None when every output is explained (:attr:`multi_output`)."""
        B = batch.batch_size
        if self.multi_output:
            return None
        if self.class_index is not None:
            if isinstance(self.class_index, int):
                return torch.full((B,), self.class_index, dtype=torch.long)
            ci = self.class_index.reshape(-1).long()
            if ci.numel() != B:
                raise ShapeError(f"class_index has {ci.numel()} entries but the batch has {B} rows")
            return ci
        logits = self.logits(batch) if logits is None else logits
        return torch.zeros(B, dtype=torch.long) if logits.shape[1] == 1 else logits.argmax(dim=1).cpu()

    def offers_split(self) -> nn.Module | None:
        """The model when it offers the explanation split, whether or not :attr:`use_split` is on."""
        m = self.model
        probe = getattr(m, "explain_split", None) if isinstance(m, nn.Module) else None
        return m if callable(probe) and probe() is True else None

    def split_model(self) -> nn.Module | None:
        """The model when it offers the explanation split (``explain_split()`` True: per-modality
        ``encode_modality`` + ``explain_decode``, e.g. ``MultimodalModel`` with feature or late fusion)
        and :attr:`use_split` is on; else None (the explainers then call the whole model on every row)."""
        m = self.model
        if not self.use_split or not isinstance(m, nn.Module):
            return None
        probe = getattr(m, "explain_split", None)
        return m if callable(probe) and probe() is True else None

    def split_logits(self, rows: SplitRows, max_rows: int | None = None, pre: dict[str, Tensor] | None = None,
                     keep: dict[str, Tensor] | None = None) -> Tensor:
        """Logits Tensor[N, C] of :class:`~mmfuse.explain.rows.SplitRows` through :meth:`split_model`: each
        modality's distinct inputs are encoded once (eval mode, no grad), then fusion + head run on the gathered
        embeddings (in slices of ≤ ``max_rows`` rows to encode, ≤ 8·``max_rows`` to decode). Equal to ``model(batch)`` on the expanded rows.

        ``pre``: per modality, embeddings Tensor[U0, *] of distinct rows encoded earlier; the distinct rows are then
        ``[pre[m]; rows.inputs[m]]`` (``rows.index`` / ``rows.lengths`` refer to that order). ``keep``: a dict that
        receives each modality's embeddings of the distinct rows (in that order)."""
        model = self.split_model()
        if model is None:
            raise ConfigError("split_logits: the model offers no explanation split (explain_split())")
        training = _to_eval(model)
        try:
            with torch.no_grad():
                pool = model.explain_pool()
                emb = {}
                for m, x in rows.inputs.items():
                    ln = rows.lengths.get(m)
                    done = None if pre is None else pre.get(m)
                    if done is not None and ln is not None:
                        ln = ln[done.shape[0]:]
                    U = x.shape[0]
                    chunk = max(U, 1) if max_rows is None else max(1, max_rows)
                    parts = [] if done is None else [done]
                    parts += [model.encode_modality(m, x[u:u + chunk], None if ln is None else ln[u:u + chunk], pool)
                              for u in range(0, U, chunk)]
                    emb[m] = parts[0] if len(parts) == 1 else torch.cat(parts)
                if keep is not None:
                    keep.update(emb)
                N = rows.n_rows
                step = N if max_rows is None else max(1, 8 * max_rows)  # decode rows are small embeddings
                lengths = rows.row_lengths()
                parts = []
                for s0 in range(0, N, step):
                    sl = slice(s0, s0 + step)
                    parts.append(output_logits(model.explain_decode(
                        {m: e[rows.index[m][sl]] for m, e in emb.items()},
                        {m: v[sl] for m, v in rows.mask.items()},
                        {m: v[sl] for m, v in lengths.items()})))
                return self._original_scale(parts[0] if len(parts) == 1 else torch.cat(parts))
        finally:
            _restore(training)

    def split_row_costs(self, batch: MultimodalBatch) -> dict[str, float]:
        """Deterministic cost estimates (floating-point operations, :func:`module_flops`) of one encoded row of each
        modality (its first row of ``batch``) and of one fusion + head row (key ``""``), through :meth:`split_model`.
        The explainers use them to weigh a modality's encodes against the decodes (no timing: the same seed gives
        the same design, whatever the load)."""
        model = self.offers_split()
        if model is None:
            raise ConfigError("split_row_costs: the model offers no explanation split (explain_split())")
        # the model's identity, its parameters' shapes and its modules' ids (a stamp that changes when an encoder is
        # swapped or resized in place), then the inputs' row shapes
        stamp = (id(model), tuple(tuple(p.shape) for p in model.parameters()),
                 tuple(id(mod) for mod in model.modules()))
        key = stamp + tuple((m, tuple(x.shape[1:]), x.dtype, None if m not in batch.lengths
                             else int(batch.lengths[m][0])) for m, x in sorted(batch.inputs.items()))
        cache = self.__dict__.setdefault("_row_cost_cache", {})
        if key not in cache:
            cache[key] = self._row_costs(model, batch)
        return dict(cache[key])

    def _row_costs(self, model: nn.Module, batch: MultimodalBatch) -> dict[str, float]:
        training = _to_eval(model)
        try:
            with torch.no_grad():
                pool = model.explain_pool()
                costs, emb = {}, {}
                for m, x in batch.inputs.items():
                    ln = batch.lengths.get(m)
                    ln = None if ln is None else ln[:1]
                    flops, emb[m] = module_flops(model, lambda: model.encode_modality(m, x[:1], ln, pool))
                    costs[m] = flops + 4.0 * x[:1].numel()  # + building the masked copy
                flops, _ = module_flops(model, lambda: model.explain_decode(
                    emb, {m: v[:1] for m, v in batch.mask.items()}, {m: v[:1] for m, v in batch.lengths.items()}))
                costs[""] = flops + 4.0 * sum(e.numel() for e in emb.values())  # + gathering the embeddings
                return costs
        finally:
            _restore(training)

    def split_score(self, rows: SplitRows, classes: Tensor | None = None, max_rows: int | None = None,
                    **kw: Any) -> Tensor:
        """The score of :class:`~mmfuse.explain.rows.SplitRows` (as ``self(batch, classes)`` on the expanded rows);
        ``kw``: ``pre`` / ``keep`` of :meth:`split_logits`."""
        return self.score_logits(self.split_logits(rows, max_rows, **kw), classes)

    def __call__(self, batch: MultimodalBatch, classes: Tensor | None = None) -> Tensor:
        return self.score_logits(self.logits(batch), classes)

    def score_logits(self, logits: Tensor, classes: Tensor | None = None) -> Tensor:
        """The score Tensor[B] (Tensor[B, K] multi-output) of logits Tensor[B, C]; ``classes`` as in ``__call__``
        (None on a single-output score: the class predicted from these logits)."""
        C = logits.shape[1]
        if self.task != "multiclass":
            wide = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
            vals = torch.sigmoid(wide) if self.task == "multilabel" and self.target != "logit" else wide
            if classes is None and self.multi_output:
                return vals[:, 0] if C == 1 else vals
        if classes is None:
            classes = self.classes(_Rows(logits.shape[0]), logits)
        cls = classes.to(logits.device).view(-1, 1)
        if int(cls.max()) >= C or int(cls.min()) < 0:
            raise ConfigError(f"class_index out of range: the model has {C} output(s), got {int(cls.max())}")
        if self.task != "multiclass":
            return vals.gather(1, cls).squeeze(1)
        if self.target == "logit":
            return logits.gather(1, cls).squeeze(1)
        if C == 1:
            return torch.sigmoid(logits[:, 0])
        wide = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
        return torch.softmax(wide, dim=1).gather(1, cls).squeeze(1)


def _out_numel(out: Any) -> int:
    if isinstance(out, Tensor):
        return out.numel()
    if isinstance(out, (tuple, list)):
        return sum(_out_numel(o) for o in out)
    return 0


def _layer_flops(mod: nn.Module, inputs: tuple, out: Any) -> float:
    """Multiply-adds ×2 of one call of a leaf layer (linear, convolution, recurrent, attention); other leaves
    count one operation per output element."""
    if isinstance(mod, nn.Linear):
        return 2.0 * mod.in_features * _out_numel(out)
    if isinstance(mod, nn.modules.conv._ConvNd):
        k = math.prod(mod.kernel_size) * mod.in_channels / mod.groups
        return 2.0 * k * _out_numel(out[0] if isinstance(out, tuple) else out)
    if isinstance(mod, nn.RNNBase) and inputs:
        x = inputs[0]
        x = getattr(x, "data", x) if isinstance(x, nn.utils.rnn.PackedSequence) else x  # [steps, features]
        steps = x.shape[:-1].numel() if isinstance(x, Tensor) and x.dim() > 1 else 1
        gates = {"LSTM": 4, "GRU": 3}.get(mod.mode, 1)
        H, dirs = mod.hidden_size, 2 if mod.bidirectional else 1
        total, width = 0.0, mod.input_size
        for _ in range(mod.num_layers):
            total += 2.0 * gates * H * (width + H) * steps * dirs
            width = H * dirs
        return total
    if isinstance(mod, nn.MultiheadAttention) and inputs and isinstance(inputs[0], Tensor):
        q = inputs[0]
        E = mod.embed_dim
        L = q.shape[:-1].numel()
        S = inputs[1].shape[-2] if len(inputs) > 1 and isinstance(inputs[1], Tensor) and inputs[1].dim() > 1 else 1
        return 2.0 * (4 * E * E * L + 2 * L * S * E)
    return float(_out_numel(out))


def module_flops(model: nn.Module, fn: Callable[[], Any]) -> tuple[float, Any]:
    """(estimated floating-point operations of ``fn()``, its result): forward hooks on ``model``'s leaf layers
    (and attention blocks) add up :func:`_layer_flops`. Shape-based, so deterministic and cheap (one call)."""
    total = [0.0]
    handles = []

    def hook(mod, inputs, out):
        total[0] += _layer_flops(mod, inputs, out)

    for mod in model.modules():
        if isinstance(mod, nn.MultiheadAttention) or not any(True for _ in mod.children()):
            handles.append(mod.register_forward_hook(hook))
    try:
        res = fn()
    finally:
        for h in handles:
            h.remove()
    return total[0], res


def make_score_fn(model: Callable[[MultimodalBatch], Any], target: str = "predicted",
                  class_index: int | Tensor | None = None, task: str = "multiclass") -> ScoreFunction:
    """The score to explain; see the module docstring for ``target``, ``class_index`` and ``task``.

    An ``nn.Module`` model is run in eval mode during each call (explanations are about the
    deterministic predictor); its training flag is restored afterwards.
    """
    return ScoreFunction(model, target, class_index, task)


def as_score_fn(score_fn_or_model: Any) -> Callable[..., Tensor]:
    """A :class:`ScoreFunction` is used as is; any other callable is a plain ``f(batch) -> Tensor[B]``."""
    if not callable(score_fn_or_model):
        raise ConfigError(f"score_fn must be callable, got {type(score_fn_or_model).__name__}")
    return score_fn_or_model


def explained_classes(score_fn: Callable[..., Tensor], batch: MultimodalBatch) -> Tensor | None:
    """The per-row classes a :class:`ScoreFunction` explains on the full batch (None for plain functions)."""
    return score_fn.classes(batch) if isinstance(score_fn, ScoreFunction) else None


def split_model_of(score_fn: Callable[..., Tensor]) -> nn.Module | None:
    """The model whose explanation split ``score_fn`` can use (a :class:`ScoreFunction` only), else None."""
    return score_fn.split_model() if isinstance(score_fn, ScoreFunction) else None


def call_split_score(score_fn: "ScoreFunction", rows: SplitRows, classes: Tensor | None,
                     max_rows: int | None = None, **kw: Any) -> Tensor:
    """:func:`call_score` on :class:`~mmfuse.explain.rows.SplitRows` (float64 on CPU, Tensor[N] or Tensor[N, K]);
    ``kw``: ``pre`` / ``keep`` of :meth:`ScoreFunction.split_logits`."""
    out = score_fn.split_score(rows, classes, max_rows, **kw)
    if out.dim() == 2 and out.shape[1] == 1:
        out = out[:, 0]
    return out.detach().to("cpu", torch.float64)


def call_score(score_fn: Callable[..., Tensor], batch: MultimodalBatch, classes: Tensor | None) -> Tensor:
    """Evaluate ``score_fn`` on ``batch`` and check the result is Tensor[B] (Tensor[B, K] for a
    multi-output :class:`ScoreFunction`); returns float64 on CPU."""
    with torch.no_grad():
        out = score_fn(batch, classes) if isinstance(score_fn, ScoreFunction) else score_fn(batch)
    out = output_logits(out) if not isinstance(out, Tensor) else out
    B = batch.batch_size
    if out.dim() == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if isinstance(score_fn, ScoreFunction) and score_fn.multi_output and out.dim() == 2 and out.shape[0] == B:
        return out.detach().to("cpu", torch.float64)
    if out.shape != (B,):
        raise ShapeError(
            f"score_fn must return Tensor[B] (one score per row); got shape {tuple(out.shape)} for B={B}. "
            "Use make_score_fn(model, target=...) to turn logits into a score"
        )
    return out.detach().to("cpu", torch.float64)
