"""QRS detection quality: the package's detector side by side with wfdb's xqrs and gqrs (and neurokit2's
detectors when neurokit2 is importable), on every annotated record in ../shared/data.

* CPSC 2019 sample: 50 single-lead 10 s records at 500 Hz, reference R peaks in ``ref/R_*.mat``. Scored as in
  the challenge: 75 ms tolerance, detections and references in the first and last 0.5 s ignored.
* MIT-BIH record 100: the whole 30 minutes (MLII + V5, 360 Hz), reference beats from ``100.atr``. Scored as in
  ANSI/AAMI EC57: 150 ms tolerance. The package's detector uses both leads; xqrs/gqrs and neurokit2 are
  single-channel detectors and get MLII.

Every record is reported (nothing is tuned on, or reported for, a single record); the per-record table goes
to ``--per_record_csv`` when given. Run::

    python benchmarks/qrs.py [--data-dir ../shared/data] [--per_record_csv qrs_records.csv]

The package's detector is loaded straight from ``src/ecgnat_hf/models/beatnet/qrs.py`` (numpy + scipy only), so this
script also runs in an environment where only wfdb/neurokit2 are installed.
"""

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BEAT_SYMBOLS = set("NLRBAaJSVrFejnE/fQ?")


def _load_qrs():
    path = REPO / "src" / "ecgnat_hf" / "models" / "beatnet" / "qrs.py"
    spec = importlib.util.spec_from_file_location("ecgnat_qrs", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


QRS = _load_qrs()


# ------------------------------------------------------------------------------------------------ detectors
def det_package(signal, fs):
    return QRS.detect_qrs(signal, fs)


def det_xqrs(signal, fs):
    from wfdb import processing

    return processing.xqrs_detect(sig=signal[0], fs=fs, verbose=False)


def det_gqrs(signal, fs):
    from wfdb import processing

    # gqrs expects mV-scaled physical units (adc gain 200 by default)
    return processing.gqrs_detect(sig=signal[0], fs=fs)


def _neurokit(method):
    def det(signal, fs):
        import neurokit2 as nk

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clean = nk.ecg_clean(signal[0], sampling_rate=int(fs), method="neurokit")
            _, info = nk.ecg_peaks(clean, sampling_rate=int(fs), method=method)
        return np.asarray(info["ECG_R_Peaks"], dtype=np.int64)

    return det


def detectors():
    out = {"package": det_package, "wfdb xqrs": det_xqrs, "wfdb gqrs": det_gqrs}
    try:
        import neurokit2  # noqa: F401

        for m in ("neurokit", "pantompkins1985", "hamilton2002", "elgendi2010"):
            out[f"nk2 {m}"] = _neurokit(m)
    except ImportError as exc:
        print(f"neurokit2 not importable here ({exc}); its detectors are left out. neurokit2 0.2.13 pins "
              "pandas<3 and setuptools<82, which conflicts with this project's pandas 3: run this script with a "
              "separate environment's python (pip install neurokit2 wfdb) to include them.")
    return out


# ------------------------------------------------------------------------------------------------ records
def cpsc2019_records(root: Path):
    import scipy.io as sio

    files = sorted((root / "cpsc2019-sample" / "data").glob("data_*.mat"))
    for f in files:
        x = sio.loadmat(f)["ecg"].astype(np.float64).ravel()
        ref = sio.loadmat(root / "cpsc2019-sample" / "ref" / f.name.replace("data_", "R_"))["R_peak"].ravel()
        yield f"cpsc2019/{f.stem}", x[None, :], 500.0, ref.astype(np.int64)


def mitdb_records(root: Path):
    import wfdb

    for path in sorted((root / "mitdb").glob("*.hea")):
        rec = wfdb.rdrecord(str(path.with_suffix("")))
        ann = wfdb.rdann(str(path.with_suffix("")), "atr")
        ref = np.array([s for s, sym in zip(ann.sample, ann.symbol) if sym in BEAT_SYMBOLS], dtype=np.int64)
        names = list(rec.sig_name)
        order = sorted(range(len(names)), key=lambda i: names[i] != "MLII")  # MLII first (single-lead detectors)
        yield f"mitdb/{path.stem}", rec.p_signal.T[order], float(rec.fs), ref


def score(detected, reference, fs, tolerance_s, ignore_edges_s=0.0, n_samples=None):
    detected = np.asarray(detected, dtype=np.int64)
    reference = np.asarray(reference, dtype=np.int64)
    if ignore_edges_s:
        lo, hi = int(ignore_edges_s * fs), n_samples - int(ignore_edges_s * fs)
        detected = detected[(detected >= lo) & (detected < hi)]
        reference = reference[(reference >= lo) & (reference < hi)]
    return QRS.match_peaks(detected, reference, int(round(tolerance_s * fs)))


def _fmt(tp, fn, fp):
    se = tp / (tp + fn) if tp + fn else float("nan")
    ppv = tp / (tp + fp) if tp + fp else float("nan")
    f1 = 2 * tp / (2 * tp + fn + fp) if tp else 0.0
    return se, ppv, f1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--per_record_csv", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    root = Path(args.data_dir)
    dets = detectors()
    sets = [
        ("CPSC 2019 sample (50 x 10 s, 1 lead, 500 Hz; 75 ms, edges 0.5 s ignored)", cpsc2019_records(root), 0.075, 0.5),
        ("MIT-BIH 100, whole 30 min (360 Hz; 150 ms)", mitdb_records(root), 0.150, 0.0),
    ]
    rows = []
    for title, records, tol, edge in sets:
        totals = {d: np.zeros(3, dtype=np.int64) for d in dets}
        seconds = {d: 0.0 for d in dets}
        n_rec = 0
        first_row = len(rows)
        for rid, x, fs, ref in records:
            n_rec += 1
            for name, fn in dets.items():
                t = time.perf_counter()
                try:
                    found = fn(x, fs)
                except Exception as exc:  # a detector that crashes on a record scores nothing there
                    print(f"  {name} failed on {rid}: {type(exc).__name__}: {exc}")
                    found = np.zeros(0, dtype=np.int64)
                seconds[name] += time.perf_counter() - t
                tp, fn_, fp = score(found, ref, fs, tol, edge, x.shape[-1])
                totals[name] += (tp, fn_, fp)
                rows.append((rid, name, tp, fn_, fp))
        print(f"\n{title}: {n_rec} record(s), {int(totals['package'][0] + totals['package'][1])} reference beats")
        print("| detector | Se | PPV | F1 | TP | FN | FP | seconds |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name in dets:
            tp, fn_, fp = (int(v) for v in totals[name])
            se, ppv, f1 = _fmt(tp, fn_, fp)
            print(f"| {name} | {se:.4f} | {ppv:.4f} | {f1:.4f} | {tp} | {fn_} | {fp} | {seconds[name]:.1f} |")
        # per-record F1 of the package detector, worst first: where the remaining errors are
        pk = [(r, _fmt(tp, fn_, fp)[2], fn_, fp) for r, n, tp, fn_, fp in rows[first_row:] if n == "package"]
        worst = sorted(pk, key=lambda p: p[1])[:5]
        print("package detector, lowest per-record F1: " + ", ".join(f"{r} {f1:.3f} (FN {fn_}, FP {fp})" for r, f1, fn_, fp in worst))
    if args.per_record_csv:
        with open(args.per_record_csv, "w") as f:
            f.write("record,detector,tp,fn,fp,se,ppv,f1\n")
            for rid, name, tp, fn_, fp in rows:
                se, ppv, f1 = _fmt(tp, fn_, fp)
                f.write(f"{rid},{name},{tp},{fn_},{fp},{se:.4f},{ppv:.4f},{f1:.4f}\n")
        print(f"\nper-record table: {args.per_record_csv}")


if __name__ == "__main__":
    main()
