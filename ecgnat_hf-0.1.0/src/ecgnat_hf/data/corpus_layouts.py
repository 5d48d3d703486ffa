"""Write small corpora in the real MIMIC-IV-ECG and CODE-15 % layouts, from real records.

No real corpus of that size can ship with the package, so the tests (and ``benchmarks/``) build them: the
bundled PTB-XL records (:func:`bundled_signals`), resampled to the corpus's rate, optionally varied
(:func:`vary`: shifted, scaled, with noise), written exactly as the releases lay them out:

* :func:`write_mimic_iv_ecg`: ``files/pNNNN/pSUBJECT/sSTUDY/STUDY.hea`` + ``.dat`` (WFDB format 16, leads on
  disk in MIMIC's order I, II, III, aVR, aVF, aVL, V1-V6), ``record_list.csv`` and optionally
  ``machine_measurements.csv``. NaN samples in a signal are written as the format's invalid value -32768.
  ``writer="wfdb"`` writes through ``wfdb.wrsamp``; ``writer="numpy"`` writes the same bytes and header fields
  directly (the same .dat bytes and header fields, more than 10x faster: for benchmark corpora of 10^5 records).
* :func:`write_code15`: ``exams_partK.hdf5`` (``tracings`` (n, 4096, 12) float32 zero-padded and centred,
  ``exam_id``, a last all-zero row with exam_id 0) and ``exams.csv``.

Signals are given as (12, samples) arrays in mV in the canonical lead order I, II, III, aVR, aVL, aVF, V1-V6.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .leads import CANONICAL_LEADS

__all__ = ["bundled_signals", "vary", "write_mimic_iv_ecg", "write_code15", "MIMIC_DISK_ORDER",
           "MIMIC_MEASUREMENT_HEADER"]

#: MIMIC-IV-ECG's lead order on disk
MIMIC_DISK_ORDER = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")
MIMIC_MEASUREMENT_HEADER = (["subject_id", "study_id", "cart_id", "ecg_time"] + [f"report_{i}" for i in range(18)]
                            + ["bandwidth", "filtering", "rr_interval", "p_onset", "p_end", "qrs_onset", "qrs_end",
                               "t_end", "p_axis", "qrs_axis", "t_axis"])
_CODE15_CSV_HEADER = ["exam_id", "age", "is_male", "nn_predicted_age", "1dAVb", "RBBB", "LBBB", "SB", "ST", "AF",
                      "patient_id", "death", "timey", "normal_ecg", "trace_file"]


def bundled_signals(sampling_rate: float, n: int | None = None) -> list[tuple[str, np.ndarray]]:
    """``[(record_id, signal (12, samples) float32 mV)]`` of the bundled PTB-XL sample (100 Hz, 10 s),
    resampled to ``sampling_rate`` with an anti-aliased polyphase filter; the first ``n`` records."""
    from .builders.mixture import resample_signal
    from .records import read_record
    from ..sample_data import sample_dir

    root = sample_dir()
    out = []
    for hea in sorted(root.glob("records100/*/*.hea"))[: n if n is not None else None]:
        rec = read_record(hea.with_suffix(""))
        out.append((rec.record_id, resample_signal(rec.signal, rec.sampling_rate, sampling_rate)))
    return out


def vary(signal: np.ndarray, rng: np.random.Generator, shift: bool = True, scale: float = 0.2,
         noise_mv: float = 0.02) -> np.ndarray:
    """A copy of ``signal`` rolled by a random number of samples, scaled by a random factor within ``1 +- scale``
    and with Gaussian noise of ``noise_mv`` mV added: distinct records from one real one."""
    x = np.asarray(signal, dtype=np.float32)
    if shift and x.shape[1] > 1:
        x = np.roll(x, int(rng.integers(x.shape[1])), axis=1)
    x = x * np.float32(1.0 + rng.uniform(-scale, scale))
    if noise_mv:
        x = x + rng.normal(0.0, noise_mv, size=x.shape).astype(np.float32)
    return x.astype(np.float32)


# ------------------------------------------------------------------------------------------ MIMIC-IV-ECG
def _digital(signal_disk: np.ndarray, gain: float) -> np.ndarray:
    """(samples, leads) int16 digital values, NaN -> -32768 (format 16's invalid value), clipped otherwise."""
    x = np.asarray(signal_disk, dtype=np.float64) * gain
    bad = ~np.isfinite(x)
    d = np.clip(np.round(np.where(bad, 0.0, x)), -32767, 32767).astype(np.int16)
    d[bad] = -32768
    return d


def _write_wfdb_numpy(folder: Path, name: str, d: np.ndarray, fs: float, gain: float, leads: Sequence[str],
                      base: str | None) -> None:
    n, k = d.shape
    sums = d.astype(np.int64).sum(axis=0) % 65536
    lines = [f"{name} {k} {fs:g} {n}" + (f" {base}" if base else "")]
    for j, lead in enumerate(leads):
        lines.append(f"{name}.dat 16 {gain:g}(0)/mV 16 0 {int(d[0, j]) if n else 0} {int(sums[j])} 0 {lead}")
    d.astype("<i2").tofile(folder / f"{name}.dat")
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")


def write_mimic_iv_ecg(out_dir: str | os.PathLike, signals: Sequence[np.ndarray], subject_ids: Sequence[int],
                       study_ids: Sequence[int] | None = None, *, sampling_rate: float = 500.0, gain: float = 200.0,
                       ecg_times: Sequence[str] | None = None, measurements: Sequence[dict] | None = None,
                       writer: str = "wfdb") -> list[str]:
    """Write ``signals`` ((12, samples) mV, canonical order) as MIMIC-IV-ECG records; returns the ``path`` of
    each in ``record_list.csv``. ``measurements``: one dict per record with any ``machine_measurements.csv``
    column (``report_0``, ``rr_interval`` ...; missing numbers written as 29999 when given as None)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(signals)
    study_ids = list(study_ids) if study_ids is not None else [40000000 + i for i in range(n)]
    if len(subject_ids) != n or len(study_ids) != n:
        raise ValueError("one subject_id and one study_id per signal")
    order = [CANONICAL_LEADS.index(lead) for lead in MIMIC_DISK_ORDER]
    paths = []
    rows = []
    for i, (sig, subj, study) in enumerate(zip(signals, subject_ids, study_ids)):
        subj, study = int(subj), int(study)
        rel = f"files/p{str(subj)[:4]}/p{subj}/s{study}/{study}"
        folder = out / Path(rel).parent
        folder.mkdir(parents=True, exist_ok=True)
        d = _digital(np.asarray(sig)[order].T, gain)
        t = ecg_times[i] if ecg_times is not None else f"2180-07-{1 + i % 28:02d} 12:{i % 60:02d}:00"
        if writer == "wfdb":
            import wfdb

            wfdb.wrsamp(str(study), fs=sampling_rate, units=["mV"] * 12, sig_name=list(MIMIC_DISK_ORDER),
                        d_signal=d.astype(np.int32), fmt=["16"] * 12, adc_gain=[gain] * 12, baseline=[0] * 12,
                        write_dir=str(folder))
            _fix_checksums(folder / f"{study}.hea", d)
        elif writer == "numpy":
            _write_wfdb_numpy(folder, str(study), d, sampling_rate, gain, MIMIC_DISK_ORDER, None)
        else:
            raise ValueError(f"writer must be 'wfdb' or 'numpy', got {writer!r}")
        paths.append(rel)
        rows.append([subj, study, str(study), t, rel])
    with open(out / "record_list.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject_id", "study_id", "file_name", "ecg_time", "path"])
        w.writerows(rows)
    if measurements is not None:
        if len(measurements) != n:
            raise ValueError("one measurements dict per signal")
        with open(out / "machine_measurements.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(MIMIC_MEASUREMENT_HEADER)
            for (subj, study, _, t, _), m in zip(rows, measurements):
                vals = {"subject_id": subj, "study_id": study, "ecg_time": t, **(m or {})}
                row = []
                for c in MIMIC_MEASUREMENT_HEADER:
                    v = vals.get(c)
                    if v is None and c in MIMIC_MEASUREMENT_HEADER[-9:]:
                        v = 29999
                    row.append("" if v is None else v)
                w.writerow(row)
    return paths


def _fix_checksums(hea: Path, d: np.ndarray) -> None:
    """wfdb.wrsamp computes checksums on int16 and can overflow: write the WFDB ones (sum mod 65536)."""
    sums = d.astype(np.int64).sum(axis=0) % 65536
    lines = hea.read_text().splitlines()
    for j in range(d.shape[1]):
        parts = lines[1 + j].split(" ")
        parts[6] = str(int(sums[j]))
        lines[1 + j] = " ".join(parts)
    hea.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------ CODE-15 %
def write_code15(out_dir: str | os.PathLike, signals: Sequence[np.ndarray], exam_ids: Sequence[int],
                 patient_ids: Sequence[int], labels: np.ndarray, *, part_size: int = 1000, length: int = 4096,
                 ages: Sequence[float] | None = None, is_male: Sequence[bool] | None = None,
                 first_part: int = 0) -> list[str]:
    """Write ``signals`` ((12, samples) mV at 400 Hz, canonical order = CODE-15's order) as CODE-15 % parts of
    ``part_size`` exams, each centred in ``length`` samples with zeros and followed by the placeholder row
    (exam_id 0, all zeros); and ``exams.csv`` with ``labels`` (n, 6) for 1dAVb, RBBB, LBBB, SB, ST, AF.
    Returns the part file names. Longer signals are cut to ``length``."""
    import h5py

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(signals)
    labels = np.asarray(labels)
    if len(exam_ids) != n or len(patient_ids) != n or labels.shape != (n, 6):
        raise ValueError("one exam_id, one patient_id and one row of 6 labels per signal")
    names, rows = [], []
    for k, start in enumerate(range(0, n, part_size)):
        idx = list(range(start, min(n, start + part_size)))
        name = f"exams_part{first_part + k}.hdf5"
        names.append(name)
        with h5py.File(out / name, "w") as h5:
            tr = h5.create_dataset("tracings", shape=(len(idx) + 1, length, 12), dtype="float32")
            h5.create_dataset("exam_id", data=np.asarray([int(exam_ids[i]) for i in idx] + [0], dtype=np.int64))
            for r, i in enumerate(idx):
                x = np.asarray(signals[i], dtype=np.float32)[:, :length].T
                pad = (length - x.shape[0]) // 2
                block = np.zeros((length, 12), dtype=np.float32)
                block[pad: pad + x.shape[0]] = x
                tr[r] = block
            tr[len(idx)] = np.zeros((length, 12), dtype=np.float32)
        for i in idx:
            age = ages[i] if ages is not None else 30 + i % 60
            male = is_male[i] if is_male is not None else bool(i % 2)
            rows.append([int(exam_ids[i]), age, male, float(age) + 1.5, *[bool(v) for v in labels[i]],
                         int(patient_ids[i]), False, 2.5, not labels[i].any(), name])
    with open(out / "exams.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(_CODE15_CSV_HEADER)
        w.writerows(rows)
    return names
