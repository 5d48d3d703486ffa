"""Does a small learned QRS detector, trained on MIT-BIH only, beat the package's detector on CPSC 2019?

A fixed-protocol experiment (no choice made on any test data):

* Training data: MIT-BIH 100 series, half A of the records (``rids[0::2]``, the split of benchmarks/qrs.py),
  first 25 minutes of each record, both leads as separate single-lead series. Signals are resampled to
  100 Hz and high-passed at 0.5 Hz (zero phase); random 8 s crops, light augmentation (gain incl. an
  occasional sign flip, white noise, baseline wander), per-window normalisation (minus the median, divided
  by the median over 1 s blocks of the peak-to-peak range, so amplitude units do not matter).
  Target: 1 within +-50 ms of each reference beat (EC57 beat symbols, ``reference_beats``), else 0.
* Model: a tiny 1D U-Net (100 Hz stem, stride-2 down to 50 Hz, five dilated residual conv blocks, upsampling
  with a skip), well under 100k parameters; BCE loss, AdamW, cosine learning rate over a wall-time budget.
* Peak picking: runs of probability above a threshold, each run's probability-weighted centroid is a beat,
  beats closer than 220 ms keep the stronger one. The threshold (and the one of the two-lead fusion, the
  mean of both leads' probabilities) is chosen on a validation slice: the last 5 minutes of each half-A
  record, never used for training, maximising F1 at a 75 ms tolerance.
* Test: MIT-BIH half B (``rids[1::2]``) scored per EC57 (from 5:00), MLII alone and both leads fused;
  CPSC 2019 sample (all 50 records) scored with ``cpsc2019_counts`` (official way, and strict). The package's
  detector runs in the same process on the same records, through benchmarks/qrs.py's ``run`` (same loaders,
  same scoring code). Times are wall seconds per hour of ECG, one thread.

Run from the repository root::

    python benchmarks/qrs_learned.py --out qrs_learned [--budget_s 600]

Training stops on a wall-time budget, so the number of steps (7,295 in 600 s for the figures of
docs/qrs.md, kept in benchmarks/results/qrs-learned/) and the last digits move from machine to machine.
"""

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.signal import butter, resample_poly, sosfiltfilt  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]

_spec = importlib.util.spec_from_file_location("qrs_bench", REPO / "benchmarks" / "qrs.py")
QB = importlib.util.module_from_spec(_spec)
sys.modules["qrs_bench"] = QB
_spec.loader.exec_module(QB)
SCORING = QB.SCORING

FS = 100  # model rate (Hz)
CROP = 8 * FS  # training crop, samples
HALF_WIDTH = 5  # target: +-50 ms
MIN_DIST = 22  # 220 ms between beats
WIN, MARGIN = 10 * FS, 1 * FS  # inference windows: 10 s, 1 s of context discarded on each side
TRAIN_END_S = 25 * 60  # half-A records: [0, 25 min) train, [25 min, end) validation
THRESHOLDS = np.round(np.arange(0.10, 0.91, 0.05), 2)


# ---------------------------------------------------------------------------------------------- signal
def to_model_rate(x: np.ndarray, fs: float) -> np.ndarray:
    """(leads, n) at fs -> (leads, m) at 100 Hz, high-passed at 0.5 Hz."""
    f = math.gcd(int(round(fs)), FS)
    y = resample_poly(np.asarray(x, np.float64), FS // f, int(round(fs)) // f, axis=-1)
    sos = butter(2, 0.5, btype="highpass", fs=FS, output="sos")
    return sosfiltfilt(sos, y, axis=-1).astype(np.float32)


def normalise(w: np.ndarray) -> np.ndarray:
    """Per-window: minus the median, divided by the median over 1 s blocks of the peak-to-peak range."""
    w = w - np.median(w, axis=-1, keepdims=True)
    n = w.shape[-1] // FS * FS
    if n >= FS:
        blocks = w[..., :n].reshape(*w.shape[:-1], -1, FS)
        scale = np.median(blocks.max(-1) - blocks.min(-1), axis=-1, keepdims=True)
    else:
        scale = (w.max(-1) - w.min(-1))[..., None]
    return np.clip(w / (scale + 1e-6), -20, 20).astype(np.float32)


def beat_mask(beats_100: np.ndarray, n: int) -> np.ndarray:
    y = np.zeros(n, np.float32)
    for b in beats_100:
        lo, hi = max(0, b - HALF_WIDTH), min(n, b + HALF_WIDTH + 1)
        if hi > lo:
            y[lo:hi] = 1.0
    return y


# ----------------------------------------------------------------------------------------------- model
class Block(nn.Module):
    def __init__(self, ch, dil, k=5):
        super().__init__()
        self.conv = nn.Conv1d(ch, ch, k, padding=dil * (k - 1) // 2, dilation=dil, bias=False)
        self.bn = nn.BatchNorm1d(ch)

    def forward(self, x):
        return x + torch.relu(self.bn(self.conv(x)))


class TinyUNet(nn.Module):
    def __init__(self, c1=16, c2=32, dilations=(1, 2, 4, 8, 16)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(1, c1, 7, padding=3, bias=False), nn.BatchNorm1d(c1), nn.ReLU())
        self.down = nn.Sequential(nn.Conv1d(c1, c2, 5, stride=2, padding=2, bias=False), nn.BatchNorm1d(c2),
                                  nn.ReLU())
        self.mid = nn.Sequential(*[Block(c2, d) for d in dilations])
        self.up = nn.Sequential(nn.Conv1d(c1 + c2, c1, 5, padding=2, bias=False), nn.BatchNorm1d(c1), nn.ReLU())
        self.head = nn.Conv1d(c1, 1, 1)

    def forward(self, x):  # (B, 1, n) -> logits (B, n)
        s = self.stem(x)
        m = self.mid(self.down(s))
        m = nn.functional.interpolate(m, size=s.shape[-1], mode="linear", align_corners=False)
        return self.head(self.up(torch.cat([s, m], 1)))[:, 0]


# ------------------------------------------------------------------------------------------- inference
@torch.no_grad()
def probabilities(model, y: np.ndarray) -> np.ndarray:
    """Per-sample QRS probability of one lead at 100 Hz: 10 s windows, each normalised on its own."""
    n = y.size
    if n <= WIN + 2 * MARGIN:
        return torch.sigmoid(model(torch.from_numpy(normalise(y)[None, None]))).numpy()[0]
    core = WIN - 2 * MARGIN
    starts = list(range(0, n, core))
    pad = np.pad(y, (MARGIN, WIN), mode="reflect")
    wins = np.stack([pad[s:s + WIN] for s in starts])
    out = np.zeros(n, np.float32)
    for i in range(0, len(wins), 64):
        p = torch.sigmoid(model(torch.from_numpy(normalise(wins[i:i + 64])[:, None]))).numpy()
        for j, s in enumerate(starts[i:i + 64]):
            e = min(n, s + core)
            out[s:e] = p[j, MARGIN:MARGIN + e - s]
    return out


def pick_peaks(p: np.ndarray, thr: float) -> np.ndarray:
    """Centroids (fractional, 100 Hz) of runs above thr; closer than MIN_DIST keeps the stronger."""
    above = np.concatenate([[False], p > thr, [False]]).astype(np.int8)
    d = np.diff(above)
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    if starts.size == 0:
        return np.zeros(0)
    cs = np.concatenate([[0.0], np.cumsum(p, dtype=np.float64)])
    ci = np.concatenate([[0.0], np.cumsum(p * np.arange(p.size), dtype=np.float64)])
    cent = (ci[ends] - ci[starts]) / (cs[ends] - cs[starts])
    height = np.array([p[a:b].max() for a, b in zip(starts, ends)])
    keep = []
    for c, h in zip(cent, height):
        if keep and c - keep[-1][0] < MIN_DIST:
            if h > keep[-1][1]:
                keep[-1] = (c, h)
        else:
            keep.append((c, h))
    return np.array([c for c, _ in keep])


def to_fs(peaks_100: np.ndarray, fs: float, n: int) -> np.ndarray:
    return np.clip(np.round(peaks_100 * fs / FS), 0, n - 1).astype(np.int64)


# ------------------------------------------------------------------------------------------------ main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("ECGNAT_SHARED_DATA", str(REPO.parent / "shared" / "data")),
                    help="the folder holding mitdb/ and cpsc2019-sample/")
    ap.add_argument("--out", default="qrs_learned", help="results.md, results.json and model.pt go here")
    ap.add_argument("--budget_s", type=float, default=600.0, help="training wall-time budget (hard cap 720 s)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    QB.require_data(Path(args.data_dir))
    budget = min(args.budget_s, 720.0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(args.data_dir)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    t_all = time.perf_counter()

    # ---- data
    mit = {}
    for rid, x, fs, ref, info in QB.mitdb_records(root):
        mit[rid] = (x, fs, ref, info)
    rids = sorted(mit)
    half_a, half_b = rids[0::2], rids[1::2]
    train, val = [], []  # (signal 100 Hz (n,), target (n,)) per lead; val keeps beats too
    for rid in half_a:
        x, fs, ref, _ = mit[rid]
        y = to_model_rate(x, fs)
        b100 = np.round(ref * FS / fs).astype(np.int64)
        cut = TRAIN_END_S * FS
        for lead in range(y.shape[0]):
            train.append((y[lead, :cut], beat_mask(b100[b100 < cut], cut)))
            vb = ref[ref >= int(round(TRAIN_END_S * fs))] - int(round(TRAIN_END_S * fs))
            val.append((rid, lead, y[lead, cut:], vb, fs, x.shape[-1] - int(round(TRAIN_END_S * fs))))
    print(f"half A (train first 25 min, val last 5 min): {', '.join(half_a)}\nhalf B (test): {', '.join(half_b)}",
          flush=True)
    lengths = np.array([s.size for s, _ in train], np.float64)

    def batch(bs):
        xs, ys = [], []
        for i in rng.choice(len(train), bs, p=lengths / lengths.sum()):
            s, t = train[i]
            o = rng.integers(0, s.size - CROP)
            w, lab = s[o:o + CROP].astype(np.float64), t[o:o + CROP]
            amp = np.median(np.ptp(w[: CROP // FS * FS].reshape(-1, FS), axis=1)) + 1e-6
            g = rng.uniform(0.5, 2.0)
            w, amp = w * g * (-1 if rng.random() < 0.1 else 1), amp * g
            tt = np.arange(CROP) / FS
            if rng.random() < 0.5:  # white noise
                w = w + rng.normal(0, amp * rng.uniform(0.0, 0.15), CROP)
            if rng.random() < 0.5:  # baseline wander
                for _ in range(2):
                    w = w + amp * rng.uniform(0, 0.5) * np.sin(2 * np.pi * rng.uniform(0.05, 0.8) * tt
                                                                + rng.uniform(0, 2 * np.pi))
            xs.append(w)
            ys.append(lab)
        return torch.from_numpy(normalise(np.stack(xs))[:, None]), torch.from_numpy(np.stack(ys))

    # ---- train
    model = TinyUNet()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: TinyUNet, {n_params} parameters; training budget {budget:.0f} s", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    lossf = nn.BCEWithLogitsLoss()
    t0 = time.perf_counter()
    step, ema, log = 0, None, []
    while True:
        el = time.perf_counter() - t0
        if el >= budget:
            break
        for g in opt.param_groups:
            g["lr"] = args.lr * (min(1.0, (step + 1) / 30)) * 0.5 * (1 + math.cos(math.pi * el / budget))
        xb, yb = batch(args.batch)
        loss = lossf(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 25 == 0:
            log.append((step, round(el, 1), round(ema, 4)))
            print(f"  step {step} {el:.0f} s loss {ema:.4f}", flush=True)
    train_s = time.perf_counter() - t0
    print(f"trained {step} steps in {train_s:.0f} s ({step * args.batch} crops)", flush=True)
    model.eval()
    torch.save(model.state_dict(), out / "model.pt")

    # ---- threshold on validation (half A, last 5 min)
    vprob = {}
    for rid, lead, s, vb, fs, n in val:
        vprob[(rid, lead)] = probabilities(model, s)
    tol_s = 0.075

    def val_f1(thr, fused):
        c = SCORING.BeatCounts()
        for rid, lead, s, vb, fs, n in val:
            if fused and lead != 0:
                continue
            p = (vprob[(rid, 0)] + vprob[(rid, 1)]) / 2 if fused else vprob[(rid, lead)]
            c += SCORING.ec57_counts(to_fs(pick_peaks(p, thr), fs, n), vb, fs, n, tolerance_s=tol_s, start_s=0.0)
        return c

    val_table = {}
    chosen = {}
    for fused in (False, True):
        res = {float(t): val_f1(t, fused) for t in THRESHOLDS}
        best = max(res, key=lambda t: (res[t].f1, -abs(t - 0.5)))
        chosen["fused" if fused else "single"] = best
        val_table["fused" if fused else "single"] = {t: round(c.f1, 5) for t, c in res.items()}
        c = res[best]
        print(f"validation ({'both leads fused' if fused else 'each lead alone'}, 75 ms): threshold {best}, "
              f"Se {100 * c.se:.2f} +P {100 * c.ppv:.2f} F1 {100 * c.f1:.2f}", flush=True)
    thr1, thr2 = chosen["single"], chosen["fused"]

    # ---- MIT-BIH half B (EC57 from 5:00)
    rows_mit = {k: SCORING.BeatCounts() for k in ("learned, MLII", "learned, both leads fused", "package",
                                                  "package, first lead only")}
    secs = {k: 0.0 for k in rows_mit}
    hours_b = 0.0
    for rid in half_b:
        x, fs, ref, _ = mit[rid]
        n = x.shape[-1]
        hours_b += n / fs / 3600
        t = time.perf_counter()
        y = to_model_rate(x[:1], fs)
        p0 = probabilities(model, y[0])
        pk = to_fs(pick_peaks(p0, thr1), fs, n)
        secs["learned, MLII"] += time.perf_counter() - t
        rows_mit["learned, MLII"] += SCORING.ec57_counts(pk, ref, fs, n)
        t = time.perf_counter()
        y = to_model_rate(x, fs)
        pf = (probabilities(model, y[0]) + probabilities(model, y[1])) / 2
        pk = to_fs(pick_peaks(pf, thr2), fs, n)
        secs["learned, both leads fused"] += time.perf_counter() - t
        rows_mit["learned, both leads fused"] += SCORING.ec57_counts(pk, ref, fs, n)
        for k in ("package", "package, first lead only"):
            pk, dt = QB.run(k, x, fs)
            secs[k] += dt
            rows_mit[k] += SCORING.ec57_counts(pk, ref, fs, n)
        print(f"  mitdb {rid} done", flush=True)

    # ---- CPSC 2019 sample (all 50)
    rows_cp = {k: SCORING.BeatCounts() for k in ("learned", "package")}
    sc = {k: [] for k in rows_cp}
    st = {k: [] for k in rows_cp}
    csecs = {k: 0.0 for k in rows_cp}
    per_rec = []
    hours_c = 0.0
    for rid, x, fs, ref, _ in QB.cpsc2019_records(root):
        n = x.shape[-1]
        hours_c += n / fs / 3600
        t = time.perf_counter()
        pk_l = to_fs(pick_peaks(probabilities(model, to_model_rate(x, fs)[0]), thr1), fs, n)
        csecs["learned"] += time.perf_counter() - t
        pk_p, dt = QB.run("package", x, fs)
        csecs["package"] += dt
        rec = {"record": rid}
        for k, pk in (("learned", pk_l), ("package", pk_p)):
            c, s = SCORING.cpsc2019_counts(pk, ref, fs, n)
            rows_cp[k] += c
            sc[k].append(s)
            st[k].append(SCORING.cpsc2019_counts(pk, ref, fs, n, strict=True)[1])
            rec[k] = {"score": s, "tp": c.tp, "fn": c.fn, "fp": c.fp}
        per_rec.append(rec)

    # ---- report
    lines = [f"# Learned QRS detector (MIT-BIH half A only) vs the package's detector\n",
             f"TinyUNet, {n_params} parameters, {step} steps x {args.batch} crops of 8 s at 100 Hz "
             f"({train_s:.0f} s training, seed {args.seed}); thresholds from half-A validation slices "
             f"(last 5 min): single lead {thr1}, fused {thr2}.\n",
             f"MIT-BIH half B ({len(half_b)} records, held out), EC57 gross (150 ms, beats only, from 5:00):\n",
             "| detector | Se % | +P % | F1 % | TP | FN | FP | s per hour |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for k, c in rows_mit.items():
        lines.append(f"| {k} | {100 * c.se:.2f} | {100 * c.ppv:.2f} | {100 * c.f1:.2f} | {c.tp} | {c.fn} | {c.fp} | "
                     f"{secs[k] / hours_b:.1f} |")
    lines += [f"\nCPSC 2019 sample ({len(per_rec)} records x 10 s), challenge scoring (75 ms, 0.5 s edges):\n",
              "| detector | challenge score (official) | strict | perfect records | Se % | +P % | F1 % | TP | FN | FP "
              "| s per hour |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k, c in rows_cp.items():
        lines.append(f"| {k} | {np.mean(sc[k]):.3f} | {np.mean(st[k]):.3f} | {sum(s == 1 for s in sc[k])} | "
                     f"{100 * c.se:.2f} | {100 * c.ppv:.2f} | {100 * c.f1:.2f} | {c.tp} | {c.fn} | {c.fp} | "
                     f"{csecs[k] / hours_c:.1f} |")
    both_bad = sum(r["learned"]["score"] < 1 and r["package"]["score"] < 1 for r in per_rec)
    only_l = [r["record"] for r in per_rec if r["learned"]["score"] < 1 <= r["package"]["score"]]
    only_p = [r["record"] for r in per_rec if r["package"]["score"] < 1 <= r["learned"]["score"]]
    lines.append(f"\nImperfect CPSC records: both {both_bad}; learned only {len(only_l)} ({', '.join(only_l)}); "
                 f"package only {len(only_p)} ({', '.join(only_p)}).")
    lines.append(f"\nTotal wall time {time.perf_counter() - t_all:.0f} s.")
    text = "\n".join(lines)
    print("\n" + text)
    (out / "results.md").write_text(text + "\n")
    js = {"params": n_params, "steps": step, "batch": args.batch, "train_s": train_s, "seed": args.seed,
          "thresholds": chosen, "validation_f1": val_table, "train_log": log,
          "mitdb_half_b": {k: {"se": c.se, "ppv": c.ppv, "f1": c.f1, "tp": c.tp, "fn": c.fn, "fp": c.fp,
                               "s_per_hour": secs[k] / hours_b} for k, c in rows_mit.items()},
          "cpsc2019": {k: {"score": float(np.mean(sc[k])), "strict": float(np.mean(st[k])), "se": c.se,
                           "ppv": c.ppv, "f1": c.f1, "tp": c.tp, "fn": c.fn, "fp": c.fp,
                           "s_per_hour": csecs[k] / hours_c} for k, c in rows_cp.items()},
          "cpsc2019_per_record": per_rec, "total_wall_s": time.perf_counter() - t_all}
    (out / "results.json").write_text(json.dumps(js, indent=1))


if __name__ == "__main__":
    main()
