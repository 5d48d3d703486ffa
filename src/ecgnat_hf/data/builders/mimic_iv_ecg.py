"""MIMIC-IV-ECG (diagnostic 12-lead ECGs, 10 s at 500 Hz) as a ``datasets`` builder.

Usage::

    b = MIMICIVECG(data_dir="/data/mimic-iv-ecg/1.0", cache_dir="/tmp/hf")
    b.download_and_prepare(num_proc=8)
    ds = b.as_dataset()                 # train / validation / test, split by subject
    print(b.skipped_summary())          # records left out, per reason

``data_dir`` is the release folder:

* ``record_list.csv`` (``subject_id, study_id, file_name, ecg_time, path``) is the index: every row is one
  record, read from ``data_dir/<path>.hea`` + ``.dat`` (WFDB format 16). Without it the ``files/`` tree is
  walked (slower; subject and study then come from the ``p<subject>/s<study>`` folder names).
* ``machine_measurements.csv`` (optional): the machine's report (``report_0`` ... ``report_17``; the
  non-empty statements, in order, are ``report_statements`` and, joined with ``"; "``, ``report``) and its
  intervals and axes (``rr_interval``, ``p_onset``, ``p_end``, ``qrs_onset``, ``qrs_end``, ``t_end``,
  ``p_axis``, ``qrs_axis``, ``t_axis``), where the release's missing-value code ``29999`` becomes ``None``;
  also ``cart_id``, ``bandwidth`` and ``filtering``. Joined on ``study_id``. Absent: those fields are ``None``.

Leads: MIMIC-IV-ECG stores them as I, II, III, aVR, **aVF, aVL**, V1-V6. They are placed by the names in
each header, never by position, into the canonical order I, II, III, aVR, aVL, aVF, V1-V6.

Splits are by subject (:func:`~ecgnat_hf.data.builders.common.hash_split` of ``subject_id``): no subject is in
two splits, and a subject lands in the same split whatever part of the corpus is present.

Records left out, each reported in ``builder.skipped`` as ``(record, reason, message)`` where ``record`` is the
``path`` of ``record_list.csv``:

* ``MissingFileError``: the ``.hea`` or the ``.dat`` is missing;
* ``TruncatedSignalError``: the ``.dat`` holds fewer samples than the header announces;
* ``SignalMismatchError``: the ``.dat`` holds *more* bytes than the header's sample count needs (the header
  and the file disagree), or the header's checksums / first samples do not match the file;
* ``NoUsableLeadError``: no lead passes the signal-quality check (an all-zero or all-flat record);
* ``InvalidSignalError``: every lead holds invalid samples;
* other reader errors (``HeaderError``, ...) with their class name.

A lead holding NaN-coded samples (the format's invalid value -32768) is *masked* by default
(``invalid_leads="mask"``): it is dropped from ``signal`` / ``lead_names`` and named in ``masked_leads``, so
the feature extractor marks it absent (``lead_mask`` 0); it is never interpolated or zeroed. With
``invalid_leads="skip"`` such a record is left out (``InvalidSignalError``) instead.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from ..errors import LabelFileError, SignalMismatchError
from .common import (
    INVALID_LEAD_POLICIES,
    ECGBuilderConfig,
    ECGDatasetBuilder,
    find_records,
    hash_split,
    signal_feature,
)

logger = logging.getLogger(__name__)

__all__ = ["MIMICIVECG", "MIMICIVECGConfig", "MIMIC_MISSING_CODE", "MIMIC_MEASUREMENT_COLUMNS", "MIMIC_DISK_LEAD_ORDER"]

#: the lead order of the files on disk (placed by name; kept here for documentation and tests)
MIMIC_DISK_LEAD_ORDER = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")
#: machine_measurements.csv codes a missing interval / axis as this value
MIMIC_MISSING_CODE = 29999
MIMIC_MEASUREMENT_COLUMNS = ("rr_interval", "p_onset", "p_end", "qrs_onset", "qrs_end", "t_end",
                             "p_axis", "qrs_axis", "t_axis")
_TEXT_COLUMNS = ("cart_id", "bandwidth", "filtering")
_REPORT_COLUMNS = tuple(f"report_{i}" for i in range(18))
_RECORD_LIST_COLUMNS = ("subject_id", "study_id", "path")
_SEP = "\x1f"  # joins the report statements of one record inside the index
_CHUNK = 1000  # records per generator shard (num_proc / streaming workers split the list of chunks)
_BYTES_PER_SAMPLE = {"16": 2.0, "61": 2.0, "80": 1.0, "160": 2.0, "212": 1.5, "24": 3.0, "32": 4.0}
_PATH_RE = re.compile(r"p(\d+)/s(\d+)/(\d+)$")

_CITATION = """\
@misc{gow2023mimicivecg, title={MIMIC-IV-ECG: Diagnostic Electrocardiogram Matched Subset (version 1.0)},
  author={Gow, Brian and Pollard, Tom and Nathanson, Larry A. and Johnson, Alistair and Moody, Benjamin and
  Fernandes, Chrystinne and Greenbaum, Nathaniel and Waks, Jonathan W. and Eslami, Parastou and Carbonati, Tanner
  and others}, year={2023}, publisher={PhysioNet}, doi={10.13026/4nqg-sb35}}
"""


@dataclass
class MIMICIVECGConfig(ECGBuilderConfig):
    """Options.

    Args:
        validation_fraction / test_fraction: about this fraction of the *subjects* in each split.
        seed: seed of the subject hash (another seed, another split).
        invalid_leads: ``"mask"`` (default) drops a lead holding NaN-coded samples, ``"skip"`` leaves the
            record out (see the module docstring).
        machine_measurements: read ``machine_measurements.csv`` when present.
        check_file_size: leave out (``SignalMismatchError``) a record whose ``.dat`` holds more bytes than its
            header's sample count needs.
        min_samples: leave out records shorter than this (``SignalTooShortError``).
    """

    validation_fraction: float = 0.05
    test_fraction: float = 0.05
    seed: int = 0
    invalid_leads: str = "mask"
    machine_measurements: bool = True
    check_file_size: bool = True
    min_samples: int = 1

    def validate(self) -> None:
        super().validate()
        if self.invalid_leads not in INVALID_LEAD_POLICIES:
            raise ValueError(f"invalid_leads must be one of {INVALID_LEAD_POLICIES}, got {self.invalid_leads!r}")
        hash_split(0, self.validation_fraction, self.test_fraction)  # checks the fractions


def _code_or_none(value) -> int | None:
    """An interval / axis value: ``None`` for empty, NaN and the 29999 missing code."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(v) or int(v) == MIMIC_MISSING_CODE:
        return None
    return int(v)


def _text_or_none(value) -> str | None:
    import pandas as pd

    if value is None or (not isinstance(value, (list, tuple, np.ndarray)) and pd.isna(value)):
        return None
    s = str(value).strip()
    return s or None


class MIMICIVECG(ECGDatasetBuilder):
    """MIMIC-IV-ECG v1.0 (Gow et al. 2023), unlabelled; machine reports and measurements when present."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = MIMICIVECGConfig
    BUILDER_CONFIGS = [MIMICIVECGConfig(name="default", description="MIMIC-IV-ECG records split by subject")]
    DEFAULT_CONFIG_NAME = "default"
    DEFAULT_WRITER_BATCH_SIZE = 64

    label_names: list = []  # unlabelled: the reports are text, not a label set

    def _info(self):
        feats = {
            "record_id": datasets.Value("string"),
            "path": datasets.Value("string"),
            "subject_id": datasets.Value("int64"),
            "study_id": datasets.Value("int64"),
            "ecg_time": datasets.Value("string"),
            "sampling_rate": datasets.Value("float32"),
            "n_samples": datasets.Value("int32"),
            "lead_names": datasets.List(datasets.Value("string")),
            "masked_leads": datasets.List(datasets.Value("string")),
            "signal": signal_feature(),
            "report": datasets.Value("string"),
            "report_statements": datasets.List(datasets.Value("string")),
        }
        for c in _TEXT_COLUMNS:
            feats[c] = datasets.Value("string")
        for c in MIMIC_MEASUREMENT_COLUMNS:
            feats[c] = datasets.Value("int32")
        return datasets.DatasetInfo(
            description=("MIMIC-IV-ECG 12-lead ECGs at their native 500 Hz, 12 leads placed by name in canonical order, "
                         "signal in mV, split by subject; machine report and measurements (29999 -> None) when "
                         "machine_measurements.csv is present."),
            features=datasets.Features(feats),
            homepage="https://physionet.org/content/mimic-iv-ecg/1.0/",
            citation=_CITATION,
            license="ODbL-1.0",
        )

    # ------------------------------------------------------------------ the index
    def _root(self) -> Path:
        if not self.config.data_dir:
            raise ValueError("MIMICIVECG needs data_dir=<the MIMIC-IV-ECG folder with record_list.csv and files/>")
        root = Path(self.config.data_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: not a folder")
        return root

    def _record_list(self, root: Path):
        import pandas as pd

        f = root / "record_list.csv"
        if f.exists():
            try:
                df = pd.read_csv(f, dtype={"path": str, "ecg_time": str, "file_name": str})
            except Exception as exc:  # noqa: BLE001 - pandas raises many kinds
                raise LabelFileError(f, f"cannot read the record list: {exc}") from exc
            missing = [c for c in _RECORD_LIST_COLUMNS if c not in df.columns]
            if missing:
                raise LabelFileError(f, f"missing column(s) {missing}; expected subject_id, study_id, file_name, "
                                     "ecg_time, path")
            bad = df["subject_id"].isna() | df["study_id"].isna() | df["path"].isna()
            if bad.any():
                first = int(np.flatnonzero(bad.to_numpy())[0]) + 2
                raise LabelFileError(f, "empty subject_id, study_id or path", row=first)
            df["path"] = df["path"].str.strip().str.replace("\\", "/", regex=False)
            if "ecg_time" not in df.columns:
                df["ecg_time"] = None
            return df[["subject_id", "study_id", "ecg_time", "path"]]
        files = root / "files"
        if not files.is_dir():
            raise FileNotFoundError(f"{root}: neither record_list.csv nor a files/ folder (is this MIMIC-IV-ECG?)")
        logger.warning("%s: no record_list.csv; walking %s for .hea files (subject and study from folder names)",
                       root, files)
        rows = []
        for rec in find_records(files):
            rel = rec.relative_to(root).as_posix()
            m = _PATH_RE.search(rel)
            if m is None:
                self._skip(rel, f"{rel}: not in the files/pNNNN/pSUBJECT/sSTUDY/STUDY layout, so its subject is "
                           "unknown (a subject split needs it)", reason="unknown subject")
                continue
            rows.append((int(m.group(1)), int(m.group(2)), None, rel))
        return pd.DataFrame(rows, columns=["subject_id", "study_id", "ecg_time", "path"])

    def _measurements(self, root: Path):
        import pandas as pd

        f = root / "machine_measurements.csv"
        if not self.config.machine_measurements or not f.exists():
            return None
        try:
            head = pd.read_csv(f, nrows=0)
            cols = ["study_id"] + [c for c in (*_TEXT_COLUMNS, *_REPORT_COLUMNS, *MIMIC_MEASUREMENT_COLUMNS)
                                   if c in head.columns]
            mm = pd.read_csv(f, usecols=cols, dtype={c: str for c in (*_TEXT_COLUMNS, *_REPORT_COLUMNS) if c in cols})
        except Exception as exc:  # noqa: BLE001
            raise LabelFileError(f, f"cannot read the machine measurements: {exc}") from exc
        if "study_id" not in mm.columns:
            raise LabelFileError(f, "no study_id column")
        reports = [c for c in _REPORT_COLUMNS if c in mm.columns]
        out = pd.DataFrame({"study_id": mm["study_id"]})
        # the statements as one string per record, separated by _SEP (split again per record when generating):
        # a column of strings costs a fraction of 800,000 Python lists
        joined = None
        for c in reports:
            col = mm[c].fillna("").str.strip()
            joined = col if joined is None else joined + _SEP + col
        out["report_joined"] = joined if joined is not None else ""
        for c in _TEXT_COLUMNS:
            out[c] = mm[c] if c in mm.columns else None
        for c in MIMIC_MEASUREMENT_COLUMNS:
            out[c] = (pd.to_numeric(mm[c], errors="coerce").astype("float32") if c in mm.columns
                      else np.float32(np.nan))
        dup = out["study_id"].duplicated(keep="first")
        if dup.any():
            logger.warning("%s: %d duplicate study_id row(s); the first of each is used", f, int(dup.sum()))
            out = out[~dup]
        return out

    def _split_generators(self, dl_manager):
        cfg = self.config
        root = self._root()
        df = self._record_list(root)
        dup = df["path"].duplicated(keep="first")
        for p in df.loc[dup, "path"]:
            self._skip(p, f"{p}: listed twice in record_list.csv; the first row is used", reason="duplicate record")
        df = df[~dup]
        mm = self._measurements(root)
        if mm is not None:
            df = df.merge(mm, on="study_id", how="left")
            logger.info("%s: machine measurements for %d of %d records", root, int(df["report_joined"].notna().sum()),
                        len(df))
        df = df.reset_index(drop=True)
        if cfg.record_ids is not None:  # a study id (the file name) or a record_list path
            wanted = {str(r) for r in cfg.record_ids}
            df = df[df["path"].isin(wanted) | df["path"].str.rsplit("/", n=1).str[-1].isin(wanted)]
        if cfg.max_records is not None:
            df = df.iloc[: int(cfg.max_records)]
        df = df.reset_index(drop=True)
        if df.empty:
            raise ValueError(f"no MIMIC-IV-ECG records found under {root}")
        subjects = df["subject_id"].astype("int64")
        by_subject = {s: hash_split(s, cfg.validation_fraction, cfg.test_fraction, cfg.seed) for s in subjects.unique()}
        split = subjects.map(by_subject).to_numpy()
        gens = []
        for name in ("train", "validation", "test"):
            part = df[split == name]
            if part.empty:
                if name == "train" or (name == "validation" and cfg.validation_fraction > 0) or (
                        name == "test" and cfg.test_fraction > 0):
                    logger.warning("MIMICIVECG: the '%s' split is empty and omitted (too few subjects)", name)
                continue
            chunks = [part.iloc[i:i + _CHUNK] for i in range(0, len(part), _CHUNK)]
            gens.append(datasets.SplitGenerator(name=name, gen_kwargs={"chunks": chunks}))
        if not gens:
            raise ValueError(f"no MIMIC-IV-ECG records found under {root}")
        return gens

    # ------------------------------------------------------------------ examples
    def _check_size(self, rec, signal, leads) -> None:
        """The .dat must hold exactly what the header announces: more bytes mean the header and file disagree
        (fewer are already a ``TruncatedSignalError`` of the reader). Uses what the reader found (no second
        header parse): one signal file ``<record>.dat`` in one format, as MIMIC-IV-ECG writes them."""
        formats = set(rec.metadata.get("format") or [])
        sig_len = rec.metadata.get("record_samples")
        dat = Path(rec.path + ".dat")
        if len(formats) != 1 or not sig_len or not dat.is_file():
            return
        bps = _BYTES_PER_SAMPLE.get(formats.pop())
        if bps is None:
            return
        n_sig = int(rec.signal.shape[0])
        size = dat.stat().st_size
        need = int(math.ceil(sig_len * n_sig * bps))
        if size > need:
            held = int(size // (n_sig * bps))
            raise SignalMismatchError(rec.path, f"the header announces {sig_len} samples per lead ({need} bytes) "
                                      f"but {dat.name} holds {size} bytes ({held} samples per lead): header and "
                                      "signal file disagree")

    def _generate_examples(self, chunks):
        self._start_generation()
        cfg = self.config
        root = self._root()
        has_mm = "report_joined" in (chunks[0].columns if chunks else [])
        validate = self._check_size if cfg.check_file_size else None
        # a plain string path: under datasets' streaming patch ``root / rel`` is an xPath, whose every
        # filesystem call re-parses the URL (about 4 % of prepare time at 10^5 records)
        base = os.fspath(root)
        for chunk in chunks:
            for row in chunk.itertuples(index=False):
                rel = str(row.path)
                read = self._read_or_skip(os.path.join(base, rel), min_samples=cfg.min_samples, validate=validate,
                                          name=rel, invalid_leads=cfg.invalid_leads)
                if read is None:
                    continue
                rec, signal, leads = read
                masked = rec.metadata.get("masked_leads", [])
                if masked:
                    logger.info("%s: lead(s) %s hold invalid samples and are masked", rel, ", ".join(masked))
                joined = _text_or_none(row.report_joined) if has_mm else None
                stmts = [t for t in joined.split(_SEP) if t] if joined else []
                ex = {
                    "record_id": rec.record_id,
                    "path": rel,
                    "subject_id": int(row.subject_id),
                    "study_id": int(row.study_id),
                    "ecg_time": _text_or_none(row.ecg_time),
                    "sampling_rate": float(rec.sampling_rate),
                    "n_samples": int(signal.shape[1]),
                    "lead_names": leads,
                    "masked_leads": masked,
                    "signal": signal,
                    "report": "; ".join(stmts) if stmts else None,
                    "report_statements": stmts,
                }
                for c in _TEXT_COLUMNS:
                    ex[c] = _text_or_none(getattr(row, c)) if has_mm else None
                for c in MIMIC_MEASUREMENT_COLUMNS:
                    ex[c] = _code_or_none(getattr(row, c)) if has_mm else None
                yield rel, ex

