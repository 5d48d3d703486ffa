"""PhysioNet/CinC Challenge 2020/2021 score as an ``evaluate.Metric``.

Inputs are (n, 26) arrays over the scored classes in the order of the bundled 2021 ``weights.csv``
(``ecgnat_hf.data.labels.load_challenge_classes().codes``: the order of the Challenge builder's
``labels``). ``predictions`` may be probabilities: values >= ``threshold`` (default 0.5, or
per-class thresholds) count as positive. The score follows the official code: multi-label
confusion contributions normalised by the number of classes positive in labels or outputs,
normalised as (observed - inactive) / (correct - inactive) with sinus rhythm (426783006) as the
inactive output; equivalent codes are one class.
"""

import datasets
import evaluate
import numpy as np

from ecgnat_hf.metrics.functional import challenge_score

_CITATION = """\
@article{reyna2021will, title={Will Two Do? Varying Dimensions in Electrocardiography: The PhysioNet/Computing
  in Cardiology Challenge 2021}, author={Reyna, Matthew A and Sadr, Nadi and others},
  journal={Computing in Cardiology}, volume={48}, year={2021}}
"""
_KWARGS = """
Args:
    predictions: (n, classes) binary outputs or scores. references: (n, classes) multi-hot.
    threshold: number or per-class thresholds for scores (default 0.5).
    weights_file: an alternative weights.csv (default: the bundled 2021 table).
Returns:
    challenge_score.
"""


class ChallengeScore(evaluate.Metric):
    """The PhysioNet/CinC Challenge 2020/2021 normalised score from the official ``weights.csv``, as an ``evaluate`` metric."""

    def _info(self):
        return evaluate.MetricInfo(
            description="PhysioNet/CinC Challenge 2020/2021 normalised score.",
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("int32")),
                }
            ),
        )

    def _compute(self, predictions, references, threshold=0.5, weights_file=None, normal_class="426783006"):
        from ecgnat_hf.data.labels import load_challenge_classes

        cc = load_challenge_classes(weights_file)
        p = np.asarray(predictions, dtype=np.float64)
        th = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (p.shape[1],))
        outputs = p >= th[None, :]
        score = challenge_score(np.asarray(references), outputs, cc.weights, list(cc.codes), normal_class)
        return {"challenge_score": score}
