"""A small 1-D ResNet baseline for multi-lead ECG classification, as a transformers model.

Modelled on ``resnet1d_wang`` from the PTB-XL benchmark (Strodthoff et al. 2020; Wang et al. 2017):
a wide convolutional stem, a few residual blocks of two convolutions each (kernel sizes 5 and 3 by
default), concatenated global average + max pooling and a linear head. On PTB-XL it reaches macro
AUROC around .93 on the superdiagnostic task, which makes it the reference point every ECG-NAT
number should be compared against (see ``notes/anchors.md``).

It is a plain ``PreTrainedModel``, so it trains with ``transformers.Trainer``, saves with
``save_pretrained`` and loads with ``AutoModelForSequenceClassification`` once
:func:`~ecgnat_hf.models.resnet1d.register_resnet1d` has run (the package ``__init__`` calls it).

Inputs follow the ECG-NAT conventions: ``input_values`` of shape (batch, leads, samples) in the
canonical lead order, and an optional ``lead_mask`` (batch, leads) marking the leads that were
recorded; absent leads are zeroed before the first convolution, never imputed.

Hub-facing module: a checkpoint saved for the hub carries it flat with ``configuration_resnet1d.py`` (its only
relative import); it imports torch and transformers besides.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

from .configuration_resnet1d import _PROBLEM_TYPES, ResNet1dConfig

__all__ = [
    "ResNet1dPreTrainedModel",
    "ResNet1dModel",
    "ResNet1dForSequenceClassification",
]


class _ConvBNAct(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, act: bool = True):
        layers = [
            nn.Conv1d(in_ch, out_ch, kernel_size, stride=stride, padding=(kernel_size - 1) // 2, bias=False),
            nn.BatchNorm1d(out_ch),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResNet1dBlock(nn.Module):
    """Residual block: conv-BN-ReLU ... conv-BN, plus identity (or 1x1 conv-BN projection), ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, kernel_sizes: list[int]):
        super().__init__()
        convs = []
        for i, k in enumerate(kernel_sizes):
            last = i == len(kernel_sizes) - 1
            convs.append(_ConvBNAct(in_ch if i == 0 else out_ch, out_ch, k, stride if i == 0 else 1, act=not last))
        self.convs = nn.Sequential(*convs)
        if stride != 1 or in_ch != out_ch:
            self.shortcut = _ConvBNAct(in_ch, out_ch, 1, stride, act=False)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convs(x)
        res = self.shortcut(x)
        # "same" padding with even kernels or odd lengths may leave one sample of difference
        n = min(out.shape[-1], res.shape[-1])
        return F.relu(out[..., :n] + res[..., :n])


class ResNet1dPreTrainedModel(PreTrainedModel):
    """Base class of the ResNet1d comparison baseline: configuration class and weight initialisation."""

    config: ResNet1dConfig
    config_class = ResNet1dConfig
    base_model_prefix = "resnet1d"
    main_input_name = "input_values"
    input_modalities = "audio"  # closest built-in modality for 1-D signals
    supports_gradient_checkpointing = False
    _no_split_modules = ["ResNet1dBlock"]
    # The model computes its own mean loss: Trainer must not pass num_items_in_batch
    # (otherwise the loss is not divided by gradient-accumulation steps).
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, nn.Conv1d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm1d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            if getattr(module, "num_batches_tracked", None) is not None:
                init.zeros_(module.num_batches_tracked)


def _apply_lead_mask(input_values: torch.Tensor, lead_mask: torch.Tensor | None, num_leads: int) -> torch.Tensor:
    if input_values.dim() != 3:
        raise ValueError(
            f"input_values must have shape (batch, leads, samples), got {tuple(input_values.shape)}"
        )
    if input_values.shape[1] != num_leads:
        raise ValueError(
            f"input_values has {input_values.shape[1]} leads but the model expects {num_leads} "
            "(config.num_leads); map leads to the canonical order and zero-fill absent ones with a lead_mask"
        )
    if lead_mask is None:
        return input_values
    if lead_mask.shape != input_values.shape[:2]:
        raise ValueError(
            f"lead_mask must have shape (batch, leads) = {tuple(input_values.shape[:2])}, got {tuple(lead_mask.shape)}"
        )
    return input_values * lead_mask.to(dtype=input_values.dtype)[..., None]


class ResNet1dModel(ResNet1dPreTrainedModel):
    """Stem + residual blocks + concatenated average/max pooling. ``pooler_output``: (batch, 2 * C)."""

    def __init__(self, config: ResNet1dConfig):
        super().__init__(config)
        self.stem = _ConvBNAct(config.num_leads, config.stem_hidden_size, config.stem_kernel_size, config.stem_stride)
        blocks = []
        in_ch = config.stem_hidden_size
        for out_ch, stride in zip(config.hidden_sizes, config.block_strides):
            blocks.append(ResNet1dBlock(in_ch, out_ch, stride, config.block_kernel_sizes))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        lead_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        x = _apply_lead_mask(input_values, lead_mask, self.config.num_leads)
        x = self.stem(x)
        hidden_states = (x,) if output_hidden_states else None
        for block in self.blocks:
            x = block(x)
            if output_hidden_states:
                hidden_states = hidden_states + (x,)
        pooled = torch.cat([x.mean(dim=-1), x.amax(dim=-1)], dim=-1)
        if not return_dict:
            return tuple(v for v in (x, pooled, hidden_states) if v is not None)
        return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=pooled, hidden_states=hidden_states)


class ResNet1dForSequenceClassification(ResNet1dPreTrainedModel):
    """resnet1d_wang-style classifier: :class:`ResNet1dModel`, BatchNorm, dropout, linear head.

    ``forward(input_values, lead_mask=None, labels=None, return_dict=None)`` returns a
    ``SequenceClassifierOutput`` whose ``loss`` (when ``labels`` are given) follows
    ``config.problem_type``: cross-entropy for single-label (labels: long, shape (batch,)),
    BCE-with-logits for multi-label (labels: float multi-hot, (batch, num_labels)), MSE for
    regression. With ``problem_type=None`` it is inferred from ``num_labels`` and the label dtype
    exactly as transformers' built-in heads do, and written to the config.
    """

    def __init__(self, config: ResNet1dConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.resnet1d = ResNet1dModel(config)
        feat = 2 * config.hidden_sizes[-1]
        self.head_norm = nn.BatchNorm1d(feat)
        self.dropout = nn.Dropout(config.head_dropout)
        self.classifier = nn.Linear(feat, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        lead_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.resnet1d(
            input_values, lead_mask=lead_mask, output_hidden_states=output_hidden_states, return_dict=True
        )
        logits = self.classifier(self.dropout(self._normalize(outputs.pooler_output)))

        loss = None
        if labels is not None:
            loss = self._loss(logits, labels.to(logits.device))

        if not return_dict:
            out = (logits,) + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
            return ((loss,) + out) if loss is not None else out
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)

    def _normalize(self, pooled: torch.Tensor) -> torch.Tensor:
        """The head's BatchNorm. A training batch of one example (the last batch of a dataset whose size
        is 1 more than a multiple of the batch size) has no batch statistics: it is normalised with the
        running statistics instead of failing, and they are left unchanged."""
        if self.training and pooled.shape[0] == 1:
            n = self.head_norm
            return F.batch_norm(pooled, n.running_mean, n.running_var, n.weight, n.bias, training=False, eps=n.eps)
        return self.head_norm(pooled)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif self.num_labels > 1 and labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        pt = self.config.problem_type
        if pt == "regression":
            if self.num_labels == 1:
                return F.mse_loss(logits.squeeze(-1), labels.reshape(logits.shape[0]).to(logits.dtype))
            return F.mse_loss(logits, labels.to(logits.dtype))
        if pt == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1).long())
        if pt == "multi_label_classification":
            if labels.shape != logits.shape:
                raise ValueError(
                    f"multi-label labels must be multi-hot of shape {tuple(logits.shape)}, got {tuple(labels.shape)}"
                )
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        raise ValueError(f"unknown problem_type {pt!r}; expected one of {_PROBLEM_TYPES}")
