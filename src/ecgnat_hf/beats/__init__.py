"""BEAT-Net: QRS tokenization into heartbeats, a beat morphology encoder, a lead-normalising spatial encoder
and a rhythm transformer. Call :func:`register_beatnet` to use it through the transformers Auto classes."""

from .configuration_beatnet import BeatNetConfig
from .modeling_beatnet import (
    BeatNetForSequenceClassification,
    BeatNetForSequenceClassificationOutput,
    BeatNetModel,
    BeatNetModelOutput,
    BeatNetPreTrainedModel,
)
from .qrs import BeatTokens, detect_qrs, tokenize_batch, tokenize_beats


def register_beatnet() -> None:
    """Register BeatNet with AutoConfig / AutoModel / AutoModelForSequenceClassification (idempotent)."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    AutoConfig.register(BeatNetConfig.model_type, BeatNetConfig, exist_ok=True)
    AutoModel.register(BeatNetConfig, BeatNetModel, exist_ok=True)
    AutoModelForSequenceClassification.register(BeatNetConfig, BeatNetForSequenceClassification, exist_ok=True)


__all__ = [
    "BeatNetConfig",
    "BeatNetModel",
    "BeatNetPreTrainedModel",
    "BeatNetForSequenceClassification",
    "BeatNetModelOutput",
    "BeatNetForSequenceClassificationOutput",
    "BeatTokens",
    "detect_qrs",
    "tokenize_beats",
    "tokenize_batch",
    "register_beatnet",
]
