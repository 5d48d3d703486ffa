"""Multi-label AUROC and AUPRC (macro and per class) as an ``evaluate.Metric``.

Usable directly (``MultilabelAUC().compute(predictions=scores, references=multi_hot)``) or with
``evaluate.load("<path to this file>")`` (no hub access needed). ``predictions`` are scores
(probabilities or logits: both rank the same), ``references`` multi-hot 0/1. Classes whose
references hold a single value are skipped and listed in ``skipped_classes``.
"""

import datasets
import evaluate

from ecgnat_hf.metrics.functional import multilabel_auprc, multilabel_auroc

_DESCRIPTION = "Macro and per-class AUROC and AUPRC for multi-label classification."
_KWARGS = """
Args:
    predictions: (n, classes) scores.
    references: (n, classes) multi-hot 0/1.
    label_names: optional class names for the per-class dicts.
Returns:
    macro_auroc, macro_auprc, auroc (per class), auprc (per class), skipped_classes.
"""


class MultilabelAUC(evaluate.Metric):
    """Macro and per-class AUROC/AUPRC for multi-label scores, as an ``evaluate`` metric (the module docstring lists the inputs)."""

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

    def _compute(self, predictions, references, label_names=None):
        roc = multilabel_auroc(references, predictions, label_names)
        pr = multilabel_auprc(references, predictions, label_names)
        return {
            "macro_auroc": roc["macro"],
            "macro_auprc": pr["macro"],
            "auroc": roc["per_class"],
            "auprc": pr["per_class"],
            "skipped_classes": roc["skipped_classes"],
        }
