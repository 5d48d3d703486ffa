"""A prepared store (:mod:`ecgnat_hf.data.store`) read from another filesystem through ``fsspec``, for stores
larger than local disk: ``hf://datasets/ORG/NAME/PATH`` (``huggingface_hub.HfFileSystem``), ``s3://``, ``gs://``,
a network mount, or a plain local folder (read as if remote).

* :class:`RemoteECGStore` fetches only ``manifest.json`` and ``index.parquet`` at start (into
  ``CACHE/<store key>/meta-<manifest hash>/``); it is an :class:`~ecgnat_hf.data.store.ECGStore` whose shards
  are fetched on demand. Each fetched shard is checked against the manifest (size, then sha256, computed while
  downloading); a mismatch deletes the download and raises :class:`StoreChecksumError` naming the shard.
* Nothing is listed: the shard names come from the manifest, so a store served by a plain web server
  (``http://``, ``https://``: no directory listing) is read like any other.
* Network faults are bounded. A fetch that fails for a reason that may pass (refused or dropped connection,
  timeout, HTTP 5xx / 408 / 429) is tried again ``retries`` times with a doubling pause; then
  :class:`StoreFetchError` names the file's URL (and shard). A file that is not there (HTTP 404, no such key) is
  :class:`StoreFileMissingError` at once. Over ``http(s)://`` a connection or a read that stalls for
  ``timeout_s`` seconds fails (``aiohttp`` socket timeouts), so a server that goes away never hangs a reader.
* :class:`ShardCache` bounds the local copy: the sum of the sizes of every file under the cache folder (all
  stores in it, indexes and partial downloads included) never exceeds ``cap_bytes``.

  - A download first *reserves* its full size: the partial file is created at its final size (sparse) under
    the cache lock, evicting least-recently-used shards until it fits.
  - A shard in use is *leased*: its reader holds a shared ``flock`` on it. Eviction takes an exclusive
    non-blocking ``flock`` first, so a shard that any process (rank, DataLoader worker) is reading is
    never deleted. With every shard leased and no room, a reader waits (``wait_s``), then raises
    :class:`StoreCacheFullError` saying how large the cap must be.
  - Readers on one machine share the folder; the cache lock (``CACHE/.lock``) is an ``flock`` too, released by
    the kernel if a reader dies, and a partial download left by a dead reader is removed by the next one.
  - ``CACHE/.peak_bytes`` records the largest total ever reserved (what ``benchmarks/scale.py`` reports).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path

from .store import INDEX, MANIFEST, ECGStore, StoreError

logger = logging.getLogger(__name__)

__all__ = ["RemoteECGStore", "ShardCache", "StoreChecksumError", "StoreCacheFullError", "StoreFetchError",
           "StoreFileMissingError", "is_remote_url", "default_cache_dir"]

_LOCK = ".lock"
_PEAK = ".peak_bytes"
_BLOCK = 4 << 20


class StoreChecksumError(StoreError):
    """A fetched shard does not have the size or sha256 that the store's manifest states."""


class StoreCacheFullError(StoreError):
    """The local shard cache has no room: every cached shard is being read and the cap is too small."""


class StoreFetchError(StoreError):
    """A file of a remote store could not be fetched (server unreachable, timed out or refusing), after retries."""


class StoreFileMissingError(StoreFetchError):
    """A file of a remote store (its manifest, its index or a shard the manifest lists) is not at its URL."""


_HTTP = ("http", "https")


def _network_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure of the transfer (I/O, network, HTTP status), as opposed to a bug."""
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    for mod, names in (("aiohttp", ("ClientError",)), ("httpx", ("HTTPError",)), ("requests", ("RequestException",))):
        m = sys.modules.get(mod)  # only libraries already in use can have raised it
        if m is not None and any(isinstance(exc, getattr(m, n, ())) for n in names):
            return True
    return False


def _http_status(exc: BaseException) -> int | None:
    for e in (exc, exc.__cause__):
        status = getattr(e, "status", None) or getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
    return None


def _missing(exc: BaseException) -> bool:
    """A file that is not there (retrying will not help)."""
    status = _http_status(exc)
    if status is not None:
        return status in (404, 410)
    if isinstance(exc, FileNotFoundError):
        # fsspec's HTTP size query turns every failure into FileNotFoundError; its cause tells a 404 from a fault
        return exc.__cause__ is None or not _network_error(exc.__cause__)
    return False


def _transient(exc: BaseException) -> bool:
    """A failure that may pass if the fetch is tried again."""
    status = _http_status(exc)
    if status is not None:
        return status >= 500 or status in (408, 429)
    if isinstance(exc, (PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(exc, FileNotFoundError):
        return not _missing(exc)
    return _network_error(exc)


def _check_index(url: str, manifest_raw: bytes, path: Path) -> None:
    """The fetched index against the manifest's sha256 of it (stores prepared before it was recorded: unchecked)."""
    want = (json.loads(manifest_raw).get("index") or {}).get("sha256")
    if want is None:
        return
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != want:
        raise StoreChecksumError(f"{url}/{INDEX}: sha256 {h.hexdigest()[:16]}..., the manifest states {want[:16]}...; "
                                 "the store's index was changed or corrupted")


def is_remote_url(path) -> bool:
    """Whether ``path`` is an fsspec URL (``hf://``, ``s3://``, ``file://``...) rather than a plain local path."""
    return "://" in str(path)


def default_cache_dir() -> Path:
    """The streaming shard cache: ``$ECGNAT_STREAM_CACHE``, else ``$XDG_CACHE_HOME/ecgnat_hf/stream`` (``~/.cache``)."""
    base = os.environ.get("ECGNAT_STREAM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ecgnat_hf", "stream")
    return Path(base)


def _url(path) -> str:
    s = str(path)
    return s if is_remote_url(s) else "file://" + str(Path(s).resolve())


class _FileLock:
    """``flock`` on a file for the duration of a ``with`` block (exclusive by default)."""

    def __init__(self, path: Path, shared: bool = False):
        self.path, self.shared, self.fd = path, shared, None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def _try_lock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


class ShardCache:
    """A local folder of fetched shards whose total size never exceeds ``cap_bytes``.

    Args:
        folder: the cache folder (created); several stores and several processes may share it.
        cap_bytes: the most bytes the folder may hold.
        wait_s: how long a reader waits for room while every cached shard is leased by other readers.
    """

    def __init__(self, folder, cap_bytes: int, wait_s: float = 600.0):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.cap = int(cap_bytes)
        self.wait_s = float(wait_s)
        if self.cap <= 0:
            raise ValueError(f"the stream cache cap must be positive, got {cap_bytes} bytes")

    # -- accounting (call under the cache lock) ------------------------------------------------------------
    def used_bytes(self) -> int:
        total = 0
        for root, _, files in os.walk(self.folder):
            for f in files:
                try:
                    total += os.stat(os.path.join(root, f)).st_size
                except FileNotFoundError:
                    pass
        return total

    def peak_bytes(self) -> int:
        try:
            return int((self.folder / _PEAK).read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _note_peak(self, total: int) -> None:
        if total > self.peak_bytes():
            (self.folder / _PEAK).write_text(f"{total:>20d}")  # fixed width: the file's own size stays constant

    def lock(self) -> _FileLock:
        return _FileLock(self.folder / _LOCK)

    def _evict_one(self, keep: Path | None = None) -> int:
        """Delete the least recently used shard that no process leases; bytes freed (0: none could go)."""
        cands = []
        for root, _, files in os.walk(self.folder):
            for f in files:
                if f.endswith(".arrow") and not f.startswith("."):
                    p = Path(root) / f
                    try:
                        st = p.stat()
                    except FileNotFoundError:
                        continue
                    cands.append((st.st_mtime, str(p), st.st_size))
        for _, p, size in sorted(cands):
            if keep is not None and p == str(keep):
                continue
            fd = os.open(p, os.O_RDONLY)
            try:
                if _try_lock(fd, fcntl.LOCK_EX):
                    os.unlink(p)
                    logger.debug("stream cache: evicted %s (%d bytes)", p, size)
                    return size
            finally:
                os.close(fd)
        return 0

    def _remove_stale_parts(self, final: Path) -> bool:
        """Remove partial downloads of ``final`` left by dead readers; True if a live reader is downloading it."""
        busy = False
        for part in final.parent.glob(f".{final.name}.*.part"):
            try:
                fd = os.open(part, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                if _try_lock(fd, fcntl.LOCK_EX):
                    part.unlink(missing_ok=True)
                else:
                    busy = True
            finally:
                os.close(fd)
        return busy

    def reserve(self, nbytes: int, keep: Path | None = None, block: bool = True) -> bool:
        """Make room for ``nbytes`` more (call under the lock). False if ``block`` is off and no room can be made."""
        if nbytes > self.cap:
            raise StoreCacheFullError(f"{self.folder}: a {nbytes:,}-byte file cannot fit under the stream cache cap of "
                                      f"{self.cap:,} bytes; raise --stream_cache_gb")
        used = self.used_bytes()
        while used + nbytes > self.cap:
            freed = self._evict_one(keep)
            if not freed:
                if not block:
                    return False
                raise _NoRoom(used)
            used -= freed
        self._note_peak(used + nbytes)
        return True

    # -- leases --------------------------------------------------------------------------------------------
    def acquire(self, final: Path, size: int, fetch, block: bool = True) -> int | None:
        """A file descriptor holding a shared lease on ``final`` (fetched with ``fetch(part_fd)`` if absent).

        ``fetch`` writes the file through the given descriptor (opened read-write, already ``size`` bytes long)
        and checks it; it raises to abandon the download. ``block=False`` returns None instead of waiting for
        room or for another reader's download of the same shard."""
        final.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait_s
        while True:
            used = 0
            with self.lock():
                if final.is_file():
                    fd = os.open(final, os.O_RDONLY)
                    fcntl.flock(fd, fcntl.LOCK_SH)  # evictors need the cache lock, which we hold: cannot fail
                    os.utime(final)  # recency for LRU
                    return fd
                busy = self._remove_stale_parts(final)
                if not busy:
                    try:
                        ok = self.reserve(size, block=block)
                    except _NoRoom as nr:
                        ok, used = None, nr.used
                    if ok is False:
                        return None
                    if ok:
                        part = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
                        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                        fcntl.flock(fd, fcntl.LOCK_EX)
                        os.ftruncate(fd, size)  # the reservation: counted at its full size from now on
                        break
            if not block:
                return None
            if time.monotonic() > deadline:
                what = ("another reader's download of it" if busy else
                        f"room: the cache holds {used:,} of {self.cap:,} bytes, all in shards being read")
                raise StoreCacheFullError(
                    f"{final.name}: waited {self.wait_s:.0f} s for {what} (cache {self.folder}); the cap must hold one "
                    "shard per reader on this machine (ranks x DataLoader workers) plus the indexes: raise "
                    "--stream_cache_gb")
            time.sleep(0.05)
        try:
            fetch(fd)
        except BaseException:
            os.close(fd)
            part.unlink(missing_ok=True)
            raise
        with self.lock():
            os.replace(part, final)
            fcntl.flock(fd, fcntl.LOCK_SH)  # downgraded under the cache lock: no evictor can slip in between
        return fd

    @staticmethod
    def release(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class _NoRoom(Exception):
    def __init__(self, used: int):
        super().__init__(used)
        self.used = used


class RemoteECGStore(ECGStore):
    """A store at ``url`` (any ``fsspec`` URL or a local path), read through a bounded local :class:`ShardCache`.

    Only the manifest and the index are fetched when it is opened. :meth:`acquire` fetches a shard (verified) and
    leases it; :meth:`release` drops the lease and the memory map (the file stays cached until evicted).
    Reading a window of a shard that is not leased acquires it (blocking) and keeps it until :meth:`release`.

    Args:
        url: the store folder: ``hf://datasets/ORG/NAME/PATH``, ``s3://bucket/path``, ``https://host/path``,
            ``file:///path``, ``/path``. Nothing is listed: the files are named by the manifest.
        cache: a :class:`ShardCache` (or its folder, with ``cap_bytes``).
        storage_options: passed to ``fsspec`` (credentials, endpoint, ``client_kwargs`` for ``http(s)://``).
        timeout_s: ``http(s)://``: a connection, or a read of the response, that stalls this long fails (and is
            tried again). Other protocols use their own library's timeouts.
        retries: how many more times a fetch that failed for a passing reason (network, timeout, HTTP 5xx) is
            tried, with pauses of ``backoff_s``, doubling (at most 30 s), before :class:`StoreFetchError`.
    """

    def __init__(self, url, cache, cap_bytes: int | None = None, storage_options: dict | None = None,
                 timeout_s: float = 60.0, retries: int = 3, backoff_s: float = 1.0):
        self.url = _url(url).rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.timeout_s, self.retries, self.backoff_s = float(timeout_s), int(retries), float(backoff_s)
        if not self.timeout_s > 0 or self.retries < 0 or self.backoff_s < 0:
            raise ValueError(f"timeout_s must be positive and retries, backoff_s >= 0; got {timeout_s}, {retries}, "
                             f"{backoff_s}")
        self.cache = cache if isinstance(cache, ShardCache) else ShardCache(cache, cap_bytes or 0)
        self._fs, self._fs_pid = None, None
        self._leases: dict[int, int] = {}
        self._mutex = threading.Lock()
        key = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        self.local = self.cache.folder / key
        fs, root = self._fs_root()
        try:
            raw = self._retrying(f"{self.url}/{MANIFEST}", lambda: fs.cat_file(f"{root}/{MANIFEST}"))
        except StoreFileMissingError:
            raise StoreFileMissingError(f"{self.url}: not a prepared store: no {MANIFEST} at {self.url}/{MANIFEST} "
                                        "(run `ecgnat prepare`, and upload the whole folder)") from None
        meta = self.local / f"meta-{hashlib.sha256(raw).hexdigest()[:16]}"
        if not (meta / INDEX).is_file():
            size = int(self._retrying(f"{self.url}/{INDEX}", lambda: fs.size(f"{root}/{INDEX}")))
            with self.cache.lock():
                if not (meta / INDEX).is_file():
                    try:
                        self.cache.reserve(len(raw) + size)
                    except _NoRoom as nr:
                        raise StoreCacheFullError(f"{self.cache.folder}: no room for the index of {self.url} "
                                                  f"({nr.used:,} of {self.cache.cap:,} bytes in shards being read)") from None
                    tmp = self.local / f".meta.{uuid.uuid4().hex}.tmp"
                    tmp.mkdir(parents=True)
                    try:
                        (tmp / MANIFEST).write_bytes(raw)
                        self._retrying(f"{self.url}/{INDEX}", lambda: fs.get_file(f"{root}/{INDEX}", str(tmp / INDEX)))
                        _check_index(self.url, raw, tmp / INDEX)
                    except BaseException:
                        shutil.rmtree(tmp, ignore_errors=True)
                        raise
                    for old in self.local.glob("meta-*"):  # an older version of this store: its index is stale
                        shutil.rmtree(old, ignore_errors=True)
                    os.replace(tmp, meta)
        super().__init__(meta)
        self.path = meta
        self.shard_info = list(self.manifest["shards"])
        self._files = [self.local / "shards" / f"{Path(s['file']).stem}.{s['sha256'][:16]}.arrow" for s in self.shard_info]

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0].lower()

    def _fs_root(self):
        # a forked DataLoader worker inherits the parent's filesystem object without pickling; fsspec's async ones
        # (http, s3, gcs) refuse to run after a fork: every process opens its own
        if self._fs is None or self._fs_pid != os.getpid():
            import fsspec

            opts = dict(self.storage_options)
            if self.protocol in _HTTP:  # aiohttp's default waits 5 minutes for a whole response, then fails
                try:
                    import aiohttp
                except ImportError:
                    raise ImportError(f"{self.url}: reading a store over {self.protocol}:// needs aiohttp: "
                                      "pip install 'ecgnat-hf[stream]'") from None

                ck = dict(opts.get("client_kwargs") or {})
                ck.setdefault("timeout", aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s,
                                                               sock_read=self.timeout_s))
                opts["client_kwargs"] = ck
            self._fs, self._root = fsspec.core.url_to_fs(self.url, **opts)
            self._fs_pid = os.getpid()
        return self._fs, self._root.rstrip("/")

    def _retrying(self, what: str, fn, shard: int | None = None):
        """``fn()``, tried again on passing failures; a typed :class:`StoreFetchError` naming ``what`` when it gives up."""
        where = f" (shard {shard})" if shard is not None else ""
        t0, pause = time.monotonic(), self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except StoreError:
                raise
            except Exception as exc:
                if not _network_error(exc) and _http_status(exc) is None:
                    raise
                reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
                if _missing(exc):
                    raise StoreFileMissingError(f"{what}: not found{where} ({reason}); the store at {self.url} is "
                                                "incomplete or was moved: upload the whole folder") from exc
                if not _transient(exc) or attempt == self.retries:
                    n = attempt + 1
                    raise StoreFetchError(f"{what}: fetch failed{where} after {n} attempt{'s' * (n > 1)} in "
                                          f"{time.monotonic() - t0:.1f} s ({reason}); is the server at {self.url} "
                                          "reachable?") from exc
                logger.warning("%s: %s%s; trying again in %.1f s (%d of %d)", what, reason, where, pause, attempt + 1,
                               self.retries)
                time.sleep(pause)
                pause = min(30.0, 2 * pause)

    def __getstate__(self):
        d = super().__getstate__()
        d["_fs"] = None  # every process opens its own connection
        d["_leases"] = {}
        d["_mutex"] = None
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._mutex = threading.Lock()

    def shard_url(self, k: int) -> str:
        return f"{self.url}/{self.shard_info[k]['file']}"

    def _fetch(self, k: int, fd: int) -> None:
        self._retrying(self.shard_url(k), lambda: self._fetch_once(k, fd), shard=k)
        os.fsync(fd)

    def _fetch_once(self, k: int, fd: int) -> None:
        info = self.shard_info[k]
        fs, root = self._fs_root()
        h = hashlib.sha256()
        n = 0
        path = f"{root}/{info['file']}"
        # http(s): one streamed GET per shard (no HEAD, no range requests: any web server will do)
        src = (fs.open(path, "rb", block_size=0, size=int(info["bytes"])) if self.protocol in _HTTP
               else fs.open(path, "rb", block_size=_BLOCK))
        with src:
            while True:
                block = src.read(_BLOCK)
                if not block:
                    break
                if n + len(block) > info["bytes"]:
                    raise StoreChecksumError(f"{self.shard_url(k)}: larger than the {info['bytes']:,} bytes the "
                                             f"manifest states (shard {k}); the store was changed or corrupted")
                os.pwrite(fd, block, n)
                h.update(block)
                n += len(block)
        if n != info["bytes"]:
            raise StoreChecksumError(f"{self.shard_url(k)}: {n:,} bytes, the manifest states {info['bytes']:,} "
                                     f"(shard {k}); the store was changed or corrupted")
        if h.hexdigest() != info["sha256"]:
            raise StoreChecksumError(f"{self.shard_url(k)}: sha256 {h.hexdigest()[:16]}..., the manifest states "
                                     f"{info['sha256'][:16]}... (shard {k}); the store was changed or corrupted")

    def acquire(self, k: int, block: bool = True) -> bool:
        """Fetch (if needed) and lease shard ``k``; False if ``block`` is off and it cannot be had at once."""
        with self._mutex:
            if k in self._leases:
                return True
        fd = self.cache.acquire(self._files[k], int(self.shard_info[k]["bytes"]), lambda f: self._fetch(k, f), block)
        if fd is None:
            return False
        with self._mutex:
            if k in self._leases:  # leased meanwhile by another thread of this process
                ShardCache.release(fd)
            else:
                self._leases[k] = fd
        return True

    def release(self, k: int) -> None:
        with self._mutex:
            self._maps.pop(k, None)
            fd = self._leases.pop(k, None)
        if fd is not None:
            ShardCache.release(fd)

    def release_all(self) -> None:
        for k in list(self._leases):
            self.release(k)

    def _shard(self, k: int):
        if k not in self._leases:
            self.acquire(k)
        return super()._shard(k)
