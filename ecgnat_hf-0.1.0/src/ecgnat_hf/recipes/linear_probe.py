"""Linear probe: a frozen ECG-NAT encoder (``requires_grad=False`` on ``model.ecgnat``) and a trained linear
head, no supervised-contrastive term -- the standard test of what pretraining learned::

    python recipes/linear_probe.py --model_name_or_path runs/pretrain --output_dir runs/probe
    python recipes/linear_probe.py --model_name_or_path runs/pretrain --label_fraction 0.01 --output_dir runs/probe1pct

Same arguments and outputs as :mod:`ecgnat_hf.recipes.finetune` (hub-ready folder, validation and test
results); ``--freeze_encoder`` is forced on, ``--supcon_weight 0``, ``--drop_path_rate 0`` and
``--classifier_dropout 0`` by default (fixed features), and a larger learning rate (1e-2).

Python: ``main(args: list[str] | None = None, command: str | None = None) -> dict``.
"""
from __future__ import annotations

# On 2-core machines BLAS threads started by numpy/scipy/sklearn fight torch's threads (5-10x slower
# epochs): pin them before numpy is imported (the recipes' _common module also limits pools at run time).
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from typing import Sequence  # noqa: E402

from . import _common as C  # noqa: E402
from .finetune import FINETUNE_DEFAULTS, train_classifier  # noqa: E402

__all__ = ["main", "LINEAR_PROBE_DEFAULTS"]

LINEAR_PROBE_DEFAULTS = {
    **FINETUNE_DEFAULTS,
    "learning_rate": 1e-2,
    "weight_decay": 0.0,
    "supcon_weight": 0.0,
    "drop_path_rate": 0.0,
    "classifier_dropout": 0.0,
    "freeze_encoder": True,
    "lead_subsets": "",
}


def main(args: Sequence[str] | None = None, command: str | None = None) -> dict:
    """Run the recipe; returns the same dictionary as :func:`ecgnat_hf.recipes.finetune.main`, plus
    ``"frozen_parameters"`` (the encoder's parameter count)."""
    from transformers import TrainingArguments

    from ..training.arguments import DataArguments, EvaluationArguments, ModelArguments, parse_recipe_args

    model_args, data_args, training_args, eval_args = parse_recipe_args(
        (ModelArguments, DataArguments, TrainingArguments, EvaluationArguments), args, LINEAR_PROBE_DEFAULTS)
    model_args.freeze_encoder = True
    if model_args.supcon_weight is None:
        model_args.supcon_weight = 0.0
    results, trainer = train_classifier(model_args, data_args, training_args, eval_args,
                                        command=C.command_line("linear_probe", args, command))
    results.pop("raw_predictions", None)
    p = results["parameters"]
    results["frozen_parameters"] = p["total"] - p["trainable"]
    return results


if __name__ == "__main__":
    main()
