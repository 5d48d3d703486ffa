"""Streaming a prepared store from another filesystem (``--streaming``): a bounded local cache, checksums,
the per-rank / per-worker split, exact resume, and a short ``ecgnat pretrain --streaming`` run.

The "remote" is a local folder read through fsspec (``file://``) or an in-memory fsspec filesystem
(``memory://``); nothing is fetched from the network."""
from __future__ import annotations

import collections
import json
import os
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest


def _fe(window_s=4.0):
    from ecgnat_hf import ECGNATFeatureExtractor

    return ECGNATFeatureExtractor(sampling_rate=100, window_s=window_s, scaling="center")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """60 bundled PTB-XL records at 100 Hz in 11 shards of up to 6 records (42 train records in 7 shards)."""
    from ecgnat_hf.data.store import prepare_store
    from ecgnat_hf.training.arguments import DataArguments

    out = tmp_path_factory.mktemp("remote") / "sample"
    prepare_store(DataArguments(dataset="sample", max_records=60), _fe(10.0), out, records_per_shard=6,
                  progress=False, command="test")
    return out


def _shard_bytes(store: Path) -> list[int]:
    return [s["bytes"] for s in json.loads((store / "manifest.json").read_text())["shards"]]


class _DiskWatch:
    """Samples the cache folder's total file size every few ms in a thread (walking the folder itself, not the
    cache's own bookkeeping) and keeps the largest value seen. It samples under the cache lock, as a reader
    would: a directory listing taken while a download is renamed into place may list that file twice."""

    def __init__(self, folder: Path):
        self.folder, self.peak, self._stop = folder, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        from ecgnat_hf.data.remote_store import ShardCache

        lock = ShardCache(self.folder, 1).lock
        while not self._stop.is_set():
            total = 0
            with lock():
                for root, _, files in os.walk(self.folder):
                    for f in files:
                        try:
                            total += os.stat(os.path.join(root, f)).st_size
                        except FileNotFoundError:
                            pass
            self.peak = max(self.peak, total)
            time.sleep(0.003)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def _loader(ds, rank, batch=4, workers=2):
    import torch

    ds.distribute(rank, 2, batch)
    return torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers)


def test_two_ranks_two_workers_read_each_record_once_under_the_cache_cap(store, tmp_path):
    from ecgnat_hf.training.store_stream import StreamingStoreWindows, open_remote_stores

    sizes = _shard_bytes(store)
    cap = 3 * max(sizes) + 20_000  # three shards and the index; the store's shards total 11
    assert cap < sum(sizes)
    cache = tmp_path / "cache"
    (st,) = open_remote_stores(["file://" + str(store)], cache, cap / 1e9)
    train = st.indices(["train"])
    ds = StreamingStoreWindows([st], [train], _fe(), with_ids=True)
    seen, order = {}, {}
    with _DiskWatch(cache) as watch:
        for epoch in (0, 1):
            ds.set_epoch(epoch)
            for rank in (0, 1):
                batches = [b for b in _loader(ds, rank)]
                assert all(b["input_values"].shape[1:] == (12, 400) for b in batches)
                seen[epoch, rank] = [int(i) for b in batches for i in b["index"]]
                order[epoch, rank] = [b["index"].tolist() for b in batches]
    assert 0 < watch.peak <= cap and 0 < st.cache.peak_bytes() <= cap
    assert st.cache.used_bytes() <= cap
    for epoch in (0, 1):
        r0, r1 = seen[epoch, 0], seen[epoch, 1]
        # 42 records over 2 ranks: 21 each, every record once, the ranks disjoint
        assert len(r0) == len(r1) == 21
        assert sorted(r0 + r1) == sorted(train.tolist())
    assert order[0, 0] != order[1, 0]  # a new shard and record order every epoch
    # the 7 training shards were fetched, but never more than the cap allowed at once: some were evicted
    cached = list((cache).rglob("*.arrow"))
    assert 0 < len(cached) < 7


def test_uneven_split_pads_at_most_world_minus_one(store, tmp_path):
    from ecgnat_hf.training.store_stream import StreamingStoreWindows, open_remote_stores

    (st,) = open_remote_stores([str(store)], tmp_path / "cache", 0.01)
    idx = st.indices(["train"])[:41]  # 41 records over 2 ranks: one record read twice
    ds = StreamingStoreWindows([st], [idx], _fe(), with_ids=True)
    reads = [[int(i) for b in _loader(ds, r, batch=5, workers=2) for i in b["index"]] for r in (0, 1)]
    assert len(reads[0]) == len(reads[1]) == 21 and len(ds) == 21
    counts = collections.Counter(reads[0] + reads[1])
    assert set(counts) == set(idx.tolist()) and sorted(counts.values())[-2:] == [1, 2]


def test_resume_continues_with_the_same_batches(store, tmp_path):
    """Skipping the first batches (what the trainer does on resume) gives the rest of the uninterrupted epoch,
    in the same order and with the same crops."""
    from ecgnat_hf.training.store_stream import StreamingStoreWindows, open_remote_stores

    (st,) = open_remote_stores([str(store)], tmp_path / "cache", 0.01)
    ds = StreamingStoreWindows([st], [st.indices(["train"])], _fe(), with_ids=True, seed=5)
    ds.set_epoch(2)
    full = list(_loader(ds, 1, batch=3, workers=2))
    for skip in (1, 2, 5):
        ds.skip_batches(skip)
        rest = list(_loader(ds, 1, batch=3, workers=2))
        assert [b["index"].tolist() for b in rest] == [b["index"].tolist() for b in full[skip:]]
        assert all(np.array_equal(a["input_values"], b["input_values"]) for a, b in zip(rest, full[skip:]))
    # through the trainer's loader, the skip applies once (the workers took their copy)
    from ecgnat_hf.training.store_stream import _EpochLoader

    ds.skip_batches(4)
    loader = _EpochLoader(ds, batch_size=3, num_workers=2)
    assert [b["index"].tolist() for b in loader] == [b["index"].tolist() for b in full[4:]]
    assert [b["index"].tolist() for b in loader] == [b["index"].tolist() for b in full]
    ds.skip_batches(4)
    ds.set_epoch(3)  # and never past its epoch
    assert sum(len(b["index"]) for b in _loader(ds, 1, batch=3, workers=2)) == 21


def test_corrupted_shard_is_a_typed_error_naming_it(store, tmp_path):
    """A store on an in-memory fsspec filesystem with one shard altered: reading it raises StoreChecksumError
    naming that shard, and nothing of the bad download stays in the cache."""
    import fsspec

    from ecgnat_hf.data.remote_store import StoreChecksumError
    from ecgnat_hf.training.store_stream import StreamingStoreWindows, open_remote_stores

    fs = fsspec.filesystem("memory")
    root = f"/stream-test-{uuid.uuid4().hex[:8]}"
    try:
        for p in store.rglob("*"):
            if p.is_file() and not p.name.startswith("."):
                fs.pipe_file(f"{root}/{p.relative_to(store).as_posix()}", p.read_bytes())
        manifest = json.loads((store / "manifest.json").read_text())
        bad = manifest["shards"][2]["file"]
        data = bytearray(fs.cat_file(f"{root}/{bad}"))
        data[len(data) // 2] ^= 0xFF
        fs.pipe_file(f"{root}/{bad}", bytes(data))
        cache = tmp_path / "cache"
        (st,) = open_remote_stores([f"memory://{root}"], cache, 0.01)
        assert st.acquire(0)  # an intact shard reads fine
        st.release(0)
        with pytest.raises(StoreChecksumError, match=rf"{bad}: sha256 .*shard 2\)"):
            st.acquire(2)
        assert not [p for p in cache.rglob("*") if "00002" in p.name]  # the bad download was removed
        ds = StreamingStoreWindows([st], [np.flatnonzero(st.shard == 2)], _fe(), shuffle=False)
        ds.distribute(0, 1, 2)
        import torch

        with pytest.raises(StoreChecksumError, match=bad):  # the same type from a DataLoader worker
            list(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1))
    finally:
        fs.rm(root, recursive=True)


def test_corrupted_index_is_a_typed_error_and_nothing_is_cached(store, tmp_path):
    """The manifest records the index's sha256; an index altered on the server is refused at open, by name."""
    import fsspec

    from ecgnat_hf.data.remote_store import RemoteECGStore, StoreChecksumError
    from ecgnat_hf.training.store_stream import open_remote_stores

    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["index"]["file"] == "index.parquet"
    assert manifest["index"]["bytes"] == (store / "index.parquet").stat().st_size
    fs = fsspec.filesystem("memory")
    root = f"/stream-index-{uuid.uuid4().hex[:8]}"
    try:
        for p in store.rglob("*"):
            if p.is_file() and not p.name.startswith("."):
                fs.pipe_file(f"{root}/{p.relative_to(store).as_posix()}", p.read_bytes())
        data = bytearray(fs.cat_file(f"{root}/index.parquet"))
        data[len(data) // 2] ^= 0xFF
        fs.pipe_file(f"{root}/index.parquet", bytes(data))
        cache = tmp_path / "cache"
        with pytest.raises(StoreChecksumError, match=r"index\.parquet: sha256 .*index was changed or corrupted"):
            RemoteECGStore(f"memory://{root}", cache / "a", cap_bytes=10**7)
        with pytest.raises(ValueError, match=r"index\.parquet: sha256"):  # the training entry point's message
            open_remote_stores([f"memory://{root}"], cache / "b", 0.01)
        assert not list(cache.rglob("index.parquet"))  # the bad index was not kept
    finally:
        fs.rm(root, recursive=True)


def test_cache_too_small_and_non_streaming_urls_are_refused(store, tmp_path):
    from ecgnat_hf.training.arguments import DataArguments
    from ecgnat_hf.training.store_data import open_store
    from ecgnat_hf.training.store_stream import open_remote_stores

    with pytest.raises(ValueError, match="largest shard"):
        open_remote_stores([str(store)], tmp_path / "c", max(_shard_bytes(store)) / 2e9)
    from ecgnat_hf.training.store_stream import StreamingStoreWindows, check_cache_room

    (st,) = open_remote_stores([str(store)], tmp_path / "c2", 3.5 * max(_shard_bytes(store)) / 1e9)
    ds = StreamingStoreWindows([st], [st.indices()], _fe())
    check_cache_room(ds, 2)
    with pytest.raises(ValueError, match="4 reader.*needs at least"):  # 2 ranks x 2 workers: would stall
        check_cache_room(ds, 4)
    with pytest.raises(ValueError, match="--streaming"):
        open_store("hf://datasets/org/ecg-store")
    with pytest.raises(ValueError, match="source_weights"):
        DataArguments(dataset="store", data_dir="x", streaming=True, extra_sources=["store:y"], source_weights="1,2")
    with pytest.raises(ValueError, match="--dataset store"):
        DataArguments(dataset="sample", streaming=True)


@pytest.mark.slow
def test_pretrain_streaming_runs_saves_and_resumes(store, tmp_path, monkeypatch):
    from transformers import AutoModel

    from ecgnat_hf.recipes.pretrain import main as pretrain
    from ecgnat_hf.training.store_stream import StreamingStoreWindows

    skips = []
    original = StreamingStoreWindows.skip_batches
    monkeypatch.setattr(StreamingStoreWindows, "skip_batches", lambda self, n: (skips.append(n), original(self, n)))

    cache = tmp_path / "cache"
    cap_gb = (3 * max(_shard_bytes(store)) + 20_000) / 1e9
    common = ["--dataset", "store", "--data_dir", "file://" + str(store), "--streaming", "true",
              "--stream_cache_dir", str(cache), "--stream_cache_gb", str(cap_gb), "--output_dir", str(tmp_path / "pre"),
              "--preset", "tiny", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8",
              "--dataloader_num_workers", "2", "--logging_steps", "1", "--disable_tqdm", "true", "--use_cpu", "true",
              "--eval_strategy", "no", "--save_strategy", "steps", "--save_steps", "2", "--report_to", "none",
              "--scaling", "center"]
    res = pretrain([*common, "--max_steps", "2"])
    assert res["global_step"] == 2 and res["n_train"] == 42 and np.isfinite(res["eval_results"]["validation"]["loss"])
    assert (tmp_path / "pre" / "checkpoint-2").is_dir()
    # resumed mid-epoch (42 records / batch 8 = 6 steps per epoch): continues from step 2 to 7, into epoch 2
    res2 = pretrain([*common, "--max_steps", "7", "--resume_from_checkpoint", str(tmp_path / "pre" / "checkpoint-2")])
    assert res2["global_step"] == 7 and skips == [2]  # the dataset skipped the 2 finished batches itself
    from ecgnat_hf.data.remote_store import ShardCache

    assert 0 < ShardCache(cache, 1).peak_bytes() <= cap_gb * 1e9
    model = AutoModel.from_pretrained(tmp_path / "pre")
    assert sum(p.numel() for p in model.parameters()) > 0
