"""Typed errors for reading ECG records.

Every error carries the record it is about (``record``: a path or an id) and a short description of
``problem``; ``str(err)`` is ``"<record>: <problem>"`` so a log line always says which file failed
and why. Most classes also derive from :class:`ValueError` (or :class:`FileNotFoundError`) so callers
that already catch the built-in exception keep working.

Relation to the feature extractor: ``feature_extraction_ecgnat.py`` is copied flat next to
checkpoints and must not import this package, so it defines its own ``ECGInputError(ValueError)``.
Lead-name problems found there raise ``ECGLeadNameError(ECGInputError)``. :class:`LeadNameError`
below subclasses that class as well, so ``except LeadNameError`` catches lead-name problems
raised by the reader, and ``except ECGInputError`` / ``except ValueError`` catch both.
"""

from __future__ import annotations

import os

from ..models.ecgnat.feature_extraction_ecgnat import ECGInputError, ECGLeadNameError, ECGUnusableSignalError

__all__ = [
    "ECGDataError",
    "MissingFileError",
    "HeaderError",
    "UnitError",
    "TruncatedSignalError",
    "InvalidSignalError",
    "LeadNameError",
    "SamplingRateError",
    "MissingSamplingRateError",
    "NoUsableLeadError",
    "SignalTooShortError",
    "SignalMismatchError",
    "UnreadableRecordError",
    "LabelFileError",
    "ECGInputError",
    "ECGUnusableSignalError",
    "ECGLeadNameError",
]


class ECGDataError(Exception):
    """Base class: something is wrong with one record. ``record`` names it, ``problem`` says what."""

    def __init__(self, record: str | os.PathLike | None, problem: str):
        self.record = os.fspath(record) if record is not None else "<unknown record>"
        self.problem = str(problem)
        super().__init__(f"{self.record}: {self.problem}")

    def __reduce__(self):  # keep pickling working (multiprocessing workers in dataset builders)
        return (self.__class__, (self.record, self.problem))


class MissingFileError(ECGDataError, FileNotFoundError):
    """The header file or a signal file of the record does not exist."""

    def __str__(self) -> str:  # FileNotFoundError would otherwise format errno/filename
        return f"{self.record}: {self.problem}"


class HeaderError(ECGDataError, ValueError):
    """The header cannot be read or lacks a required field."""


class UnitError(HeaderError):
    """An ECG channel's header declares a physical unit that is not a voltage (``mmHg``, ``furlong``, an
    unknown word): its samples cannot be converted to mV, so the record is refused rather than scored at an
    unknown scale. The message names the record, the channel and the unit."""


class TruncatedSignalError(ECGDataError, ValueError):
    """The signal file holds fewer samples than the header announces."""


class InvalidSignalError(ECGDataError, ValueError):
    """The signal contains NaN or infinite values (or is otherwise unusable)."""


class SignalTooShortError(ECGDataError, ECGInputError):
    """The signal is shorter than its consumer accepts: a builder's ``min_samples``, or the ``min_length``
    of an exported graph (:class:`~ecgnat_hf.export.ExportedECGNAT`), below which the graph would return
    wrong numbers rather than an error. Also an ``ECGInputError`` (a ``ValueError``)."""


class SignalMismatchError(ECGDataError, ValueError):
    """The signal file disagrees with its header (first samples, checksums, MATLAB matrix layout): a
    corrupted, swapped or re-ordered file, which would otherwise be read as the wrong leads."""


class UnreadableRecordError(ECGDataError, ValueError):
    """The record could not be read for a reason no more specific class describes (the message keeps
    the underlying error)."""


class LeadNameError(ECGDataError, ECGLeadNameError):
    """Unknown, duplicate or missing lead names. Also a ``ValueError``."""


class SamplingRateError(ECGDataError, ValueError):
    """Missing, non-positive or otherwise wrong sampling rate."""


class MissingSamplingRateError(HeaderError, SamplingRateError):
    """The header (or the MATLAB file, without an explicit ``sampling_rate=``) gives no sampling rate."""


class NoUsableLeadError(InvalidSignalError, ECGUnusableSignalError):
    """No lead of the record passed the signal-quality checks (all flat, dead or saturated): the record
    is refused rather than scored. ``report`` is the :class:`~ecgnat_hf.data.quality.QualityReport`
    (``None`` after unpickling). Also an ``ECGUnusableSignalError`` (what the feature extractor raises)."""

    def __init__(self, record, problem: str, report=None):
        ECGDataError.__init__(self, record, problem)
        self.report = report


class LabelFileError(ECGDataError, ValueError):
    """A labels table cannot be used: unreadable (encoding, empty), a bad value, an empty cell, conflicting
    duplicate rows. ``record`` is the file; ``row`` (1-based line number in the file, header = line 1)
    and ``column`` say where when known."""

    def __init__(self, record, problem: str, row: int | None = None, column: str | None = None):
        self.row = row
        self.column = column
        where = []
        if row is not None:
            where.append(f"line {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(record, (", ".join(where) + ": " if where else "") + str(problem))
        self.problem = str(problem)

    def __str__(self) -> str:
        return self.args[0] if self.args else super().__str__()

    def __reduce__(self):
        return (self.__class__, (self.record, self.problem, self.row, self.column))
