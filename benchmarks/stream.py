"""Streaming a store (``--streaming``) against reading it memory-mapped, in the same run.

For one store, the same DataLoader set-up (``--workers`` workers, batches of ``--batch``, the pretraining
collator, tiny-preset 10 s windows) reads ``--epochs`` full epochs of the training records:

* **baseline**: the memory-mapped map-style ``StoreWindows`` on the local store (``--dataset store``);
* **streaming**: ``StreamingStoreWindows`` on the same store read as a remote (``file://`` through fsspec),
  with a local cache capped at ``--cap_fraction`` of the store's shard bytes, so shards are fetched, verified
  (sha256) and evicted all along. Epoch 0 starts with an empty cache.
* **streaming over HTTP** (``--http``): the same, from ``http://127.0.0.1:PORT/<store>``, served by
  ``python -m http.server`` in a separate process (the standard library's threaded web server; no directory
  listing is used, every file is named by the manifest). Its cache has the same cap, in its own folder.

It prints windows/s per epoch, the ratio streaming / memory-mapped, and the cache's peak bytes against its cap
(the cache's own record and a folder walk every 5 ms under the cache lock). Without ``--store``, the bundled
PTB-XL sample (434 records) is prepared first (100 Hz, ``--records_per_shard``); ``--replicate K`` reads K
hard-linked copies of its shards as one store.

    python benchmarks/stream.py --work /tmp/ecgnat-stream --replicate 10
    python benchmarks/stream.py --work /tmp/ecgnat-stream --replicate 10 --http
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def _epoch_rate(loader, epoch: int) -> tuple[float, int]:
    ds = loader.dataset
    if hasattr(ds, "set_epoch"):
        ds.set_epoch(epoch)
    t = time.perf_counter()
    n = sum(b["input_values"].shape[0] for b in loader)
    return n / (time.perf_counter() - t), n


class _Watch(threading.Thread):
    def __init__(self, cache):
        super().__init__(daemon=True)
        self.cache, self.peak, self.stop = cache, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            with self.cache.lock():
                self.peak = max(self.peak, self.cache.used_bytes())
            time.sleep(0.005)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default=None, help="an existing store (its extractor must be the tiny preset's)")
    p.add_argument("--work", default="/tmp/ecgnat-stream")
    p.add_argument("--records_per_shard", type=int, default=25)
    p.add_argument("--replicate", type=int, default=1,
                   help="read K hard-linked copies of the store's shards (benchmarks/scale.py replicate_store)")
    p.add_argument("--cap_fraction", type=float, default=0.3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--http", action="store_true",
                   help="also stream the store over HTTP from 127.0.0.1 (python -m http.server in a subprocess)")
    p.add_argument("--results", default=None, help="write the figures to this JSON file")
    a = p.parse_args(argv)

    import torch

    from ecgnat_hf.models.ecgnat.feature_extraction_ecgnat import ECGNATFeatureExtractor
    from ecgnat_hf.recipes.pretrain import _PretrainCollator
    from ecgnat_hf.training.store_data import StoreWindows, open_store
    from ecgnat_hf.training.store_stream import StreamingStoreWindows, _EpochLoader, open_remote_stores

    work = Path(a.work)
    fe = ECGNATFeatureExtractor(sampling_rate=100, window_s=10.0, scaling="center")
    store = Path(a.store) if a.store else work / "store"
    if not a.store and not (store / "manifest.json").is_file():
        from ecgnat_hf.data.store import prepare_store
        from ecgnat_hf.training.arguments import DataArguments

        prepare_store(DataArguments(dataset="sample"), fe, store, records_per_shard=a.records_per_shard,
                      progress=False, command="benchmarks/stream.py")
    if a.replicate > 1:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from scale import replicate_store

        big = work / f"store-x{a.replicate}"
        replicate_store(store, big, a.replicate)
        store = big
    manifest = json.loads((store / "manifest.json").read_text())
    shard_bytes = sum(s["bytes"] for s in manifest["shards"])
    cap = int(a.cap_fraction * shard_bytes)
    cache_dir = work / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    collate = _PretrainCollator()
    kw = dict(batch_size=a.batch, num_workers=a.workers, collate_fn=collate)

    st = open_store(store)
    mm = torch.utils.data.DataLoader(StoreWindows([st], [st.indices(["train"])], fe, seed=0), shuffle=True, **kw)
    urls = {"file": "file://" + str(store.resolve())}
    server = None
    if a.http:
        server = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory",
                                   str(store.resolve().parent)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True)
        port = int(re.search(r"port (\d+)", server.stdout.readline()).group(1))
        urls["http"] = f"http://127.0.0.1:{port}/{store.resolve().name}"
    try:
        streams, watches = {}, {}
        for name, url in urls.items():
            (rst,) = open_remote_stores([url], cache_dir / name, cap / 1e9)
            sds = StreamingStoreWindows([rst], [rst.indices(["train"])], fe, seed=0)
            sds.distribute(0, 1, a.batch)
            streams[name] = (rst, _EpochLoader(sds, **kw))
            watches[name] = _Watch(rst.cache)
            watches[name].start()
        rows = []
        for e in range(a.epochs):
            r_mm, n = _epoch_rate(mm, e)
            row = {"epoch": e, "records": n, "mmap_windows_per_s": r_mm}
            line = f"epoch {e}: {n} records; memory-mapped {r_mm:,.0f} windows/s"
            for name, (_, loader) in streams.items():
                r, n2 = _epoch_rate(loader, e)
                assert n == n2, (name, n, n2)
                key = "stream" if name == "file" else name
                row[f"{key}_windows_per_s"], row[f"{key}_ratio"] = r, r / r_mm
                line += f", streaming {name}:// {r:,.0f} windows/s ({r / r_mm:.2f}x)"
            row["ratio"] = row["stream_ratio"]
            rows.append(row)
            print(line, flush=True)
    finally:
        for w in watches.values():
            w.stop.set()
            w.join()
        if server is not None:
            server.kill()
            server.wait()
    rst = streams["file"][0]
    out = {"store": str(store), "n_shards": len(manifest["shards"]), "shard_bytes": shard_bytes, "cap_bytes": cap,
           "peak_cache_bytes_recorded": rst.cache.peak_bytes(), "peak_cache_bytes_watched": watches["file"].peak,
           "workers": a.workers, "batch": a.batch, "epochs": rows}
    for name, (r, _) in streams.items():
        out[f"peak_cache_bytes_{name}"] = {"recorded": r.cache.peak_bytes(), "watched": watches[name].peak}
        print(f"store: {len(manifest['shards'])} shards, {shard_bytes:,} bytes; {name}:// cache cap {cap:,} bytes; peak "
              f"cache {r.cache.peak_bytes():,} bytes recorded, {watches[name].peak:,} watched "
              f"({max(r.cache.peak_bytes(), watches[name].peak) / cap:.3f} of the cap)")
    if a.results:
        Path(a.results).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
