"""ecgnat_hf: ECG-NAT, lead-agnostic self-supervised ECG models for the Hugging Face ecosystem.

Importing the package registers every class with the transformers Auto classes, and marks them for
remote code, so ``save_pretrained`` writes checkpoints that load with ``trust_remote_code=True`` on a
machine without this package.
"""

__version__ = "0.1.0"

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
)

from .configuration_ecgnat import CANONICAL_LEADS, PRESETS, ECGNATConfig
from .feature_extraction_ecgnat import ECGNATFeatureExtractor
from .modeling_ecgnat import (
    ECGNATForPreTraining,
    ECGNATForSequenceClassification,
    ECGNATModel,
    ECGNATPreTrainedModel,
)


def _register() -> None:
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


_register()

# The comparison baseline and BEAT-Net register with the Auto classes too, so that their checkpoints load
# through AutoModelForSequenceClassification like ECG-NAT's.
from .beats import register_beatnet  # noqa: E402
from .training.baselines import register_baselines  # noqa: E402

register_baselines()
register_beatnet()

# pipeline("ecg-classification") and pipeline("ecg-feature-extraction")
from .pipeline_ecgnat import register_pipelines  # noqa: E402

register_pipelines()

__all__ = [
    "CANONICAL_LEADS",
    "PRESETS",
    "ECGNATConfig",
    "ECGNATFeatureExtractor",
    "ECGNATModel",
    "ECGNATPreTrainedModel",
    "ECGNATForPreTraining",
    "ECGNATForSequenceClassification",
]
