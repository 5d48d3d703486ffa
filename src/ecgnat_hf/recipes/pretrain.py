"""Self-supervised pretraining of ECG-NAT: masked reconstruction over a mixture of unlabelled sources.

Sources: the main ``--dataset`` (its train split; its validation split gives the evaluation loss, its
test split is never read, so a later fine-tune's test fold stays unseen) plus any ``--extra_sources
kind:path`` (``challenge:/data/cinc2021``, ``folder:/data/my_ecgs``, ``ptbxl:/data/ptb-xl``), all
through the same feature extractor as fine-tuning (resampled to the model's rate, long records cut
into windows). Objective (``ECGNATForPreTraining``): masked-patch reconstruction with random lead
masking (``--lead_mask_prob``) and an optional global segment-contrast term (``--global_loss_weight``).
The evaluation loss is reported (the head's ``forward`` has ``return_loss=True``). The output folder
is hub-ready and loads into ``AutoModelForSequenceClassification`` (encoder kept, new head)::

    python recipes/pretrain.py recipes/configs/tiny_sample_pretrain.yaml
    python recipes/pretrain.py --dataset ptbxl --data_dir /data/ptb-xl --extra_sources challenge:/data/cinc2021 \\
        --preset base --output_dir runs/pretrain --num_train_epochs 100

Python: ``main(args: list[str] | None = None, command: str | None = None) -> dict``.
"""
from __future__ import annotations

# On 2-core machines BLAS threads started by numpy/scipy/sklearn fight torch's threads (5-10x slower
# epochs): pin them before numpy is imported (the recipes' _common module also limits pools at run time).
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import logging  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Sequence  # noqa: E402

from . import _common as C  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = ["main", "PRETRAIN_DEFAULTS"]

PRETRAIN_DEFAULTS = {
    **C.COMMON_TRAINING_DEFAULTS,
    "num_train_epochs": 20,
    "learning_rate": 2e-3,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "prediction_loss_only": True,
}


class _PretrainCollator:
    def __call__(self, features):
        import torch

        x = torch.stack([torch.as_tensor(f["input_values"], dtype=torch.float32) for f in features])
        m = torch.stack([torch.as_tensor(f["lead_mask"]) for f in features]).long()
        return {"input_values": x, "lead_mask": m}


def main(args: Sequence[str] | None = None, command: str | None = None) -> dict:
    """Run the recipe (arguments as in :mod:`ecgnat_hf.recipes.finetune`). Returns ``{"output_dir",
    "eval_results": {"validation": {"loss": ...}}, "train_metrics", "global_step", "n_train",
    "sources", "parameters"}``."""
    from transformers import Trainer, TrainingArguments, set_seed

    from ..models.ecgnat.configuration_ecgnat import ECGNATConfig
    from ..models.ecgnat.modeling_ecgnat import ECGNATForPreTraining
    from ..training.arguments import DataArguments, ModelArguments, arguments_to_dict, parse_recipe_args
    from ..training.data import prepare_pretraining_data
    from ..training.hub import push_to_hub, save_hub_ready

    model_args, data_args, training_args = parse_recipe_args(
        (ModelArguments, DataArguments, TrainingArguments), args, PRETRAIN_DEFAULTS)
    command = C.command_line("pretrain", args, command)
    if model_args.model_type != "ecgnat":
        raise ValueError("pretraining is defined for ECG-NAT only (--model_type ecgnat)")
    C.setup_runtime(model_args)
    push, hub_model_id, hub_token = training_args.push_to_hub, training_args.hub_model_id, training_args.hub_token
    training_args.push_to_hub = False
    if push and not hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id org/name")

    rate = C.model_sampling_rate(model_args, data_args)
    fe = C.load_feature_extractor(model_args, data_args, rate)
    with training_args.main_process_first(desc="dataset preparation"):
        dd, sources = prepare_pretraining_data(data_args, fe)
    set_seed(training_args.seed)
    overrides = model_args.overrides()
    if model_args.attn_implementation:
        overrides["attn_implementation"] = model_args.attn_implementation
    if model_args.model_name_or_path:  # continue pretraining from a checkpoint
        model = ECGNATForPreTraining.from_pretrained(model_args.model_name_or_path, **overrides)
    else:
        model = ECGNATForPreTraining(ECGNATConfig.from_preset(model_args.preset, **overrides))
    if training_args.load_best_model_at_end and not training_args.metric_for_best_model:
        training_args.metric_for_best_model = "loss"
        training_args.greater_is_better = False

    trainer_cls = Trainer
    if getattr(data_args, "streaming", False):
        from ..training.store_stream import StreamingTrainer  # the dataset splits itself across ranks and workers

        trainer_cls = StreamingTrainer
    trainer = trainer_cls(
        model=model,
        args=training_args,
        train_dataset=dd["train"],
        eval_dataset=dd["validation"],
        data_collator=_PretrainCollator(),
        processing_class=fe,
    )
    train_out = trainer.train(resume_from_checkpoint=C.resolve_resume(training_args.resume_from_checkpoint))
    import torch

    torch.manual_seed(training_args.seed)  # the evaluation masks are random: fix them for a reproducible number
    metrics = trainer.evaluate()
    eval_results = {"validation": C.tidy_metrics(metrics, "eval")}
    results = {
        "output_dir": str(Path(training_args.output_dir).resolve()),
        "eval_results": eval_results,
        "train_metrics": C.tidy_metrics(train_out.metrics, "train") | {"train_loss": train_out.metrics.get("train_loss")},
        "global_step": int(trainer.state.global_step),
        "n_train": int(getattr(dd["train"], "num_records", None) or len(dd["train"])),  # streaming: all ranks
        "n_eval": int(getattr(dd["validation"], "num_records", None) or len(dd["validation"])),
        "sources": sources,
        "parameters": C.count_parameters(model),
    }
    if trainer.is_world_process_zero():
        out_dir = Path(training_args.output_dir)
        cfg = model.config
        card = dict(
            kind="pretrained",
            model_name=hub_model_id or out_dir.resolve().name,
            repo_id=hub_model_id,
            task_name="masked ECG reconstruction (self-supervised)",
            dataset_name=" + ".join(sources),
            command=command,
            training_args=C.training_summary(model_args, data_args, training_args),
            training_datasets=C.card_datasets(data_args),
            extra_sections={"About this run": (
                f"ECG-NAT ({results['parameters']['total']:,} parameters) pretrained on {results['n_train']} windows of "
                f"{data_args.window_s:g} s at {fe.sampling_rate:g} Hz from {', '.join(sources)}; mask ratio {cfg.mask_ratio}, "
                f"random lead masking p={cfg.lead_mask_prob}, global term weight {cfg.global_loss_weight}; "
                f"{results['global_step']} optimisation steps. The evaluation loss is the masked-reconstruction "
                f"MSE (normalised targets) on {results['n_eval']} held-out windows.")},
            tags=["self-supervised", "masked-autoencoder"],
        )
        save_hub_ready(trainer.model, fe, out_dir, eval_results=eval_results, card_kwargs=card,
                       run_arguments=arguments_to_dict(model_args, data_args, training_args))
        trainer.save_state()
        if push:
            results["hub_commit"] = str(push_to_hub(out_dir, hub_model_id, token=hub_token))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return results


if __name__ == "__main__":
    main()
