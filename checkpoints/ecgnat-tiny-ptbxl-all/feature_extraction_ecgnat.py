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

import functools
import math
import numbers
import re
from dataclasses import dataclass, fields
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


class ECGUnusableSignalError(ECGInputError):
    """The signal is implausible as an ECG: no lead passed the quality checks, or the sampling rate is out
    of range. ``report`` holds the :class:`QualityReport` when one was computed."""

    def __init__(self, *args, report=None):
        super().__init__(*args)
        self.report = report


# ---------------------------------------------------------------------------------------------- quality
@dataclass(frozen=True)
class QualityThresholds:
    """Plausibility limits of :func:`check_signal_quality` (all amplitudes in mV, as the reader returns).

    Calibrated on the real records in ``shared/data`` (486 records, 5,837 leads: PTB-XL, Challenge 2021,
    MIT-BIH, PTB): the smallest robust range of a live lead there is 0.14 mV, the largest 10.9 mV, and no
    live lead spends more than 1.2 % of its samples at its extreme value.

    Attributes:
        min_sampling_rate / max_sampling_rate: accepted input rates in Hz (below 50 Hz a QRS complex is
            not representable; above 20 kHz the rate is almost certainly a header error).
        flat_range_mv: a lead whose robust range (99th minus 1st percentile) is below this is *flat*
            (a disconnected electrode, a zero-filled channel): masked.
        saturation_fraction: a lead with at least this fraction of its samples pinned at its minimum or
            maximum value is *saturated* (clipped at the amplifier rails): masked.
        max_range_mv: a lead whose robust range exceeds this is flagged as implausible; when the median
            over leads exceeds it the record is flagged "amplitude suggests microvolts" (values in uV
            labelled mV). A flag only under scale-free scaling (``"standardize"``, ``"robust"``); an extractor
            that keeps amplitudes (``"center"``, ``"none"``, a number) refuses such a record instead, since
            it would be scored at a thousand times its size.
        mask_saturated: mask saturated leads (default) or only flag them.
    """

    min_sampling_rate: float = 50.0
    max_sampling_rate: float = 20000.0
    flat_range_mv: float = 0.02
    saturation_fraction: float = 0.1
    max_range_mv: float = 30.0
    mask_saturated: bool = True

    @classmethod
    def from_dict(cls, values) -> "QualityThresholds":
        if values is None:
            return cls()
        if isinstance(values, QualityThresholds):
            return values
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown quality threshold(s) {unknown}; known: {[f.name for f in fields(cls)]}")
        return cls(**dict(values))

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class QualityReport:
    """Result of :func:`check_signal_quality` for one record.

    Attributes:
        lead_names: the leads checked, as given.
        usable: per lead, ``True`` when the lead passed (flat and saturated leads are ``False``).
        flags: human-readable findings, e.g. ``"lead V3 flat (range 0.000 mV)"``,
            ``"lead II saturated (34% of samples at the rails)"``, ``"amplitude suggests microvolts"``.
        lead_flags: the findings per lead name (empty list for a clean lead).
        record: the record named in the flags / errors (may be None).
    """

    lead_names: list
    usable: list
    flags: list
    lead_flags: dict
    record: str | None = None

    @property
    def usable_leads(self) -> list:
        return [n for n, ok in zip(self.lead_names, self.usable) if ok]

    @property
    def unusable_leads(self) -> list:
        return [n for n, ok in zip(self.lead_names, self.usable) if not ok]

    @property
    def ok(self) -> bool:
        """No finding at all."""
        return not self.flags

    def summary(self) -> str:
        """The flags joined with ``"; "`` (``""`` when clean): the text of a quality column."""
        return "; ".join(self.flags)

    def short_summary(self) -> str:
        """Like :meth:`summary`, but ``"all 12 leads flat"`` instead of twelve identical findings."""
        kinds = {tuple(f.split(" (")[0] for f in v) for v in self.lead_flags.values()}
        if len(self.lead_names) > 1 and len(kinds) == 1 and kinds != {()}:
            rest = [f for f in self.flags if not f.startswith("lead ")]
            return "; ".join([f"all {len(self.lead_names)} leads {', '.join(next(iter(kinds)))}"] + rest)
        return self.summary()


def check_sampling_rate(sampling_rate, thresholds: QualityThresholds | None = None, where: str = "input") -> float:
    """The rate as a float, or :class:`ECGUnusableSignalError` when it is missing, not a number or outside
    ``[min_sampling_rate, max_sampling_rate]`` (checked before any resampling allocates memory)."""
    th = thresholds or QualityThresholds()
    try:
        fs = float(sampling_rate)
    except (TypeError, ValueError):
        raise ECGInputError(f"{where}: sampling_rate must be a number, got {sampling_rate!r}") from None
    if not math.isfinite(fs) or fs <= 0:
        raise ECGInputError(f"{where}: sampling_rate must be positive, got {sampling_rate!r}")
    if not th.min_sampling_rate <= fs <= th.max_sampling_rate:
        raise ECGUnusableSignalError(
            f"{where}: implausible sampling rate {fs:g} Hz for an ECG (accepted {th.min_sampling_rate:g}-"
            f"{th.max_sampling_rate:g} Hz; see QualityThresholds)"
        )
    return fs


#: False: the lead-by-lead path (np.percentile per lead), which the sorted path must reproduce exactly (tests)
_SORT_LEADS = True


def check_signal_quality(signal, sampling_rate, lead_names, thresholds: QualityThresholds | None = None,
                         record: str | None = None) -> QualityReport:
    """Plausibility of one (leads, samples) signal in mV: flat, saturated and out-of-range leads.

    Returns a :class:`QualityReport` (never raises for a bad lead; see :class:`QualityThresholds`). The
    sampling rate is checked with :func:`check_sampling_rate` (raises). NaN/inf samples are ignored in
    the statistics (the reader and the extractor reject them separately).
    """
    th = thresholds or QualityThresholds()
    where = record if record is not None else "input"
    check_sampling_rate(sampling_rate, th, where)
    given = np.asarray(signal)
    x = np.asarray(given, dtype=np.float64)
    if x.ndim == 1:
        x, given = x[None, :], given[None, :]
    names = [str(n) for n in (lead_names if lead_names is not None else [f"ch{i}" for i in range(x.shape[0])])]
    if len(names) != x.shape[0]:
        raise ECGInputError(f"{where}: {len(names)} lead names for {x.shape[0]} leads")
    usable, flags, lead_flags, ranges = [], [], {}, []
    # all samples finite (the usual case): every lead sorted once (a sort is several times faster than the
    # partitions of np.percentile on ECG samples, which repeat values), then the percentiles, extremes and
    # rail counts read from it: the same numbers as np.percentile and the comparisons lead by lead
    # (float32 samples are sorted as float32, then widened: float64 holds each exactly and in the same order)
    srt = None
    if _SORT_LEADS and x.shape[1] >= 2 and np.isfinite(x).all():
        srt = np.sort(given if given.dtype == np.float32 else x, axis=1).astype(np.float64, copy=False)
    pct = sorted_percentiles(srt, (1, 99)) if srt is not None else None
    for i, name in enumerate(names):
        row = x[i] if pct is not None else x[i][np.isfinite(x[i])]
        mine = []
        ok = True
        if row.size < 2:
            mine.append("no samples" if row.size == 0 else "a single sample")
            ok = False
            ranges.append(0.0)
        else:
            lo, hi = (pct[0, i], pct[1, i]) if pct is not None else np.percentile(row, [1, 99])
            rng = float(hi - lo)
            ranges.append(rng)
            if rng < th.flat_range_mv:
                mine.append(f"flat (range {rng:.3f} mV)")
                ok = False
            else:
                if srt is not None:  # samples equal to the maximum / minimum, counted in the sorted lead
                    s = srt[i]
                    at_rails = max(row.size - int(np.searchsorted(s, s[-1], side="left")),
                                   int(np.searchsorted(s, s[0], side="right")))
                else:
                    at_rails = max(int((row >= row.max()).sum()), int((row <= row.min()).sum()))
                pinned = at_rails / row.size
                if pinned >= th.saturation_fraction:
                    mine.append(f"saturated ({pinned:.0%} of samples at the rails)")
                    ok = ok and not th.mask_saturated
                if rng > th.max_range_mv:
                    mine.append(f"implausible amplitude (range {_mv(rng)} mV)")
        usable.append(ok)
        lead_flags[name] = mine
        flags.extend(f"lead {name} {m}" for m in mine)
    live = [r for r, ok in zip(ranges, usable) if ok]
    if live and float(np.median(live)) > th.max_range_mv:  # one finding for the record, not one per lead
        flags = [f for f in flags if "implausible amplitude" not in f]
        for name in lead_flags:
            lead_flags[name] = [m for m in lead_flags[name] if "implausible amplitude" not in m]
        median = float(np.median(live))
        if median <= th.max_range_mv * 1000:  # about a thousand times too large: microvolts labelled mV
            flags.append(f"amplitude suggests microvolts (median lead range {_mv(median)} mV; check the units)")
        else:  # far beyond any unit mix-up: the header's gain or units are wrong
            flags.append(f"amplitude implausible for an ECG (median lead range {_mv(median)} mV; check the "
                         "header's gains and units)")
    flags.extend(_polarity_findings(x, names, usable, sorted_leads=srt))
    return QualityReport(names, usable, flags, lead_flags, record)


def sorted_percentiles(s: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """``np.percentile(s, q, axis=-1)`` (its default ``"linear"`` method) of samples ``s`` already sorted
    along the last axis, without numpy's partitions: ``(len(q), *s.shape[:-1])``, the same numbers to the
    bit (the same virtual index, neighbours and interpolation as numpy 2; ``tests/test_prepare_speed.py``
    compares them). Only for ``0 < q < 100`` and at least 2 finite samples per row."""
    s = np.asarray(s)
    idx, gamma = _percentile_positions(int(s.shape[-1]), tuple(float(v) for v in q))
    lo = np.take(s, idx, axis=-1)  # (..., len(q))
    hi = np.take(s, idx + 1, axis=-1)
    diff = hi - lo
    out = lo + diff * gamma
    np.subtract(hi, diff * (1 - gamma), out=out, where=gamma >= 0.5)
    return np.moveaxis(out, -1, 0) if out.ndim > 1 else out


@functools.lru_cache(maxsize=256)
def _percentile_positions(n: int, q: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The lower neighbour and interpolation weight of each percentile ``q`` among ``n`` sorted samples, as
    ``np.percentile`` computes them (``(n - 1) * q / 100``, its floor and fractional part)."""
    quantiles = np.true_divide(np.asarray(q, dtype=np.float64), 100)
    if n < 2 or not ((quantiles > 0) & (quantiles < 1)).all():
        raise ValueError(f"sorted_percentiles needs 0 < q < 100 and at least 2 samples, got q={list(q)}, n={n}")
    virtual = (n - 1) * quantiles
    prev = np.floor(virtual)
    gamma = virtual - prev
    idx = prev.astype(np.intp)
    idx.flags.writeable = False
    gamma.flags.writeable = False
    return idx, gamma


#: quality flags saying that the record's amplitudes are not in mV (an amplitude-keeping extractor refuses them)
UNIT_FLAG_PREFIXES = ("amplitude suggests microvolts", "amplitude implausible")


def _mv(value: float) -> str:
    """A readable amplitude: ``544``, ``12.5``, or ``1.2e+300`` rather than a 300-digit number."""
    value = float(value)
    if not math.isfinite(value) or abs(value) >= 1e5:
        return f"{value:.2g}"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 1 else f"{value:.3f}"


def _polarity(row: np.ndarray, is_sorted: bool = False) -> float:
    """Dominant deflection of a lead, -1 (all negative) to +1 (all positive): the larger of its robust
    excursions above and below the median (the QRS complex dominates both). ``is_sorted``: ``row`` is the
    lead's samples sorted, all finite (the same result, faster)."""
    if is_sorted and row.size >= 2:
        half = row.size // 2  # the median of sorted samples: np.median's middle value(s), without a partition
        med = row[half] if row.size % 2 else (row[half - 1] + row[half]) / 2
        hi, lo = sorted_percentiles(row, (99.5, 0.5)) - med
        return float((hi + lo) / (hi - lo)) if hi - lo > 0 else 0.0
    row = row[np.isfinite(row)]
    med = np.median(row)
    hi, lo = np.percentile(row, [99.5, 0.5]) - med
    return float((hi + lo) / (hi - lo)) if hi - lo > 0 else 0.0


#: each limb lead as computed from two others (Einthoven's law and the Goldberger leads)
_LIMB_IDENTITIES = {
    "I": (("II", 1.0), ("III", -1.0)), "II": (("I", 1.0), ("III", 1.0)), "III": (("II", 1.0), ("I", -1.0)),
    "aVR": (("I", -0.5), ("II", -0.5)), "aVL": (("I", 0.5), ("III", -0.5)), "aVF": (("II", 0.5), ("III", 0.5)),
}


def _polarity_findings(x: np.ndarray, names, usable, sorted_leads: np.ndarray | None = None) -> list:
    """Inverted-lead checks on the limb leads (flags only; nothing is masked).

    * Lead I's dominant deflection against aVR's: aVR is negative and lead I positive in almost every ECG.
      Lead I negative with aVR positive (both beyond 0.2 on the :func:`_polarity` scale) means inverted
      leads (a negative gain, a sign error in a conversion) or swapped arm electrodes. Of 484 real records
      (the PTB-XL subset and Challenge 2021 sample in shared/data) 3 are flagged (0.6 %); of the same
      records with every lead inverted, 391 (81 %) are.
    * Einthoven's law and the Goldberger leads: each limb lead correlates with its value computed from two
      others (>= 0.9996 on every one of those records). When an identity breaks (correlation < 0.5) and
      flipping one lead restores them all, that lead is named as inverted (all 484 x 6 single-lead
      inversions are named, no clean record is). Limb leads that break the identities in another way
      (independently recorded or synthetic signals) are not judged.

    ``sorted_leads``: ``x`` sorted along its samples (all finite), when the caller has it.
    """
    canon = {}
    for i, n in enumerate(names):
        c = LEAD_ALIASES.get(_squash(n))
        if c is not None and usable[i] and c not in canon:
            canon[c] = i
    out = []
    if "I" in canon and "aVR" in canon:
        if sorted_leads is not None:
            p_i, p_avr = (_polarity(sorted_leads[canon[c]], is_sorted=True) for c in ("I", "aVR"))
        else:
            p_i, p_avr = _polarity(x[canon["I"]]), _polarity(x[canon["aVR"]])
        if p_i < -0.2 and p_avr > 0.2:
            out.append(f"lead I negative and aVR positive (polarity {p_i:+.2f}, {p_avr:+.2f}; the reverse of almost "
                       "every ECG): inverted leads (negative gain, sign error) or swapped arm electrodes")
    leads = {c: x[i] for c, i in canon.items()}
    checks = [(lead, terms) for lead, terms in _LIMB_IDENTITIES.items()
              if lead in leads and all(t in leads for t, _ in terms)]

    gram = order = None
    if sorted_leads is not None and checks:  # every sample finite: all correlations from one Gram matrix
        order = {c: k for k, c in enumerate(leads)}
        centred = np.stack([leads[c] for c in leads])
        centred = centred - centred.mean(axis=1, keepdims=True)
        gram = centred @ centred.T

    if gram is not None:  # each check as coefficient rows: a = U X (the lead), b = V X (its value from two others)
        U = np.zeros((len(checks), len(order)))
        V = np.zeros((len(checks), len(order)))
        for k, (lead, terms) in enumerate(checks):
            U[k, order[lead]] = 1.0
            for t, w in terms:
                V[k, order[t]] += w
        tiny = 1e-12 * float(np.trace(gram))  # a combination that cancels to rounding noise: no variance

    def broken(flipped=None) -> list:
        sign = {c: (-1.0 if c == flipped else 1.0) for c in leads}
        if gram is not None:  # corr(a, b) = u'Gv / sqrt(u'Gu v'Gv) for a = u'X, b = v'X, X centred: all checks at once
            s = np.array([sign[c] for c in order])
            u, v = U * s, V * s
            gv = v @ gram
            ab, aa, bb = (u * gv).sum(axis=1), ((u @ gram) * u).sum(axis=1), (gv * v).sum(axis=1)
            aa, bb = np.where(aa > tiny, aa, 0.0), np.where(bb > tiny, bb, 0.0)
            den = np.sqrt(aa * bb)
            low = np.zeros(len(checks), dtype=bool)
            np.less(ab, 0.5 * den, out=low, where=den > 0)
            return [checks[k][0] for k in np.flatnonzero(low)]
        bad = []  # non-finite samples somewhere: each check on the samples finite in both of its sides
        for lead, terms in checks:
            a = sign[lead] * leads[lead]
            b = sum(w * sign[t] * leads[t] for t, w in terms)
            ok = np.isfinite(a) & np.isfinite(b)
            a, b = a[ok], b[ok]
            a, b = a - a.mean(), b - b.mean()
            ab, aa, bb = float(a @ b), float(a @ a), float(b @ b)
            den = math.sqrt(max(aa, 0.0) * max(bb, 0.0))
            if den > 0 and ab / den < 0.5:
                bad.append(lead)
        return bad

    bad = broken() if checks else []
    if bad:
        fixes = [c for c in leads if c in _LIMB_IDENTITIES and not broken(c)]
        if len(fixes) == 1:  # leads that break the identities otherwise (independent noise...) are not judged
            out.append(f"lead {names[canon[fixes[0]]]} inverted (the negative of its value computed from the other "
                       "limb leads by Einthoven's law)")
    return out


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


def _squash(name) -> str:
    return _squash_str(str(name))


@functools.lru_cache(maxsize=4096)  # a corpus repeats a dozen spellings millions of times
def _squash_str(name: str) -> str:
    key = _SQUASH.sub("", name).lower()
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


def _is_per_record_names(value) -> bool:
    """``lead_names`` is one list per record (``[["I", "II"], None]``) rather than one record's names
    (``["I", "II"]``). A list that mixes names with other things (``[None, "II"]``) is neither: refused with
    the position of the first entry that is not a name."""
    if not isinstance(value, (list, tuple)) or not value:
        return False
    is_list = [isinstance(v, (list, tuple)) or (isinstance(v, np.ndarray) and v.ndim == 1) or v is None for v in value]
    if all(is_list):
        return True
    if any(isinstance(v, str) for v in value):
        for i, v in enumerate(value):
            if not isinstance(v, str) or not v.strip():
                raise ECGInputError(f"lead_names[{i}] is {v!r}: every lead needs a name (a non-empty string); give "
                                    "one name per lead in order, e.g. ['I', 'II'] (or one such list per record)")
        return False
    raise ECGInputError(f"lead_names must be lead-name strings (['I', 'II']) or one such list per record, got "
                        f"{list(value)[:4]!r}")


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


@functools.lru_cache(maxsize=64)
def _resample_taps(up: int, down: int) -> np.ndarray:
    """The anti-aliasing FIR filter ``resample_poly`` designs by default (Kaiser window, beta 5), designed once per
    rate pair instead of once per record: the same taps, so the same output (``resample_poly`` copies them)."""
    g = math.gcd(int(up), int(down))
    max_rate = max(int(up) // g, int(down) // g)
    return _sps.firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))


_SCALINGS = ("standardize", "robust", "center", "none")
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
            default), ``"robust"`` (median / inter-quartile range), ``"center"`` (per-lead mean removed,
            values kept in mV, so amplitudes and their ratios across leads survive), ``"none"`` (mV), or a
            positive number ``c``: values divided by ``c`` mV.
        padding_value: value of padded samples (masked by ``attention_mask``).
        quality_check: run :func:`check_signal_quality` on every record (default): flat and saturated
            leads are masked (``lead_mask`` 0) and reported, a record with no usable lead raises
            :class:`ECGUnusableSignalError`, an input rate outside the plausible range raises too.
        quality_thresholds: a dict of :class:`QualityThresholds` fields overriding the defaults, e.g.
            ``{"flat_range_mv": 0.05, "min_sampling_rate": 25}`` (saved with the extractor).

    ``__call__`` returns a ``BatchFeature`` with ``input_values`` (examples, leads, samples) float32,
    ``lead_mask`` (examples, leads) int64, ``attention_mask`` (examples, samples) int64 (1 = real
    sample), ``record_index`` (examples,) int64 (the input record each example came from) and
    ``window_start`` (examples,) float32 seconds, so window predictions can be aggregated per record.
    The returned object also carries ``quality_flags``: one list of strings per input record (the
    :class:`QualityReport` flags, empty for a clean record) and ``quality_reports`` (the reports), as
    attributes rather than items so that ``return_tensors`` still works.
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
        quality_check: bool = True,
        quality_thresholds: dict | None = None,
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
        self.quality_check = bool(quality_check)
        self.quality_thresholds = None if quality_thresholds is None else QualityThresholds.from_dict(quality_thresholds).to_dict()
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
        self._check_window_stride()
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
    def thresholds(self) -> QualityThresholds:
        """The :class:`QualityThresholds` in force (defaults unless ``quality_thresholds`` overrides)."""
        return QualityThresholds.from_dict(getattr(self, "quality_thresholds", None))

    @property
    def window_length(self) -> int:
        """Samples per example at the target rate (window/crop modes)."""
        return int(round(self.window_s * self.sampling_rate))

    @property
    def window_stride(self) -> int:
        """Samples between window starts; refuses a stride set (after construction) beyond the window."""
        self._check_window_stride()
        return max(1, int(round(self.window_stride_s * self.sampling_rate)))

    def _check_window_stride(self) -> None:
        if not 0 < self.window_stride_s <= self.window_s:
            raise ValueError(f"window_stride_s must be > 0 and at most window_s ({self.window_s:g} s): a larger "
                             f"stride would skip part of every record; got {self.window_stride_s}")

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
                try:
                    arr = np.asarray(raw_signals, dtype=np.float64)
                except (ValueError, TypeError) as exc:
                    raise ECGInputError(
                        "raw_signals is a nested list that is not a rectangular array of numbers (ragged "
                        "leads or records, or non-numeric values); give one (leads, samples) array per "
                        f"record, e.g. a list of numpy arrays ({type(exc).__name__}: {str(exc).splitlines()[0]})"
                    ) from None
                if arr.ndim not in (1, 2, 3):
                    raise ECGInputError(f"raw_signals has {arr.ndim} dimensions; expected (leads, samples) "
                                        "or (batch, leads, samples)")
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
        names = per_record(lead_names, "lead-name lists", _is_per_record_names)
        out = []
        for i, item in enumerate(items):
            fs, ln = rates[i], names[i]
            if _is_record_like(item):
                fs = item.sampling_rate if fs is None else fs
                ln = getattr(item, "lead_names", None) if ln is None else ln
                item = item.signal
            out.append((item, fs, ln))
        return out

    def _prepare_record(self, i: int, n_records: int, x, fs, names, ignore_unknown_leads: bool, where=None):
        if where is None:
            where = f"record {i}" if n_records > 1 else "input"
        try:
            x = _to_numpy(x)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ECGInputError(f"{where}: cannot read the signal as an array ({exc})") from None
        if np.iscomplexobj(x):
            raise ECGInputError(f"{where}: signal is complex ({x.dtype}); ECG samples are real numbers")
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise ECGInputError(f"{where}: signal must be numeric, got dtype {x.dtype}")
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2:
            raise ECGInputError(f"{where}: expected a (leads, samples) signal, got shape {tuple(x.shape)}")
        given = x  # the samples as given, for the quality check (float32 records are sorted as float32: faster)
        x = x.astype(np.float64, copy=False)
        if fs is None:
            raise ECGInputError(
                f"{where}: no sampling rate given: pass sampling_rate=... (Hz) with the signals; the "
                f"extractor resamples to {self.sampling_rate:g} Hz and cannot guess the input rate"
            )
        thresholds = self.thresholds
        fs = check_sampling_rate(fs, thresholds if getattr(self, "quality_check", True) else
                                 QualityThresholds(min_sampling_rate=0.0, max_sampling_rate=math.inf), where)
        if x.shape[1] == 0:
            raise ECGInputError(f"{where}: the signal has no samples")
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
        if rows != list(range(x.shape[0])):  # the usual case, every lead in order, needs no copy
            x = x[rows]
            given = x
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
        report = None
        if getattr(self, "quality_check", True):
            report = check_signal_quality(given, fs, [names[r] for r in rows], thresholds, record=where)
            if not any(report.usable):
                raise ECGUnusableSignalError(
                    f"{where}: no usable lead ({report.short_summary()}); the record is refused, not scored",
                    report=report,
                )
            if self.keeps_amplitude and any(f.startswith(UNIT_FLAG_PREFIXES) for f in report.flags):
                raise ECGUnusableSignalError(
                    f"{where}: {next(f for f in report.flags if f.startswith(UNIT_FLAG_PREFIXES))}: this "
                    f"extractor keeps amplitudes in mV (scaling={self.scaling!r}), so the record would be scored "
                    "at the wrong scale; convert it to mV (or fix the units in its header)",
                    report=report,
                )
            keep = [k for k, ok in enumerate(report.usable) if ok]
            if len(keep) < len(rows):
                x = x[keep]
                targets = [targets[k] for k in keep]
        x = self.resample(x, fs)
        x = self._filter(x)
        full = np.zeros((len(self.lead_names), x.shape[1]), dtype=np.float64)
        full[targets] = x
        mask = np.zeros(len(self.lead_names), dtype=np.int64)
        mask[targets] = 1
        return full, mask, report

    @property
    def keeps_amplitude(self) -> bool:
        """True when the model input depends on the signal's scale (``"center"``, ``"none"``, a number)."""
        return self.scaling not in ("standardize", "robust")

    # ------------------------------------------------------------------ signal processing
    def resample(self, x: np.ndarray, source_rate: float) -> np.ndarray:
        """Resample (leads, samples) from ``source_rate`` to ``self.sampling_rate`` (polyphase, anti-aliased)."""
        target = float(self.sampling_rate)
        if source_rate == target:
            return x
        up, down = _rate_fraction(source_rate, target)
        if up == down:
            return x
        return _sps.resample_poly(x, up, down, axis=-1, window=_resample_taps(up, down))

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
        if self.scaling == "center":
            real -= real.mean(axis=1, keepdims=True)
            real[lead_mask == 0] = 0.0
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
        record_ids: Sequence[str] | None = None,
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
            record_ids: names of the input records (paths), used in error messages instead of
                "record <i>"; record objects are named by their ``path`` without it.
        """
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")
        mode = mode or ("pad" if window is False else "window" if window else self.mode)
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        want_attention = self.return_attention_mask if return_attention_mask is None else return_attention_mask
        records = self._split_inputs(raw_signals, sampling_rate, lead_names)
        if record_ids is not None and len(record_ids) != len(records):
            raise ECGInputError(f"{len(record_ids)} record_ids given for {len(records)} records")
        wheres = []
        for i in range(len(records)):
            if record_ids is not None:
                wheres.append(str(record_ids[i]))
            elif _is_record_like(raw_signals) or (isinstance(raw_signals, (list, tuple)) and i < len(raw_signals)
                                                   and _is_record_like(raw_signals[i])):
                item = raw_signals if _is_record_like(raw_signals) else raw_signals[i]
                wheres.append(str(getattr(item, "path", None) or getattr(item, "record_id", None) or f"record {i}"))
            else:
                wheres.append(None)
        prepared = [
            self._prepare_record(i, len(records), x, fs, names, ignore_unknown_leads, where=wheres[i])
            for i, (x, fs, names) in enumerate(records)
        ]
        W, S = self.window_length, self.window_stride
        examples = []  # (signal (leads, n), mask, record index, start sample)
        for r, (x, mask, _) in enumerate(prepared):
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
        out = BatchFeature(data=data, tensor_type=return_tensors)
        out.quality_reports = [rep for _, _, rep in prepared]
        out.quality_flags = [list(rep.flags) if rep is not None else [] for _, _, rep in prepared]
        if mode == "pad":
            # ECG-NAT reads the zero tail as signal (no attention mask), so a padded record's output depends on
            # the longest record of its batch: say so on every record that was padded for its neighbours
            for b, (x, _, r, _) in enumerate(examples):
                if x.shape[1] < T:
                    out.quality_flags[r].append(
                        f"zero-padded from {x.shape[1]} to {T} samples to fit the batch (mode='pad'): the model "
                        "sees the padding, so this record's output depends on its batch; score it alone or "
                        "use mode='window'")
        return out

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
    "ECGUnusableSignalError",
    "QualityThresholds",
    "QualityReport",
    "check_sampling_rate",
    "check_signal_quality",
    "ECGNATFeatureExtractor",
    "normalize_lead_name",
]
