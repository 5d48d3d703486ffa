"""Comparing two models on the same test records: a paired bootstrap confidence interval.

With a few dozen test records, two macro AUROCs a few hundredths apart say little by themselves. The
paired bootstrap resamples the *records* (with replacement), scores both models on each resample, and
reports the spread of the difference. Both models see the same resampled records, so the record-to-record
variation that both share cancels out (much narrower than two separate intervals).

Several seeds per arm: pass a list of score matrices. Each resample scores every seed and averages over
seeds before the difference, so the interval covers the seed-averaged metric of each arm.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .functional import binary_auroc, multilabel_auroc

__all__ = ["paired_bootstrap", "per_class_paired_bootstrap", "macro_auroc"]


def macro_auroc(y_true, y_score) -> float:
    """Macro AUROC over the classes that have both positives and negatives in ``y_true``."""
    return float(multilabel_auroc(y_true, y_score)["macro"])


def _stack(scores) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim == 2:  # one run: (records, classes)
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"scores must be (records, classes) or (runs, records, classes); got shape {arr.shape}")
    return arr


def _paired_inputs(y_true, scores_a, scores_b, confidence: float):
    """Labels and both arms' stacked scores, checked to cover the same records, with a valid confidence."""
    y = np.asarray(y_true)
    a, b = _stack(scores_a), _stack(scores_b)
    n = y.shape[0]
    if a.shape[1] != n or b.shape[1] != n:
        raise ValueError(f"scores cover {a.shape[1]} and {b.shape[1]} records but y_true has {n}: "
                         "a paired comparison needs both models scored on the same records")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return y, a, b


def paired_bootstrap(
    y_true,
    scores_a,
    scores_b,
    metric: Callable[[np.ndarray, np.ndarray], float] = macro_auroc,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Difference ``metric(a) - metric(b)`` on the same records, with a percentile bootstrap interval.

    Args:
        y_true: (records, classes) multi-hot labels (or what ``metric`` takes).
        scores_a, scores_b: (records, classes) scores, or (runs, records, classes) for several seeds; each
            arm's metric is the mean over its runs.
        metric: ``metric(y_true, y_score) -> float``; macro AUROC by default.
        n_boot: bootstrap resamples of the records. confidence: e.g. 0.95.

    Returns ``{"a", "b", "difference", "ci_low", "ci_high", "confidence", "n_boot", "n_records",
    "p_a_not_better"}``: ``a``/``b``/``difference`` on all records; ``p_a_not_better`` is the fraction of
    resamples in which A does not beat B (a one-sided bootstrap p-value).
    """
    y, a, b = _paired_inputs(y_true, scores_a, scores_b, confidence)
    n = y.shape[0]

    def score(arm, idx):
        return float(np.mean([metric(y[idx], run[idx]) for run in arm]))

    full = np.arange(n)
    point_a, point_b = score(a, full), score(b, full)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(int(n_boot)):
        idx = rng.integers(0, n, n)
        d = score(a, idx) - score(b, idx)
        if np.isfinite(d):  # a resample without any scorable class gives NaN: leave it out
            diffs.append(d)
    return _summary(point_a, point_b, np.asarray(diffs), confidence, n)


def _summary(point_a: float, point_b: float, diffs: np.ndarray, confidence: float, n: int) -> dict:
    """The result of a paired bootstrap from its point figures and its scorable resampled differences."""
    if diffs.size == 0:
        raise ValueError("no bootstrap resample could be scored (too few records with positives)")
    tail = (1 - confidence) / 2
    return {
        "a": point_a,
        "b": point_b,
        "difference": point_a - point_b,
        "ci_low": float(np.quantile(diffs, tail)),
        "ci_high": float(np.quantile(diffs, 1 - tail)),
        "confidence": confidence,
        "n_boot": int(diffs.size),
        "n_records": int(n),
        "p_a_not_better": float(np.mean(diffs <= 0)),
    }


def _resampled_auroc(y: np.ndarray, score: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """One class's AUROC on every bootstrap resample at once. ``counts[k, i]`` is how often resample ``k`` drew
    record ``i``; the AUROC is the count-weighted share of (positive, negative) pairs ranked the right way (ties
    half), which is what ranking the resampled records gives. NaN where a resample has no positive or no
    negative."""
    pos = y > 0.5
    s_pos, s_neg = score[pos], score[~pos]
    right = (s_pos[:, None] > s_neg[None, :]) + 0.5 * (s_pos[:, None] == s_neg[None, :])
    w_pos, w_neg = counts[:, pos], counts[:, ~pos]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("bi,ij,bj->b", w_pos, right, w_neg) / (w_pos.sum(1) * w_neg.sum(1))


def per_class_paired_bootstrap(y_true, scores_a, scores_b, label_names: Sequence[str] | None = None,
                               n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> list[dict]:
    """:func:`paired_bootstrap` of each class's AUROC: one row per class, ``{"label", "n_positive", "a", "b",
    "difference", "ci_low", "ci_high", ...}``. Every class is scored on the same resamples of the records.

    A class with few test positives has a wide interval, and the interval says so: with 8 positives, a
    per-class difference of 0.04 is rarely distinguishable from zero. A class without both positives and
    negatives among the test records cannot be scored; its row has ``None`` for every figure (never a
    made-up 0.5)."""
    y, a, b = _paired_inputs(y_true, scores_a, scores_b, confidence)
    n, n_classes = y.shape
    if a.shape[2] != n_classes or b.shape[2] != n_classes:
        raise ValueError(f"scores have {a.shape[2]} and {b.shape[2]} classes but y_true has {n_classes}")
    names = [str(v) for v in label_names] if label_names is not None else [str(i) for i in range(n_classes)]
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} label names for {n_classes} classes")
    idx = np.random.default_rng(seed).integers(0, n, (int(n_boot), n))
    counts = np.zeros((int(n_boot), n))
    np.add.at(counts, (np.arange(int(n_boot))[:, None], idx), 1.0)
    rows = []
    for c, name in enumerate(names):
        n_pos = int((y[:, c] > 0.5).sum())
        row = {"label": name, "n_positive": n_pos, "n_records": int(n)}
        if n_pos == 0 or n_pos == n:
            rows.append({**row, "a": None, "b": None, "difference": None, "ci_low": None, "ci_high": None})
            continue
        point_a = float(np.mean([binary_auroc(y[:, c], run[:, c]) for run in a]))
        point_b = float(np.mean([binary_auroc(y[:, c], run[:, c]) for run in b]))
        diffs = (np.mean([_resampled_auroc(y[:, c], run[:, c], counts) for run in a], axis=0)
                 - np.mean([_resampled_auroc(y[:, c], run[:, c], counts) for run in b], axis=0))
        rows.append({**_summary(point_a, point_b, diffs[np.isfinite(diffs)], confidence, n), **row})
    return rows


def format_difference(result: dict, name_a: str = "A", name_b: str = "B") -> str:
    """``"A - B = +0.012 (95% CI -0.020 to +0.041, 72 records)"``."""
    c = int(round(100 * result["confidence"]))
    return (f"{name_a} - {name_b} = {result['difference']:+.3f} ({c}% CI {result['ci_low']:+.3f} to "
            f"{result['ci_high']:+.3f}, {result['n_records']} records)")


def compare_runs(y_true, arms: dict[str, Sequence], pairs: Sequence[tuple[str, str]], **kwargs) -> list[dict]:
    """Paired intervals for several ``(a, b)`` arm pairs; ``arms`` maps a name to its list of score matrices."""
    out = []
    for name_a, name_b in pairs:
        if name_a in arms and name_b in arms:
            res = paired_bootstrap(y_true, arms[name_a], arms[name_b], **kwargs)
            out.append({"a_name": name_a, "b_name": name_b, **res, "text": format_difference(res, name_a, name_b)})
    return out


__all__ += ["format_difference", "compare_runs"]
