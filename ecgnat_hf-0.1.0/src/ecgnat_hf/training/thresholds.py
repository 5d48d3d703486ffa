"""Decision thresholds that travel with a checkpoint: fitted on the validation split, stored in ``config.json``.

At the end of fine-tuning (``recipes/finetune.py``), :func:`attach_decision_thresholds` fits one
threshold per class on the validation split's probabilities and stores them in the model config
beside ``id2label``::

    "decision_thresholds": {"CD": 0.41, "HYP": 0.23, "MI": 0.37, "NORM": 0.52, "STTC": 0.30},
    "decision_threshold_info": {"rule": "threshold", "method": "max F1 per class", "split": "validation", ...}

* Multi-label: per class, the threshold that maximises F1 on the validation split
  (:func:`ecgnat_hf.metrics.functional.fit_thresholds`: halfway between the chosen score and the next
  lower one; a class with no positive validation example keeps 0.5 and is listed under
  ``classes_at_default``). A class is predicted when its probability is >= its threshold.
* Single-label: no thresholds; the predicted label is the arg-max (``"rule": "argmax"``).
* Regression: nothing is stored.

:func:`decide_labels` applies the rule (``ecgnat predict`` writes the result in its ``labels`` column);
:func:`thresholds_from_config` reads them back, with 0.5 for a multi-label checkpoint that has none.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "CONFIG_KEY",
    "INFO_KEY",
    "DEFAULT_THRESHOLD",
    "fit_decision_thresholds",
    "attach_decision_thresholds",
    "thresholds_from_config",
    "decision_rule",
    "decide_labels",
    "positive_mask",
    "label_names_from_config",
]

CONFIG_KEY = "decision_thresholds"
INFO_KEY = "decision_threshold_info"
DEFAULT_THRESHOLD = 0.5


def label_names_from_config(config) -> list[str]:
    """Class names in logit order from ``config.id2label`` (``LABEL_i`` where missing)."""
    id2label = getattr(config, "id2label", None) or {}
    n = int(getattr(config, "num_labels", len(id2label)))
    return [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(n)]


def fit_decision_thresholds(probabilities, labels, label_names: Sequence[str], problem_type: str,
                            split: str = "validation") -> tuple[dict[str, float] | None, dict[str, Any]]:
    """Return ``(thresholds {label: t} or None, info)`` for ``problem_type`` (see the module docstring).

    ``probabilities``: (examples, classes) sigmoid/softmax outputs; ``labels``: multi-hot
    (examples, classes) for multi-label, class indices for single-label."""
    from ..metrics.functional import fit_thresholds

    names = [str(n) for n in label_names]
    if problem_type == "single_label_classification":
        return None, {"rule": "argmax", "note": "single-label model: the predicted label is the arg-max"}
    if problem_type != "multi_label_classification":
        return None, {"rule": "none", "note": f"no labels for problem type {problem_type!r}"}
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if p.ndim != 2 or p.shape != y.shape or p.shape[1] != len(names):
        raise ValueError(f"probabilities {p.shape} and labels {y.shape} must both be (examples, {len(names)})")
    t = fit_thresholds(y, p, default=DEFAULT_THRESHOLD)
    no_pos = [n for n, k in zip(names, y.sum(axis=0)) if k == 0]
    info = {
        "rule": "threshold",
        "method": "max F1 per class",
        "split": split,
        "n_examples": int(p.shape[0]),
        "positives": {n: int(k) for n, k in zip(names, y.sum(axis=0))},
        "classes_at_default": no_pos,
        "default": DEFAULT_THRESHOLD,
    }
    return {n: float(v) for n, v in zip(names, t)}, info


def attach_decision_thresholds(model, validation, label_names: Sequence[str], problem_type: str) -> dict[str, Any]:
    """Fit thresholds on ``validation = (probabilities, labels)`` and store them in ``model.config``.

    Returns ``{"decision_thresholds": ..., "decision_threshold_info": ...}`` (also what is stored).
    Without a validation split (``validation`` None or empty) multi-label models keep no thresholds
    (``ecgnat predict`` then uses 0.5 and says so)."""
    config = model.config
    if validation is not None and len(validation[0]):
        thresholds, info = fit_decision_thresholds(validation[0], validation[1], label_names, problem_type)
    elif problem_type == "multi_label_classification":
        thresholds, info = None, {"rule": "threshold", "note": "no validation split: thresholds not fitted, "
                                  f"predict uses {DEFAULT_THRESHOLD:g}"}
    else:
        thresholds, info = fit_decision_thresholds(None, None, label_names, problem_type)
    setattr(config, CONFIG_KEY, thresholds)
    setattr(config, INFO_KEY, info)
    if thresholds:
        logger.info("decision thresholds fitted on %d validation examples: %s", info.get("n_examples", 0),
                    ", ".join(f"{k}={v:.3f}" for k, v in thresholds.items()))
    return {CONFIG_KEY: thresholds, INFO_KEY: info}


def decision_rule(config) -> str:
    """``"threshold"`` (multi-label), ``"argmax"`` (single-label) or ``"none"`` (regression / unknown)."""
    problem = getattr(config, "problem_type", None)
    if problem == "multi_label_classification":
        return "threshold"
    if problem == "single_label_classification":
        return "argmax"
    if problem is None and int(getattr(config, "num_labels", 0)) > 1:
        return "argmax"  # scores_to_probabilities applies a softmax then
    return "none"


def thresholds_from_config(config) -> tuple[np.ndarray | None, str]:
    """``(per-class thresholds in logit order or None, source)``; source is ``"config"`` or
    ``"default 0.5 (none in the checkpoint)"``. None for arg-max and regression models."""
    if decision_rule(config) != "threshold":
        return None, decision_rule(config)
    names = label_names_from_config(config)
    stored = getattr(config, CONFIG_KEY, None) or {}
    if isinstance(stored, (list, tuple)):
        stored = dict(zip(names, stored))
    if stored:
        missing = [n for n in names if n not in stored]
        if missing:
            raise ValueError(f"config.{CONFIG_KEY} lacks classes {missing} (it has {sorted(stored)})")
        return np.array([float(stored[n]) for n in names]), "config"
    return np.full(len(names), DEFAULT_THRESHOLD), f"default {DEFAULT_THRESHOLD:g} (none in the checkpoint)"


def positive_mask(probabilities, config, thresholds=None) -> np.ndarray | None:
    """Boolean (..., classes): the classes decided positive for each row of probabilities; None for
    regression. Multi-label: probability >= threshold; single-label: the arg-max only."""
    p = np.asarray(probabilities, dtype=np.float64)
    rule = decision_rule(config)
    if rule == "threshold":
        t = thresholds if thresholds is not None else thresholds_from_config(config)[0]
        return p >= np.asarray(t, dtype=np.float64)
    if rule == "argmax":
        out = np.zeros(p.shape, dtype=bool)
        np.put_along_axis(out, p.argmax(axis=-1)[..., None], True, axis=-1)
        return out
    return None


def decide_labels(probabilities, config, thresholds=None) -> list[list[str]] | None:
    """Positive labels per row (multi-label: probability >= threshold, possibly none; single-label:
    the arg-max label); None for regression."""
    mask = positive_mask(np.atleast_2d(probabilities), config, thresholds)
    if mask is None:
        return None
    names = label_names_from_config(config)
    return [[n for n, on in zip(names, row) if on] for row in mask]
