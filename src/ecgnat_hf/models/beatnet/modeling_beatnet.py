"""BEAT-Net: an ECG as a sequence of heartbeat tokens.

    input_values (B, leads, T) ──► QRS detection + beat windows (qrs.py, numpy, no gradient)
        ──► beats (B, N, leads, S) ──► morphology CNN per beat and lead (weights shared across leads)
        ──► + lead embedding ──► spatial attention over the *present* leads (one weight per lead and beat)
        ──► + RR-interval features + beat position ──► rhythm transformer over beats (padding masked)
        ──► mean over real beats ──► head

A record in which no beat is found (flat line, asystole, pure noise) is not an error inside the model: its
sequence is one learned empty-sequence token (``no_beat_embedding``), and ``num_beats`` in the output is 0 for
it, so callers can see and report it. ``BeatNetFeatureExtractor`` (``no_beats="error"``, its default) raises
an error naming such a record before it reaches the model.

Hub-facing module: imports torch, transformers and its sibling modules with single-dot imports only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_beatnet import BeatNetConfig
from .qrs import tokenize_batch


@dataclass
class BeatNetModelOutput(ModelOutput):
    """
    last_hidden_state (`(batch, beats, hidden_size)`): beat tokens after the rhythm transformer.
    pooler_output (`(batch, hidden_size)`): mean over real beats.
    beat_mask (`(batch, beats)`): real beats. rr (`(batch, beats, 2)`): previous/next RR in seconds.
    lead_weights (`(batch, beats, leads)`): spatial attention over leads (mean over heads); absent leads and
        padding beats 0, so each real beat's row sums to one.
    num_beats (`(batch,)`): real beats per record; 0 where no beat was found (the empty-sequence token was used).
    r_peaks (`(batch, beats)`): R-peak sample indices (-1 on padding) when the model found the beats itself.
    hidden_states (`tuple`): beat embeddings before the rhythm transformer and after each layer, on request.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    beat_mask: torch.BoolTensor | None = None
    rr: torch.FloatTensor | None = None
    lead_weights: torch.FloatTensor | None = None
    num_beats: torch.LongTensor | None = None
    r_peaks: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class BeatNetForSequenceClassificationOutput(ModelOutput):
    """loss, logits (`(batch, num_labels)`), pooler_output, num_beats (`(batch,)`, 0 = no beat found), and
    lead_weights / beat_mask / r_peaks / hidden_states on request (see :class:`BeatNetModelOutput`)."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    num_beats: torch.LongTensor | None = None
    lead_weights: torch.FloatTensor | None = None
    beat_mask: torch.BoolTensor | None = None
    r_peaks: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


#: full auto_map written into every BEAT-Net checkpoint (remote code for each head)
BEATNET_AUTO_MAP = {
    "AutoConfig": "configuration_beatnet.BeatNetConfig",
    "AutoModel": "modeling_beatnet.BeatNetModel",
    "AutoModelForSequenceClassification": "modeling_beatnet.BeatNetForSequenceClassification",
}


class BeatNetMorphologyEncoder(nn.Module):
    """1-D CNN over one beat of one lead: (M, S) -> (M, hidden)."""

    def __init__(self, config: BeatNetConfig):
        super().__init__()
        layers = []
        c_in = 1
        k = config.morphology_kernel_size
        for c in config.morphology_channels:
            layers += [nn.Conv1d(c_in, c, k, stride=2, padding=k // 2), nn.GroupNorm(1, c), nn.GELU()]
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.convs(x[:, None, :]).mean(-1))


class BeatNetSpatialEncoder(nn.Module):
    """Attention pooling over the present leads of each beat (a learned query per head).

    Absent leads get exactly zero weight and their values are replaced by zeros before weighting, so nothing
    they contain (even inf/NaN) can reach the output. The weights normalise over present leads, so one model
    serves any lead subset.
    """

    def __init__(self, config: BeatNetConfig):
        super().__init__()
        self.num_heads = config.spatial_num_heads
        self.head_dim = config.hidden_size // self.num_heads
        self.lead_embeddings = nn.Parameter(torch.zeros(config.num_leads, config.hidden_size))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.query = nn.Parameter(torch.zeros(self.num_heads, self.head_dim))
        self.out = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, lead_mask: torch.Tensor):
        # x: (B, N, L, H); lead_mask: (B, L) bool
        b, n, leads, h = x.shape
        x = self.norm(x + self.lead_embeddings)
        k = self.key(x).view(b, n, leads, self.num_heads, self.head_dim)
        v = self.value(x).view(b, n, leads, self.num_heads, self.head_dim)
        scores = torch.einsum("bnlhd,hd->bnhl", k, self.query) / self.head_dim**0.5
        present = lead_mask[:, None, None, :]
        weights = scores.masked_fill(~present, float("-inf")).softmax(-1)  # (B, N, heads, L)
        v = torch.where(lead_mask[:, None, :, None, None], v, torch.zeros((), dtype=v.dtype, device=v.device))
        fused = torch.einsum("bnhl,bnlhd->bnhd", weights, v).reshape(b, n, h)
        return self.out(fused), weights.mean(2)


class BeatNetPreTrainedModel(PreTrainedModel):
    """Base class of the BEAT-Net models: configuration class and weight initialisation."""

    config_class = BeatNetConfig
    config: BeatNetConfig
    base_model_prefix = "beatnet"
    main_input_name = "input_values"
    input_modalities = ("audio",)
    # the model computes its own mean loss (see ECGNATPreTrainedModel)
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv1d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            init.xavier_uniform_(module.in_proj_weight)
            init.zeros_(module.in_proj_bias)
        elif isinstance(module, BeatNetSpatialEncoder):
            init.trunc_normal_(module.lead_embeddings, std=std)
            init.trunc_normal_(module.query, std=std)
        elif isinstance(module, BeatNetModel):
            init.trunc_normal_(module.position_embeddings, std=std)
            init.trunc_normal_(module.no_beat_embedding, std=std)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # with the classes registered for remote code (``register_beatnet``), write the whole auto_map:
        # transformers alone only adds the saved class and the config.
        if self._auto_class is not None:
            self.config.auto_map = {**BEATNET_AUTO_MAP, **(getattr(self.config, "auto_map", None) or {})}
        return super().save_pretrained(save_directory, *args, **kwargs)


class BeatNetModel(BeatNetPreTrainedModel):
    """Beat tokens -> morphology, spatial and rhythm encoders -> per-beat states and a pooled vector.

    Give either raw ``input_values`` (batch, leads, samples) at ``config.sampling_rate`` (beats are found on
    CPU with ``qrs.tokenize_batch``; no gradient flows to the signal) or precomputed ``beats``
    (batch, beats, leads, beat_samples) with ``beat_mask`` and ``rr`` from the same helper.
    """

    def __init__(self, config: BeatNetConfig):
        super().__init__(config)
        h = config.hidden_size
        self.morphology = BeatNetMorphologyEncoder(config)
        self.spatial = BeatNetSpatialEncoder(config)
        self.rr_projection = nn.Sequential(nn.Linear(4, h), nn.GELU(), nn.Linear(h, h))
        self.position_embeddings = nn.Parameter(torch.zeros(config.max_beats, h))
        self.no_beat_embedding = nn.Parameter(torch.zeros(h))  # the whole sequence of a record without beats
        layer = nn.TransformerEncoderLayer(
            h, config.num_attention_heads, config.intermediate_size, dropout=config.hidden_dropout_prob,
            activation="gelu", layer_norm_eps=config.layer_norm_eps, batch_first=True, norm_first=True,
        )
        self.rhythm = nn.ModuleList([_clone(layer) for _ in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.post_init()

    def tokenize(self, input_values: torch.Tensor, lead_mask: torch.Tensor | None = None) -> dict:
        """Beat tokens of raw signals, as ``forward`` makes them (tensors on ``input_values``' device)."""
        out = tokenize_batch(
            input_values, self.config.sampling_rate, lead_mask=lead_mask,
            window_s=tuple(self.config.beat_window_s), max_beats=None, qrs=self.config.qrs_settings,
        )
        n = min(out["beats"].shape[1], self.config.max_beats)
        out = {k: (v if k == "num_beats" else v[:, :n]).to(input_values.device) for k, v in out.items()}
        out["num_beats"] = out["beat_mask"].sum(1)
        return out

    def _check(self, input_values, lead_mask, beats, beat_mask, rr):
        cfg = self.config
        if beats is None:
            if input_values is None:
                raise ValueError("BeatNet needs input_values (batch, leads, samples) or precomputed beats.")
            if input_values.dim() != 3 or input_values.shape[1] != cfg.num_leads:
                raise ValueError(
                    f"input_values must have shape (batch, {cfg.num_leads} leads, samples); got {tuple(input_values.shape)}."
                )
            batch = input_values.shape[:2]
        else:
            if beats.dim() != 4 or beats.shape[2] != cfg.num_leads or beats.shape[3] != cfg.beat_samples:
                raise ValueError(
                    f"beats must have shape (batch, beats, {cfg.num_leads}, {cfg.beat_samples}); got {tuple(beats.shape)}."
                )
            if beats.shape[1] > cfg.max_beats:
                raise ValueError(f"{beats.shape[1]} beats given; this model takes at most max_beats={cfg.max_beats}.")
            if beat_mask is None or rr is None:
                raise ValueError("precomputed beats need beat_mask (batch, beats) and rr (batch, beats, 2).")
            batch = (beats.shape[0], beats.shape[2])
        device = beats.device if beats is not None else input_values.device
        if lead_mask is None:
            lead_mask = torch.ones(batch, dtype=torch.bool, device=device)
        elif tuple(lead_mask.shape) != tuple(batch):
            raise ValueError(f"lead_mask must have shape (batch, leads) = {tuple(batch)}, got {tuple(lead_mask.shape)}.")
        lead_mask = lead_mask.bool()
        if not bool(lead_mask.any(1).all()):
            raise ValueError("every sample needs at least one present lead in lead_mask.")
        return lead_mask

    def forward(
        self,
        input_values: torch.Tensor | None = None,
        lead_mask: torch.Tensor | None = None,
        beats: torch.Tensor | None = None,
        beat_mask: torch.Tensor | None = None,
        rr: torch.Tensor | None = None,
        output_lead_weights: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BeatNetModelOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        lead_mask = self._check(input_values, lead_mask, beats, beat_mask, rr)
        r_peaks = None
        if beats is None:
            tokens = self.tokenize(input_values, lead_mask)
            beats, beat_mask, rr, r_peaks = tokens["beats"], tokens["beat_mask"], tokens["rr"], tokens["r_peaks"]
        beat_mask = beat_mask.bool()
        if beats.shape[1] == 0:  # precomputed tokens of records without any beat: one (padding) slot
            beats = beats.new_zeros(beats.shape[0], 1, *beats.shape[2:])
            beat_mask = beat_mask.new_zeros(beat_mask.shape[0], 1)
            rr = rr.new_zeros(rr.shape[0], 1, 2)
        num_beats = beat_mask.sum(1)
        empty = num_beats == 0
        dtype = self.position_embeddings.dtype
        # absent leads are zeroed (not just down-weighted) so inf/NaN there cannot leak through 0 * inf
        beats = torch.where(lead_mask[:, None, :, None], beats.to(dtype), torch.zeros((), dtype=dtype, device=beats.device))
        b, n, leads, s = beats.shape
        morph = self.morphology(beats.reshape(b * n * leads, s)).view(b, n, leads, -1)
        x, lead_weights = self.spatial(morph, lead_mask)

        rr = rr.to(dtype).clamp(min=0.0, max=10.0)
        median = torch.stack([r[m].median() if bool(m.any()) else r.new_zeros(()) for r, m in zip(rr[..., 0], beat_mask)])
        rel = rr / median.clamp(min=1e-3)[:, None, None]
        x = x + self.rr_projection(torch.cat([rr, torch.log(rel.clamp(min=0.1, max=10.0))], -1))
        x = x + self.position_embeddings[:n]
        x = x * beat_mask[..., None]
        lead_weights = lead_weights * beat_mask[..., None]  # padding beats (and records without beats): 0
        if bool(empty.any()):
            # a record without beats is one learned empty-sequence token (first slot), never a crash
            slot0 = torch.zeros_like(beat_mask)
            slot0[:, 0] = True
            first = empty[:, None] & slot0
            x = torch.where(first[..., None], self.no_beat_embedding.to(x.dtype), x)
            beat_mask = beat_mask | first
        hidden = (x,) if output_hidden_states else None
        pad = ~beat_mask
        for layer in self.rhythm:
            x = layer(x, src_key_padding_mask=pad)
            if output_hidden_states:
                hidden = hidden + (x,)
        x = self.norm(x)
        w = beat_mask[..., None].to(x.dtype)
        pooled = (x * w).sum(1) / w.sum(1)
        lw = lead_weights if output_lead_weights else None
        real = beat_mask & ~empty[:, None]  # the empty-sequence token is not a beat
        if not return_dict:
            return tuple(v for v in (x, pooled, real, rr, lw, num_beats, r_peaks, hidden) if v is not None)
        return BeatNetModelOutput(
            last_hidden_state=x, pooler_output=pooled, beat_mask=real, rr=rr, lead_weights=lw, num_beats=num_beats,
            r_peaks=r_peaks, hidden_states=hidden,
        )


def _clone(layer: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(layer)


class BeatNetForSequenceClassification(BeatNetPreTrainedModel):
    """Pooled BEAT-Net features -> linear head; cross-entropy / BCE / MSE by ``config.problem_type``."""

    def __init__(self, config: BeatNetConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.beatnet = BeatNetModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

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
        input_values: torch.Tensor | None = None,
        lead_mask: torch.Tensor | None = None,
        beats: torch.Tensor | None = None,
        beat_mask: torch.Tensor | None = None,
        rr: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_lead_weights: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BeatNetForSequenceClassificationOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.beatnet(
            input_values, lead_mask=lead_mask, beats=beats, beat_mask=beat_mask, rr=rr,
            output_lead_weights=output_lead_weights, output_hidden_states=output_hidden_states, return_dict=True,
        )
        pooled = outputs.pooler_output
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            problem = self._problem_type(labels)
            if problem == "regression":
                target = labels.to(logits.dtype)
                loss = F.mse_loss(logits.squeeze(-1), target.reshape(-1)) if self.num_labels == 1 else F.mse_loss(logits, target)
            elif problem == "single_label_classification":
                loss = F.cross_entropy(logits, labels.view(-1).long())
            else:
                loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        if not return_dict:
            out = (logits, pooled)
            return ((loss,) + out) if loss is not None else out
        return BeatNetForSequenceClassificationOutput(
            loss=loss, logits=logits, pooler_output=pooled, num_beats=outputs.num_beats,
            lead_weights=outputs.lead_weights, beat_mask=outputs.beat_mask if output_lead_weights else None,
            r_peaks=outputs.r_peaks if output_lead_weights else None, hidden_states=outputs.hidden_states,
        )


__all__ = [
    "BEATNET_AUTO_MAP",
    "BeatNetPreTrainedModel",
    "BeatNetModel",
    "BeatNetForSequenceClassification",
    "BeatNetModelOutput",
    "BeatNetForSequenceClassificationOutput",
]
