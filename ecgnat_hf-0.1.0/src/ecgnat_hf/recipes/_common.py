"""Shared pieces of the recipes: runtime set-up, models, feature extractors, results and cards."""
from __future__ import annotations

# Set before numpy/scipy load their BLAS (effective when this module is imported first, as by the
# root scripts and torchrun workers): on 2-core machines BLAS threads started by scipy/sklearn fight
# torch's intra-op threads and make epochs 5-10x slower. ``setup_runtime`` also limits already-loaded
# BLAS pools with threadpoolctl, for the case where numpy was imported before this module.
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Mapping, Sequence  # noqa: E402

logger = logging.getLogger("ecgnat_hf.recipes")

def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


#: TrainingArguments defaults of the recipes (used only where the config file / flags do not set them)
COMMON_TRAINING_DEFAULTS: dict[str, Any] = {
    "report_to": "none",
    "dataloader_num_workers": 0,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 64,
    "logging_steps": 10,
    "save_total_limit": 2,
    "learning_rate": 1e-3,
    "weight_decay": 0.05,
    "warmup_steps": 0.05,
    "lr_scheduler_type": "cosine",
    # pinned host memory only helps copies to a GPU; on CPU-only machines torch warns at every dataloader
    "dataloader_pin_memory": _cuda_available(),
}

_DATASET_CARD_NAMES = {"sample": "PTB-XL", "ptbxl": "PTB-XL", "challenge": "cinc2021", "mimic-iv-ecg": "mimic-iv-ecg",
                       "code15": "code15"}


def setup_runtime(model_args=None) -> int:
    """Pin BLAS pools to one thread and torch to ``num_threads`` (default: cores per local process)."""
    import torch

    from ..training.arguments import default_num_threads

    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")
    except Exception:  # threadpoolctl missing: the environment variables above still apply
        pass
    n = (getattr(model_args, "num_threads", None) or default_num_threads())
    torch.set_num_threads(int(n))
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    return int(n)


def command_line(module: str, args: Sequence[str] | None, command: str | None = None) -> str:
    """The exact command of this run, for the model card."""
    if command:
        return command
    if args is None:
        return "python " + shlex.join(sys.argv)
    return f"python -m ecgnat_hf.recipes.{module} " + shlex.join(list(args))


def resolve_resume(value) -> bool | str | None:
    if value is None or value is False:
        return None
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "last"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("", "false", "no", "0", "none"):
        return None
    return value


# -------------------------------------------------------------------------------- feature extractor
def load_feature_extractor(model_args, data_args, model_rate: float | None = None):
    """The checkpoint's own extractor when it has one, else a new one at the model's rate.

    The saved extractor is in window mode, so that users of the checkpoint get long recordings cut into
    overlapping windows (with ``record_index`` for aggregation); training calls it with an explicit mode."""
    from ..models.ecgnat.feature_extraction_ecgnat import ECGNATFeatureExtractor

    path = model_args.model_name_or_path
    if path:
        try:
            from transformers import AutoFeatureExtractor

            fe = AutoFeatureExtractor.from_pretrained(path, trust_remote_code=model_args.trust_remote_code)
            fe.window_s = float(data_args.window_s)
            return fe
        except (OSError, ValueError) as exc:
            logger.warning("no feature extractor in %s (%s); creating one at the model's rate", path, exc)
    rate = model_rate or 100
    scaling = getattr(data_args, "scaling", "center")
    try:
        scaling = float(scaling)
    except (TypeError, ValueError):
        pass
    return ECGNATFeatureExtractor(sampling_rate=rate, window_s=data_args.window_s, mode="window", scaling=scaling)


def model_sampling_rate(model_args, data_args) -> float:
    """Sampling rate the model works at: from the checkpoint / preset (ECG-NAT) or the data (ResNet1d)."""
    if model_args.model_name_or_path:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(model_args.model_name_or_path, trust_remote_code=model_args.trust_remote_code)
        rate = getattr(cfg, "sampling_rate", None)
        if rate:
            return float(rate)
        pre = Path(model_args.model_name_or_path) / "preprocessor_config.json"
        if pre.is_file():
            return float(json.loads(pre.read_text())["sampling_rate"])
    if model_args.model_type == "ecgnat":
        from ..models.ecgnat.configuration_ecgnat import PRESETS

        return float(model_args.overrides().get("sampling_rate", PRESETS[model_args.preset]["sampling_rate"]))
    return float(data_args.sampling_rate or (100 if data_args.dataset == "sample" else 500))


# ------------------------------------------------------------------------------------------- models
def build_classifier(model_args, prepared, freeze_encoder: bool | None = None):
    """ECG-NAT or ResNet1d classifier with ``label2id``/``id2label``/``problem_type`` in its config."""
    from ..models.ecgnat.configuration_ecgnat import ECGNATConfig
    from ..models.ecgnat.modeling_ecgnat import ECGNATForSequenceClassification
    from ..models.resnet1d import ResNet1dConfig, ResNet1dForSequenceClassification, register_resnet1d

    register_resnet1d()
    label_kw = dict(num_labels=len(prepared.label_names), problem_type=prepared.problem_type,
                    id2label=prepared.id2label, label2id=prepared.label2id)
    overrides = model_args.overrides()
    if model_args.attn_implementation and model_args.model_type == "ecgnat":
        overrides["attn_implementation"] = model_args.attn_implementation
    if model_args.model_type == "ecgnat":
        if model_args.model_name_or_path:
            model = ECGNATForSequenceClassification.from_pretrained(
                model_args.model_name_or_path, ignore_mismatched_sizes=True, **label_kw, **overrides)
        else:
            model = ECGNATForSequenceClassification(ECGNATConfig.from_preset(model_args.preset, **label_kw, **overrides))
        encoder = model.ecgnat
    else:
        rn_over = {k: v for k, v in overrides.items() if k in {f for f in ResNet1dConfig.__dataclass_fields__}}
        if model_args.model_name_or_path:
            model = ResNet1dForSequenceClassification.from_pretrained(
                model_args.model_name_or_path, ignore_mismatched_sizes=True, **label_kw, **rn_over)
        else:
            model = ResNet1dForSequenceClassification(ResNet1dConfig(**label_kw, **rn_over))
        encoder = model.resnet1d
    freeze = model_args.freeze_encoder if freeze_encoder is None else freeze_encoder
    if freeze:
        for p in encoder.parameters():
            p.requires_grad_(False)
    return model


def count_parameters(model) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": int(total), "trainable": int(trainable)}


# ------------------------------------------------------------------------------------------ results
def first_logits(logits, labels=None):
    """``preprocess_logits_for_metrics``: keep the logits only (ECG-NAT outputs also carry scalar
    partial losses and pooled features, which the Trainer would otherwise gather)."""
    if isinstance(logits, (tuple, list)):
        return logits[0]
    return logits


_BOOKKEEPING = ("runtime", "samples_per_second", "steps_per_second", "epoch", "total_flos", "model_preparation_time")


def tidy_metrics(metrics: Mapping[str, Any], prefix: str | None = None) -> dict[str, Any]:
    """Drop the Trainer's split prefix and bookkeeping entries; gather ``auroc_<label>`` into ``auroc``."""
    out: dict[str, Any] = {}
    per_class: dict[str, float] = {}
    for k, v in metrics.items():
        key = k[len(prefix) + 1:] if prefix and k.startswith(prefix + "_") else k
        if any(b in key for b in _BOOKKEEPING):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        if key.startswith("auroc_"):
            per_class[key[len("auroc_"):]] = v
        else:
            out[key] = v
    if per_class:
        out["auroc"] = per_class
    return out


def training_summary(model_args, data_args, training_args) -> dict[str, Any]:
    """Hyper-parameters shown on the model card (the full set is in run_arguments.json)."""
    keep = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
            "weight_decay", "warmup_steps", "lr_scheduler_type", "seed", "metric_for_best_model", "fp16", "bf16")
    out = {k: getattr(training_args, k) for k in keep if getattr(training_args, k, None) not in (None, -1)}
    try:
        import torch.distributed as dist

        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    except Exception:
        world = 1
    out["world_size"] = world
    for k, v in vars(model_args).items():
        if v not in (None, False, "", []) and k not in ("trust_remote_code", "num_threads"):
            out[f"model.{k}"] = v
    for k, v in vars(data_args).items():
        if v not in (None, False, "", []) and k not in ("cache_dir",):
            out[f"data.{k}"] = v
    return out


def card_datasets(data_args) -> list:
    if data_args.dataset == "folder":
        return [{"name": f"local ECG folder {Path(data_args.data_dir).name}", "license": "the data owner's terms", "url": ""}]
    names = [_DATASET_CARD_NAMES[data_args.dataset]]
    for item in getattr(data_args, "extra_sources", []) or []:
        kind, _, path = item.partition(":")
        names.append(_DATASET_CARD_NAMES.get(kind, {"name": f"local ECG folder {Path(path).name}",
                                                     "license": "the data owner's terms", "url": ""}))
    uniq = []
    for n in names:
        if n not in uniq:
            uniq.append(n)
    return uniq


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write JSON atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_text(text: str, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
