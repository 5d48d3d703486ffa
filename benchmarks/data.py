"""Data preparation speed: PTB-XL subset from WFDB into Arrow with the PTBXL builder.

Prints records/s for the builder (read + label + encode + write Arrow) at 100 Hz and 500 Hz, and a
baseline measured in the same run: a plain ``wfdb.rdrecord`` loop over the same records that writes
nothing. Ratio > 1 means the builder, despite also writing Arrow, is faster than just reading with
wfdb. Target: >= 300 records/s at 100 Hz on 2 cores.

    python benchmarks/data.py [--data-dir ../shared/data/ptbxl-subset] [--repeats 3]
"""

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[1]


def bench_wfdb(root: Path, files: list[str]) -> float:
    import wfdb

    t = time.perf_counter()
    for f in files:
        wfdb.rdrecord(str(root / f))
    return len(files) / (time.perf_counter() - t)


def bench_builder(root: Path, rate: int) -> tuple[float, int]:
    from ecgnat_hf.data.builders import PTBXL

    cache = tempfile.mkdtemp(prefix="ecgnat-bench-")
    try:
        t = time.perf_counter()
        b = PTBXL(config_name="all", data_dir=str(root), sampling_rate=rate, cache_dir=cache)
        b.download_and_prepare()
        dt = time.perf_counter() - t
        n = sum(d.num_rows for d in b.as_dataset().values())
        assert not b.skipped, b.skipped
        return n / dt, n
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "ptbxl-subset"))
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    logging.disable(logging.WARNING)
    import datasets

    datasets.disable_progress_bars()
    import pandas as pd

    root = Path(args.data_dir)
    db = pd.read_csv(root / "ptbxl_database.csv")
    print(f"PTB-XL subset at {root}: {len(db)} records; best of {args.repeats} runs")
    print(f"{'rate':>6} {'wfdb.rdrecord (rec/s)':>22} {'PTBXL builder -> Arrow (rec/s)':>31} {'ratio':>7}")
    for rate, col in ((100, "filename_lr"), (500, "filename_hr")):
        files = list(db[col])
        base = max(bench_wfdb(root, files) for _ in range(args.repeats))
        runs = [bench_builder(root, rate) for _ in range(args.repeats)]
        best = max(r[0] for r in runs)
        print(f"{rate:>4}Hz {base:>22.0f} {best:>31.0f} {best / base:>7.2f}x   ({runs[0][1]} records written)")


if __name__ == "__main__":
    main()
