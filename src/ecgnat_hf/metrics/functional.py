"""Metric functions on numpy arrays (no hub access; used by the ``evaluate.Metric`` wrappers).

* :func:`multilabel_auroc`, :func:`multilabel_auprc`: per-class and macro; classes whose
  ``y_true`` column holds a single value have no defined curve: they are skipped and named in
  ``skipped_classes`` (macro = mean over the others). Values equal sklearn's ``roc_auc_score`` and
  ``average_precision_score`` (step-wise AP, ties handled the same way).
* :func:`fit_thresholds` / :func:`f1_at_thresholds`: per-class decision thresholds that maximise F1
  on validation scores, then F1 (per class, macro, micro) with given thresholds.
* :func:`accuracy`: single-label accuracy (labels or logits/probabilities).
* :func:`challenge_score`: the PhysioNet/CinC Challenge 2020/2021 metric.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = [
    "binary_auroc",
    "binary_average_precision",
    "multilabel_auroc",
    "multilabel_auprc",
    "fit_thresholds",
    "f1_at_thresholds",
    "accuracy",
    "modified_confusion_matrix",
    "challenge_score",
    "challenge_score_from_codes",
    "sigmoid",
    "softmax",
]


def sigmoid(x) -> np.ndarray:
    """Element-wise logistic function in float64, stable for large ``|x|``."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


def softmax(x, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis`` in float64 (the maximum is subtracted first)."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _as_2d(y_true, y_score):
    t = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if t.ndim == 1:
        t = t[:, None]
    if s.ndim == 1:
        s = s[:, None]
    if t.shape != s.shape:
        raise ValueError(f"y_true shape {t.shape} and y_score shape {s.shape} differ")
    if not np.isfinite(s).all():
        raise ValueError("y_score holds NaN or infinite values")
    return (t > 0.5).astype(np.int8), s


def binary_auroc(y_true, y_score) -> float:
    """Area under the ROC curve from average ranks (Mann-Whitney U); NaN if one class is absent."""
    from scipy.stats import rankdata

    y = np.asarray(y_true) > 0.5
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(y_score, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_average_precision(y_true, y_score) -> float:
    """Average precision: sum over distinct thresholds of (recall step) x precision; NaN without positives."""
    y = (np.asarray(y_true) > 0.5).astype(np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    if y.sum() == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _per_class(fn, y_true, y_score, label_names, need_negatives: bool):
    t, s = _as_2d(y_true, y_score)
    n = t.shape[1]
    names = list(label_names) if label_names is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} label names for {n} classes")
    per, skipped = [], []
    for k in range(n):
        pos = int(t[:, k].sum())
        if pos == 0 or (need_negatives and pos == t.shape[0]):
            per.append(float("nan"))
            skipped.append(names[k])
            continue
        per.append(fn(t[:, k], s[:, k]))
    vals = [v for v in per if not np.isnan(v)]
    macro = float(np.mean(vals)) if vals else float("nan")
    return {"macro": macro, "per_class": dict(zip(names, per)), "skipped_classes": skipped}


def multilabel_auroc(y_true, y_score, label_names: Sequence[str] | None = None) -> dict:
    """``{"macro", "per_class": {name: auroc}, "skipped_classes": [names]}``.

    A class whose true column is all 0 or all 1 has no AUROC: NaN per class, left out of the macro.
    """
    return _per_class(binary_auroc, y_true, y_score, label_names, need_negatives=True)


def multilabel_auprc(y_true, y_score, label_names: Sequence[str] | None = None) -> dict:
    """Average precision per class and macro. Classes with a single value in ``y_true`` are skipped
    (as for AUROC, so both macros average over the same classes)."""
    return _per_class(binary_average_precision, y_true, y_score, label_names, need_negatives=True)


# ------------------------------------------------------------------------------------ thresholds / F1
def fit_thresholds(y_true, y_score, default: float = 0.5) -> np.ndarray:
    """Per-class threshold maximising F1 on (validation) scores; predict positive when score >= t.

    The threshold lies halfway between the chosen score and the next lower distinct score, so it
    gives the same F1 on the fitting data and is less brittle on new data. Classes without positive
    examples get ``default``. Ties in F1 go to the higher threshold (fewer positives).
    """
    t, s = _as_2d(y_true, y_score)
    out = np.full(t.shape[1], float(default))
    for k in range(t.shape[1]):
        y = t[:, k].astype(np.float64)
        p = y.sum()
        if p == 0:
            continue
        order = np.argsort(-s[:, k], kind="mergesort")
        sk, yk = s[order, k], y[order]
        last = np.r_[np.flatnonzero(np.diff(sk)), yk.size - 1]
        tp = np.cumsum(yk)[last]
        fp = (last + 1) - tp
        f1 = 2 * tp / (tp + fp + p)
        j = int(np.argmax(f1))  # first max = highest threshold
        hi = sk[last[j]]
        lo = sk[last[j + 1]] if j + 1 < last.size else hi - 1.0
        out[k] = 0.5 * (hi + lo) if j + 1 < last.size else hi
    return out


def f1_at_thresholds(y_true, y_score, thresholds=0.5, label_names: Sequence[str] | None = None) -> dict:
    """F1 with per-class (or one shared) thresholds: ``macro``, ``micro``, ``per_class``.

    A class with no positives and no predictions has F1 = 0 (sklearn ``zero_division=0``)."""
    t, s = _as_2d(y_true, y_score)
    th = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (t.shape[1],))
    pred = s >= th[None, :]
    tp = (pred & (t == 1)).sum(0).astype(np.float64)
    fp = (pred & (t == 0)).sum(0).astype(np.float64)
    fn = (~pred & (t == 1)).sum(0).astype(np.float64)
    denom = 2 * tp + fp + fn
    per = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
    d_micro = 2 * tp.sum() + fp.sum() + fn.sum()
    names = list(label_names) if label_names is not None else [str(i) for i in range(t.shape[1])]
    return {
        "macro": float(per.mean()),
        "micro": float(2 * tp.sum() / d_micro) if d_micro > 0 else 0.0,
        "per_class": dict(zip(names, per.tolist())),
        "thresholds": th.tolist(),
    }


def accuracy(references, predictions) -> float:
    """Single-label accuracy; ``predictions`` may be class ids or (n, classes) scores (argmax)."""
    r = np.asarray(references).reshape(-1)
    p = np.asarray(predictions)
    if p.ndim == 2:
        p = p.argmax(-1)
    p = p.reshape(-1)
    if r.shape != p.shape:
        raise ValueError(f"{r.shape[0]} references for {p.shape[0]} predictions")
    return float((r.astype(np.int64) == p.astype(np.int64)).mean()) if r.size else float("nan")


# ------------------------------------------------------------------------------------ Challenge
def modified_confusion_matrix(labels, outputs) -> np.ndarray:
    """A[j, k]: sum over recordings with true class j and output class k of 1 / n_i, where n_i is the
    number of classes that are positive in the labels *or* the outputs of recording i (at least 1),
    as in the official Challenge scoring code."""
    L = (np.asarray(labels) > 0.5).astype(np.float64)
    O = (np.asarray(outputs) > 0.5).astype(np.float64)
    if L.shape != O.shape:
        raise ValueError(f"labels shape {L.shape} and outputs shape {O.shape} differ")
    norm = np.maximum(np.logical_or(L > 0, O > 0).sum(1), 1).astype(np.float64)
    return (L / norm[:, None]).T @ O


def challenge_score(
    labels,
    outputs,
    weights=None,
    classes: Sequence[str] | None = None,
    normal_class: str = "426783006",
) -> float:
    """Normalised Challenge score: (observed - inactive) / (correct - inactive).

    ``labels``/``outputs``: binary (n, C) arrays over ``classes`` (default: the 26 scored classes of
    the bundled 2021 ``weights.csv``, equivalent codes merged). ``inactive`` always outputs only the
    normal class (sinus rhythm, 426783006); ``correct`` outputs the labels. Returns 0.0 when
    correct == inactive, as the official code does.
    """
    if weights is None:
        from ..data.labels import load_challenge_classes

        cc = load_challenge_classes()
        weights, classes = cc.weights, list(cc.codes) if classes is None else classes
    W = np.asarray(weights, dtype=np.float64)
    L = (np.asarray(labels) > 0.5)
    O = (np.asarray(outputs) > 0.5)
    if L.ndim != 2 or L.shape[1] != W.shape[0] or W.shape[0] != W.shape[1]:
        raise ValueError(f"labels of shape {L.shape} do not match a {W.shape} weights matrix")
    if classes is None:
        raise ValueError("classes (codes in weights order) are needed to find the normal class")
    classes = [str(c) for c in classes]
    if normal_class not in classes:
        raise ValueError(f"the normal class {normal_class} is not among the classes")
    observed = np.nansum(W * modified_confusion_matrix(L, O))
    correct = np.nansum(W * modified_confusion_matrix(L, L))
    inactive_out = np.zeros_like(L)
    inactive_out[:, classes.index(normal_class)] = True
    inactive = np.nansum(W * modified_confusion_matrix(L, inactive_out))
    if correct == inactive:
        return 0.0
    return float((observed - inactive) / (correct - inactive))


def challenge_score_from_codes(true_codes: Sequence[Sequence[str]], predicted_codes: Sequence[Sequence[str]]) -> float:
    """Challenge score from lists of SNOMED codes per recording (equivalent codes merged,
    unscored codes ignored), with the bundled 2021 weights."""
    from ..data.labels import codes_to_multi_hot, load_challenge_classes

    cc = load_challenge_classes()
    L = np.stack([codes_to_multi_hot(c, cc) for c in true_codes])
    O = np.stack([codes_to_multi_hot(c, cc) for c in predicted_codes])
    return challenge_score(L, O, cc.weights, list(cc.codes))
