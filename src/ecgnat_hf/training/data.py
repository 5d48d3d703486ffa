"""Dataset preparation for the recipes: builder splits -> feature extractor -> model columns.

One data path, whatever the corpus size: nothing here holds a corpus in RAM.

* :func:`make_builder` / :func:`load_splits`: a data-layer builder (PTB-XL, the bundled sample,
  PhysioNet Challenge, a user's folder, MIMIC-IV-ECG, CODE-15 %) from
  :class:`~ecgnat_hf.training.arguments.DataArguments`, prepared once in the ``datasets`` cache; splits
  missing from the source (Challenge has only ``train``, folders may lack one) are drawn from ``train``
  with a fixed seed.
* :func:`prepare_classification_data`: every split through ``ECGNATFeatureExtractor`` with
  ``datasets.map(batched=True)`` into ``input_values`` (leads, samples) float32, ``lead_mask`` (leads,),
  ``labels`` and ``record`` (the record's path or id, for messages) columns in torch format. The mapped
  splits are Arrow files in the ``datasets`` cache, memory-mapped and named by a fingerprint of the
  builder's files and the extractor, so the label-efficiency sweep and the demo read and preprocess each
  record once, in any number of processes, and a corpus never has to fit in RAM. The records left out
  are kept beside each file (``<file>.skipped.json``) and reported again on a cache hit.
* :func:`prepare_pretraining_data`: unlabelled training windows for masked pretraining. Every source,
  from the bundled sample to MIMIC-IV-ECG, goes through a prepared store (:mod:`ecgnat_hf.data.store`):
  a ``store`` source is read as it is, any other kind is prepared once into a store in the cache
  (``<cache>/ecgnat_stores/<kind>-<fingerprint>``, reused by later runs) and read the same way, a random
  window per record and epoch (:class:`~ecgnat_hf.training.store_data.StoreWindows`).
* :func:`stratified_subset`: fixed-seed stratified label-fraction subsample (multi-label aware).
* :class:`ECGDataCollator`: stacks examples, casts labels for the problem type, optionally hides a
  lead subset (zeroed signal and ``lead_mask``); :func:`drop_examples_without_kept_leads` first leaves
  out (and names) the examples that have none of the subset's leads. BEAT-Net's precomputed beat tokens (``beats``,
  ``beat_mask``, ``rr``; see :mod:`ecgnat_hf.training.beatnet`) are padded and passed on when present.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "PreparedData",
    "make_builder",
    "load_splits",
    "prepare_classification_data",
    "prepare_pretraining_data",
    "stratified_subset",
    "ECGDataCollator",
    "lead_subset_mask",
    "without_kept_leads",
    "drop_examples_without_kept_leads",
    "auto_store",
]

#: the large corpora (their own builders, split by subject / patient with a hash, so a test split is fixed)
CORPUS_KINDS = ("mimic-iv-ecg", "code15")


@dataclass
class PreparedData:
    """Model-ready splits and what describes them."""

    splits: dict  # split name -> datasets.Dataset with input_values, lead_mask, labels (torch format)
    label_names: list[str]
    problem_type: str  # "multi_label_classification" or "single_label_classification"
    dataset_name: str
    skipped: list = field(default_factory=list)  # SkippedRecord of the builder

    @property
    def id2label(self) -> dict[int, str]:
        return {i: str(n) for i, n in enumerate(self.label_names)}

    @property
    def label2id(self) -> dict[str, int]:
        return {str(n): i for i, n in enumerate(self.label_names)}


# -------------------------------------------------------------------------------------------- builders
def _default_folds(data_args) -> tuple[tuple, tuple, tuple]:
    from .arguments import parse_int_list

    if data_args.dataset == "sample":  # the bundled subset has folds 1-9: 1-7 train, 8 validation, 9 test
        d = ((1, 2, 3, 4, 5, 6, 7), (8,), (9,))
    else:
        d = ((1, 2, 3, 4, 5, 6, 7, 8), (9,), (10,))
    def folds(value, default):
        if isinstance(value, str) and value.strip().lower() == "none":
            return ()  # explicitly no such split (e.g. no validation fold: fixed budget, no selection)
        return parse_int_list(value) or default

    return (
        folds(data_args.train_folds, d[0]),
        folds(data_args.validation_folds, d[1]),
        folds(data_args.test_folds, d[2]),
    )


def make_builder(kind: str, data_dir: str | None, data_args, model_rate: float, labelled: bool = True):
    """A data-layer builder for ``kind`` (sample, ptbxl, challenge, folder, mimic-iv-ecg, code15) and its dataset
    name. The corpus kinds split by subject / patient (``validation_fraction``, ``test_fraction``, ``split_seed``)."""
    from ..data.builders import PTBXL, ECGFolder, PhysioNetChallenge

    common = dict(cache_dir=data_args.cache_dir)
    if data_args.max_records:
        common["max_records"] = int(data_args.max_records)
    if kind in ("sample", "ptbxl"):
        if kind == "sample":
            from ..sample_data import sample_dir

            data_dir = str(sample_dir())
            rate = 100
        else:
            rate = int(data_args.sampling_rate or (100 if model_rate <= 100 else 500))
        train, val, test = _default_folds(data_args)
        b = PTBXL(config_name=data_args.task, data_dir=str(data_dir), sampling_rate=rate,
                  train_folds=train, validation_folds=val, test_folds=test, **common)
        return b, ("PTB-XL (bundled sample)" if kind == "sample" else "PTB-XL")
    if kind == "challenge":
        kw = dict(common)
        if data_args.challenge_sources:
            kw["sources"] = tuple(s.strip() for s in data_args.challenge_sources.split(",") if s.strip())
        return PhysioNetChallenge(data_dir=str(data_dir), **kw), "PhysioNet/CinC Challenge 2021"
    if kind == "folder":
        kw = dict(common, validation_fraction=data_args.validation_fraction, test_fraction=data_args.test_fraction,
                  seed=data_args.split_seed, label_type=data_args.label_type)
        if labelled and data_args.labels_csv:
            kw["labels_file"] = str(data_args.labels_csv)
            for opt in ("empty_labels", "duplicate_rows", "labels_encoding"):
                if getattr(data_args, opt, None):
                    kw[opt] = getattr(data_args, opt)
        return ECGFolder(data_dir=str(data_dir), **kw), "ECG folder"
    if kind in CORPUS_KINDS:
        from ..data.builders import CODE15, MIMICIVECG

        kw = dict(common, validation_fraction=data_args.validation_fraction, test_fraction=data_args.test_fraction,
                  seed=data_args.split_seed)
        if kind == "code15":
            return CODE15(data_dir=str(data_dir), **kw), "CODE-15 %"
        return MIMICIVECG(data_dir=str(data_dir), **kw), "MIMIC-IV-ECG"
    raise ValueError(f"unknown dataset kind {kind!r}")


def load_splits(builder, data_args) -> "datasets.DatasetDict":  # noqa: F821
    """Prepare the builder (cached by ``datasets``) and return train/validation/test, drawing missing
    validation/test splits from train with ``split_seed`` (records, not windows, are split)."""
    import datasets

    builder.download_and_prepare()
    _require_prepared_split(builder, "train")
    dd = builder.as_dataset()
    dd = datasets.DatasetDict(dict(dd))
    if data_args.dataset in ("sample", "ptbxl", *CORPUS_KINDS):
        # PTB-XL splits are its folds: a split left out (e.g. --validation_folds none) stays out; the corpora split
        # by subject / patient, which drawing records from train here would break
        return dd
    if "train" in dd and "test" not in dd and data_args.test_fraction > 0 and len(dd["train"]) >= 10:
        parts = dd["train"].train_test_split(test_size=data_args.test_fraction, seed=data_args.split_seed)
        dd["train"], dd["test"] = parts["train"], parts["test"]
    if "train" in dd and "validation" not in dd and data_args.validation_fraction > 0 and len(dd["train"]) >= 10:
        parts = dd["train"].train_test_split(test_size=data_args.validation_fraction, seed=data_args.split_seed + 1)
        dd["train"], dd["validation"] = parts["train"], parts["test"]
    return dd


# ------------------------------------------------------------------------------------- preprocessing
def _fe_key(feature_extractor) -> str:
    d = feature_extractor.to_dict()
    d.pop("auto_map", None)
    return json.dumps(d, sort_keys=True, default=str)


def _cache_key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _record_name(batch, i: int) -> str:
    for col in ("path", "record_id"):
        if col in batch and batch[col] is not None:
            return str(batch[col][i])
    return f"example {i}"


def _featurize(ds, feature_extractor, mode: str, keep_labels: bool, desc: str, lead_names=None, skipped=None):
    """Map a builder split to input_values / lead_mask (/ labels). ``mode``: 'crop' keeps one example per
    record (first window, short records padded); 'window' cuts long records into several windows.

    ``lead_names``: a lead-naming spec (:func:`ecgnat_hf.data.leads.parse_lead_names`: ``["I"]`` or
    ``{"ECG": "I"}``) applied to every record's channel names first. Records the feature extractor
    refuses (too short, no usable lead, no lead the model takes, implausible rate, a lead naming that
    does not fit) are left out and appended to ``skipped`` as ``SkippedRecord(path, reason, message)``,
    so nothing the builder accepted can abort training."""
    import datasets

    from ..data.builders.common import SkippedRecord
    from ..data.errors import ECGDataError
    from ..data.leads import rename_leads
    from ..models.ecgnat.feature_extraction_ecgnat import ECGInputError

    n_leads = len(feature_extractor.lead_names)
    T = feature_extractor.window_length
    feats = {
        "input_values": datasets.Array2D(shape=(n_leads, T), dtype="float32"),
        "lead_mask": datasets.List(datasets.Value("int8"), length=n_leads),
        "record": datasets.Value("string"),  # names the record in later messages (the Trainer drops it)
    }
    if keep_labels:
        feats["labels"] = ds.features["labels"]
    skipped = [] if skipped is None else skipped
    seen = {(s.record, s.reason) for s in skipped}

    def skip(name, exc):
        msg = str(exc)
        for prefix in ("input: ", f"{name}: "):
            if msg.startswith(prefix):
                msg = msg[len(prefix):]
        note(name, type(exc).__name__, msg)

    def note(name, reason, msg):
        if (name, reason) not in seen:
            seen.add((name, reason))
            skipped.append(SkippedRecord(name, reason, msg))
            logger.warning("%s: left out of %s: %s", name, desc, msg)

    def call(signals, rates, names, ids):
        return feature_extractor(signals, sampling_rate=rates, lead_names=names, mode=mode, ignore_unknown_leads=True,
                                 return_attention_mask=False, record_ids=ids, **fe_kwargs)

    # a BEAT-Net extractor would reject a record without beats; preparation keeps it (see training.beatnet)
    fe_kwargs = {"no_beats": "empty"} if hasattr(feature_extractor, "no_beats") else {}

    def fn(batch):
        n = len(batch["signal"])
        keep, signals, rates, names, ids = [], [], [], [], []
        for i in range(n):
            rid = _record_name(batch, i)
            try:
                ln = [str(x) for x in batch["lead_names"][i]]
                if lead_names is not None:
                    ln = rename_leads(ln, lead_names, rid, missing="ignore")
            except ECGDataError as exc:
                skip(rid, exc)
                continue
            keep.append(i)
            signals.append(batch["signal"][i])
            rates.append(float(batch["sampling_rate"][i]))
            names.append(ln)
            ids.append(rid)
        outs = []
        if signals:
            try:
                out = call(signals, rates, names, ids)
                outs.append((out, keep))
            except ECGInputError:  # find the record(s) at fault; keep the others
                for j, i in enumerate(keep):
                    try:
                        outs.append((call([signals[j]], [rates[j]], [names[j]], [ids[j]]), [i]))
                    except ECGInputError as exc:
                        skip(ids[j], exc)
        values = [o["input_values"] for o, _ in outs]
        masks = [o["lead_mask"].astype(np.int8) for o, _ in outs]
        res = {
            "input_values": np.concatenate(values) if values else np.zeros((0, n_leads, T), dtype=np.float32),
            "lead_mask": np.concatenate(masks) if masks else np.zeros((0, n_leads), dtype=np.int8),
            "record": [_record_name(batch, src[r]) for o, src in outs for r in o["record_index"]],
        }
        if keep_labels:
            res["labels"] = [batch["labels"][src[r]] for o, src in outs for r in o["record_index"]]
        return res

    extra = [c for c in ("path", "record_id") if c in ds.column_names]
    src = ds.with_format("numpy", columns=["signal", "sampling_rate", "lead_names"] + extra
                         + (["labels"] if keep_labels else []))
    target = _mapped_cache_file(ds, feature_extractor, mode, keep_labels, lead_names)
    if target is None:  # a dataset without files (built in memory): datasets keeps the small result in memory
        return src.map(fn, batched=True, batch_size=64, remove_columns=ds.column_names,
                       features=datasets.Features(feats), load_from_cache_file=False, desc=desc)
    side = Path(str(target) + ".skipped.json")
    if target.is_file() and side.is_file():  # prepared by an earlier run (or process): memory-mapped, not re-read
        for rec, reason, msg in json.loads(side.read_text()):
            note(rec, reason, msg)
        return datasets.Dataset.from_file(str(target))
    before = len(skipped)
    mapped = src.map(fn, batched=True, batch_size=64, remove_columns=ds.column_names,
                     features=datasets.Features(feats), cache_file_name=str(target),
                     new_fingerprint=target.stem, load_from_cache_file=False, desc=desc)
    from ..data.store import _atomic_write_text

    _atomic_write_text(side, json.dumps([[r.record, r.reason, r.error] for r in skipped[before:]]))
    return mapped


def _mapped_cache_file(ds, feature_extractor, mode: str, keep_labels: bool, lead_names):
    """Where the mapped split lives: beside the builder's Arrow file, named by everything that decides its
    content (the builder file's identity, the split's row selection, the extractor, the mode, the lead naming);
    None for a dataset that has no file."""
    import os

    files = [f["filename"] for f in (ds.cache_files or [])]
    if not files:
        return None
    stats = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files if os.path.exists(f)]
    key = _cache_key("featurize-v1", stats, ds._fingerprint, _fe_key(feature_extractor), mode, keep_labels,
                     lead_names if lead_names is None or isinstance(lead_names, (list, dict)) else str(lead_names))
    return Path(os.path.dirname(files[0])) / f"ecgnat-features-{key[:20]}.arrow"


def _lead_naming(data_args):
    from ..data.leads import parse_lead_names

    return parse_lead_names(getattr(data_args, "lead_names", None))


def _require_prepared_split(builder, split: str) -> None:
    """Every record of ``split`` was left out while the dataset was built (unreadable, no usable lead...):
    say so with the first reasons, instead of ``datasets``' "Instruction 'train' corresponds to no data!"."""
    splits = getattr(getattr(builder, "info", None), "splits", None) or {}
    info = splits.get(split) if hasattr(splits, "get") else None
    if info is not None and int(info.num_examples or 0) > 0:
        return
    skipped = list(getattr(builder, "skipped", []))
    if info is None and not skipped:
        return  # a builder without this split at all: the caller's own message applies
    first = "".join(f"\n  {s.record}: {s.reason}: {s.error}" for s in skipped[:5])
    more = f"\n  ... and {len(skipped) - 5} more (builder.skipped lists them)" if len(skipped) > 5 else ""
    raise ValueError(f"{getattr(builder, 'name', 'dataset')} at {getattr(builder.config, 'data_dir', None) or ''}: "
                     f"no usable {split} record: every {split} record was left out ({len(skipped)} record(s) left out in "
                     "all). First reasons:"
                     f"{first}{more}")


def _require_examples(splits: dict, split: str, name: str, skipped: list) -> None:
    """A clear error instead of a Trainer crash when every record of a split was left out."""
    if split in splits and len(splits[split]) == 0:
        first = f" First: {skipped[0].record}: {skipped[0].error}" if skipped else ""
        raise ValueError(f"{name}: no usable {split} example: all {len(skipped)} left-out record(s) are listed in the "
                         f"log.{first} (name the channels with --lead_names, e.g. ECG=I)")


def prepare_classification_data(data_args, feature_extractor, splits: Sequence[str] = ("train", "validation", "test"),
                                apply_limits: bool = True) -> PreparedData:
    """Labelled, model-ready splits for fine-tuning / evaluation (see module docstring).

    ``label_fraction`` (stratified, ``label_fraction_seed``) and ``max_*_samples`` are applied here when
    ``apply_limits``. The preprocessed splits are memory-mapped files of the ``datasets`` cache: a second
    call (another arm of a sweep, another process) reads them instead of preprocessing again.
    """
    kind = data_args.dataset
    if kind == "store":  # a prepared store: memory-mapped, first window per record
        from .store_data import store_classification_data

        full, label_names, name = store_classification_data(data_args, feature_extractor)
        _require_examples({"train": full.get("train", [])}, "train", name, [])
        prepared = PreparedData(splits=full, label_names=label_names,
                                problem_type="multi_label_classification", dataset_name=name, skipped=[])
    else:
        builder, name = make_builder(kind, data_args.data_dir, data_args, feature_extractor.sampling_rate)
        dd = load_splits(builder, data_args)
        if "labels" not in dd["train"].column_names:
            raise ValueError(f"{name} at {data_args.data_dir}: no labels (pass --labels_csv for a folder)")
        label_names = [str(n) for n in builder.label_names]
        single = data_args.dataset == "folder" and data_args.label_type == "single_label"
        naming = _lead_naming(data_args)
        skipped = list(getattr(builder, "skipped", []))
        wanted = [s for s in dd if s in splits or s == "train"]  # train: to tell an empty training set apart
        full = {s: _featurize(dd[s], feature_extractor, "crop", True, f"preprocessing {s}", naming, skipped)
                for s in wanted}
        _require_examples(full, "train", name, skipped)
        full = {s: d.with_format("torch") for s, d in full.items() if len(d)}
        prepared = PreparedData(
            splits=full, label_names=label_names,
            problem_type="single_label_classification" if single else "multi_label_classification",
            dataset_name=name, skipped=skipped,
        )
        if skipped:
            from collections import Counter

            counts = ", ".join(f"{k}: {v}" for k, v in sorted(Counter(s.reason for s in skipped).items()))
            logger.warning("%s: %d record(s) left out (%s):%s%s", name, len(skipped), counts,
                           "".join(f"\n  {s.record}: {s.reason}: {s.error}" for s in skipped[:20]),
                           f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else "")
    out = {}
    for s in splits:
        if s not in prepared.splits:
            logger.warning("split %r not available for %s; available: %s", s, prepared.dataset_name,
                           list(prepared.splits))
            continue
        ds = prepared.splits[s]
        if apply_limits:
            if s == "train" and data_args.label_fraction < 1.0:
                y = np.asarray(ds.with_format("numpy")["labels"])
                idx = stratified_subset(y, data_args.label_fraction, data_args.label_fraction_seed)
                ds = ds.select(idx)
            limit = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples,
                     "test": data_args.max_test_samples}.get(s)
            if limit is not None and len(ds) > limit:
                ds = ds.select(range(int(limit)))
        out[s] = ds
    return replace(prepared, splits=out)


def auto_store(kind: str, data_dir: str | None, data_args, feature_extractor, num_proc: int = 1):
    """The prepared store of source ``kind`` at ``data_dir`` for this extractor, written on first use into
    ``<cache>/ecgnat_stores/<kind>-<fingerprint>`` (``<cache>``: ``--cache_dir`` or the ``datasets`` cache)
    and reused afterwards; a store whose source listing changed since is prepared again. Returns its path.

    This is what lets pretraining read every source the same way: ``ecgnat prepare`` writes the same store
    explicitly (and in parallel, across machines) for corpora too large to prepare inside a training run."""
    import shutil

    import datasets

    from ..data.store import MANIFEST, StoreError, _extractor_settings, prepare_store

    if kind == "sample":
        data_dir = None
    root = Path(data_args.cache_dir or datasets.config.HF_DATASETS_CACHE) / "ecgnat_stores"
    source = str(Path(data_dir).resolve()) if data_dir else None
    key = _cache_key("store-v1", kind, source, data_args.task, data_args.sampling_rate, data_args.train_folds,
                     data_args.validation_folds, data_args.test_folds, data_args.max_records,
                     data_args.challenge_sources, data_args.validation_fraction, data_args.test_fraction,
                     data_args.split_seed, getattr(data_args, "lead_names", None),
                     _extractor_settings(feature_extractor))
    out = root / f"{kind}-{key[:16]}"
    da = replace(data_args, dataset=kind, data_dir=data_dir, extra_sources=[], source_weights=None)
    for attempt in (0, 1):
        try:
            prepare_store(da, feature_extractor, out, num_proc=num_proc,
                          command=f"automatic store of {kind}:{data_dir or '(bundled sample)'} for pretraining")
            break
        except StoreError as exc:
            if attempt or "prepared with other settings or from other data" not in str(exc):
                raise
            logger.warning("%s: the source changed since this cached store was prepared; preparing it again", out)
            shutil.rmtree(out)
    n_skipped = json.loads((out / MANIFEST).read_text()).get("n_skipped", 0)
    if n_skipped:
        logger.warning("%s: %d record(s) left out of pretraining; %s lists each with its reason", source or kind,
                       n_skipped, out / "skipped.csv")
    return str(out)


def prepare_pretraining_data(data_args, feature_extractor, eval_fraction: float = 0.05):
    """Unlabelled windows for masked pretraining from ``--dataset`` plus ``--extra_sources``.

    Every source is read from a prepared store (see :func:`auto_store`): ``store:FOLDER`` as it is, any other
    kind after it is prepared once into the cache. The main source gives its ``train`` split, and its
    ``validation`` split (if any) for the evaluation loss; each extra source adds its train and validation
    records. No source's ``test`` split is read, so a later fine-tune's test fold stays unseen. Training draws
    a random window of each record every epoch (``--pretrain_windows false``: always the first window).
    Returns ``(dict(train=..., validation=...), source_names)``; examples hold ``input_values`` and ``lead_mask``.
    """
    from .store_data import store_pretraining_data

    sources = [(data_args.dataset, data_args.data_dir)]
    for item in data_args.extra_sources:
        kind, _, path = item.partition(":")
        sources.append((kind.lower(), path or None))
    num_proc = int(getattr(data_args, "preprocessing_num_workers", None) or 1)
    paths = []
    for kind, path in sources:
        if kind != "store" and kind != "sample" and not path:
            raise ValueError(f"--extra_sources {kind}: give the folder as {kind}:PATH")
        paths.append(path if kind == "store" else auto_store(kind, path, data_args, feature_extractor, num_proc))
    as_stores = replace(data_args, dataset="store", data_dir=paths[0],
                        extra_sources=[f"store:{p}" for p in paths[1:]])
    return store_pretraining_data(as_stores, feature_extractor, eval_fraction)


# --------------------------------------------------------------------------------- label fractions
def stratified_subset(labels, fraction: float, seed: int = 0) -> list[int]:
    """Indices of a stratified ``fraction`` of the examples, reproducible for a given ``seed``.

    Multi-label (``labels`` (n, classes) multi-hot) uses iterative stratification (Sechidis et al. 2011)
    with two parts, the subset (``fraction``) and the rest: the rarest remaining class is handled first,
    each of its examples going to the part that most lacks that class (ties: the part that lacks most
    examples, then at random). Examples without labels fill the parts by size. Afterwards every class
    present in the data gets at least one positive in the subset (moved in at random), so per-class
    AUROC stays defined at 1 % -- the subset may then exceed ``round(fraction * n)`` by at most one
    example per class. Single-label (``labels`` (n,) class ids) is the one-hot special case. Returned
    indices are sorted.
    """
    y = np.asarray(labels)
    n = len(y)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction >= 1.0 or n == 0:
        return list(range(n))
    if y.ndim == 1:
        y = np.eye(int(y.max()) + 1)[y.astype(int)]
    y = (y > 0.5).astype(np.int64)
    rng = np.random.default_rng(seed)
    size = np.array([max(1.0, round(fraction * n)), 0.0])
    size[1] = n - size[0]
    want_label = np.outer(size / n, y.sum(0)).astype(np.float64)  # (2, classes)
    want_size = size.astype(np.float64)
    part = np.full(n, -1)
    unassigned = np.ones(n, dtype=bool)

    def choose(scores_a, scores_b):
        best = np.flatnonzero(scores_a == scores_a.max())
        if len(best) > 1:
            sb = scores_b[best]
            best = best[sb == sb.max()]
        return int(best[rng.integers(len(best))]) if len(best) > 1 else int(best[0])

    while True:
        counts = y[unassigned].sum(0)
        present = np.flatnonzero(counts > 0)
        if len(present) == 0:
            break
        rarest = counts[present].min()
        cands = present[counts[present] == rarest]
        c = int(cands[rng.integers(len(cands))])
        rows = np.flatnonzero(unassigned & (y[:, c] == 1))
        rng.shuffle(rows)
        for i in rows:
            k = choose(want_label[:, c], want_size)
            part[i] = k
            unassigned[i] = False
            want_label[k] -= y[i]
            want_size[k] -= 1
    rest = np.flatnonzero(unassigned)
    rng.shuffle(rest)
    for i in rest:
        k = choose(want_size, np.zeros(2))
        part[i] = k
        want_size[k] -= 1
    chosen = part == 0
    for c in np.flatnonzero(y.sum(0) > 0):
        if not (chosen & (y[:, c] == 1)).any():
            pool = np.flatnonzero(y[:, c] == 1)
            chosen[pool[rng.integers(len(pool))]] = True
    return sorted(int(i) for i in np.flatnonzero(chosen))


# -------------------------------------------------------------------------------------------- collator
def lead_subset_mask(lead_names: Sequence[str], subset: Sequence[str] | None) -> np.ndarray:
    """Boolean (leads,) mask of ``subset`` within the model's ``lead_names`` (all True for None)."""
    if subset is None:
        return np.ones(len(lead_names), dtype=bool)
    missing = [s for s in subset if s not in lead_names]
    if missing:
        raise ValueError(f"lead(s) {missing} are not among the model's leads {list(lead_names)}")
    return np.asarray([n in subset for n in lead_names], dtype=bool)


def without_kept_leads(ds, keep_leads) -> list[int]:
    """Indices of the examples of ``ds`` (a prepared split with ``lead_mask``) that have none of the leads
    of the ``keep_leads`` mask present: on that lead subset they hold no signal at all."""
    if keep_leads is None or len(ds) == 0:
        return []
    keep = np.asarray(keep_leads, dtype=bool)
    mask = np.asarray(ds.with_format("numpy")["lead_mask"]).astype(bool)
    return [int(i) for i in np.flatnonzero(~(mask & keep[None, :]).any(1))]


def drop_examples_without_kept_leads(ds, keep_leads, what: str = "the lead subset"):
    """``(ds without the examples that have none of the kept leads, names of those left out)``.

    Such an example holds only zeros once the other leads are hidden; scoring it would put a made-up
    prediction into the metric, and :class:`ECGDataCollator` refuses it. Callers report the names
    (``record`` column of prepared splits; ``example <i>`` without one)."""
    missing = without_kept_leads(ds, keep_leads)
    if not missing:
        return ds, []
    names = ds.with_format(None)["record"] if "record" in ds.column_names else None
    left_out = [str(names[i]) if names is not None else f"example {i}" for i in missing]
    gone = set(missing)
    kept = ds.select([i for i in range(len(ds)) if i not in gone])
    shown = ", ".join(left_out[:10]) + (f" and {len(left_out) - 10} more" if len(left_out) > 10 else "")
    logger.warning("%s: %d of %d record(s) have none of its leads present and are left out: %s",
                   what, len(left_out), len(ds), shown)
    return kept, left_out


@dataclass
class ECGDataCollator:
    """Batch ``input_values`` (padded to the longest), ``lead_mask`` and ``labels``.

    Args:
        problem_type: labels become float (multi-label, regression) or long (single-label).
        keep_leads: optional (leads,) boolean mask; other leads are zeroed in the signal *and* marked
            absent in ``lead_mask`` (evaluation on a lead subset, or training on one).
    """

    problem_type: str | None = "multi_label_classification"
    keep_leads: Any = None

    def __call__(self, features: list[dict]) -> dict:
        import torch

        xs = [torch.as_tensor(f["input_values"], dtype=torch.float32) for f in features]
        T = max(x.shape[-1] for x in xs)
        x = torch.zeros(len(xs), xs[0].shape[0], T)
        for i, xi in enumerate(xs):
            x[i, :, : xi.shape[-1]] = xi
        if "lead_mask" in features[0]:
            mask = torch.stack([torch.as_tensor(f["lead_mask"]) for f in features]).bool()
        else:
            mask = torch.ones(x.shape[:2], dtype=torch.bool)
        if self.keep_leads is not None:
            keep = torch.as_tensor(np.asarray(self.keep_leads), dtype=torch.bool)
            mask = mask & keep[None, :]
            x = x * keep[None, :, None].to(x.dtype)
            if not bool(mask.any(1).all()):  # callers leave such examples out first (drop_examples_without_kept_leads)
                bad = [str(features[i].get("record", f"batch position {i}")) for i in np.flatnonzero(~mask.any(1).numpy())]
                raise ValueError(f"{', '.join(bad)}: none of the kept leads is present; leave such records out "
                                 "first (ecgnat_hf.training.data.drop_examples_without_kept_leads)")
        batch = {"input_values": x, "lead_mask": mask.long()}
        if "beats" in features[0] and (self.keep_leads is None or bool(np.asarray(self.keep_leads).all())):
            batch.update(_stack_beat_tokens(features))
        # with leads hidden, precomputed beat tokens are dropped: BEAT-Net finds the beats again on the kept leads
        if "labels" in features[0]:
            y = torch.stack([torch.as_tensor(f["labels"]) for f in features])
            batch["labels"] = y.long() if self.problem_type == "single_label_classification" else y.float()
        return batch


def _stack_beat_tokens(features: list[dict]) -> dict:
    """Pad BEAT-Net beat tokens (beats, leads, samples) of each example to the longest and stack them."""
    import torch

    beats = [torch.as_tensor(f["beats"], dtype=torch.float32) for f in features]
    n = max(1, max(b.shape[0] for b in beats))
    out_b = torch.zeros(len(beats), n, *beats[0].shape[1:])
    out_m = torch.zeros(len(beats), n, dtype=torch.bool)
    out_r = torch.zeros(len(beats), n, 2)
    for i, (b, f) in enumerate(zip(beats, features)):
        k = b.shape[0]
        out_b[i, :k] = b
        out_m[i, :k] = torch.as_tensor(f["beat_mask"]).bool()
        out_r[i, :k] = torch.as_tensor(f["rr"], dtype=torch.float32).reshape(k, 2)
    return {"beats": out_b, "beat_mask": out_m, "rr": out_r}
