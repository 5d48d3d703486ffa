"""Single-label accuracy as an ``evaluate.Metric`` (class ids; take argmax of logits first)."""

import datasets
import evaluate

from ecgnat_hf.metrics.functional import accuracy

_KWARGS = """
Args:
    predictions: predicted class ids. references: true class ids.
Returns:
    accuracy: fraction of correct predictions.
"""


class ECGAccuracy(evaluate.Metric):
    """Accuracy for single-label classification, as an ``evaluate`` metric."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Accuracy for single-label classification.",
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        return {"accuracy": accuracy(references, predictions)}
