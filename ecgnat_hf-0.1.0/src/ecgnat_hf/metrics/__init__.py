"""Metrics shipped in the package (the hub's metric scripts cannot be downloaded offline).

Functions (numpy in, floats out): :func:`multilabel_auroc`, :func:`multilabel_auprc`,
:func:`fit_thresholds`, :func:`f1_at_thresholds`, :func:`accuracy`, :func:`challenge_score`,
:func:`challenge_score_from_codes`.

``evaluate.Metric`` subclasses, usable directly or through ``evaluate.load(path)`` with
``path = ecgnat_hf.metrics.metric_path("multilabel_auc")``: :class:`MultilabelAUC`,
:class:`ThresholdedF1`, :class:`ECGAccuracy`, :class:`ChallengeScore`.

``Trainer`` glue: :func:`make_compute_metrics`.
"""

from pathlib import Path

from .challenge_score import ChallengeScore
from .ecg_accuracy import ECGAccuracy
from .functional import (
    accuracy,
    binary_auroc,
    binary_average_precision,
    challenge_score,
    challenge_score_from_codes,
    f1_at_thresholds,
    fit_thresholds,
    modified_confusion_matrix,
    multilabel_auprc,
    multilabel_auroc,
)
from .multilabel_auc import MultilabelAUC
from .thresholded_f1 import ThresholdedF1
from .trainer import make_compute_metrics

METRIC_MODULES = ("multilabel_auc", "thresholded_f1", "ecg_accuracy", "challenge_score")


def metric_path(name: str) -> str:
    """Path of a metric module for ``evaluate.load(path)``."""
    if name not in METRIC_MODULES:
        raise ValueError(f"unknown metric {name!r}; one of {METRIC_MODULES}")
    return str(Path(__file__).resolve().parent / f"{name}.py")


__all__ = [
    "MultilabelAUC",
    "ThresholdedF1",
    "ECGAccuracy",
    "ChallengeScore",
    "make_compute_metrics",
    "metric_path",
    "METRIC_MODULES",
    "accuracy",
    "binary_auroc",
    "binary_average_precision",
    "challenge_score",
    "challenge_score_from_codes",
    "f1_at_thresholds",
    "fit_thresholds",
    "modified_confusion_matrix",
    "multilabel_auprc",
    "multilabel_auroc",
]
