"""ECG-NAT: a per-lead convolutional stem, lead fusion over the present leads and stages of neighborhood
attention. Call :func:`register_ecgnat` to use it through the transformers Auto classes."""

from .configuration_ecgnat import CANONICAL_LEADS, PRESETS, ECGNATConfig
from .feature_extraction_ecgnat import ECGNATFeatureExtractor
from .modeling_ecgnat import (
    ECGNATForPreTraining,
    ECGNATForSequenceClassification,
    ECGNATModel,
    ECGNATPreTrainedModel,
)


def register_ecgnat() -> None:
    """Register ECG-NAT with AutoConfig / AutoModel / AutoModelForPreTraining / AutoModelForSequenceClassification /
    AutoFeatureExtractor (idempotent), and mark every class for remote code, so ``save_pretrained`` writes the full
    ``auto_map`` and copies the family's files next to the checkpoint."""
    from transformers import (
        AutoConfig,
        AutoFeatureExtractor,
        AutoModel,
        AutoModelForPreTraining,
        AutoModelForSequenceClassification,
    )

    AutoConfig.register(ECGNATConfig.model_type, ECGNATConfig, exist_ok=True)
    AutoModel.register(ECGNATConfig, ECGNATModel, exist_ok=True)
    AutoModelForPreTraining.register(ECGNATConfig, ECGNATForPreTraining, exist_ok=True)
    AutoModelForSequenceClassification.register(ECGNATConfig, ECGNATForSequenceClassification, exist_ok=True)
    AutoFeatureExtractor.register(ECGNATConfig, ECGNATFeatureExtractor, exist_ok=True)
    ECGNATConfig.register_for_auto_class()
    ECGNATModel.register_for_auto_class("AutoModel")
    ECGNATForPreTraining.register_for_auto_class("AutoModelForPreTraining")
    ECGNATForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
    ECGNATFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")


__all__ = [
    "CANONICAL_LEADS",
    "PRESETS",
    "ECGNATConfig",
    "ECGNATFeatureExtractor",
    "ECGNATModel",
    "ECGNATPreTrainedModel",
    "ECGNATForPreTraining",
    "ECGNATForSequenceClassification",
    "register_ecgnat",
]
