"""The model families, side by side, each a flat folder as transformers lays out its models:

* ``ecgnat/``: ECG-NAT, the lead-agnostic neighborhood-attention transformer (``configuration_ecgnat``,
  ``modeling_ecgnat``, ``neighborhood_attention``, ``feature_extraction_ecgnat``, and ``pipeline_ecgnat``: the
  ``"ecg-classification"`` / ``"ecg-feature-extraction"`` pipelines, which a saved pipeline carries too);
* ``beatnet/``: BEAT-Net, heartbeats as tokens (``configuration_beatnet``, ``modeling_beatnet``, ``qrs``,
  ``feature_extraction_beatnet``);
* ``resnet1d/``: the 1-D ResNet comparison baseline (``configuration_resnet1d``, ``modeling_resnet1d``; it uses
  ECG-NAT's feature extractor).

The files of a family are what its checkpoints carry as remote code: they import torch, transformers, numpy and
scipy, and each other only with single-dot relative imports inside the family folder, so
``from_pretrained(..., trust_remote_code=True)`` works where ``ecgnat_hf`` is not installed. Each family's
``__init__`` re-exports its classes and has a ``register_<family>()`` for the transformers Auto classes (the
package ``__init__`` calls them all).
"""
