"""BEAT-Net: QRS tokenization into heartbeats, a beat morphology encoder, a lead-normalising spatial encoder
and a rhythm transformer. Call :func:`register_beatnet` to use it through the transformers Auto classes."""

from .configuration_beatnet import BeatNetConfig
from .feature_extraction_beatnet import BeatNetFeatureExtractor, NoBeatsError
from .modeling_beatnet import (
    BeatNetForSequenceClassification,
    BeatNetForSequenceClassificationOutput,
    BeatNetModel,
    BeatNetModelOutput,
    BeatNetPreTrainedModel,
)
from .qrs import QRS_DEFAULTS, BeatTokens, detect_qrs, match_peaks, qrs_settings, tokenize_batch, tokenize_beats


def register_beatnet() -> None:
    """Register BEAT-Net with AutoConfig / AutoModel / AutoModelForSequenceClassification / AutoFeatureExtractor
    (idempotent), and mark the model classes for remote code: ``save_pretrained`` then writes the full
    ``auto_map`` and copies ``configuration_beatnet.py``, ``modeling_beatnet.py`` and ``qrs.py``; the feature
    extractor copies its own three files (see :class:`BeatNetFeatureExtractor`)."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForSequenceClassification, AutoProcessor

    AutoConfig.register(BeatNetConfig.model_type, BeatNetConfig, exist_ok=True)
    AutoModel.register(BeatNetConfig, BeatNetModel, exist_ok=True)
    AutoModelForSequenceClassification.register(BeatNetConfig, BeatNetForSequenceClassification, exist_ok=True)
    AutoFeatureExtractor.register(BeatNetConfig, BeatNetFeatureExtractor, exist_ok=True)
    # the extractor is BEAT-Net's whole processor (no tokenizer): AutoProcessor then loads it without asking
    # whether to run the checkpoint's remote code
    AutoProcessor.register(BeatNetConfig, BeatNetFeatureExtractor, exist_ok=True)
    BeatNetConfig.register_for_auto_class()
    BeatNetModel.register_for_auto_class("AutoModel")
    BeatNetForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")


__all__ = [
    "BeatNetConfig",
    "BeatNetModel",
    "BeatNetPreTrainedModel",
    "BeatNetForSequenceClassification",
    "BeatNetModelOutput",
    "BeatNetForSequenceClassificationOutput",
    "BeatNetFeatureExtractor",
    "NoBeatsError",
    "BeatTokens",
    "QRS_DEFAULTS",
    "qrs_settings",
    "match_peaks",
    "detect_qrs",
    "tokenize_beats",
    "tokenize_batch",
    "register_beatnet",
]
