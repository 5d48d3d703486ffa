"""The 1-D ResNet comparison baseline (``resnet1d_wang`` of the PTB-XL benchmark). Call
:func:`register_resnet1d` to use it through the transformers Auto classes; its checkpoints use ECG-NAT's
feature extractor."""

from .configuration_resnet1d import ResNet1dConfig
from .modeling_resnet1d import ResNet1dForSequenceClassification, ResNet1dModel, ResNet1dPreTrainedModel


def register_resnet1d() -> None:
    """Register the baseline with AutoConfig / AutoModel / AutoModelForSequenceClassification.

    Safe to call more than once. Remote code is set up when a checkpoint is saved for the hub
    (:func:`ecgnat_hf.training.hub.save_hub_ready`).
    """
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    AutoConfig.register(ResNet1dConfig.model_type, ResNet1dConfig, exist_ok=True)
    AutoModel.register(ResNet1dConfig, ResNet1dModel, exist_ok=True)
    AutoModelForSequenceClassification.register(ResNet1dConfig, ResNet1dForSequenceClassification, exist_ok=True)


#: the name it had in ``ecgnat_hf.training.baselines``
register_baselines = register_resnet1d

__all__ = [
    "ResNet1dConfig",
    "ResNet1dPreTrainedModel",
    "ResNet1dModel",
    "ResNet1dForSequenceClassification",
    "register_resnet1d",
    "register_baselines",
]
