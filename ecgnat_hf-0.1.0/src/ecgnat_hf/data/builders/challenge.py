"""PhysioNet/CinC Challenge 2020/2021 (12-lead ECG classification) as a ``datasets`` builder.

``data_dir`` is searched recursively for ``.hea`` files (the official releases nest them by source
and by part: ``training/georgia/g1/E00001.hea``). Each example keeps:

* ``dx``: every SNOMED-CT code of the ``# Dx:`` header line, as written (unscored codes kept);
* ``labels``: multi-hot float32 over the 26 scored classes of the 2021 scoring (``weights.csv``
  order; equivalent codes merged: CRBBB/RBBB, PAC/SVPB, PVC/VPB, CLBBB/LBBB), class names in
  ``label_ids`` and ``builder.label_names`` (representative codes) / ``builder.label_abbreviations``;
* ``source``: inferred from the record name (A: CPSC, Q: CPSC-Extra, I: INCART, S: PTB, HR: PTB-XL,
  E: Georgia, JS00001-JS10646: Chapman-Shaoxing, JS10647 and above: Ningbo), else from a folder name;
* the signal at its native sampling rate and length (resampling is the feature extractor's job),
  12 leads in canonical order, as a nested float32 list (variable length; see ``common``).

Records left out are reported in ``builder.skipped`` under their path relative to ``data_dir`` (without
extension): reader errors with their class name; a ``.mat`` without its ``.hea`` (some Ningbo files of the 2021
release) as ``MissingFileError`` under its ``.mat`` path. The sources' own rates and lengths are kept (PTB 1000 Hz,
INCART 257 Hz and 30 min, the others 500 Hz); the feature extractor resamples and windows them.

Only a ``train`` split is produced: the hidden Challenge test sets are not public. Split by
``source`` (leave-one-source-out) or with ``Dataset.train_test_split``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from ..errors import MissingFileError
from ..labels import codes_to_multi_hot, load_challenge_classes
from .common import ECGBuilderConfig, ECGDatasetBuilder, _float_or_none, find_records, normalize_sex, signal_feature

logger = logging.getLogger(__name__)

__all__ = ["PhysioNetChallenge", "PhysioNetChallengeConfig", "CHALLENGE_SOURCES", "infer_source"]

CHALLENGE_SOURCES = ("CPSC", "CPSC-Extra", "INCART", "PTB", "PTB-XL", "Georgia", "Chapman-Shaoxing", "Ningbo")

_PREFIX = {"A": "CPSC", "Q": "CPSC-Extra", "I": "INCART", "S": "PTB", "HR": "PTB-XL", "E": "Georgia"}
_FOLDERS = {
    "cpsc_2018": "CPSC", "cpsc2018": "CPSC", "cpsc": "CPSC",
    "cpsc_2018_extra": "CPSC-Extra", "cpsc2018extra": "CPSC-Extra", "cpsc_extra": "CPSC-Extra",
    "st_petersburg_incart": "INCART", "incart": "INCART", "stpetersburg": "INCART",
    "ptb": "PTB", "ptb-xl": "PTB-XL", "ptb_xl": "PTB-XL", "ptbxl": "PTB-XL",
    "georgia": "Georgia", "chapman_shaoxing": "Chapman-Shaoxing", "chapman": "Chapman-Shaoxing",
    "ningbo": "Ningbo",
}
_NAME_RE = re.compile(r"^([A-Za-z]+)(\d+)$")
_LAST_CHAPMAN = 10646  # JS00001-JS10646 Chapman-Shaoxing, JS10647+ Ningbo (Challenge 2021 notes)

_CITATION = """\
@article{reyna2021will, title={Will Two Do? Varying Dimensions in Electrocardiography: The PhysioNet/Computing
  in Cardiology Challenge 2021}, author={Reyna, Matthew A and Sadr, Nadi and others},
  journal={Computing in Cardiology}, volume={48}, year={2021}}
"""


def infer_source(record_path: str | Path) -> str | None:
    """Challenge source of a record from its name, else from the nearest folder with a known name."""
    p = Path(record_path)
    m = _NAME_RE.match(p.stem if p.suffix.lower() in (".hea", ".mat", ".dat") else p.name)
    if m:
        prefix, number = m.group(1).upper(), int(m.group(2))
        if prefix == "JS":
            return "Chapman-Shaoxing" if number <= _LAST_CHAPMAN else "Ningbo"
        if prefix in _PREFIX:
            return _PREFIX[prefix]
    for parent in p.parents:
        key = parent.name.lower().replace(" ", "_")
        if key in _FOLDERS:
            return _FOLDERS[key]
    return None


@dataclass
class PhysioNetChallengeConfig(ECGBuilderConfig):
    """Options.

    Args:
        sources: keep only these sources (names of :data:`CHALLENGE_SOURCES`, case-insensitive).
        weights_file: an alternative ``weights.csv`` (default: the bundled 2021 one).
        min_samples: skip records shorter than this many samples (reported in ``skipped``).
    """

    sources: tuple | None = None
    weights_file: str | None = None
    min_samples: int = 1


class PhysioNetChallenge(ECGDatasetBuilder):
    """PhysioNet/CinC Challenge 2020/2021 training data (any length, any sampling rate)."""

    VERSION = datasets.Version("2021.0.0")
    BUILDER_CONFIG_CLASS = PhysioNetChallengeConfig
    BUILDER_CONFIGS = [PhysioNetChallengeConfig(name="default", description="Challenge 2021 scored classes")]
    DEFAULT_CONFIG_NAME = "default"
    # examples held in memory before a write: an INCART record (12 x 462,600 samples, 30 min at 257 Hz) costs
    # ~65 MB there (measured, docs/corpora.md), so 64 of them would hold ~4 GB; 8 keeps it near 0.5 GB
    DEFAULT_WRITER_BATCH_SIZE = 8

    @property
    def classes(self):
        return load_challenge_classes(self.config.weights_file)

    @property
    def label_names(self) -> list[str]:
        return list(self.classes.codes)

    @property
    def label_abbreviations(self) -> list[str]:
        return list(self.classes.abbreviations)

    def _info(self):
        classes = self.classes
        features = datasets.Features(
            {
                "record_id": datasets.Value("string"),
                "source": datasets.Value("string"),
                "age": datasets.Value("float32"),
                "sex": datasets.Value("string"),
                "sampling_rate": datasets.Value("float32"),
                "n_samples": datasets.Value("int32"),
                "lead_names": datasets.List(datasets.Value("string")),
                "signal": signal_feature(),
                "dx": datasets.List(datasets.Value("string")),
                "label_ids": datasets.List(datasets.ClassLabel(names=list(classes.codes))),
                "labels": datasets.List(datasets.Value("float32"), length=len(classes)),
            }
        )
        return datasets.DatasetInfo(
            description=(
                "PhysioNet/CinC Challenge 2020/2021 records at native rate and length; `labels` is "
                f"multi-hot over the {len(classes)} scored classes ({', '.join(classes.abbreviations)})."
            ),
            features=features,
            homepage="https://physionetchallenges.org/2021/",
            citation=_CITATION,
            license="CC-BY-4.0",
        )

    def _records(self) -> list[Path]:
        if not self.config.data_dir:
            raise ValueError("PhysioNetChallenge needs data_dir=<folder searched recursively for .hea files>")
        root = Path(self.config.data_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: not a folder")
        recs = find_records(root, include_matlab=True)  # a .mat without its .hea is reported, not silently dropped
        if self.config.sources is not None:
            wanted = {s.lower() for s in self.config.sources}
            unknown = wanted - {s.lower() for s in CHALLENGE_SOURCES}
            if unknown:
                raise ValueError(f"unknown Challenge source(s) {sorted(unknown)}; expected {CHALLENGE_SOURCES}")
            recs = [r for r in recs if (infer_source(r) or "").lower() in wanted]
        return self._select(recs, key=lambda p: p.stem if p.suffix.lower() == ".mat" else p.name)

    def _split_generators(self, dl_manager):
        recs = self._records()
        if not recs:
            raise ValueError(f"no Challenge records (.hea) found under {self.config.data_dir}"
                             + (f" for sources {self.config.sources}" if self.config.sources else ""))
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"paths": [str(r) for r in recs]})]

    def _generate_examples(self, paths):
        self._start_generation()
        classes = self.classes
        n_classes = len(classes)
        root = Path(self.config.data_dir)
        for path in paths:
            try:  # reported as the path under data_dir (without extension; a header-less .mat keeps its .mat)
                name = Path(path).relative_to(root).as_posix()
            except ValueError:
                name = str(path)
            if str(path).lower().endswith(".mat"):
                self._skip(name, MissingFileError(path, f"no header {Path(path).stem}.hea beside the signal file: the "
                                                  "sampling rate, gains and lead names are unknown (some Ningbo .mat files "
                                                  "of the Challenge 2021 release have none)"))
                continue
            read = self._read_or_skip(path, min_samples=self.config.min_samples, name=name)
            if read is None:
                continue
            rec, signal, leads = read
            dx = list(rec.metadata.get("dx") or [])
            y = codes_to_multi_hot(dx, classes) if dx else np.zeros(n_classes, dtype=np.float32)
            yield rec.record_id + "@" + str(path), {
                "record_id": rec.record_id,
                "source": infer_source(path),
                "age": _float_or_none(rec.metadata.get("age")),
                "sex": normalize_sex(rec.metadata.get("sex")),
                "sampling_rate": float(rec.sampling_rate),
                "n_samples": int(signal.shape[1]),
                "lead_names": leads,
                "signal": signal,
                "dx": dx,
                "label_ids": [int(i) for i in np.flatnonzero(y)],
                "labels": y,
            }
