"""Evaluate any classification checkpoint on any builder split: per-class metrics, ROC curves and
per-lead-subset results from one checkpoint.

Lead subsets (``--lead_subsets``, default ``12-lead;6-limb;I+II;II;I``) are evaluated by zeroing the
absent leads' signals *and* their ``lead_mask`` entries, so the model sees exactly what a recording
with only those leads would give it (ECG-NAT fuses the present leads only; the ResNet1d baseline sees
zeros). A record that has none of a subset's leads (a single-lead recording of V1 under ``I+II``) is left
out of that subset's metrics, never scored as zeros: the subset's entry says ``n_scored``,
``n_skipped`` and ``skipped_records``, the Markdown names them, and the other subsets keep the record. Writes into ``--output_dir``: ``evaluation.json`` (every number), ``evaluation.md`` (tables),
``roc_<split>.png`` (12-lead ROC curves)::

    python recipes/evaluate.py --model_name_or_path runs/finetune --dataset sample --eval_splits test \\
        --output_dir runs/finetune/evaluation

Python: ``main(args: list[str] | None = None, command: str | None = None) -> dict``.
"""
from __future__ import annotations

# On 2-core machines BLAS threads started by numpy/scipy/sklearn fight torch's threads (5-10x slower
# epochs): pin them before numpy is imported (the recipes' _common module also limits pools at run time).
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from pathlib import Path  # noqa: E402
from typing import Any, Sequence  # noqa: E402

from . import _common as C  # noqa: E402

__all__ = ["main", "evaluate_checkpoint", "per_class_metrics"]

EVALUATE_DEFAULTS = {"report_to": "none", "dataloader_num_workers": 0, "per_device_eval_batch_size": 64}


def per_class_metrics(probs, labels, label_names, problem_type: str) -> dict[str, dict[str, Any]]:
    """``{label: {"n_positive", "auroc", "auprc", "f1"}}`` (F1 at 0.5 for multi-label, argmax for single-label)."""
    import numpy as np

    from ..metrics.functional import f1_at_thresholds, multilabel_auprc, multilabel_auroc

    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if problem_type == "single_label_classification":
        y = np.eye(probs.shape[1])[y.reshape(-1).astype(int)]
        hard = np.eye(probs.shape[1])[probs.argmax(1)]
        f1 = f1_at_thresholds(y, hard, 0.5, label_names)
    else:
        f1 = f1_at_thresholds(y, probs, 0.5, label_names)
    roc = multilabel_auroc(y, probs, label_names)
    pr = multilabel_auprc(y, probs, label_names)
    out = {}
    for i, name in enumerate(label_names):
        n_pos = int((y[:, i] > 0.5).sum())
        val = lambda d: (None if d is None or d != d else float(d))  # noqa: E731  (NaN -> None)
        out[str(name)] = {"n_positive": n_pos, "auroc": val(roc["per_class"].get(name)),
                          "auprc": val(pr["per_class"].get(name)), "f1": val(f1["per_class"].get(name))}
    return out


def _markdown(report: dict) -> str:
    from .finetune import skipped_records_note

    lines = [f"# Evaluation of `{report['checkpoint']}`", "", f"Data: {report['dataset']}.", ""]
    lines += [f"Command: `{report['command']}`", ""]
    for split, subsets in report["lead_subsets"].items():
        metrics = [m for m in ("macro_auroc", "macro_auprc", "macro_f1", "micro_f1", "accuracy", "challenge_score", "loss")
                   if any(m in r for r in subsets.values())]
        n = report["n_examples"][split]
        lines += [f"## {split} split ({n} examples): per lead subset", "",
                  "| leads | records scored | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
        for name, r in subsets.items():
            scored = f"{r['n_scored']} of {n}" if "n_scored" in r else str(n)
            lines.append(f"| {name} | {scored} | " + " | ".join(f"{r[m]:.4f}" if isinstance(r.get(m), (int, float))
                                                                  else "n/a" for m in metrics) + " |")
        note = skipped_records_note(subsets)
        if note:
            lines += ["", "Records with none of a subset's leads are left out of that subset's metrics (not scored "
                          "as zeros); the other subsets keep them:"] + note[1:]
        lines += ["", f"## {split} split: per class (12 leads)", "", "| class | positives | AUROC | AUPRC | F1 |",
                  "|---|---|---|---|---|"]
        for name, r in report["per_class"][split].items():
            f = lambda v: f"{v:.4f}" if isinstance(v, (int, float)) else "n/a"  # noqa: E731
            lines.append(f"| {name} | {r['n_positive']} | {f(r['auroc'])} | {f(r['auprc'])} | {f(r['f1'])} |")
        lines.append("")
    return "\n".join(lines)


def evaluate_checkpoint(model_args, data_args, training_args, eval_args, command: str) -> dict:
    """Evaluate ``model_args.model_name_or_path``; returns the report written to ``evaluation.json``."""
    from transformers import AutoModelForSequenceClassification, Trainer

    import ecgnat_hf  # noqa: F401  (registers the Auto classes)

    from ..metrics import make_compute_metrics
    from ..training.arguments import parse_lead_subset
    from ..models.resnet1d import register_resnet1d
    from ..training.data import ECGDataCollator, prepare_classification_data
    from ..training.data import lead_subset_mask
    from .finetune import evaluate_splits

    if not model_args.model_name_or_path:
        raise ValueError("evaluate needs --model_name_or_path <checkpoint folder or hub id>")
    C.setup_runtime(model_args)
    register_resnet1d()
    model = AutoModelForSequenceClassification.from_pretrained(model_args.model_name_or_path,
                                                               trust_remote_code=model_args.trust_remote_code)
    fe = C.load_feature_extractor(model_args, data_args, getattr(model.config, "sampling_rate", None))
    splits = [s.strip() for s in eval_args.eval_splits.split(",") if s.strip()]
    data_args.label_fraction = 1.0
    with training_args.main_process_first(desc="dataset preparation"):
        prepared = prepare_classification_data(data_args, fe, splits=splits)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if [str(n) for n in names] != [str(n) for n in prepared.label_names]:
        raise ValueError(f"the checkpoint's classes {names} differ from the data's {prepared.label_names}: "
                         "evaluate on the task the model was trained for")
    problem = model.config.problem_type or prepared.problem_type
    prepared.problem_type = problem
    trainer = Trainer(model=model, args=training_args, data_collator=ECGDataCollator(problem), processing_class=fe,
                      compute_metrics=make_compute_metrics(problem, prepared.label_names),
                      preprocess_logits_for_metrics=C.first_logits)
    subsets = [s for s in (eval_args.lead_subsets or "12-lead").split(";") if s.strip()] or ["12-lead"]
    out_dir = Path(training_args.output_dir)
    report: dict[str, Any] = {
        "checkpoint": str(model_args.model_name_or_path), "dataset": prepared.dataset_name,
        "task": data_args.task, "command": command, "label_names": list(prepared.label_names),
        "n_examples": {s: int(len(prepared.splits[s])) for s in splits if s in prepared.splits},
        "lead_subsets": {}, "per_class": {}, "plots": {},
    }
    for name in subsets:
        sname, leads = parse_lead_subset(name)
        res, raw = evaluate_splits(trainer, prepared, splits=splits, keep_leads=lead_subset_mask(fe.lead_names, leads))
        for split, metrics in res.items():
            report["lead_subsets"].setdefault(split, {})[sname] = metrics
            if len(leads) == len(fe.lead_names):  # the full-lead view: per-class table and ROC curves
                probs, labels = raw[split]
                report["per_class"][split] = per_class_metrics(probs, labels, prepared.label_names, problem)
                if eval_args.plot_roc and trainer.is_world_process_zero():
                    from ..plotting.figures import plot_roc_curves

                    out_dir.mkdir(parents=True, exist_ok=True)
                    png = out_dir / f"roc_{split}.png"
                    fig = plot_roc_curves(labels, probs, prepared.label_names, png,
                                          title=f"{prepared.dataset_name} {data_args.task}, {split}")
                    import matplotlib.pyplot as plt

                    plt.close(fig)
                    report["plots"][split] = str(png)
    if trainer.is_world_process_zero():
        C.write_json(report, out_dir / "evaluation.json")
        C.write_text(_markdown(report), out_dir / "evaluation.md")
    report["output_dir"] = str(out_dir.resolve())
    return report


def main(args: Sequence[str] | None = None, command: str | None = None) -> dict:
    """Run the recipe. Returns the report: ``{"checkpoint", "dataset", "label_names", "n_examples",
    "lead_subsets": {split: {subset: metrics}}, "per_class": {split: {label: {...}}}, "plots", "output_dir"}``."""
    from transformers import TrainingArguments

    from ..training.arguments import DataArguments, EvaluationArguments, ModelArguments, parse_recipe_args

    model_args, data_args, training_args, eval_args = parse_recipe_args(
        (ModelArguments, DataArguments, TrainingArguments, EvaluationArguments), args, EVALUATE_DEFAULTS)
    return evaluate_checkpoint(model_args, data_args, training_args, eval_args, C.command_line("evaluate", args, command))


if __name__ == "__main__":
    main()
