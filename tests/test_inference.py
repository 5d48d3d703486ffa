"""ecgnat_hf.inference.predict_records on real records: bundled PTB-XL sample, MIT-BIH 100 (30 min, windowed),
a corrupted copy, lead subsets, interrupted and resumed runs."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ecgnat_hf import ECGNATConfig
from ecgnat_hf.data import ECGRecord, LeadNameError, TruncatedSignalError, read_record
from ecgnat_hf.data.builders.common import find_records
from ecgnat_hf.inference import (
    META_COLUMNS,
    collect_record_paths,
    predict_records,
    scores_to_probabilities,
    select_leads,
)
from ecgnat_hf.sample_data import sample_dir

from helpers import CHECKPOINT_LABELS as LABELS
from helpers import make_tiny_checkpoint as make_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def loaded(checkpoint):
    from transformers import AutoFeatureExtractor, AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    return model, AutoFeatureExtractor.from_pretrained(checkpoint)


@pytest.fixture(scope="module")
def sample_records() -> list[Path]:
    return find_records(sample_dir() / "records100")[:3]


def corrupted_copy(record: Path, folder: Path) -> Path:
    """Copy a WFDB record and cut its .dat file to a fifth: a truncated download."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(record.with_suffix(".hea"), folder)
    data = record.with_suffix(".dat").read_bytes()
    (folder / record.with_suffix(".dat").name).write_bytes(data[: len(data) // 5])
    return folder / record.name


def direct_probabilities(model, fe, record, lead_names=None, batch=64):
    """Per-window sigmoid outputs computed here, independently of predict_records."""
    names = record.lead_names if lead_names is None else lead_names
    rows = [record.lead_names.index(n) for n in names]
    feats = fe(record.signal[rows], sampling_rate=record.sampling_rate, lead_names=names, return_tensors="pt")
    out = []
    with torch.inference_mode():
        for i in range(0, len(feats["input_values"]), batch):
            out.append(model(input_values=feats["input_values"][i:i + batch],
                             lead_mask=feats["lead_mask"][i:i + batch]).logits)
    return torch.sigmoid(torch.cat(out).double()).numpy()


def test_sample_records_and_corrupted_copy(checkpoint, loaded, sample_records, tmp_path):
    bad = corrupted_copy(sample_records[0], tmp_path / "bad")
    out_csv, err_csv = tmp_path / "pred.csv", tmp_path / "pred.errors.csv"
    df = predict_records(checkpoint, [*sample_records, tmp_path / "bad"], output_csv=out_csv,
                         errors_csv=err_csv, progress=False)

    assert list(df.columns) == list(META_COLUMNS) + LABELS
    assert len(df) == len(sample_records)
    assert [Path(p) for p in df["path"]] == sample_records  # input order kept, the bad one left out
    assert (df["n_windows"] == 1).all() and np.allclose(df["duration_s"], 10.0)
    assert (df["sampling_rate"] == 100).all()
    probs = df[LABELS].to_numpy()
    assert ((probs > 0) & (probs < 1)).all()

    # the same numbers as running the model by hand on the feature extractor's output
    model, fe = loaded
    for i, path in enumerate(sample_records):
        expected = direct_probabilities(model, fe, read_record(path)).mean(axis=0)
        np.testing.assert_allclose(probs[i], expected, rtol=0, atol=1e-5)

    # the bad record is reported (which file, which error, why) and the others are on disk
    (error,) = df.attrs["errors"]
    assert error["path"] == str(bad) and error["error"] == "TruncatedSignalError"
    assert "truncated" in error["problem"]
    assert isinstance(df.attrs["error_objects"][0], TruncatedSignalError)
    on_disk = pd.read_csv(out_csv)
    assert len(on_disk) == len(sample_records)
    np.testing.assert_allclose(on_disk[LABELS].to_numpy(), probs, atol=1e-12)
    errors = pd.read_csv(err_csv)
    assert errors["path"].tolist() == [str(bad)] and errors["error"].tolist() == ["TruncatedSignalError"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp files left behind

    with pytest.raises(TruncatedSignalError, match="truncated"):
        predict_records(checkpoint, [bad], progress=False, strict=True)


def test_mitdb_long_record_windowed_and_aggregated(checkpoint, loaded, shared_data):
    """MIT-BIH 100: 30 min, MLII + V5 at 360 Hz. Windows of the checkpoint's 10 s, mean of window outputs."""
    path = shared_data / "mitdb" / "100"
    model, fe = loaded
    record = read_record(path)
    assert record.sampling_rate == 360 and record.lead_names == ["MLII", "V5"]

    df = predict_records(checkpoint, [path], batch_size=64, progress=False)
    row = df.iloc[0]
    fe_windows = len(fe(record.signal, sampling_rate=360, lead_names=record.lead_names)["input_values"])
    assert row["n_windows"] == fe_windows > 300  # 30 min of 10 s windows with 5 s hop
    assert row["duration_s"] == pytest.approx(650000 / 360)
    assert row["leads_used"] == "MLII,V5" and row["record_id"] == "100"

    per_window = direct_probabilities(model, fe, record)
    assert per_window.shape == (fe_windows, len(LABELS))
    np.testing.assert_allclose(row[LABELS].to_numpy(dtype=float), per_window.mean(axis=0), rtol=0, atol=1e-5)
    # windows really differ, so the aggregation is not trivially a copy of one window
    assert per_window.std(axis=0).max() > 1e-4


def test_lead_subset(checkpoint, loaded, sample_records):
    model, fe = loaded
    df = predict_records(checkpoint, sample_records[:2], lead_names="I,II", progress=False)
    assert df["leads_used"].tolist() == ["I,II"] * 2
    assert df["leads_ignored"].str.split(",").map(len).tolist() == [10, 10]
    for i, path in enumerate(sample_records[:2]):
        expected = direct_probabilities(model, fe, read_record(path), lead_names=["I", "II"]).mean(axis=0)
        np.testing.assert_allclose(df[LABELS].to_numpy()[i], expected, atol=1e-5)
    full = predict_records(checkpoint, sample_records[:1], progress=False)
    assert not np.allclose(full[LABELS].to_numpy()[0], df[LABELS].to_numpy()[0])

    df = predict_records(checkpoint, sample_records[:1], lead_names=["aVR"], progress=False)
    assert df["leads_used"].tolist() == ["AVR"]  # the file spells it AVR; names match through aliases


def test_select_leads_rules():
    sig = np.zeros((3, 500), dtype=np.float32)
    rec = ECGRecord(sig, 250.0, ["MLII", "V5", "vx"], "r", "/x/r")
    s, names, ignored = select_leads(rec, None)
    assert names == ["MLII", "V5"] and ignored == ["vx"] and s.shape == (2, 500)
    s, names, ignored = select_leads(rec, ["II"])
    assert names == ["MLII"] and ignored == ["V5", "vx"]
    with pytest.raises(LeadNameError, match="/x/r.*none of the requested leads I"):
        select_leads(rec, ["I"])
    with pytest.raises(LeadNameError, match="not a standard"):
        select_leads(rec, ["FOO"])
    unnamed = ECGRecord(sig[:2], 250.0, ["ECG1", "ECG2"], "u", "/x/u")
    with pytest.raises(LeadNameError, match="/x/u.*no usable ECG lead"):
        select_leads(unnamed, None)
    _, names, _ = select_leads(unnamed, ["I", "II"])  # channels named by the user, in order
    assert names == ["I", "II"]
    _, names, ignored = select_leads(rec, None, model_leads=["II"])
    assert names == ["MLII"] and ignored == ["V5", "vx"]


def test_interrupted_run_keeps_finished_rows_and_resumes(checkpoint, sample_records, tmp_path, monkeypatch):
    import ecgnat_hf.data.records as records_module

    real_read = records_module.read_record
    calls = []

    def flaky_read(path, **kwargs):
        calls.append(Path(path))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_read(path, **kwargs)

    out_csv = tmp_path / "pred.csv"
    out_csv.write_text("stale content from an older run\n")
    monkeypatch.setattr(records_module, "read_record", flaky_read)
    with pytest.raises(KeyboardInterrupt):
        predict_records(checkpoint, sample_records, output_csv=out_csv, batch_size=1, progress=False)
    partial = pd.read_csv(out_csv)
    assert [Path(p) for p in partial["path"]] == sample_records[:2]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    calls.clear()

    def counting_read(path, **kwargs):
        calls.append(Path(path))
        return real_read(path, **kwargs)

    monkeypatch.setattr(records_module, "read_record", counting_read)
    df = predict_records(checkpoint, sample_records, output_csv=out_csv, resume=True, progress=False)
    assert calls == sample_records[2:]  # only the missing record is read again
    assert [Path(p) for p in df["path"]] == sample_records
    assert len(pd.read_csv(out_csv)) == 3


def test_folder_input_and_probability_functions(tmp_path, sample_records):
    folder = tmp_path / "records"
    (folder / "sub").mkdir(parents=True)
    for rec in sample_records[:2]:
        for ext in (".hea", ".dat"):
            shutil.copy(rec.with_suffix(ext), folder / "sub")
    found = collect_record_paths(folder)
    assert [p.name for p in found] == [r.name for r in sample_records[:2]]
    assert collect_record_paths([found[0].with_suffix(".hea"), found[0]]) == [found[0]]  # de-duplicated

    logits = np.array([[0.0, 1.0, -1.0]])
    cfg = ECGNATConfig.from_preset("tiny", num_labels=3)
    cfg.problem_type = "single_label_classification"
    np.testing.assert_allclose(scores_to_probabilities(logits, cfg).sum(), 1.0)
    cfg.problem_type = "multi_label_classification"
    np.testing.assert_allclose(scores_to_probabilities(logits, cfg)[0, 0], 0.5)
    cfg.problem_type = "regression"
    np.testing.assert_array_equal(scores_to_probabilities(logits, cfg), logits)
    with pytest.raises(ValueError, match="function_to_apply"):
        scores_to_probabilities(logits, cfg, function_to_apply="relu")
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
