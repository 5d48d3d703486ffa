"""Training examples read from prepared stores (:mod:`ecgnat_hf.data.store`) without loading them.

* :class:`StoreWindows`: a map-style ``torch`` dataset of one window per record per epoch: a random crop
  (training; a new one every epoch, drawn from ``(seed, epoch, index)``, so it is reproducible and a resumed
  run draws the same crops) or the first window (evaluation). It holds the stores' small indexes; each
  process (DataLoader worker, rank) memory-maps the shards itself on first access and reads only the
  window it needs. Being map-style is the design choice that gives, with the installed transformers/accelerate:

  - per-rank partition: the Trainer's sampler is sharded by accelerate (``BatchSamplerShard``), so each
    rank reads its own records and an epoch across ranks sees each record once (the last batches are
    filled from the start of the epoch so that every rank gets as many batches);
  - mid-epoch resume: ``Trainer`` resumes with accelerate's ``skip_first_batches``, which for a sampler
    skips *indices* (no record is read), and the seedable sampler gives the same order after the restart;
  - DataLoader workers, each reading its own windows;
  - the epoch reaches the dataset through ``DataLoaderShard.set_epoch`` -> ``dataset.set_epoch``.

* ``--source_weights``: each epoch draws ``round(w_k / sum(w) * N)`` records of source ``k`` (``N`` all records;
  without replacement while a source has enough, then again from a new permutation).
* :func:`store_pretraining_data` / :func:`store_classification_data`: what ``prepare_pretraining_data`` and
  ``prepare_classification_data`` return for ``--dataset store``.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["StoreWindows", "open_store", "store_pretraining_data", "store_classification_data", "check_store_matches"]


def open_store(path):
    """The store at ``path``; a missing or unfinished one is a ``ValueError`` (the recipes print it, exit code 2)."""
    from ..data.store import ECGStore, StoreError

    if "://" in str(path):
        raise ValueError(f"{path}: a store on another filesystem is read with --streaming")
    try:
        return ECGStore(path)
    except StoreError as exc:
        raise ValueError(str(exc)) from None


def check_store_matches(store, feature_extractor) -> None:
    """The store must hold what the model's extractor would have produced: same rate, leads and filters."""
    ext = store.manifest["extractor"]
    mine = {"sampling_rate": float(feature_extractor.sampling_rate), "lead_names": list(feature_extractor.lead_names)}
    for k in ("do_baseline_removal", "baseline_cutoff_hz", "do_bandpass", "bandpass_low", "bandpass_high", "bandpass_order"):
        mine[k] = getattr(feature_extractor, k)
    diff = [k for k, v in mine.items() if (float(ext[k]) != float(v) if isinstance(v, (int, float)) else ext[k] != v)]
    if diff:
        raise ValueError(f"{store.path}: prepared for another extractor ({', '.join(f'{k}: store {ext[k]!r}, model {mine[k]!r}' for k in diff)}); "
                         "prepare it again with this model's --preset / --model_name_or_path")


class StoreWindows(torch.utils.data.Dataset):
    """One window per record of ``stores`` (restricted to ``indices``) per epoch.

    Args:
        stores: :class:`~ecgnat_hf.data.store.ECGStore` objects.
        indices: per store, the record indices to use (e.g. its ``train`` split).
        feature_extractor: the model's extractor: window length and scaling.
        random_crop: a random window per record and epoch (else the first window).
        weights: per store, its share of an epoch (None: every record once).
        seed: seed of the crops and of the weighted draws.
        with_labels: add ``labels`` (stores with labels) and ``record``.
    """

    def __init__(self, stores: Sequence, indices: Sequence, feature_extractor, random_crop: bool = True,
                 weights: Sequence[float] | None = None, seed: int = 0, with_labels: bool = False):
        self.stores = list(stores)
        self.items = [np.asarray(ix, dtype=np.int64) for ix in indices]
        self.counts = np.asarray([len(ix) for ix in self.items], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)])
        self.fe = feature_extractor
        self.window = int(feature_extractor.window_length)
        self.random_crop = bool(random_crop)
        self.seed = int(seed)
        self.with_labels = bool(with_labels)
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        if self.weights is not None and len(self.weights) != len(self.stores):
            raise ValueError(f"{len(self.weights)} weights for {len(self.stores)} stores")
        self.epoch = 0
        self._draw = None
        self._draw_epoch = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _weighted_draw(self):
        if self._draw_epoch == self.epoch:
            return self._draw
        N = len(self)
        w = self.weights / self.weights.sum()
        quota = np.floor(w * N).astype(np.int64)
        rest = N - quota.sum()
        order = np.argsort(-(w * N - quota), kind="stable")
        quota[order[:rest]] += 1
        src, loc = [], []
        for k, q in enumerate(quota):
            if q == 0:
                continue
            if self.counts[k] == 0:
                raise ValueError(f"{self.stores[k].path}: no record to draw from (source weight {self.weights[k]})")
            rng = np.random.default_rng([self.seed, self.epoch, k, 17])
            reps = -(-int(q) // int(self.counts[k]))
            picks = np.concatenate([rng.permutation(self.counts[k]) for _ in range(reps)])[:q]
            src.append(np.full(q, k, dtype=np.int64))
            loc.append(picks)
        self._draw = (np.concatenate(src), np.concatenate(loc))
        self._draw_epoch = self.epoch
        return self._draw

    def locate(self, j: int) -> tuple[int, int]:
        """(store number, record index in that store) of example ``j`` in the current epoch."""
        if not 0 <= j < len(self):
            raise IndexError(j)
        if self.weights is None:
            k = int(np.searchsorted(self.offsets, j, side="right") - 1)
            return k, int(self.items[k][j - self.offsets[k]])
        src, loc = self._weighted_draw()
        k = int(src[j])
        return k, int(self.items[k][loc[j]])

    def __getitem__(self, j: int) -> dict:
        k, i = self.locate(int(j))
        st = self.stores[k]
        n = int(st.n_samples[i])
        start = 0
        if self.random_crop and n > self.window:
            start = int(np.random.default_rng([self.seed, self.epoch, int(j)]).integers(0, n - self.window + 1))
        return window_example(st, i, start, self.fe, self.window, self.with_labels)


def window_example(st, i: int, start: int, fe, W: int, with_labels: bool = False) -> dict:
    """The training example of record ``i`` of store ``st``: ``W`` samples from ``start`` (zero-padded), scaled
    as the extractor scales a window, missing leads zeroed; ``labels`` and ``record`` with ``with_labels``."""
    x = st.window(i, start, W)
    mask = st.lead_mask[i]
    buf = np.zeros((x.shape[0], W), dtype=np.float64)
    buf[:, : x.shape[1]] = x
    buf = fe._scale(buf, x.shape[1], mask)
    buf[mask == 0] = 0.0
    out = {"input_values": buf.astype(np.float32), "lead_mask": mask.astype(np.int64)}
    if with_labels:
        out["labels"] = st.labels[i] if st.labels is not None else np.zeros(0, dtype=np.float32)
        out["record"] = st.record_name(i)
    return out


def _hold_out(store, idx: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split records into (train, eval) by subject (records without one: by record), reproducibly."""
    from ..data.builders.folder import group_split

    subjects = store.subject[idx]
    groups = [s or store.record_name(i) for s, i in zip(subjects, idx)]
    if len(set(groups)) < 3:
        return idx, idx[:0]
    assign = group_split(groups, fraction, 0.0, seed)
    ev = np.asarray([assign[str(g)] == "validation" for g in groups])
    return idx[~ev], idx[ev]


def store_pretraining_data(data_args, feature_extractor, eval_fraction: float = 0.05):
    """``(dict(train=StoreWindows, validation=StoreWindows), source names)`` from ``--dataset store`` and
    ``store:`` extra sources. The main store gives its ``train`` split (and ``validation`` for the evaluation
    loss; without one, ``eval_fraction`` of its subjects are held out); extra stores give train and
    validation records. No store's ``test`` split is read."""
    paths = [data_args.data_dir] + [s.partition(":")[2] for s in data_args.extra_sources]
    kinds = [data_args.dataset] + [s.partition(":")[0].lower() for s in data_args.extra_sources]
    if any(k != "store" for k in kinds):
        bad = [f"{k}:{p}" for k, p in zip(kinds, paths) if k != "store"]
        raise ValueError(f"pretraining from a store mixes only stores: prepare {', '.join(bad)} with `ecgnat prepare` "
                         "and pass it as store:FOLDER")
    streaming = bool(getattr(data_args, "streaming", False))
    if streaming:
        from .store_stream import open_remote_stores

        stores = open_remote_stores(paths, data_args.stream_cache_dir, data_args.stream_cache_gb,
                                    timeout_s=getattr(data_args, "stream_timeout_s", 60.0),
                                    retries=getattr(data_args, "stream_retries", 3))
    else:
        stores = [open_store(p) for p in paths]
    for st in stores:
        check_store_matches(st, feature_extractor)
    train_idx, val_idx = [], []
    for n, st in enumerate(stores):
        tr = st.indices(["train"] if n == 0 else ["train", "validation"])
        va = st.indices(["validation"]) if n == 0 else np.zeros(0, dtype=np.int64)
        if n == 0 and len(va) == 0:
            tr, va = _hold_out(st, tr, eval_fraction, data_args.split_seed)
        if data_args.max_train_samples is not None and n == 0:
            tr = tr[: int(data_args.max_train_samples)]
        train_idx.append(tr)
        val_idx.append(va)
    if data_args.max_eval_samples is not None:
        val_idx[0] = val_idx[0][: int(data_args.max_eval_samples)]
    if sum(len(t) for t in train_idx) == 0:
        raise ValueError(f"{', '.join(map(str, paths))}: no training record in the store(s)")
    weights = data_args.source_weights or None
    names = [st.manifest.get("source") or st.manifest.get("kind") for st in stores]
    crop = bool(getattr(data_args, "pretrain_windows", True))
    if streaming:
        from .store_stream import StreamingStoreWindows

        seed = getattr(data_args, "split_seed", 0)
        return {"train": StreamingStoreWindows(stores, train_idx, feature_extractor, random_crop=crop, seed=seed),
                "validation": StreamingStoreWindows(stores, val_idx, feature_extractor, random_crop=False,
                                                    shuffle=False)}, names
    train = StoreWindows(stores, train_idx, feature_extractor, random_crop=crop, weights=weights,
                         seed=getattr(data_args, "split_seed", 0))
    val = StoreWindows(stores, val_idx, feature_extractor, random_crop=False)
    return {"train": train, "validation": val}, names


def store_classification_data(data_args, feature_extractor, splits=("train", "validation", "test")):
    """Labelled splits of a store as ``datasets.Dataset`` objects (first window of each record, as the other
    sources' fine-tuning data), written once to the ``datasets`` cache and memory-mapped from there.
    Returns ``(splits, label_names, dataset name)``."""
    import datasets

    st = open_store(data_args.data_dir)
    check_store_matches(st, feature_extractor)
    if not st.label_names or st.labels is None:
        raise ValueError(f"{st.path}: the store holds no labels (its source was prepared unlabelled); fine-tuning "
                         "needs a labelled source")
    L, W, C = len(st.lead_names), feature_extractor.window_length, len(st.label_names)
    feats = datasets.Features({
        "input_values": datasets.Array2D(shape=(L, W), dtype="float32"),
        "lead_mask": datasets.List(datasets.Value("int8"), length=L),
        "labels": datasets.List(datasets.Value("float32"), length=C),
        "record": datasets.Value("string"),
    })
    out = {}
    for s in splits:
        idx = st.indices([s])
        if len(idx) == 0:
            continue
        view = StoreWindows([st], [idx], feature_extractor, random_crop=False, with_labels=True)

        def gen(view=view):
            for j in range(len(view)):
                ex = view[j]
                yield {"input_values": ex["input_values"], "lead_mask": ex["lead_mask"].astype(np.int8),
                       "labels": ex["labels"], "record": ex["record"]}

        fp = "|".join([st.manifest["plan_fingerprint"], s, str(W), str(feature_extractor.scaling),
                       ",".join(sha["sha256"][:8] for sha in st.manifest["shards"])])
        import hashlib

        ds = datasets.Dataset.from_generator(gen, features=feats, cache_dir=data_args.cache_dir,
                                             fingerprint=hashlib.sha1(fp.encode()).hexdigest(),
                                             gen_kwargs=None, keep_in_memory=False)
        out[s] = ds.with_format("torch")
    return out, list(st.label_names), st.manifest.get("source") or "store"
