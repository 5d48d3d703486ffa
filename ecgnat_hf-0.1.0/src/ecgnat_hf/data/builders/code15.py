"""CODE-15 % (345,779 12-lead exams at 400 Hz, HDF5) as a ``datasets`` builder.

Usage::

    b = CODE15(data_dir="/data/code15", cache_dir="/tmp/hf")
    b.download_and_prepare(num_proc=4)
    ds = b.as_dataset()            # train / validation / test, split by patient; labels: 6 classes

``data_dir`` holds ``exams.csv`` and the parts ``exams_part0.hdf5`` ... ``exams_part17.hdf5`` (found anywhere
below ``data_dir``, e.g. each in the folder its zip unpacked to). Each part has ``tracings`` (n, 4096, 12)
float32 and ``exam_id`` (n,). ``exams.csv`` (exam_id, age, is_male, nn_predicted_age, 1dAVb, RBBB, LBBB,
SB, ST, AF, patient_id, death, timey, normal_ecg, trace_file) is the index.

* **Signal**: 400 Hz, leads DI, DII, DIII, aVR, aVL, aVF, V1-V6 (= I, II, III, aVR, aVL, aVF, V1-V6, the
  canonical order). Exams of 7 or 10 s are centred in 4096 samples with zeros; the leading and trailing
  samples where all 12 leads are zero are trimmed, so ``n_samples`` is the exam's real length.
* **Units**: the values are taken as mV (``signal_scale=1.0``), as the PhysioNet/CinC Challenge 2025
  organisers did when they converted CODE-15 % to WFDB (``units = "mV"``, gain 1000), and as the dataset
  authors' note "if the signal is in V it should be multiplied by 1000" implies. ``signal_scale`` multiplies
  the stored values if a copy of the data uses other units. See ``docs/corpora.md``.
* **Labels**: ``labels`` is multi-hot float32 over ``1dAVb, RBBB, LBBB, SB, ST, AF`` (``builder.label_names``),
  so ``ecgnat finetune --dataset code15`` fine-tunes on them.
* **Splits** by ``patient_id`` (:func:`~ecgnat_hf.data.builders.common.hash_split`): no patient is in two
  splits.
* **Reading**: each part is opened once per generator (per worker) and read run by run of consecutive rows
  (at most ``read_rows`` exams at a time), never a whole part.

The last row of every part (``exam_id`` 0, an all-zero tracing) is a placeholder, not an exam: it is left out
without a ``skipped`` row (``builder.placeholder_rows`` counts them). Every exam left out is reported in
``builder.skipped`` as ``(record, reason, message)`` with ``record`` written ``exams_partK.hdf5:EXAM_ID``:

* ``UnreadableRecordError``: the part cannot be opened or lacks ``tracings`` / ``exam_id`` (one row per exam
  that ``exams.csv`` puts in that part; one row ``exams_partK.hdf5`` when it names none), or reading the exam
  failed;
* ``MissingFileError``: ``exams.csv`` puts the exam in a part that is present but does not hold it;
* ``not in exams.csv``: an exam of a part that ``exams.csv`` does not list (no patient, no labels);
* ``duplicate record``: an ``exam_id`` seen before (in this or another part);
* ``LabelFileError``: a label cell of the exam's row is not True/False;
* ``NoUsableLeadError``: an all-zero exam, or one whose leads all fail the signal-quality check;
* ``InvalidSignalError``: every lead holds NaN (``invalid_leads="mask"``), or any does (``"skip"``).

A lead with NaN samples is masked by default (``invalid_leads="mask"``): dropped from ``signal`` /
``lead_names`` and named in ``masked_leads``, so the feature extractor marks it absent.
Exams that ``exams.csv`` places in parts absent from ``data_dir`` (a partial download) are not records of
this folder: they are counted in a warning, not reported one by one.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from ..errors import LabelFileError, MissingFileError, NoUsableLeadError, UnreadableRecordError
from ..records import ECGRecord
from .common import INVALID_LEAD_POLICIES, ECGBuilderConfig, ECGDatasetBuilder, hash_split, signal_feature

logger = logging.getLogger(__name__)

__all__ = ["CODE15", "CODE15Config", "CODE15_LABELS", "CODE15_LEADS", "CODE15_SAMPLING_RATE"]

CODE15_LABELS = ("1dAVb", "RBBB", "LBBB", "SB", "ST", "AF")
#: the file's DI, DII, DIII, aVR, aVL, aVF, V1-V6 in canonical spelling (the same order)
CODE15_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
CODE15_SAMPLING_RATE = 400.0
_PART_RE = re.compile(r"^exams_part(\d+)\.hdf5$")
_CHUNK = 1024  # exams per generator shard
_TRUE = {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}

_CITATION = """\
@dataset{ribeiro2021code15, title={CODE-15%: a large scale annotated dataset of 12-lead ECGs},
  author={Ribeiro, Antonio H. and Paixao, Gabriela M. M. and Lima, Emilly M. and others},
  year={2021}, publisher={Zenodo}, doi={10.5281/zenodo.4916206}}
@article{ribeiro2020automatic, title={Automatic diagnosis of the 12-lead ECG using a deep neural network},
  author={Ribeiro, Antonio H. and Ribeiro, Manoel Horta and Paixao, Gabriela M. M. and others},
  journal={Nature Communications}, volume={11}, pages={1760}, year={2020}}
"""


@dataclass
class CODE15Config(ECGBuilderConfig):
    """Options.

    Args:
        validation_fraction / test_fraction: about this fraction of the *patients* in each split.
        seed: seed of the patient hash.
        invalid_leads: ``"mask"`` (default) or ``"skip"`` for leads holding NaN (see the module docstring).
        signal_scale: mV per stored unit (1.0: the values are mV).
        parts: read only these part numbers (``(0, 1)``); default all found.
        read_rows: most exams read from HDF5 at once (memory: read_rows x 4096 x 12 x 4 bytes).
        min_samples: leave out exams shorter than this after trimming (``SignalTooShortError``).
    """

    validation_fraction: float = 0.05
    test_fraction: float = 0.05
    seed: int = 0
    invalid_leads: str = "mask"
    signal_scale: float = 1.0
    parts: tuple | None = None
    read_rows: int = 64
    min_samples: int = 1

    def validate(self) -> None:
        super().validate()
        if self.invalid_leads not in INVALID_LEAD_POLICIES:
            raise ValueError(f"invalid_leads must be one of {INVALID_LEAD_POLICIES}, got {self.invalid_leads!r}")
        hash_split(0, self.validation_fraction, self.test_fraction)
        if not np.isfinite(float(self.signal_scale)) or float(self.signal_scale) <= 0:
            raise ValueError(f"signal_scale must be a positive number (mV per stored unit), got {self.signal_scale}")
        if int(self.read_rows) < 1:
            raise ValueError(f"read_rows must be >= 1, got {self.read_rows}")
        if self.parts is not None:
            self.parts = tuple(int(p) for p in self.parts)


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("reading CODE-15 % needs h5py: pip install 'ecgnat-hf[corpora]' (or pip install h5py)") from None
    return h5py


def _bool_or_none(value):
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, float) and np.isnan(value):
        return None
    s = str(value).strip().lower()
    if s in ("", "nan", "none"):
        return None
    return _TRUE.get(s)


def _float_or_none(value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _runs(rows: np.ndarray, limit: int):
    """Consecutive runs ``(start, stop)`` of sorted row indices, each at most ``limit`` long."""
    start = prev = None
    for r in rows:
        r = int(r)
        if start is None:
            start = prev = r
        elif r == prev + 1 and r - start < limit:
            prev = r
        else:
            yield start, prev + 1
            start = prev = r
    if start is not None:
        yield start, prev + 1


class CODE15(ECGDatasetBuilder):
    """CODE-15 % (Ribeiro et al. 2021): 12-lead exams at 400 Hz with six labels, split by patient."""

    VERSION = datasets.Version("1.0.1")
    BUILDER_CONFIG_CLASS = CODE15Config
    BUILDER_CONFIGS = [CODE15Config(name="default", description="CODE-15 %, six labels, split by patient")]
    DEFAULT_CONFIG_NAME = "default"
    DEFAULT_WRITER_BATCH_SIZE = 64

    label_names = list(CODE15_LABELS)

    def __init__(self, *args, **kwargs):
        self.placeholder_rows = 0
        super().__init__(*args, **kwargs)

    def _info(self):
        feats = datasets.Features(
            {
                "record_id": datasets.Value("string"),
                "path": datasets.Value("string"),
                "exam_id": datasets.Value("int64"),
                "patient_id": datasets.Value("int64"),
                "age": datasets.Value("float32"),
                "sex": datasets.Value("string"),
                "nn_predicted_age": datasets.Value("float32"),
                "death": datasets.Value("bool"),
                "timey": datasets.Value("float32"),
                "normal_ecg": datasets.Value("bool"),
                "trace_file": datasets.Value("string"),
                "sampling_rate": datasets.Value("float32"),
                "n_samples": datasets.Value("int32"),
                "lead_names": datasets.List(datasets.Value("string")),
                "masked_leads": datasets.List(datasets.Value("string")),
                "signal": signal_feature(),
                "label_ids": datasets.List(datasets.ClassLabel(names=list(CODE15_LABELS))),
                "labels": datasets.List(datasets.Value("float32"), length=len(CODE15_LABELS)),
            }
        )
        return datasets.DatasetInfo(
            description=("CODE-15 % exams at 400 Hz with the zero padding trimmed, 12 leads in canonical order, signal "
                         "in mV; `labels` is multi-hot over 1dAVb, RBBB, LBBB, SB, ST, AF; split by patient."),
            features=feats,
            homepage="https://zenodo.org/records/4916206",
            citation=_CITATION,
            license="CC-BY-4.0",
        )

    # ------------------------------------------------------------------ the index
    def _root(self) -> Path:
        if not self.config.data_dir:
            raise ValueError("CODE15 needs data_dir=<folder with exams.csv and exams_part*.hdf5>")
        root = Path(self.config.data_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: not a folder")
        return root

    def _parts(self, root: Path) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for p in sorted(root.rglob("exams_part*.hdf5")):
            m = _PART_RE.match(p.name)
            if m is None:
                continue
            if self.config.parts is not None and int(m.group(1)) not in self.config.parts:
                continue
            if p.name in found:
                raise ValueError(f"two copies of {p.name} under {root}: {found[p.name]} and {p}")
            found[p.name] = p
        return dict(sorted(found.items(), key=lambda kv: int(_PART_RE.match(kv[0]).group(1))))

    def _exams_table(self, root: Path):
        import pandas as pd

        matches = sorted(root.rglob("exams.csv"))
        if not matches:
            raise FileNotFoundError(f"{root}: exams.csv not found (the CODE-15 % index of exams, patients and labels)")
        f = matches[0]
        try:
            df = pd.read_csv(f, dtype=str, keep_default_na=False)
        except Exception as exc:  # noqa: BLE001
            raise LabelFileError(f, f"cannot read the exams table: {exc}") from exc
        need = ["exam_id", "patient_id", *CODE15_LABELS]
        missing = [c for c in need if c not in df.columns]
        if missing:
            raise LabelFileError(f, f"missing column(s) {missing}; expected exam_id, patient_id and the labels "
                                 f"{', '.join(CODE15_LABELS)}")
        ids = pd.to_numeric(df["exam_id"], errors="coerce")
        if ids.isna().any():
            line = int(np.flatnonzero(ids.isna().to_numpy())[0]) + 2
            raise LabelFileError(f, f"exam_id {df['exam_id'].iloc[line - 2]!r} is not a number", row=line,
                                 column="exam_id")
        df["exam_id"] = ids.astype("int64")
        df["csv_line"] = np.arange(2, len(df) + 2)
        dup = df["exam_id"].duplicated(keep="first")
        if dup.any():
            first = df[dup].iloc[0]
            raise LabelFileError(f, f"exam_id {int(first['exam_id'])} appears twice", row=int(first["csv_line"]),
                                 column="exam_id")
        self._exams_csv = f
        return df.set_index("exam_id", drop=False)

    def _split_generators(self, dl_manager):
        import pandas as pd

        h5py = _h5py()
        cfg = self.config
        root = self._root()
        table = self._exams_table(root)
        parts = self._parts(root)
        if not parts:
            raise FileNotFoundError(f"no exams_part*.hdf5 under {root}"
                                    + (f" for parts {cfg.parts}" if cfg.parts is not None else ""))
        has_trace = "trace_file" in table.columns
        rows = []  # (part, row, exam_id)
        seen: dict[int, str] = {}
        self.placeholder_rows = 0
        for name, path in parts.items():
            try:
                with h5py.File(path, "r") as h5:
                    if "tracings" not in h5 or "exam_id" not in h5:
                        raise KeyError(f"datasets {sorted(h5.keys())}; expected 'tracings' and 'exam_id'")
                    tr, ids = h5["tracings"], h5["exam_id"]
                    if tr.ndim != 3 or tr.shape[2] != len(CODE15_LEADS) or tr.shape[0] != ids.shape[0]:
                        raise ValueError(f"tracings {tr.shape} and exam_id {ids.shape}; expected (n, samples, 12) "
                                         "and (n,)")
                    exam_ids = np.asarray(ids[()], dtype=np.int64)
            except Exception as exc:  # noqa: BLE001 - h5py raises many kinds for broken files
                msg = f"{name}: cannot read this part ({type(exc).__name__}: {exc})"
                listed = table.index[table["trace_file"].str.strip() == name] if has_trace else []
                if len(listed):
                    for eid in listed:
                        self._skip(f"{name}:{int(eid)}", UnreadableRecordError(path, msg))
                else:
                    self._skip(name, UnreadableRecordError(path, msg))
                logger.warning("CODE15: %s", msg)
                continue
            found = set()
            for r, eid in enumerate(exam_ids):
                eid = int(eid)
                rec = f"{name}:{eid}"
                if eid == 0:  # the placeholder row that ends every part
                    self.placeholder_rows += 1
                    continue
                if eid in seen:
                    self._skip(rec, f"exam_id {eid} already read from {seen[eid]}", reason="duplicate record")
                    continue
                seen[eid] = name
                found.add(eid)
                if eid not in table.index:
                    self._skip(rec, f"exam {eid} of {name} has no row in {self._exams_csv.name} (no patient, no labels)",
                               reason="not in exams.csv")
                    continue
                rows.append((name, r, eid))
            if has_trace:
                for eid in table.index[table["trace_file"].str.strip() == name]:
                    if int(eid) not in found:
                        self._skip(f"{name}:{int(eid)}", MissingFileError(
                            path, f"{self._exams_csv.name} puts exam {int(eid)} in {name}, which does not hold it"))
        if has_trace:
            absent = table[~table["trace_file"].str.strip().isin(list(parts)) & ~table.index.isin(list(seen))]
            if len(absent):
                files = sorted(set(absent["trace_file"]))
                logger.warning("CODE15: %s lists %d exam(s) in part(s) not under %s (%s%s): not included",
                               self._exams_csv.name, len(absent), root, ", ".join(files[:5]),
                               " ..." if len(files) > 5 else "")
        if self.placeholder_rows:
            logger.info("CODE15: %d placeholder row(s) (exam_id 0) left out", self.placeholder_rows)
        idx = pd.DataFrame(rows, columns=["part", "row", "exam_id"])
        if cfg.record_ids is not None:
            wanted = {str(r) for r in cfg.record_ids}
            idx = idx[idx["exam_id"].astype(str).isin(wanted) | (idx["part"] + ":" + idx["exam_id"].astype(str)).isin(wanted)]
        if cfg.max_records is not None:
            idx = idx.iloc[: int(cfg.max_records)]
        if idx.empty:
            raise ValueError(f"no CODE-15 % exams found under {root}")
        meta = table.loc[idx["exam_id"].to_numpy()]
        idx = idx.reset_index(drop=True)
        for c in meta.columns:
            if c != "exam_id":  # label columns get identifier names (itertuples renames "1dAVb")
                key = f"label_{CODE15_LABELS.index(c)}" if c in CODE15_LABELS else c
                idx[key] = meta[c].to_numpy()
        groups = [p if str(p).strip() not in ("", "nan") else f"exam:{e}" for p, e in zip(idx["patient_id"], idx["exam_id"])]
        split = np.array([hash_split(g, cfg.validation_fraction, cfg.test_fraction, cfg.seed) for g in groups])
        gens = []
        for s in ("train", "validation", "test"):
            part = idx[split == s]
            if part.empty:
                logger.warning("CODE15: the '%s' split is empty and omitted (too few patients)", s)
                continue
            chunks = []
            for _, by_part in part.groupby("part", sort=False):
                by_part = by_part.sort_values("row")
                chunks.extend(by_part.iloc[i:i + _CHUNK] for i in range(0, len(by_part), _CHUNK))
            gens.append(datasets.SplitGenerator(name=s, gen_kwargs={"chunks": chunks}))
        return gens

    # ------------------------------------------------------------------ examples
    def _labels(self, row):
        y = np.zeros(len(CODE15_LABELS), dtype=np.float32)
        for i, c in enumerate(CODE15_LABELS):
            cell = getattr(row, f"label_{i}")
            v = _TRUE.get(str(cell).strip().lower())
            if v is None:
                csv_file = getattr(self, "_exams_csv", None) or "exams.csv"
                raise LabelFileError(csv_file, f"label {c} of exam {int(row.exam_id)} is {cell!r}, not True/False",
                                     row=int(row.csv_line), column=c)
            y[i] = float(v)
        return y

    def _example(self, row, x: np.ndarray):
        """One exam's (samples, 12) tracing -> the example, or None after reporting it."""
        cfg = self.config
        name = f"{row.part}:{int(row.exam_id)}"
        try:
            y = self._labels(row)
        except LabelFileError as exc:  # the message keeps the file, line and column
            self._skip(name, str(exc), reason="LabelFileError")
            return None
        x = np.asarray(x, dtype=np.float32)
        nonzero = np.flatnonzero((x != 0).any(axis=1))  # NaN counts as non-zero: it is not padding
        if nonzero.size == 0:
            self._skip(name, NoUsableLeadError(name, f"all {x.shape[0]} samples of every lead are zero (an empty exam)"))
            return None
        x = x[nonzero[0]: nonzero[-1] + 1].T
        if float(cfg.signal_scale) != 1.0:
            x = x * np.float32(cfg.signal_scale)
        rec = ECGRecord(signal=np.ascontiguousarray(x), sampling_rate=CODE15_SAMPLING_RATE,
                        lead_names=list(CODE15_LEADS), record_id=str(int(row.exam_id)), path=name,
                        metadata={"trim": (int(nonzero[0]), int(nonzero[-1]) + 1)})
        read = self._accept_or_skip(rec, name, min_samples=cfg.min_samples, invalid_leads=cfg.invalid_leads)
        if read is None:
            return None
        rec, signal, leads = read
        if rec.metadata.get("masked_leads"):
            logger.info("%s: lead(s) %s hold NaN and are masked", name, ", ".join(rec.metadata["masked_leads"]))
        pid = _float_or_none(row.patient_id)
        male = _bool_or_none(getattr(row, "is_male", None))
        return {
            "record_id": rec.record_id,
            "path": name,
            "exam_id": int(row.exam_id),
            "patient_id": int(pid) if pid is not None else None,
            "age": _float_or_none(getattr(row, "age", None)),
            "sex": None if male is None else ("male" if male else "female"),
            "nn_predicted_age": _float_or_none(getattr(row, "nn_predicted_age", None)),
            "death": _bool_or_none(getattr(row, "death", None)),
            "timey": _float_or_none(getattr(row, "timey", None)),
            "normal_ecg": _bool_or_none(getattr(row, "normal_ecg", None)),
            "trace_file": row.part,
            "sampling_rate": CODE15_SAMPLING_RATE,
            "n_samples": int(signal.shape[1]),
            "lead_names": leads,
            "masked_leads": rec.metadata.get("masked_leads", []),
            "signal": signal,
            "label_ids": [int(i) for i in np.flatnonzero(y)],
            "labels": y,
        }

    def _generate_examples(self, chunks):
        self._start_generation()
        h5py = _h5py()
        root = self._root()
        parts = self._parts(root)
        files: dict[str, object] = {}  # each part opened once per generator (per worker)
        try:
            for chunk in chunks:
                for part, by_part in chunk.groupby("part", sort=False):
                    if part not in files:
                        try:
                            files[part] = h5py.File(parts[part], "r")
                        except Exception as exc:  # noqa: BLE001 - vanished or broken since the index was read
                            for row in by_part.itertuples(index=False):
                                self._skip(f"{part}:{int(row.exam_id)}", UnreadableRecordError(
                                    parts.get(part, part), f"cannot open {part} ({type(exc).__name__}: {exc})"))
                            files[part] = None
                            continue
                    h5 = files[part]
                    if h5 is None:
                        for row in by_part.itertuples(index=False):
                            self._skip(f"{part}:{int(row.exam_id)}", UnreadableRecordError(
                                parts.get(part, part), f"cannot open {part}"))
                        continue
                    tracings = h5["tracings"]
                    by_row = {int(r.row): r for r in by_part.itertuples(index=False)}
                    for a, b in _runs(np.sort(np.fromiter(by_row, dtype=np.int64)), int(self.config.read_rows)):
                        try:
                            block = tracings[a:b]
                        except Exception:  # noqa: BLE001 - a damaged chunk: read the run row by row
                            block = None
                        for i in range(a, b):
                            row = by_row[i]
                            if block is not None:
                                x = block[i - a]
                            else:
                                try:
                                    x = tracings[i]
                                except Exception as exc:  # noqa: BLE001
                                    self._skip(f"{part}:{int(row.exam_id)}", UnreadableRecordError(
                                        parts[part], f"row {i} of {part} cannot be read ({type(exc).__name__}: {exc})"))
                                    continue
                            ex = self._example(row, x)
                            if ex is not None:
                                yield ex["path"], ex
        finally:
            for h5 in files.values():
                if h5 is not None:
                    h5.close()
