"""Signal plausibility: is this (leads, samples) array in mV an ECG a model should score?

Public API
----------
- :class:`QualityThresholds`: the limits (sampling-rate range, flat range, saturation fraction,
  amplitude range); configurable, defaults documented in ``docs/robustness.md``.
- :func:`check_signal_quality` ``(signal, sampling_rate, lead_names, thresholds=None, *, record=None,
  require_usable=True) -> QualityReport``: per-lead ``usable`` mask and human-readable ``flags``
  (``"lead V3 flat (range 0.000 mV)"``, ``"lead II saturated (34% of samples at the rails)"``,
  ``"amplitude suggests microvolts ..."``). A record with no usable lead raises
  :class:`~ecgnat_hf.data.errors.NoUsableLeadError` (unless ``require_usable=False``); an implausible
  sampling rate raises :class:`~ecgnat_hf.data.errors.SamplingRateError`. Both name the record.
- :func:`check_record_quality` ``(record, thresholds=None, require_usable=True) -> QualityReport``:
  the same for an :class:`~ecgnat_hf.data.records.ECGRecord`.

The computation lives in ``feature_extraction_ecgnat.py`` (Hub-facing, copied next to checkpoints, so it
cannot import this package); this module gives it the package's typed errors, the same way
``data.leads`` re-exports the lead alias table. The feature extractor applies the same checks to every
record it prepares (``quality_check=True``): unusable leads get ``lead_mask`` 0 and the flags come back
as ``features.quality_flags``.
"""

from __future__ import annotations

from ..models.ecgnat.feature_extraction_ecgnat import (
    ECGInputError,
    ECGUnusableSignalError,
    QualityReport,
    QualityThresholds,
)
from ..models.ecgnat.feature_extraction_ecgnat import check_signal_quality as _check
from .errors import InvalidSignalError, NoUsableLeadError, SamplingRateError

__all__ = ["QualityThresholds", "QualityReport", "check_signal_quality", "check_record_quality", "NoUsableLeadError"]


def check_signal_quality(signal, sampling_rate, lead_names, thresholds: QualityThresholds | None = None, *,
                         record: str | None = None, require_usable: bool = True) -> QualityReport:
    """See the module docstring. ``thresholds`` may also be a dict of :class:`QualityThresholds` fields."""
    th = QualityThresholds.from_dict(thresholds) if isinstance(thresholds, dict) else thresholds
    rec = record if record is not None else "<signal>"
    try:
        report = _check(signal, sampling_rate, lead_names, th, record=rec)
    except ECGUnusableSignalError as exc:  # the sampling rate
        raise SamplingRateError(rec, str(exc).split(": ", 1)[-1]) from None
    except ECGInputError as exc:
        msg = str(exc).split(": ", 1)[-1]
        if "sampling_rate" in msg:
            raise SamplingRateError(rec, msg) from None
        raise InvalidSignalError(rec, msg) from None
    if require_usable and not any(report.usable):
        raise NoUsableLeadError(rec, f"no usable lead ({report.short_summary()}); the record is refused, not scored",
                                report=report)
    return report


def check_record_quality(record, thresholds: QualityThresholds | None = None, *,
                         require_usable: bool = True) -> QualityReport:
    """:func:`check_signal_quality` for an ``ECGRecord`` (named by its path)."""
    return check_signal_quality(record.signal, record.sampling_rate, record.lead_names, thresholds,
                                record=record.path, require_usable=require_usable)

