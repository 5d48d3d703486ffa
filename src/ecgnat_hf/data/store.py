"""A prepared ECG store: every record of a source resampled once to the model's rate, kept at full
length, in memory-mapped Arrow shards, so training reads windows without loading the corpus.

Layout of ``STORE/``::

    manifest.json        n_records, n_skipped, sources, sampling_rate, lead_names, label_names,
                         the extractor settings, per-shard checksums (sha256) and the command
    skipped.csv          record,reason,message: one row for every record left out
    index.parquet        one row per record: record, source, subject, split, n_samples, lead_mask,
                         labels (when the source has labels), shard, row
    plan.json            the shard plan (which builder items go to which shard); reruns check it
    shards/NNNNN.arrow   the records (``datasets`` Arrow stream files; ``datasets.Dataset.from_file`` opens them)
    shards/NNNNN.json    the shard's sidecar: n_records, sha256, its skipped records. A shard is finished
                         when its sidecar exists; both are written to a temporary name and renamed.

Signals are stored as ``int16`` with one scale per lead (``value_mV = int16 * scale``), flattened
sample-major (``n_samples x n_leads``), so a window is one contiguous slice of the memory map.
``scale = max|x| / 32767`` per lead: the error is at most half a step, ``max|x| / 65534``. Measured
on the bundled PTB-XL sample (100 Hz): see ``docs/scale.md``; it is far below the 1-5 uV quantisation
of the source files (PTB-XL and MIMIC-IV-ECG store 1 uV/5 uV steps), whereas float16 rounds a 5 mV
sample to 2.4 uV. Missing leads are stored as zeros with ``lead_mask`` 0.

Preparation (:func:`prepare_store`) works on any builder of :mod:`ecgnat_hf.data.builders` through the
``datasets`` builder interface (``_split_generators`` / ``_generate_examples``): the list in each split's
``gen_kwargs`` (record ids, paths, files) is cut into fixed-size pieces in its sorted order, one piece per
shard, so shard assignment depends only on the source listing. Each record goes through the extractor's
own record preparation (lead mapping, quality checks, anti-aliased resampling, filters): the same code
as fine-tuning and inference, minus the per-window scaling, which training applies to each crop.

Faults: a lock file (``fcntl.flock``, released by the kernel even after ``kill -9``) refuses a second
prepare of the same part; a full disk raises :class:`StoreDiskFullError` naming the shard, and the
finished shards stay; a rerun skips finished shards and gives the same bytes.
"""
from __future__ import annotations

import csv
import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "STORE_VERSION",
    "StoreError",
    "StoreLockedError",
    "StoreDiskFullError",
    "StoreIncompleteError",
    "prepare_store",
    "merge_stores",
    "ECGStore",
    "is_store",
    "quantize_int16",
    "dequantize_int16",
]

STORE_VERSION = 1
MANIFEST = "manifest.json"
SKIPPED_CSV = "skipped.csv"
INDEX = "index.parquet"
PLAN = "plan.json"
SHARD_DIR = "shards"
INT16_MAX = 32767


class StoreError(RuntimeError):
    """Something is wrong with a store folder as a whole (not with one record)."""


class StoreLockedError(StoreError):
    """Another prepare is writing the same part of this store."""


class StoreDiskFullError(StoreError, OSError):
    """The disk filled up while a shard was written; finished shards are kept."""


class StoreIncompleteError(StoreError):
    """The store lacks shards (a part not prepared yet, or a prepare that was stopped)."""


# ------------------------------------------------------------------------------------- quantisation
def quantize_int16(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(q, scale)``: (leads, samples) float -> int16 with one scale per lead (``x ~ q * scale``)."""
    x = np.asarray(x, dtype=np.float64)
    peak = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0])
    scale = np.where(peak > 0, peak / INT16_MAX, 1.0).astype(np.float32)
    q = np.rint(x / scale.astype(np.float64)[:, None])
    return np.clip(q, -INT16_MAX, INT16_MAX).astype(np.int16), scale


def dequantize_int16(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Signal in mV from stored int16 values ``q`` (leads, samples) and one scale per lead (mV per step)."""
    return q.astype(np.float32) * np.asarray(scale, dtype=np.float32)[:, None]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise StoreDiskFullError(f"{path}: disk full while writing it; free space and rerun") from exc
        raise


def is_store(path) -> bool:
    """True when ``path`` is a prepared store folder (it holds the store's manifest)."""
    return path is not None and (Path(path) / MANIFEST).is_file()


# ------------------------------------------------------------------------------------------- locks
class _Lock:
    """An exclusive, non-blocking ``flock`` on ``STORE/.<name>.lock`` (gone with its process, even on kill -9)."""

    def __init__(self, folder: Path, name: str):
        self.path = folder / f".{name}.lock"
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(self.fd, 200, 0).decode(errors="replace").strip()
            except OSError:
                holder = ""
            os.close(self.fd)
            self.fd = None
            raise StoreLockedError(
                f"{self.path.parent}: another prepare is writing this store ({holder or 'lock held'}; lock file "
                f"{self.path.name}); wait for it to finish, or use another --output_dir") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


# ------------------------------------------------------------------------------------------ planning
@dataclass
class PrepareSpec:
    """Everything a worker needs to rebuild the builder and the extractor (picklable)."""

    kind: str
    data_dir: str | None
    data_args: Any  # training.arguments.DataArguments
    feature_extractor: Any  # ECGNATFeatureExtractor
    labelled: bool = True

    def builder(self):
        from ..training.data import make_builder

        b, name = make_builder(self.kind, self.data_dir, self.data_args, self.feature_extractor.sampling_rate,
                               labelled=self.labelled)
        return b, name


def _list_kwargs(gen_kwargs: dict) -> list[str]:
    """Keys of the list-valued generator arguments (``datasets`` shards those: they must share a length)."""
    keys = [k for k, v in gen_kwargs.items() if isinstance(v, (list, tuple))]
    lengths = {len(gen_kwargs[k]) for k in keys}
    if len(lengths) > 1:
        raise StoreError(f"builder split arguments {keys} are lists of different lengths {sorted(lengths)}")
    return keys


def _is_table(item) -> bool:
    return hasattr(item, "iloc") and hasattr(item, "__len__")  # a pandas chunk of index rows (MIMIC, CODE-15 %)


def _item_sizes(items: Sequence) -> np.ndarray:
    """Records per list item: a table chunk holds one record per row, anything else (an id, a path) one."""
    return np.asarray([len(it) if _is_table(it) else 1 for it in items], dtype=np.int64)


def _plan(builder, records_per_shard: int) -> tuple[list[dict], list[list[str]]]:
    """Shards: ``{"shard", "split", "start", "stop", "n_items"}`` in a fixed order, plus the records the
    builder left out while listing the source (e.g. a folder record without a labels row).

    ``start``/``stop`` count records of the split's list argument in order (a table chunk of the list
    counts its rows), so a shard holds ``records_per_shard`` listed records whatever the builder's chunking."""
    builder.skipped = []
    gens = builder._split_generators(None)
    shards, k = [], 0
    for g in gens:
        keys = _list_kwargs(g.gen_kwargs)
        n = int(_item_sizes(g.gen_kwargs[keys[0]]).sum()) if keys else 1
        step = n if not keys else max(1, int(records_per_shard))
        for start in range(0, max(n, 1), step):
            stop = min(n, start + step)
            shards.append({"shard": k, "split": str(g.name), "start": start, "stop": stop, "n_items": stop - start})
            k += 1
    listing_skips = [[s.record, s.reason, s.error] for s in builder.skipped]
    return shards, listing_skips


def _slice_items(items: Sequence, start: int, stop: int) -> list:
    """The listed records ``start:stop`` of ``items`` (table chunks cut by rows)."""
    sizes = _item_sizes(items)
    ends = np.cumsum(sizes)
    out = []
    first = int(np.searchsorted(ends, start, side="right"))
    pos = int(ends[first - 1]) if first > 0 else 0
    for i in range(first, len(items)):
        if pos >= stop:
            break
        a, b = max(start - pos, 0), min(stop - pos, int(sizes[i]))
        it = items[i]
        out.append(it.iloc[a:b] if _is_table(it) else it)
        pos += int(sizes[i])
    return out


def _shard_kwargs(builder, split: str, start: int, stop: int) -> dict:
    gens = _WORKER.get("gens")
    if gens is None:  # listed once per process (a folder walk of 800,000 records is not free)
        gens = _WORKER["gens"] = builder._split_generators(None)
    for g in gens:
        if str(g.name) == split:
            kw = dict(g.gen_kwargs)
            for key in _list_kwargs(kw):
                kw[key] = _slice_items(list(kw[key]), start, stop)
            return kw
    raise StoreError(f"the source no longer has a '{split}' split (did the data folder change since the plan?)")


# ------------------------------------------------------------------------------------------ features
def _features(n_leads: int, n_labels: int | None):
    import datasets

    f = {
        "record": datasets.Value("string"),
        "source": datasets.Value("string"),
        "subject": datasets.Value("string"),
        "split": datasets.Value("string"),
        "n_samples": datasets.Value("int32"),
        "lead_mask": datasets.List(datasets.Value("int8"), length=n_leads),
        "scale": datasets.List(datasets.Value("float32"), length=n_leads),
        "signal": datasets.List(datasets.Value("int16")),  # n_samples x n_leads, sample-major
    }
    if n_labels is not None:
        f["labels"] = datasets.List(datasets.Value("float32"), length=n_labels)
    return datasets.Features(f)


def _relative(record: str, data_dir: str | None) -> str:
    if data_dir and Path(record).is_absolute():
        try:
            return str(Path(record).resolve().relative_to(Path(data_dir).resolve()))
        except (ValueError, OSError):
            pass
    return str(record)


def _record_name(ex: dict, key) -> str:
    """The record as its source names it: a path (folder, Challenge: from the key ``id@path``) or an id."""
    for col in ("path", "record"):
        if ex.get(col):
            return str(ex[col])
    if isinstance(key, str) and "@" in key:
        return key.split("@", 1)[1]
    return str(ex.get("record_id") or key)


def _subject(ex: dict) -> str:
    for col in ("subject_id", "patient_id", "subject", "patient"):
        v = ex.get(col)
        if v is not None and str(v) != "":
            return str(v)
    return ""


# ---------------------------------------------------------------------------------------- the worker
_WORKER: dict = {}


def _worker_init(spec: PrepareSpec, counter) -> None:
    _WORKER.clear()
    _WORKER.update(spec=spec, counter=counter)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def _worker_builder():
    if "builder" not in _WORKER:
        b, _WORKER["name"] = _WORKER["spec"].builder()
        if getattr(_WORKER["spec"].feature_extractor, "quality_check", False) and hasattr(b.config, "quality_check"):
            # the extractor checks every record again below (and masks flat/saturated leads besides refusing a
            # record without a usable lead), so the builder's own check would only double the work
            b.config.quality_check = False
        _WORKER["builder"] = b
    return _WORKER["builder"]


def _write_shard(job: dict, store: str, source: str, n_labels: int | None) -> dict:
    """Write one shard (temporary file, fsync, rename) and then its sidecar. Returns the sidecar."""
    from datasets.arrow_writer import ArrowWriter

    from ..data.errors import ECGDataError
    from ..data.leads import parse_lead_names, rename_leads
    from ..models.ecgnat.feature_extraction_ecgnat import ECGInputError

    spec: PrepareSpec = _WORKER["spec"]
    naming = parse_lead_names(getattr(spec.data_args, "lead_names", None))
    counter = _WORKER.get("counter")
    fe = spec.feature_extractor
    builder = _worker_builder()
    n_leads = len(fe.lead_names)
    shard_dir = Path(store) / SHARD_DIR
    name = f"{job['shard']:05d}"
    final = shard_dir / f"{name}.arrow"
    tmp = shard_dir / f".{name}.arrow.{uuid.uuid4().hex}.tmp"
    skipped: list[list[str]] = []
    kwargs = _shard_kwargs(builder, job["split"], job["start"], job["stop"])
    builder.skipped = []
    n = 0
    pending = 0
    try:
        writer = ArrowWriter(features=_features(n_leads, n_labels), path=str(tmp), writer_batch_size=64)
        try:
            for key, ex in builder._generate_examples(**kwargs):
                rec = _record_name(ex, key)
                rel = _relative(rec, spec.data_dir)
                pending += 1
                try:
                    names = [str(v) for v in ex["lead_names"]]
                    if naming is not None:  # --lead_names: the user's names for non-standard channels
                        names = rename_leads(names, naming, rel, missing="ignore")
                    x, mask, _ = fe._prepare_record(0, 1, ex["signal"], float(ex["sampling_rate"]), names, True,
                                                    where=rel)
                except (ECGInputError, ECGDataError) as exc:
                    msg = str(exc)
                    skipped.append([rel, type(exc).__name__, msg[len(rel) + 2:] if msg.startswith(rel + ": ") else msg])
                    continue
                q, scale = quantize_int16(x)
                row = {
                    "record": rel,
                    "source": str(ex.get("source") or source),
                    "subject": _subject(ex),
                    "split": job["split"],
                    "n_samples": int(q.shape[1]),
                    "lead_mask": mask.astype(np.int8),
                    "scale": scale,
                    "signal": np.ascontiguousarray(q.T).reshape(-1),
                }
                if n_labels is not None:
                    row["labels"] = np.asarray(ex["labels"], dtype=np.float32).reshape(-1) if "labels" in ex else \
                        np.zeros(n_labels, dtype=np.float32)
                writer.write(row)
                n += 1
                if counter is not None and pending >= 16:
                    with counter.get_lock():
                        counter.value += pending
                    pending = 0
            writer.finalize()
        finally:
            writer.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise StoreDiskFullError(
                f"{final}: disk full while writing shard {job['shard']} ({job['split']} items {job['start']}-"
                f"{job['stop']}); finished shards are kept: free space and rerun the same command to resume") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
    if counter is not None and pending:
        with counter.get_lock():
            counter.value += pending
    skipped = [[_relative(s.record, spec.data_dir), s.reason, s.error] for s in builder.skipped] + skipped
    side = {"shard": job["shard"], "file": f"{SHARD_DIR}/{final.name}", "split": job["split"], "start": job["start"],
            "stop": job["stop"], "n_records": n, "bytes": final.stat().st_size, "sha256": _sha256(final),
            "skipped": skipped}
    _atomic_write_text(shard_dir / f"{name}.json", json.dumps(side, indent=1))
    return side


# ------------------------------------------------------------------------------------------- prepare
def _plan_fingerprint(plan: dict) -> str:
    keep = {k: plan[k] for k in ("kind", "data_dir", "shards", "extractor", "label_names", "records_per_shard")}
    if plan.get("lead_naming"):  # only when given, so stores prepared before the option keep their fingerprint
        keep["lead_naming"] = plan["lead_naming"]
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def _finished(store: Path, shard: int) -> dict | None:
    side = store / SHARD_DIR / f"{shard:05d}.json"
    if not side.is_file():
        return None
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    arrow = store / meta["file"]
    if not arrow.is_file() or arrow.stat().st_size != meta["bytes"]:
        return None
    return meta


def _extractor_settings(fe) -> dict:
    d = fe.to_dict()
    for k in ("auto_map", "mode", "window_s", "window_stride_s", "return_attention_mask", "processor_class",
              "scaling", "padding_value", "padding_side"):
        d.pop(k, None)
    return json.loads(json.dumps(d, default=str))


def prepare_store(data_args, feature_extractor, output_dir, *, num_proc: int = 1, records_per_shard: int = 1000,
                  num_shards: int = 1, shard_index: int = 0, command: str | None = None,
                  progress: bool = True) -> dict:
    """Prepare ``data_args.dataset`` at ``data_args.data_dir`` into the store ``output_dir``.

    ``num_shards``/``shard_index``: this call prepares the shards ``j`` with ``j % num_shards ==
    shard_index`` (several machines on one shared folder, or separate folders joined by
    :func:`merge_stores`). When every shard of the plan is finished, ``index.parquet``, ``skipped.csv``
    and ``manifest.json`` are written. Returns the manifest (or a summary of the part when shards are missing).
    """
    out = Path(output_dir)
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard_index must be in [0, --num_shards), got {shard_index} of {num_shards}")
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    spec = PrepareSpec(kind=data_args.dataset, data_dir=data_args.data_dir, data_args=data_args,
                       feature_extractor=feature_extractor)
    lock_name = "prepare" if num_shards == 1 else f"prepare-part-{shard_index}-of-{num_shards}"
    with _Lock(out, lock_name):
        builder, name = spec.builder()
        try:
            label_names = [str(n) for n in builder.label_names] or None
        except Exception:  # noqa: BLE001 - a builder without labels
            label_names = None
        if label_names is not None and "labels" not in builder.info.features:
            label_names = None
        shards, listing_skips = _plan(builder, records_per_shard)
        plan = {"version": STORE_VERSION, "kind": spec.kind, "source": name,
                "data_dir": str(Path(spec.data_dir).resolve()) if spec.data_dir else None,
                "records_per_shard": int(records_per_shard), "shards": shards, "listing_skipped": listing_skips,
                "extractor": _extractor_settings(feature_extractor), "label_names": label_names,
                "lead_naming": getattr(data_args, "lead_names", None)}
        plan["fingerprint"] = _plan_fingerprint(plan)
        plan_path = out / PLAN
        if plan_path.is_file():
            old = json.loads(plan_path.read_text())
            if old.get("fingerprint") != plan["fingerprint"]:
                raise StoreError(f"{out}: holds a store prepared with other settings or from other data "
                                 f"({old.get('kind')} at {old.get('data_dir')}); use another --output_dir")
        else:
            _atomic_write_text(plan_path, json.dumps(plan, indent=1))
        mine = [s for s in shards if s["shard"] % num_shards == shard_index]
        todo = [s for s in mine if _finished(out, s["shard"]) is None]
        for s in todo:  # what a stopped (or killed) prepare of this part left half-written
            for tmp in (out / SHARD_DIR).glob(f".{s['shard']:05d}.*.tmp"):
                tmp.unlink(missing_ok=True)
        if len(todo) < len(mine):
            logger.info("%s: %d of %d shard(s) already finished, skipped", out, len(mine) - len(todo), len(mine))
        t0 = time.perf_counter()
        _run_jobs(spec, todo, out, name, len(label_names) if label_names else None, num_proc, progress)
        timing = {"prepared_records": sum(s["n_items"] for s in todo), "prepared_shards": len(todo),
                  "prepare_seconds": time.perf_counter() - t0, "num_proc": num_proc}
    missing = [s["shard"] for s in shards if _finished(out, s["shard"]) is None]
    if missing:
        summary = {"store": str(out), "part": f"{shard_index} of {num_shards}", "shards_done": len(shards) - len(missing),
                   "shards_missing": len(missing)}
        logger.warning("%s: part %d of %d done; %d shard(s) of other parts missing (run them, into this folder or "
                       "their own and then `ecgnat prepare --merge`)", out, shard_index, num_shards, len(missing))
        return dict(summary, **timing)
    return dict(finalize_store(out, command=command), **timing)  # the timing is not written to the manifest


def _run_jobs(spec, jobs, out: Path, source: str, n_labels, num_proc: int, progress: bool) -> None:
    if not jobs:
        return
    import multiprocessing as mp

    from tqdm.auto import tqdm

    total = sum(j["n_items"] for j in jobs)
    ctx = mp.get_context("fork")
    counter = ctx.Value("q", 0)
    bar = tqdm(total=total, unit="rec", desc=f"prepare {source}", disable=not progress, smoothing=0.1, mininterval=1.0)
    try:
        if num_proc <= 1:
            _worker_init(spec, counter)
            for job in jobs:
                _write_shard(job, str(out), source, n_labels)
                bar.update(counter.value - bar.n)
        else:
            with ctx.Pool(num_proc, initializer=_worker_init, initargs=(spec, counter)) as pool:
                results = [pool.apply_async(_write_shard, (job, str(out), source, n_labels)) for job in jobs]
                while True:
                    time.sleep(0.5)
                    bar.update(counter.value - bar.n)
                    for r in results:
                        if r.ready() and not r.successful():
                            r.get()  # raises the worker's error; the pool is terminated on exit
                    if all(r.ready() for r in results):
                        break
                for r in results:
                    r.get()
        bar.update(counter.value - bar.n)
    finally:
        bar.close()
        _WORKER.clear()


def finalize_store(store, command: str | None = None) -> dict:
    """Write ``index.parquet``, ``skipped.csv`` and ``manifest.json`` from the finished shards."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(store)
    plan = json.loads((out / PLAN).read_text())
    with _Lock(out, "finalize"):
        sides = []
        missing = []
        for s in plan["shards"]:
            meta = _finished(out, s["shard"])
            (missing.append(s["shard"]) if meta is None else sides.append(meta))
        if missing:
            raise StoreIncompleteError(f"{out}: {len(missing)} shard(s) not prepared yet (first: {missing[:5]}); "
                                       "rerun prepare (with the missing --shard_index) or merge the other parts")
        parts = []
        meta_cols = ["record", "source", "subject", "split", "n_samples", "lead_mask"] + (
            ["labels"] if plan["label_names"] else [])
        for meta in sides:
            with pa.memory_map(str(out / meta["file"])) as f:
                t = pa.ipc.open_stream(f).read_all().select(meta_cols)
            t = t.append_column("shard", pa.array(np.full(t.num_rows, meta["shard"], dtype=np.int32)))
            t = t.append_column("row", pa.array(np.arange(t.num_rows, dtype=np.int64)))
            parts.append(t.replace_schema_metadata(None))
        index = pa.concat_tables(parts) if parts else None
        tmp = out / f".{INDEX}.{uuid.uuid4().hex}.tmp"
        try:
            pq.write_table(index, tmp)
            os.replace(tmp, out / INDEX)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                raise StoreDiskFullError(f"{out / INDEX}: disk full while writing the index; shards are kept, "
                                         "free space and rerun") from None
            raise
        skipped = list(plan.get("listing_skipped", [])) + [row for meta in sides for row in meta["skipped"]]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["record", "reason", "message"])
        w.writerows(skipped)
        _atomic_write_text(out / SKIPPED_CSV, buf.getvalue())
        sources: dict[str, int] = {}
        for v in index.column("source").to_pylist():
            sources[v] = sources.get(v, 0) + 1
        splits: dict[str, int] = {}
        for v in index.column("split").to_pylist():
            splits[v] = splits.get(v, 0) + 1
        reasons: dict[str, int] = {}
        for row in skipped:
            reasons[row[1]] = reasons.get(row[1], 0) + 1
        ext = plan["extractor"]
        manifest = {
            "format": "ecgnat_hf store", "version": STORE_VERSION,
            "n_records": int(index.num_rows), "n_skipped": len(skipped), "skipped_reasons": reasons,
            "sources": sources, "splits": splits, "kind": plan["kind"], "source": plan["source"],
            "data_dir": plan["data_dir"],
            "sampling_rate": float(ext["sampling_rate"]), "lead_names": list(ext["lead_names"]),
            "label_names": plan["label_names"], "signal": {"dtype": "int16", "scale": "per record and lead",
                                                          "layout": "n_samples x n_leads", "unit": "mV"},
            "extractor": ext, "n_samples_total": int(np.asarray(index.column("n_samples")).sum(dtype=np.int64)),
            "shards": [{"file": m["file"], "n_records": m["n_records"], "bytes": m["bytes"], "sha256": m["sha256"]}
                       for m in sides],
            "index": {"file": INDEX, "bytes": (out / INDEX).stat().st_size, "sha256": _sha256(out / INDEX)},
            "plan_fingerprint": plan["fingerprint"],
            "command": command or " ".join(sys.argv),
        }
        _atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    logger.info("%s: %d records in %d shards, %d skipped", out, manifest["n_records"], len(sides), len(skipped))
    return manifest


def merge_stores(parts: Sequence, output_dir, command: str | None = None) -> dict:
    """Join parts prepared on several machines (same command, different ``--shard_index``) into one store.

    Every part must hold the same plan; shards are hard-linked when possible, else copied (temporary
    name, then rename); a shard present in two parts must have the same checksum."""
    out = Path(output_dir)
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    with _Lock(out, "prepare"):
        fingerprint = None
        for p in map(Path, parts):
            if not (p / PLAN).is_file():
                raise StoreError(f"{p}: not a store part (no {PLAN})")
            plan = json.loads((p / PLAN).read_text())
            if fingerprint is None:
                fingerprint = plan["fingerprint"]
                if (out / PLAN).is_file() and json.loads((out / PLAN).read_text())["fingerprint"] != fingerprint:
                    raise StoreError(f"{out}: holds a store with another plan than {p}")
                if not (out / PLAN).is_file():
                    _atomic_write_text(out / PLAN, json.dumps(plan, indent=1))
            elif plan["fingerprint"] != fingerprint:
                raise StoreError(f"{p}: prepared with other settings or data than {parts[0]} (plans differ)")
            for s in plan["shards"]:
                meta = _finished(p, s["shard"])
                if meta is None:
                    continue
                have = _finished(out, s["shard"])
                if have is not None:
                    if have["sha256"] != meta["sha256"]:
                        raise StoreError(f"shard {s['shard']}: {p} and {out} hold different bytes")
                    continue
                for src_name in (Path(meta["file"]).name, f"{s['shard']:05d}.json"):
                    src, dst = p / SHARD_DIR / src_name, out / SHARD_DIR / src_name
                    if src.resolve() == dst.resolve():
                        continue
                    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex}.tmp")
                    try:
                        try:
                            os.link(src, tmp)
                        except OSError:
                            shutil.copyfile(src, tmp)
                        os.replace(tmp, dst)
                    except OSError as exc:
                        tmp.unlink(missing_ok=True)
                        if exc.errno == errno.ENOSPC:
                            raise StoreDiskFullError(f"{dst}: disk full while merging; rerun to continue") from None
                        raise
    return finalize_store(out, command=command)


# --------------------------------------------------------------------------------------------- read
class ECGStore:
    """A prepared store, opened without loading it: the index is read (small), the shards are
    memory-mapped on first use (per process: a DataLoader worker maps its own)."""

    def __init__(self, path):
        self.path = Path(path)
        if not (self.path / MANIFEST).is_file():
            hint = " (a prepare still running, stopped, or a part waiting for merge)" if (self.path / PLAN).is_file() else ""
            raise StoreError(f"{self.path}: not a prepared store: no {MANIFEST}{hint}; run `ecgnat prepare`")
        self.manifest = json.loads((self.path / MANIFEST).read_text())
        if self.manifest.get("version") != STORE_VERSION:
            raise StoreError(f"{self.path}: store version {self.manifest.get('version')}, this package reads {STORE_VERSION}")
        import pyarrow.parquet as pq

        t = pq.read_table(self.path / INDEX)
        self.n = t.num_rows
        # names stay Arrow strings (tens of bytes per record), not Python objects (hundreds): the training process
        # holds the index of every record, and its memory should not grow with the corpus
        self._names = t.select(["record", "source", "subject"]).combine_chunks()
        split = t.column("split").combine_chunks().dictionary_encode()
        self._split_names = [str(v) for v in split.dictionary.to_pylist()]
        self._split_codes = split.indices.to_numpy().astype(np.int8)
        self.n_samples = t.column("n_samples").to_numpy()
        self.shard = t.column("shard").to_numpy()
        self.row = t.column("row").to_numpy()
        L = len(self.lead_names)
        self.lead_mask = np.asarray(t.column("lead_mask").combine_chunks().flatten()).reshape(-1, L).astype(np.int64)
        if "labels" in t.column_names and self.label_names:
            C = len(self.label_names)
            self.labels = np.asarray(t.column("labels").combine_chunks().flatten()).reshape(-1, C).astype(np.float32)
        else:
            self.labels = None
        self._files = [self.path / s["file"] for s in self.manifest["shards"]]
        self._maps: dict[int, tuple] = {}

    @property
    def record(self) -> list[str]:
        """Every record's name (a Python list: for inspection, not for the training loop)."""
        return self._names.column("record").to_pylist()

    @property
    def source(self) -> np.ndarray:
        return np.asarray(self._names.column("source").to_pylist(), dtype=object)

    @property
    def subject(self) -> np.ndarray:
        return np.asarray(self._names.column("subject").to_pylist(), dtype=object)

    @property
    def split(self) -> np.ndarray:
        return np.asarray(self._split_names, dtype=object)[self._split_codes]

    def record_name(self, i: int) -> str:
        return self._names.column("record")[int(i)].as_py()

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_maps"] = {}  # every process maps the shards itself
        return d

    def __len__(self) -> int:
        return self.n

    @property
    def sampling_rate(self) -> float:
        return float(self.manifest["sampling_rate"])

    @property
    def lead_names(self) -> list[str]:
        return list(self.manifest["lead_names"])

    @property
    def label_names(self) -> list[str] | None:
        return self.manifest.get("label_names")

    def indices(self, splits: Iterable[str] | None = None) -> np.ndarray:
        if splits is None:
            return np.arange(self.n)
        wanted = [k for k, name in enumerate(self._split_names) if name in set(splits)]
        return np.flatnonzero(np.isin(self._split_codes, wanted))

    def _shard(self, k: int):
        m = self._maps.get(k)
        if m is None:
            import pyarrow as pa

            table = pa.ipc.open_stream(pa.memory_map(str(self._files[k]))).read_all()
            chunks = []
            for sig, sc in zip(table.column("signal").chunks, table.column("scale").chunks):
                offsets = np.asarray(sig.offsets)  # zero-copy views into the memory map
                values = np.asarray(sig.values)
                scale = np.asarray(sc.values).reshape(-1, len(self.lead_names))
                chunks.append((offsets, values, scale))
            starts = np.cumsum([0] + [len(c[0]) - 1 for c in chunks])
            m = (table, chunks, starts)
            self._maps[k] = m
        return m

    def window(self, i: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """(leads, length) float32 in mV of record ``i`` from sample ``start`` (clipped to the record)."""
        _, chunks, starts = self._shard(int(self.shard[i]))
        r = int(self.row[i])
        c = int(np.searchsorted(starts, r, side="right") - 1)
        offsets, values, scale = chunks[c]
        j = r - int(starts[c])
        L = len(self.lead_names)
        n = int(self.n_samples[i])
        start = max(0, min(int(start), n))
        stop = n if length is None else min(n, start + int(length))
        base = int(offsets[j])
        q = values[base + start * L: base + stop * L].reshape(stop - start, L)
        return (q.astype(np.float32) * scale[j][None, :]).T

    def signal(self, i: int) -> np.ndarray:
        return self.window(i)
