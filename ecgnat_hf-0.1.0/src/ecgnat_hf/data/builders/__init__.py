"""``datasets`` builders for ECG data (GeneratorBasedBuilder subclasses, instantiated directly).

``datasets`` >= 4 no longer runs loading scripts, so these are used as classes::

    from ecgnat_hf.data.builders import PTBXL
    builder = PTBXL(config_name="superdiagnostic", data_dir="ptb-xl/", sampling_rate=100)
    builder.download_and_prepare()
    ds = builder.as_dataset()                    # or builder.as_streaming_dataset("train")
    print(builder.skipped)                       # records left out, with the reason

* :class:`PTBXL`: PTB-XL benchmark tasks and folds;
* :class:`PhysioNetChallenge`: PhysioNet/CinC Challenge 2020/2021 records, scored SNOMED classes;
* :class:`ECGFolder`: your own folder of records plus a labels CSV (or unlabelled);
* :class:`MIMICIVECG`: MIMIC-IV-ECG (record_list.csv, machine_measurements.csv), split by subject;
* :class:`CODE15`: CODE-15 % (HDF5 parts, exams.csv, six labels), split by patient;
* :func:`build_pretraining_mixture`: several sources as fixed 12-lead windows at one rate;
* :func:`export_parquet` / :func:`load_parquet`: share prepared splits as Parquet.
"""

from .code15 import CODE15, CODE15_LABELS, CODE15Config
from .challenge import CHALLENGE_SOURCES, PhysioNetChallenge, PhysioNetChallengeConfig, infer_source
from .common import (
    ECGBuilderConfig,
    ECGDatasetBuilder,
    SkippedRecord,
    canonical_order,
    drop_invalid_leads,
    hash_split,
    export_parquet,
    find_records,
    load_parquet,
)
from .folder import ECGFolder, ECGFolderConfig, group_split
from .mimic_iv_ecg import MIMICIVECG, MIMICIVECGConfig
from .mixture import build_pretraining_mixture, resample_signal, to_window
from .ptbxl import PTBXL, PTBXLConfig

__all__ = [
    "PTBXL",
    "PTBXLConfig",
    "PhysioNetChallenge",
    "PhysioNetChallengeConfig",
    "CHALLENGE_SOURCES",
    "infer_source",
    "MIMICIVECG",
    "MIMICIVECGConfig",
    "CODE15",
    "CODE15Config",
    "CODE15_LABELS",
    "drop_invalid_leads",
    "hash_split",
    "ECGFolder",
    "ECGFolderConfig",
    "group_split",
    "build_pretraining_mixture",
    "resample_signal",
    "to_window",
    "ECGBuilderConfig",
    "ECGDatasetBuilder",
    "SkippedRecord",
    "canonical_order",
    "find_records",
    "export_parquet",
    "load_parquet",
]
