"""transformers pipelines for ECG-NAT: ``"ecg-classification"`` and ``"ecg-feature-extraction"``.

Hub-facing module: ``pipe.save_pretrained(folder)`` copies it flat next to the checkpoint and writes
``custom_pipelines`` into ``config.json``, so that on a machine without ``ecgnat_hf``
``pipeline("ecg-classification", model=folder_or_hub_id, trust_remote_code=True)`` builds the same
pipeline from the checkpoint's own code. It imports only numpy, torch and transformers; the package is
used when importable (its record reader and lead selection), and otherwise a record path is read
with ``wfdb``.

One input is one recording, given as any of:

* a record path (WFDB ``.hea`` + signal file, with or without extension; MATLAB ``.mat`` needs the package);
* a dict ``{"array" | "signal": (leads, samples), "sampling_rate": Hz, "lead_names": [...]}``;
* an object with ``.signal``, ``.sampling_rate`` and ``.lead_names`` (``ecgnat_hf.data.ECGRecord``).

A list of inputs gives a list of results. The checkpoint's feature extractor resamples, maps leads,
scales and cuts the recording into windows; each window goes through the model (``model.eval()``,
no masking, no dropout) and the window results are averaged over the recording.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .feature_extraction_ecgnat import LEAD_ALIASES, _squash

try:  # the package, when installed: its record reader (typed errors) and lead selection
    from ecgnat_hf.data.records import read_record as _package_read_record
    from ecgnat_hf.inference import select_leads as _package_select_leads
except ImportError:  # remote code on a machine without ecgnat_hf
    _package_read_record = None
    _package_select_leads = None

CLASSIFICATION_TASK = "ecg-classification"
FEATURE_EXTRACTION_TASK = "ecg-feature-extraction"


def _read_record_without_package(path: str):
    """(signal (leads, samples) float64 in physical units, sampling rate, lead names, record id) via wfdb."""
    try:
        import wfdb
    except ImportError as exc:
        raise ImportError(
            f"reading the record {path} needs ecgnat_hf or wfdb (pip install wfdb); or pass a dict "
            "{'array': ..., 'sampling_rate': ..., 'lead_names': [...]}"
        ) from exc
    base = path[:-4] if path.lower().endswith((".hea", ".dat")) else path
    rec = wfdb.rdrecord(base)
    return rec.p_signal.T.astype(np.float64), float(rec.fs), list(rec.sig_name), os.path.basename(base)


class _ECGPipelineBase(Pipeline):
    """Shared input handling: one recording -> the feature extractor's windows -> the model, window by window."""

    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = True
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.feature_extractor is None:
            raise ValueError(
                f"{type(self).__name__} needs the checkpoint's feature extractor (preprocessor_config.json): "
                "pass feature_extractor=... or a checkpoint that has one"
            )
        self.model.eval()

    # -------------------------------------------------------------------------------- inputs
    def _sanitize_parameters(self, lead_names=None, window_batch_size=None, **kwargs):
        preprocess = {} if lead_names is None else {"lead_names": lead_names}
        forward = {} if window_batch_size is None else {"window_batch_size": int(window_batch_size)}
        return preprocess, forward, kwargs

    def _signal(self, inputs, lead_names):
        """(signal, sampling rate, lead names, ignore_unknown_leads, record id) of one input."""
        if isinstance(inputs, (str, os.PathLike)):
            path = os.fspath(inputs)
            if _package_read_record is not None:
                inputs = _package_read_record(path)
            else:
                signal, fs, names, record_id = _read_record_without_package(path)
                if lead_names is not None:  # the leads to use, by name (aliases match: II finds MLII)
                    wanted = {LEAD_ALIASES.get(_squash(x)) for x in lead_names} - {None}
                    keep = [i for i, n in enumerate(names) if LEAD_ALIASES.get(_squash(n)) in wanted]
                    if not keep:
                        raise ValueError(f"{path}: none of the requested leads {lead_names} is in the record ({names})")
                    signal, names = signal[keep], [names[i] for i in keep]
                return signal, fs, names, True, record_id
        if isinstance(inputs, dict):
            unknown = set(inputs) - {"array", "signal", "sampling_rate", "lead_names", "record_id"}
            if unknown:
                raise ValueError(f"unexpected keys {sorted(unknown)} in the input dict; expected array (or signal), "
                                 "sampling_rate, lead_names and optionally record_id")
            signal = inputs.get("array", inputs.get("signal"))
            if signal is None or "sampling_rate" not in inputs:
                raise ValueError("an input dict needs 'array' (leads, samples) and 'sampling_rate' (Hz)")
            names = lead_names if lead_names is not None else inputs.get("lead_names")
            return signal, inputs["sampling_rate"], names, False, inputs.get("record_id")
        if hasattr(inputs, "signal") and hasattr(inputs, "sampling_rate"):
            record_id = getattr(inputs, "record_id", None)
            if _package_select_leads is not None and hasattr(inputs, "path"):
                signal, names, _ = _package_select_leads(inputs, lead_names, self.feature_extractor.lead_names)
                return signal, inputs.sampling_rate, names, False, record_id
            names = lead_names if lead_names is not None else getattr(inputs, "lead_names", None)
            return inputs.signal, inputs.sampling_rate, names, lead_names is None, record_id
        raise TypeError(
            f"{type(self).__name__} takes a record path, a dict {{'array', 'sampling_rate', 'lead_names'}} or an "
            f"object with .signal/.sampling_rate/.lead_names (ECGRecord); got {type(inputs).__name__}"
        )

    def preprocess(self, inputs, lead_names=None):
        if isinstance(lead_names, str):
            lead_names = [x for x in lead_names.replace(";", ",").split(",") if x.strip()]
        signal, fs, names, ignore_unknown, record_id = self._signal(inputs, lead_names)
        features = self.feature_extractor(
            signal, sampling_rate=fs, lead_names=names, ignore_unknown_leads=ignore_unknown, return_tensors="pt"
        )
        return {
            "input_values": features["input_values"].to(self.dtype or torch.float32),
            "lead_mask": features["lead_mask"],
            "window_start": features["window_start"],
            "record_id": record_id,
        }

    def _forward(self, model_inputs, window_batch_size: int = 64):
        values, mask = model_inputs["input_values"], model_inputs["lead_mask"]
        logits, pooled = [], []
        for i in range(0, values.shape[0], window_batch_size):
            out = self.model(input_values=values[i : i + window_batch_size], lead_mask=mask[i : i + window_batch_size],
                             return_dict=True)
            if getattr(out, "logits", None) is not None:
                logits.append(out.logits.float())
            pooled.append(out.pooler_output.float())
        return {
            "logits": torch.cat(logits) if logits else None,
            "pooler_output": torch.cat(pooled),
            "window_start": model_inputs["window_start"],
            "record_id": model_inputs["record_id"],
        }

    # -------------------------------------------------------------------------------- saving
    def save_pretrained(self, save_directory, **kwargs):
        """Save model, feature extractor and this module; ``config.json`` then declares both ECG pipelines."""
        super().save_pretrained(save_directory, **kwargs)
        entries = {
            CLASSIFICATION_TASK: {"impl": f"{__name__.split('.')[-1]}.ECGClassificationPipeline",
                                  "pt": ["AutoModelForSequenceClassification"]},
            FEATURE_EXTRACTION_TASK: {"impl": f"{__name__.split('.')[-1]}.ECGFeatureExtractionPipeline",
                                      "pt": ["AutoModel"]},
        }
        if getattr(self.model, "classifier", None) is None:  # an encoder-only checkpoint cannot classify
            entries.pop(CLASSIFICATION_TASK)
        path = os.path.join(os.fspath(save_directory), "config.json")
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        config["custom_pipelines"] = entries
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
        self.model.config.custom_pipelines = entries


class ECGClassificationPipeline(_ECGPipelineBase):
    """Class scores of one recording, averaged over its windows, with the decision of each class.

    Returns a list of ``{"label", "score", "threshold", "positive"}`` sorted by score (highest first).
    ``score`` is the probability: sigmoid for multi-label models, softmax for single-label ones (as
    transformers' text-classification pipeline does), computed per window and then averaged.
    ``positive`` applies the decision rule: multi-label, ``score >= threshold`` with the per-class
    thresholds saved in ``config.decision_thresholds`` (0.5 where there are none); single-label, the
    arg-max class (``threshold`` is then ``None``).

    Call arguments: ``top_k`` (keep the k best; default all classes), ``threshold`` (a number for every
    class or a ``{label: value}`` dict, overriding the saved ones), ``function_to_apply``
    (``"sigmoid"``, ``"softmax"``, ``"none"``), ``aggregate`` (``"mean"`` or ``"max"`` over windows),
    ``lead_names`` (leads to use), ``window_batch_size`` (windows per forward pass, default 64).
    """

    def _sanitize_parameters(self, top_k=None, threshold=None, function_to_apply=None, aggregate=None, **kwargs):
        preprocess, forward, rest = super()._sanitize_parameters(**kwargs)
        if rest:
            raise TypeError(f"unexpected arguments: {', '.join(rest)}")
        post = {}
        if top_k is not None:
            if int(top_k) < 1:
                raise ValueError(f"top_k must be >= 1, got {top_k}")
            post["top_k"] = int(top_k)
        if threshold is not None:
            post["threshold"] = threshold
        if function_to_apply is not None:
            post["function_to_apply"] = function_to_apply
        if aggregate is not None:
            if aggregate not in ("mean", "max"):
                raise ValueError(f"aggregate must be 'mean' or 'max', got {aggregate!r}")
            post["aggregate"] = aggregate
        return preprocess, forward, post

    @property
    def labels(self) -> list[str]:
        id2label = self.model.config.id2label or {}
        n = int(self.model.config.num_labels)
        return [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(n)]

    def _is_single_label(self, function_to_apply) -> bool:
        if function_to_apply is not None:
            return function_to_apply == "softmax"
        return self.model.config.problem_type == "single_label_classification"

    def thresholds(self, override=None) -> list[float]:
        """Per-class decision thresholds: ``override`` (a number or {label: value}), else
        ``config.decision_thresholds`` ({label: value} or a list in label order), else 0.5."""
        labels = self.labels
        source = override if override is not None else getattr(self.model.config, "decision_thresholds", None)
        if source is None:
            return [0.5] * len(labels)
        if isinstance(source, (int, float)) and not isinstance(source, bool):
            return [float(source)] * len(labels)
        if isinstance(source, dict):
            unknown = [k for k in source if str(k) not in labels]
            if unknown:
                raise ValueError(f"thresholds for unknown labels {unknown}; the model's labels are {labels}")
            return [float(source.get(label, 0.5)) for label in labels]
        values = [float(v) for v in source]
        if len(values) != len(labels):
            raise ValueError(f"{len(values)} thresholds for {len(labels)} labels ({labels})")
        return values

    def postprocess(self, model_outputs, top_k=None, threshold=None, function_to_apply=None, aggregate="mean"):
        logits = model_outputs["logits"]
        if logits is None:
            raise ValueError("this checkpoint has no classification head; use the ecg-feature-extraction pipeline")
        single = self._is_single_label(function_to_apply)
        fn = function_to_apply or ("softmax" if single else "sigmoid")
        if fn == "sigmoid":
            probs = torch.sigmoid(logits.double())
        elif fn == "softmax":
            probs = torch.softmax(logits.double(), dim=-1)
        elif fn == "none":
            probs = logits.double()
        else:
            raise ValueError(f"function_to_apply must be 'sigmoid', 'softmax' or 'none', got {fn!r}")
        windows = np.zeros(probs.shape[0], dtype=np.int64)  # every window belongs to this one recording
        scores = self.feature_extractor.aggregate(probs, windows, n_records=1, reduce=aggregate)[0]
        labels = self.labels
        if single:
            best = int(scores.argmax())
            rows = [{"label": label, "score": float(s), "threshold": None, "positive": i == best}
                    for i, (label, s) in enumerate(zip(labels, scores))]
        else:
            rows = [{"label": label, "score": float(s), "threshold": t, "positive": bool(float(s) >= t)}
                    for label, s, t in zip(labels, scores, self.thresholds(threshold))]
        rows.sort(key=lambda r: -r["score"])
        return rows[:top_k] if top_k is not None else rows


class ECGFeatureExtractionPipeline(_ECGPipelineBase):
    """Embedding of one recording: ``{"embedding": (hidden_size,) float32, "n_windows": int}``.

    Pooling: each window's embedding is the model's ``pooler_output``, the mean of the final-stage
    tokens that cover real samples (the features the classification head reads); the recording's
    embedding is the mean over its windows. ``per_window=True`` adds ``window_embeddings``
    (windows, hidden_size) and ``window_start_s`` (windows,). Works with pretraining and fine-tuned
    checkpoints alike (the encoder is loaded with ``AutoModel``).
    """

    def _sanitize_parameters(self, per_window=None, **kwargs):
        preprocess, forward, rest = super()._sanitize_parameters(**kwargs)
        if rest:
            raise TypeError(f"unexpected arguments: {', '.join(rest)}")
        return preprocess, forward, ({} if per_window is None else {"per_window": bool(per_window)})

    def postprocess(self, model_outputs, per_window: bool = False):
        windows = model_outputs["pooler_output"].numpy().astype(np.float32)
        record = self.feature_extractor.aggregate(windows, np.zeros(len(windows), dtype=np.int64), n_records=1)[0]
        out: dict[str, Any] = {"embedding": record.astype(np.float32),
                               "n_windows": int(windows.shape[0])}
        if per_window:
            out["window_embeddings"] = windows
            out["window_start_s"] = model_outputs["window_start"].numpy()
        return out


def register_pipelines() -> None:
    """Make ``pipeline("ecg-classification")`` and ``pipeline("ecg-feature-extraction")`` known to transformers."""
    PIPELINE_REGISTRY.register_pipeline(
        CLASSIFICATION_TASK, pipeline_class=ECGClassificationPipeline, pt_model=AutoModelForSequenceClassification
    )
    PIPELINE_REGISTRY.register_pipeline(
        FEATURE_EXTRACTION_TASK, pipeline_class=ECGFeatureExtractionPipeline, pt_model=AutoModel
    )


__all__ = [
    "CLASSIFICATION_TASK",
    "FEATURE_EXTRACTION_TASK",
    "ECGClassificationPipeline",
    "ECGFeatureExtractionPipeline",
    "register_pipelines",
]
