"""``compute_metrics`` for ``transformers.Trainer``."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .functional import (
    accuracy,
    challenge_score,
    f1_at_thresholds,
    multilabel_auprc,
    multilabel_auroc,
    sigmoid,
    softmax,
)

__all__ = ["make_compute_metrics"]

_PROBLEM_TYPES = ("multi_label_classification", "single_label_classification", "regression")
_ALIASES = {"multi_label": "multi_label_classification", "single_label": "single_label_classification"}


def _logits(predictions):
    if isinstance(predictions, (tuple, list)):
        predictions = predictions[0]
    return np.asarray(predictions, dtype=np.float64)


def make_compute_metrics(
    problem_type: str,
    label_names: Sequence[str] | None = None,
    thresholds=0.5,
    per_class: bool = True,
    challenge: bool | None = None,
) -> Callable:
    """Return ``compute_metrics(eval_pred) -> dict[str, float]`` for ``Trainer``.

    * multi-label (``"multi_label_classification"`` / ``"multi_label"``): sigmoid of the logits;
      ``macro_auroc``, ``macro_auprc``, ``macro_f1``/``micro_f1`` at ``thresholds`` (a number or
      per-class values fitted with :func:`fit_thresholds`), ``auroc_<label>`` per class and
      ``n_skipped_classes`` (classes with one value in the labels). ``challenge_score`` is added
      when ``challenge=True`` or, by default, when ``label_names`` are the 26 scored Challenge codes.
    * single-label: softmax; ``accuracy``, ``macro_f1`` (one-vs-rest on argmax) and one-vs-rest
      ``macro_auroc`` over the classes present.
    * regression: ``mse``, ``mae``.
    """
    problem_type = _ALIASES.get(problem_type, problem_type)
    if problem_type not in _PROBLEM_TYPES:
        raise ValueError(f"problem_type must be one of {_PROBLEM_TYPES}, got {problem_type!r}")
    names = list(label_names) if label_names is not None else None
    cc = None
    if problem_type == "multi_label_classification" and challenge is not False:
        from ..data.labels import load_challenge_classes

        scored = load_challenge_classes()
        if challenge or (names is not None and [str(n) for n in names] == list(scored.codes)):
            cc = scored

    def compute_metrics(eval_pred) -> dict:
        preds = eval_pred.predictions if hasattr(eval_pred, "predictions") else eval_pred[0]
        labels = eval_pred.label_ids if hasattr(eval_pred, "label_ids") else eval_pred[1]
        logits = _logits(preds)
        labels = np.asarray(labels)
        out: dict[str, float] = {}
        if problem_type == "regression":
            err = logits.reshape(labels.shape) - labels
            return {"mse": float(np.mean(err**2)), "mae": float(np.mean(np.abs(err)))}
        if problem_type == "single_label_classification":
            probs = softmax(logits)
            y = labels.reshape(-1).astype(np.int64)
            out["accuracy"] = accuracy(y, probs)
            onehot = np.eye(probs.shape[1])[y]
            out["macro_f1"] = f1_at_thresholds(onehot, np.eye(probs.shape[1])[probs.argmax(1)], 0.5)["macro"]
            roc = multilabel_auroc(onehot, probs, names)
            out["macro_auroc"] = roc["macro"]
            return out
        probs = sigmoid(logits)
        roc = multilabel_auroc(labels, probs, names)
        pr = multilabel_auprc(labels, probs, names)
        f1 = f1_at_thresholds(labels, probs, thresholds, names)
        out.update(macro_auroc=roc["macro"], macro_auprc=pr["macro"], macro_f1=f1["macro"], micro_f1=f1["micro"],
                   n_skipped_classes=float(len(roc["skipped_classes"])))
        if per_class:
            for k, v in roc["per_class"].items():
                out[f"auroc_{k}"] = v
        if cc is not None:
            th = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (probs.shape[1],))
            out["challenge_score"] = challenge_score(labels, probs >= th, cc.weights, list(cc.codes))
        return out

    return compute_metrics
