"""The app's analysis of a long record, without the browser: scoring threads before / after, same run.

``ecgnat app`` analyses a record with :func:`ecgnat_hf.app.analysis.analyse_record` (predictions through the
streaming path, the 10 s printout, beats and lead attention, the timeline). This times that call on a 2-lead
200 Hz record made of real recordings (as in ``benchmarks/streaming.py``; 24 h by default) with an untrained
tiny ECG-NAT (100 Hz, 10 s windows; its speed is what counts here), in two thread settings, each in a fresh
process started as ``ecgnat app`` starts (BLAS on one thread):

* ``omp``: torch's own threads on every core (``torch.set_num_threads(cores)``), one batch at a time: what
  the app did before;
* ``workers``: torch on one thread, ``cores`` batches at once, one per thread (``num_workers``): what
  ``ecgnat app`` does now.

The two are run one after the other (the order alternates over ``--repeats``), so the ratio is measured
under the same load. It also checks that both give the same window probabilities (max absolute
difference over the timeline) and reports each run's CPU time and peak memory.

    python benchmarks/app_long_record.py                    # 24 h
    python benchmarks/app_long_record.py --hours 2 --repeats 2
"""
from __future__ import annotations

import os

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
for _var in _THREAD_VARS:
    os.environ.setdefault(_var, "1")  # BLAS on one thread, as ecgnat app sets it

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODES = ("omp", "workers")


def _streaming_module():
    spec = importlib.util.spec_from_file_location("bench_streaming", REPO / "benchmarks" / "streaming.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _child(mode: str, record: str, ckpt: str, out: str) -> int:
    """One analysis in this process; prints one JSON line."""
    import resource

    import torch

    from ecgnat_hf.app.analysis import analyse_record
    from ecgnat_hf.app.interface import _cores_available, load_checkpoint

    cores = _cores_available()
    model, fe = load_checkpoint(ckpt, device="cpu")
    if mode == "omp":
        torch.set_num_threads(cores)
        workers = 1
    else:
        torch.set_num_threads(1)
        workers = cores
    t0, c0 = time.monotonic(), time.process_time()
    a = analyse_record(model, fe, record, out, num_workers=workers)
    print(json.dumps({"mode": mode, "seconds": time.monotonic() - t0, "cpu_s": time.process_time() - c0,
                      "windows": a.n_windows, "torch_threads": torch.get_num_threads(), "workers": workers,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "timeline": str(Path(out) / f"{a.record_id}_timeline.csv")}))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default=None, help="folder for the record and checkpoint (default: temporary)")
    parser.add_argument("--hours", type=float, default=24.0, help="length of the record (default: 24)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each mode (order alternates)")
    parser.add_argument("--nice", type=int, default=10, help="niceness of the runs (default: 10)")
    parser.add_argument("--_child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        return _child(*args._child)
    import numpy as np
    import pandas as pd

    bench = _streaming_module()
    work = Path(args.work or tempfile.mkdtemp(prefix="ecgnat-bench-app-long-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = bench.make_checkpoint(work / "ckpt")
    name = f"holter{args.hours:g}h".replace(".", "_")
    rec = work / name
    if not rec.with_suffix(".hea").is_file():
        print(f"building the {args.hours:g} h 2-lead record from real recordings ...", flush=True)
        bench.write_wfdb(rec, bench.real_block(), args.hours * 3600, ["MLII", "V5"])
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    for k in range(args.repeats):
        for mode in (MODES if k % 2 == 0 else MODES[::-1]):
            out = work / f"out_{mode}_{k}"
            cmd = (["nice", "-n", str(args.nice)] if args.nice else []) + [
                sys.executable, str(Path(__file__).resolve()), "--_child", mode, str(rec), str(ckpt), str(out)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                print(res.stdout[-2000:], res.stderr[-4000:], file=sys.stderr)
                return 1
            r = json.loads(res.stdout.strip().splitlines()[-1])
            r["load"] = os.getloadavg()[0]
            runs[mode].append(r)
            print(f"{mode:8s} run {k + 1}: {r['seconds']:.1f} s (cpu {r['cpu_s']:.1f} s, torch threads "
                  f"{r['torch_threads']}, workers {r['workers']}, peak {r['peak_rss_mib']:.0f} MiB, "
                  f"load {r['load']:.1f})", flush=True)
    a = pd.read_csv(runs["omp"][0]["timeline"])
    b = pd.read_csv(runs["workers"][0]["timeline"])
    cols = list(a.columns[5:])
    diff = float(np.abs(a[cols].to_numpy() - b[cols].to_numpy()).max())
    med = {m: sorted(r["seconds"] for r in rs)[len(rs) // 2] for m, rs in runs.items()}
    print(f"\n{args.hours:g} h record, {runs['omp'][0]['windows']} windows; load average after: {os.getloadavg()[0]:.2f}")
    for m in MODES:
        each = ", ".join(f"{r['seconds']:.1f}" for r in runs[m])
        print(f"{m:8s} analyse_record: {med[m]:.1f} s (runs: {each})")
    print(f"speed-up workers / omp: {med['omp'] / med['workers']:.2f}x; window probabilities: max |difference| "
          f"{diff:.2e} ({'equal within 1e-5' if diff <= 1e-5 else 'DIFFERENT'})")
    return 0 if diff <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
