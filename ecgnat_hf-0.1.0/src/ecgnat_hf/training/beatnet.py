"""BEAT-Net in the recipes (``--model_type beatnet``): the classifier, its feature extractor, and beat tokens
computed once per prepared split.

The recipes prepare splits as for every model (``input_values`` windows and ``lead_mask``, see
:mod:`ecgnat_hf.training.data`). For BEAT-Net, :func:`beatnet_classifier_and_data` then adds the beat tokens
(``beats``, ``beat_mask``, ``rr``) as dataset columns, with the same detector and settings the model would use
on raw ``input_values``: QRS detection runs once per record, not in every forward pass. Tokens are cached in
memory per split (by the split's fingerprint and the tokenizer settings), so a label-efficiency sweep detects
each record's beats once across arms, fractions and repeats. The collator passes the tokens to the model; when
it hides leads (a lead-subset evaluation), it drops them, so the model finds the beats again on the leads that
remain rather than on leads it is not supposed to see.

Records in which no beat is found keep their example: the model represents them with its learned
empty-sequence token. Their number is logged per split.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["build_beatnet_classifier", "beatnet_feature_extractor", "add_beat_tokens", "beatnet_classifier_and_data"]

_TOKENS: dict[str, Any] = {}

#: preprocessing settings an ECG-NAT extractor hands over to a BEAT-Net one
_PREPROCESSING = ("window_s", "window_stride_s", "mode", "min_length_s", "do_baseline_removal", "baseline_cutoff_hz",
                  "do_bandpass", "bandpass_low", "bandpass_high", "bandpass_order", "scaling", "padding_value",
                  "return_attention_mask")


def build_beatnet_classifier(model_args, prepared, sampling_rate: float, freeze_encoder: bool | None = None):
    """A BEAT-Net classifier with the data's labels: from ``--model_name_or_path`` or new at ``sampling_rate``.

    ``--config_overrides`` (and explicit fields such as ``--classifier_dropout``) that are BEAT-Net config fields
    are applied; others (ECG-NAT-only ones such as ``supcon_weight``) are ignored, as for the ResNet1d baseline.
    """
    from ..models.beatnet import BeatNetConfig, BeatNetForSequenceClassification

    label_kw = dict(num_labels=len(prepared.label_names), problem_type=prepared.problem_type,
                    id2label=prepared.id2label, label2id=prepared.label2id)
    fields = set(BeatNetConfig.__dataclass_fields__)
    over = {k: v for k, v in model_args.overrides().items() if k in fields}
    if model_args.model_name_or_path:
        model = BeatNetForSequenceClassification.from_pretrained(
            model_args.model_name_or_path, ignore_mismatched_sizes=True, **label_kw, **over)
    else:
        over.setdefault("sampling_rate", sampling_rate)
        model = BeatNetForSequenceClassification(BeatNetConfig(**label_kw, **over))
    if float(model.config.sampling_rate) != float(sampling_rate):
        raise ValueError(f"BEAT-Net model works at {model.config.sampling_rate} Hz but the data were prepared at "
                         f"{sampling_rate} Hz: pass --config_overrides sampling_rate={sampling_rate} or prepare at the "
                         "model's rate")
    freeze = model_args.freeze_encoder if freeze_encoder is None else freeze_encoder
    if freeze:
        for p in model.beatnet.parameters():
            p.requires_grad_(False)
    return model


def beatnet_feature_extractor(feature_extractor, config):
    """The BEAT-Net extractor for ``config``: ``feature_extractor`` itself when it is one (checked against the
    config), else a new one with the same preprocessing (an ECG-NAT extractor's window, scaling, filters)."""
    from ..models.beatnet import BeatNetFeatureExtractor

    if isinstance(feature_extractor, BeatNetFeatureExtractor):
        feature_extractor.check_matches(config)
        return feature_extractor
    if float(feature_extractor.sampling_rate) != float(config.sampling_rate) or \
            list(feature_extractor.lead_names) != list(config.lead_names):
        raise ValueError(f"the data were preprocessed at {feature_extractor.sampling_rate} Hz with leads "
                         f"{feature_extractor.lead_names}; the BEAT-Net model takes {config.sampling_rate} Hz and "
                         f"{config.lead_names}")
    kw = {k: getattr(feature_extractor, k) for k in _PREPROCESSING if hasattr(feature_extractor, k)}
    return BeatNetFeatureExtractor.from_model_config(config, **kw)


def _token_key(ds, fe) -> str:
    settings = {k: getattr(fe, k) for k in ("sampling_rate", "lead_names", "beat_window_s", "max_beats", "qrs_settings")}
    return json.dumps([getattr(ds, "_fingerprint", id(ds)), settings], sort_keys=True, default=str)


def _tokenize_split(ds, fe, name: str):
    import datasets

    key = _token_key(ds, fe)
    if key in _TOKENS:
        return _TOKENS[key]
    n_leads = len(fe.lead_names)
    pre, post = fe.beat_window_s
    width = int(round(pre * fe.sampling_rate)) + int(round(post * fe.sampling_rate))
    feats = dict(ds.features)
    feats["beats"] = datasets.Array3D(shape=(None, n_leads, width), dtype="float32")
    feats["beat_mask"] = datasets.List(datasets.Value("bool"))
    feats["rr"] = datasets.Array2D(shape=(None, 2), dtype="float32")
    empty = [0]

    def fn(batch):
        tok = fe.tokenize(np.asarray(batch["input_values"]), np.asarray(batch["lead_mask"]))
        beats, masks, rrs = [], [], []
        for i, k in enumerate(tok["num_beats"].tolist()):
            k = max(1, int(k))  # a record without beats keeps one padding slot (beat_mask False)
            empty[0] += int(tok["num_beats"][i] == 0)
            beats.append(tok["beats"][i, :k])
            masks.append(tok["beat_mask"][i, :k].tolist())
            rrs.append(tok["rr"][i, :k])
        return {"beats": beats, "beat_mask": masks, "rr": rrs}

    src = ds.with_format("numpy")
    out = src.map(fn, batched=True, batch_size=64, features=datasets.Features(feats), keep_in_memory=True,
                  desc=f"BEAT-Net beat tokens ({name})").with_format("torch")
    if empty[0]:
        logger.warning("%s: %d of %d example(s) have no detected beat (flat line, asystole or noise); BEAT-Net "
                       "represents them with its empty-sequence token", name, empty[0], len(ds))
    _TOKENS[key] = out
    return out


def add_beat_tokens(prepared, feature_extractor):
    """``prepared`` with ``beats``/``beat_mask``/``rr`` columns added to every split (cached, see module doc)."""
    splits = {s: _tokenize_split(ds, feature_extractor, s) for s, ds in prepared.splits.items()}
    return replace(prepared, splits=splits)


def beatnet_classifier_and_data(model_args, prepared, feature_extractor):
    """The recipes' BEAT-Net branch: ``(model, BEAT-Net feature extractor, prepared data with beat tokens)``."""
    model = build_beatnet_classifier(model_args, prepared, float(feature_extractor.sampling_rate))
    fe = beatnet_feature_extractor(feature_extractor, model.config)
    return model, fe, add_beat_tokens(prepared, fe)
