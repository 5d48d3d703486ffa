"""ECG-NAT: a hierarchical neighborhood-attention transformer for multi-lead ECG.

Hub-facing module: copied flat next to saved checkpoints and loaded with ``trust_remote_code=True`` on
machines without ``ecgnat_hf``. It imports only torch, transformers and its two sibling modules, with
single-dot relative imports.

Shape of the model (see the package README for the reasoning):

    input_values (B, leads, T) ──► lead-wise conv stem (shared weights) + lead embedding
        ──► fusion over the *present* leads at every stem token (masked attention weights)
        ──► stages of pre-norm neighborhood-attention blocks, ×2 downsampling between stages
        ──► last_hidden_state (B, T / total_stride, hidden_size), pooled mean ──► heads
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_ecgnat import NA_BACKENDS, ECGNATConfig
from .neighborhood_attention import neighborhood_attention_1d


def _attention_interface_placeholder(*args, **kwargs):
    raise NotImplementedError(
        "This name selects ECG-NAT's neighborhood-attention backend; ECG-NAT dispatches the operation itself "
        "and other model families cannot use it."
    )


# Register the backend names so that `from_pretrained(..., attn_implementation="natten" | "na_torch")`
# passes transformers' validation, the usual way of choosing attention kernels.
for _name in NA_BACKENDS:
    if _name not in AttentionInterface._global_mapping:
        AttentionInterface.register(_name, _attention_interface_placeholder)


ECGNAT_AUTO_MAP = {
    "AutoConfig": "configuration_ecgnat.ECGNATConfig",
    "AutoModel": "modeling_ecgnat.ECGNATModel",
    "AutoModelForPreTraining": "modeling_ecgnat.ECGNATForPreTraining",
    "AutoModelForSequenceClassification": "modeling_ecgnat.ECGNATForSequenceClassification",
}


# ----------------------------------------------------------------------------------------------- outputs
@dataclass
class ECGNATModelOutput(ModelOutput):
    """
    last_hidden_state (`(batch, tokens, hidden_size)`): final-stage tokens after the last layer norm.
    pooler_output (`(batch, hidden_size)`): mean over the final-stage tokens that cover the input.
    hidden_states (`tuple`): the fused stem tokens and every stage's output, when requested.
    lead_fusion_weights (`(batch, stem_tokens, leads)`): weight of each lead at each stem token; absent leads 0.
    token_mask (`(batch, tokens)`): final-stage tokens that cover real input (not the right padding).
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    lead_fusion_weights: torch.FloatTensor | None = None
    token_mask: torch.BoolTensor | None = None


@dataclass
class ECGNATForPreTrainingOutput(ModelOutput):
    """
    loss: reconstruction loss (+ weighted global term). reconstruction_loss / global_loss: the parts.
    reconstruction (`(batch, leads, samples)`): the decoder's prediction (per-patch normalised space when
        ``config.norm_target``), cropped to the input length.
    mask (`(batch, leads, samples)`): 1 where the loss applies: hidden time regions of present leads, and
        every region of present leads that random lead masking hid from the encoder.
    time_mask (`(batch, stem_tokens)`): the masked stem tokens. encoder_lead_mask (`(batch, leads)`): the leads
        the encoder saw.
    """

    loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    global_loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    mask: torch.FloatTensor | None = None
    time_mask: torch.BoolTensor | None = None
    encoder_lead_mask: torch.BoolTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class ECGNATForSequenceClassificationOutput(ModelOutput):
    """
    loss: classification loss + ``supcon_weight`` × supervised-contrastive loss (training labels given).
    classification_loss / supcon_loss: the two parts, reported separately.
    logits (`(batch, num_labels)`). pooler_output: the head's features (`(batch, hidden_size)`, twice that with
    `classifier_pooling="mean_max"`). projection: normalised
    contrastive embedding. hidden_states / lead_fusion_weights: as in `ECGNATModelOutput`, on request.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    classification_loss: torch.FloatTensor | None = None
    supcon_loss: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    projection: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    lead_fusion_weights: torch.FloatTensor | None = None


# ----------------------------------------------------------------------------------------------- losses
def supervised_contrastive_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1, positives: str = "any"
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, the "L_out" form) on L2-normalised ``embeddings``.

    ``labels``: class indices (batch,) for single-label, or a multi-hot (batch, classes) matrix for multi-label.
    ``positives`` (multi-label only): ``"any"``, two samples are positives (weight 1) when they share at least one
    label; ``"jaccard"``, every pair is weighted by the Jaccard overlap of its label sets (intersection over
    union), and an anchor's log-probabilities are averaged with those weights. With one label per sample both
    reduce to the single-label loss. Anchors without any positive are left out; when no anchor has a positive
    the loss is 0 (still attached to the graph).
    """
    n = embeddings.shape[0]
    dtype = torch.promote_types(embeddings.dtype, torch.float32)  # exact overlap ratios, also under autocast
    if labels.dim() == 1:
        weights = (labels[:, None] == labels[None, :]).to(dtype)
    else:
        hot = (labels > 0.5).to(dtype)
        shared = hot @ hot.T
        if positives == "jaccard":
            count = hot.sum(1)
            union = count[:, None] + count[None, :] - shared
            weights = torch.where(union > 0, shared / union.clamp(min=1), torch.zeros_like(shared))
        elif positives == "any":
            weights = (shared > 0).to(dtype)
        else:
            raise ValueError(f"positives must be 'any' or 'jaccard', got {positives!r}")
    eye = torch.eye(n, dtype=torch.bool, device=embeddings.device)
    weights = weights.masked_fill(eye, 0.0).to(embeddings.dtype)
    logits = embeddings @ embeddings.T / temperature
    logits = logits.masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    total = weights.sum(1)
    has_pos = total > 0
    if not bool(has_pos.any()):
        return embeddings.sum() * 0.0
    mean_log_prob_pos = (log_prob.masked_fill(weights == 0, 0.0) * weights).sum(1)[has_pos] / total[has_pos]
    return -mean_log_prob_pos.mean()


def segment_contrastive_loss(first: torch.Tensor, second: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """CMSC-style InfoNCE: segment i of ``first`` and segment i of ``second`` come from one recording."""
    z = torch.cat([first, second], dim=0)
    n = first.shape[0]
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    return F.cross_entropy(logits, targets)


def random_lead_mask(lead_mask: torch.Tensor, probability: float, generator: torch.Generator | None = None):
    """Hide each present lead with ``probability``; always keep at least one present lead per sample."""
    if probability <= 0:
        return lead_mask
    drop = (torch.rand(lead_mask.shape, device=lead_mask.device, generator=generator) < probability) & lead_mask
    kept = lead_mask & ~drop
    empty = ~kept.any(1)
    if bool(empty.any()):
        # keep one random present lead in samples that lost all of them
        scores = torch.rand(lead_mask.shape, device=lead_mask.device, generator=generator).masked_fill(~lead_mask, -1)
        keep_one = F.one_hot(scores.argmax(1), lead_mask.shape[1]).bool()
        kept = torch.where(empty[:, None], keep_one, kept)
    return kept


def augment_signal(input_values: torch.Tensor, lead_mask: torch.Tensor, amplitude_scale: float = 0.0,
                   noise_std: float = 0.0, generator: torch.Generator | None = None, *, max_shift: int = 0,
                   baseline_wander: float = 0.0, sampling_rate: float = 100.0) -> torch.Tensor:
    """Training-time signal augmentation, each part off at 0:

    - a time shift: each record moves by a whole number of samples from [-max_shift, max_shift], all its leads
      alike (they were recorded together); the samples shifted in are 0, the baseline of a centred lead;
    - one random gain per record, U(1 - s, 1 + s), all leads alike;
    - baseline wander: one slow sinusoid per record (0.05-0.5 Hz, random phase, as breathing moves the baseline),
      with a size drawn per lead from U(-baseline_wander, baseline_wander) in the input's units;
    - Gaussian noise.

    Absent leads stay exactly zero, so the augmentation cannot invent a lead."""
    if amplitude_scale <= 0 and noise_std <= 0 and max_shift <= 0 and baseline_wander <= 0:
        return input_values
    x = input_values
    b, n_leads, t = x.shape
    if max_shift > 0:
        if max_shift >= t:
            raise ValueError(f"a time shift of up to {max_shift} samples can move a {t}-sample input wholly out of its "
                             "window (all zeros); lower finetune_time_shift_s below the input's length")
        shift = torch.randint(-max_shift, max_shift + 1, (b, 1), device=x.device, generator=generator)
        source = torch.arange(t, device=x.device)[None, :] - shift
        inside = (source >= 0) & (source < t)
        x = x.gather(2, source.clamp(0, t - 1)[:, None, :].expand(b, n_leads, t))
        x = torch.where(inside[:, None, :], x, torch.zeros((), dtype=x.dtype))
    if amplitude_scale > 0:
        gain = 1 + amplitude_scale * (2 * torch.rand(b, 1, 1, device=x.device, generator=generator) - 1)
        x = x * gain.to(x.dtype)
    if baseline_wander > 0:
        freq = 0.05 + 0.45 * torch.rand(b, 1, 1, device=x.device, generator=generator)
        phase = 2 * math.pi * torch.rand(b, 1, 1, device=x.device, generator=generator)
        size = baseline_wander * (2 * torch.rand(b, n_leads, 1, device=x.device, generator=generator) - 1)
        seconds = torch.arange(t, device=x.device)[None, None, :] / float(sampling_rate)
        x = x + (size * torch.sin(2 * math.pi * freq * seconds + phase)).to(x.dtype)
    if noise_std > 0:
        x = x + noise_std * torch.randn(x.shape, device=x.device, generator=generator).to(x.dtype)
    return torch.where(lead_mask[:, :, None].bool(), x, torch.zeros((), dtype=x.dtype))


# ----------------------------------------------------------------------------------------------- layers
class ECGNATDropPath(nn.Module):
    """Stochastic depth per sample."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


class ECGNATStem(nn.Module):
    """Lead-wise convolutional stem (weights shared across leads), lead embedding, fusion over present leads."""

    def __init__(self, config: ECGNATConfig):
        super().__init__()
        dim = config.hidden_sizes[0]
        stem_dim = config.stem_hidden_size or dim
        p = config.patch_size
        s1 = p // 2 if p % 2 == 0 and p > 2 else 1
        s2 = p // s1
        k2 = 2 * s2 + 1 if s2 > 1 else 3
        self.conv1 = nn.Conv1d(1, stem_dim // 2, config.stem_kernel_size, stride=s1, padding=config.stem_kernel_size // 2)
        self.conv2 = nn.Conv1d(stem_dim // 2, stem_dim, k2, stride=s2, padding=k2 // 2)
        self.act = ACT2FN[config.hidden_act]
        self.norm = nn.LayerNorm(stem_dim, eps=config.layer_norm_eps) if config.stem_norm == "token" else nn.Identity()
        self.lead_embeddings = nn.Parameter(torch.zeros(config.num_leads, stem_dim))
        # Each lead gets its own projection before the weighted sum: the stem's features are shared across
        # leads, so a plain convex combination would erase which lead carries which waveform (lead I's upright
        # QRS and aVR's inverted one would cancel). Projected, leads keep separate subspaces of the fused token.
        self.lead_projection = nn.Parameter(torch.zeros(config.num_leads, stem_dim, dim))
        self.lead_projection_bias = nn.Parameter(torch.zeros(config.num_leads, dim))
        self.fusion = config.lead_fusion
        if self.fusion == "attention":
            self.fusion_score = nn.Sequential(nn.Linear(stem_dim, stem_dim // 2), nn.GELU(), nn.Linear(stem_dim // 2, 1))
        self.fusion_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps) if config.stem_norm != "none" else nn.Identity()

    @staticmethod
    def _shared_present_leads(lead_mask: torch.Tensor):
        """Indices of the present leads when every sample of the batch has the same ones and some are absent.

        Absent leads get fusion weight 0, so leaving them out of the stem gives the same output: a 2-lead
        Holter batch then runs 2 lead-wise stems instead of 12. Not while tracing or exporting, where the
        shapes must not depend on the mask's values.
        """
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return None
        first = lead_mask[0]
        if bool(first.all()) or not bool((lead_mask == first).all()):
            return None
        return first.nonzero().squeeze(1)

    def forward(self, x: torch.Tensor, lead_mask: torch.Tensor):
        b, n_leads, t = x.shape
        present = self._shared_present_leads(lead_mask)
        embeddings, projection, projection_bias = self.lead_embeddings, self.lead_projection, self.lead_projection_bias
        if present is not None:
            x, lead_mask = x[:, present], lead_mask[:, present]
            embeddings, projection, projection_bias = embeddings[present], projection[present], projection_bias[present]
        n = x.shape[1]
        h = self.conv2(self.act(self.conv1(x.reshape(b * n, 1, t))))  # (B*leads, C, L)
        h = h.transpose(1, 2).reshape(b, n, h.shape[-1], -1)  # (B, leads, L, C)
        h = self.norm(h) + embeddings[None, :, None, :]
        if self.fusion == "attention":
            scores = self.fusion_score(h).squeeze(-1)  # (B, leads, L)
        else:
            scores = torch.zeros(h.shape[:3], dtype=h.dtype, device=h.device)
        scores = scores.masked_fill(~lead_mask[:, :, None], float("-inf"))
        weights = torch.softmax(scores, dim=1)  # over leads
        # sum_l w_l (W_l h_l + b_l), computed as one matmul over the weighted leads side by side: the same
        # value as projecting every lead first, without materialising a (B, leads, L, C) projection.
        weights_t = weights.transpose(1, 2)  # (B, L, leads)
        weighted = (h * weights[..., None]).permute(0, 2, 1, 3).reshape(b, h.shape[2], -1)  # (B, L, leads * C_stem)
        fused = weighted @ projection.reshape(-1, projection.shape[-1]) + weights_t @ projection_bias
        if present is not None:  # report the weights over all the model's leads, 0 for the absent ones
            weights_t = weights_t.new_zeros(b, weights_t.shape[1], n_leads).index_copy_(2, present, weights_t)
        return self.fusion_norm(fused), weights_t  # (B, L, C), (B, L, leads)


class ECGNATNeighborhoodAttention(nn.Module):
    def __init__(self, config: ECGNATConfig, dim: int, num_heads: int, kernel_size: int, dilation: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.config = config
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def _backend(self) -> str:
        impl = getattr(self.config, "_attn_implementation", None)
        return "natten" if impl == "natten" else "torch" if impl == "na_torch" else "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(b, length, 3, self.num_heads, self.head_dim).unbind(2)
        # Any input length: shrink the window and dilation where the sequence is shorter than they need.
        # (written as comparisons of the length, not min/max, so that torch.export keeps them as range guards)
        kernel = self.kernel_size if length >= self.kernel_size else (length if length % 2 else length - 1)
        if kernel <= 1:
            out = v
        else:
            dilation = self.dilation if length >= self.dilation * kernel else max(1, length // kernel)
            out = neighborhood_attention_1d(q, k, v, kernel_size=kernel, dilation=dilation, backend=self._backend())
        return self.dropout(self.proj(out.reshape(b, length, dim)))

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, kernel_size={self.kernel_size}, dilation={self.dilation}"


class ECGNATMLP(nn.Module):
    def __init__(self, config: ECGNATConfig, dim: int):
        super().__init__()
        hidden = int(dim * config.mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x):
        return self.dropout(self.fc2(self.act(self.fc1(x))))


class ECGNATLayer(GradientCheckpointingLayer):
    """Pre-norm block: x + DropPath(NA(LN(x))), then x + DropPath(MLP(LN(x)))."""

    def __init__(self, config, dim, num_heads, kernel_size, dilation, drop_path):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attention = ECGNATNeighborhoodAttention(config, dim, num_heads, kernel_size, dilation)
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = ECGNATMLP(config, dim)
        self.drop_path = ECGNATDropPath(drop_path)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.drop_path(self.attention(self.norm1(hidden_states)))
        return hidden_states + self.drop_path(self.mlp(self.norm2(hidden_states)))


class ECGNATPositionalConv(nn.Module):
    """Depthwise-convolution positional encoding (NATTEN >= 0.20 has no relative positional bias)."""

    def __init__(self, dim: int, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x):  # (B, L, C)
        return x + self.conv(x.transpose(1, 2)).transpose(1, 2)


class ECGNATDownsample(nn.Module):
    def __init__(self, config, in_dim, out_dim):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, out_dim, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(out_dim, eps=config.layer_norm_eps)

    def forward(self, x):
        return self.norm(self.conv(x.transpose(1, 2)).transpose(1, 2))


class ECGNATStage(nn.Module):
    def __init__(self, config: ECGNATConfig, index: int, drop_paths: list[float]):
        super().__init__()
        dim = config.hidden_sizes[index]
        self.downsample = ECGNATDownsample(config, config.hidden_sizes[index - 1], dim) if index > 0 else None
        self.position = ECGNATPositionalConv(dim)
        self.layers = nn.ModuleList(
            ECGNATLayer(config, dim, config.num_heads[index], config.kernel_sizes[index], d, dp)
            for d, dp in zip(config.dilations[index], drop_paths)
        )

    def forward(self, x):
        if self.downsample is not None:
            x = self.downsample(x)
        x = self.position(x)
        for layer in self.layers:
            x = layer(x)
        return x


# ----------------------------------------------------------------------------------------------- models
class ECGNATPreTrainedModel(PreTrainedModel):
    """Base class of the ECG-NAT models: configuration class, weight initialisation, and a `save_pretrained` that writes the remote-code `auto_map` for every head."""

    config_class = ECGNATConfig
    config: ECGNATConfig
    base_model_prefix = "ecgnat"
    main_input_name = "input_values"
    input_modalities = ("audio",)  # 1-D signals; transformers has no "ecg" modality
    supports_gradient_checkpointing = True
    _no_split_modules = ["ECGNATLayer", "ECGNATStem"]
    # Models here compute their own mean loss: with num_items_in_batch the Trainer would stop dividing
    # by the gradient-accumulation steps (logged loss scaled with accumulation).
    accepts_loss_kwargs = False

    def save_pretrained(self, save_directory, *args, **kwargs):
        # One checkpoint should load into every head through remote code, not only the saved class:
        # write the whole auto_map (transformers only adds the saved class and the config).
        if self._auto_class is not None:
            self.config.auto_map = {**ECGNAT_AUTO_MAP, **(getattr(self.config, "auto_map", None) or {})}
        return super().save_pretrained(save_directory, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv1d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="linear")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, ECGNATStem):
            init.trunc_normal_(module.lead_embeddings, std=std)
            init.trunc_normal_(module.lead_projection, std=module.lead_projection.shape[-2] ** -0.5)  # fan-in
            init.zeros_(module.lead_projection_bias)
        elif isinstance(module, ECGNATForPreTraining):
            init.trunc_normal_(module.mask_token, std=std)


def _check_inputs(config: ECGNATConfig, input_values: torch.Tensor, lead_mask: torch.Tensor | None):
    if input_values.dim() != 3:
        raise ValueError(
            f"input_values must have shape (batch, leads, samples); got {tuple(input_values.shape)}. "
            "Use ECGNATFeatureExtractor to map recordings to the model's leads and sampling rate."
        )
    if input_values.shape[1] != config.num_leads:
        raise ValueError(
            f"input_values has {input_values.shape[1]} leads but the model expects {config.num_leads} "
            f"({', '.join(config.lead_names)}); absent leads are zeros and marked in lead_mask."
        )
    if lead_mask is None:
        lead_mask = torch.ones(input_values.shape[:2], dtype=torch.bool, device=input_values.device)
    else:
        if lead_mask.shape != input_values.shape[:2]:
            raise ValueError(
                f"lead_mask must have shape (batch, leads) = {tuple(input_values.shape[:2])}, got {tuple(lead_mask.shape)}."
            )
        lead_mask = lead_mask.bool()
    # a value check cannot be traced (torch.export / ONNX): exported graphs document the rule instead
    if not torch.compiler.is_exporting() and not bool(lead_mask.any(1).all()):
        raise ValueError("every sample needs at least one present lead in lead_mask.")
    return lead_mask


class ECGNATModel(ECGNATPreTrainedModel):
    """The hierarchical ECG-NAT encoder."""

    # the encoder of a classifier or pretraining checkpoint (embeddings): its heads are left out quietly
    _keys_to_ignore_on_load_unexpected = [
        r"^classifier\.", r"^projection\.", r"^decoder\.", r"^mask_token", r"^global_projection\."
    ]

    def __init__(self, config: ECGNATConfig):
        super().__init__(config)
        self.stem = ECGNATStem(config)
        rates = torch.linspace(0, config.drop_path_rate, sum(config.depths)).tolist()
        stages, start = [], 0
        for i, depth in enumerate(config.depths):
            stages.append(ECGNATStage(config, i, rates[start : start + depth]))
            start += depth
        self.stages = nn.ModuleList(stages)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    @property
    def pad_multiple(self) -> int:
        """Inputs are right-padded to a multiple of this many samples (one mask unit)."""
        return self.config.patch_size * self.config.mask_unit_size

    def forward(
        self,
        input_values: torch.Tensor,
        lead_mask: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_lead_weights: bool | None = None,
        return_dict: bool | None = None,
        mask_token: torch.Tensor | None = None,
        **kwargs,
    ) -> ECGNATModelOutput | tuple:
        """
        input_values (`(batch, leads, samples)`): signals in ``config.lead_names`` order at
            ``config.sampling_rate``; any length (right-padded internally to a multiple of one mask unit).
        lead_mask (`(batch, leads)`): 1 for leads present. Absent leads never influence the output.
        bool_masked_pos (`(batch, stem_tokens)`): stem tokens to replace by ``mask_token`` (pretraining).
        """
        config = self.config
        output_hidden_states = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        return_dict = return_dict if return_dict is not None else config.return_dict
        lead_mask = _check_inputs(config, input_values, lead_mask)
        b, _, t = input_values.shape
        # integer arithmetic and an unconditional (possibly empty) pad: traceable with a dynamic length
        # (only non-negative operands in //: ONNX's integer Div truncates where Python floors)
        pad = (t + self.pad_multiple - 1) // self.pad_multiple * self.pad_multiple - t
        # absent leads are zeroed before the stem, so whatever they hold (NaN included) cannot leak
        x = torch.where(lead_mask[:, :, None], input_values, torch.zeros((), dtype=input_values.dtype))
        x = F.pad(x, (0, pad))
        if bool_masked_pos is not None:
            # hide masked regions from the stem's receptive field too (SimMIM / ConvNeXt-V2 style)
            sample_mask = bool_masked_pos.repeat_interleave(config.patch_size, dim=1)[:, None, :]
            x = x.masked_fill(sample_mask, 0.0)

        hidden, fusion_weights = self.stem(x, lead_mask)
        if bool_masked_pos is not None:
            token = mask_token if mask_token is not None else hidden.new_zeros(hidden.shape[-1])
            hidden = torch.where(bool_masked_pos[:, :, None], token.to(hidden.dtype), hidden)
        all_hidden = (hidden,) if output_hidden_states else None
        for stage in self.stages:
            hidden = stage(hidden)
            if output_hidden_states:
                all_hidden = all_hidden + (hidden,)
        hidden = self.layernorm(hidden)

        valid_tokens = (t + config.total_stride - 1) // config.total_stride  # ceil(t / total_stride)
        # built by comparison, and a masked mean when exported: no view whose shape depends on the length
        # (torch.export would guard on it and reject other lengths)
        token_mask = (torch.arange(hidden.shape[1], device=hidden.device) < valid_tokens).unsqueeze(0).repeat(b, 1)
        if torch.compiler.is_exporting():
            pooled = (hidden * token_mask[:, :, None]).sum(1) / valid_tokens
        else:
            pooled = hidden[:, :valid_tokens].mean(1)
        weights = fusion_weights if output_lead_weights else None
        if not return_dict:
            return tuple(v for v in (hidden, pooled, all_hidden, weights, token_mask) if v is not None)
        return ECGNATModelOutput(
            last_hidden_state=hidden,
            pooler_output=pooled,
            hidden_states=all_hidden,
            lead_fusion_weights=weights,
            token_mask=token_mask,
        )


def _projection_head(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))


class ECGNATDecoder(nn.Module):
    """Light decoder: final-stage tokens -> every lead's samples under each token."""

    def __init__(self, config: ECGNATConfig):
        super().__init__()
        dim = config.decoder_hidden_size
        self.embed = nn.Linear(config.hidden_size, dim)
        self.position = ECGNATPositionalConv(dim)
        heads = max(1, dim // 32)
        self.layers = nn.ModuleList(
            ECGNATLayer(config, dim, heads, config.decoder_kernel_size, 1, 0.0) for _ in range(config.decoder_num_layers)
        )
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.pred = nn.Linear(dim, config.num_leads * config.total_stride)
        self.num_leads = config.num_leads

    def forward(self, hidden):  # (B, L, C) -> (B, leads, L * total_stride)
        x = self.position(self.embed(hidden))
        for layer in self.layers:
            x = layer(x)
        x = self.pred(self.norm(x))  # (B, L, leads * stride)
        b, length, _ = x.shape
        return x.reshape(b, length, self.num_leads, -1).permute(0, 2, 1, 3).reshape(b, self.num_leads, -1)


class ECGNATForPreTraining(ECGNATPreTrainedModel):
    """Masked reconstruction on the hierarchical encoder, with random lead masking and an optional global
    (segment-contrast) term: the self-supervised objective."""

    def __init__(self, config: ECGNATConfig):
        super().__init__(config)
        self.ecgnat = ECGNATModel(config)
        self.mask_token = nn.Parameter(torch.zeros(config.hidden_sizes[0]))
        self.decoder = ECGNATDecoder(config)
        if config.global_loss_weight > 0:
            self.global_projection = _projection_head(config.hidden_size, config.projection_dim)
        self.post_init()

    # -- masking ------------------------------------------------------------------------------------
    def random_time_mask(self, batch: int, stem_tokens: int, valid_samples: int, device) -> torch.Tensor:
        """Per-sample random masking of ``mask_ratio`` of the mask units that cover real input."""
        unit = self.config.mask_unit_size
        n_units = stem_tokens // unit
        n_valid = max(1, math.ceil(valid_samples / (unit * self.config.patch_size)))
        n_mask = max(1, int(round(self.config.mask_ratio * n_valid)))
        noise = torch.rand(batch, n_units, device=device)
        noise[:, n_valid:] = 2.0  # padding units are never masked
        ids = noise.argsort(1)[:, :n_mask]
        units = torch.zeros(batch, n_units, dtype=torch.bool, device=device)
        units.scatter_(1, ids, True)
        return units.repeat_interleave(unit, dim=1)

    def loss_weights(self, time_mask, lead_mask, encoder_lead_mask, valid_samples):
        """Which (lead, mask unit) cells the loss covers: present leads, in masked time units or in leads
        hidden by random lead masking; never the right padding."""
        unit = self.config.mask_unit_size
        units_masked = time_mask[:, ::unit]  # (B, units)
        n_valid = math.ceil(valid_samples / (unit * self.config.patch_size))
        valid = torch.zeros_like(units_masked)
        valid[:, :n_valid] = True
        hidden_lead = lead_mask & ~encoder_lead_mask
        cells = units_masked[:, None, :] | hidden_lead[:, :, None]
        return (cells & lead_mask[:, :, None] & valid[:, None, :]).float()  # (B, leads, units)

    def forward_loss(self, reconstruction, target, weights):
        """MSE over masked cells only. reconstruction/target: (B, leads, units * unit_samples)."""
        b, n_leads, _ = target.shape
        unit_samples = self.config.mask_unit_size * self.config.patch_size
        target = target.reshape(b, n_leads, -1, unit_samples)
        pred = reconstruction.reshape(b, n_leads, -1, unit_samples)
        if self.config.norm_target:
            mean = target.mean(-1, keepdim=True)
            var = target.var(-1, keepdim=True, unbiased=False)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_cell = ((pred - target) ** 2).mean(-1)
        return (per_cell * weights).sum() / weights.sum().clamp_min(1.0)

    # -- forward ------------------------------------------------------------------------------------
    def forward(
        self,
        input_values: torch.Tensor,
        lead_mask: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        encoder_lead_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> ECGNATForPreTrainingOutput | tuple:
        """
        bool_masked_pos (`(batch, stem_tokens)`, optional): time mask; drawn at random when not given.
        encoder_lead_mask (`(batch, leads)`, optional): leads shown to the encoder; drawn by random lead
            masking (``config.lead_mask_prob``) in training mode when not given, all present leads otherwise.
        """
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        lead_mask = _check_inputs(config, input_values, lead_mask)
        t = input_values.shape[-1]
        multiple = self.ecgnat.pad_multiple
        if t < multiple:
            raise ValueError(f"input is {t} samples long; pretraining needs at least one mask unit ({multiple} samples).")
        segments = 2 if config.global_loss_weight > 0 and t >= 2 * multiple else 1
        if segments == 2:  # two adjacent segments of each recording: positives for the global term
            half = t // 2
            input_values = torch.cat([input_values[..., :half], input_values[..., half : 2 * half]], 0)
            lead_mask = torch.cat([lead_mask, lead_mask], 0)
            t = half
        b = input_values.shape[0]
        x = torch.where(lead_mask[:, :, None], input_values, torch.zeros((), dtype=input_values.dtype))
        padded_t = t + (-t) % multiple
        x = F.pad(x, (0, padded_t - t))
        stem_tokens = padded_t // config.patch_size
        if bool_masked_pos is None:
            bool_masked_pos = self.random_time_mask(b, stem_tokens, t, x.device)
        elif segments == 2:
            bool_masked_pos = bool_masked_pos.repeat(2, 1)[:, :stem_tokens]
        if encoder_lead_mask is None:
            encoder_lead_mask = random_lead_mask(lead_mask, config.lead_mask_prob) if self.training else lead_mask
        elif segments == 2:
            encoder_lead_mask = encoder_lead_mask.repeat(2, 1)
        encoder_lead_mask = encoder_lead_mask.bool() & lead_mask

        outputs = self.ecgnat(
            x,
            lead_mask=encoder_lead_mask,
            bool_masked_pos=bool_masked_pos,
            mask_token=self.mask_token,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        reconstruction = self.decoder(outputs.last_hidden_state)
        weights = self.loss_weights(bool_masked_pos, lead_mask, encoder_lead_mask, t)
        loss = reconstruction_loss = global_loss = None
        if return_loss:
            reconstruction_loss = self.forward_loss(reconstruction, x, weights)
            loss = reconstruction_loss
            if segments == 2:
                z = F.normalize(self.global_projection(outputs.pooler_output), dim=-1)
                global_loss = segment_contrastive_loss(z[: b // 2], z[b // 2 :], config.global_temperature)
                loss = loss + config.global_loss_weight * global_loss
        unit_samples = config.mask_unit_size * config.patch_size
        sample_mask = weights.repeat_interleave(unit_samples, dim=2)[..., :t]
        reconstruction = reconstruction[..., :t]
        if not return_dict:
            out = (reconstruction, sample_mask, bool_masked_pos, encoder_lead_mask)
            return ((loss,) + out) if loss is not None else out
        return ECGNATForPreTrainingOutput(
            loss=loss,
            reconstruction_loss=reconstruction_loss,
            global_loss=global_loss,
            reconstruction=reconstruction,
            mask=sample_mask,
            time_mask=bool_masked_pos,
            encoder_lead_mask=encoder_lead_mask,
            hidden_states=outputs.hidden_states,
        )


class ECGNATForSequenceClassification(ECGNATPreTrainedModel):
    """Pooled ECG-NAT features -> linear head; cross-entropy / BCE / MSE by ``config.problem_type`` plus a
    supervised-contrastive term on a normalised projection (weight ``config.supcon_weight``)."""

    # a pretraining checkpoint loads into this head: encoder kept, decoder and mask token ignored quietly
    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^mask_token", r"^global_projection\."]

    def __init__(self, config: ECGNATConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.ecgnat = ECGNATModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        pooled_size = config.hidden_size * (2 if config.classifier_pooling == "mean_max" else 1)
        self.classifier = nn.Linear(pooled_size, config.num_labels)
        self.projection = _projection_head(pooled_size, config.projection_dim)
        self.post_init()

    def _pool(self, outputs: ECGNATModelOutput) -> torch.Tensor:
        """Head features: the encoder's mean, or mean and max over the tokens that cover real input."""
        if self.config.classifier_pooling != "mean_max":
            return outputs.pooler_output
        hidden = outputs.last_hidden_state.masked_fill(~outputs.token_mask[:, :, None], float("-inf"))
        return torch.cat([outputs.pooler_output, hidden.amax(1)], dim=-1)

    def _problem_type(self, labels: torch.Tensor) -> str:
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        return self.config.problem_type

    def forward(
        self,
        input_values: torch.Tensor,
        lead_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_lead_weights: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ECGNATForSequenceClassificationOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        cfg = self.config
        if self.training and (cfg.finetune_lead_mask_prob > 0 or cfg.finetune_amplitude_scale > 0
                              or cfg.finetune_noise_std > 0 or cfg.finetune_time_shift_s > 0
                              or cfg.finetune_baseline_wander > 0):
            lead_mask = _check_inputs(cfg, input_values, lead_mask)
            # augmentation: hide random leads so that one 12-lead fine-tuned checkpoint stays good on subsets
            lead_mask = random_lead_mask(lead_mask, cfg.finetune_lead_mask_prob)
            input_values = augment_signal(
                input_values, lead_mask, cfg.finetune_amplitude_scale, cfg.finetune_noise_std,
                max_shift=int(round(cfg.finetune_time_shift_s * cfg.sampling_rate)),
                baseline_wander=cfg.finetune_baseline_wander, sampling_rate=cfg.sampling_rate,
            )
        outputs = self.ecgnat(
            input_values,
            lead_mask=lead_mask,
            output_hidden_states=output_hidden_states,
            output_lead_weights=output_lead_weights,
            return_dict=True,
        )
        pooled = self._pool(outputs)
        logits = self.classifier(self.dropout(pooled))
        projection = F.normalize(self.projection(pooled), dim=-1)
        loss = cls_loss = supcon = None
        if labels is not None:
            problem = self._problem_type(labels)
            if problem == "regression":
                target = labels.to(logits.dtype)
                if self.num_labels == 1:
                    cls_loss = F.mse_loss(logits.squeeze(-1), target.reshape(-1))
                else:
                    cls_loss = F.mse_loss(logits, target)
            elif problem == "single_label_classification":
                cls_loss = F.cross_entropy(logits, labels.view(-1).long())
            else:
                cls_loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
            loss = cls_loss
            if self.config.supcon_weight > 0 and problem != "regression" and logits.shape[0] > 1:
                supcon = supervised_contrastive_loss(
                    projection, labels.view(-1) if problem == "single_label_classification" else labels,
                    self.config.supcon_temperature, getattr(self.config, "supcon_positives", "any"),
                )
                loss = cls_loss + self.config.supcon_weight * supcon
        if not return_dict:
            out = (logits, pooled)
            return ((loss,) + out) if loss is not None else out
        return ECGNATForSequenceClassificationOutput(
            loss=loss,
            logits=logits,
            classification_loss=cls_loss,
            supcon_loss=supcon,
            pooler_output=pooled,
            projection=projection,
            hidden_states=outputs.hidden_states,
            lead_fusion_weights=outputs.lead_fusion_weights,
        )


__all__ = [
    "ECGNATPreTrainedModel",
    "ECGNATModel",
    "ECGNATForPreTraining",
    "ECGNATForSequenceClassification",
    "supervised_contrastive_loss",
    "segment_contrastive_loss",
    "random_lead_mask",
]
