"""BEAT-Net feature extractor: ECG-NAT's preprocessing (lead map, resampling, filtering, scaling, windows) plus
the beat tokenizer's settings (beat window, QRS detector settings, number of beats), saved together in
``preprocessor_config.json``.

Hub-facing: a BEAT-Net checkpoint carries this file flat beside ``feature_extraction_ecgnat.py`` and ``qrs.py``
(``save_pretrained`` copies all three), so ``AutoFeatureExtractor.from_pretrained(ckpt, trust_remote_code=True)``
works where ``ecgnat_hf`` is not installed. Imports: numpy, scipy, transformers and those two siblings.
"""
from __future__ import annotations

import os
import shutil
from typing import Any

import numpy as np
from transformers.feature_extraction_utils import BatchFeature

try:  # flat remote-code folder: the checkpoint carries feature_extraction_ecgnat.py beside this file
    from .feature_extraction_ecgnat import ECGInputError, ECGNATFeatureExtractor
except ImportError:  # inside the ecgnat_hf package: ECG-NAT's family folder, models/ecgnat/
    from ecgnat_hf.models.ecgnat.feature_extraction_ecgnat import ECGInputError, ECGNATFeatureExtractor
from .qrs import beat_window_samples, qrs_settings, tokenize_batch

_NO_BEATS = ("error", "empty")


class NoBeatsError(ECGInputError):
    """No heartbeat (QRS complex) was found in a record: asystole, a flat line, a disconnected lead, noise."""


class BeatNetFeatureExtractor(ECGNATFeatureExtractor):
    r"""Raw ECGs -> BEAT-Net inputs: ``input_values``/``lead_mask`` windows as for ECG-NAT, optionally with beat tokens.

    Args (beyond :class:`ECGNATFeatureExtractor`'s):
        beat_window_s: ``[seconds before, seconds after]`` each R peak in a beat token.
        max_beats: beats kept per window (the first ones), as the model's ``max_beats``.
        qrs_settings: QRS detector settings (``qrs.QRS_DEFAULTS`` updated with these).
        no_beats: what happens to a record in which no beat is found in any window: ``"error"`` (default)
            raises :class:`NoBeatsError` naming the record ("record 3" in a batch, "input" for one record;
            ``ecgnat predict`` reports it with the file name), ``"empty"`` keeps it: its ``num_beats`` is 0
            and the model represents it by its learned empty-sequence token.
        return_beats: also return the beat tokens (``beats``, ``beat_mask``, ``rr``, ``r_peaks``); off by
            default because BEAT-Net finds the beats in ``input_values`` itself (same detector, same settings).

    With ``no_beats="error"`` or ``return_beats``, a call also returns ``num_beats`` (examples,): the beats found
    in each window.
    """

    model_input_names = ["input_values", "lead_mask"]
    _auto_class = None  # remote code is written by save_pretrained below (flat copy of three files)

    def __init__(
        self,
        sampling_rate: float = 500,
        beat_window_s=(0.25, 0.45),
        max_beats: int = 64,
        qrs_settings: dict | None = None,
        no_beats: str = "error",
        return_beats: bool = False,
        **kwargs,
    ):
        super().__init__(sampling_rate=sampling_rate, **kwargs)
        self.beat_window_s = [float(v) for v in beat_window_s]
        self.max_beats = int(max_beats)
        settings = _settings(qrs_settings)
        self.qrs_settings = settings
        self.no_beats = no_beats
        self.return_beats = bool(return_beats)
        if len(self.beat_window_s) != 2:
            raise ValueError(f"beat_window_s must be [seconds before, seconds after], got {beat_window_s}")
        beat_window_samples(float(self.sampling_rate), self.beat_window_s)  # validates
        if self.max_beats < 1:
            raise ValueError(f"max_beats must be >= 1, got {max_beats}")
        if no_beats not in _NO_BEATS:
            raise ValueError(f"no_beats must be one of {_NO_BEATS}, got {no_beats!r}")

    @classmethod
    def from_model_config(cls, config, **kwargs) -> "BeatNetFeatureExtractor":
        """The extractor matching a ``BeatNetConfig`` (rate, leads, beat window, QRS settings, max_beats)."""
        settings = dict(sampling_rate=config.sampling_rate, lead_names=list(config.lead_names),
                        beat_window_s=list(config.beat_window_s), max_beats=config.max_beats,
                        qrs_settings=dict(config.qrs_settings))
        settings.update(kwargs)
        return cls(**settings)

    def check_matches(self, config) -> None:
        """Raise ``ValueError`` when this extractor's tokenizer settings differ from the model config's."""
        diffs = []
        for name in ("sampling_rate", "lead_names", "beat_window_s", "max_beats", "qrs_settings"):
            mine, theirs = getattr(self, name), getattr(config, name)
            if name == "qrs_settings":
                mine, theirs = _settings(mine), _settings(theirs)
            elif name == "lead_names":
                mine, theirs = list(mine), list(theirs)
            else:
                mine, theirs = np.asarray(mine, dtype=float).tolist(), np.asarray(theirs, dtype=float).tolist()
            if mine != theirs:
                diffs.append(f"{name}: extractor {mine} vs model {theirs}")
        if diffs:
            raise ValueError("BEAT-Net feature extractor and model disagree: " + "; ".join(diffs))

    def tokenize(self, input_values, lead_mask=None) -> dict[str, np.ndarray]:
        """Beat tokens of preprocessed windows (examples, leads, samples), as BEAT-Net makes them from
        ``input_values``: ``beats`` (examples, beats, leads, beat_samples) float32, ``beat_mask``, ``rr``,
        ``r_peaks``, ``num_beats``. At most ``max_beats`` beats per window; at least one slot."""
        out = tokenize_batch(np.asarray(input_values, dtype=np.float32), float(self.sampling_rate),
                             lead_mask=None if lead_mask is None else np.asarray(lead_mask).astype(bool),
                             window_s=tuple(self.beat_window_s), qrs=self.qrs_settings, as_numpy=True)
        n = max(1, min(out["beats"].shape[1], self.max_beats))
        out = {k: (v if k == "num_beats" else v[:, :n]) for k, v in out.items()}
        out["num_beats"] = out["beat_mask"].sum(1).astype(np.int64)
        return out

    def __call__(self, raw_signals, *args, return_tensors: str | None = None, return_beats: bool | None = None,
                 no_beats: str | None = None, **kwargs) -> BatchFeature:
        """As :meth:`ECGNATFeatureExtractor.__call__`, plus ``num_beats`` and (``return_beats``) the beat tokens.

        ``no_beats`` overrides the configured policy for this call (``"error"`` or ``"empty"``).
        """
        policy = self.no_beats if no_beats is None else no_beats
        if policy not in _NO_BEATS:
            raise ValueError(f"no_beats must be one of {_NO_BEATS}, got {policy!r}")
        out = super().__call__(raw_signals, *args, return_tensors=None, **kwargs)
        data: dict[str, Any] = dict(out)
        want_beats = self.return_beats if return_beats is None else return_beats
        if policy == "empty" and not want_beats:
            return BatchFeature(data=data, tensor_type=return_tensors)  # nothing asks for the beats here
        tokens = self.tokenize(data["input_values"], data["lead_mask"])
        data["num_beats"] = tokens["num_beats"]
        if policy == "error":
            index = np.asarray(data["record_index"])
            n_records = int(index.max()) + 1 if index.size else 0
            for r in range(n_records):
                if not tokens["num_beats"][index == r].any():
                    where = f"record {r}" if n_records > 1 else "input"
                    seconds = float(np.asarray(data["attention_mask"])[index == r].sum()) / float(self.sampling_rate) \
                        if "attention_mask" in data else None
                    length = f" ({seconds:.1f} s)" if seconds is not None else ""
                    raise NoBeatsError(
                        f"{where}: no heartbeat (QRS complex) detected{length}: asystole, a flat line, a disconnected "
                        "lead or pure noise. BEAT-Net needs beats; pass no_beats='empty' to score such a record with "
                        "the model's empty-sequence token instead"
                    )
        if want_beats:
            for k in ("beats", "beat_mask", "rr", "r_peaks"):
                data[k] = tokens[k]
        return BatchFeature(data=data, tensor_type=return_tensors)

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Save ``preprocessor_config.json`` with an ``auto_map`` and the three remote-code files beside it."""
        self.auto_map = {"AutoFeatureExtractor": "feature_extraction_beatnet.BeatNetFeatureExtractor"}
        files = super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        here = os.path.dirname(os.path.abspath(__file__))
        base = os.path.abspath(_module_file(ECGNATFeatureExtractor))
        for src in (os.path.abspath(__file__), os.path.join(here, "qrs.py"), base):
            dst = os.path.join(save_directory, os.path.basename(src))
            if os.path.abspath(dst) != src:
                shutil.copyfile(src, dst)
        return files


def _settings(value) -> dict:
    s = qrs_settings(**dict(value or {}))
    s["band_hz"] = [float(v) for v in s["band_hz"]]
    return s


def _module_file(cls) -> str:
    import sys

    return sys.modules[cls.__module__].__file__


__all__ = ["BeatNetFeatureExtractor", "NoBeatsError"]
