"""Small real-data helpers for tests: read PTB-XL records straight with wfdb (independent of the package's
own readers, so model tests do not depend on the data layer) and standardise them per lead."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import wfdb

SUPERCLASSES = ["CD", "HYP", "MI", "NORM", "STTC"]


def load_ptbxl(root: Path, n: int | None = None, rate: int = 100, folds=None):
    """(signals (n, 12, samples) float32 standardised per lead, multi-hot superdiagnostic labels (n, 5))."""
    db = pd.read_csv(root / "ptbxl_database.csv", index_col="ecg_id")
    if folds is not None:
        db = db[db.strat_fold.isin(folds)]
    scp = pd.read_csv(root / "scp_statements.csv", index_col=0)
    scp = scp[scp.diagnostic == 1]
    if n is not None:
        db = db.iloc[:n]
    column = "filename_lr" if rate == 100 else "filename_hr"
    signals, labels = [], []
    for _, row in db.iterrows():
        x = wfdb.rdrecord(str(root / row[column])).p_signal.T.astype(np.float32)
        x = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-6)
        signals.append(x)
        classes = {scp.loc[c, "diagnostic_class"] for c in ast.literal_eval(row.scp_codes) if c in scp.index}
        labels.append([float(c in classes) for c in SUPERCLASSES])
    return np.stack(signals), np.asarray(labels, dtype=np.float32)


CHECKPOINT_LABELS = ["NORM", "MI", "STTC", "CD", "HYP"]


def make_tiny_checkpoint(path: Path) -> Path:
    """A seeded, untrained tiny multi-label ECG-NAT classifier + its 100 Hz feature extractor in ``path``."""
    import torch

    from ecgnat_hf import ECGNATConfig, ECGNATFeatureExtractor, ECGNATForSequenceClassification

    torch.manual_seed(0)
    labels = CHECKPOINT_LABELS
    config = ECGNATConfig.from_preset(
        "tiny", num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)}, problem_type="multi_label_classification",
    )
    ECGNATForSequenceClassification(config).save_pretrained(path)
    ECGNATFeatureExtractor(sampling_rate=100, window_s=10).save_pretrained(path)
    return path
