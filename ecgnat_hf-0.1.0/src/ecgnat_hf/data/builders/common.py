"""Shared machinery of the ECG dataset builders.

* :class:`ECGBuilderConfig` / :class:`ECGDatasetBuilder`: a ``datasets.GeneratorBasedBuilder`` base
  that reports bad records instead of dropping them silently. Every record that cannot be used is
  added to ``builder.skipped`` as ``SkippedRecord(record, reason, error)`` and a summary with counts
  per reason is logged when preparation ends. The list is also written beside the prepared Arrow
  files (``skipped_records.json``) so a builder that finds its data already prepared in the cache
  still knows what was skipped. It works with ``download_and_prepare(num_proc=N)`` (workers append
  to a shared JSON-lines file) and with ``as_streaming_dataset`` (filled while iterating).
* :func:`canonical_order`: put a 12-lead record into the canonical lead order.
* :func:`export_parquet` / :func:`load_parquet`: share prepared splits as Parquet; the ``datasets``
  feature types (``Array2D``, ``ClassLabel``) are stored in the Parquet schema metadata and restored
  on loading.

Signal storage
--------------
``datasets`` supports a dynamic size only on the *first* dimension of ``Array2D``
(``Array2D(shape=(None, 12))``), so a (leads, samples) array of variable length cannot be an
``Array2D``. Fixed-length sources (PTB-XL, 10 s) use ``Array2D(shape=(12, samples))``; sources of
any length (Challenge, a user's folder) use ``List(List(Value("float32")))`` with leads outside,
which keeps the same (leads, samples) orientation everywhere; ``with_format("numpy")`` returns a
2-D array per example for it too. Writing speed is the same for both (measured: ~2,600 records/s
for 12 x 1000 float32 on one core).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import datasets
import numpy as np

from ..errors import ECGDataError, InvalidSignalError, SignalTooShortError
from ..leads import CANONICAL_LEADS, lead_indices
from ..quality import QualityThresholds, check_signal_quality
from ..records import read_record

logger = logging.getLogger(__name__)

__all__ = [
    "SkippedRecord",
    "ECGBuilderConfig",
    "ECGDatasetBuilder",
    "canonical_order",
    "signal_feature",
    "export_parquet",
    "load_parquet",
    "normalize_sex",
    "find_records",
    "drop_invalid_leads",
    "INVALID_LEAD_POLICIES",
    "hash_split",
]

#: what a builder does with a lead holding NaN / the format's invalid-sample value (WFDB -32768 in format 16):
#: ``"skip"`` the whole record (reason ``InvalidSignalError``) or ``"mask"`` that lead (dropped from
#: ``signal``/``lead_names``, so the feature extractor marks it absent: ``lead_mask`` 0, never imputed)
INVALID_LEAD_POLICIES = ("skip", "mask")

SKIPPED_FILE = "skipped_records.json"


@dataclass(frozen=True)
class SkippedRecord:
    """A record left out of a prepared dataset: which one, and why."""

    record: str
    reason: str  # a short category: the error class name (e.g. "TruncatedSignalError")
    error: str = ""  # the full message

    def as_tuple(self) -> tuple[str, str]:
        return (self.record, self.reason)


@dataclass
class ECGBuilderConfig(datasets.BuilderConfig):
    """Options shared by all ECG builders.

    Args:
        max_records: keep only the first N records (after sorting and filtering); for quick runs.
        record_ids: keep only these record ids.
        canonical_leads: reorder 12-lead records to I, II, III, aVR, aVL, aVF, V1-V6.
        quality_check: leave out (and report, reason ``NoUsableLeadError``) records none of whose leads
            passes :func:`ecgnat_hf.data.quality.check_signal_quality` (all flat / saturated). Every
            builder applies it (PTB-XL, Challenge, folders), as the feature extractor does at inference.
        quality_thresholds: a dict of :class:`~ecgnat_hf.data.quality.QualityThresholds` fields overriding
            the defaults (the same dict the feature extractor's ``quality_thresholds`` takes).
    """

    max_records: int | None = None
    record_ids: tuple | None = None
    canonical_leads: bool = True
    quality_check: bool = True
    quality_thresholds: dict | None = None

    def __post_init__(self):
        super().__post_init__()
        self.validate()

    def validate(self) -> None:
        """Check the options and normalise them (idempotent). The builder runs it again: ``datasets`` sets
        the keyword arguments of a *named* config (``PTBXL(sampling_rate=250)``) after ``__post_init__``."""
        if self.max_records is not None and int(self.max_records) < 1:
            raise ValueError(f"max_records must be >= 1 (or None), got {self.max_records}")
        QualityThresholds.from_dict(self.quality_thresholds)  # an unknown threshold fails here, not per record


def normalize_sex(value) -> str | None:
    """``"male"``/``"female"`` from header or table spellings (PTB-XL: 0 male, 1 female)."""
    if value is None:
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        if isinstance(value, float) and np.isnan(value):
            return None
        return {0: "male", 1: "female"}.get(int(value))
    s = str(value).strip().lower()
    if s in ("m", "male", "man", "0"):
        return "male"
    if s in ("f", "female", "woman", "1"):
        return "female"
    return None


def _float_or_none(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def canonical_order(signal: np.ndarray, lead_names: Sequence[str], record: str | None = None):
    """Return ``(signal, lead_names)`` in canonical 12-lead order when the record has exactly the 12
    standard leads (aliases allowed); otherwise return them unchanged."""
    if len(lead_names) != len(CANONICAL_LEADS):
        return signal, list(lead_names)
    try:
        idx = lead_indices(lead_names, record)
    except ECGDataError:
        return signal, list(lead_names)
    if sorted(idx) != list(range(len(CANONICAL_LEADS))):
        return signal, list(lead_names)
    order = np.argsort(np.asarray(idx))
    if np.array_equal(order, np.arange(len(order))):
        return signal, list(CANONICAL_LEADS)
    return np.ascontiguousarray(signal[order]), list(CANONICAL_LEADS)


def drop_invalid_leads(signal: np.ndarray, lead_names: Sequence[str], record: str | None = None):
    """``(signal, lead_names, masked)`` without the leads that hold any non-finite sample (NaN, inf: the
    WFDB invalid-sample value -32768 of format 16 is read as NaN). ``masked`` names the dropped leads.
    Their samples are not interpolated or zeroed here: a dropped lead is *absent*, and the feature
    extractor gives it ``lead_mask`` 0. :class:`InvalidSignalError` when no lead is left."""
    x = np.asarray(signal)
    names = list(lead_names)
    if x.size == 0:
        return x, names, []
    ok = np.isfinite(x).all(axis=1)
    if ok.all():
        return x, names, []
    masked = [names[i] for i in np.flatnonzero(~ok)]
    if not ok.any():
        n_bad = int((~np.isfinite(x)).sum())
        raise InvalidSignalError(record, f"every lead holds invalid samples (NaN / the format's invalid value; "
                                 f"{n_bad} of {x.size} samples), nothing left to keep")
    return np.ascontiguousarray(x[ok]), [n for n, k in zip(names, ok) if k], masked


def hash_split(group, validation_fraction: float, test_fraction: float, seed: int = 0) -> str:
    """``"train"``, ``"validation"`` or ``"test"`` for one group (a subject, a patient) from a hash of
    ``seed`` and the group: the same group always lands in the same split, whatever other records are
    present, so a corpus can be split by subject record by record (no table of all subjects) and a partial
    download splits the same way as the whole. About ``test_fraction`` of the groups go to test and
    ``validation_fraction`` to validation."""
    if not 0 <= validation_fraction < 1 or not 0 <= test_fraction < 1 or validation_fraction + test_fraction >= 1:
        raise ValueError(f"validation_fraction {validation_fraction} and test_fraction {test_fraction} must be in [0, 1) "
                         "and leave some training data")
    h = hashlib.blake2b(f"{int(seed)}:{group}".encode(), digest_size=8).digest()
    u = int.from_bytes(h, "little") / 2.0**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + validation_fraction:
        return "validation"
    return "train"


def signal_feature(n_leads: int | None = None, n_samples: int | None = None):
    """``Array2D`` when both sizes are fixed, else a nested float32 list (see module docstring)."""
    if n_leads is not None and n_samples is not None:
        return datasets.Array2D(shape=(int(n_leads), int(n_samples)), dtype="float32")
    return datasets.List(datasets.List(datasets.Value("float32")))


def find_records(root: str | os.PathLike, include_matlab: bool = False) -> list[Path]:
    """WFDB records (paths without extension) under ``root``, recursively, sorted; with
    ``include_matlab`` also ``.mat`` files that have no ``.hea`` beside them (returned with suffix)."""
    root = Path(root)
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = set(filenames)
        for f in filenames:
            if f.startswith("."):
                continue
            stem, ext = os.path.splitext(f)
            if ext.lower() == ".hea":
                out.append(Path(dirpath) / stem)
            elif include_matlab and ext.lower() == ".mat" and f"{stem}.hea" not in names:
                out.append(Path(dirpath) / f)
    return sorted(out)


class ECGDatasetBuilder(datasets.GeneratorBasedBuilder):
    """Base builder: skipped-record bookkeeping and helpers. Subclasses call :meth:`_skip`."""

    BUILDER_CONFIG_CLASS = ECGBuilderConfig

    def __init__(self, *args, **kwargs):
        self.skipped: list[SkippedRecord] = []
        self._skip_log: str | None = None
        super().__init__(*args, **kwargs)

    def _create_builder_config(self, *args, **kwargs):
        # ``datasets`` sets the keyword arguments of a named config after the config's __post_init__, so the
        # options are checked again here, before the builder reads anything
        config, config_id = super()._create_builder_config(*args, **kwargs)
        config.validate()
        return config, config_id

    # ------------------------------------------------------------------ skipped records
    def _skip(self, record, error: BaseException | str, reason: str | None = None) -> None:
        if isinstance(error, BaseException):
            reason = reason or type(error).__name__
            msg = getattr(error, "problem", None) or str(error)
        else:
            reason = reason or "skipped"
            msg = str(error)
        entry = SkippedRecord(str(record), reason, msg)
        self.skipped.append(entry)
        logger.debug("skipping %s: %s (%s)", record, reason, msg)
        if self._skip_log is not None:
            with open(self._skip_log, "a", encoding="utf-8") as f:
                f.write(json.dumps([entry.record, entry.reason, entry.error]) + "\n")

    def _start_generation(self) -> None:
        """Called at the start of every ``_generate_examples`` (also in ``num_proc`` workers)."""
        if self._skip_log is not None:
            open(self._skip_log, "a").close()

    def skipped_summary(self) -> dict[str, int]:
        """Counts of skipped records per reason."""
        return dict(Counter(s.reason for s in self.skipped))

    def _log_skipped(self) -> None:
        if not self.skipped:
            logger.info("%s: no records skipped", self.name)
            return
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped_summary().items()))
        logger.warning(
            "%s: %d record(s) skipped (%s); see builder.skipped. First: %s (%s)",
            self.name, len(self.skipped), counts, self.skipped[0].record, self.skipped[0].error,
        )

    def download_and_prepare(self, *args, **kwargs):
        tmpdir = tempfile.mkdtemp(prefix="ecgnat-skips-")
        self._skip_log = os.path.join(tmpdir, "skipped.jsonl")
        self.skipped = []
        try:
            result = super().download_and_prepare(*args, **kwargs)
            out_dir = Path(self._output_dir)
            if os.path.exists(self._skip_log):  # generated now (here or in workers)
                entries = []
                with open(self._skip_log, encoding="utf-8") as f:
                    for line in f:
                        if line.strip():
                            entries.append(SkippedRecord(*json.loads(line)))
                seen, unique = set(), []
                for e in entries:
                    if e.as_tuple() not in seen:
                        seen.add(e.as_tuple())
                        unique.append(e)
                self.skipped = unique
                if out_dir.is_dir():
                    tmp = out_dir / f".{SKIPPED_FILE}.{uuid.uuid4().hex}"
                    tmp.write_text(json.dumps([[e.record, e.reason, e.error] for e in unique], indent=0))
                    os.replace(tmp, out_dir / SKIPPED_FILE)
            elif (out_dir / SKIPPED_FILE).exists():  # found prepared in the cache
                self.skipped = [SkippedRecord(*e) for e in json.loads((out_dir / SKIPPED_FILE).read_text())]
            self._log_skipped()
            return result
        finally:
            self._skip_log = None
            shutil.rmtree(tmpdir, ignore_errors=True)

    # ------------------------------------------------------------------ record selection
    def _select(self, items: list, key=lambda x: x) -> list:
        cfg = self.config
        if cfg.record_ids is not None:
            wanted = {str(r) for r in cfg.record_ids}
            items = [it for it in items if str(key(it)) in wanted]
        if cfg.max_records is not None:
            items = items[: int(cfg.max_records)]
        return items

    def _read_or_skip(self, path, min_samples: int = 0, validate=None, *, name=None, invalid_leads: str = "skip",
                      **read_kwargs):
        """``(record, signal, lead_names)`` with leads placed, or ``None`` after reporting the record in
        ``skipped``: typed data errors keep their class as the reason, anything else is 'unreadable'.

        Every builder reads through here, so every builder applies the same checks in the same order: the
        reader's own, then :meth:`_accept_or_skip` (invalid leads, ``min_samples``, signal quality, the
        builder's ``validate``). ``name``: how the record is named in ``skipped`` (default: ``path``; the
        corpus builders give the path as the dataset's own index writes it). ``invalid_leads``: ``"skip"``
        (a record holding NaN / the format's invalid-sample value is left out, reason
        ``InvalidSignalError``) or ``"mask"`` (such leads are dropped, see :func:`drop_invalid_leads`)."""
        name = str(path) if name is None else str(name)
        if invalid_leads not in INVALID_LEAD_POLICIES:
            raise ValueError(f"invalid_leads must be one of {INVALID_LEAD_POLICIES}, got {invalid_leads!r}")
        if invalid_leads == "mask":
            read_kwargs["check_finite"] = False
        try:
            rec = read_record(path, **read_kwargs)
        except ECGDataError as exc:
            self._skip(name, exc)
            return None
        except Exception as exc:
            self._skip(name, exc, reason=f"unreadable ({type(exc).__name__})")
            return None
        return self._accept_or_skip(rec, name, min_samples=min_samples, validate=validate, invalid_leads=invalid_leads)

    def _accept_or_skip(self, rec, name, *, min_samples: int = 0, validate=None, invalid_leads: str = "skip"):
        """The checks every record passes after reading, in this order: leads placed (canonical order),
        invalid leads (``invalid_leads="mask"``: dropped and listed in ``rec.metadata["masked_leads"]``;
        ``"skip"``: a non-finite sample leaves the record out), ``min_samples``, the signal-quality check
        (``config.quality_check``, thresholds ``config.quality_thresholds``: a record with no usable lead is
        left out with reason ``NoUsableLeadError``), then ``validate(record, signal, lead_names)``, a
        builder's own expectations (PTB-XL: rate and shape), which raises an :class:`ECGDataError` to leave
        the record out. Returns ``(record, signal, lead_names)`` or ``None`` after reporting ``name``."""
        try:
            signal, leads = self._place_leads(rec)
            if invalid_leads == "mask":
                signal, leads, masked = drop_invalid_leads(signal, leads, rec.path)
                rec.metadata["masked_leads"] = masked
            elif signal.size and not np.isfinite(signal).all():
                bad = [leads[i] for i in np.flatnonzero(~np.isfinite(signal).all(axis=1))]
                raise InvalidSignalError(rec.path, f"non-finite (NaN / invalid-value) samples in lead(s) {', '.join(bad)}")
            if signal.shape[1] < max(int(min_samples), 1):
                raise SignalTooShortError(rec.path, f"only {signal.shape[1]} samples (min_samples={max(int(min_samples), 1)})")
            if getattr(self.config, "quality_check", True):
                check_signal_quality(signal, rec.sampling_rate, leads, getattr(self.config, "quality_thresholds", None),
                                     record=rec.path, require_usable=True)
            if validate is not None:
                validate(rec, signal, leads)
        except ECGDataError as exc:
            self._skip(name, exc)
            return None
        except Exception as exc:
            self._skip(name, exc, reason=f"unreadable ({type(exc).__name__})")
            return None
        return rec, signal, leads

    def _place_leads(self, rec) -> tuple[np.ndarray, list[str]]:
        if self.config.canonical_leads:
            return canonical_order(rec.signal, rec.lead_names, rec.path)
        return rec.signal, list(rec.lead_names)


# ---------------------------------------------------------------------------------------- Parquet
def export_parquet(data, output_dir: str | os.PathLike, splits: Iterable[str] | None = None) -> dict[str, Path]:
    """Write each split to ``output_dir/<split>.parquet`` (written under a temporary name, then
    renamed). ``data``: a ``DatasetDict``, a ``Dataset`` (written as ``train``) or a prepared builder."""
    if isinstance(data, datasets.DatasetBuilder):
        data = data.as_dataset()
    if isinstance(data, datasets.Dataset):
        data = datasets.DatasetDict({"train": data})
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for split in splits or list(data.keys()):
        ds = data[split]
        target = out / f"{split}.parquet"
        tmp = out / f".{split}.parquet.{uuid.uuid4().hex}.tmp"
        try:
            ds.to_parquet(str(tmp))
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        written[split] = target
    return written


def load_parquet(input_dir: str | os.PathLike) -> datasets.DatasetDict:
    """Reload splits written by :func:`export_parquet`; feature types come back from the metadata."""
    d = Path(input_dir)
    files = sorted(d.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no .parquet files in {d}")
    return datasets.DatasetDict({f.stem: datasets.Dataset.from_parquet(str(f)) for f in files})
