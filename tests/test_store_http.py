"""Streaming a prepared store over a real network protocol: HTTP from 127.0.0.1 (no internet needed).

The store is served by the standard library's web server (``http.server``), in a thread of the test process or
as a separate process (``python -m http.server``, for a server that dies). The served folder allows no directory
listing, as on most web servers and object stores: the reader must find every file from ``manifest.json``.
Faults are made on the server side: altered shard bytes, a missing shard, a missing manifest, a server that stops
answering mid-response, and a server process killed mid-run. Each must be a typed error naming the URL, quickly."""
from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from test_store_stream import _DiskWatch, _fe, _shard_bytes, store  # noqa: F401 (store: the module's fixture)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Files of the served folder; no directory listings; paths in ``server.stall`` send half their body, then
    stop answering (until the server stops); paths in ``server.mute`` send nothing at all."""

    def log_message(self, fmt, *args):  # quiet; requests are kept in server.log instead
        pass

    def log_request(self, code="-", size="-"):
        self.server.log.append((self.command, self.path.split("?")[0], int(getattr(code, "value", code))))

    def list_directory(self, path):
        self.send_error(404, "no directory listing")
        return None

    def do_HEAD(self):
        if self.server.token and self.headers.get("Authorization") != f"Bearer {self.server.token}":
            return self.send_error(401, "token needed")
        super().do_HEAD()

    def do_GET(self):
        path = self.path.split("?")[0]
        if self.server.token and self.headers.get("Authorization") != f"Bearer {self.server.token}":
            return self.send_error(401, "token needed")
        if path in self.server.mute:
            self.server.log.append(("GET", path, 0))
            self.server.release.wait(30)
            return
        if path in self.server.stall:
            data = Path(self.translate_path(path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.server.release.wait(30)
            return
        super().do_GET()


class _Server:
    """A real HTTP server on 127.0.0.1, ephemeral port, serving ``root`` from a background thread."""

    def __init__(self, root: Path):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
        self.httpd.daemon_threads = True
        self.httpd.log, self.httpd.stall, self.httpd.mute, self.httpd.token = [], set(), set(), None
        self.httpd.release = threading.Event()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._t = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._t.start()

    def stop(self):
        self.httpd.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._t.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


@pytest.fixture
def served(store, tmp_path):
    """A copy of the store at ``<server>/store`` (the tests may alter it), and the server."""
    root = tmp_path / "www"
    shutil.copytree(store, root / "store")
    with _Server(root) as srv:
        yield srv, root / "store"


def _manifest(store: Path) -> dict:
    return json.loads((store / "manifest.json").read_text())


def test_http_store_reads_the_records_of_the_memory_mapped_store_under_the_cap(served, store, tmp_path):
    """Every record fetched over HTTP equals the memory-mapped store's; 2 DataLoader workers stream the same
    batches (records, crops) as from file://; the cache stays under its cap of 3 of the 11 shards; only files the
    manifest names are requested (no listing)."""
    import torch

    from ecgnat_hf.data.store import ECGStore
    from ecgnat_hf.training.store_stream import StreamingStoreWindows, open_remote_stores

    srv, _ = served
    cap = 3 * max(_shard_bytes(store)) + 20_000
    cache = tmp_path / "cache"
    with _DiskWatch(cache) as watch:
        (st,) = open_remote_stores([f"{srv.url}/store"], cache, cap / 1e9)
        mm = ECGStore(store)
        for i in range(len(mm)):  # the shards in store order, each fetched once, evicting as it goes
            assert np.array_equal(st.signal(i), mm.signal(i)), i
            if i + 1 == len(mm) or mm.shard[i + 1] != mm.shard[i]:
                st.release(int(mm.shard[i]))
        # the training stream from 2 workers over HTTP is the file:// stream, batch for batch
        (local,) = open_remote_stores(["file://" + str(store)], tmp_path / "cache-file", cap / 1e9)
        batches = {}
        for name, s in (("http", st), ("file", local)):
            ds = StreamingStoreWindows([s], [s.indices(["train"])], _fe(), with_ids=True, seed=3)
            ds.set_epoch(1)
            ds.distribute(0, 1, 4)
            batches[name] = list(torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2))
    assert [b["index"].tolist() for b in batches["http"]] == [b["index"].tolist() for b in batches["file"]]
    assert sum(len(b["index"]) for b in batches["http"]) == len(st.indices(["train"])) == 42
    assert all(torch.equal(a["input_values"], b["input_values"]) for a, b in zip(batches["http"], batches["file"]))
    assert 0 < watch.peak <= cap and 0 < st.cache.peak_bytes() <= cap and st.cache.used_bytes() <= cap
    assert 0 < len(list(cache.rglob("*.arrow"))) < 11  # shards were evicted to stay under the cap
    files = {"/store/manifest.json", "/store/index.parquet"} | {f"/store/{s['file']}" for s in _manifest(store)["shards"]}
    asked = {p for _, p, _ in srv.httpd.log}
    assert asked <= files and {f"/store/{s['file']}" for s in _manifest(store)["shards"]} <= asked
    assert all(code == 200 for _, _, code in srv.httpd.log)
    # one GET per shard fetch, none to list, no range requests needed (http.server ignores ranges)
    assert {m for m, _, _ in srv.httpd.log} <= {"GET", "HEAD"}


def test_http_faults_are_typed_errors_naming_the_url(served, tmp_path):
    """Altered bytes: StoreChecksumError; a shard that 404s: StoreFileMissingError, at once (not retried), also
    from a DataLoader worker; no manifest at the URL: StoreFileMissingError; nothing partial stays cached. A
    server that needs a token: StoreFetchError (HTTP 401) at once, and headers in storage_options pass it."""
    import torch

    from ecgnat_hf.data.remote_store import RemoteECGStore, StoreChecksumError, StoreFetchError, StoreFileMissingError
    from ecgnat_hf.training.store_stream import StreamingStoreWindows, open_remote_stores

    srv, root = served
    shards = _manifest(root)["shards"]
    bad, gone = shards[2]["file"], shards[3]["file"]
    data = bytearray((root / bad).read_bytes())
    data[len(data) // 3] ^= 0x01
    (root / bad).write_bytes(bytes(data))  # same size, one bit flipped
    (root / gone).unlink()
    cache = tmp_path / "cache"
    st = RemoteECGStore(f"{srv.url}/store", cache, cap_bytes=10**7, retries=3, backoff_s=1.0)
    assert st.acquire(0)
    st.release(0)
    with pytest.raises(StoreChecksumError, match=rf"{re.escape(srv.url)}/store/{bad}: sha256 .*shard 2\)"):
        st.acquire(2)
    t = time.monotonic()
    with pytest.raises(StoreFileMissingError, match=rf"{re.escape(srv.url)}/store/{gone}: not found \(shard 3\)"):
        st.acquire(3)
    assert time.monotonic() - t < 1.0  # a 404 is final: no pauses of 1 + 2 + 4 s
    assert not [p for p in cache.rglob("*") if "00002" in p.name or "00003" in p.name]
    ds = StreamingStoreWindows([st], [np.flatnonzero(st.shard == 3)], _fe(), shuffle=False)
    ds.distribute(0, 1, 2)
    with pytest.raises(StoreFileMissingError, match=f"{gone}: not found"):  # the same type from a worker
        list(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1))
    # a URL with no store behind it
    (root.parent / "empty").mkdir()
    with pytest.raises(StoreFileMissingError, match=rf"not a prepared store: no manifest.json at {re.escape(srv.url)}"
                                                     r"/empty/manifest.json"):
        RemoteECGStore(f"{srv.url}/empty", cache, cap_bytes=10**7)
    with pytest.raises(ValueError, match="not a prepared store"):  # what `ecgnat pretrain` reports (exit code 2)
        open_remote_stores([f"{srv.url}/nothing-here"], cache, 0.01)
    # a server that wants a token: refused at once without it (401 is not retried), read with it
    srv.httpd.token = "s3cret"
    t = time.monotonic()
    with pytest.raises(StoreFetchError, match=r"manifest.json: fetch failed after 1 attempt .*401"):
        RemoteECGStore(f"{srv.url}/store", tmp_path / "cache-auth", cap_bytes=10**7, backoff_s=1.0)
    assert time.monotonic() - t < 1.0
    auth = RemoteECGStore(f"{srv.url}/store", tmp_path / "cache-auth", cap_bytes=10**7,
                          storage_options={"headers": {"Authorization": "Bearer s3cret"}})
    assert auth.acquire(0) and srv.httpd.log[-1] == ("GET", f"/store/{shards[0]['file']}", 200)


@pytest.mark.parametrize("fault", ["stall mid-body", "no answer"])
def test_a_server_that_stops_answering_times_out(served, tmp_path, fault):
    """A response that stalls (headers and half the body, then nothing; or nothing at all) fails after
    ``timeout_s`` per attempt, retried, then StoreFetchError naming the shard: no hang."""
    from ecgnat_hf.data.remote_store import RemoteECGStore, StoreFetchError

    srv, root = served
    path = f"/store/{_manifest(root)['shards'][1]['file']}"
    (srv.httpd.stall if fault == "stall mid-body" else srv.httpd.mute).add(path)
    st = RemoteECGStore(f"{srv.url}/store", tmp_path / "cache", cap_bytes=10**7, timeout_s=0.5, retries=1,
                        backoff_s=0.05)
    t = time.monotonic()
    with pytest.raises(StoreFetchError, match=rf"{re.escape(srv.url + path)}: fetch failed \(shard 1\) after 2 "
                                              r"attempts .*Timeout"):
        st.acquire(1)
    assert time.monotonic() - t < 5.0
    assert sum(1 for _, p, _ in srv.httpd.log if p == path) == 2
    assert not list((tmp_path / "cache").rglob("*.part")) and st.acquire(0)  # the rest of the store still reads


def test_server_killed_mid_run_is_a_bounded_error(store, tmp_path):
    """``python -m http.server`` (a separate process) serves the store; it is killed after the first batch of a
    DataLoader worker. Reading on raises StoreFetchError naming the next shard's URL within seconds."""
    import torch

    from ecgnat_hf.data.remote_store import StoreFetchError
    from ecgnat_hf.training.store_stream import StreamingStoreWindows, open_remote_stores

    proc = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory",
                             str(store.parent)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = int(re.search(r"port (\d+)", proc.stdout.readline()).group(1))
        (st,) = open_remote_stores([f"http://127.0.0.1:{port}/{store.name}"], tmp_path / "cache", 0.01, timeout_s=2,
                                   retries=2, backoff_s=0.1)
        ds = StreamingStoreWindows([st], [st.indices(["train"])], _fe(), shuffle=False, prefetch=False)
        ds.distribute(0, 1, 2)
        it = iter(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1))
        assert len(next(it)["input_values"]) == 2
        proc.kill()
        proc.wait()
        t = time.monotonic()
        with pytest.raises(StoreFetchError, match=rf"http://127.0.0.1:{port}/{store.name}/shards/\d+\.arrow: fetch "
                                                  r"failed \(shard \d+\) after 3 attempts .*reachable"):
            for _ in it:
                pass
        assert time.monotonic() - t < 10.0
        assert not list((tmp_path / "cache").rglob("*.part"))
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_pretrain_over_http_matches_the_file_run(store, tmp_path):
    """`ecgnat pretrain --streaming` from http://127.0.0.1:PORT/store (1 loader worker) and from file:// (no
    worker): the same losses and bit-identical weights after 3 steps; the cache stays under its cap."""
    import torch
    from transformers import AutoModel

    from ecgnat_hf.data.remote_store import ShardCache
    from ecgnat_hf.recipes.pretrain import main as pretrain

    cap_gb = (3 * max(_shard_bytes(store)) + 20_000) / 1e9
    common = ["--dataset", "store", "--streaming", "true", "--stream_cache_gb", str(cap_gb), "--preset", "tiny",
              "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8", "--logging_steps", "1",
              "--disable_tqdm", "true", "--use_cpu", "true", "--eval_strategy", "no", "--save_strategy", "no",
              "--report_to", "none", "--scaling", "center", "--max_steps", "3"]
    with _Server(store.parent) as srv:
        res_http = pretrain([*common, "--data_dir", f"{srv.url}/{store.name}", "--stream_cache_dir",
                             str(tmp_path / "c-http"), "--dataloader_num_workers", "1", "--stream_timeout_s", "20",
                             "--output_dir", str(tmp_path / "http")])
        log = list(srv.httpd.log)
    res_file = pretrain([*common, "--data_dir", "file://" + str(store), "--stream_cache_dir", str(tmp_path / "c-file"),
                         "--dataloader_num_workers", "0", "--output_dir", str(tmp_path / "file")])
    assert res_http["global_step"] == res_file["global_step"] == 3 and res_http["n_train"] == 42
    assert res_http["train_metrics"]["train_loss"] == res_file["train_metrics"]["train_loss"]
    assert res_http["eval_results"]["validation"]["loss"] == res_file["eval_results"]["validation"]["loss"]
    a = AutoModel.from_pretrained(tmp_path / "http").state_dict()
    b = AutoModel.from_pretrained(tmp_path / "file").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert 0 < ShardCache(tmp_path / "c-http", 1).peak_bytes() <= cap_gb * 1e9
    assert any(p.endswith(".arrow") for _, p, _ in log) and all(code == 200 for _, _, code in log)
