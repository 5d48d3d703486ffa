"""``ecgnat app`` from a person's side: upload-to-results time in a real browser, and the app's peak memory.

Starts ``ecgnat app`` (a fresh process, every core for torch as ``ecgnat app`` sets it) with an untrained tiny
ECG-NAT checkpoint (100 Hz, 10 s windows: its speed matters here, not its answers), drives the page with
Debian's headless ``chromium`` through Playwright, and for each record times from the moment the files are
handed to the page's upload box to the moment the results (status, printout, beats/lead attention, timeline)
are on the page. The records:

* ``12lead_10s``: a real 10 s 12-lead PTB-XL record (the bundled sample, 100 Hz; and the same record at
  500 Hz from ``../shared/data/ptbxl-subset`` when it is there);
* ``holter_24h``: a 24 h 2-lead (MLII + V5, 200 Hz, format 16) record made of real recordings concatenated,
  as in ``benchmarks/streaming.py`` (MIT-BIH 100 and PTB-XL 500 Hz records from ``../shared/data``).

The baseline, measured in the same run: ``ecgnat predict`` on the same record with the same window plan
(the app scores records over 1 h with whole-window strides: ``--window_stride_s 10``). The ratio app /
predict is the price of the page (upload, figures, browser) over the bare command.

The app's peak memory is the server process's peak resident set (``VmHWM`` in ``/proc/<pid>/status``) after
every record has gone through. Targets (issue 23): 10 s 12-lead under 2 s, 24 h 2-lead under 60 s, peak
under 1.5 GiB, on 2 cores.

    python benchmarks/app.py                      # both records
    python benchmarks/app.py --skip_holter        # the 10 s record only (about a minute)
"""
from __future__ import annotations

import os

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_SET_HERE = [v for v in _THREAD_VARS if v not in os.environ]
for _var in _THREAD_VARS:
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ECGNAT_SHARED_DATA", REPO.parent / "shared" / "data"))
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _streaming_module():
    spec = importlib.util.spec_from_file_location("bench_streaming", REPO / "benchmarks" / "streaming.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env() -> dict:
    env = dict(os.environ)
    for var in _SET_HERE:
        env.pop(var, None)
    env.update(HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    return env


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _start_app(ckpt: Path, nice: int, log: Path):
    port = _free_port()
    cmd = (["nice", "-n", str(nice)] if nice else []) + [sys.executable, "-m", "ecgnat_hf.cli", "app", "-m", str(ckpt),
                                                          "--port", str(port)]
    proc = subprocess.Popen(cmd, env=_child_env(), stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 300:
        if proc.poll() is not None:
            raise RuntimeError(f"ecgnat app exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return proc, url, time.monotonic() - t0
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("ecgnat app did not answer in 300 s")


def _through_page(page, url: str, files: list[Path], record_id: str, timeout_s: float) -> dict:
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("#analyse", timeout=60_000)
    t0 = time.monotonic()
    page.set_input_files("#upload input[type=file]", [str(f) for f in files])
    # the upload is done when the page lists the files with their size
    page.wait_for_function(r"(n) => (document.querySelector('#upload').innerText.match(/\d+(\.\d+)?\s?[KMG]?B\b/g) || []).length >= n",
                           arg=len(files), timeout=timeout_s * 1000)
    t_uploaded = time.monotonic()
    page.click("#analyse")
    page.wait_for_function(
        "(t) => document.querySelector('#status').innerText.includes(t) || "
        "document.querySelector('#status').innerText.includes('Could not analyse')",
        arg=f"Record {record_id}:", timeout=timeout_s * 1000)
    page.wait_for_function(  # the figures are drawn in the browser
        "() => [...document.querySelectorAll('#printout img, #attention img')].filter(i => i.complete && "
        "i.naturalWidth > 0).length >= 2", timeout=timeout_s * 1000)
    t1 = time.monotonic()
    status = page.inner_text("#status")
    if "Could not analyse" in status:
        raise RuntimeError(status)
    m = re.search(r"Analysed in ([0-9.]+) s", status)
    return {"upload_to_results_s": t1 - t0, "upload_s": t_uploaded - t0, "click_to_results_s": t1 - t_uploaded,
            "server_analysis_s": float(m.group(1)) if m else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default=None, help="folder for the records and checkpoint (default: a temporary one)")
    parser.add_argument("--skip_holter", action="store_true", help="only the 10 s record")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the 10 s record (the median is reported)")
    parser.add_argument("--nice", type=int, default=10, help="niceness of the app and predict (default: 10)")
    parser.add_argument("--skip_baseline", action="store_true",
                        help="no ecgnat predict baseline (it scores with torch's OpenMP threads, which take many "
                             "times longer than the app on a busy machine: benchmarks/app_long_record.py)")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).is_file():
        print(f"{CHROMIUM} is missing: apt-get install -y chromium", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    from ecgnat_hf.sample_data import sample_dir

    bench = _streaming_module()
    work = Path(args.work or tempfile.mkdtemp(prefix="ecgnat-bench-app-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = bench.make_checkpoint(work / "ckpt")
    records = {"12lead_10s_100Hz": (sample_dir() / "records100" / "00000" / "00010_lr", "00010_lr")}
    hr = SHARED / "ptbxl-subset" / "records500" / "00000" / "00010_hr"
    if hr.with_suffix(".hea").is_file():
        records["12lead_10s_500Hz"] = (hr, "00010_hr")
    if not args.skip_holter:
        holter = work / "holter24h"
        if not holter.with_suffix(".hea").is_file():
            print("building the 24 h 2-lead record from real recordings ...", flush=True)
            bench.write_wfdb(holter, bench.real_block(), 24 * 3600, ["MLII", "V5"])
        records["holter_24h_2lead"] = (holter, "holter24h")
    print(f"load average before: {os.getloadavg()[0]:.2f} (2-core machine shared with other work)", flush=True)

    results = {}
    proc, url, startup = _start_app(ckpt, args.nice, work / "app.log")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for name, (rec, rid) in records.items():
                files = [rec.with_suffix(".hea"), rec.with_suffix(".dat")]
                repeats = args.repeats if "10s" in name else 1
                runs = [_through_page(page, url, files, rid, 900) for _ in range(repeats)]
                runs.sort(key=lambda r: r["upload_to_results_s"])
                results[name] = runs[len(runs) // 2]
                results[name]["runs"] = [round(r["upload_to_results_s"], 2) for r in runs]
                print(f"{name}: {results[name]}", flush=True)
            browser.close()
        peak = _peak_rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    if not args.skip_baseline:
        print("baseline: ecgnat predict on the same records, same window plan ...", flush=True)
    for name, (rec, rid) in records.items():
        if args.skip_baseline:
            results[name].update(predict_wall_s=float("nan"), predict_loop_s=None, predict_peak_rss_mib=float("nan"))
            continue
        out = work / f"predict_{name}"
        out.mkdir(exist_ok=True)
        stride = 10 if "holter" in name else None
        r = bench.measure(bench.predict_cmd(rec, ckpt, out, None, args.nice, stride_s=stride), env=_child_env())
        results[name]["predict_wall_s"] = r["wall_s"]
        results[name]["predict_loop_s"] = bench.scoring_seconds(r["output"])
        results[name]["predict_peak_rss_mib"] = r["peak_rss_mib"]

    print(f"\nload average after: {os.getloadavg()[0]:.2f}; app start-up (to the first answer): {startup:.1f} s")
    print(f"{'record':<20} {'upload->results':>16} {'(upload)':>9} {'server':>8} {'predict cmd':>12} {'predict loop':>13}"
          f" {'app/predict loop':>17}")
    for name, r in results.items():
        loop = r["predict_loop_s"]
        ratio = f"{r['server_analysis_s'] / loop:.2f}x" if loop and r["server_analysis_s"] else "n/a"
        print(f"{name:<20} {r['upload_to_results_s']:>15.2f}s {r['upload_s']:>8.2f}s {r['server_analysis_s']:>7.2f}s "
              f"{r['predict_wall_s']:>11.1f}s {loop if loop is not None else float('nan'):>12.2f}s {ratio:>17}")
    print(f"app peak memory (VmHWM of the server after all records): {peak:.0f} MiB "
          + ("" if args.skip_baseline else
             f"(ecgnat predict alone: {max(r['predict_peak_rss_mib'] for r in results.values()):.0f} MiB)"))
    targets = {"12lead_10s_100Hz": 2.0, "12lead_10s_500Hz": 2.0, "holter_24h_2lead": 60.0}
    for name, r in results.items():
        t = targets.get(name)
        print(f"target {name}: under {t:g} s -> {'met' if r['upload_to_results_s'] < t else 'NOT met'} "
              f"({r['upload_to_results_s']:.2f} s)")
    print(f"target peak memory: under 1536 MiB -> {'met' if peak < 1536 else 'NOT met'} ({peak:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
