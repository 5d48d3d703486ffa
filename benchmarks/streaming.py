"""Streaming inference on Holter-length records: time and peak memory of ``ecgnat predict`` at 1 h, 6 h, 24 h.

The records are real recordings concatenated and written as WFDB (format 16, 2 leads MLII + V5, 200 Hz):
MIT-BIH 100 (30 min, MLII + V5, 360 Hz) and every PTB-XL record of ``../shared/data/ptbxl-subset``
(leads II and V5 of the 500 Hz files, 72 min in all), resampled to 200 Hz, one after the other, the
whole block repeated up to the length. They are written piece by piece, so building a 14-day record
needs no more memory than a 1-hour one. The model is an untrained tiny ECG-NAT checkpoint (like
``tests/helpers.make_tiny_checkpoint``: 100 Hz, 10 s windows every 5 s, 5 classes): its speed is what
matters here, not its answers.

Each ``ecgnat predict`` run is a fresh process; its peak resident memory (``ru_maxrss`` of that child,
from ``os.wait4``) and wall time are recorded.

    python benchmarks/streaming.py                                   # 1 h, 6 h, 24 h; default threads
    python benchmarks/streaming.py --hours 1 --threads 1 2           # thread speed-up
    python benchmarks/streaming.py --hours 24 --window_stride_s 5 10  # overlapping (default) and whole-window strides
    python benchmarks/streaming.py --hours --patch_days 14 --patch_limit_s 240   # a 14-day single-lead patch
    python benchmarks/streaming.py --hours 6 24 --limit_s 300 --preprocess   # stop each run after 300 s

``--limit_s``: stop each ``ecgnat predict`` run with SIGINT after that many seconds (on a machine too busy
to score a whole day in the time at hand); the windows scored by then are counted from the timeline
file, and the peak memory is that of the run so far. ``--preprocess``: also stream each whole record
through :class:`ecgnat_hf.streaming.RecordStream` without the model (time and peak memory of reading,
resampling and windowing the full length).

``--patch_days``: a single-lead (II) 200 Hz record of that many days. Scoring 14 days of windows takes
hours on 2 cores, so the patch is measured twice: ``preprocess`` streams the whole record through
:class:`ecgnat_hf.streaming.RecordStream` (reading, resampling, windowing: everything but the model),
and ``predict`` runs ``ecgnat predict`` on it for ``--patch_limit_s`` seconds
(``--patch_last_chunks N``: preprocess only the record's last N chunks, for a busy machine), then stops it with
SIGINT, to show that memory stays flat while the windows go by (``timeline_rows``: windows written).
"""
from __future__ import annotations

import os

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_SET_HERE = [v for v in _THREAD_VARS if v not in os.environ]  # set below for this process only
for _var in _THREAD_VARS:
    os.environ.setdefault(_var, "1")  # BLAS threads would fight torch's threads on 2 cores

import argparse
import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ECGNAT_SHARED_DATA", REPO.parent / "shared" / "data"))
RATE = 200
GAIN = 200.0  # digital units per mV: int16 holds +-163 mV


def real_block(leads=("MLII", "V5")):
    """(leads, samples) float64 mV at 200 Hz: MIT-BIH 100 then PTB-XL 500 Hz records, leads II and V5."""
    import numpy as np
    from scipy.signal import resample_poly

    from ecgnat_hf.data import read_record
    from ecgnat_hf.data.builders.common import find_records

    pieces = []
    mit = read_record(SHARED / "mitdb" / "100", channel_names=list(leads))
    pieces.append(resample_poly(mit.signal.astype(np.float64), 5, 9, axis=1))  # 360 -> 200 Hz
    want = ["II" if lead == "MLII" else lead for lead in leads]
    for rec in find_records(SHARED / "ptbxl-subset" / "records500"):
        r = read_record(rec, channel_names=want)
        pieces.append(resample_poly(r.signal.astype(np.float64), 2, 5, axis=1))  # 500 -> 200 Hz
    return np.concatenate(pieces, axis=1)


def write_wfdb(path: Path, block, seconds: float, lead_names) -> Path:
    """Write ``block`` repeated to ``seconds`` as a WFDB format-16 record, piece by piece."""
    import numpy as np

    n_total = int(round(seconds * RATE))
    n_leads = block.shape[0]
    digital_block = np.clip(np.round(block * GAIN), -32767, 32767).astype("<i2")
    checksum = np.zeros(n_leads, dtype=np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(path.with_suffix(".dat"), "wb") as f:
        while written < n_total:
            take = min(digital_block.shape[1], n_total - written)
            piece = digital_block[:, :take]
            f.write(np.ascontiguousarray(piece.T).tobytes())
            checksum += piece.astype(np.int64).sum(axis=1)
            written += take
    first = digital_block[:, 0]
    lines = [f"{path.name} {n_leads} {RATE} {n_total}"]
    for k, name in enumerate(lead_names):
        cs = int(((checksum[k] + 32768) % 65536) - 32768)
        lines.append(f"{path.name}.dat 16 {GAIN:g}(0)/mV 16 0 {int(first[k])} {cs} 0 {name}")
    lines.append("# real recordings concatenated (MIT-BIH 100, PTB-XL): benchmarks/streaming.py")
    path.with_suffix(".hea").write_text("\n".join(lines) + "\n")
    return path


def make_checkpoint(path: Path) -> Path:
    import torch

    from ecgnat_hf import ECGNATConfig, ECGNATFeatureExtractor, ECGNATForSequenceClassification
    from ecgnat_hf.models.ecgnat.configuration_ecgnat import PRESETS

    torch.manual_seed(0)
    labels = ["NORM", "MI", "STTC", "CD", "HYP"]
    config = ECGNATConfig.from_preset(
        "tiny", num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)}, problem_type="multi_label_classification")
    if (path / "config.json").is_file():
        saved = json.loads((path / "config.json").read_text())
        if all(saved.get(k) == config.to_dict()[k] for k in PRESETS["tiny"]):
            return path  # made by an earlier run with today's tiny preset
    ECGNATForSequenceClassification(config).save_pretrained(path)
    ECGNATFeatureExtractor(sampling_rate=100, window_s=10).save_pretrained(path)
    return path


def measure(cmd: list[str], limit_s: float | None = None, env=None) -> dict:
    """Run ``cmd``; wall time and that child's own peak RSS (``os.wait4``). With ``limit_s``, SIGINT after
    that long (``interrupted`` when it then ends with an error code)."""
    t0 = time.monotonic()
    # a background job of a non-interactive shell inherits SIGINT as ignored: give the child the default back,
    # so that Python turns SIGINT into KeyboardInterrupt there and ecgnat predict stops cleanly
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    chunks: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)
    reader.start()  # drain the pipe so the child never blocks on a full one
    sent = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if limit_s is not None and not sent and time.monotonic() - t0 >= limit_s:
            proc.send_signal(signal.SIGINT)
            sent = True
        time.sleep(0.2)
    wall = time.monotonic() - t0
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    reader.join(timeout=10)
    output = "".join(chunks)
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024, "exit": code,
            "interrupted": sent and code != 0, "output": output.strip()[-2000:]}


def child_env() -> dict:
    """The environment of a measured ``ecgnat predict``: without the thread variables this script set for
    itself, so that ``ecgnat`` applies its own defaults (every core for torch, one BLAS thread) unless
    ``--threads`` or the user's own environment says otherwise."""
    env = dict(os.environ)
    for var in _SET_HERE:
        env.pop(var, None)
    return env


def predict_cmd(record: Path, ckpt: Path, out: Path, threads: int | None, nice: int,
                stride_s: float | None = None) -> list[str]:
    cmd = ["nice", "-n", str(nice)] if nice else []
    cmd += [sys.executable, "-m", "ecgnat_hf.cli"]
    if threads is not None:
        cmd += ["--num_threads", str(threads)]
    cmd += ["predict", str(record), "-m", str(ckpt), "-o", str(out / "predictions.csv"),
            "--timeline", str(out / "timeline.csv"), "--no_progress"]
    if stride_s is not None:
        cmd += ["--window_stride_s", f"{stride_s:g}"]
    return cmd


def scoring_seconds(output: str) -> float | None:
    """The loop time ``ecgnat predict`` reports ("... in 71.2 s: ..."): the run without start-up and loading."""
    import re

    m = re.search(r"\) in ([0-9.]+) s:", output)
    return float(m.group(1)) if m else None


PREPROCESS_CHILD = """
import os, sys, time, resource
from ecgnat_hf import ECGNATFeatureExtractor
from ecgnat_hf.streaming import RecordStream
fe = ECGNATFeatureExtractor.from_pretrained(sys.argv[2])
t = time.monotonic(); n = 0
stream = RecordStream(sys.argv[1], fe, chunk_s=600)
last = int(sys.argv[3]) if len(sys.argv) > 3 else 0
plan = stream.chunk_plan()[-last:] if last else None
for chunk in stream.iter_chunks(plan):
    n += len(chunk)
print(n, time.monotonic() - t)
"""


def timeline_rows(path: Path) -> int:
    try:
        with open(path) as f:
            return sum(1 for _ in f) - 1
    except OSError:
        return 0


def preprocess(rec: Path, ckpt: Path, nice: int, label: str, last_chunks: int = 0) -> dict:
    cmd = (["nice", "-n", str(nice)] if nice else []) + [sys.executable, "-c", PREPROCESS_CHILD, str(rec), str(ckpt),
                                                         str(last_chunks)]
    m = measure(cmd)
    windows, secs = m["output"].split()[-2:]
    what = f"last {last_chunks} chunks" if last_chunks else "whole record"
    m.update(record=label, kind=f"preprocess only (RecordStream, no model), {what}", windows=int(windows),
             stream_s=float(secs), command=" ".join(cmd[:-4] + ["'<RecordStream loop>'"] + cmd[-3:]))
    print(f"{label}, preprocessing only ({what}): {int(windows)} windows in {m['wall_s']:.1f} s (loop {float(secs):.1f} s), "
          f"peak RSS {m['peak_rss_mib']:.0f} MiB", flush=True)
    return m


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/ecgnat-streaming-bench", help="records, checkpoint and outputs")
    ap.add_argument("--hours", type=float, nargs="*", default=[1, 6, 24])
    ap.add_argument("--threads", type=int, nargs="*", default=[None],
                    help="torch threads per run (default: ecgnat's own default, every available core)")
    ap.add_argument("--patch_days", type=float, default=None, help="also a single-lead patch of this many days")
    ap.add_argument("--patch_limit_s", type=float, default=240.0)
    ap.add_argument("--patch_last_chunks", type=int, default=0,
                    help="preprocess only the last N chunks of the patch (0: all of it)")
    ap.add_argument("--limit_s", type=float, default=None, help="stop each Holter run after this many seconds")
    ap.add_argument("--preprocess", action="store_true", help="also time RecordStream alone on each record")
    ap.add_argument("--window_stride_s", type=float, nargs="*", default=[None],
                    help="ecgnat predict --window_stride_s values to run (default: the checkpoint's, 5 s)")
    ap.add_argument("--nice", type=int, default=10, help="run the measured commands under nice (shared machine)")
    ap.add_argument("--json", default=None, help="write the results there too")
    args = ap.parse_args(argv)

    work = Path(args.work)
    ckpt = make_checkpoint(work / "ckpt")
    results = []
    block = None
    for hours in args.hours:
        rec = work / f"holter_{hours:g}h" / f"holter_{hours:g}h"
        if not rec.with_suffix(".hea").is_file():
            block = real_block() if block is None else block
            write_wfdb(rec, block, hours * 3600, ["MLII", "V5"])
        label = f"{hours:g} h, 2 leads, {RATE} Hz"
        if args.preprocess:
            results.append(preprocess(rec, ckpt, args.nice, label))
        for threads, stride in itertools.product(args.threads, args.window_stride_s):
            out = work / f"out_{hours:g}h_{threads or 'default'}" / f"stride_{stride or 'default'}"
            out.mkdir(parents=True, exist_ok=True)
            cmd = predict_cmd(rec, ckpt, out, threads, args.nice, stride)
            m = measure(cmd, limit_s=args.limit_s, env=child_env())
            rows = timeline_rows(out / "timeline.csv")
            covered = hours * 3600 if not m["interrupted"] else rows * (stride or 5.0)
            loop = scoring_seconds(m["output"])
            m.update(record=label, seconds=hours * 3600, threads=threads or "default", windows_scored=rows,
                     window_stride_s=stride or 5.0, command=" ".join(cmd), realtime_x=covered / m["wall_s"],
                     scoring_s=loop, scoring_realtime_x=covered / loop if loop else None)
            results.append(m)
            state = f"stopped after {m['wall_s']:.0f} s with {rows} windows scored" if m["interrupted"] else (
                f"{m['wall_s']:.1f} s, {rows} windows")
            inner = f"; scoring loop {loop:.1f} s, {covered / loop:.0f}x" if loop else ""
            print(f"{label}, threads={threads or 'default'}, stride {stride or 5:g} s: {state} "
                  f"({m['realtime_x']:.0f}x real time end to end{inner}), "
                  f"peak RSS {m['peak_rss_mib']:.0f} MiB, exit {m['exit']}", flush=True)
    if args.patch_days:
        days = args.patch_days
        rec = work / f"patch_{days:g}d" / f"patch_{days:g}d"
        if not rec.with_suffix(".hea").is_file():
            write_wfdb(rec, real_block(leads=("MLII",)), days * 86400, ["II"])
        results.append(preprocess(rec, ckpt, args.nice, f"{days:g} days, 1 lead, {RATE} Hz", args.patch_last_chunks))
        out = work / f"out_patch_{days:g}d"
        out.mkdir(parents=True, exist_ok=True)
        cmd = predict_cmd(rec, ckpt, out, None, args.nice)
        m = measure(cmd, limit_s=args.patch_limit_s, env=child_env())
        rows = timeline_rows(out / "timeline.csv")
        m.update(record=f"{days:g} days, 1 lead, {RATE} Hz", kind=f"ecgnat predict, stopped after {args.patch_limit_s:g} s",
                 timeline_rows=rows, command=" ".join(cmd))
        results.append(m)
        print(f"{days:g} d patch, ecgnat predict for {m['wall_s']:.0f} s: {rows} windows scored "
              f"({rows * 5 / m['wall_s']:.0f}x real time), peak RSS {m['peak_rss_mib']:.0f} MiB, exit {m['exit']}",
              flush=True)
    print(f"\nload average at the end: {os.getloadavg()}; cores available: {len(os.sched_getaffinity(0))}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
