"""Configuration of the 1-D ResNet comparison baseline (:class:`ResNet1dConfig`).

Hub-facing module: copied flat next to saved checkpoints with ``modeling_resnet1d.py`` and loaded with
``trust_remote_code=True`` where ``ecgnat_hf`` is not installed, so it imports only transformers.
"""
from __future__ import annotations

from transformers import PreTrainedConfig

__all__ = ["ResNet1dConfig"]

_PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


class ResNet1dConfig(PreTrainedConfig):
    r"""Configuration of :class:`ResNet1dForSequenceClassification`.

    Args:
        num_leads: number of input channels (leads), 12 for the standard ECG.
        stem_hidden_size: channels of the stem convolution.
        stem_kernel_size: kernel of the stem convolution (samples).
        stem_stride: stride of the stem convolution.
        hidden_sizes: channels of each residual block; one entry per block.
        block_strides: stride of each residual block (applied in its first convolution); one entry
            per block, same length as ``hidden_sizes``.
        block_kernel_sizes: kernel sizes of the convolutions inside a block (one block = one
            convolution per entry), ``(5, 3)`` as in resnet1d_wang.
        head_dropout: dropout before the final linear layer.
        initializer_range: kept for transformers' generic initialisation helpers.

    The usual classification fields of ``PreTrainedConfig`` apply: ``num_labels`` / ``id2label`` /
    ``label2id`` and ``problem_type`` (``"single_label_classification"``,
    ``"multi_label_classification"``, ``"regression"``, or None to infer it from the labels the way
    transformers' own heads do).
    """

    model_type = "ecgnat-resnet1d"

    num_leads: int = 12
    stem_hidden_size: int = 128
    stem_kernel_size: int = 7
    stem_stride: int = 1
    hidden_sizes: list[int] | tuple[int, ...] = (128, 128, 128)
    block_strides: list[int] | tuple[int, ...] = (1, 2, 2)
    block_kernel_sizes: list[int] | tuple[int, ...] = (5, 3)
    head_dropout: float = 0.25
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        # JSON round trips turn tuples into lists: normalise so saved and loaded configs compare equal.
        self.hidden_sizes = [int(x) for x in self.hidden_sizes]
        self.block_strides = [int(x) for x in self.block_strides]
        self.block_kernel_sizes = [int(x) for x in self.block_kernel_sizes]
        if self.num_leads < 1:
            raise ValueError(f"num_leads must be >= 1, got {self.num_leads}")
        if not self.hidden_sizes:
            raise ValueError("hidden_sizes must name at least one residual block")
        if len(self.block_strides) != len(self.hidden_sizes):
            raise ValueError(
                f"block_strides has {len(self.block_strides)} entries but hidden_sizes has "
                f"{len(self.hidden_sizes)}: give one stride per residual block"
            )
        for name in ("stem_hidden_size", "stem_kernel_size", "stem_stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if any(x < 1 for x in self.hidden_sizes + self.block_strides + self.block_kernel_sizes):
            raise ValueError(
                "hidden_sizes, block_strides and block_kernel_sizes must be positive integers, got "
                f"{self.hidden_sizes}, {self.block_strides}, {self.block_kernel_sizes}"
            )
        if not self.block_kernel_sizes:
            raise ValueError("block_kernel_sizes must have at least one entry")
        if not 0.0 <= self.head_dropout < 1.0:
            raise ValueError(f"head_dropout must be in [0, 1), got {self.head_dropout}")
        super().__post_init__(**kwargs)
        if self.problem_type is not None and self.problem_type not in _PROBLEM_TYPES:
            raise ValueError(f"problem_type must be one of {_PROBLEM_TYPES} or None, got {self.problem_type!r}")
