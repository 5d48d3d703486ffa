"""BEAT-Net configuration.

Hub-facing module: imports transformers and its sibling ``qrs.py`` (numpy, scipy) with a single-dot import.
"""

from __future__ import annotations

from transformers import PreTrainedConfig

from .qrs import qrs_settings as _qrs_settings

CANONICAL_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


class BeatNetConfig(PreTrainedConfig):
    r"""Configuration of a BEAT-Net model (heartbeat tokens -> morphology, spatial and rhythm encoders).

    Args:
        lead_names (`list[str]`): leads of ``input_values`` in order; canonical 12-lead order by default.
        sampling_rate (`int`): sampling rate in Hz of ``input_values`` (QRS detection and beat windows use it).
        beat_window_s (`list[float]`): seconds before and after each R peak in a beat token.
        max_beats (`int`): beats kept per record (the first ones); also the size of the position table.
        qrs_settings (`dict`): QRS detector settings (``qrs.QRS_DEFAULTS`` updated with these); the model uses
            them when it finds beats in raw ``input_values`` itself, and the feature extractor saves the same.
        morphology_channels (`list[int]`): widths of the per-beat 1-D CNN (shared across leads); each layer
            halves the time resolution, then global average pooling.
        morphology_kernel_size (`int`): kernel of those convolutions (odd).
        hidden_size (`int`): width of beat embeddings and the rhythm transformer.
        spatial_num_heads (`int`): heads of the attention over present leads (a learned query per head).
        num_hidden_layers, num_attention_heads, intermediate_size: the rhythm transformer.
        hidden_dropout_prob (`float`): dropout in the rhythm transformer. classifier_dropout: before the head.
        layer_norm_eps, initializer_range (`float`): as in other transformers models.
    """

    model_type = "beatnet"

    lead_names: list[str] | tuple[str, ...] = CANONICAL_LEADS
    sampling_rate: int | float = 500
    beat_window_s: list[float] | tuple[float, ...] = (0.25, 0.45)
    max_beats: int = 64
    qrs_settings: dict | None = None
    morphology_channels: list[int] | tuple[int, ...] = (16, 32, 64)
    morphology_kernel_size: int = 7
    hidden_size: int = 64
    spatial_num_heads: int = 2
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 128
    hidden_dropout_prob: float | int = 0.1
    classifier_dropout: float | int = 0.1
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        self.lead_names = [str(name) for name in self.lead_names]
        self.beat_window_s = [float(v) for v in self.beat_window_s]
        self.morphology_channels = [int(v) for v in self.morphology_channels]
        settings = _qrs_settings(**(self.qrs_settings or {}))
        settings["band_hz"] = list(settings["band_hz"])  # JSON round trips give lists
        self.qrs_settings = settings
        super().__post_init__(**kwargs)
        self._validate_beatnet()

    def _validate_beatnet(self) -> None:
        def fail(message: str):
            raise ValueError(f"BeatNetConfig: {message}")

        if not self.lead_names:
            fail("lead_names must name at least one lead.")
        if len(set(self.lead_names)) != len(self.lead_names):
            fail(f"lead_names has duplicates: {self.lead_names}.")
        if not (isinstance(self.sampling_rate, (int, float)) and self.sampling_rate >= 40):
            fail(f"sampling_rate must be a number of Hz >= 40 (QRS detection), got {self.sampling_rate!r}.")
        if len(self.beat_window_s) != 2 or self.beat_window_s[0] < 0 or self.beat_window_s[1] <= 0:
            fail(f"beat_window_s must be [seconds before >= 0, seconds after > 0], got {self.beat_window_s}.")
        if self.beat_samples < 8:
            fail(f"beat window is only {self.beat_samples} samples at {self.sampling_rate} Hz; widen beat_window_s.")
        if self.max_beats < 1:
            fail(f"max_beats must be >= 1, got {self.max_beats}.")
        if not self.morphology_channels or any(c < 1 for c in self.morphology_channels):
            fail(f"morphology_channels must be positive widths, got {self.morphology_channels}.")
        if self.morphology_kernel_size < 1 or self.morphology_kernel_size % 2 == 0:
            fail(f"morphology_kernel_size must be a positive odd integer, got {self.morphology_kernel_size}.")
        if self.hidden_size < 1:
            fail(f"hidden_size must be >= 1, got {self.hidden_size}.")
        for name in ("spatial_num_heads", "num_attention_heads"):
            heads = getattr(self, name)
            if heads < 1 or self.hidden_size % heads:
                fail(f"hidden_size {self.hidden_size} must be a positive multiple of {name} ({heads}).")
        if self.num_hidden_layers < 0 or self.intermediate_size < 1:
            fail("num_hidden_layers must be >= 0 and intermediate_size >= 1.")
        for name in ("hidden_dropout_prob", "classifier_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                fail(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        if self.layer_norm_eps <= 0 or self.initializer_range <= 0:
            fail("layer_norm_eps and initializer_range must be positive.")

    @property
    def num_leads(self) -> int:
        return len(self.lead_names)

    @property
    def beat_window_samples(self) -> tuple[int, int]:
        """Samples before and after the R peak (rounded as in ``qrs.beat_window_samples``)."""
        return int(round(self.beat_window_s[0] * self.sampling_rate)), int(round(self.beat_window_s[1] * self.sampling_rate))

    @property
    def beat_samples(self) -> int:
        pre, post = self.beat_window_samples
        return pre + post


__all__ = ["BeatNetConfig"]
