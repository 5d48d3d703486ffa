"""Layer-wise learning-rate decay (LLRD) for fine-tuning a pretrained ECG-NAT encoder.

The usual practice after masked-autoencoder pretraining (BEiT, MAE): the head and the top encoder layer learn at
the full rate, and every layer below learns ``layer_decay`` times slower than the one above it, so that the
general features of the lower layers move least. ``layer_decay=1`` is plain fine-tuning.

Layers are counted the way the encoder runs: 0 is the stem (lead-wise convolutions and lead fusion), 1 to L are the
transformer layers in order (a stage's downsampling and position convolution go with its first layer), and L + 1 is
everything after the encoder (final norm, classifier, projection head).
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

from transformers import Trainer

__all__ = ["layer_index", "layerwise_lr_param_groups", "LayerDecayTrainer"]

_STAGE = re.compile(r"(?:^|\.)stages\.(\d+)\.(?:layers\.(\d+)\.)?")


def layer_index(name: str, depths: Sequence[int]) -> int:
    """The LLRD layer of parameter ``name`` in an ECG-NAT model whose stages have ``depths`` layers."""
    n_layers = int(sum(depths))
    m = _STAGE.search(name)
    if m:
        stage, layer = int(m.group(1)), int(m.group(2) or 0)
        return int(sum(depths[:stage])) + layer + 1
    if ".stem." in f".{name}" or name.split(".")[-1] in ("lead_embeddings", "mask_token"):
        return 0
    return n_layers + 1


def layerwise_lr_param_groups(model, learning_rate: float, weight_decay: float, layer_decay: float,
                              decay_parameter_names: Iterable[str] | None = None) -> list[dict]:
    """Optimizer parameter groups with ``lr = learning_rate * layer_decay ** (L + 1 - layer)``.

    ``decay_parameter_names``: the parameters that get ``weight_decay`` (the Trainer's rule: not biases or norms);
    None applies it to every parameter. Frozen parameters are left out. Only ECG-NAT models have layers to count;
    other models raise ``ValueError``."""
    if not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay!r}")
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "ecgnat":
        raise ValueError(f"layer-wise learning-rate decay needs an ECG-NAT model, got "
                         f"{getattr(config, 'model_type', type(model).__name__)!r}")
    depths = list(config.depths)
    top = sum(depths) + 1
    decay = None if decay_parameter_names is None else set(decay_parameter_names)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer = layer_index(name, depths)
        wd = decay is None or name in decay
        g = groups.setdefault((layer, wd), {"params": [], "names": [], "layer": layer,
                                            "lr": learning_rate * layer_decay ** (top - layer),
                                            "weight_decay": weight_decay if wd else 0.0})
        g["params"].append(p)
        g["names"].append(name)
    return [groups[k] for k in sorted(groups)]


class LayerDecayTrainer(Trainer):
    """``transformers.Trainer`` whose optimizer uses :func:`layerwise_lr_param_groups` when ``layer_decay < 1``.

    Everything else (optimizer class and its arguments from ``TrainingArguments``, the learning-rate schedule,
    which scales each group's rate) is the Trainer's own."""

    def __init__(self, *args, layer_decay: float = 1.0, **kwargs):
        if not 0 < layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay!r}")
        super().__init__(*args, **kwargs)
        self.layer_decay = float(layer_decay)

    def create_optimizer(self, *args, **kwargs):
        if self.layer_decay >= 1 or self.optimizer is not None:
            return super().create_optimizer(*args, **kwargs)
        groups = layerwise_lr_param_groups(self.model, self.args.learning_rate, self.args.weight_decay,
                                           self.layer_decay, self.get_decay_parameter_names(self.model))
        for g in groups:
            g.pop("names")
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer
