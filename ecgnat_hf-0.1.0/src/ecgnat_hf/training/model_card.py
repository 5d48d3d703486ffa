"""Model cards rendered from a run's own configuration and evaluation results.

The card is a Jinja template (``templates/pretrained.md`` or ``templates/finetuned.md`` beside this
module) rendered by ``huggingface_hub.ModelCard.from_template``. Every number in it comes from the
evaluation JSON that the run wrote: the results table in the text *and* the ``model-index`` metadata
that the Hub reads are both generated from the same ``EvalResult`` list, so they cannot disagree
and nothing is typed by hand.

Typical use at the end of a recipe::

    from ecgnat_hf.training.model_card import load_eval_results, write_model_card

    write_model_card(
        training_args.output_dir,
        kind="finetuned",
        model_name="ecgnat-tiny-ptbxl-superdiagnostic",
        eval_results=load_eval_results(f"{training_args.output_dir}/eval_results.json"),
        task_name="PTB-XL superdiagnostic (multi-label)",
        dataset_name="PTB-XL",
        command=" ".join(sys.argv),
        training_args=training_args.to_dict(),
        label_names=list(model.config.id2label.values()),
        base_model="org/ecgnat-tiny",
    )

Evaluation results (``eval_results``) are a mapping ``metric -> number``, optionally nested one level
per split: a top-level key whose value is a mapping is a split when its name looks like one
(``train``, ``validation``/``val``/``eval``/``dev``, ``test``, ``predict``, ``fold10``, ...) or when
that mapping itself holds mappings; inside a split, a metric may be a mapping ``label -> number`` (a
per-class breakdown: shown as its own table, not put in ``model-index``). A top-level mapping of
numbers under a non-split key is a per-class breakdown of the default split. Flat ``Trainer`` output
(``eval_loss``, ``test_macro_auroc``, ...) is understood: the ``eval_`` / ``test_`` / ``predict_``
prefix names the split (``eval`` -> ``validation``), and bookkeeping entries (runtime, samples or
steps per second, epoch, FLOs) and non-numeric entries are left out.

The templates are packaged in ``ecgnat_hf/training/templates/`` (the repository's ``model_cards/``
folder explains them and holds an example rendering).
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from huggingface_hub import EvalResult, ModelCard, ModelCardData

__all__ = [
    "TEMPLATES_DIR",
    "template_path",
    "load_eval_results",
    "flatten_eval_results",
    "build_eval_results",
    "write_model_card",
    "DATASET_LICENSES",
]

#: where the Jinja templates live (packaged with the module; the single source of truth)
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

#: licences of the datasets the package knows how to read, for the "Training data" section
DATASET_LICENSES: dict[str, dict[str, str]] = {
    "ptb-xl": {
        "name": "PTB-XL 1.0.3 (Wagner et al. 2020, PhysioNet)",
        "license": "CC-BY-4.0",
        "url": "https://physionet.org/content/ptb-xl/1.0.3/",
    },
    "cinc2021": {
        "name": "PhysioNet/CinC Challenge 2021 training data (CPSC, INCART, PTB, PTB-XL, Georgia, Chapman-Shaoxing, Ningbo)",
        "license": "CC-BY-4.0",
        "url": "https://physionet.org/content/challenge-2021/",
    },
    "cpsc2018": {
        "name": "China Physiological Signal Challenge 2018",
        "license": "challenge data terms (free for research; see the challenge site)",
        "url": "http://2018.icbeb.org/Challenge.html",
    },
    "mitdb": {
        "name": "MIT-BIH Arrhythmia Database (PhysioNet)",
        "license": "ODC-BY-1.0",
        "url": "https://physionet.org/content/mitdb/1.0.0/",
    },
    "ptbdb": {
        "name": "PTB Diagnostic ECG Database (PhysioNet)",
        "license": "ODC-BY-1.0",
        "url": "https://physionet.org/content/ptbdb/1.0.0/",
    },
    "chapman-shaoxing": {
        "name": "Chapman-Shaoxing 12-lead ECG database (Zheng et al. 2020)",
        "license": "CC-BY-4.0",
        "url": "https://physionet.org/content/ecg-arrhythmia/1.0.0/",
    },
    "mimic-iv-ecg": {
        "name": "MIMIC-IV-ECG (PhysioNet)",
        "license": "ODbL-1.0",
        "url": "https://physionet.org/content/mimic-iv-ecg/1.0/",
    },
    "code15": {
        "name": "CODE-15 % (Ribeiro et al. 2021, Zenodo)",
        "license": "CC-BY-4.0",
        "url": "https://zenodo.org/records/4916206",
    },
}

# metric names -> Hub metric ids (https://hf.co/metrics); anything else keeps its own name
_METRIC_IDS = {
    "auroc": "roc_auc",
    "macro_auroc": "roc_auc",
    "roc_auc": "roc_auc",
    "macro_roc_auc": "roc_auc",
    "auc": "roc_auc",
    "accuracy": "accuracy",
    "acc": "accuracy",
    "f1": "f1",
    "macro_f1": "f1",
    "f1_macro": "f1",
    "precision": "precision",
    "recall": "recall",
    "loss": "loss",
    "mse": "mse",
    "mae": "mae",
    "challenge_score": "challenge_score",
}
_SPLIT_PREFIXES = {"eval": "validation", "test": "test", "predict": "test", "validation": "validation"}
_SPLIT_NAME = re.compile(r"^(train|training|val|valid|validation|eval|dev|test|predict|holdout|fold[_-]?\d+)$", re.I)
_BOOKKEEPING = re.compile(r"(runtime|samples_per_second|steps_per_second|^epoch$|total_flos|^step$|_jit_compilation_time)")

# never put credentials on a public card, whatever the caller passes
_SECRET = re.compile(r"(token|secret|password|passwd|api_key|apikey|credential)", re.I)
_REDACTED = "<redacted>"

_DISCLAIMER_TEXT = (
    "Research use only. This model is not a medical device, has not been validated for clinical "
    "decisions, and must not be used to diagnose, treat or triage patients."
)


@dataclass(frozen=True)
class _Row:
    split: str
    metric: str
    value: float


def template_path(kind: Literal["pretrained", "finetuned"]) -> Path:
    """Path of the packaged template for ``kind`` ("pretrained" or "finetuned")."""
    if kind not in ("pretrained", "finetuned"):
        raise ValueError(f"kind must be 'pretrained' or 'finetuned', got {kind!r}")
    path = TEMPLATES_DIR / f"{kind}.md"
    if not path.is_file():
        raise FileNotFoundError(
            f"model-card template {path} is missing: the package was installed without its "
            "templates (package data); reinstall ecgnat-hf"
        )
    return path


def load_eval_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read an evaluation JSON (``Trainer``'s ``eval_results.json``/``all_results.json`` or our own
    nested ``{split: {metric: value}}`` files). Raises a clear error on a missing or bad file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"evaluation results file not found: {path}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"evaluation results file {path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"evaluation results file {path} must hold a JSON object, got {type(data).__name__}")
    return data


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _split_prefix(key: str) -> tuple[str | None, str]:
    head, sep, rest = key.partition("_")
    if sep and head in _SPLIT_PREFIXES and rest:
        return _SPLIT_PREFIXES[head], rest
    return None, key


def flatten_eval_results(
    eval_results: Mapping[str, Any], default_split: str = "test"
) -> tuple[list[_Row], dict[tuple[str, str], dict[str, float]]]:
    """Turn an evaluation mapping into ``(rows, per_label)``.

    ``rows``: one (split, metric, value) per scalar metric, in the order given.
    ``per_label``: ``{(split, metric): {label: value}}`` for per-class breakdowns.
    Non-numeric entries and bookkeeping entries (runtime, throughput, epoch) are skipped.
    """
    rows: list[_Row] = []
    per_label: dict[tuple[str, str], dict[str, float]] = {}

    def add(split: str, metric: str, value: Any) -> None:
        if _BOOKKEEPING.search(metric):
            return
        if _is_number(value):
            rows.append(_Row(split, metric, float(value)))
        elif isinstance(value, Mapping):
            breakdown = {str(k): float(v) for k, v in value.items() if _is_number(v)}
            if breakdown:
                per_label[(split, metric)] = breakdown

    for key, value in eval_results.items():
        key = str(key)
        if isinstance(value, Mapping) and (_SPLIT_NAME.match(key) or any(isinstance(v, Mapping) for v in value.values())):
            # a split: {metric: value or {label: value}}
            split = _SPLIT_PREFIXES.get(key, key)
            for metric, v in value.items():
                add(split, str(metric), v)
        else:
            # a metric (or a per-label breakdown) of the split named by its prefix, or the default split
            split, metric = _split_prefix(key)
            add(split or default_split, metric, value)
    return rows, per_label


def _metric_id(metric: str) -> str:
    return _METRIC_IDS.get(metric.lower(), metric.lower())


def _pretty_metric(metric: str) -> str:
    words = metric.replace("-", "_").split("_")
    special = {"auroc": "AUROC", "auc": "AUC", "roc": "ROC", "f1": "F1", "mse": "MSE", "mae": "MAE", "auprc": "AUPRC"}
    return " ".join(special.get(w.lower(), w.capitalize() if w.islower() else w) for w in words if w)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "dataset"


def build_eval_results(
    rows: list[_Row],
    *,
    task_type: str,
    task_name: str,
    dataset_type: str,
    dataset_name: str,
    dataset_config: str | None = None,
) -> list[EvalResult]:
    """One ``EvalResult`` per scalar metric, so ``model-index`` mirrors the results table exactly."""
    return [
        EvalResult(
            task_type=task_type,
            task_name=task_name,
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_config=dataset_config,
            dataset_split=row.split,
            metric_type=_metric_id(row.metric),
            metric_name=f"{_pretty_metric(row.metric)} ({row.split})",
            metric_value=row.value,
        )
        for row in rows
    ]


def _fmt(value: float) -> str:
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4f}"
    return f"{value:.4g}"


def _md(text: Any) -> str:
    """Make a value safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _arg_value(v: Any) -> str:
    if isinstance(v, (dict, list, tuple)):
        s = json.dumps(v, default=str)
    else:
        s = str(v)
    return s if len(s) <= 120 else s[:117] + "..."


def _dataset_entries(datasets: list[str | Mapping[str, str]]) -> list[dict[str, str]]:
    out = []
    for d in datasets:
        if isinstance(d, Mapping):
            entry = {"name": str(d.get("name", "unnamed dataset")), "license": str(d.get("license", "not recorded")),
                     "url": str(d.get("url", ""))}
        else:
            known = DATASET_LICENSES.get(_slug(d).replace("ptbxl", "ptb-xl"))
            if known is None:
                key = _slug(d)
                known = next((v for k, v in DATASET_LICENSES.items() if key.startswith(k)), None)
            entry = dict(known) if known else {
                "name": d,
                "license": "not recorded here: check the dataset's own terms before redistributing",
                "url": "",
            }
        out.append(entry)
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _preprocessing_summary(pre: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """Key settings of preprocessor_config.json, whatever the feature extractor calls them."""
    if not pre:
        return []
    keep = []
    for k, v in pre.items():
        if k in ("feature_extractor_type", "processor_class", "auto_map"):
            continue
        keep.append({"key": k, "value": _arg_value(v)})
    return keep


def _threshold_note(info: Mapping[str, Any] | None) -> str:
    """One sentence on how the decision thresholds in config.json were chosen."""
    if not info:
        return ""
    if info.get("rule") == "argmax":
        return "Single-label model: the predicted label is the class with the highest probability."
    if info.get("rule") != "threshold":
        return str(info.get("note", ""))
    if info.get("method") is None:
        return str(info.get("note", ""))
    text = (f"Per-class thresholds ({info['method']}) fitted on the {info.get('split', 'validation')} split "
            f"({info.get('n_examples', '?')} examples) and stored in `config.json` as `decision_thresholds`; "
            "a class is predicted when its probability is at or above its threshold.")
    if info.get("classes_at_default"):
        text += (f" Without positive examples in that split, {', '.join(map(str, info['classes_at_default']))} "
                 f"kept {info.get('default', 0.5):g}.")
    return text


def write_model_card(
    output_dir: str | os.PathLike,
    *,
    kind: Literal["pretrained", "finetuned"],
    model_name: str,
    eval_results: Mapping[str, Any] | None,
    task_name: str,
    dataset_name: str,
    dataset_id: str | None = None,
    command: str,
    training_args: Mapping[str, Any] | None,
    label_names: list[str] | None = None,
    base_model: str | None = None,
    extra_sections: Mapping[str, str] | None = None,
    repo_id: str | None = None,
    training_datasets: list[str | Mapping[str, str]] | None = None,
    model_config: Mapping[str, Any] | None = None,
    preprocessor_config: Mapping[str, Any] | None = None,
    task_type: str | None = None,
    default_split: str = "test",
    license: str = "apache-2.0",
    tags: list[str] | None = None,
) -> Path:
    """Render the model card for a run and write it to ``output_dir/README.md``; return that path.

    Args:
        output_dir: the checkpoint folder (the card is written beside ``config.json``).
        kind: "pretrained" (self-supervised encoder) or "finetuned" (classifier / regressor).
        model_name: name used in the title and in ``model-index``.
        eval_results: evaluation mapping (see the module docstring); None or {} for no results.
        task_name: human name of the evaluated task, e.g. "PTB-XL superdiagnostic".
        dataset_name: human name of the evaluation dataset, e.g. "PTB-XL".
        dataset_id: Hub dataset id, if the data is on the Hub (goes to ``datasets:`` metadata and
            to the model-index dataset type; otherwise a slug of ``dataset_name`` is used there).
        command: the exact command line that produced the results (shown verbatim).
        training_args: the run's hyper-parameters (e.g. ``TrainingArguments.to_dict()``).
        label_names: class names in logit order; read from ``config.json`` ``id2label`` if None.
        base_model: Hub id of the checkpoint this one was fine-tuned from.
        extra_sections: ``{title: markdown}`` appended before the citations.
        repo_id: id shown in the loading snippet (defaults to ``model_name``).
        training_datasets: datasets used for training, names (licences looked up in
            :data:`DATASET_LICENSES`) or ``{"name", "license", "url"}`` mappings; defaults to
            ``[dataset_name]``.
        model_config / preprocessor_config: read from ``output_dir/config.json`` and
            ``output_dir/preprocessor_config.json`` when not given.
        task_type: model-index task type; "time-series-classification" for fine-tuned models,
            "feature-extraction" for pretrained ones by default.
        default_split: split assumed for un-prefixed flat metrics.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if not command or not str(command).strip():
        raise ValueError("command must be the exact command line that produced the results")
    tpl = template_path(kind)

    if model_config is None:
        model_config = _read_json(output_dir / "config.json")
    if preprocessor_config is None:
        preprocessor_config = _read_json(output_dir / "preprocessor_config.json")
    if label_names is None and model_config and isinstance(model_config.get("id2label"), Mapping):
        id2label = model_config["id2label"]
        label_names = [str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k))]

    rows, per_label = flatten_eval_results(eval_results or {}, default_split=default_split)
    if task_type is None:
        task_type = "time-series-classification" if kind == "finetuned" else "feature-extraction"
    dataset_type = dataset_id or _slug(dataset_name)
    results = build_eval_results(
        rows, task_type=task_type, task_name=task_name, dataset_type=dataset_type, dataset_name=dataset_name
    )

    card_tags = ["ecg", "electrocardiogram", "ecgnat", "time-series", "medical", "research-only"]
    card_tags += [t for t in (tags or []) if t not in card_tags]
    card_data = ModelCardData(
        model_name=model_name,
        eval_results=results or None,
        license=license,
        library_name="transformers",
        base_model=base_model,
        datasets=[dataset_id] if dataset_id else None,
        pipeline_tag="feature-extraction" if kind == "pretrained" else None,
        tags=card_tags,
    )

    label_rows = []
    for (split, metric), breakdown in per_label.items():
        for label, value in breakdown.items():
            label_rows.append({"split": split, "metric": _pretty_metric(metric), "label": _md(label), "value": _fmt(value)})

    card = ModelCard.from_template(
        card_data,
        template_path=str(tpl),
        model_name=model_name,
        repo_id=repo_id or model_name,
        kind=kind,
        task_name=task_name,
        dataset_name=dataset_name,
        command=str(command).strip(),
        disclaimer=_DISCLAIMER_TEXT,
        results_rows=[
            {"split": r.split, "metric": _pretty_metric(r.metric), "metric_id": _metric_id(r.metric), "value": _fmt(r.value)}
            for r in rows
        ],
        label_rows=label_rows,
        label_names=[_md(x) for x in (label_names or [])],
        training_datasets=_dataset_entries(training_datasets or [dataset_name]),
        training_args=[{"key": _md(k), "value": _md(_REDACTED if _SECRET.search(str(k)) else _arg_value(v))}
                       for k, v in sorted((training_args or {}).items())
                       if v is not None and v != "" and v != [] and v != {}],
        model_config_json=json.dumps(dict(model_config), indent=2, sort_keys=True, default=str) if model_config else "",
        preprocessing=[{"key": _md(d["key"]), "value": _md(d["value"])} for d in _preprocessing_summary(preprocessor_config)],
        sampling_rate=(preprocessor_config or {}).get("sampling_rate"),
        model_type=(model_config or {}).get("model_type"),
        problem_type=(model_config or {}).get("problem_type"),
        extra_sections=[{"title": t, "body": b} for t, b in (extra_sections or {}).items()],
        decision_thresholds=[{"label": _md(k), "value": f"{float(v):.4f}"}
                             for k, v in ((model_config or {}).get("decision_thresholds") or {}).items()],
        decision_info=_threshold_note((model_config or {}).get("decision_threshold_info")),
    )

    # write to a temporary name and rename, so a crash never leaves a half-written README.md
    target = output_dir / "README.md"
    fd, tmp = tempfile.mkstemp(prefix=".README.", suffix=".md.tmp", dir=output_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(str(card))
            if not str(card).endswith("\n"):
                f.write("\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
