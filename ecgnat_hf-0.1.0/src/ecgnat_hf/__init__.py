"""ecgnat_hf: ECG-NAT, lead-agnostic self-supervised ECG models for the Hugging Face ecosystem.

Importing the package registers every class with the transformers Auto classes, and marks them for
remote code, so ``save_pretrained`` writes checkpoints that load with ``trust_remote_code=True`` on a
machine without this package.
"""

__version__ = "0.1.0"

# old module paths (ecgnat_hf.modeling_ecgnat, ecgnat_hf.beats, ...) answer with the moved modules
from . import _moved

_moved.install()

from .models.ecgnat import (  # noqa: E402
    CANONICAL_LEADS,
    PRESETS,
    ECGNATConfig,
    ECGNATFeatureExtractor,
    ECGNATForPreTraining,
    ECGNATForSequenceClassification,
    ECGNATModel,
    ECGNATPreTrainedModel,
    register_ecgnat,
)

register_ecgnat()

# The comparison baseline and BEAT-Net register with the Auto classes too, so that their checkpoints load
# through AutoModelForSequenceClassification like ECG-NAT's.
from .models.beatnet import register_beatnet  # noqa: E402
from .models.resnet1d import register_resnet1d  # noqa: E402

register_resnet1d()
register_beatnet()

# pipeline("ecg-classification") and pipeline("ecg-feature-extraction")
from .models.ecgnat.pipeline_ecgnat import register_pipelines  # noqa: E402

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
