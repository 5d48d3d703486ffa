"""A user's own folder of ECG records (WFDB, optionally MATLAB) as a ``datasets`` builder.

Usage::

    b = ECGFolder(data_dir="my_ecgs", labels_file="my_ecgs/labels.csv", label_type="multi_label",
                  cache_dir="/tmp/hf")
    b.download_and_prepare(); ds = b.as_dataset()   # train / validation / test

Labels CSV
----------
* ``record`` column (``record_column``): the record name (file stem, ``00001_lr``) or its path
  relative to ``data_dir`` without extension (``g1/E00001``);
* either a ``labels`` column (``labels_column``) with labels separated by ``label_separator``
  (default ``";"``), or one 0/1 column per class (every other column that is not the record,
  patient or split column);
* optional ``patient`` column (``patient_column``; ``patient``/``patient_id`` found automatically):
  splits are then made by patient, so no patient appears in two splits;
* optional ``split`` column with ``train``/``validation``/``test`` to fix the split yourself.

The table is parsed strictly (:func:`ecgnat_hf.data.labels.read_label_table`): 0/1 columns take only
unambiguous values (``0``/``1``, ``true``/``false``, ``yes``/``no``), and an empty label cell or two
conflicting rows for one record raise :class:`~ecgnat_hf.data.errors.LabelFileError` naming the file,
line and column unless ``empty_labels`` (``"negative"``, ``"skip"``) or ``duplicate_rows`` (``"first"``,
``"last"``, ``"skip"``) says what they mean. ``labels_encoding`` (default UTF-8) is the file's encoding.

``label_type="multi_label"``: ``labels`` is multi-hot float32 (BCE); ``"single_label"``: ``labels``
is a ``ClassLabel`` int (cross-entropy) and a record with several labels is reported in ``skipped``.
Without a labels file the folder is unlabelled (one ``train`` split, for pretraining).

Splits are drawn with a fixed ``seed``: groups (patients, else records) are shuffled and assigned
so that the validation/test fractions of *groups* are ``validation_fraction``/``test_fraction``.
Records on disk but absent from the CSV, rows of the CSV without a record on disk, unreadable records
and rows with unknown labels are all listed in ``builder.skipped`` with the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from ..labels import read_label_table
from .common import ECGBuilderConfig, ECGDatasetBuilder, _float_or_none, find_records, normalize_sex, signal_feature

logger = logging.getLogger(__name__)

__all__ = ["ECGFolder", "ECGFolderConfig", "group_split"]

_SPLITS = ("train", "validation", "test")


def group_split(groups: list, validation_fraction: float, test_fraction: float, seed: int = 0) -> dict:
    """Assign every distinct group to a split: ``{group: "train"|"validation"|"test"}``.

    Groups are sorted (deterministic regardless of input order), shuffled with ``seed``; the first
    ``round(test_fraction * n)`` go to test, the next ``round(validation_fraction * n)`` to
    validation (at least one each when the fraction is > 0 and at least three groups exist).
    """
    uniq = sorted({str(g) for g in groups})
    n = len(uniq)
    rng = np.random.default_rng(seed)
    order = [uniq[i] for i in rng.permutation(n)]

    def count(frac):
        if frac <= 0 or n == 0:
            return 0
        k = int(round(frac * n))
        return max(k, 1) if n >= 3 else k

    n_test, n_val = count(test_fraction), count(validation_fraction)
    if n_test + n_val >= n and n > 0:
        raise ValueError(f"{n} group(s) cannot fill validation/test fractions {validation_fraction}/{test_fraction}")
    out = {}
    for i, g in enumerate(order):
        out[g] = "test" if i < n_test else ("validation" if i < n_test + n_val else "train")
    return out


@dataclass
class ECGFolderConfig(ECGBuilderConfig):
    labels_file: str | None = None
    label_type: str = "multi_label"  # or "single_label"
    record_column: str = "record"
    labels_column: str = "labels"
    patient_column: str | None = None
    split_column: str = "split"
    label_separator: str = ";"
    classes: tuple | None = None
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    include_matlab: bool = False
    matlab_sampling_rate: float | None = None
    labels_encoding: str = "utf-8"
    empty_labels: str = "error"  # or "negative", "skip"
    duplicate_rows: str = "error"  # or "first", "last", "skip"

    def validate(self) -> None:
        super().validate()
        from ..labels import DUPLICATE_ROW_POLICIES, EMPTY_LABEL_POLICIES

        if self.empty_labels not in EMPTY_LABEL_POLICIES:
            raise ValueError(f"empty_labels must be one of {EMPTY_LABEL_POLICIES}, got {self.empty_labels!r}")
        if self.duplicate_rows not in DUPLICATE_ROW_POLICIES:
            raise ValueError(f"duplicate_rows must be one of {DUPLICATE_ROW_POLICIES}, got {self.duplicate_rows!r}")
        if self.label_type not in ("multi_label", "single_label"):
            raise ValueError(f"label_type must be 'multi_label' or 'single_label', got {self.label_type!r}")
        if not 0 <= self.validation_fraction < 1 or not 0 <= self.test_fraction < 1:
            raise ValueError("validation_fraction and test_fraction must be in [0, 1)")


class ECGFolder(ECGDatasetBuilder):
    """Records found recursively under ``data_dir`` plus an optional labels CSV."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = ECGFolderConfig
    BUILDER_CONFIGS = [ECGFolderConfig(name="default")]
    DEFAULT_CONFIG_NAME = "default"
    DEFAULT_WRITER_BATCH_SIZE = 64

    # ------------------------------------------------------------------ labels table
    def _table(self):
        if getattr(self, "_cached_table", None) is not None:
            return self._cached_table
        cfg = self.config
        if not cfg.labels_file:
            self._cached_table = None
            return None
        t = read_label_table(
            cfg.labels_file, record_column=cfg.record_column, labels_column=cfg.labels_column,
            patient_column=cfg.patient_column, split_column=cfg.split_column, label_separator=cfg.label_separator,
            classes=cfg.classes, encoding=cfg.labels_encoding, empty_labels=cfg.empty_labels,
            duplicate_rows=cfg.duplicate_rows,
        )
        for note in t.notes:
            logger.warning("%s: %s", cfg.labels_file, note)
        self._cached_table = {"rows": t.rows, "classes": t.classes, "patient_column": t.patient_column,
                              "skipped": t.skipped}
        return self._cached_table

    @property
    def label_names(self) -> list[str]:
        t = self._table()
        return list(t["classes"]) if t else []

    def _info(self):
        t = self._table()
        feats = {
            "record_id": datasets.Value("string"),
            "path": datasets.Value("string"),
            "patient_id": datasets.Value("string"),
            "age": datasets.Value("float32"),
            "sex": datasets.Value("string"),
            "sampling_rate": datasets.Value("float32"),
            "n_samples": datasets.Value("int32"),
            "lead_names": datasets.List(datasets.Value("string")),
            "signal": signal_feature(),
        }
        if t is not None:
            names = list(t["classes"])
            feats["label_text"] = datasets.List(datasets.Value("string"))
            if self.config.label_type == "single_label":
                feats["labels"] = datasets.ClassLabel(names=names)
            else:
                feats["label_ids"] = datasets.List(datasets.ClassLabel(names=names))
                feats["labels"] = datasets.List(datasets.Value("float32"), length=len(names))
        return datasets.DatasetInfo(
            description="ECG records from a local folder" + (" with labels" if t is not None else " (unlabelled)"),
            features=datasets.Features(feats),
        )

    # ------------------------------------------------------------------ splits
    def _match(self, recs: list[Path]):
        """Pair records on disk with CSV rows; report both kinds of leftovers."""
        root = Path(self.config.data_dir)
        t = self._table()
        items = []
        if t is None:
            return [(str(r), None) for r in recs]
        rows = t["rows"]
        left_out = {}
        for key, reason, msg in t.get("skipped", []):
            left_out[key] = (reason, msg)
        used = set()
        for r in recs:
            rel = r.relative_to(root)
            rel_key = str(rel.with_suffix("") if rel.suffix.lower() == ".mat" else rel).replace("\\", "/")
            stem = r.stem if r.suffix.lower() == ".mat" else r.name
            key = rel_key if rel_key in rows else (stem if stem in rows else None)
            if key is None and (rel_key in left_out or stem in left_out):
                reason, msg = left_out.get(rel_key) or left_out[stem]
                self._skip(r, msg, reason=reason)
                continue
            if key is None:
                self._skip(r, f"{rel_key}: no row in the labels file {self.config.labels_file}", reason="not in labels file")
                continue
            if key in used:
                self._skip(r, f"labels row '{key}' already matched another record", reason="duplicate record name")
                continue
            used.add(key)
            items.append((str(r), key))
        for key in rows:
            if key not in used:
                self._skip(root / key, f"listed in {self.config.labels_file} but no record found under {root}",
                           reason="MissingFileError")
        return items

    def _split_generators(self, dl_manager):
        cfg = self.config
        if not cfg.data_dir or not Path(cfg.data_dir).is_dir():
            raise ValueError(f"ECGFolder needs data_dir=<an existing folder>, got {cfg.data_dir!r}")
        recs = find_records(cfg.data_dir, include_matlab=cfg.include_matlab)
        t = self._table()
        items = self._select(self._match(recs), key=lambda it: Path(it[0]).stem if it[0].endswith(".mat") else Path(it[0]).name)
        if not items:
            raise ValueError(f"no usable records found under {cfg.data_dir}")
        if t is None:
            return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"items": items})]
        rows = t["rows"]
        fixed = {k: rows[k]["split"] for _, k in items if rows[k]["split"]}
        bad = {v for v in fixed.values() if v not in _SPLITS}
        if bad:
            raise ValueError(f"{cfg.labels_file}: unknown split name(s) {sorted(bad)}; use {_SPLITS}")
        group_of = {k: (rows[k]["patient"] or k) if t["patient_column"] else k for _, k in items}
        free = [group_of[k] for _, k in items if k not in fixed]
        assign = group_split(free, cfg.validation_fraction, cfg.test_fraction, cfg.seed) if free else {}
        by_split = {s: [] for s in _SPLITS}
        for path, k in items:
            by_split[fixed.get(k) or assign[str(group_of[k])]].append((path, k))
        gens = []
        for s in _SPLITS:
            if by_split[s]:
                gens.append(datasets.SplitGenerator(name=s, gen_kwargs={"items": by_split[s]}))
            elif (s == "validation" and cfg.validation_fraction > 0) or (s == "test" and cfg.test_fraction > 0):
                logger.warning("ECGFolder: the '%s' split is empty and omitted (too few records or patients)", s)
        return gens

    def _generate_examples(self, items):
        self._start_generation()
        cfg = self.config
        t = self._table()
        classes = list(t["classes"]) if t else []
        cindex = {c: i for i, c in enumerate(classes)}
        for path, key in items:
            mat = {"sampling_rate": cfg.matlab_sampling_rate} if path.lower().endswith(".mat") else {}
            read = self._read_or_skip(path, **mat)
            if read is None:
                continue
            rec, signal, leads = read
            row = t["rows"][key] if t else {}
            age = _float_or_none(row.get("age")) if row.get("age") not in (None, "") else _float_or_none(rec.metadata.get("age"))
            sex = normalize_sex(row.get("sex")) if row.get("sex") else normalize_sex(rec.metadata.get("sex"))
            ex = {
                "record_id": rec.record_id,
                "path": str(Path(path).relative_to(cfg.data_dir)),
                "patient_id": row.get("patient") or None,
                "age": age,
                "sex": sex,
                "sampling_rate": float(rec.sampling_rate),
                "n_samples": int(signal.shape[1]),
                "lead_names": leads,
                "signal": signal,
            }
            if t is not None:
                labs = row["labels"]
                unknown = [c for c in labs if c not in cindex]
                if unknown:
                    self._skip(path, f"labels {unknown} not in the class list {classes}", reason="unknown label")
                    continue
                ex["label_text"] = labs
                if cfg.label_type == "single_label":
                    if len(labs) != 1:
                        self._skip(path, f"single_label needs exactly one label, got {labs}", reason="not single-label")
                        continue
                    ex["labels"] = cindex[labs[0]]
                else:
                    y = np.zeros(len(classes), dtype=np.float32)
                    for c in labs:
                        y[cindex[c]] = 1.0
                    ex["label_ids"] = [cindex[c] for c in labs]
                    ex["labels"] = y
            yield key or path, ex
