"""Pretraining at scale: prepare throughput, store size, training memory, time to first step, loader speed.

Builds synthetic corpora in the real MIMIC-IV-ECG layout (``files/pNNNN/pSUBJECT/sSTUDY/STUDY.hea/.dat``,
500 Hz, WFDB format 16, leads I, II, III, aVR, aVF, aVL, V1-V6, ``record_list.csv``) and CODE-15 % layout
(``exams_partK.hdf5`` + ``exams.csv``, 400 Hz) from the bundled real PTB-XL records, each copy shifted, scaled
and with noise added (:mod:`ecgnat_hf.data.corpus_layouts`), at each ``--sizes`` (records). Then, per size:

* ``ecgnat prepare`` (MIMIC layout -> store at the model's rate): records/s with ``--num_proc 1`` and
  ``--num_proc 2``; baseline in the same run: a loop that only reads the same records (``read_record``);
* store size against the int16 size of the signals at the model's rate (target <= 1.1x);
* ``ecgnat pretrain --dataset store`` (``--steps`` steps, tiny preset, 2 loader workers): peak RSS of the
  main process (``ru_maxrss``) and peak PSS of the process tree (psutil, sampled every 0.25 s; PSS counts a
  shared or memory-mapped page once), and the time from launch to the first optimisation step;
* the loader alone: windows/s of a DataLoader with 2 workers over the store;
* optionally (``--old_sizes``) the old in-RAM path (``--dataset mimic-iv-ecg`` read through the builder and
  featurised in memory) for the memory baseline.

Sizes are projected to 10^6 records from the measured slopes. Everything runs with ``nice``; on a shared
machine, say so with the figures.

    python benchmarks/scale.py --sizes 1000 10000 --old_sizes 1000 --work /tmp/ecgnat-scale
    python benchmarks/scale.py --speed 2000 --num_proc 1 2 --work /tmp/ecgnat-scale   # prepare: this code against the old
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


#: the code before the prepare speed-up (issue 21: sorted-sample quality check, ...): the baseline of --speed
SPEED_BASELINE_REV = "95095df"


def _env(src: Path | None = None):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src or REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def checkout_src(rev: str, dest: Path) -> Path:
    """``src/`` of git revision ``rev`` of this repository, extracted under ``dest`` (the baseline code)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def build_mimic(out: Path, n: int, seed: int = 0, batch: int = 500) -> float:
    """MIMIC-IV-ECG layout with ``n`` records (two studies per subject); returns seconds (0 if it existed)."""
    from ecgnat_hf.data.corpus_layouts import bundled_signals, vary, write_mimic_iv_ecg

    done = out / "record_list.csv"
    if done.is_file() and sum(1 for _ in open(done)) - 1 == n:
        return 0.0
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    base = [s for _, s in bundled_signals(500)]
    rng = np.random.default_rng(seed)
    rows = []
    for a in range(0, n, batch):
        idx = range(a, min(n, a + batch))
        sig = [vary(base[i % len(base)], rng) for i in idx]
        write_mimic_iv_ecg(out, sig, subject_ids=[10000000 + i // 2 for i in idx], study_ids=[40000000 + i for i in idx],
                           writer="numpy")
        with open(out / "record_list.csv", newline="") as f:
            r = list(csv.reader(f))
        header, rows = r[0], rows + r[1:]
    with open(out / "record_list.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return time.perf_counter() - t


def build_code15(out: Path, n: int, seed: int = 1, part_size: int = 2000) -> float:
    from ecgnat_hf.data.corpus_layouts import bundled_signals, vary, write_code15

    if (out / "exams.csv").is_file() and sum(1 for _ in open(out / "exams.csv")) - 1 == n:
        return 0.0
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    base = [s for _, s in bundled_signals(400)]
    rng = np.random.default_rng(seed)
    sig = [vary(base[i % len(base)], rng) for i in range(n)]
    y = (rng.random((n, 6)) < 0.1).astype(np.float32)
    write_code15(out, sig, exam_ids=list(range(1, n + 1)), patient_ids=[900000 + i // 2 for i in range(n)], labels=y,
                 part_size=part_size)
    return time.perf_counter() - t


def read_only_rate(corpus: Path, limit: int = 300) -> float:
    """Baseline: records/s of reading the MIMIC records (no resampling, no writing)."""
    from ecgnat_hf.data.records import read_record

    with open(corpus / "record_list.csv", newline="") as f:
        paths = [r["path"] for r in csv.DictReader(f)][:limit]
    t = time.perf_counter()
    for p in paths:
        read_record(corpus / p)
    return len(paths) / (time.perf_counter() - t)


def run_prepare(kind: str, corpus: Path, store: Path, num_proc: int, preset: str, records_per_shard: int = 250,
                src: Path | None = None) -> dict:
    """``ecgnat prepare`` of ``corpus`` into ``store`` (``src``: the package source to run, default this tree)."""
    shutil.rmtree(store, ignore_errors=True)
    cmd = ["nice", "-n", "10", sys.executable, "-m", "ecgnat_hf.cli", "prepare", "--dataset", kind, "--data_dir",
           str(corpus), "--output_dir", str(store), "--num_proc", str(num_proc), "--preset", preset,
           "--no_progress", "true", "--records_per_shard", str(records_per_shard)]
    import resource

    def cpu():
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # every waited-for descendant: pool workers included
        return ru.ru_utime + ru.ru_stime

    c0, t = cpu(), time.perf_counter()
    r = subprocess.run(cmd, env=_env(src), capture_output=True, text=True)
    dt = time.perf_counter() - t
    c1 = cpu()
    if r.returncode != 0:
        raise RuntimeError(f"prepare failed: {r.stderr[-3000:]}")
    # the same command again on the finished store: start-up, listing and index only (every shard is skipped);
    # its CPU time is subtracted, so cpu_s_per_record is the work per record, whatever else runs on the machine
    subprocess.run(cmd, env=_env(src), capture_output=True, text=True, check=True)
    c2 = cpu()
    m = json.loads((store / "manifest.json").read_text())
    import re

    found = re.search(r"shard\(s\) in ([0-9.]+) s \(", r.stdout)
    work = float(found.group(1)) if found else dt
    shards = sum(s["bytes"] for s in m["shards"])
    total = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    int16 = m["n_samples_total"] * len(m["lead_names"]) * 2
    return {"kind": kind, "num_proc": num_proc, "n_records": m["n_records"], "n_skipped": m["n_skipped"],
            "seconds": dt, "work_seconds": work, "records_per_s": (m["n_records"] + m["n_skipped"]) / work,
            "records_per_s_with_startup": (m["n_records"] + m["n_skipped"]) / dt,
            "cpu_s": c1 - c0, "cpu_s_rerun": c2 - c1,
            "records_per_cpu_s": (m["n_records"] + m["n_skipped"]) / max((c1 - c0) - (c2 - c1), 1e-9),
            "store_bytes": total, "shard_bytes": shards, "int16_bytes": int16, "size_ratio": total / int16}


def _load() -> str:
    return "load average " + " / ".join(f"{v:.1f}" for v in os.getloadavg())


def speed_compare(work: Path, n: int, num_procs: list[int], rounds: int, rev: str, preset: str) -> dict:
    """Prepare throughput of this tree against revision ``rev`` (the code before the speed-up) on the same
    ``n``-record MIMIC-layout corpus, in the same run: the two alternate (``rounds`` times per ``--num_proc``),
    so both see the same load. Also checks that both write the same shards (sha256)."""
    corpus = work / f"mimic-{n}"
    build_mimic(corpus, n)
    base_src = checkout_src(rev, work / f"baseline-{rev}")
    # warm-up: the corpus read once into the page cache and each version run once untimed, so that neither
    # version's first timed run pays the disk reads (on a busy machine the first run was 6x slower otherwise)
    for f in corpus.rglob("*"):
        if f.is_file():
            f.read_bytes()
    for src in (base_src, None):
        run_prepare("mimic-iv-ecg", corpus, work / "speed-store-warmup", 1, preset, src=src)
    runs: dict = {"n": n, "baseline_rev": rev, "rounds": rounds, "runs": []}
    for p in num_procs:
        for k in range(rounds):
            for label, src in (("baseline", base_src), ("new", None)) if k % 2 == 0 else (("new", None), ("baseline", base_src)):
                store = work / f"speed-store-{label}"
                load = os.getloadavg()[0]
                r = run_prepare("mimic-iv-ecg", corpus, store, p, preset, src=src)
                r.update(label=label, round=k, load_before=load, load_after=os.getloadavg()[0],
                         shard_sha256=[s["sha256"] for s in json.loads((store / "manifest.json").read_text())["shards"]])
                runs["runs"].append(r)
                print(f"[speed {n}] --num_proc {p} {label:8s} round {k}: {r['records_per_s']:.0f} records/s "
                      f"({r['records_per_s'] / p:.0f} per process), {r['records_per_cpu_s']:.0f} per CPU-second; "
                      f"{_load()}", flush=True)
    shas = {tuple(r["shard_sha256"]) for r in runs["runs"]}
    runs["identical_stores"] = len(shas) == 1
    for p in num_procs:
        for label in ("baseline", "new"):
            mine = [r for r in runs["runs"] if r["num_proc"] == p and r["label"] == label]
            runs[f"{label}_np{p}"] = {"records_per_s": float(np.median([r["records_per_s"] for r in mine])),
                                      "records_per_cpu_s": float(np.median([r["records_per_cpu_s"] for r in mine]))}
    return runs


def report_speed(sp: dict) -> None:
    print(f"\nprepare speed, {sp['n']} MIMIC-layout records, this tree against {sp['baseline_rev']} (the code before "
          f"the speed-up), alternating, median of {sp['rounds']} run(s) each; stores identical: "
          f"{'yes' if sp['identical_stores'] else 'NO'}")
    print(f"{'num_proc':>8} {'baseline rec/s':>14} {'new rec/s':>10} {'new per proc':>12} {'ratio':>6} "
          f"{'baseline rec/CPU-s':>18} {'new rec/CPU-s':>13} {'ratio':>6}")
    for key in sorted(k for k in sp if k.startswith("new_np")):
        p = int(key[len("new_np"):])
        b, nw = sp[f"baseline_np{p}"], sp[key]
        print(f"{p:>8} {b['records_per_s']:>14.0f} {nw['records_per_s']:>10.0f} {nw['records_per_s'] / p:>12.0f} "
              f"{nw['records_per_s'] / b['records_per_s']:>6.2f} {b['records_per_cpu_s']:>18.0f} "
              f"{nw['records_per_cpu_s']:>13.0f} {nw['records_per_cpu_s'] / b['records_per_cpu_s']:>6.2f}")
    loads = [r["load_before"] for r in sp["runs"]] + [r["load_after"] for r in sp["runs"]]
    print(f"1-minute load average during the runs: {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores")


def run_pretrain(argv: list[str], out: Path, limit_s: float = 1800) -> dict:
    """Run ``ecgnat pretrain``; peak RSS (main), peak PSS (tree), time to the first logged step."""
    import psutil

    shutil.rmtree(out, ignore_errors=True)
    cmd = ["nice", "-n", "10", sys.executable, "-m", "ecgnat_hf.cli", "pretrain", *argv, "--output_dir", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    ps = psutil.Process(proc.pid)
    peak_rss = peak_pss = 0
    first = None
    lines = []
    import threading

    def reader():
        nonlocal first
        for line in proc.stdout:
            lines.append(line)
            if first is None and "'loss'" in line:
                first = time.perf_counter() - t0

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    while proc.poll() is None:
        try:
            # the "nice" wrapper execs python: same pid
            procs = [ps] + ps.children(recursive=True)
            rss = ps.memory_info().rss
            pss = 0
            for p in procs:
                try:
                    pss += p.memory_full_info().pss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        except psutil.NoSuchProcess:
            break
        if time.perf_counter() - t0 > limit_s:
            proc.kill()
            break
        time.sleep(0.25)
    proc.wait()
    th.join(timeout=5)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError("pretrain failed:\n" + "".join(lines[-40:]))
    return {"peak_rss_mib": peak_rss / MIB, "peak_tree_pss_mib": peak_pss / MIB, "first_step_s": first, "wall_s": wall}


def loader_rate(store: Path, preset: str, batches: int = 60, workers: int = 2, batch_size: int = 64) -> float:
    import torch

    from ecgnat_hf.models.ecgnat.configuration_ecgnat import PRESETS
    from ecgnat_hf.models.ecgnat.feature_extraction_ecgnat import ECGNATFeatureExtractor
    from ecgnat_hf.recipes.pretrain import _PretrainCollator
    from ecgnat_hf.training.store_data import StoreWindows, open_store

    st = open_store(store)
    fe = ECGNATFeatureExtractor(sampling_rate=PRESETS[preset]["sampling_rate"], window_s=10.0, scaling="center")
    ds = StoreWindows([st], [st.indices(["train"])], fe, seed=0)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                     collate_fn=_PretrainCollator(), persistent_workers=False)
    it = iter(dl)
    for _ in range(5):  # workers started, first pages mapped
        try:
            next(it)
        except StopIteration:
            it = iter(dl)
    t = time.perf_counter()
    n = 0
    for _ in range(batches):
        try:
            b = next(it)
        except StopIteration:
            it = iter(dl)
            b = next(it)
        n += b["input_values"].shape[0]
    return n / (time.perf_counter() - t)


def replicate_store(src: Path, dst: Path, copies: int) -> None:
    """A store of ``copies`` x the records of ``src`` whose shards are hard links to ``src``'s (no disk, no prepare):
    for the training-side figures (memory, start-up, loader) at a size whose corpus there is no time to build.
    Record names repeat; nothing else in training depends on them."""
    from ecgnat_hf.data.store import finalize_store

    plan = json.loads((src / "plan.json").read_text())
    shutil.rmtree(dst, ignore_errors=True)
    (dst / "shards").mkdir(parents=True)
    shards, k = [], 0
    for _ in range(copies):
        for sh in plan["shards"]:
            side = json.loads((src / "shards" / f"{sh['shard']:05d}.json").read_text())
            os.link(src / side["file"], dst / "shards" / f"{k:05d}.arrow")
            side.update(shard=k, file=f"shards/{k:05d}.arrow")
            (dst / "shards" / f"{k:05d}.json").write_text(json.dumps(side))
            shards.append(dict(sh, shard=k))
            k += 1
    (dst / "plan.json").write_text(json.dumps(dict(plan, shards=shards, fingerprint=f"replicated-x{copies}")))
    finalize_store(dst, command=f"benchmarks/scale.py: {src} replicated x{copies}")


def fit(xs, ys):
    """Least-squares line y = a + b x; returns (a, b)."""
    if len(xs) < 2:
        return ys[0], 0.0
    b, a = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return a, b


def _g(d, *keys, default=float("nan")):
    for k in keys:
        if not isinstance(d, dict) or k not in d or d[k] is None:
            return default
        d = d[k]
    return d


def report(results: dict, preset: str) -> None:
    S = {int(k): v for k, v in results["sizes"].items()}
    sizes = sorted(S)
    print(f"\nPretraining at scale (MIMIC-IV-ECG layout, synthetic copies of the bundled records; model {preset}, "
          f"{results['machine']})")
    print(f"{'records':>8} {'prep/s np1':>10} {'np2':>6} {'rec/CPU-s':>9} {'read-only/s':>11} {'store/int16':>11} "
          f"{'RSS MiB':>8} {'PSS MiB':>8} {'1st step s':>10} {'loader win/s':>12}")
    for n in sizes:
        r = S[n]
        pr = r.get("prepare_np1") or r.get("prepare_np2") or {}
        print(f"{n:>8} {_g(r, 'prepare_np1', 'records_per_s'):>10.0f} {_g(r, 'prepare_np2', 'records_per_s'):>6.0f} "
              f"{_g(r, 'prepare_np1', 'records_per_cpu_s'):>9.0f} {_g(r, 'read_only_records_per_s'):>11.0f} "
              f"{_g(pr, 'size_ratio'):>11.3f} {_g(r, 'pretrain', 'peak_rss_mib'):>8.0f} "
              f"{_g(r, 'pretrain', 'peak_tree_pss_mib'):>8.0f} {_g(r, 'pretrain', 'first_step_s'):>10.1f} "
              f"{_g(r, 'loader_windows_per_s'):>12.0f}")
    lo, hi = sizes[0], sizes[-1]
    print(f"ratios: prepare np1 / read-only = {_g(S[lo], 'prepare_np1', 'records_per_s') / _g(S[lo], 'read_only_records_per_s'):.2f}; "
          f"np2 / np1 = {_g(S[lo], 'prepare_np2', 'records_per_s') / _g(S[lo], 'prepare_np1', 'records_per_s'):.2f}; "
          f"peak RSS {hi} / {lo} = {_g(S[hi], 'pretrain', 'peak_rss_mib') / _g(S[lo], 'pretrain', 'peak_rss_mib'):.3f}; "
          f"tree PSS {hi} / {lo} = {_g(S[hi], 'pretrain', 'peak_tree_pss_mib') / _g(S[lo], 'pretrain', 'peak_tree_pss_mib'):.3f}")
    trained = [n for n in sizes if "pretrain" in S[n]]
    if trained:
        a, b = fit(trained, [S[n]["pretrain"]["peak_rss_mib"] for n in trained])
        a2, b2 = fit(trained, [S[n]["pretrain"]["peak_tree_pss_mib"] for n in trained])
        print(f"projected pretrain memory at 1,000,000 records: peak RSS {a + b * 1e6:.0f} MiB (slope {b * 1000:.2f} MiB "
              f"per 1,000 records), tree PSS {a2 + b2 * 1e6:.0f} MiB (slope {b2 * 1000:.2f})")
    pr = S[hi].get("prepare_np1") or S[hi].get("prepare_np2")
    if pr:
        per_rec = pr["store_bytes"] / pr["n_records"]
        cpu = np.nanmean([_g(S[n], "prepare_np1", "records_per_cpu_s") for n in sizes])
        print(f"projected to 1,000,000 records: store {per_rec * 1e6 / 1e9:.1f} GB; prepare {1e6 / cpu / 3600:.1f} CPU-hours "
              f"({cpu:.0f} records per CPU-second), i.e. {1e6 / cpu / 3600 / 16:.2f} h with --num_proc 16 on 16 free cores")
    olds = sorted(int(k) for k in results.get("old_path", {}))
    for n in olds:
        o = results["old_path"][str(n)] if str(n) in results["old_path"] else results["old_path"][n]
        print(f"old in-RAM path, {n} records: peak RSS {o['peak_rss_mib']:.0f} MiB, tree PSS {o['peak_tree_pss_mib']:.0f} MiB, "
              f"first step {o['first_step_s']:.1f} s"
              + (f"; old / store peak RSS = {o['peak_rss_mib'] / S[n]['pretrain']['peak_rss_mib']:.2f}"
                 if n in S and "pretrain" in S[n] else ""))
    if "code15" in results:
        c = results["code15"]
        print(f"CODE-15 % layout, {c['n_records'] + c['n_skipped']} exams: prepare {c['records_per_s']:.0f} records/s "
              f"(1 process), {_g(c, 'records_per_cpu_s'):.0f} records per CPU-second, store / int16 {c['size_ratio']:.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000])
    ap.add_argument("--old_sizes", type=int, nargs="*", default=[], help="also measure the old in-RAM path at these sizes")
    ap.add_argument("--code15_size", type=int, default=1000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/ecgnat-scale"))
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--num_proc", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--keep", action="store_true", help="keep the corpora and stores")
    ap.add_argument("--replicate", default=None, metavar="N:K",
                    help="also measure training on a store of K x N records made of hard links to store-N's shards")
    ap.add_argument("--results", default="scale_results.json", help="file name of the results under --work")
    ap.add_argument("--skip_training", action="store_true", help="prepare figures only (no pretrain, no loader)")
    ap.add_argument("--speed", type=int, default=0, metavar="N",
                    help="only compare prepare throughput on an N-record MIMIC-layout corpus with the code of "
                         "--baseline_rev, in the same run (alternating; --num_proc values), and check the stores match")
    ap.add_argument("--baseline_rev", default=SPEED_BASELINE_REV, help="git revision of the --speed baseline")
    ap.add_argument("--rounds", type=int, default=2, help="--speed: runs of each version per --num_proc")
    ap.add_argument("--report", type=Path, nargs="+", default=None,
                    help="only print the report of these scale_results.json files (merged, later files win)")
    args = ap.parse_args()
    if args.report:
        merged = {"sizes": {}, "old_path": {}}
        for f in args.report:
            d = json.loads(Path(f).read_text())
            for k in ("sizes", "old_path"):
                for n, v in d.get(k, {}).items():
                    merged[k].setdefault(str(n), {}).update(v)
            for k in ("machine", "preset", "code15"):
                if k in d:
                    merged[k] = d[k]
        report(merged, merged.get("preset", args.preset))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    if args.speed:
        sp = speed_compare(args.work, args.speed, args.num_proc, args.rounds, args.baseline_rev, args.preset)
        (args.work / args.results).write_text(json.dumps({"speed": sp, "preset": args.preset}, indent=1))
        report_speed(sp)
        if not args.keep:
            for p in args.work.glob("speed-store-*"):
                shutil.rmtree(p, ignore_errors=True)
        return
    results = {"sizes": {}, "old_path": {}, "machine": f"{os.cpu_count()} cores", "preset": args.preset}
    train = ["--preset", args.preset, "--max_steps", str(args.steps), "--dataloader_num_workers", "2",
             "--per_device_train_batch_size", "32", "--eval_strategy", "no", "--save_strategy", "no",
             "--logging_steps", "1", "--disable_tqdm", "true", "--report_to", "none", "--use_cpu", "true",
             "--scaling", "center"]
    for n in args.sizes:
        corpus = args.work / f"mimic-{n}"
        build_s = build_mimic(corpus, n)
        r = {"build_corpus_s": build_s, "read_only_records_per_s": read_only_rate(corpus)}
        for p in args.num_proc:
            r[f"prepare_np{p}"] = run_prepare("mimic-iv-ecg", corpus, args.work / f"store-{n}", p, args.preset)
            print(f"[{n}] prepare --num_proc {p}: {r[f'prepare_np{p}']['records_per_s']:.0f} records/s", flush=True)
        store = args.work / f"store-{n}"
        results["sizes"][n] = r
        if args.skip_training:
            continue
        r["pretrain"] = run_pretrain(["--dataset", "store", "--data_dir", str(store), *train], args.work / f"run-{n}")
        print(f"[{n}] pretrain: {r['pretrain']}", flush=True)
        r["loader_windows_per_s"] = loader_rate(store, args.preset)
        print(f"[{n}] loader: {r['loader_windows_per_s']:.0f} windows/s", flush=True)
        results["sizes"][n] = r
        (args.work / args.results).write_text(json.dumps(results, indent=1))
    if args.replicate:
        n, k = (int(v) for v in args.replicate.split(":"))
        store = args.work / f"store-{n}x{k}"
        replicate_store(args.work / f"store-{n}", store, k)
        r = results["sizes"].setdefault(n * k, {"replicated_from": n})
        r["pretrain"] = run_pretrain(["--dataset", "store", "--data_dir", str(store), *train], args.work / f"run-{n}x{k}")
        print(f"[{n * k} = {n} x {k} replicated] pretrain: {r['pretrain']}", flush=True)
        r["loader_windows_per_s"] = loader_rate(store, args.preset)
        print(f"[{n * k}] loader: {r['loader_windows_per_s']:.0f} windows/s", flush=True)
        (args.work / args.results).write_text(json.dumps(results, indent=1))
    if args.code15_size:
        corpus = args.work / f"code15-{args.code15_size}"
        build_code15(corpus, args.code15_size)
        results["code15"] = run_prepare("code15", corpus, args.work / "store-code15", 1, args.preset)
        print(f"[code15 {args.code15_size}] prepare: {results['code15']['records_per_s']:.0f} records/s", flush=True)
    for n in args.old_sizes:
        corpus = args.work / f"mimic-{n}"
        build_mimic(corpus, n)
        cache = args.work / f"hf-cache-{n}"
        shutil.rmtree(cache, ignore_errors=True)
        results["old_path"][n] = run_pretrain(["--dataset", "mimic-iv-ecg", "--data_dir", str(corpus), "--cache_dir",
                                               str(cache), *train], args.work / f"run-old-{n}")
        print(f"[old path {n}] pretrain: {results['old_path'][n]}", flush=True)
        shutil.rmtree(cache, ignore_errors=True)
    (args.work / args.results).write_text(json.dumps(results, indent=1))

    # ------------------------------------------------------------------ report
    report(results, args.preset)
    if not args.keep:
        for p in args.work.glob("run-*"):
            shutil.rmtree(p, ignore_errors=True)


if __name__ == "__main__":
    main()
