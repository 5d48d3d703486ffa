"""F1 with per-class decision thresholds as an ``evaluate.Metric``.

Fit the thresholds on validation scores with :func:`ecgnat_hf.metrics.fit_thresholds`, then apply
them to test scores here: ``ThresholdedF1().compute(predictions=scores, references=y,
thresholds=t)``. Without ``thresholds``, 0.5 is used for every class.
"""

import datasets
import evaluate

from ecgnat_hf.metrics.functional import f1_at_thresholds

_DESCRIPTION = "Macro/micro/per-class F1 for multi-label scores with given per-class thresholds."
_KWARGS = """
Args:
    predictions: (n, classes) scores (probabilities). references: (n, classes) multi-hot.
    thresholds: per-class thresholds (or one number); positive when score >= threshold.
    label_names: optional class names.
Returns:
    macro_f1, micro_f1, f1 (per class), thresholds.
"""


class ThresholdedF1(evaluate.Metric):
    """Per-class and macro F1 at given decision thresholds, as an ``evaluate`` metric (the module docstring lists the inputs)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("int32")),
                }
            ),
        )

    def _compute(self, predictions, references, thresholds=0.5, label_names=None):
        r = f1_at_thresholds(references, predictions, thresholds, label_names)
        return {"macro_f1": r["macro"], "micro_f1": r["micro"], "f1": r["per_class"], "thresholds": r["thresholds"]}
