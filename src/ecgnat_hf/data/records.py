"""Reading ECG records: WFDB (``.hea`` + ``.dat``/``.mat``), PhysioNet/CinC Challenge quirks, CPSC MATLAB.

Public API
----------
- :class:`ECGRecord`: signal (leads, samples) float32 in mV, sampling rate, lead names, metadata.
- :func:`read_record`: read one record, path with or without extension.
- :func:`read_header`: header only (no signal I/O), as a plain ``dict``.
- :func:`read_matlab_record`: MATLAB files without a WFDB header (CPSC 2018 ``ECG`` struct,
  CPSC 2019 ``ecg`` key, a bare ``val`` matrix).

Design
------
WFDB headers are parsed by a small, tolerant parser here rather than by ``wfdb.rdheader``:

* it accepts the PhysioNet/CinC Challenge 2020 quirks that ``wfdb`` rejects or misreads: a record
  line that starts with the signal file name (``A0001.mat 12 500 7500 ...``), date before time
  (``05-Feb-2020 11:39:16``), lowercase units (``/mv``), signal formats written ``16+24``;
* it is several times faster than ``wfdb.rdheader`` (which dominates ``wfdb.rdrecord`` time on
  10-second records), which matters for dataset builders reading tens of thousands of records.

Signals in the common formats (16, 61, 80, 160, 212, 24, 32, and Challenge ``.mat`` files, which
are MATLAB v4 files whose data block is exactly a format-16 signal file at byte offset 24) are read
with ``numpy`` directly, and converted exactly as ``wfdb`` does: ``(digital - baseline) / gain``,
with the format's "invalid sample" value becoming NaN. Anything else (difference formats, multi-
segment records, several samples per frame, skew) goes to ``wfdb.rdrecord``; if the header needed
rewriting, a sanitised copy is written to a temporary folder beside symlinks to the signal files.

The header's gain and baseline are always trusted (the Challenge 2020 and 2021 releases of the same
recordings use different gains), and physical units are converted to mV (``uV``/``µV`` -> /1000,
``V`` -> *1000; ``mV``/``mv`` unchanged; a missing unit means mV as in the WFDB specification).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import stat
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import (
    ECGDataError,
    HeaderError,
    InvalidSignalError,
    LeadNameError,
    MissingFileError,
    MissingSamplingRateError,
    SamplingRateError,
    SignalMismatchError,
    TruncatedSignalError,
    UnitError,
    UnreadableRecordError,
)
from ..models.ecgnat.feature_extraction_ecgnat import QualityThresholds
from .leads import CANONICAL_LEADS, LEAD_ALIASES, _squash, rename_leads

_DEFAULT_THRESHOLDS = QualityThresholds()

__all__ = ["ECGRecord", "read_record", "read_header", "read_matlab_record", "SIGNAL_EXTENSIONS"]

SIGNAL_EXTENSIONS = (".hea", ".dat", ".mat")

# WFDB defaults (see the WFDB header specification)
_DEFAULT_GAIN = 200.0

# bytes per sample for formats we read ourselves (212 is 3 bytes per 2 samples)
_BYTES_PER_SAMPLE = {"16": 2.0, "61": 2.0, "80": 1.0, "160": 2.0, "212": 1.5, "24": 3.0, "32": 4.0}
# value that marks an invalid (missing) sample in the digital signal, per format (as in wfdb)
_INVALID_SAMPLE = {
    "16": -(2**15), "61": -(2**15), "80": -(2**7), "160": -(2**15), "212": -(2**11),
    "24": -(2**23), "32": -(2**31),
}

# voltage units, matched after _unit_key (case, spaces, the micro signs and a mis-decoded "Âµ" folded)
_UNIT_TO_MV = {
    "mv": 1.0, "millivolt": 1.0, "millivolts": 1.0,
    "uv": 1e-3, "microvolt": 1e-3, "microvolts": 1e-3,
    "v": 1e3, "volt": 1e3, "volts": 1e3,
    "nv": 1e-6, "nanovolt": 1e-6, "nanovolts": 1e-6,
}
# the largest magnitude a header baseline / ADC zero can have: the widest WFDB format is 32-bit
_MAX_ADC = 2**31
_FLOAT32_MAX = float(np.finfo(np.float32).max)


# ---------------------------------------------------------------------------------------------
# the record
# ---------------------------------------------------------------------------------------------
@dataclass
class ECGRecord:
    """One recording.

    Attributes:
        signal: float32 array (leads, samples) in mV.
        sampling_rate: samples per second.
        lead_names: as written in the file (not normalised; see :func:`ecgnat_hf.data.leads.lead_indices`).
        record_id: record name (file stem).
        path: path without extension for WFDB records, the ``.mat`` path for MATLAB-only records.
        metadata: ``age`` (float or None), ``sex`` (str or None), ``dx`` (list of SNOMED code strings)
            when the header has ``# Age:``/``# Sex:``/``# Dx:`` lines, ``comments`` (raw header
            comments), ``units`` (units as written), ``header_fields`` (all ``# key: value`` pairs),
            ``format``, ``base_date``/``base_time`` when present, ``source`` ("wfdb" or "matlab").
    """

    signal: np.ndarray
    sampling_rate: float
    lead_names: list[str]
    record_id: str
    path: str
    metadata: dict = field(default_factory=dict)

    @property
    def n_leads(self) -> int:
        return int(self.signal.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.signal.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / float(self.sampling_rate)

    def __repr__(self) -> str:  # keep the big array out of reprs / logs
        return (
            f"ECGRecord(record_id={self.record_id!r}, leads={self.lead_names}, "
            f"sampling_rate={self.sampling_rate:g}, samples={self.n_samples}, path={self.path!r})"
        )


# ---------------------------------------------------------------------------------------------
# header parsing
# ---------------------------------------------------------------------------------------------
@dataclass
class _Signal:
    file_name: str
    fmt: str
    samps_per_frame: int
    skew: int
    byte_offset: int
    gain: float
    baseline: int
    units: str
    adc_res: int | None
    adc_zero: int
    init_value: int | None
    description: str
    checksum: int | None = None
    zero_gain: bool = False  # the header wrote 0 (uncalibrated): WFDB's default gain is used


@dataclass
class _Header:
    record_name: str
    n_seg: int | None
    n_sig: int
    fs: float | None
    sig_len: int | None
    base_time: str | None
    base_date: str | None
    signals: list[_Signal]
    comments: list[str]
    quirks: list[str]


_FMT_RE = re.compile(r"^(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?$")
_GAIN_RE = re.compile(r"^([^(/]*)(?:\(([^)]*)\))?(?:/(.*))?$")
_FS_RE = re.compile(r"^([0-9.eE+-]+)(?:/([0-9.eE+-]+)(?:\(([^)]*)\))?)?$")
_TIME_RE = re.compile(r"^\d{1,2}:\d{1,2}(?::\d{1,2}(?:\.\d*)?)?$")
_DATE_RE = re.compile(r"^\d{1,2}[/.-](\d{1,2}|[A-Za-z]{3})[/.-]\d{2,4}$")
_KEY_VALUE_RE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9 _()/.-]*?)\s*:\s*(.*?)\s*$")


def _split_path(path: str | os.PathLike) -> tuple[Path, str]:
    """Return (record path without extension, extension or '')."""
    p = Path(os.fspath(path))
    suffix = p.suffix.lower()
    if suffix in SIGNAL_EXTENSIONS:
        return p.with_suffix(""), suffix
    return p, ""


def _to_int(tok: str, what: str, rec: str) -> int:
    try:
        return int(tok)
    except ValueError:
        try:
            value = float(tok)
        except ValueError:
            raise HeaderError(rec, f"cannot read {what} from {tok!r}") from None
        if not value.is_integer():
            raise HeaderError(rec, f"{what} must be an integer, got {tok!r}") from None
        return int(value)


def _parse_header_text(text: str, rec: str) -> _Header:
    lines = text.splitlines()
    comments: list[str] = []
    content: list[str] = []
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            comments.append(stripped[1:].strip())
            continue
        # trailing comment on a content line
        if "#" in stripped:
            stripped, _, tail = stripped.partition("#")
            comments.append(tail.strip())
            stripped = stripped.strip()
            if not stripped:
                continue
        content.append(stripped)
    if not content:
        raise HeaderError(rec, "header has no record line")

    quirks: list[str] = []
    tokens = content[0].split()
    if len(tokens) < 2:
        raise HeaderError(rec, f"record line {content[0]!r} needs at least a name and a signal count")
    name_tok = tokens[0]
    stem, _, ext = name_tok.rpartition(".")
    if stem and ("." + ext.lower()) in (".mat", ".dat", ".hea"):
        quirks.append(f"record line starts with the file name {name_tok!r}")
        name_tok = stem
    record_name, _, nseg_tok = name_tok.partition("/")
    n_seg = _to_int(nseg_tok, "segment count", rec) if nseg_tok else None
    n_sig = _to_int(tokens[1], "signal count", rec)
    if n_sig < 0:
        raise HeaderError(rec, f"negative signal count {n_sig}")

    fs: float | None = None
    sig_len: int | None = None
    base_time = base_date = None
    rest = tokens[2:]
    if rest:
        m = _FS_RE.match(rest[0])
        if m is None:
            # a date/time straight after the signal count means the sampling rate is missing
            if _TIME_RE.match(rest[0]) or _DATE_RE.match(rest[0]):
                raise MissingSamplingRateError(rec, "header gives no sampling rate")
            raise HeaderError(rec, f"cannot read the sampling rate from {rest[0]!r}")
        fs = float(m.group(1))
        rest = rest[1:]
    if rest and not (_TIME_RE.match(rest[0]) or _DATE_RE.match(rest[0])):
        sig_len = _to_int(rest[0], "signal length", rec)
        rest = rest[1:]
    for tok in rest:  # base time and date, in either order (Challenge 2020 writes the date first)
        if _TIME_RE.match(tok) and base_time is None:
            base_time = tok
        elif _DATE_RE.match(tok) and base_date is None:
            if base_time is None:
                quirks.append("date before time on the record line")
            base_date = tok
        else:
            quirks.append(f"ignored record-line field {tok!r}")
    if fs is None:
        raise MissingSamplingRateError(rec, "header gives no sampling rate")
    if not math.isfinite(fs) or fs <= 0:
        raise SamplingRateError(rec, f"sampling rate must be positive, header says {fs:g}")

    signals: list[_Signal] = []
    if n_seg is None:
        sig_lines = content[1 : 1 + n_sig]
        if len(sig_lines) < n_sig:
            raise HeaderError(rec, f"header announces {n_sig} signals but has {len(sig_lines)} signal lines")
        for i, line in enumerate(sig_lines):
            signals.append(_parse_signal_line(line, i, rec, quirks))
    return _Header(record_name, n_seg, n_sig, fs, sig_len, base_time, base_date, signals, comments, quirks)


def _parse_signal_line(line: str, i: int, rec: str, quirks: list[str]) -> _Signal:
    toks = line.split()
    if len(toks) < 2:
        raise HeaderError(rec, f"signal line {i + 1} {line!r} needs at least a file name and a format")
    file_name = toks[0]
    m = _FMT_RE.match(toks[1])
    if m is None:
        raise HeaderError(rec, f"signal line {i + 1}: cannot read the format {toks[1]!r}")
    fmt = m.group(1)
    spf = int(m.group(2)) if m.group(2) else 1
    skew = int(m.group(3)) if m.group(3) else 0
    offset = int(m.group(4)) if m.group(4) else 0
    gain, baseline, units = _DEFAULT_GAIN, None, "mV"
    if len(toks) > 2:
        gm = _GAIN_RE.match(toks[2])
        if gm is None or not gm.group(1):
            raise HeaderError(rec, f"signal line {i + 1}: cannot read the gain {toks[2]!r}")
        try:
            gain = float(gm.group(1))
            if gm.group(2) not in (None, ""):
                baseline = _to_int(gm.group(2), "baseline", rec)
        except ValueError:
            raise HeaderError(rec, f"signal line {i + 1}: cannot read the gain {toks[2]!r}") from None
        if gm.group(3):
            units = gm.group(3)
        zero_gain = gain == 0
        if zero_gain:
            gain = _DEFAULT_GAIN  # WFDB: zero gain means "uncalibrated", use the default (flagged by read_record)
            quirks.append(f"signal {i + 1}: zero gain replaced by {_DEFAULT_GAIN:g}")
    else:
        zero_gain = False
    adc_res = _to_int(toks[3], "ADC resolution", rec) if len(toks) > 3 else None
    adc_zero = _to_int(toks[4], "ADC zero", rec) if len(toks) > 4 else 0
    init_value = _to_int(toks[5], "initial value", rec) if len(toks) > 5 else None
    checksum = _to_int(toks[6], "checksum", rec) if len(toks) > 6 else None
    description = " ".join(toks[8:]) if len(toks) > 8 else ""
    if not math.isfinite(gain):
        raise HeaderError(rec, f"signal line {i + 1}: gain must be a finite number, got {toks[2]!r}")
    if baseline is None:
        baseline = adc_zero
    for what, value in (("baseline", baseline), ("ADC zero", adc_zero)):
        if abs(value) > _MAX_ADC:
            raise HeaderError(rec, f"signal line {i + 1}: {what} {float(value):.3g} adu is beyond any ADC's range "
                              "(|value| <= 2^31 for the widest WFDB format): the header is corrupted")
    return _Signal(file_name, fmt, spf, skew, offset, gain, baseline, units, adc_res, adc_zero,
                   init_value, description, checksum, zero_gain)


def _parse_age(value: str) -> float | None:
    try:
        age = float(value)
    except (TypeError, ValueError):
        return None
    return age if math.isfinite(age) else None


def _metadata_from_comments(comments: list[str]) -> dict[str, Any]:
    """``# Age: 78``, ``# Sex: Male``, ``# Dx: 1,2`` (Challenge) and ``# age: 81`` (PTB) lines."""
    fields: dict[str, str] = {}
    for c in comments:
        m = _KEY_VALUE_RE.match(c)
        if m and m.group(1).strip():
            fields.setdefault(m.group(1).strip(), m.group(2))
    lower = {k.lower(): v for k, v in fields.items()}
    meta: dict[str, Any] = {"comments": list(comments), "header_fields": fields}
    if "age" in lower:
        meta["age"] = _parse_age(lower["age"])
    if "sex" in lower:
        sex = lower["sex"].strip()
        meta["sex"] = None if sex.lower() in ("", "unknown", "nan", "none") else sex
    if "dx" in lower:
        meta["dx"] = [code.strip() for code in lower["dx"].split(",") if code.strip()]
    return meta


def _header_path(path: str | os.PathLike) -> tuple[Path, Path]:
    base, _ = _split_path(path)
    if not base.name or base.name in (".", ".."):
        raise MissingFileError(str(path) or "<empty path>", "not a record path (give a record name, e.g. "
                               "data/00001_lr or data/00001_lr.hea)")
    return base, base.with_name(base.name + ".hea")


def _load_header(path: str | os.PathLike) -> tuple[Path, _Header]:
    base, hea = _header_path(path)
    rec = str(base)
    try:
        raw = hea.read_bytes()
    except FileNotFoundError:
        raise MissingFileError(rec, f"header file {hea.name} not found in {hea.parent}") from None
    except IsADirectoryError:
        raise MissingFileError(rec, f"header path {hea} is a directory") from None
    except OSError as exc:  # symlink loops (ELOOP), permissions, names too long, I/O errors
        raise MissingFileError(rec, f"cannot read the header file {hea.name}: {exc.strerror or exc}") from None
    if b"\x00" in raw[:4096]:
        raise HeaderError(rec, f"{hea.name} is not a text header (binary content)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return base, _parse_header_text(text, rec)


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """Read only the ``.hea`` file (no signal I/O).

    Returns a dict with ``record_id``, ``path`` (without extension), ``sampling_rate``, ``sig_len``
    (None when the header omits it), ``n_sig``, ``lead_names``, ``units``, ``gains``, ``baselines``,
    ``formats``, ``files``, ``comments``, ``base_time``, ``base_date``, ``quirks`` and the parsed
    ``age``/``sex``/``dx`` when present, also under ``metadata``.
    """
    base, h = _load_header(path)
    meta = _metadata_from_comments(h.comments)
    out: dict[str, Any] = {
        "record_id": base.name,
        "path": str(base),
        "sampling_rate": h.fs,
        "sig_len": h.sig_len,
        "n_sig": h.n_sig,
        "n_seg": h.n_seg,
        "lead_names": [s.description for s in h.signals],
        "units": [s.units for s in h.signals],
        "gains": [s.gain for s in h.signals],
        "baselines": [s.baseline for s in h.signals],
        "formats": [s.fmt for s in h.signals],
        "files": sorted({s.file_name for s in h.signals}),
        "comments": h.comments,
        "base_time": h.base_time,
        "base_date": h.base_date,
        "quirks": h.quirks,
        "metadata": meta,
    }
    for key in ("age", "sex", "dx"):
        if key in meta:
            out[key] = meta[key]
    return out


# ---------------------------------------------------------------------------------------------
# signal reading
# ---------------------------------------------------------------------------------------------
def _decode_212(raw: np.ndarray, n: int) -> np.ndarray:
    """Format 212: two 12-bit two's-complement samples in three bytes."""
    n_pairs = (n + 1) // 2
    if raw.size < n_pairs * 3:  # an odd value count ends on a half pair: its last byte is not in the file
        raw = np.concatenate([raw, np.zeros(n_pairs * 3 - raw.size, dtype=raw.dtype)])
    b = raw[: n_pairs * 3].astype(np.int32).reshape(-1, 3)
    out = np.empty(n_pairs * 2, dtype=np.int32)
    out[0::2] = b[:, 0] | ((b[:, 1] & 0x0F) << 8)
    out[1::2] = b[:, 2] | ((b[:, 1] & 0xF0) << 4)
    out[out > 2047] -= 4096
    return out[:n]


def _read_digital(file: Path, fmt: str, offset: int, n_values: int) -> np.ndarray:
    if fmt == "212":
        n_bytes = int(math.ceil(n_values * 1.5))
        raw = np.fromfile(file, dtype=np.uint8, count=n_bytes, offset=offset)
        return _decode_212(raw, n_values)
    if fmt == "24":
        raw = np.fromfile(file, dtype=np.uint8, count=n_values * 3, offset=offset).astype(np.int32)
        raw = raw.reshape(-1, 3)
        val = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        val[val >= 2**23] -= 2**24
        return val
    dtype = {"16": "<i2", "61": ">i2", "80": "u1", "160": "<u2", "32": "<i4"}[fmt]
    raw = np.fromfile(file, dtype=dtype, count=n_values, offset=offset)
    if fmt == "80":
        return raw.astype(np.int32) - 128
    if fmt == "160":
        return raw.astype(np.int32) - 32768
    return raw


def _needs_wfdb(h: _Header) -> str | None:
    if h.n_seg is not None:
        return "multi-segment record"
    for s in h.signals:
        if s.file_name.lower().endswith(".mat") and s.samps_per_frame == 1 and not s.skew:
            continue  # MATLAB files are always read (and validated) here, never by wfdb at a byte offset
        if s.fmt not in _BYTES_PER_SAMPLE:
            return f"format {s.fmt}"
        if s.samps_per_frame != 1:
            return "several samples per frame"
        if s.skew:
            return "skewed signals"
    return None


# MATLAB signal files -----------------------------------------------------------------------------
# MATLAB v4 "type" = M*1000 + O*100 + P*10 + T; P selects the data type of the stored matrix
_MAT4_DTYPES = {0: "f8", 1: "f4", 2: "i4", 3: "i2", 4: "u2", 5: "u1"}


def _mat4_matrices(file: Path, rec: str) -> list[dict]:
    """Headers of the matrices of a MATLAB v4 file (validated), without reading their data."""
    size = file.stat().st_size
    out, pos = [], 0
    with open(file, "rb") as f:
        while pos + 20 <= size and len(out) < 64:
            f.seek(pos)
            head = f.read(20)
            le = np.frombuffer(head, dtype="<i4")
            be = np.frombuffer(head, dtype=">i4")
            vals, endian = (le, "<") if 0 <= int(le[0]) < 1000 else (be, ">")
            mtype, mrows, ncols, imagf, namlen = (int(v) for v in vals)
            m, o, prec, t = mtype // 1000, (mtype // 100) % 10, (mtype // 10) % 10, mtype % 10
            if (m, o, t) != ((0 if endian == "<" else 1), 0, 0) or prec not in _MAT4_DTYPES or imagf not in (0, 1):
                if not out:
                    raise HeaderError(rec, f"signal file {file.name} is not a MATLAB v4/v5/v7.3 file with a numeric "
                                      f"matrix (v4 type field {int(le[0])})")
                break  # trailing bytes after the last matrix
            if mrows < 0 or ncols < 0 or not 1 <= namlen <= 64:
                raise HeaderError(rec, f"signal file {file.name}: invalid MATLAB v4 matrix header "
                                  f"({mrows} x {ncols}, name length {namlen})")
            name = f.read(namlen).split(b"\x00", 1)[0].decode("latin-1")
            dtype = np.dtype(endian + _MAT4_DTYPES[prec])
            n_bytes = mrows * ncols * dtype.itemsize * (2 if imagf else 1)
            data_at = pos + 20 + namlen
            out.append(dict(name=name, shape=(mrows, ncols), dtype=dtype, offset=data_at, complex=bool(imagf),
                            available=max(0, size - data_at), needed=n_bytes))
            pos = data_at + n_bytes
    return out


def _pick_matrix(cands: list[tuple[str, tuple]], n_ch: int, sig_len: int | None, file: Path, rec: str):
    """Name, orientation ('rows': signals along rows, as the Challenge writes ``val``) of the matrix to use."""
    def fits(shape, rows_are_signals):
        r, c = shape if rows_are_signals else shape[::-1]
        return r == n_ch and (sig_len is None or c == sig_len)

    ordered = sorted(cands, key=lambda kv: kv[0] != "val")
    for name, shape in ordered:
        if len(shape) == 2 and fits(shape, True):
            return name, True
        if len(shape) == 2 and fits(shape, False):
            return name, False
    found = ", ".join(f"{n!r} {'x'.join(map(str, sh))}" for n, sh in cands) or "no matrix"
    want = f"{n_ch} signals x {sig_len if sig_len is not None else 'any number of'} samples"
    raise SignalMismatchError(rec, f"signal file {file.name} holds {found}; the header announces {want} (the .mat does "
                      "not belong to this header, or was re-saved with another layout)")


def _as_digital(values: np.ndarray, file: Path, rec: str) -> np.ndarray:
    if np.iscomplexobj(values):
        raise HeaderError(rec, f"signal file {file.name} holds complex values")
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        if not np.array_equal(values[finite], np.round(values[finite])):
            raise HeaderError(rec, f"signal file {file.name} holds non-integer values: expected digital samples "
                              "(the header's gain converts them to mV); was it re-saved in physical units?")
        out = np.where(finite, values, -(2**31)).astype(np.int64)
        return out
    return values.astype(np.int64)


def _read_mat_digital(file: Path, fmt: str, n_ch: int, sig_len: int | None, rec: str,
                      quirks: list[str]) -> np.ndarray:
    """Digital samples (samples, channels) of a MATLAB signal file: v4 header validated (type, dimensions,
    variable name), v5/v7 through scipy, v7.3 through h5py. The byte offset in the .hea is never used."""
    with open(file, "rb") as f:
        head = f.read(128)
    if not head:
        raise TruncatedSignalError(rec, f"signal file {file.name} is empty")
    if head[:6] == b"MATLAB" and b"7.3" in head[:20]:
        try:
            import h5py
        except ImportError:
            raise HeaderError(rec, f"signal file {file.name} is a MATLAB v7.3 (HDF5) file: install h5py "
                              "(pip install h5py) to read it") from None
        try:
            with h5py.File(file, "r") as h5:
                cands = [(k, tuple(v.shape[::-1])) for k, v in h5.items()
                         if isinstance(v, h5py.Dataset) and v.ndim == 2 and v.dtype.kind in "iuf"]
                name, rows = _pick_matrix(cands, n_ch, sig_len, file, rec)
                arr = np.asarray(h5[name][()]).T  # HDF5 stores MATLAB matrices transposed
        except ECGDataError:
            raise
        except Exception as exc:  # noqa: BLE001 - h5py raises many kinds for broken files
            raise HeaderError(rec, f"cannot read the MATLAB v7.3 file {file.name}: {exc}") from exc
        quirks.append(f"{file.name}: MATLAB v7.3 file, variable {name!r}")
    elif head[:6] == b"MATLAB" or (len(head) >= 128 and head[126:128] in (b"IM", b"MI")):
        import scipy.io

        try:
            mat = scipy.io.loadmat(str(file))
        except Exception as exc:  # noqa: BLE001 - scipy raises many kinds for broken files
            raise HeaderError(rec, f"cannot read the MATLAB file {file.name}: {exc}") from exc
        cands = [(k, v.shape) for k, v in mat.items() if not k.startswith("__") and isinstance(v, np.ndarray)
                 and v.ndim == 2 and v.dtype.kind in "iufc"]
        name, rows = _pick_matrix(cands, n_ch, sig_len, file, rec)
        arr = np.asarray(mat[name])
        quirks.append(f"{file.name}: MATLAB v5/v7 file, variable {name!r}")
    else:
        mats = _mat4_matrices(file, rec)
        name, rows = _pick_matrix([(m["name"], m["shape"]) for m in mats], n_ch, sig_len, file, rec)
        m = next(m for m in mats if m["name"] == name)
        if m["available"] < m["needed"]:
            raise TruncatedSignalError(rec, f"signal file {file.name} is truncated: matrix {name!r} "
                                       f"{m['shape'][0]}x{m['shape'][1]} needs {m['needed']} bytes, {m['available']} left")
        count = m["shape"][0] * m["shape"][1]
        flat = np.fromfile(file, dtype=m["dtype"], count=count * (2 if m["complex"] else 1), offset=m["offset"])
        if m["complex"]:
            raise HeaderError(rec, f"signal file {file.name} holds complex values")
        arr = flat.reshape(m["shape"][1], m["shape"][0]).T  # column-major on disk
        if name != "val" or m["offset"] != 24:
            quirks.append(f"{file.name}: MATLAB v4 variable {name!r} with data at byte {m['offset']}")
    digital = _as_digital(arr, file, rec)
    if not rows:
        quirks.append(f"{file.name}: samples along the rows (transposed) ")
    return digital.T if rows else digital  # -> (samples, channels)


def _check_against_header(digital: np.ndarray, idx: list[int], h: _Header, file_name: str, rec: str,
                          checksum: bool = True) -> None:
    """WFDB headers carry the first sample and a 16-bit checksum of every signal: a corrupted, swapped or
    re-ordered signal file disagrees with them. Raise :class:`SignalMismatchError` when it does (a value of
    0 in either field is treated as "not computed", as many writers leave it). ``checksum=False`` checks the
    first samples only (``digital`` then holds the start of the signal, not all of it)."""
    if digital.shape[0] == 0:
        return
    sums = None
    for j, i in enumerate(idx):
        s = h.signals[i]
        # 0 is what writers put in both fields when they do not compute them: not checked
        if s.init_value and int(digital[0, j]) != s.init_value:
            raise SignalMismatchError(
                rec, f"signal file {file_name} does not match the header: the first sample of signal {i + 1} "
                f"({s.description or 'unnamed'}) is {int(digital[0, j])}, the header says {s.init_value} "
                "(corrupted, swapped or re-ordered file); read_record(..., verify=False) skips this check")
        if checksum and s.checksum:
            if sums is None:
                sums = digital.astype(np.int64).sum(axis=0)
            if (int(sums[j]) - s.checksum) % 65536 != 0:
                raise SignalMismatchError(
                    rec, f"signal file {file_name} does not match the header: checksum of signal {i + 1} "
                    f"({s.description or 'unnamed'}) is {int(sums[j]) % 65536}, the header says "
                    f"{s.checksum % 65536} (corrupted, swapped or re-ordered file); read_record(..., "
                    "verify=False) skips this check")


def _signals_fast(base: Path, h: _Header, rec: str, verify: bool = True, start: int = 0,
                  stop: int | None = None) -> np.ndarray:
    """Read the signals with numpy; returns float64 physical values (leads, samples) in header units.

    ``start``/``stop``: read only samples ``[start, stop)`` of each lead (``stop`` None: to the end); the
    whole file is still checked against the header for truncation. ``verify``: compare with the header's
    first samples and checksums; a checksum covers the whole signal, so a partial read checks the first
    samples only (when it starts at sample 0)."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(h.signals):
        groups.setdefault(s.file_name, []).append(i)
    sig_len = h.sig_len
    pieces: dict[int, np.ndarray] = {}
    for file_name, idx in groups.items():
        file = base.parent / file_name
        first = h.signals[idx[0]]
        fmt, offset = first.fmt, first.byte_offset
        if any(h.signals[i].fmt != fmt or h.signals[i].byte_offset != offset for i in idx):
            raise HeaderError(rec, f"signals stored in {file_name} disagree on format or byte offset")
        try:
            st = file.stat()
        except FileNotFoundError:
            raise MissingFileError(rec, f"signal file {file_name} not found in {file.parent}") from None
        except OSError as exc:
            raise MissingFileError(rec, f"cannot read the signal file {file_name}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(st.st_mode):
            raise MissingFileError(rec, f"signal file {file_name} is not a regular file")
        size = st.st_size
        n_ch = len(idx)
        if file_name.lower().endswith(".mat"):
            digital = _read_mat_digital(file, fmt, n_ch, sig_len, rec, h.quirks)
            if sig_len is None:
                sig_len = h.sig_len = digital.shape[0]
            elif digital.shape[0] != sig_len:
                raise HeaderError(rec, f"{file_name} holds {digital.shape[0]} samples per signal, the header "
                                  f"announces {sig_len}")
            lo, hi = _clip_range(start, stop, sig_len)
            if verify:
                _check_against_header(digital, idx, h, file_name, rec)  # the whole matrix is in memory
            digital = digital[lo:hi]
        else:
            bps = _BYTES_PER_SAMPLE[fmt]
            available = int((size - offset) // (bps * n_ch)) if size > offset else 0
            if sig_len is None:
                sig_len = h.sig_len = available  # WFDB allows omitting the length: implied by the file size
            if available < sig_len:
                expected = offset + int(math.ceil(sig_len * n_ch * bps))
                raise TruncatedSignalError(
                    rec,
                    f"signal file {file_name} is truncated: {size} bytes hold {available} of the "
                    f"{sig_len} samples per lead the header announces (expected {expected} bytes)",
                )
            lo, hi = _clip_range(start, stop, sig_len)
            # frame-aligned read of samples [lo, hi); format 212 packs 2 values in 3 bytes: start on an even value
            first = lo * n_ch - (lo * n_ch) % 2 if fmt == "212" else lo * n_ch
            skip = lo * n_ch - first
            digital = _read_digital(file, fmt, offset + int(first * bps), (hi - lo) * n_ch + skip)
            digital = digital[skip:].reshape(hi - lo, n_ch)
            if verify and lo == 0:
                _check_against_header(digital, idx, h, file_name, rec, checksum=(hi == sig_len))
        invalid = _INVALID_SAMPLE.get(fmt, -(2**31))
        baselines = np.array([h.signals[i].baseline for i in idx], dtype=np.float64)
        gains = np.array([h.signals[i].gain for i in idx], dtype=np.float64)
        # (samples, leads) as stored: converted in place, element by element the same arithmetic as
        # (digital - baseline) / gain; transposed to (leads, samples) once, by the final copy below
        phys = digital.astype(np.float64)
        phys -= baselines
        phys /= gains
        bad = digital == invalid
        if invalid != -(2**31) and digital.dtype == np.int64:  # float MATLAB NaN marker (see _as_digital)
            bad |= digital == -(2**31)
        if bad.any():
            phys[bad] = np.nan
        if len(groups) == 1 and idx == list(range(len(h.signals))):  # one file, signals in order: one copy
            return np.ascontiguousarray(phys.T)
        for j, i in enumerate(idx):
            pieces[i] = phys[:, j]
    if not pieces:
        return np.zeros((0, sig_len or 0), dtype=np.float64)
    return np.stack([pieces[i] for i in range(len(h.signals))])


def _clip_range(start: int, stop: int | None, sig_len: int) -> tuple[int, int]:
    lo = min(max(int(start), 0), sig_len)
    hi = sig_len if stop is None else min(max(int(stop), lo), sig_len)
    return lo, hi


def _sanitised_header_text(h: _Header) -> str:
    fs = f"{h.fs:g}"
    line = f"{h.record_name}{'/' + str(h.n_seg) if h.n_seg else ''} {h.n_sig} {fs}"
    if h.sig_len is not None:  # base time/date are dropped: wfdb rejects e.g. "05-Feb-2020"
        line += f" {h.sig_len}"
    return line


def _signals_wfdb(base: Path, h: _Header, rec: str, sampfrom: int = 0,
                  sampto: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Fallback for formats we do not decode; uses wfdb (rewriting a quirky record line if needed).
    ``sampfrom``/``sampto``: read only that sample range (wfdb's own arguments)."""
    import wfdb

    hea = base.with_name(base.name + ".hea")
    for s in h.signals:
        if not (base.parent / s.file_name).exists():
            raise MissingFileError(rec, f"signal file {s.file_name} not found in {base.parent}")
    tmp = None
    try:
        if h.quirks:
            tmp = Path(tempfile.mkdtemp(prefix="ecgnat_hea_"))
            lines = hea.read_text(errors="replace").splitlines()
            out, done = [], False
            for line in lines:
                if not done and line.strip() and not line.strip().startswith("#"):
                    out.append(_sanitised_header_text(h))
                    done = True
                else:
                    out.append(line)
            (tmp / (h.record_name + ".hea")).write_text("\n".join(out) + "\n")
            for fname in {s.file_name for s in h.signals}:
                os.symlink((base.parent / fname).resolve(), tmp / fname)
            target = tmp / h.record_name
        else:
            target = base
        try:
            r = wfdb.rdrecord(str(target), sampfrom=sampfrom, sampto=sampto, physical=True)
        except ECGDataError:
            raise
        except Exception as exc:  # wfdb raises many types for bad files
            raise HeaderError(rec, f"wfdb could not read the record: {exc}") from exc
        p = r.p_signal if r.p_signal is not None else np.zeros((0, 0))
        return np.asarray(p, dtype=np.float64).T, list(r.units or [])
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def calibration_findings(metadata: Mapping, leads: Sequence[str] | None = None) -> list[str]:
    """The header's doubtful calibration as quality findings, for ``leads`` (default: all): a negative gain
    (the lead is inverted as written, exactly as wfdb reads it) and a zero gain (uncalibrated: WFDB's
    default gain is used, so the amplitude is unknown). ``metadata`` is an :class:`ECGRecord`'s."""
    keep = None if leads is None else set(leads)
    out = []
    for key, text in (("negative_gain_leads", "negative gain in the header: inverted as written (check the polarity)"),
                      ("zero_gain_leads", f"gain 0 in the header (uncalibrated): WFDB's default {_DEFAULT_GAIN:g} "
                                          "adu/mV used, so the amplitude is unknown")):
        names = [n for n in metadata.get(key) or [] if keep is None or n in keep]
        if names:
            out.append(f"{'lead' if len(names) == 1 else 'leads'} {', '.join(names)}: {text}")
    return out


def _unit_key(unit: str) -> str:
    key = unit.strip().replace(" ", "")
    # Âµ (a UTF-8 micro sign read as latin-1), µ (micro sign), μ (Greek mu)
    key = key.replace("\u00c2\u00b5", "u").replace("\u00b5", "u").replace("\u03bc", "u")
    return key.lower()


def _unit_factor(unit: str) -> float | None:
    """Factor to mV for a voltage unit (a missing unit is mV, as the WFDB specification says); None otherwise."""
    return _UNIT_TO_MV.get(_unit_key(unit)) if unit and unit.strip() else 1.0


def _is_ecg_channel(name: str) -> bool:
    """A channel the reader must deliver in mV: a standard lead or alias, an unnamed channel (``ch3``: it may
    be named a lead later), or a name that says ECG/EKG."""
    key = _squash(name)
    return key in LEAD_ALIASES or bool(re.fullmatch(r"ch\d+", key)) or "ecg" in key or "ekg" in key


def _check_float32_range(signal: np.ndarray, names: Sequence[str], h: _Header, rec: str) -> None:
    """Values beyond float32 would silently become inf in the record: blame the calibration that made them."""
    if not signal.size:
        return
    with warnings.catch_warnings():  # reductions, no copy of the signal; all-NaN leads give NaN (not compared)
        warnings.simplefilter("ignore", RuntimeWarning)
        hi, lo = signal.max(axis=1), signal.min(axis=1)  # NaN only for a lead holding a NaN: then the nan-aware
        if np.isnan(hi).any() or np.isnan(lo).any():  # reductions, which skip them (all-NaN leads stay NaN)
            hi, lo = np.nanmax(signal, axis=1), np.nanmin(signal, axis=1)
        peak = np.fmax(np.abs(hi), np.abs(lo))
    for i in np.flatnonzero(peak > _FLOAT32_MAX):
        s = h.signals[i] if i < len(h.signals) else None
        cal = f" (gain {s.gain:g} adu/{s.units}, baseline {s.baseline})" if s is not None else ""
        raise InvalidSignalError(rec, f"signal {i + 1} ({names[i] if i < len(names) else i}) reaches "
                                 f"{float(peak[i]):.2g} mV{cal}: the header's gain or units are wrong")


def _check_finite(signal: np.ndarray, lead_names: Sequence[str], rec: str) -> None:
    if signal.size and not np.isfinite(signal).all():
        bad = ~np.isfinite(signal)
        per_lead = bad.sum(axis=1)
        leads = [f"{lead_names[i] if i < len(lead_names) else i} ({int(n)})"
                 for i, n in enumerate(per_lead) if n]
        raise InvalidSignalError(
            rec, f"signal contains {int(bad.sum())} NaN/inf samples in lead(s) {', '.join(leads)}"
        )


def check_lead_names(lead_names: Sequence[str], record: str | None = None, *, unknown: str = "allow") -> None:
    """Raise :class:`LeadNameError` for duplicate lead names (``MLII`` and ``II`` count as the same),
    and for non-standard names when ``unknown="raise"``."""
    seen: dict[str, str] = {}
    unknown_names = []
    for name in lead_names:
        key = _squash(name)
        canonical = LEAD_ALIASES.get(key)
        if canonical is None:
            unknown_names.append(name)
        key = canonical or key
        if key in seen:
            raise LeadNameError(record, f"duplicate lead name {name!r} (same lead as {seen[key]!r})")
        seen[key] = name
    if unknown_names and unknown == "raise":
        raise LeadNameError(
            record,
            f"unknown lead name(s) {', '.join(map(repr, unknown_names))}; expected "
            f"{', '.join(CANONICAL_LEADS)} or an alias",
        )


def _select_channels(signal: np.ndarray, names: list[str], channel_names: Sequence[str], rec: str):
    exact = {n: i for i, n in enumerate(names)}
    by_key: dict[str, int] = {}
    for i, n in enumerate(names):
        key = _squash(n)
        by_key.setdefault(LEAD_ALIASES.get(key, key), i)
    idx = []
    for want in channel_names:
        if want in exact:
            idx.append(exact[want])
            continue
        key = _squash(want)
        key = LEAD_ALIASES.get(key, key)
        if key not in by_key:
            raise LeadNameError(rec, f"requested lead {want!r} not in the record (has {', '.join(names)})")
        idx.append(by_key[key])
    return signal[idx], [names[i] for i in idx]


def read_record(
    path: str | os.PathLike,
    *,
    channel_names: Sequence[str] | None = None,
    validate_leads: bool = False,
    check_finite: bool = True,
    sampling_rate: float | None = None,
    lead_names: Sequence[str] | Mapping[str, str] | None = None,
    verify: bool = True,
    check_sampling_rate: bool = True,
    start: int = 0,
    stop: int | None = None,
    check_units: bool = True,
) -> ECGRecord:
    """Read one ECG record as an :class:`ECGRecord` (float32, mV, (leads, samples)).

    Args:
        path: the record with or without extension (``.hea``, ``.dat`` or ``.mat``). A ``.mat`` file
            without a WFDB header beside it is read by :func:`read_matlab_record`.
        channel_names: keep only these leads, in this order (matched exactly, then through lead
            aliases: ``"II"`` finds ``"MLII"``); a missing one raises :class:`LeadNameError`.
        validate_leads: raise :class:`LeadNameError` for lead names that are not standard 12-lead
            names or aliases (duplicate names always raise).
        check_finite: raise :class:`InvalidSignalError` when the signal holds NaN/inf (also the
            WFDB "invalid sample" value).
        sampling_rate: only for MATLAB files without a header and without known layout.
        lead_names: name the channels yourself: a list (one name per channel, in order; for records
            whose header names none, or names them wrongly) or a mapping ``{"ECG": "I"}`` renaming the
            channels it mentions (matched exactly, then case/space-insensitively). Applied before
            ``channel_names``. Channels the header leaves unnamed are called ``ch0``, ``ch1``, ...
        verify: check the signal file against the header's first-sample values and checksums (WFDB
            signal lines carry both): a corrupted, swapped or re-ordered file raises
            :class:`SignalMismatchError` instead of being read as the wrong leads.
        check_sampling_rate: raise :class:`SamplingRateError` for a rate outside the plausible range
            of :class:`~ecgnat_hf.data.quality.QualityThresholds` (50-20000 Hz).
        start, stop: read only samples ``[start, stop)`` of each lead (clipped to the record), for
            reading long recordings piece by piece (``ecgnat_hf.streaming``). Only those samples are
            read from disk for the formats decoded here (16, 61, 80, 160, 212, 24, 32, Challenge
            ``.mat``); other formats and MATLAB files without a header are read whole, then cut.
            ``metadata["sample_range"]`` is the range read and ``metadata["record_samples"]`` the
            record's full length per lead.
        check_units: raise :class:`UnitError` when an ECG channel (a standard lead name or alias, an
            unnamed channel, or a name containing "ECG"/"EKG") declares a unit that is not a voltage
            (``mmHg``, ``furlong``...). Voltages convert to mV (``uV``/``µV``, ``V``, ``nV``; ``mV`` in any
            case). Other channels (``ABP`` in mmHg) are read unconverted. ``False`` reads every channel as
            written. Header calibration that is read but doubtful (a negative gain: the lead is inverted as
            written; a zero gain: WFDB's default 200 adu/mV is used) is listed, per lead, in
            ``metadata["calibration_flags"]``, which ``ecgnat predict`` puts in its quality column.

    Raises:
        ECGDataError: only its subclasses (MissingFileError, HeaderError, MissingSamplingRateError,
            SamplingRateError, TruncatedSignalError, SignalMismatchError, InvalidSignalError,
            LeadNameError, UnreadableRecordError), each naming the record and the problem.
    """
    try:
        return _read_record(path, channel_names=channel_names, validate_leads=validate_leads,
                            check_finite=check_finite, sampling_rate=sampling_rate, lead_names=lead_names,
                            verify=verify, check_sampling_rate=check_sampling_rate, start=start, stop=stop,
                            check_units=check_units)
    except ECGDataError:
        raise
    except MemoryError:
        raise UnreadableRecordError(os.fspath(path), "not enough memory to read the record") from None
    except OSError as exc:
        raise MissingFileError(os.fspath(path), f"cannot read the record: {exc.strerror or exc}") from None
    except (ValueError, TypeError, IndexError, KeyError, OverflowError, EOFError, UnicodeError) as exc:
        raise UnreadableRecordError(os.fspath(path), f"cannot read the record ({type(exc).__name__}: {exc})") from exc


def _check_rate(fs: float, rec: str, check: bool) -> None:
    if not check:
        return
    th = _DEFAULT_THRESHOLDS
    if not th.min_sampling_rate <= fs <= th.max_sampling_rate:
        raise SamplingRateError(rec, f"implausible sampling rate {fs:g} Hz for an ECG (accepted "
                                f"{th.min_sampling_rate:g}-{th.max_sampling_rate:g} Hz; "
                                "read_record(..., check_sampling_rate=False) reads it anyway)")


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except OSError:
        return False


def _read_record(path, *, channel_names, validate_leads, check_finite, sampling_rate, lead_names, verify,
                 check_sampling_rate, start=0, stop=None, check_units=True) -> ECGRecord:
    if os.fspath(path) == "":
        raise MissingFileError("<empty path>", "no record path given (empty string)")
    base, hea = _header_path(path)  # a path without a record name ("." or "dir/") -> MissingFileError
    ext = _split_path(path)[1]
    if ext == ".mat" and not _is_file(hea):
        names = list(lead_names) if lead_names is not None and not isinstance(lead_names, Mapping) else None
        rec = read_matlab_record(
            base.with_suffix(".mat") if base.suffix == "" else base, sampling_rate=sampling_rate,
            lead_names=names, validate_leads=validate_leads, check_finite=check_finite,
        )
        if isinstance(lead_names, Mapping):
            rec.lead_names = rename_leads(rec.lead_names, lead_names, rec.path)
        if channel_names is not None:
            rec.signal, rec.lead_names = _select_channels(rec.signal, rec.lead_names, channel_names, rec.path)
        _check_rate(rec.sampling_rate, rec.path, check_sampling_rate)
        lo, hi = _clip_range(start, stop, rec.n_samples)
        rec.metadata.update(sample_range=(lo, hi), record_samples=rec.n_samples)
        if (lo, hi) != (0, rec.n_samples):
            rec.signal = np.ascontiguousarray(rec.signal[:, lo:hi])
        return rec
    base, h = _load_header(path)
    rec = str(base)
    _check_rate(float(h.fs), rec, check_sampling_rate)
    reason = _needs_wfdb(h)
    if reason is None:
        signal = _signals_fast(base, h, rec, verify=verify, start=start, stop=stop)
        units = [s.units for s in h.signals]
        total = int(h.sig_len or 0)
        lo, hi = _clip_range(start, stop, total)
    elif h.sig_len:  # wfdb reads the range itself
        total = int(h.sig_len)
        lo, hi = _clip_range(start, stop, total)
        a = min(lo, total - 1)
        signal, _ = _signals_wfdb(base, h, rec, a, max(hi, a + 1))  # wfdb wants a non-empty range
        signal = signal[:, lo - a : hi - a]
        units = [s.units for s in h.signals] or _
    else:  # length not in the header: read all, then cut
        signal, _ = _signals_wfdb(base, h, rec)
        units = [s.units for s in h.signals] or _
        total = int(signal.shape[1])
        lo, hi = _clip_range(start, stop, total)
        if (lo, hi) != (0, total):
            signal = signal[:, lo:hi]
    file_names = [s.description for s in h.signals]
    unnamed = [i for i, n in enumerate(file_names) if not n.strip()]
    lead_names_out = [n if n.strip() else f"ch{i}" for i, n in enumerate(file_names)]
    if signal.shape[0] != len(lead_names_out):  # wfdb multi-segment: names from wfdb would differ
        lead_names_out = [f"ch{i}" for i in range(signal.shape[0])]
    if lead_names is not None:
        lead_names_out = rename_leads(lead_names_out, lead_names, rec)
    check_lead_names(lead_names_out, rec, unknown="raise" if validate_leads else "allow")

    converted = []
    for i, u in enumerate(units):
        f = _unit_factor(u)
        if f is None:
            if check_units and i < len(lead_names_out) and _is_ecg_channel(lead_names_out[i]):
                raise UnitError(rec, f"signal {i + 1} ({lead_names_out[i]}): unit {u!r} is not a voltage; an ECG "
                                "lead must be in mV, uV or V. The record is refused rather than scored at an unknown "
                                "scale (read_record(..., check_units=False) reads it as written)")
            converted.append(False)
            continue
        converted.append(True)
        if f != 1.0:
            signal[i] *= f
    _check_float32_range(signal, lead_names_out, h, rec)
    sigs = h.signals[: len(lead_names_out)]
    zero_gain = [lead_names_out[i] for i, s in enumerate(sigs) if s.zero_gain]
    negative_gain = [lead_names_out[i] for i, s in enumerate(sigs) if s.gain < 0]
    meta = _metadata_from_comments(h.comments)
    meta.update(
        source="wfdb",
        units=units,
        units_converted_to_mV=converted,
        format=[s.fmt for s in h.signals],
        base_time=h.base_time,
        base_date=h.base_date,
        header_quirks=h.quirks,
        zero_gain_leads=zero_gain,
        negative_gain_leads=negative_gain,
        calibration_flags=calibration_findings({"zero_gain_leads": zero_gain, "negative_gain_leads": negative_gain}),
        sample_range=(lo, hi),
        record_samples=total,
    )
    if unnamed:
        meta["unnamed_channels"] = [f"ch{i}" for i in unnamed]
    if lead_names is not None:
        meta["file_lead_names"] = file_names
    if channel_names is not None:
        signal, lead_names_out = _select_channels(signal, lead_names_out, channel_names, rec)
    if check_finite:
        _check_finite(signal, lead_names_out, rec)
    return ECGRecord(
        signal=np.ascontiguousarray(signal, dtype=np.float32),
        sampling_rate=float(h.fs),
        lead_names=lead_names_out,
        record_id=base.name,
        path=rec,
        metadata=meta,
    )


# ---------------------------------------------------------------------------------------------
# MATLAB (CPSC)
# ---------------------------------------------------------------------------------------------
CPSC_SAMPLING_RATE = 500.0


def _mat_scalar(value):
    arr = np.asarray(value)
    while arr.dtype == object and arr.size == 1:
        arr = np.asarray(arr.reshape(-1)[0])
    if arr.size == 0:
        return None
    item = arr.reshape(-1)[0]
    return item.item() if hasattr(item, "item") else item


def read_matlab_record(
    path: str | os.PathLike,
    sampling_rate: float | None = None,
    lead_names: Sequence[str] | None = None,
    *,
    channel_names: Sequence[str] | None = None,
    validate_leads: bool = False,
    check_finite: bool = True,
) -> ECGRecord:
    """Read a MATLAB ``.mat`` ECG file that has no WFDB header.

    Known layouts:

    * CPSC 2018 original release: struct ``ECG`` with fields ``sex``, ``age``, ``data``
      (12 x samples, mV), 500 Hz, standard lead order I, II, III, aVR, aVL, aVF, V1-V6.
    * CPSC 2019: key ``ecg`` (samples x 1, mV), 500 Hz, single lead. The challenge does not name
      the lead; it is reported as ``"II"`` unless ``lead_names`` says otherwise, and
      ``metadata["assumed"]`` records that assumption.
    * anything else: one 2-D numeric array (``val``, ``data``, ``signal``...), leads along the
      shorter axis; ``sampling_rate`` and ``lead_names`` must then be given (units taken as mV).
    """
    import scipy.io

    p = Path(os.fspath(path))
    if p.suffix.lower() != ".mat":
        p = p.with_name(p.name + ".mat")
    rec = str(p)
    if not p.exists():
        raise MissingFileError(rec, "MATLAB file not found")
    if sampling_rate is not None:
        try:
            sampling_rate = float(sampling_rate)
        except (TypeError, ValueError):
            raise SamplingRateError(rec, f"sampling_rate must be a number (Hz), got {sampling_rate!r}") from None
        if not math.isfinite(sampling_rate) or sampling_rate <= 0:
            raise SamplingRateError(rec, f"sampling rate must be positive, got {sampling_rate:g}")
    if lead_names is not None:
        if isinstance(lead_names, str):
            lead_names = [x for x in lead_names.replace(" ", ",").split(",") if x]
        bad = [i for i, n in enumerate(lead_names) if not isinstance(n, str) or not n.strip()]
        if bad:
            raise LeadNameError(rec, f"lead_names[{bad[0]}] is {list(lead_names)[bad[0]]!r}: every lead needs a name "
                                "(a non-empty string)")
    try:
        mat = scipy.io.loadmat(str(p))
    except Exception as exc:
        raise HeaderError(rec, f"cannot read the MATLAB file: {exc}") from exc
    keys = [k for k in mat if not k.startswith("__")]
    meta: dict[str, Any] = {"source": "matlab", "units": "mV", "mat_keys": keys}
    assumed: list[str] = []
    if "ECG" in mat and getattr(mat["ECG"], "dtype", None) is not None and mat["ECG"].dtype.names:
        s = mat["ECG"].reshape(-1)[0]
        names = s.dtype.names
        data = np.asarray(s["data"], dtype=np.float64)
        meta["layout"] = "cpsc2018"
        if "age" in names:
            age = _mat_scalar(s["age"])
            meta["age"] = _parse_age(age) if age is not None else None
        if "sex" in names:
            sex = _mat_scalar(s["sex"])
            meta["sex"] = str(sex).strip() if sex is not None else None
        fs = sampling_rate or CPSC_SAMPLING_RATE
        names_out = list(lead_names) if lead_names is not None else list(CANONICAL_LEADS)
    elif "ecg" in mat:
        data = np.asarray(mat["ecg"], dtype=np.float64)
        data = data.T if data.ndim == 2 and data.shape[0] > data.shape[1] else data
        data = data.reshape(1, -1) if data.ndim == 1 else data
        meta["layout"] = "cpsc2019"
        fs = sampling_rate or CPSC_SAMPLING_RATE
        if lead_names is None:
            names_out = ["II"] * data.shape[0] if data.shape[0] == 1 else [f"ch{i}" for i in range(data.shape[0])]
            assumed.append("lead name: CPSC 2019 does not name its single lead; 'II' assumed")
        else:
            names_out = list(lead_names)
    else:
        arrays = [k for k in keys if isinstance(mat[k], np.ndarray) and mat[k].ndim == 2
                  and np.issubdtype(mat[k].dtype, np.number)]
        if not arrays:
            raise HeaderError(rec, f"no 2-D numeric array in the MATLAB file (keys: {', '.join(keys)})")
        key = "val" if "val" in arrays else arrays[0]
        data = np.asarray(mat[key], dtype=np.float64)
        if data.shape[0] > data.shape[1]:
            data = data.T
        meta["layout"] = f"array:{key}"
        if sampling_rate is None:
            raise MissingSamplingRateError(
                rec, "MATLAB file without a WFDB header (.hea) and of no known layout: give its sampling rate "
                "(ecgnat predict/plot --sampling_rate 500 --lead_names I,II,...; read_record(..., sampling_rate=500, "
                "lead_names=[...])) or put its .hea beside it"
            )
        fs = sampling_rate
        if lead_names is None:
            raise LeadNameError(rec, f"MATLAB file without a WFDB header (.hea) and of no known layout: its "
                                f"{data.shape[0]} leads are not named. Put its .hea beside it, or name them in order: "
                                "read_record(..., lead_names=[...]), ecgnat predict/plot --lead_names I,II,...")
        names_out = list(lead_names)
    if data.ndim != 2:
        raise InvalidSignalError(rec, f"expected a 2-D signal, got shape {data.shape}")
    if len(names_out) != data.shape[0]:
        raise LeadNameError(rec, f"{len(names_out)} lead names for {data.shape[0]} leads in the file")
    fs = float(fs)
    if not math.isfinite(fs) or fs <= 0:
        raise SamplingRateError(rec, f"sampling rate must be positive, got {fs:g}")
    if assumed:
        meta["assumed"] = assumed
    check_lead_names(names_out, rec, unknown="raise" if validate_leads else "allow")
    if channel_names is not None:
        data, names_out = _select_channels(data, names_out, channel_names, rec)
    if check_finite:
        _check_finite(data, names_out, rec)
    return ECGRecord(
        signal=np.ascontiguousarray(data, dtype=np.float32),
        sampling_rate=fs,
        lead_names=names_out,
        record_id=p.stem,
        path=rec,
        metadata=meta,
    )
