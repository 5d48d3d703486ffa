"""QRS detection quality of BEAT-Net's tokenizer backends, scored the way the field reports it.

Detectors, side by side on the same records: the package's detector (all leads, and the first lead alone),
wfdb's xqrs and gqrs, and neurokit2's R-peak methods (``qrs_settings={"detector": ...}`` of the tokenizer;
every row runs through ``detect_qrs``, so the figures are those of the backends BEAT-Net uses).

* MIT-BIH Arrhythmia Database, the 100 series in ../shared/data/mitdb (23 records x 30 min, 2 leads, 360 Hz),
  scored per ANSI/AAMI EC57 (``ecgnat_hf.metrics.qrs_scoring.ec57_counts``): beat annotations only, 150 ms
  window, one-to-one matching, comparison from 5:00 to the end (the standard's learning period; the whole-record
  figures are printed too). Gross statistics sum the counts of all records; per-record counts follow. The
  single-lead detectors get the first lead, MLII (records 102 and 104 have no MLII: V5). The package's
  ``lead_weighting``, ``twave_slope``, ``extra_height`` and ``extra_span`` were chosen on half A of the records
  (100, 102, 104, ...: every other record in order; twave_slope also on half A of the CPSC sample) and half B
  is reported apart as held out.
* CPSC 2019 sample in ../shared/data/cpsc2019-sample (50 x 10 s, 1 lead, 500 Hz), scored with the challenge's
  rules as its official scoring script applies them (``cpsc2019_counts``): 75 ms, reference beats in the
  first/last 0.5 s ignored, record score 1 / 0.7 (one FP) / 0.3 (one FN) / 0, challenge score = mean over
  records; the script skips the gap between the first two reference beats, "strict" counts it too.

Time is the detector's wall time per hour of ECG on this machine (one thread). Run::

    python benchmarks/qrs.py [--data-dir ../shared/data] [--per_record_csv qrs_records.csv] [--only package,gqrs]
        [--cache qrs_cache]

The package modules are loaded by path (numpy + scipy only; wfdb and neurokit2 for their rows).
"""

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _load(name, rel):
    spec = importlib.util.spec_from_file_location(name, REPO / "src" / "ecgnat_hf" / rel)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


QRS = _load("ecgnat_qrs", "models/beatnet/qrs.py")
QRS_SOURCE = (REPO / "src" / "ecgnat_hf" / "models" / "beatnet" / "qrs.py").read_text()
SCORING = _load("ecgnat_qrs_scoring", "metrics/qrs_scoring.py")

# label -> (qrs settings, leads used: "all" or "first")
DETECTORS = {
    "package": ({}, "all"),
    "package, first lead only": ({}, "first"),
    "package, without the extra-beat rule": ({"extra_height": 0.0}, "all"),
    "package, first-release settings": ({"lead_weighting": "equal", "twave_slope": 0.5, "extra_height": 0.0}, "all"),
    "wfdb xqrs": ({"detector": "xqrs"}, "first"),
    "wfdb gqrs": ({"detector": "gqrs"}, "first"),
    **{f"neurokit2 {m}": ({"detector": f"neurokit2:{m}"}, "first") for m in QRS.NEUROKIT2_METHODS},
}


def require_data(root: Path) -> None:
    """Stop with the missing folder named, rather than scoring zero records."""
    for sub in ("mitdb", "cpsc2019-sample"):
        if not (root / sub).is_dir():
            raise SystemExit(f"{root / sub} not found: pass --data-dir (or set ECGNAT_SHARED_DATA) to ../shared/data")


def mitdb_records(root: Path):
    import wfdb

    for path in sorted((root / "mitdb").glob("*.hea")):
        rec = wfdb.rdrecord(str(path.with_suffix("")))
        ann = wfdb.rdann(str(path.with_suffix("")), "atr")
        ref = SCORING.reference_beats(ann.sample, ann.symbol)
        names = list(rec.sig_name)
        order = sorted(range(len(names)), key=lambda i: names[i] != "MLII")  # MLII first where present
        rhythms = sorted({a.strip("\x00(") for a in ann.aux_note if a.startswith("(")})
        info = {"leads": "+".join(names[i] for i in order), "rhythm": " ".join(rhythms),
                "paced": int(sum(s in "/f" for s in ann.symbol)), "ventricular": int(sum(s == "V" for s in ann.symbol))}
        yield path.stem, rec.p_signal.T[order], float(rec.fs), ref, info


def cpsc2019_records(root: Path):
    import scipy.io as sio

    for f in sorted((root / "cpsc2019-sample" / "data").glob("data_*.mat")):
        x = sio.loadmat(f)["ecg"].astype(np.float64).ravel()
        ref = sio.loadmat(root / "cpsc2019-sample" / "ref" / f.name.replace("data_", "R_"))["R_peak"].ravel()
        yield f.stem, x[None, :], 500.0, ref.astype(np.int64), {}


SLOW = ("christov2004", "zong2003")
CACHE = None  # --cache folder: detections per (detector, record), keyed by the detector code's hash


def run(label, x, fs, rid=""):
    settings, leads = DETECTORS[label]
    sig = x if leads == "all" else x[:1]
    if CACHE is not None:
        import hashlib

        key = hashlib.sha1((QRS_SOURCE + label + rid + str(x.shape)).encode()).hexdigest()[:16]
        f = CACHE / f"{key}.npz"
        if f.is_file():
            z = np.load(f)
            return z["peaks"], float(z["seconds"])
        peaks, dt = _run(label, settings, sig, fs)
        np.savez(f, peaks=peaks, seconds=dt)
        return peaks, dt
    return _run(label, settings, sig, fs)


def _run(label, settings, sig, fs):
    t = time.perf_counter()
    try:
        peaks = QRS.detect_qrs(sig, fs, **settings)
    except RuntimeError as exc:  # a backend that fails on a record scores nothing there, and says so
        print(f"  {label}: {exc}")
        peaks = np.zeros(0, dtype=np.int64)
    return peaks, time.perf_counter() - t


def _row(label, c, extra=""):
    return (f"| {label} | {100 * c.se:.2f} | {100 * c.ppv:.2f} | {100 * c.f1:.2f} | {c.tp} | {c.fn} | {c.fp} |{extra}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("ECGNAT_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--per_record_csv", default=None)
    ap.add_argument("--cache", default=None, help="folder that keeps each detector's beats per record between runs "
                    "(invalidated when qrs.py changes)")
    ap.add_argument("--only", default=None, help="comma-separated substrings of detector labels to run")
    args = ap.parse_args(argv)
    root = Path(args.data_dir)
    global CACHE
    if args.cache:
        CACHE = Path(args.cache)
        CACHE.mkdir(parents=True, exist_ok=True)
    require_data(root)
    if args.only:
        labels = [k for k in DETECTORS if any(s in k for s in args.only.split(","))]
    else:  # christov2004 and zong2003 take ~30-60 s per 30-minute record (20x the others): only with --only
        labels = [k for k in DETECTORS if not k.endswith(SLOW)]
    csv_rows = []

    # ------------------------------------------------------------------------------------------ MIT-BIH
    ec57 = {k: {} for k in labels}
    whole = {k: SCORING.BeatCounts() for k in labels}
    seconds = {k: 0.0 for k in labels}
    hours = 0.0
    infos = {}
    for rid, x, fs, ref, info in mitdb_records(root):
        infos[rid] = info
        hours += x.shape[-1] / fs / 3600
        seconds_rec = {}
        for k in labels:
            peaks, dt = run(k, x, fs, "mitdb" + rid)
            seconds_rec[k] = dt
            seconds[k] += dt
            c = SCORING.ec57_counts(peaks, ref, fs, x.shape[-1])
            ec57[k][rid] = c
            whole[k] += SCORING.ec57_counts(peaks, ref, fs, x.shape[-1], start_s=0.0)
            csv_rows.append(("mitdb", rid, k, c.tp, c.fn, c.fp, f"{dt:.3f}"))
        slow = sorted(((seconds_rec[k], k) for k in labels), reverse=True)[:3]
        print(f"  mitdb {rid} done; slowest: " + ", ".join(f"{k} {t:.1f} s" for t, k in slow), flush=True)
    rids = sorted(ec57[labels[0]])
    half_a, half_b = rids[0::2], rids[1::2]
    total = {k: sum(ec57[k].values(), SCORING.BeatCounts()) for k in labels}
    print(f"\nMIT-BIH 100 series, {len(rids)} records, {hours:.2f} h, EC57 (150 ms, beats only, from 5:00): "
          f"{total[labels[0]].tp + total[labels[0]].fn} reference beats")
    print("| detector | Se % | +P % | F1 % | TP | FN | FP | whole record Se / +P % | s per hour |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k in labels:
        w = whole[k]
        print(_row(k, total[k], f" {100 * w.se:.2f} / {100 * w.ppv:.2f} | {3600 * seconds[k] / (hours * 3600):.1f} |"))
    print(f"\nTuning split: half A ({', '.join(half_a)}) chose lead_weighting, twave_slope, extra_height, "
          f"extra_span; half B ({', '.join(half_b)}) held out.")
    print("| detector | half A Se / +P % | half B (held out) Se / +P % |")
    print("|---|---:|---:|")
    for k in labels:
        a = sum((ec57[k][r] for r in half_a), SCORING.BeatCounts())
        b = sum((ec57[k][r] for r in half_b), SCORING.BeatCounts())
        print(f"| {k} | {100 * a.se:.2f} / {100 * a.ppv:.2f} | {100 * b.se:.2f} / {100 * b.ppv:.2f} |")
    shown = [k for k in labels if k.startswith("package")][:2]
    best_lib = max((k for k in labels if not k.startswith("package")), key=lambda k: total[k].f1, default=None)
    shown += [best_lib] if best_lib else []
    print("\nPer record (FN / FP; EC57 from 5:00): " + " | ".join(shown))
    print("| record | leads | rhythm | paced / V beats | beats | " + " | ".join(shown) + " |")
    print("|---|---|---|---:|---:|" + "---:|" * len(shown))
    for r in rids:
        i = infos[r]
        cells = " | ".join(f"{ec57[k][r].fn} / {ec57[k][r].fp}" for k in shown)
        print(f"| {r} | {i['leads']} | {i['rhythm']} | {i['paced']} / {i['ventricular']} | "
              f"{ec57[shown[0]][r].tp + ec57[shown[0]][r].fn} | {cells} |")

    # ------------------------------------------------------------------------------------------ CPSC 2019
    cp = {k: SCORING.BeatCounts() for k in labels}
    scores = {k: [] for k in labels}
    strict = {k: [] for k in labels}
    secs = {k: 0.0 for k in labels}
    hours = 0.0
    for rid, x, fs, ref, _ in cpsc2019_records(root):
        hours += x.shape[-1] / fs / 3600
        for k in labels:
            peaks, dt = run(k, x, fs, "cpsc" + rid)
            secs[k] += dt
            c, s = SCORING.cpsc2019_counts(peaks, ref, fs, x.shape[-1])
            cp[k] += c
            scores[k].append((s, rid))
            strict[k].append(SCORING.cpsc2019_counts(peaks, ref, fs, x.shape[-1], strict=True)[1])
            csv_rows.append(("cpsc2019", rid, k, c.tp, c.fn, c.fp, f"{dt:.3f}"))
    n = len(scores[labels[0]])
    print(f"\nCPSC 2019 sample, {n} records x 10 s, challenge scoring (75 ms, 0.5 s edges; record 1 / 0.7 / 0.3 / 0)")
    print("| detector | challenge score | strict | half A / B | Se % | +P % | F1 % | TP | FN | FP | s per hour |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k in labels:
        c = cp[k]
        score = float(np.mean([s for s, _ in scores[k]])) if n else float("nan")
        sa, sb = (float(np.mean([s for s, _ in scores[k][h::2]])) for h in (0, 1))
        print(f"| {k} | {score:.3f} | {float(np.mean(strict[k])):.3f} | {sa:.2f} / {sb:.2f} | "
              f"{100 * c.se:.2f} | {100 * c.ppv:.2f} | {100 * c.f1:.2f} | {c.tp} | {c.fn} | "
              f"{c.fp} | {secs[k] / hours:.1f} |")
    if "package" in scores:
        bad = [f"{rid} {s}" for s, rid in scores["package"] if s < 1]
        print(f"package: {len(bad)} of {n} records not perfect: " + ", ".join(bad))

    if args.per_record_csv:
        with open(args.per_record_csv, "w") as f:
            f.write("set,record,detector,tp,fn,fp,seconds\n")
            for row in csv_rows:
                f.write(",".join(str(v) for v in row) + "\n")
        print(f"\nper-record table: {args.per_record_csv}")


if __name__ == "__main__":
    main()
