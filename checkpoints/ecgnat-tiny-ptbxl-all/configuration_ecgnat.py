"""ECG-NAT model configuration.

Hub-facing module: it is copied flat next to saved checkpoints and loaded with ``trust_remote_code=True``
on machines without ``ecgnat_hf``, so it imports only the standard library and transformers.
"""

from __future__ import annotations

import math

from transformers import PreTrainedConfig

CANONICAL_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

# Names accepted for ``attn_implementation``. transformers' own defaults ("eager", "sdpa") and "auto"
# mean: natten's fused kernels on CUDA when natten is installed, the plain-PyTorch op otherwise.
NA_BACKENDS = ("auto", "na_torch", "natten")


# Size presets. ``tiny`` trains in minutes on a 2-core CPU (100 Hz input, the rate of the bundled PTB-XL
# sample); ``small`` and ``base`` take 500 Hz input, as recorded by most 12-lead carts, with a 16 ms stem
# token (stride 8) and DiNAT-style dilated layers that reach rhythm-length context at linear cost.
# tiny departs from the MAE defaults where measurements on real PTB-XL said so: its mask cells are 16 samples
# (160 ms), too short for per-patch normalisation to mean anything (targets become amplified baseline noise),
# so it reconstructs the standardised signal; a 0.6 mask ratio and no drop path suit its few hundred steps.
# Its second version (chosen on validation fold 8, see the README's ablation table) runs a narrow lead-wise stem
# (16 channels per lead) into a wide fused token (64), pools mean and max for the head, and hides random leads
# while fine-tuning: as accurate as the ResNet1d baseline on 12 leads, far better on lead subsets, and faster.
SUPCON_POSITIVES = ("any", "jaccard")

PRESETS: dict[str, dict] = {
    "tiny": dict(
        sampling_rate=100,
        patch_size=2,
        stem_kernel_size=7,
        stem_hidden_size=16,
        hidden_sizes=[64, 96, 128],
        depths=[1, 1, 2],
        num_heads=[2, 3, 4],
        classifier_pooling="mean_max",
        finetune_lead_mask_prob=0.3,
        stem_norm="fused",
        kernel_sizes=[15, 15, 15],
        dilations=[[1], [1], [1, 4]],
        decoder_hidden_size=64,
        decoder_num_layers=1,
        mask_unit_size=8,
        mask_ratio=0.6,
        norm_target=False,
        drop_path_rate=0.0,
        projection_dim=64,
    ),
    "small": dict(
        sampling_rate=500,
        patch_size=8,
        stem_kernel_size=15,
        hidden_sizes=[64, 128, 256],
        depths=[2, 3, 4],
        num_heads=[2, 4, 8],
        kernel_sizes=[15, 15, 15],
        dilations=[[1, 8], [1, 4, 1], [1, 4, 1, 4]],
        decoder_hidden_size=128,
        decoder_num_layers=1,
        mask_unit_size=8,
        projection_dim=128,
    ),
    "base": dict(
        sampling_rate=500,
        patch_size=8,
        stem_kernel_size=15,
        hidden_sizes=[64, 128, 256, 512],
        depths=[2, 3, 6, 3],
        num_heads=[2, 4, 8, 16],
        kernel_sizes=[15, 15, 15, 15],
        dilations=[[1, 16], [1, 8, 1], [1, 4, 1, 4, 1, 4], [1, 2, 1]],
        decoder_hidden_size=256,
        decoder_num_layers=2,
        mask_unit_size=16,
        projection_dim=128,
    ),
}


class ECGNATConfig(PreTrainedConfig):
    r"""Configuration of an ECG-NAT model.

    Args:
        lead_names (`list[str]`): leads of ``input_values`` in order; canonical 12-lead order by default.
        sampling_rate (`int`): sampling rate in Hz the model expects; the feature extractor resamples to it.
        patch_size (`int`): overall stride of the lead-wise convolutional stem (samples per stem token).
        stem_kernel_size (`int`): kernel of the first stem convolution.
        stem_hidden_size (`int`, optional): channels of the lead-wise stem, per lead, before the lead fusion
            projects every lead to ``hidden_sizes[0]``. ``None``: ``hidden_sizes[0]``. A narrow lead-wise stem
            with a wide fused token is cheaper (the stem runs once per lead) and keeps more of each lead.
        hidden_sizes, depths, num_heads, kernel_sizes (`list[int]`): per stage width, number of blocks, attention
            heads and neighbourhood size (odd). Stages are separated by a stride-2 downsampling convolution.
        dilations (`list[list[int]]`): per stage, one dilation per block (DiNAT schedule). ``None``: all 1.
            At run time a dilation larger than the sequence allows is reduced, so any input length works.
        mlp_ratio (`float`): hidden size of the block MLP relative to the stage width.
        drop_path_rate (`float`): stochastic depth, linearly increasing over all blocks.
        hidden_dropout_prob (`float`): dropout after attention/MLP projections and before the classifier.
        layer_norm_eps, initializer_range (`float`): as in other transformers models.
        lead_fusion (`str`): ``"attention"`` (learned weights over present leads, inspectable) or ``"mean"``.
        mask_ratio (`float`): fraction of mask units hidden during masked-reconstruction pretraining.
        mask_unit_size (`int`): mask unit in stem tokens; a multiple of the coarsest stride ``2**(stages-1)``
            so that masked regions stay aligned through every downsampling.
        decoder_hidden_size, decoder_num_layers, decoder_kernel_size: the light reconstruction decoder.
        norm_target (`bool`): per-patch normalised reconstruction targets (MAE).
        lead_mask_prob (`float`): random lead masking during pretraining: each present lead is hidden from the
            encoder with this probability (at least one lead is kept) and must be reconstructed.
        global_loss_weight (`float`): weight of the global (segment-contrast, CMSC) term in pretraining; 0 disables.
        global_temperature (`float`): temperature of that contrastive term.
        supcon_weight (`float`): weight of the supervised-contrastive loss added to the classification loss.
        supcon_temperature (`float`): its temperature (Khosla et al. use 0.07-0.1).
        supcon_positives (`str`): for multi-label targets, which pairs are positives. ``"any"``: pairs that share
            at least one label, each weighted 1. ``"jaccard"``: every pair weighted by the Jaccard overlap of its
            two label sets, so that sharing one common statement (sinus rhythm, say) among several does not pull
            two records together as if they matched. Single-label targets give the same loss either way.
        projection_dim (`int`): size of the normalised projection the contrastive losses use.
        classifier_dropout (`float`): dropout on the pooled features before the classification head.
        classifier_pooling (`str`): ``"mean"`` (mean of the final tokens) or ``"mean_max"`` (mean and max
            concatenated, as the ResNet1d baseline does: a max keeps short, local findings such as a Q wave).
        finetune_lead_mask_prob (`float`): random lead masking during supervised training (training mode
            only): each present lead is hidden with this probability, at least one kept. Keeps a checkpoint
            fine-tuned on 12 leads accurate on lead subsets. 0 disables.
        finetune_amplitude_scale (`float`): amplitude augmentation during supervised training (training mode
            only): each record is multiplied by one factor drawn from U(1 - s, 1 + s), the same for all its
            leads, so the leads' relative sizes are kept. 0 disables.
        finetune_noise_std (`float`): Gaussian noise added to every present lead during supervised training,
            in the extractor's output units (mV under ``scaling="center"``). 0 disables.
        finetune_time_shift_s (`float`): during supervised training, each record is shifted in time by up to this
            many seconds either way (all leads alike; the samples shifted in are zero). 0 disables.
        finetune_baseline_wander (`float`): during supervised training, a slow sinusoid (0.05-0.5 Hz, one per
            record) is added to every present lead, with a size per lead of up to this much, in the extractor's
            output units. 0 disables.
        stem_norm (`str`): ``"token"`` (a LayerNorm on every lead's stem token and on every fused token),
            ``"fused"`` (on the fused token only) or ``"none"``. A per-lead token LayerNorm rescales each lead's
            20 ms token to unit size, so a flat baseline and a tall QRS enter the fusion with the same
            magnitude; ``"fused"`` keeps the leads' relative amplitudes, ``"none"`` keeps them all (the blocks
            are pre-norm, so training stays stable).
        attn_implementation: ``"auto"`` / ``"eager"`` / ``"sdpa"`` (natten on CUDA if installed, else the
            plain-PyTorch op), ``"na_torch"`` (always plain PyTorch) or ``"natten"`` (always natten).
    """

    model_type = "ecgnat"

    lead_names: list[str] | tuple[str, ...] = CANONICAL_LEADS
    sampling_rate: int | float = 500
    patch_size: int = 8
    stem_kernel_size: int = 15
    stem_hidden_size: int | None = None
    hidden_sizes: list[int] | tuple[int, ...] = (64, 128, 256)
    depths: list[int] | tuple[int, ...] = (2, 3, 4)
    num_heads: list[int] | tuple[int, ...] = (2, 4, 8)
    kernel_sizes: list[int] | tuple[int, ...] | int = (15, 15, 15)
    dilations: list | tuple | None = None
    mlp_ratio: float | int = 3.0
    drop_path_rate: float | int = 0.1
    hidden_dropout_prob: float | int = 0.0
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    lead_fusion: str = "attention"
    mask_ratio: float = 0.75
    mask_unit_size: int | None = None
    decoder_hidden_size: int = 128
    decoder_num_layers: int = 1
    decoder_kernel_size: int = 7
    norm_target: bool = True
    lead_mask_prob: float | int = 0.5
    global_loss_weight: float | int = 0.0
    global_temperature: float = 0.1
    supcon_weight: float | int = 0.1
    supcon_temperature: float = 0.1
    supcon_positives: str = "any"
    projection_dim: int = 128
    classifier_dropout: float | int = 0.1
    classifier_pooling: str = "mean"
    finetune_lead_mask_prob: float | int = 0.0
    finetune_amplitude_scale: float | int = 0.0
    finetune_noise_std: float | int = 0.0
    finetune_time_shift_s: float | int = 0.0
    finetune_baseline_wander: float | int = 0.0
    stem_norm: str = "token"

    def __post_init__(self, **kwargs):
        self.lead_names = [str(name) for name in self.lead_names]
        self.hidden_sizes = [int(v) for v in self.hidden_sizes]
        self.depths = [int(v) for v in self.depths]
        self.num_heads = [int(v) for v in self.num_heads]
        n = len(self.depths)
        if isinstance(self.kernel_sizes, int):
            self.kernel_sizes = [self.kernel_sizes] * n
        self.kernel_sizes = [int(v) for v in self.kernel_sizes]
        if self.dilations is None:
            self.dilations = [[1] * d for d in self.depths]
        self.dilations = [[int(x) for x in stage] for stage in self.dilations]
        if self.mask_unit_size is None:
            self.mask_unit_size = 2 ** (n - 1)
        super().__post_init__(**kwargs)
        self._validate_ecgnat()

    # ------------------------------------------------------------------ validation
    def _validate_ecgnat(self) -> None:
        def fail(message: str):
            raise ValueError(f"ECGNATConfig: {message}")

        if not self.lead_names:
            fail("lead_names must name at least one lead.")
        if len(set(self.lead_names)) != len(self.lead_names):
            fail(f"lead_names has duplicates: {self.lead_names}.")
        if not (isinstance(self.sampling_rate, (int, float)) and self.sampling_rate > 0):
            fail(f"sampling_rate must be a positive number of Hz, got {self.sampling_rate!r}.")
        if self.patch_size < 1:
            fail(f"patch_size must be >= 1, got {self.patch_size}.")
        if self.stem_kernel_size < 1 or self.stem_kernel_size % 2 == 0:
            fail(f"stem_kernel_size must be a positive odd integer, got {self.stem_kernel_size}.")
        n = len(self.depths)
        if n == 0:
            fail("depths must list at least one stage.")
        for name in ("hidden_sizes", "num_heads", "kernel_sizes", "dilations"):
            if len(getattr(self, name)) != n:
                fail(f"{name} has {len(getattr(self, name))} entries but depths has {n} stages.")
        for i, (dim, heads, depth, k, dil) in enumerate(
            zip(self.hidden_sizes, self.num_heads, self.depths, self.kernel_sizes, self.dilations)
        ):
            if depth < 1:
                fail(f"stage {i}: depth must be >= 1, got {depth}.")
            if dim < 1 or heads < 1 or dim % heads:
                fail(f"stage {i}: hidden size {dim} must be a positive multiple of num_heads {heads}.")
            if k < 3 or k % 2 == 0:
                fail(f"stage {i}: kernel size must be odd and >= 3, got {k}.")
            if len(dil) != depth:
                fail(f"stage {i}: {len(dil)} dilations given for {depth} blocks.")
            if any(d < 1 for d in dil):
                fail(f"stage {i}: dilations must be >= 1, got {dil}.")
        if not 0.0 <= self.drop_path_rate < 1.0:
            fail(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}.")
        for name in ("hidden_dropout_prob", "classifier_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                fail(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        if self.mlp_ratio <= 0:
            fail(f"mlp_ratio must be positive, got {self.mlp_ratio}.")
        if self.layer_norm_eps <= 0 or self.initializer_range <= 0:
            fail("layer_norm_eps and initializer_range must be positive.")
        if self.stem_hidden_size is not None and self.stem_hidden_size < 2:
            fail(f"stem_hidden_size must be >= 2 (or None), got {self.stem_hidden_size}.")
        if self.classifier_pooling not in ("mean", "mean_max"):
            fail(f"classifier_pooling must be 'mean' or 'mean_max', got {self.classifier_pooling!r}.")
        if not 0.0 <= self.finetune_lead_mask_prob < 1.0:
            fail(f"finetune_lead_mask_prob must be in [0, 1), got {self.finetune_lead_mask_prob}.")
        if not 0.0 <= self.finetune_amplitude_scale < 1.0:
            fail(f"finetune_amplitude_scale must be in [0, 1), got {self.finetune_amplitude_scale}.")
        if not 0.0 <= self.finetune_noise_std < float("inf"):
            fail(f"finetune_noise_std must be a finite number >= 0, got {self.finetune_noise_std}.")
        if not 0.0 <= self.finetune_time_shift_s < float("inf"):
            fail(f"finetune_time_shift_s must be a finite number of seconds >= 0, got {self.finetune_time_shift_s}.")
        if not 0.0 <= self.finetune_baseline_wander < float("inf"):
            fail(f"finetune_baseline_wander must be a finite number >= 0, got {self.finetune_baseline_wander}.")
        if self.stem_norm not in ("token", "fused", "none"):
            fail(f"stem_norm must be 'token', 'fused' or 'none', got {self.stem_norm!r}.")
        if self.lead_fusion not in ("attention", "mean"):
            fail(f"lead_fusion must be 'attention' or 'mean', got {self.lead_fusion!r}.")
        if not 0.0 < self.mask_ratio < 1.0:
            fail(f"mask_ratio must be in (0, 1), got {self.mask_ratio}.")
        coarsest = 2 ** (n - 1)
        if self.mask_unit_size < 1 or self.mask_unit_size % coarsest:
            fail(
                f"mask_unit_size ({self.mask_unit_size} stem tokens) must be a positive multiple of the coarsest "
                f"stride {coarsest} (2**(stages-1)) so masked regions stay aligned through downsampling."
            )
        if self.decoder_hidden_size < 1 or self.decoder_num_layers < 0:
            fail("decoder_hidden_size must be >= 1 and decoder_num_layers >= 0.")
        if self.decoder_kernel_size < 3 or self.decoder_kernel_size % 2 == 0:
            fail(f"decoder_kernel_size must be odd and >= 3, got {self.decoder_kernel_size}.")
        if not 0.0 <= self.lead_mask_prob < 1.0:
            fail(f"lead_mask_prob must be in [0, 1), got {self.lead_mask_prob}.")
        for name in ("global_loss_weight", "supcon_weight"):
            if getattr(self, name) < 0:
                fail(f"{name} must be >= 0, got {getattr(self, name)}.")
        for name in ("global_temperature", "supcon_temperature"):
            if getattr(self, name) <= 0:
                fail(f"{name} must be > 0, got {getattr(self, name)}.")
        if self.supcon_positives not in SUPCON_POSITIVES:
            fail(f"supcon_positives must be one of {SUPCON_POSITIVES}, got {self.supcon_positives!r}.")
        if self.projection_dim < 1:
            fail(f"projection_dim must be >= 1, got {self.projection_dim}.")
        impl = getattr(self, "_attn_implementation_internal", None)
        if impl is not None and impl not in NA_BACKENDS + ("eager", "sdpa"):
            fail(f"attn_implementation must be one of {NA_BACKENDS + ('eager', 'sdpa')}, got {impl!r}.")

    # ------------------------------------------------------------------ derived values
    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def hidden_size(self) -> int:
        """Width of the final stage: the size of pooled features."""
        return self.hidden_sizes[-1]

    @property
    def total_stride(self) -> int:
        """Input samples per final-stage token."""
        return self.patch_size * 2 ** (self.num_stages - 1)

    @property
    def num_leads(self) -> int:
        return len(self.lead_names)

    def min_input_length(self) -> int:
        """Shortest input (samples) the encoder accepts: one mask unit."""
        return self.patch_size * self.mask_unit_size

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "ECGNATConfig":
        """A named size preset (``tiny``, ``small``, ``base``), optionally overriding any argument."""
        if name not in PRESETS:
            raise ValueError(f"Unknown ECG-NAT preset {name!r}; choose one of {sorted(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})

    def seconds_to_samples(self, seconds: float) -> int:
        return int(math.floor(seconds * self.sampling_rate))


__all__ = ["ECGNATConfig", "CANONICAL_LEADS", "PRESETS", "NA_BACKENDS"]
