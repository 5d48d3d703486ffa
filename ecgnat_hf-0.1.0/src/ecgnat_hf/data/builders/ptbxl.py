"""PTB-XL as a ``datasets`` builder, with the benchmark's six label tasks and its folds.

Usage::

    from ecgnat_hf.data.builders import PTBXL
    b = PTBXL(config_name="superdiagnostic", data_dir="/data/ptb-xl/1.0.3", sampling_rate=100,
              cache_dir="/tmp/hf")
    b.download_and_prepare()
    ds = b.as_dataset()                      # DatasetDict: train (folds 1-8), validation (9), test (10)
    ds = ds.with_format("torch")             # signal: (12, 1000) float32 tensors, labels: multi-hot

Labels follow the benchmark exactly (see :mod:`ecgnat_hf.data.labels`): classes sorted as
``MultiLabelBinarizer`` sorts them, counted over the whole table, records without a label for the
task left out (they are listed in ``builder.unlabelled``, not in ``builder.skipped``, since leaving
them out is the task's definition, not a problem with the record). Records listed in the table but
missing or unreadable on disk, and records with no usable lead (all flat or saturated: the check of
:mod:`ecgnat_hf.data.quality` that every builder and the feature extractor apply; ``quality_check=False``
turns it off), are reported in ``builder.skipped`` with the reason.

A split whose folds hold no record (the shared subset has no fold 10) is omitted with a warning;
pass e.g. ``test_folds=(9,)`` to evaluate on fold 9 instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from ..errors import InvalidSignalError, SamplingRateError
from ..labels import PTBXL_TASKS, aggregate_ptbxl_labels, load_scp_statements, parse_scp_codes
from ..leads import CANONICAL_LEADS
from .common import ECGBuilderConfig, ECGDatasetBuilder, _float_or_none, normalize_sex, signal_feature

logger = logging.getLogger(__name__)

__all__ = ["PTBXL", "PTBXLConfig"]

_CITATION = """\
@article{wagner2020ptbxl, title={PTB-XL, a large publicly available electrocardiography dataset},
  author={Wagner, Patrick and Strodthoff, Nils and Bousseljot, Ralf-Dieter and others},
  journal={Scientific Data}, volume={7}, pages={154}, year={2020}}
@article{strodthoff2021deep, title={Deep Learning for ECG Analysis: Benchmarks and Insights from PTB-XL},
  author={Strodthoff, Nils and Wagner, Patrick and Schaeffter, Tobias and Samek, Wojciech},
  journal={IEEE Journal of Biomedical and Health Informatics}, volume={25}, number={5}, year={2021}}
"""


@dataclass
class PTBXLConfig(ECGBuilderConfig):
    """PTB-XL options.

    Args:
        task: benchmark task ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form",
            "rhythm"); defaults to the config name.
        sampling_rate: 100 (``records100``, ``filename_lr``) or 500 (``records500``, ``filename_hr``).
        train_folds / validation_folds / test_folds: ``strat_fold`` values of each split.
        min_samples: keep labels occurring more than this many times (benchmark default 0).
        classes: fix the class list (e.g. to the full-database list) instead of deriving it.
        drop_unlabelled: leave out records with no label for the task (the benchmark does).
    """

    task: str | None = None
    sampling_rate: int = 100
    train_folds: tuple = (1, 2, 3, 4, 5, 6, 7, 8)
    validation_folds: tuple = (9,)
    test_folds: tuple = (10,)
    min_samples: int = 0
    classes: tuple | None = None
    drop_unlabelled: bool = True

    def validate(self) -> None:
        super().validate()
        if self.task is None:
            self.task = self.name if self.name in PTBXL_TASKS else "superdiagnostic"
        if self.task not in PTBXL_TASKS:
            raise ValueError(f"unknown PTB-XL task {self.task!r}; expected one of {PTBXL_TASKS}")
        if int(self.sampling_rate) not in (100, 500):
            raise ValueError(f"PTB-XL comes at 100 or 500 Hz, got sampling_rate={self.sampling_rate}")
        for name in ("train_folds", "validation_folds", "test_folds"):
            setattr(self, name, tuple(int(f) for f in getattr(self, name)))


class PTBXL(ECGDatasetBuilder):
    """PTB-XL (Wagner et al. 2020) with the benchmark tasks of Strodthoff et al. 2020."""

    VERSION = datasets.Version("1.0.3")
    BUILDER_CONFIG_CLASS = PTBXLConfig
    BUILDER_CONFIGS = [PTBXLConfig(name=t, task=t, description=f"PTB-XL benchmark task '{t}'") for t in PTBXL_TASKS]
    DEFAULT_CONFIG_NAME = "superdiagnostic"
    DEFAULT_WRITER_BATCH_SIZE = 256

    # ------------------------------------------------------------------ table and labels
    def _data_dir(self) -> Path:
        if not self.config.data_dir:
            raise ValueError("PTBXL needs data_dir=<folder with ptbxl_database.csv and records100/500>")
        d = Path(self.config.data_dir)
        if not (d / "ptbxl_database.csv").exists():
            raise FileNotFoundError(f"{d}: ptbxl_database.csv not found (is this the PTB-XL folder?)")
        return d

    def _table(self):
        if getattr(self, "_cached_table", None) is None:
            import pandas as pd

            d = self._data_dir()
            df = pd.read_csv(d / "ptbxl_database.csv", index_col="ecg_id")
            df["scp_codes"] = df["scp_codes"].apply(parse_scp_codes)
            statements = load_scp_statements(d / "scp_statements.csv")
            agg = aggregate_ptbxl_labels(df, statements, self.config.task, self.config.min_samples)
            classes = list(self.config.classes) if self.config.classes is not None else agg.classes
            self._cached_table = (df, agg, classes)
        return self._cached_table

    @property
    def label_names(self) -> list[str]:
        return list(self._table()[2])

    @property
    def unlabelled(self) -> list[int]:
        """ecg_ids without any label for the task (left out when ``drop_unlabelled``)."""
        return list(self._table()[1].dropped)

    def _info(self):
        _, _, classes = self._table()
        n = 1000 if int(self.config.sampling_rate) == 100 else 5000
        features = datasets.Features(
            {
                "record_id": datasets.Value("string"),
                "ecg_id": datasets.Value("int32"),
                "patient_id": datasets.Value("int64"),
                "age": datasets.Value("float32"),
                "sex": datasets.Value("string"),
                "strat_fold": datasets.Value("int8"),
                "sampling_rate": datasets.Value("float32"),
                "lead_names": datasets.List(datasets.Value("string")),
                "signal": signal_feature(len(CANONICAL_LEADS), n),
                "scp_codes": datasets.List(datasets.Value("string")),
                "scp_likelihoods": datasets.List(datasets.Value("float32")),
                "label_ids": datasets.List(datasets.ClassLabel(names=list(classes))),
                "labels": datasets.List(datasets.Value("float32"), length=len(classes)),
            }
        )
        return datasets.DatasetInfo(
            description=(
                f"PTB-XL, benchmark task '{self.config.task}' ({len(classes)} classes), "
                f"{self.config.sampling_rate} Hz, 12 leads in canonical order, signal in mV. "
                "`labels` is multi-hot float32 over `label_ids` names."
            ),
            features=features,
            homepage="https://physionet.org/content/ptb-xl/",
            citation=_CITATION,
            license="CC-BY-4.0",
        )

    # ------------------------------------------------------------------ splits and examples
    def _split_generators(self, dl_manager):
        df, agg, _ = self._table()
        cfg = self.config
        ids = [int(i) for i in df.index]
        if cfg.drop_unlabelled:
            ids = [i for i in ids if i in agg.labels]
        ids = self._select(sorted(ids))
        folds = df["strat_fold"]
        gens = []
        for split, wanted in (
            (datasets.Split.TRAIN, cfg.train_folds),
            (datasets.Split.VALIDATION, cfg.validation_folds),
            (datasets.Split.TEST, cfg.test_folds),
        ):
            if not wanted:
                continue
            split_ids = [i for i in ids if int(folds.loc[i]) in wanted]
            if not split_ids:
                logger.warning(
                    "PTBXL: no record in folds %s, so the '%s' split is omitted (choose other folds, "
                    "e.g. test_folds=(9,), if this data subset lacks them)", wanted, split,
                )
                continue
            gens.append(datasets.SplitGenerator(name=split, gen_kwargs={"ecg_ids": split_ids}))
        if not gens:
            raise ValueError(f"PTBXL: no records in any requested fold under {cfg.data_dir}")
        return gens

    def _generate_examples(self, ecg_ids):
        self._start_generation()
        df, agg, classes = self._table()
        cfg = self.config
        d = self._data_dir()
        col = "filename_lr" if int(cfg.sampling_rate) == 100 else "filename_hr"
        n = 1000 if int(cfg.sampling_rate) == 100 else 5000
        class_index = {c: i for i, c in enumerate(classes)}
        expected = (len(CANONICAL_LEADS), n)

        def validate(rec, signal, leads):
            if abs(rec.sampling_rate - float(cfg.sampling_rate)) > 1e-6:
                raise SamplingRateError(rec.path, f"sampling rate {rec.sampling_rate:g} Hz, expected {cfg.sampling_rate}")
            if signal.shape != expected:
                raise InvalidSignalError(rec.path, f"signal shape {signal.shape}, expected {expected}")

        for ecg_id in ecg_ids:
            row = df.loc[ecg_id]
            # the shared path of every builder: reader errors, the no-usable-lead quality check, then
            # PTB-XL's own expectations; each left-out record is reported in ``skipped`` with its reason
            read = self._read_or_skip(d / str(row[col]), validate=validate)
            if read is None:
                continue
            rec, signal, leads = read
            labs = [c for c in agg.labels.get(ecg_id, []) if c in class_index]
            y = np.zeros(len(classes), dtype=np.float32)
            for c in labs:
                y[class_index[c]] = 1.0
            codes = row["scp_codes"]
            pid = _float_or_none(row.get("patient_id"))
            yield int(ecg_id), {
                "record_id": Path(str(row[col])).name,
                "ecg_id": int(ecg_id),
                "patient_id": int(pid) if pid is not None else None,
                "age": _float_or_none(row.get("age")),
                "sex": normalize_sex(row.get("sex")),
                "strat_fold": int(row["strat_fold"]),
                "sampling_rate": float(rec.sampling_rate),
                "lead_names": leads,
                "signal": signal,
                "scp_codes": list(codes.keys()),
                "scp_likelihoods": [float(v) for v in codes.values()],
                "label_ids": [class_index[c] for c in labs],
                "labels": y,
            }
