"""ECG-NAT feature extractor: lead mapping, resampling, filtering, scaling, windowing.

This module is Hub-facing: ``save_pretrained`` of a registered extractor copies it flat next to the
checkpoint and ``AutoFeatureExtractor.from_pretrained(..., trust_remote_code=True)`` loads it on
machines without ``ecgnat_hf``. It therefore imports only the standard library, numpy, scipy, torch
and transformers, and it is the single home of the lead alias table (``ecgnat_hf.data.leads``
re-exports it).

Errors: bad input raises :class:`ECGInputError` (a ``ValueError``); lead-name problems raise its
subclass :class:`ECGLeadNameError`, which names the offending leads. ``ecgnat_hf.data.errors``
cannot be imported from here, so the dependency goes the other way: its ``LeadNameError`` subclasses
``ECGLeadNameError``. One ``except ECGLeadNameError`` (or ``except ValueError``) therefore catches
lead-name problems from both the record reader and this extractor.
"""
from __future__ import annotations

import math
import numbers
import re
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
from scipy import signal as _sps
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature

CANONICAL_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


class ECGInputError(ValueError):
    """Bad input given to the feature extractor (wrong shape, NaN/inf, missing sampling rate...)."""


class ECGLeadNameError(ECGInputError):
    """Unknown, duplicate or missing lead names; ``leads`` lists the offending names."""

    def __init__(self, *args, leads=()):
        super().__init__(*args)
        self.leads = tuple(leads)


# Only unambiguous aliases. Keys are "squashed" names: lower case, without spaces, '_' and '-', and
# without a leading "lead". Deliberately absent: CM5/MV5/ML5 and other bipolar chest leads (not V5),
# Frank leads (X, Y, Z / vx, vy, vz), "1"/"2"/"3" (could be channel numbers).
LEAD_ALIASES = {
    **{name.lower(): name for name in CANONICAL_LEADS},
    "mli": "I", "mlii": "II", "mliii": "III",  # MIT-BIH modified limb leads
    "di": "I", "dii": "II", "diii": "III", "d1": "I", "d2": "II", "d3": "III",  # European notation
    "avr": "aVR", "avl": "aVL", "avf": "aVF",
}

_SQUASH = re.compile(r"[\s_\-]+")


def _squash(name: str) -> str:
    key = _SQUASH.sub("", str(name)).lower()
    if key.startswith("lead") and len(key) > 4:
        key = key[4:]
    return key


def normalize_lead_name(name, record=None) -> str:
    """Map a lead name or alias to its canonical spelling (``"MLII"`` -> ``"II"``, ``"avr "`` -> ``"aVR"``).

    Raises :class:`ECGLeadNameError` (a ``ValueError``) naming the lead when it is not a standard
    12-lead name or an unambiguous alias.
    """
    canonical = LEAD_ALIASES.get(_squash(name))
    if canonical is None:
        where = f"{record}: " if record is not None else ""
        raise ECGLeadNameError(
            f"{where}unknown lead name {name!r}; expected one of {', '.join(CANONICAL_LEADS)} "
            "or an alias such as MLII, D1, avr",
            leads=(name,),
        )
    return canonical


def _is_tensor(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _is_record_like(x) -> bool:
    return hasattr(x, "signal") and hasattr(x, "sampling_rate")


def _is_array_like(x) -> bool:
    return isinstance(x, np.ndarray) or _is_tensor(x) or _is_record_like(x)


def _to_numpy(x) -> np.ndarray:
    if _is_tensor(x):
        x = x.detach().to("cpu")
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def _rate_fraction(source: float, target: float) -> tuple[int, int]:
    """up/down integers with up/down ~= target/source (exact for rational rates such as 360 -> 500)."""
    ratio = Fraction(target).limit_denominator(10**6) / Fraction(source).limit_denominator(10**6)
    ratio = ratio.limit_denominator(1000)
    return ratio.numerator, ratio.denominator


_SCALINGS = ("standardize", "robust", "none")
_MODES = ("window", "crop", "pad")


class ECGNATFeatureExtractor(SequenceFeatureExtractor):
    r"""Turns raw multi-lead ECGs into model inputs for ECG-NAT.

    Steps per record: map lead names (aliases such as ``MLII``, ``avr``, ``D1`` accepted) to the
    output lead order and build ``lead_mask`` (missing leads are zeros, marked 0, never imputed);
    resample to ``sampling_rate`` with ``scipy.signal.resample_poly`` (polyphase FIR with
    anti-aliasing); optional baseline removal and band-pass (zero-phase Butterworth); cut to
    fixed-length examples according to ``mode``; scale each lead of each example.

    Args:
        sampling_rate: target rate in Hz (the model's rate). Inputs at any rate are resampled to it.
        lead_names: output lead order (canonical names); default the 12 standard leads.
        window_s: example length in seconds for ``mode="window"`` and ``"crop"``.
        window_stride_s: hop between windows in ``"window"`` mode (default ``window_s / 2``).
        mode: ``"window"`` (default): long records become overlapping windows (covering the end),
            short ones one padded window; ``"crop"``: the first ``window_s`` of each record;
            ``"pad"``: whole records padded to the longest in the batch. ``window=False`` in
            ``__call__`` is a shortcut for ``"pad"``.
        min_length_s: shorter records are rejected.
        do_baseline_removal / baseline_cutoff_hz: zero-phase high-pass (Butterworth order 2).
        do_bandpass / bandpass_low / bandpass_high / bandpass_order: zero-phase Butterworth band-pass
            at the target rate; ``bandpass_high`` must lie below the target Nyquist frequency.
        scaling: ``"standardize"`` (per-lead z-score over the real samples of each example,
            default), ``"robust"`` (median / inter-quartile range), ``"none"`` (mV), or a positive
            number ``c``: values divided by ``c`` mV.
        padding_value: value of padded samples (masked by ``attention_mask``).

    ``__call__`` returns a ``BatchFeature`` with ``input_values`` (examples, leads, samples) float32,
    ``lead_mask`` (examples, leads) int64, ``attention_mask`` (examples, samples) int64 (1 = real
    sample), ``record_index`` (examples,) int64 (the input record each example came from) and
    ``window_start`` (examples,) float32 seconds, so window predictions can be aggregated per record.
    """

    model_input_names = ["input_values", "lead_mask"]

    def __init__(
        self,
        sampling_rate: float = 500,
        lead_names: Sequence[str] | None = None,
        window_s: float = 10.0,
        window_stride_s: float | None = None,
        mode: str = "window",
        min_length_s: float = 0.5,
        do_baseline_removal: bool = False,
        baseline_cutoff_hz: float = 0.5,
        do_bandpass: bool = False,
        bandpass_low: float = 0.5,
        bandpass_high: float = 40.0,
        bandpass_order: int = 4,
        scaling: str | float = "standardize",
        padding_value: float = 0.0,
        return_attention_mask: bool = True,
        **kwargs,
    ):
        # feature_size is derived from lead_names; a saved preprocessor_config.json contains it, and
        # passing it twice to SequenceFeatureExtractor.__init__ would fail on reload.
        kwargs.pop("feature_size", None)
        if "max_length_s" in kwargs:  # accepted as an alias of window_s
            window_s = kwargs.pop("max_length_s")
        lead_names = list(CANONICAL_LEADS if lead_names is None else lead_names)
        normalized = [normalize_lead_name(n) for n in lead_names]
        if len(set(normalized)) != len(normalized):
            raise ECGLeadNameError(f"duplicate output lead names in {lead_names}", leads=lead_names)
        super().__init__(
            feature_size=len(normalized),
            sampling_rate=sampling_rate,
            padding_value=float(padding_value),
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        self.lead_names = normalized
        self.window_s = float(window_s)
        self.window_stride_s = float(window_stride_s) if window_stride_s is not None else self.window_s / 2
        self.mode = mode
        self.min_length_s = float(min_length_s)
        self.do_baseline_removal = bool(do_baseline_removal)
        self.baseline_cutoff_hz = float(baseline_cutoff_hz)
        self.do_bandpass = bool(do_bandpass)
        self.bandpass_low = float(bandpass_low)
        self.bandpass_high = float(bandpass_high)
        self.bandpass_order = int(bandpass_order)
        self.scaling = scaling
        self._validate_settings()

    # ------------------------------------------------------------------ settings
    def _validate_settings(self) -> None:
        fs = self.sampling_rate
        if not isinstance(fs, numbers.Real) or not math.isfinite(fs) or fs <= 0:
            raise ValueError(f"sampling_rate must be a positive number of Hz, got {fs!r}")
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {self.mode!r}")
        if not self.window_s > 0:
            raise ValueError(f"window_s must be positive, got {self.window_s}")
        if not 0 < self.window_stride_s:
            raise ValueError(f"window_stride_s must be positive, got {self.window_stride_s}")
        nyquist = fs / 2
        if self.do_bandpass and not 0 < self.bandpass_low < self.bandpass_high < nyquist:
            raise ValueError(
                f"band-pass needs 0 < bandpass_low < bandpass_high < Nyquist ({nyquist:g} Hz at "
                f"sampling_rate={fs:g}); got {self.bandpass_low:g}-{self.bandpass_high:g} Hz"
            )
        if self.do_baseline_removal and not 0 < self.baseline_cutoff_hz < nyquist:
            raise ValueError(f"baseline_cutoff_hz must lie in (0, {nyquist:g}), got {self.baseline_cutoff_hz}")
        if isinstance(self.scaling, bool) or not (
            self.scaling in _SCALINGS
            or (isinstance(self.scaling, numbers.Real) and math.isfinite(self.scaling) and self.scaling > 0)
        ):
            raise ValueError(f"scaling must be one of {_SCALINGS} or a positive number of mV, got {self.scaling!r}")

    @property
    def window_length(self) -> int:
        """Samples per example at the target rate (window/crop modes)."""
        return int(round(self.window_s * self.sampling_rate))

    @property
    def window_stride(self) -> int:
        return max(1, int(round(self.window_stride_s * self.sampling_rate)))

    # ------------------------------------------------------------------ input handling
    def _split_inputs(self, raw_signals, sampling_rate, lead_names):
        """Return a list of (array, fs, names) per record, from any of the accepted input kinds."""
        if _is_array_like(raw_signals):
            arr = raw_signals if _is_record_like(raw_signals) else _to_numpy(raw_signals)
            items = list(arr) if (not _is_record_like(arr) and arr.ndim == 3) else [arr]
            batched_input = not _is_record_like(arr) and arr.ndim == 3
        elif isinstance(raw_signals, (list, tuple)):
            if len(raw_signals) == 0:
                raise ECGInputError("no input signals given (empty list)")
            if all(_is_array_like(x) for x in raw_signals):
                items, batched_input = list(raw_signals), True
            else:
                arr = np.asarray(raw_signals, dtype=np.float64)
                items = list(arr) if arr.ndim == 3 else [arr]
                batched_input = arr.ndim == 3
        else:
            raise ECGInputError(
                f"raw_signals must be a numpy array or torch tensor (leads, samples), a batch "
                f"(batch, leads, samples), a list of those, or records with .signal/.sampling_rate; "
                f"got {type(raw_signals).__name__}"
            )
        n = len(items)

        def per_record(value, what, is_per_record):
            if value is None:
                return [None] * n
            if is_per_record(value):
                if len(value) != n:
                    raise ECGInputError(f"{len(value)} {what} given for {n} records")
                return list(value)
            return [value] * n

        rates = per_record(
            sampling_rate, "sampling rates", lambda v: isinstance(v, (list, tuple)) or (isinstance(v, np.ndarray) and v.ndim > 0)
        )
        names = per_record(
            lead_names,
            "lead-name lists",
            lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and not isinstance(v[0], str),
        )
        out = []
        for i, item in enumerate(items):
            fs, ln = rates[i], names[i]
            if _is_record_like(item):
                fs = item.sampling_rate if fs is None else fs
                ln = getattr(item, "lead_names", None) if ln is None else ln
                item = item.signal
            out.append((item, fs, ln))
        return out

    def _prepare_record(self, i: int, n_records: int, x, fs, names, ignore_unknown_leads: bool):
        where = f"record {i}" if n_records > 1 else "input"
        x = _to_numpy(x)
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise ECGInputError(f"{where}: signal must be numeric, got dtype {x.dtype}")
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2:
            raise ECGInputError(f"{where}: expected a (leads, samples) signal, got shape {tuple(x.shape)}")
        x = x.astype(np.float64, copy=False)
        if fs is None:
            raise ECGInputError(
                f"{where}: no sampling rate given: pass sampling_rate=... (Hz) with the signals; the "
                f"extractor resamples to {self.sampling_rate:g} Hz and cannot guess the input rate"
            )
        try:
            fs = float(fs)
        except (TypeError, ValueError):
            raise ECGInputError(f"{where}: sampling_rate must be a number, got {fs!r}") from None
        if not math.isfinite(fs) or fs <= 0:
            raise ECGInputError(f"{where}: sampling_rate must be positive, got {fs!r}")
        if names is None:
            if x.shape[0] != len(self.lead_names):
                raise ECGInputError(
                    f"{where}: signal has {x.shape[0]} leads but no lead_names were given: pass "
                    f"lead_names=[...] (only a {len(self.lead_names)}-lead signal is assumed to be in the "
                    f"order {', '.join(self.lead_names)})"
                )
            names = list(self.lead_names)
        names = [names] if isinstance(names, str) else list(names)
        if len(names) != x.shape[0]:
            hint = " (signals must be (leads, samples); transpose a (samples, leads) array)" if (
                x.shape[1] == len(names)) else ""
            raise ECGInputError(
                f"{where}: {len(names)} lead names ({', '.join(map(str, names))}) for a signal with "
                f"{x.shape[0]} leads{hint}"
            )
        rows, targets, unknown, seen = [], [], [], {}
        for pos, name in enumerate(names):
            canonical = LEAD_ALIASES.get(_squash(name))
            if canonical is None:
                unknown.append(name)
                continue
            if canonical in seen:
                raise ECGLeadNameError(
                    f"{where}: duplicate lead {name!r} (same lead as {seen[canonical]!r}, {canonical})",
                    leads=(name, seen[canonical]),
                )
            seen[canonical] = name
            if canonical in self.lead_names:  # a standard lead the model does not use is dropped
                rows.append(pos)
                targets.append(self.lead_names.index(canonical))
        if unknown and not ignore_unknown_leads:
            raise ECGLeadNameError(
                f"{where}: unknown lead name(s) {', '.join(map(repr, unknown))}; expected "
                f"{', '.join(CANONICAL_LEADS)} or an alias (MLII, D1, avr, ...); pass "
                "ignore_unknown_leads=True to drop non-standard leads such as Frank vx/vy/vz",
                leads=unknown,
            )
        if not rows:
            raise ECGLeadNameError(
                f"{where}: none of the leads {names} is one of the model's leads {self.lead_names}", leads=names
            )
        x = x[rows]
        if not np.isfinite(x).all():
            bad = (~np.isfinite(x)).sum(axis=1)
            leads = [f"{names[rows[k]]} ({int(c)})" for k, c in enumerate(bad) if c]
            raise ECGInputError(f"{where}: signal contains NaN/inf samples in lead(s) {', '.join(leads)}")
        duration = x.shape[1] / fs
        if duration < self.min_length_s:
            raise ECGInputError(
                f"{where}: recording too short: {x.shape[1]} samples at {fs:g} Hz = {duration:.3f} s, "
                f"minimum is {self.min_length_s:g} s"
            )
        x = self.resample(x, fs)
        x = self._filter(x)
        full = np.zeros((len(self.lead_names), x.shape[1]), dtype=np.float64)
        full[targets] = x
        mask = np.zeros(len(self.lead_names), dtype=np.int64)
        mask[targets] = 1
        return full, mask

    # ------------------------------------------------------------------ signal processing
    def resample(self, x: np.ndarray, source_rate: float) -> np.ndarray:
        """Resample (leads, samples) from ``source_rate`` to ``self.sampling_rate`` (polyphase, anti-aliased)."""
        target = float(self.sampling_rate)
        if source_rate == target:
            return x
        up, down = _rate_fraction(source_rate, target)
        if up == down:
            return x
        return _sps.resample_poly(x, up, down, axis=-1)

    def _filter(self, x: np.ndarray) -> np.ndarray:
        fs = float(self.sampling_rate)
        if self.do_baseline_removal:
            sos = _sps.butter(2, self.baseline_cutoff_hz, btype="highpass", fs=fs, output="sos")
            x = self._sosfiltfilt(sos, x)
        if self.do_bandpass:
            sos = _sps.butter(
                self.bandpass_order, [self.bandpass_low, self.bandpass_high], btype="bandpass", fs=fs, output="sos"
            )
            x = self._sosfiltfilt(sos, x)
        return x

    @staticmethod
    def _sosfiltfilt(sos, x):
        padlen = min(3 * (2 * len(sos) + 1), x.shape[-1] - 1)
        return _sps.sosfiltfilt(sos, x, axis=-1, padlen=max(padlen, 0))

    def _scale(self, x: np.ndarray, length: int, lead_mask: np.ndarray) -> np.ndarray:
        """Scale in place over the first ``length`` (real) samples; missing leads stay zero."""
        if self.scaling == "none":
            return x
        real = x[:, :length]
        if isinstance(self.scaling, numbers.Real) and not isinstance(self.scaling, str):
            real /= float(self.scaling)
            return x
        if self.scaling == "standardize":
            center = real.mean(axis=1, keepdims=True)
            spread = real.std(axis=1, keepdims=True)
        else:  # robust
            q25, center, q75 = np.percentile(real, [25, 50, 75], axis=1, keepdims=True)
            spread = q75 - q25
        spread = np.where(spread > 1e-8, spread, 1.0)
        real -= center
        real /= spread
        real[lead_mask == 0] = 0.0
        return x

    # ------------------------------------------------------------------ main entry
    def __call__(
        self,
        raw_signals,
        sampling_rate: float | Sequence[float] | None = None,
        lead_names: Sequence[str] | Sequence[Sequence[str]] | None = None,
        return_tensors: str | None = None,
        window: bool | None = None,
        mode: str | None = None,
        return_attention_mask: bool | None = None,
        ignore_unknown_leads: bool = False,
        **kwargs,
    ) -> BatchFeature:
        """Preprocess one record or a batch.

        Args:
            raw_signals: (leads, samples) numpy array or torch tensor; a (batch, leads, samples)
                array; a list of such arrays with different lengths/rates; or objects with
                ``.signal``, ``.sampling_rate`` and ``.lead_names`` (e.g. ``ecgnat_hf.data.ECGRecord``).
            sampling_rate: input rate in Hz, one for all or a list per record (required unless the
                inputs are record objects).
            lead_names: lead names of the input rows, one list for all or a list of lists; may be
                omitted only for signals whose lead count equals the output's (then taken to be in
                the output order).
            window: ``False`` -> whole records padded to the longest (``mode="pad"``), ``True`` ->
                ``mode="window"``; ``None`` -> the configured ``mode``.
            ignore_unknown_leads: drop non-standard leads (e.g. Frank vx/vy/vz) instead of raising.
        """
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")
        mode = mode or ("pad" if window is False else "window" if window else self.mode)
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        want_attention = self.return_attention_mask if return_attention_mask is None else return_attention_mask
        records = self._split_inputs(raw_signals, sampling_rate, lead_names)
        prepared = [
            self._prepare_record(i, len(records), x, fs, names, ignore_unknown_leads)
            for i, (x, fs, names) in enumerate(records)
        ]
        W, S = self.window_length, self.window_stride
        examples = []  # (signal (leads, n), mask, record index, start sample)
        for r, (x, mask) in enumerate(prepared):
            n = x.shape[1]
            if mode == "pad" or n <= W:
                examples.append((x if mode == "pad" else x[:, :W], mask, r, 0))
            elif mode == "crop":
                examples.append((x[:, :W], mask, r, 0))
            else:
                starts = list(range(0, n - W + 1, S))
                if starts[-1] + W < n:  # cover the tail with a last window aligned to the end
                    starts.append(n - W)
                examples.extend((x[:, s : s + W], mask, r, s) for s in starts)
        T = max(e[0].shape[1] for e in examples) if mode == "pad" else W
        B, L = len(examples), len(self.lead_names)
        values = np.full((B, L, T), self.padding_value, dtype=np.float32)
        attention = np.zeros((B, T), dtype=np.int64)
        lead_mask = np.zeros((B, L), dtype=np.int64)
        record_index = np.zeros(B, dtype=np.int64)
        window_start = np.zeros(B, dtype=np.float32)
        for b, (x, mask, r, s) in enumerate(examples):
            n = x.shape[1]
            seg = self._scale(np.array(x, dtype=np.float64), n, mask)
            values[b, :, :n] = seg
            values[b, mask == 0, :] = 0.0  # missing leads are zeros, padded or not
            attention[b, :n] = 1
            lead_mask[b] = mask
            record_index[b] = r
            window_start[b] = s / float(self.sampling_rate)
        data: dict[str, Any] = {
            "input_values": values,
            "lead_mask": lead_mask,
            "record_index": record_index,
            "window_start": window_start,
        }
        if want_attention:
            data["attention_mask"] = attention
        return BatchFeature(data=data, tensor_type=return_tensors)

    def aggregate(self, values, record_index, n_records: int | None = None, reduce: str = "mean") -> np.ndarray:
        """Pool per-window predictions (windows, ...) into per-record ones using ``record_index``."""
        v = _to_numpy(values).astype(np.float64)
        idx = _to_numpy(record_index).astype(np.int64)
        n = int(idx.max()) + 1 if n_records is None else int(n_records)
        out = np.zeros((n,) + v.shape[1:], dtype=np.float64)
        for r in range(n):
            sel = v[idx == r]
            if len(sel) == 0:
                out[r] = np.nan
            elif reduce == "mean":
                out[r] = sel.mean(axis=0)
            elif reduce == "max":
                out[r] = sel.max(axis=0)
            else:
                raise ValueError(f"reduce must be 'mean' or 'max', got {reduce!r}")
        return out


__all__ = [
    "CANONICAL_LEADS",
    "LEAD_ALIASES",
    "ECGInputError",
    "ECGLeadNameError",
    "ECGNATFeatureExtractor",
    "normalize_lead_name",
]
