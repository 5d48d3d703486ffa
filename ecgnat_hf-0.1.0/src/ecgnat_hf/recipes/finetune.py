"""Fine-tune ECG-NAT (or the ResNet1d baseline) for ECG classification with ``transformers.Trainer``.

From a pretraining checkpoint (``--model_name_or_path``: the encoder is kept, a new head is added) or
from scratch (``--preset tiny``), single- or multi-label, on PTB-XL tasks, the bundled sample, the
PhysioNet Challenge data or your own folder. Loss: cross-entropy / BCE plus the supervised-contrastive
term (``--supcon_weight``). Evaluates with the package metrics (macro AUROC, AUPRC, F1, per-class
AUROC), keeps the best checkpoint by ``--metric_for_best_model`` (default ``macro_auroc``), evaluates
the validation *and* test splits, optionally per lead subset, and writes a hub-ready folder (model,
preprocessor, remote code, model card, ``eval_results.json``, ``run_arguments.json``)::

    python recipes/finetune.py recipes/configs/tiny_sample_finetune.yaml
    python recipes/finetune.py --dataset ptbxl --data_dir /data/ptb-xl --task superdiagnostic \\
        --model_name_or_path runs/pretrain --output_dir runs/finetune --num_train_epochs 30
    torchrun --nproc_per_node 4 recipes/finetune.py recipes/configs/base_ptbxl_finetune.yaml

``--resume_from_checkpoint true`` (or a ``checkpoint-N`` path) continues an interrupted run;
``--push_to_hub --hub_model_id org/name`` uploads the final folder.

Python: ``main(args: list[str] | None = None, command: str | None = None) -> dict`` (see :func:`main`).
"""
from __future__ import annotations

# On 2-core machines BLAS threads started by numpy/scipy/sklearn fight torch's threads (5-10x slower
# epochs): pin them before numpy is imported (the recipes' _common module also limits pools at run time).
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import logging  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Sequence  # noqa: E402

from . import _common as C  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = ["main", "train_classifier", "evaluate_splits", "FINETUNE_DEFAULTS"]

FINETUNE_DEFAULTS = {
    **C.COMMON_TRAINING_DEFAULTS,
    "num_train_epochs": 10,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "load_best_model_at_end": True,
    "metric_for_best_model": "macro_auroc",
    "greater_is_better": True,
}


def _parse(args):
    from transformers import TrainingArguments

    from ..training.arguments import DataArguments, EvaluationArguments, ModelArguments, parse_recipe_args

    defaults = dict(FINETUNE_DEFAULTS)
    defaults["lead_subsets"] = ""  # per-lead-subset evaluation is opt-in here (the evaluate recipe does all)
    return parse_recipe_args((ModelArguments, DataArguments, TrainingArguments, EvaluationArguments), args, defaults)


def evaluate_splits(trainer, prepared, splits=("validation", "test"), keep_leads=None) -> tuple[dict, dict]:
    """Metrics per split (tidy, nested per-class AUROC) and raw (probabilities, labels) per split.

    With ``keep_leads`` (a lead subset), records that have none of the subset's leads are left out of that
    subset's metrics, never scored as zeros, and the split's metrics say so: ``n_scored``, ``n_skipped``
    and ``skipped_records`` (their names). A split where no record has any of the leads gets only those
    counts (no metric, no raw predictions). Other subsets and the full-lead evaluation are unaffected."""
    import numpy as np

    from ..metrics.functional import sigmoid, softmax
    from ..training.data import ECGDataCollator, drop_examples_without_kept_leads

    old = trainer.data_collator
    trainer.data_collator = ECGDataCollator(prepared.problem_type, keep_leads=keep_leads)
    subset = keep_leads is not None and not bool(np.asarray(keep_leads, dtype=bool).all())
    results, raw = {}, {}
    try:
        for s in splits:
            if s not in prepared.splits or len(prepared.splits[s]) == 0:
                continue
            ds, left_out = prepared.splits[s], []
            if subset:
                leads = [n for n, k in zip(getattr(trainer.processing_class, "lead_names", None) or [],
                                           np.asarray(keep_leads, dtype=bool)) if k]
                ds, left_out = drop_examples_without_kept_leads(
                    ds, keep_leads, f"{s} split, leads {'+'.join(leads) or 'subset'}")
            counts = {"n_scored": int(len(ds)), "n_skipped": len(left_out), "skipped_records": left_out} if subset else {}
            if len(ds) == 0:
                results[s] = counts
                continue
            prefix = "eval" if s == "validation" else s
            out = trainer.predict(ds, metric_key_prefix=prefix)
            results[s] = C.tidy_metrics(out.metrics, prefix)
            results[s].pop("n_skipped_classes", None)  # counts stay out of the card's model-index
            results[s].update(counts)
            logits = np.asarray(C.first_logits(out.predictions), dtype=np.float64)
            probs = softmax(logits) if prepared.problem_type == "single_label_classification" else sigmoid(logits)
            raw[s] = (probs, np.asarray(out.label_ids))
    finally:
        trainer.data_collator = old
    return results, raw


def train_classifier(model_args, data_args, training_args, eval_args=None, *, command: str = "finetune",
                     prepared=None, save: bool = True, feature_extractor=None,
                     callbacks=None) -> tuple[dict, Any]:
    """Fine-tune and evaluate; returns ``(results, trainer)``.

    ``prepared`` (a :class:`~ecgnat_hf.training.data.PreparedData`) and ``feature_extractor``: reuse data
    already prepared with that extractor (the label-efficiency sweep passes both, so records are read and
    preprocessed once). ``callbacks``: extra ``TrainerCallback`` objects. ``save=False`` skips the hub-ready folder (Trainer checkpoints are still written).
    ``results["raw_predictions"]``: ``{split: (probabilities, labels)}``."""
    import torch
    from transformers import set_seed

    from ..metrics import make_compute_metrics
    from ..training.arguments import arguments_to_dict, parse_lead_subset
    from ..training.data import ECGDataCollator, lead_subset_mask, prepare_classification_data
    from ..training.hub import push_to_hub, save_hub_ready
    from ..training.optimization import LayerDecayTrainer

    C.setup_runtime(model_args)
    if model_args.layer_decay < 1 and model_args.model_type != "ecgnat":
        raise ValueError(f"--layer_decay {model_args.layer_decay:g} needs --model_type ecgnat (layers of a pretrained "
                         f"ECG-NAT encoder), got --model_type {model_args.model_type}")
    push, hub_model_id, hub_token = training_args.push_to_hub, training_args.hub_model_id, training_args.hub_token
    training_args.push_to_hub = False  # we upload the final hub-ready folder ourselves (see training.hub)
    if push and not hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id org/name")

    fe = feature_extractor
    if fe is None:
        fe = C.load_feature_extractor(model_args, data_args, C.model_sampling_rate(model_args, data_args))
    if prepared is None:
        with training_args.main_process_first(desc="dataset preparation"):
            prepared = prepare_classification_data(data_args, fe)
    if "train" not in prepared.splits:
        raise ValueError(f"{prepared.dataset_name}: no training split")
    set_seed(training_args.seed)
    if model_args.model_type == "beatnet":  # BEAT-Net: beats are tokenized once here, not in every forward pass
        from ..training.beatnet import beatnet_classifier_and_data

        model, fe, prepared = beatnet_classifier_and_data(model_args, prepared, fe)
    else:
        model = C.build_classifier(model_args, prepared)
    if "validation" not in prepared.splits:
        logger.warning("no validation split: evaluation during training and best-checkpoint selection are off")
        training_args.eval_strategy = "no"
        training_args.load_best_model_at_end = False
    subset = parse_lead_subset(data_args.leads)
    keep = lead_subset_mask(fe.lead_names, subset[1]) if subset else None
    if keep is not None and not keep.all():  # training on a lead subset: records without any of its leads
        prepared = _without_records_lacking(prepared, keep, subset[0])  # are left out and reported, not zeros
    trainer = LayerDecayTrainer(
        model=model,
        layer_decay=model_args.layer_decay,
        args=training_args,
        train_dataset=prepared.splits["train"],
        eval_dataset=prepared.splits.get("validation"),
        data_collator=ECGDataCollator(prepared.problem_type, keep_leads=keep),
        processing_class=fe,
        compute_metrics=make_compute_metrics(prepared.problem_type, prepared.label_names),
        preprocess_logits_for_metrics=C.first_logits,
        callbacks=callbacks,
    )
    train_out = trainer.train(resume_from_checkpoint=C.resolve_resume(training_args.resume_from_checkpoint))
    eval_results, raw = evaluate_splits(trainer, prepared, keep_leads=keep)
    for r in eval_results.values():  # nothing left to skip here (see above); counts stay off the model card
        for k in ("n_scored", "n_skipped", "skipped_records"):
            r.pop(k, None)
    lead_results = {}
    subsets = [s for s in (eval_args.lead_subsets.split(";") if eval_args and eval_args.lead_subsets else []) if s.strip()]
    for name in subsets:
        sname, leads = parse_lead_subset(name)
        res, _ = evaluate_splits(trainer, prepared, splits=("test",), keep_leads=lead_subset_mask(fe.lead_names, leads))
        if "test" in res:
            lead_results[sname] = res["test"]

    results: dict[str, Any] = {
        "output_dir": str(Path(training_args.output_dir).resolve()),
        "eval_results": eval_results,
        "train_metrics": C.tidy_metrics(train_out.metrics, "train") | {"train_loss": train_out.metrics.get("train_loss")},
        "global_step": int(trainer.state.global_step),
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "n_train": int(len(prepared.splits["train"])),
        "n_examples": {s: int(len(d)) for s, d in prepared.splits.items()},
        "label_names": list(prepared.label_names),
        "parameters": C.count_parameters(model),
        "lead_subsets": lead_results,
        "raw_predictions": raw,
    }
    # decision thresholds fitted on the validation split, saved in config.json with id2label (issue 10)
    from ..training.thresholds import attach_decision_thresholds

    results["decision_thresholds"] = attach_decision_thresholds(
        trainer.model, raw.get("validation"), prepared.label_names, prepared.problem_type)

    if save and trainer.is_world_process_zero():
        out_dir = Path(training_args.output_dir)
        task = data_args.task if data_args.dataset in ("sample", "ptbxl") else prepared.dataset_name
        mtype = {"ecgnat": "ECG-NAT", "beatnet": "BEAT-Net"}.get(model_args.model_type, "ResNet1d baseline")
        sections = {}
        if lead_results:
            sections["Results per lead subset (test split, one checkpoint)"] = lead_subset_markdown(lead_results)
        card = dict(
            kind="finetuned",
            model_name=hub_model_id or out_dir.resolve().name,
            repo_id=hub_model_id,
            task_name=f"{prepared.dataset_name}: {task} ({prepared.problem_type.replace('_', ' ')})",
            dataset_name=prepared.dataset_name,
            command=command,
            training_args=C.training_summary(model_args, data_args, training_args),
            label_names=list(prepared.label_names),
            base_model=model_args.model_name_or_path if model_args.model_name_or_path and not Path(model_args.model_name_or_path).exists() else None,
            training_datasets=C.card_datasets(data_args),
            extra_sections={f"About this run": (
                f"{mtype} ({results['parameters']['total']:,} parameters, {results['parameters']['trainable']:,} trained), "
                f"{'initialised from ' + repr(model_args.model_name_or_path) if model_args.model_name_or_path else 'trained from scratch'}; "
                f"{results['n_train']} training examples (label fraction {data_args.label_fraction:g}); "
                f"{results['global_step']} optimisation steps; "
                + (f"best checkpoint by `{training_args.metric_for_best_model}` on the validation split."
                   if training_args.load_best_model_at_end else "the final weights (no checkpoint selection).")
            )} | sections,
            tags=["ecg-classification", model_args.model_type],
        )
        extra = {"lead_subsets.json": lead_results} if lead_results else {}
        save_hub_ready(trainer.model, fe, out_dir, eval_results=eval_results, card_kwargs=card,
                       run_arguments=arguments_to_dict(model_args, data_args, training_args, *( [eval_args] if eval_args else [])),
                       extra_files=extra)
        trainer.save_state()
        if push:
            results["hub_commit"] = str(push_to_hub(out_dir, hub_model_id, token=hub_token,
                                                    private=getattr(training_args, "hub_private_repo", None)))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return results, trainer


def lead_subset_markdown(lead_results: dict, metrics=("macro_auroc", "macro_auprc", "macro_f1", "accuracy")) -> str:
    """A Markdown table: one row per lead subset, one column per metric present, and the number of records
    scored and left out (none of the subset's leads present) when a subset left any out; the names of those
    records follow the table."""
    cols = [m for m in metrics if any(m in r for r in lead_results.values())]
    counts = any(r.get("n_skipped") for r in lead_results.values())
    head = cols + (["records scored", "left out (none of the leads)"] if counts else [])
    lines = ["| leads | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for name, r in lead_results.items():
        cells = [f"{r[m]:.4f}" if isinstance(r.get(m), (int, float)) else "n/a" for m in cols]
        if counts:
            cells += [str(r.get("n_scored", "")), str(r.get("n_skipped", 0))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += skipped_records_note(lead_results)
    return "\n".join(lines)


def skipped_records_note(lead_results: dict, limit: int = 20) -> list[str]:
    """Markdown lines naming the records each lead subset left out (empty when none was)."""
    lines = []
    for name, r in lead_results.items():
        names = r.get("skipped_records") or []
        if names:
            shown = ", ".join(f"`{n}`" for n in names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
            lines.append(f"- {name}: {len(names)} record(s) left out, none of the leads present: {shown}")
    return [""] + lines if lines else []


def _without_records_lacking(prepared, keep, name: str):
    """``prepared`` without the records that have none of the training lead subset ``keep``; they are added
    to ``prepared.skipped`` (reason ``no lead of --leads``) and logged by name."""
    from dataclasses import replace

    from ..data.builders.common import SkippedRecord
    from ..training.data import drop_examples_without_kept_leads

    splits, skipped = {}, list(prepared.skipped)
    for s, ds in prepared.splits.items():
        splits[s], left_out = drop_examples_without_kept_leads(ds, keep, f"--leads {name}, {s} split")
        skipped += [SkippedRecord(r, "no lead of --leads", f"none of the leads {name} is present") for r in left_out]
    if "train" in splits and len(splits["train"]) == 0:
        raise ValueError(f"--leads {name}: no training record has any of these leads")
    return replace(prepared, splits={s: d for s, d in splits.items() if len(d)}, skipped=skipped)


def main(args: Sequence[str] | None = None, command: str | None = None) -> dict:
    """Run the recipe. ``args``: command-line arguments (``sys.argv[1:]`` when None), optionally starting
    with a ``.yaml``/``.json`` run config. ``command``: the command line shown on the model card
    (default: this invocation). Returns ``{"output_dir", "eval_results": {"validation": {...}, "test":
    {...}}, "train_metrics", "global_step", "best_checkpoint", "n_train", "label_names", "parameters",
    "lead_subsets"}``."""
    model_args, data_args, training_args, eval_args = _parse(args)
    results, _ = train_classifier(model_args, data_args, training_args, eval_args,
                                  command=C.command_line("finetune", args, command))
    results.pop("raw_predictions", None)
    return results


if __name__ == "__main__":
    main()
