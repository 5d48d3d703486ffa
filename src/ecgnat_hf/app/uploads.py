"""Uploaded files -> one ECG record on disk that the package's readers take, or a message for the page.

The page accepts:

* a WFDB record: ``x.hea`` + ``x.dat`` (any format the reader decodes);
* a PhysioNet/CinC Challenge record: ``x.hea`` + ``x.mat``;
* a ``.zip`` holding one of those (folders inside are flattened; only ``.hea``/``.dat``/``.mat``/``.csv``
  members are taken, after checking their names and uncompressed sizes);
* a ``.csv`` with one column per lead (a header row names the leads; without one the channels are
  ``ch1``, ``ch2``...) and the sampling rate typed on the page. It is written as a WFDB format-16 record
  (gain chosen per lead so that no sample is clipped), so every record takes the same path through the
  readers, the streaming inference and the plots.

Nothing here reads a path typed by a user: only the files the web server stored for this upload, copied
(or extracted, or converted) into ``work_dir``. Every problem is an :class:`UploadError` whose text is
shown on the page as it is.
"""
from __future__ import annotations

import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["UploadError", "prepare_record", "RECORD_EXTENSIONS", "csv_to_wfdb"]

#: extensions the upload box accepts
RECORD_EXTENSIONS = (".hea", ".dat", ".mat", ".zip", ".csv")
_MEMBER_EXTENSIONS = (".hea", ".dat", ".mat", ".csv")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class UploadError(ValueError):
    """An upload that cannot be turned into a record; ``str()`` is the message for the page."""


def _safe_name(name: str) -> str:
    """The file's base name reduced to a safe set of characters (no folders, no leading dots)."""
    base = _SAFE_NAME.sub("_", Path(str(name).replace("\\", "/")).name).lstrip(".")
    return base or "upload"


def _extract_zip(path: Path, dest: Path, max_bytes: int) -> list[Path]:
    """Extract the record members of ``path`` into ``dest`` (flat), refusing bombs and odd names."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadError(f"{path.name}: not a readable zip file ({exc})") from None
    out = []
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        wanted = [m for m in members if Path(m.filename).suffix.lower() in _MEMBER_EXTENSIONS
                  and not Path(m.filename).name.startswith(".") and "__MACOSX" not in m.filename]
        if not wanted:
            shown = ", ".join(m.filename for m in members[:5]) or "nothing"
            raise UploadError(f"{path.name}: the zip holds no ECG record (.hea with .dat or .mat, or a .csv); "
                              f"it has {shown}")
        total = sum(m.file_size for m in wanted)
        if total > max_bytes:
            raise UploadError(f"{path.name}: its records unpack to {total / 2**20:.0f} MiB, more than the "
                              f"{max_bytes / 2**20:.0f} MiB this app accepts")
        for m in wanted:
            target = dest / _safe_name(m.filename)
            if target.exists():
                raise UploadError(f"{path.name}: two files named {target.name} (one record per upload)")
            written = 0
            try:
                with zf.open(m) as src, open(target, "wb") as dst:
                    while True:
                        block = src.read(1 << 20)
                        if not block:
                            break
                        written += len(block)
                        if written > m.file_size or written > max_bytes:  # a lying size field
                            raise UploadError(f"{path.name}: {m.filename} unpacks to more than its stated size")
                        dst.write(block)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as exc:
                raise UploadError(f"{path.name}: cannot unpack {m.filename} ({exc})") from None
            out.append(target)
    return out


def _check_rate(rate) -> float:
    from ..models.ecgnat.feature_extraction_ecgnat import QualityThresholds

    th = QualityThresholds()
    try:
        fs = float(rate)
    except (TypeError, ValueError):
        fs = float("nan")
    if not np.isfinite(fs) or not th.min_sampling_rate <= fs <= th.max_sampling_rate:
        raise UploadError(f"sampling rate {rate!r} Hz is not plausible for an ECG: type the rate of the CSV "
                          f"in Hz, between {th.min_sampling_rate:g} and {th.max_sampling_rate:g}")
    return fs


def csv_to_wfdb(csv_path: Path, dest: Path, sampling_rate, units: str = "mV") -> Path:
    """Write a CSV (one numeric column per lead) as a WFDB format-16 record in ``dest``; return its path
    without extension. ``units``: ``"mV"`` or ``"uV"`` (values are converted to mV)."""
    import pandas as pd

    fs = _check_rate(sampling_rate)
    name = csv_path.stem
    sep = _delimiter(csv_path)
    try:
        df = pd.read_csv(csv_path, sep=sep)
        header = [str(c).strip() for c in df.columns]
        if all(_is_number(c) for c in header):  # no header row: the first row is data
            df = pd.read_csv(csv_path, sep=sep, header=None)
            header = [f"ch{i + 1}" for i in range(df.shape[1])]
    except pd.errors.EmptyDataError:
        raise UploadError(f"{csv_path.name}: the CSV is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise UploadError(f"{csv_path.name}: not a readable CSV ({str(exc).splitlines()[0][:200]})") from None
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise UploadError(f"{csv_path.name}: the CSV has no samples (a header row alone)")
    # a leading time / sample-number column is not a lead
    first = header[0].lower()
    if df.shape[1] > 1 and first in ("time", "t", "time_s", "seconds", "sample", "samples", "index", "#"):
        df, header = df.iloc[:, 1:], header[1:]
    values = df.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad_cols = [h for h, col in zip(header, values.T) if np.isnan(col).all()]
    if bad_cols:
        raise UploadError(f"{csv_path.name}: column(s) {', '.join(bad_cols[:5])} hold no numbers; the CSV must have "
                          "one numeric column per lead")
    if np.isnan(values).any():
        row = int(np.argwhere(np.isnan(values))[0][0]) + 2
        raise UploadError(f"{csv_path.name}: a value near line {row} is missing or not a number")
    if values.shape[0] < 2:
        raise UploadError(f"{csv_path.name}: only {values.shape[0]} sample(s); an ECG needs seconds of signal")
    if units.lower() in ("uv", "µv", "microvolt"):
        values = values / 1000.0
    elif units.lower() != "mv":
        raise UploadError(f"units {units!r}: choose mV or uV")
    if len(set(h.lower() for h in header)) != len(header):
        raise UploadError(f"{csv_path.name}: two columns have the same name ({', '.join(header)})")
    return _write_wfdb(values.T, fs, header, dest / _safe_name(name), csv_path.name)


def _write_wfdb(signal_mv: np.ndarray, fs: float, names: Sequence[str], base: Path, source: str) -> Path:
    """``signal_mv`` (leads, samples) -> ``base.hea`` + ``base.dat`` (format 16, per-lead gain)."""
    import wfdb

    peak = np.max(np.abs(signal_mv), axis=1)
    # 16-bit samples: the largest gain (resolution) that keeps every sample inside +-32000
    gain = np.where(peak > 0, np.minimum(1000.0, 32000.0 / np.maximum(peak, 1e-12)), 1000.0)
    gain = np.floor(gain * 1000.0) / 1000.0
    digital = np.round(signal_mv * gain[:, None]).astype(np.int64)
    names = [_SAFE_NAME.sub("_", n) or f"ch{i + 1}" for i, n in enumerate(names)]
    try:
        wfdb.wrsamp(base.name, fs=fs, units=["mV"] * len(names), sig_name=list(names),
                    d_signal=digital.T.astype(np.int16), fmt=["16"] * len(names), adc_gain=list(map(float, gain)),
                    baseline=[0] * len(names), write_dir=str(base.parent), comments=[f"converted from {source}"])
    except Exception as exc:  # noqa: BLE001 - wfdb validates names/values with assorted exception types
        raise UploadError(f"{source}: cannot be written as a record ({exc})") from None
    return base


def _delimiter(path: Path) -> str:
    """``,`` unless the first non-empty line is split by ``;`` or tabs instead (one column: ``,``)."""
    try:
        with open(path, "rb") as f:
            for raw in f:
                line = raw.decode("utf-8", errors="replace").strip()
                if line:
                    break
            else:
                raise UploadError(f"{path.name}: the CSV is empty")
    except OSError as exc:
        raise UploadError(f"{path.name}: cannot be read ({exc.strerror})") from None
    if b"\x00" in raw:
        raise UploadError(f"{path.name}: not a CSV (it is a binary file)")
    for sep in (",", ";", "\t"):
        if sep in line:
            return sep
    return ","


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def prepare_record(files: Sequence[str | os.PathLike], work_dir: Path, *, upload_root: Path | None = None,
                   csv_sampling_rate=None, csv_units: str = "mV", max_bytes: int = 1 << 30) -> Path:
    """Copy / unpack / convert the uploaded ``files`` into ``work_dir``; return the record's path (no extension).

    ``upload_root``: the only folder uploads may come from (the web server's upload folder); a path
    elsewhere is refused, so no user-chosen server file is ever read.
    """
    paths = [Path(os.fspath(f)) for f in files or [] if f]
    if not paths:
        raise UploadError("no file given: drop a record (.hea + .dat, .hea + .mat, a .zip of those, or a .csv) "
                          "or pick an example")
    root = Path(os.path.realpath(upload_root)) if upload_root is not None else None
    for p in paths:
        real = Path(os.path.realpath(p))
        if root is not None and root not in real.parents:
            raise UploadError(f"{p.name}: not an uploaded file")
        if not real.is_file():
            raise UploadError(f"{p.name}: the upload is no longer on the server (uploads are kept for an hour); "
                              "drop the file again")
    work_dir.mkdir(parents=True, exist_ok=True)
    staged: list[Path] = []
    for p in paths:
        ext = p.suffix.lower()
        if ext == ".zip":
            staged.extend(_extract_zip(p, work_dir, max_bytes))
        elif ext in _MEMBER_EXTENSIONS:
            target = work_dir / _safe_name(p.name)
            if target.exists():
                raise UploadError(f"two files named {target.name}: upload one record at a time")
            shutil.copyfile(p, target)
            staged.append(target)
        else:
            raise UploadError(f"{p.name}: not an ECG record file; drop a WFDB record (.hea + .dat), a Challenge "
                              "record (.hea + .mat), a .zip of either, or a .csv with one column per lead")
    csvs = [s for s in staged if s.suffix.lower() == ".csv"]
    heads = [s for s in staged if s.suffix.lower() == ".hea"]
    if csvs:
        if len(staged) != 1:
            raise UploadError("a CSV is a record on its own: upload it alone")
        if csv_sampling_rate in (None, "", 0):
            raise UploadError(f"{csvs[0].name}: a CSV does not say its sampling rate: type it (Hz) in the "
                              "'CSV sampling rate' box")
        return csv_to_wfdb(csvs[0], work_dir, csv_sampling_rate, csv_units)
    if len(heads) > 1:
        raise UploadError(f"{len(heads)} headers ({', '.join(h.name for h in heads[:4])}): upload one record at a time")
    if not heads:
        mats = [s for s in staged if s.suffix.lower() == ".mat"]
        if len(mats) == 1 and len(staged) == 1:
            return mats[0]  # a MATLAB file without a header (CPSC 2018 layout): the reader knows it
        names = ", ".join(s.name for s in staged[:4])
        raise UploadError(f"no header file (.hea) among {names}: a WFDB record is the .hea file together with "
                          "its signal file (.dat or .mat); drop both")
    head = heads[0]
    _check_header_is_text(head)
    return head.with_suffix("")


def _check_header_is_text(head: Path) -> None:
    """A binary file renamed ``.hea`` gets a plain message before the WFDB parser sees it."""
    try:
        with open(head, "rb") as f:
            start = f.read(4096)
    except OSError as exc:
        raise UploadError(f"{head.name}: cannot be read ({exc.strerror})") from None
    if not start.strip():
        raise UploadError(f"{head.name}: the header is empty")
    if b"\x00" in start:
        raise UploadError(f"{head.name}: not a WFDB header (it is a binary file, not text)")
