"""Training windows streamed from stores on another filesystem (``--streaming``), shard by shard, through a
bounded local cache (:mod:`ecgnat_hf.data.remote_store`).

:class:`StreamingStoreWindows` is a ``torch`` ``IterableDataset``. Each epoch ``e``:

1. **Order.** The shards are put in a random order, drawn from ``(seed, e)``, and the records inside each
   shard are permuted, drawn from ``(seed, e, store, shard)``. Concatenated, this gives the epoch's
   sequence of all ``N`` records.
2. **Ranks.** Rank ``r`` of ``W`` reads the contiguous slice ``[r*M, (r+1)*M)`` of the sequence, with
   ``M = ceil(N / W)``. The last rank's slice wraps to the start, so every rank gets the same number of
   batches, which DDP needs. An epoch across ranks therefore sees every record once, plus at most ``W - 1``
   records a second time (none when ``W`` divides ``N``).
3. **Workers.** The rank's slice is cut into batches of ``batch_size``. Each DataLoader worker reads a
   contiguous run of whole batches: worker ``k`` gets ``ceil`` or ``floor`` of ``batches / workers``,
   the larger runs to the first workers, exactly as the DataLoader's round-robin consumes them.
4. **Reading.** Because every slice is contiguous, a reader (rank × worker) touches its own shards, plus
   at most the two it shares at its ends. It fetches one shard at a time (leased in the cache), prefetches
   the next one in a thread when the cache has room, yields a random crop per record (drawn from
   ``(seed, e, store, record)``), then releases the shard.

**Resume** (``--resume_from_checkpoint``) is exact. :class:`StreamingTrainer` does not replay the finished
batches. Instead it tells the dataset how many batches of the epoch the rank consumed, and each worker
starts after its share of them. A resumed run reads the same records with the same crops as an
uninterrupted one. Shards wholly consumed before the checkpoint are not fetched again.
"""
from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch
from transformers import Trainer

from .store_data import window_example

logger = logging.getLogger(__name__)

__all__ = ["StreamingStoreWindows", "StreamingTrainer", "open_remote_stores"]


def open_remote_stores(urls: Sequence[str], cache_dir, cache_gb: float, storage_options: dict | None = None,
                       timeout_s: float = 60.0, retries: int = 3, backoff_s: float = 1.0):
    """:class:`~ecgnat_hf.data.remote_store.RemoteECGStore` for each URL, sharing one cache of ``cache_gb`` GB
    (``timeout_s``, ``retries``, ``backoff_s``: how a failing fetch is bounded, see ``RemoteECGStore``)."""
    from ..data.remote_store import RemoteECGStore, ShardCache, default_cache_dir
    from ..data.store import StoreError

    cache = ShardCache(cache_dir or default_cache_dir(), int(float(cache_gb) * 1e9))
    out = []
    for u in urls:
        try:
            out.append(RemoteECGStore(u, cache, storage_options=storage_options, timeout_s=timeout_s, retries=retries,
                                      backoff_s=backoff_s))
        except StoreError as exc:
            raise ValueError(str(exc)) from None
    biggest = max(int(s["bytes"]) for st in out for s in st.shard_info) if out else 0
    if biggest > cache.cap:
        raise ValueError(f"--stream_cache_gb {cache_gb:g}: the largest shard is {biggest / 1e9:.3f} GB; the cache must "
                         "hold one shard per reader on this machine (ranks x DataLoader workers)")
    return out


class StreamingStoreWindows(torch.utils.data.IterableDataset):
    """One window per record of ``stores`` (restricted to ``indices``) per epoch, streamed shard by shard.

    Args:
        stores: :class:`~ecgnat_hf.data.remote_store.RemoteECGStore` objects (or any store with
            ``acquire``/``release``).
        indices: per store, the record indices to use.
        feature_extractor: the model's extractor: window length and scaling.
        random_crop: a random window per record and epoch (else the first window).
        shuffle: shuffle shards and records within shards every epoch (else store order).
        seed: seed of the order and of the crops.
        with_ids: add ``store`` and ``index`` (the record) to every example.
        prefetch: fetch the next shard in a background thread while the current one is read.
    """

    def __init__(self, stores: Sequence, indices: Sequence, feature_extractor, random_crop: bool = True,
                 shuffle: bool = True, seed: int = 0, with_ids: bool = False, prefetch: bool = True):
        self.stores = list(stores)
        self.fe = feature_extractor
        self.window = int(feature_extractor.window_length)
        self.random_crop, self.shuffle, self.seed = bool(random_crop), bool(shuffle), int(seed)
        self.with_ids, self.prefetch = bool(with_ids), bool(prefetch)
        self.groups = []  # (store, shard, record indices in row order)
        for k, (st, ix) in enumerate(zip(self.stores, indices)):
            ix = np.asarray(ix, dtype=np.int64)
            sh = st.shard[ix]
            order = np.lexsort((st.row[ix], sh))
            ix, sh = ix[order], sh[order]
            cuts = np.flatnonzero(np.diff(sh)) + 1
            for part in np.split(ix, cuts):
                if len(part):
                    self.groups.append((k, int(st.shard[part[0]]), part))
        self.num_records = int(sum(len(g[2]) for g in self.groups))
        self.epoch = 0
        self._skip = (None, 0)
        self.distribute(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), 1)

    # -- configuration ---------------------------------------------------------------------------------------
    def distribute(self, rank: int, world_size: int, batch_size: int, drop_last: bool = False) -> None:
        """Read the part of rank ``rank`` of ``world_size``, in batches of ``batch_size`` (set by the trainer)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} of {world_size}")
        self.rank, self.world_size, self.batch_size, self.drop_last = int(rank), int(world_size), int(batch_size), bool(drop_last)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if self._skip[0] != self.epoch:
            self._skip = (None, 0)

    def skip_batches(self, n: int) -> None:
        """The next iteration of the current epoch starts after its first ``n`` batches on this rank (a resumed
        run). It applies once: the next epoch, or the next iteration through the trainer's loader, reads all."""
        self._skip = (self.epoch, int(n))

    def per_rank(self) -> int:
        m = math.ceil(self.num_records / self.world_size) if self.num_records else 0
        return (m // self.batch_size) * self.batch_size if self.drop_last else m

    def __len__(self) -> int:
        """Examples this rank reads per epoch (the DataLoader's length is this over the batch size)."""
        return self.per_rank()

    # -- the epoch's plan ------------------------------------------------------------------------------------
    def epoch_sequence(self, epoch: int) -> list[tuple[int, int, np.ndarray]]:
        """The epoch's sequence of every record: ``(store, shard, records)`` in reading order."""
        if not self.shuffle:
            return list(self.groups)
        order = np.random.default_rng([self.seed, epoch, 1]).permutation(len(self.groups))
        out = []
        for g in order:
            k, s, recs = self.groups[g]
            out.append((k, s, np.random.default_rng([self.seed, epoch, 2, k, s]).permutation(recs)))
        return out

    def stream_pieces(self, epoch: int, worker: int = 0, num_workers: int = 1, skip_batches: int = 0):
        """``(store, shard, records)`` pieces that worker ``worker`` of ``num_workers`` of this rank reads in
        ``epoch``, after the first ``skip_batches`` batches of the rank (round-robin across workers)."""
        M, B, K = self.per_rank(), max(1, self.batch_size), max(1, num_workers)
        nb = math.ceil(M / B)
        counts = [nb // K + (k < nb % K) for k in range(K)]
        first = sum(counts[:worker])
        skipped = max(0, (skip_batches - worker + K - 1) // K) if skip_batches > worker else 0
        a = min(M, (first + min(skipped, counts[worker])) * B)
        b = min(M, (first + counts[worker]) * B)
        if a >= b:
            return []
        seq = self.epoch_sequence(epoch)
        ends = np.cumsum([len(r) for _, _, r in seq])
        N = int(ends[-1])
        lo, hi = self.rank * math.ceil(N / self.world_size) + a, self.rank * math.ceil(N / self.world_size) + b
        pieces = []
        while lo < hi:  # global positions, wrapping past N to the epoch's start
            g = lo % N
            j = int(np.searchsorted(ends, g, side="right"))
            start = int(ends[j - 1]) if j else 0
            take = min(int(ends[j]) - g, hi - lo)
            k, s, recs = seq[j]
            pieces.append((k, s, recs[g - start: g - start + take]))
            lo += take
        return pieces

    # -- reading ---------------------------------------------------------------------------------------------
    def _example(self, k: int, i: int) -> dict:
        st = self.stores[k]
        n = int(st.n_samples[i])
        start = 0
        if self.random_crop and n > self.window:
            start = int(np.random.default_rng([self.seed, self.epoch, k, int(i)]).integers(0, n - self.window + 1))
        out = window_example(st, i, start, self.fe, self.window)
        if self.with_ids:
            out["store"], out["index"] = k, int(i)
        return out

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, K = (info.id, info.num_workers) if info is not None else (0, 1)
        skip = self._skip[1] if self._skip[0] == self.epoch else 0  # taken now, not at the generator's first step
        self._skip = (None, 0)  # (in a worker: its own copy; the loader resets the main process's)
        # a new DataLoader starts its round-robin at worker 0: worker w continues the batches of the worker that
        # the interrupted epoch would have asked next, so the resumed batch order is the uninterrupted one
        return self._read(self.stream_pieces(self.epoch, (worker + skip) % K, K, skip))

    def _read(self, pieces):
        pool = ThreadPoolExecutor(1, thread_name_prefix="shard-prefetch") if self.prefetch else None
        held: set[tuple[int, int]] = set()
        pending = None
        try:
            for p, (k, s, recs) in enumerate(pieces):
                if pending is not None:
                    pending.result()  # the prefetch of this shard (or a failed attempt) is finished
                    pending = None
                self.stores[k].acquire(s)  # blocking: fetched (verified) now unless prefetched
                held.add((k, s))
                nxt = pieces[p + 1][:2] if p + 1 < len(pieces) else None
                if pool is not None and nxt is not None and nxt not in held:
                    pending = pool.submit(self._try_prefetch, *nxt, held)
                for i in recs:
                    yield self._example(k, int(i))
                if nxt != (k, s):
                    self.stores[k].release(s)
                    held.discard((k, s))
        finally:
            if pending is not None:
                pending.result()
            if pool is not None:
                pool.shutdown(wait=True)
            for k, s in list(held):
                self.stores[k].release(s)

    def _try_prefetch(self, k: int, s: int, held: set) -> None:
        try:
            if self.stores[k].acquire(s, block=False):
                held.add((k, s))
        except Exception as exc:  # the reader's own blocking acquire raises it again, in order
            logger.debug("prefetch of shard %d failed: %s", s, exc)


def check_cache_room(ds: StreamingStoreWindows, readers: int) -> None:
    """Every reader on this machine holds one leased shard while its batches wait to be consumed, so a cache
    smaller than ``readers`` shards could stall training (ranks waiting on each other in DDP while their readers
    wait for room): refuse it at start, with the size it needs."""
    from ..data.remote_store import ShardCache

    caches = {id(st.cache): st.cache for st in ds.stores if isinstance(getattr(st, "cache", None), ShardCache)}
    if not caches:
        return
    biggest = max(int(s["bytes"]) for st in ds.stores for s in st.shard_info)
    meta = sum(f.stat().st_size for st in ds.stores for f in st.path.iterdir() if f.is_file())
    need = readers * biggest + meta
    for cache in caches.values():
        if cache.cap < need:
            raise ValueError(f"--stream_cache_gb {cache.cap / 1e9:g}: {readers} reader(s) on this machine (ranks x "
                             f"DataLoader workers) each hold a shard of up to {biggest / 1e9:.3f} GB; the cache needs at "
                             f"least {need / 1e9:.3f} GB (more lets the next shard be prefetched)")


class _EpochLoader(torch.utils.data.DataLoader):
    """A DataLoader whose ``set_epoch`` reaches the streaming dataset (the Trainer calls it every epoch)."""

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __iter__(self):
        it = super().__iter__()  # workers (if any) hold their copy of the dataset from here on
        self.dataset._skip = (None, 0)  # a resume skips batches of its first epoch only
        return it


class StreamingTrainer(Trainer):
    """A ``Trainer`` for :class:`StreamingStoreWindows`: the dataset splits itself across ranks and workers, so
    its DataLoader does not go through ``accelerator.prepare`` (which would make every rank read every record,
    or rank 0 read all and dispatch); batches are moved to the device by the Trainer's input preparation.
    A mid-epoch resume starts the dataset after the consumed batches instead of replaying them."""

    def _stream_loader(self, ds: StreamingStoreWindows, batch_size: int, drop_last: bool = False):
        a = self.args
        ds.distribute(a.process_index, a.world_size, batch_size, drop_last)
        check_cache_room(ds, int(os.environ.get("LOCAL_WORLD_SIZE", 1)) * max(1, a.dataloader_num_workers))
        if a.dataloader_persistent_workers:
            logger.warning("--dataloader_persistent_workers is ignored with --streaming (workers restart every epoch "
                           "to read the new epoch's order)")
        kw = {}
        if a.dataloader_num_workers > 0:
            kw = dict(prefetch_factor=a.dataloader_prefetch_factor, multiprocessing_context=a.dataloader_multiprocessing_context)
        return _EpochLoader(ds, batch_size=batch_size, collate_fn=self.data_collator, num_workers=a.dataloader_num_workers,
                            pin_memory=a.dataloader_pin_memory, drop_last=False, **kw)

    def get_train_dataloader(self):
        if isinstance(self.train_dataset, StreamingStoreWindows):
            return self._stream_loader(self.train_dataset, self._train_batch_size, self.args.dataloader_drop_last)
        return super().get_train_dataloader()

    def get_eval_dataloader(self, eval_dataset=None):
        ds = self.eval_dataset[eval_dataset] if isinstance(eval_dataset, str) else (eval_dataset if eval_dataset is not None else self.eval_dataset)
        if isinstance(ds, StreamingStoreWindows):
            return self._stream_loader(ds, self.args.eval_batch_size)
        return super().get_eval_dataloader(eval_dataset)

    def get_resumed_dataloader(self, dataloader, num_batches: int):
        if isinstance(getattr(dataloader, "dataset", None), StreamingStoreWindows):
            dataloader.dataset.skip_batches(num_batches)
            return dataloader
        return super().get_resumed_dataloader(dataloader, num_batches)
