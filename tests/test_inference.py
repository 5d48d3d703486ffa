"""ecgnat_hf.inference.predict_records and ecgnat_hf.streaming on real records: the bundled PTB-XL sample, MIT-BIH
100 (30 min, streamed in chunks and compared with the whole-record path), a long record made of real recordings
concatenated, a corrupted copy, lead subsets, strict / interrupted / resumed runs, timelines and decisions."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ecgnat_hf import ECGNATConfig, ECGNATFeatureExtractor
from ecgnat_hf.data import ECGRecord, InvalidSignalError, LeadNameError, TruncatedSignalError, read_record
from ecgnat_hf.data.builders.common import find_records
from ecgnat_hf.inference import (
    DECISION_COLUMNS,
    META_COLUMNS,
    TIMELINE_COLUMNS,
    CheckpointError,
    ResumeError,
    collect_record_paths,
    predict_records,
    scores_to_probabilities,
    select_leads,
    window_outputs,
)
from ecgnat_hf.sample_data import sample_dir
from ecgnat_hf.streaming import RecordStream, plan_window_starts

from helpers import CHECKPOINT_LABELS as LABELS
from helpers import make_tiny_checkpoint as make_checkpoint

TIME_COLUMNS = [f"time_positive_{c}" for c in LABELS]
# Streamed and whole-record results agree to float rounding: the windows are the same numbers (resampling is
# FIR and chunks start on the resampler's grid with a margin wider than the filter), so what is left is the
# order of float32 operations in batches of different composition. 1e-5 on probabilities is ~100x that.
ATOL = 1e-5
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

    assert list(df.columns) == list(META_COLUMNS) + list(DECISION_COLUMNS) + LABELS + TIME_COLUMNS
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
        np.testing.assert_allclose(probs[i], expected, rtol=0, atol=ATOL)
    # no thresholds in this checkpoint: 0.5, said so; one window = the whole time
    assert df.attrs["thresholds_source"].startswith("default 0.5")
    for _, row in df.iterrows():
        p = row[LABELS].to_numpy(dtype=float)
        assert row["labels"] == ";".join(c for c, v in zip(LABELS, p) if v >= 0.5)
        np.testing.assert_array_equal(row[TIME_COLUMNS].to_numpy(dtype=float), (p >= 0.5).astype(float))
    assert (df["quality"] == "").all()  # no quality check given

    # the bad record is reported (which file, which error, why) and the others are on disk
    (error,) = df.attrs["errors"]
    assert error["path"] == str(bad) and error["error"] == "TruncatedSignalError"
    assert "truncated" in error["problem"]
    assert isinstance(df.attrs["error_objects"][0], TruncatedSignalError)
    on_disk = pd.read_csv(out_csv, keep_default_na=False)
    assert len(on_disk) == len(sample_records)
    np.testing.assert_array_equal(on_disk[LABELS].to_numpy(), probs)  # floats written exactly
    assert on_disk["labels"].tolist() == df["labels"].tolist()
    errors = pd.read_csv(err_csv)
    assert errors["path"].tolist() == [str(bad)] and errors["error"].tolist() == ["TruncatedSignalError"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp files left behind

    with pytest.raises(TruncatedSignalError, match="truncated"):
        predict_records(checkpoint, [bad], progress=False, strict=True)


@pytest.mark.slow
def test_mitdb_streamed_equals_whole_record(checkpoint, loaded, shared_data, tmp_path):
    """MIT-BIH 100: 30 min, MLII + V5 at 360 Hz, streamed in 60 s chunks (31 chunks, resampled to 100 Hz
    piece by piece): per-window and per-record probabilities equal the whole-record computation."""
    path = shared_data / "mitdb" / "100"
    model, fe = loaded
    record = read_record(path)
    assert record.sampling_rate == 360 and record.lead_names == ["MLII", "V5"]
    stream = RecordStream(path, fe, chunk_s=60)
    assert len(stream.chunk_plan()) > 25

    timeline = tmp_path / "timeline.csv"
    df = predict_records(checkpoint, [path], batch_size=64, progress=False, chunk_s=60, timeline=timeline)
    row = df.iloc[0]
    whole = fe(record.signal, sampling_rate=360, lead_names=record.lead_names)
    fe_windows = len(whole["input_values"])
    assert row["n_windows"] == fe_windows > 300  # 30 min of 10 s windows with 5 s hop
    assert row["duration_s"] == pytest.approx(650000 / 360)
    assert row["leads_used"] == "MLII,V5" and row["record_id"] == "100"

    per_window = direct_probabilities(model, fe, record)
    assert per_window.shape == (fe_windows, len(LABELS))
    np.testing.assert_allclose(row[LABELS].to_numpy(dtype=float), per_window.mean(axis=0), rtol=0, atol=ATOL)
    assert per_window.std(axis=0).max() > 1e-4  # windows really differ: the pooling is not a copy of one

    tl = pd.read_csv(timeline)
    assert list(tl.columns) == list(TIMELINE_COLUMNS) + LABELS
    assert tl["window"].tolist() == list(range(fe_windows))
    np.testing.assert_allclose(tl["start_s"], whole["window_start"], atol=1e-4)
    np.testing.assert_allclose(tl[LABELS].to_numpy(), per_window, rtol=0, atol=ATOL)
    # time above threshold: each window stands for the time up to the next start; they tile the record
    owned = np.diff(np.r_[tl["start_s"].to_numpy(), row["duration_s"]])
    assert owned.sum() == pytest.approx(row["duration_s"])
    expected = ((per_window >= 0.5) * owned[:, None]).sum(axis=0) / row["duration_s"]
    np.testing.assert_allclose(row[TIME_COLUMNS].to_numpy(dtype=float), expected, atol=1e-3)


@pytest.mark.parametrize("settings", [
    dict(sampling_rate=100),
    dict(sampling_rate=500),
    dict(sampling_rate=257),  # up/down = 257/360
    dict(sampling_rate=100, do_baseline_removal=True, do_bandpass=True, bandpass_low=0.5, bandpass_high=40.0),
])
@pytest.mark.slow
def test_stream_inputs_equal_whole_record(shared_data, settings):
    """The model inputs, chunk by chunk, are the whole-record feature extractor's (MIT-BIH 100, 360 Hz)."""
    path = shared_data / "mitdb" / "100"
    record = read_record(path)
    fe = ECGNATFeatureExtractor(window_s=10, **settings)
    whole = fe(record.signal, sampling_rate=record.sampling_rate, lead_names=record.lead_names)
    chunks = list(RecordStream(path, fe, chunk_s=37))
    assert len(chunks) > 40
    x = np.concatenate([c.features["input_values"] for c in chunks])
    assert x.shape == whole["input_values"].shape
    # FIR resampling: identical; IIR filters: differences ~1e-9 (40 s margins = dozens of time constants)
    np.testing.assert_allclose(x, whole["input_values"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([c.features["lead_mask"] for c in chunks]), whole["lead_mask"])


def _concatenated_record(shared_data: Path, folder: Path, copies: int, rate: int = 200) -> Path:
    """A long 2-lead WFDB record (format 16, 200 Hz) made of MIT-BIH 100 resampled and repeated."""
    import wfdb
    from scipy.signal import resample_poly

    rec = read_record(shared_data / "mitdb" / "100")
    x = resample_poly(rec.signal.astype(np.float64), 5, 9, axis=1)  # 360 -> 200 Hz
    sig = np.concatenate([x, x[:, ::-1]] * copies, axis=1)[:, : copies * x.shape[1]]
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp("long", fs=rate, units=["mV", "mV"], sig_name=["MLII", "V5"], p_signal=sig.T, fmt=["16", "16"],
                adc_gain=[200.0, 200.0], baseline=[0, 0], write_dir=str(folder))
    return folder / "long"


@pytest.mark.slow
def test_long_record_is_read_in_bounded_pieces(shared_data, tmp_path, monkeypatch):
    """A 2-hour record of real recordings concatenated: no read is longer than one chunk plus margins, and the
    windows equal the whole-record extractor's."""
    import ecgnat_hf.data.records as records_module

    path = _concatenated_record(shared_data, tmp_path / "long", copies=4)
    fe = ECGNATFeatureExtractor(sampling_rate=100, window_s=10)
    spans = []
    real_read = records_module.read_record

    def spy(p, **kw):
        spans.append((kw.get("start", 0), kw.get("stop")))
        return real_read(p, **kw)

    monkeypatch.setattr(records_module, "read_record", spy)
    stream = RecordStream(path, fe, chunk_s=300)
    assert stream.duration_s == pytest.approx(4 * 1805.5555, rel=1e-4) and stream.sampling_rate == 200
    chunks = list(stream)
    reads = [(a, b) for a, b in spans if b != 0]  # (0, 0): the header probe
    assert len(reads) == len(chunks) == len(stream.chunk_plan()) > 20
    longest = max(b - a for a, b in reads)
    assert longest <= 300 * 200 + 2 * stream.margin + 200
    assert sum(b - a for a, b in reads) < 1.05 * stream.n_samples  # nothing read twice but the margins
    monkeypatch.setattr(records_module, "read_record", real_read)
    record = read_record(path)
    whole = fe(record.signal, sampling_rate=200, lead_names=record.lead_names)
    x = np.concatenate([c.features["input_values"] for c in chunks])
    np.testing.assert_allclose(x, whole["input_values"], rtol=0, atol=1e-6)
    assert stream.n_windows == len(plan_window_starts(record.n_samples // 2, 1000, 500))


@pytest.mark.parametrize("fmt", ["212", "16", "80", "24", "516"])
def test_read_record_range(shared_data, tmp_path, fmt):
    """read_record(start=, stop=) returns exactly the slice of the whole record, in every directly decoded
    format, 3 leads (so format 212 frames start on half bytes) and an odd total value count; format 516
    (FLAC) goes through wfdb, which reads the range itself."""
    import wfdb

    rec = read_record(shared_data / "mitdb" / "100", stop=1001)
    d = np.round(np.vstack([rec.signal, rec.signal[:1] - rec.signal[1:]]) * 200).astype(np.int64).T
    if fmt == "80":
        d = np.clip(d // 8, -127, 127)
    wfdb.wrsamp("r", fs=360, units=["mV"] * 3, sig_name=["MLII", "V5", "I"], d_signal=d, fmt=[fmt] * 3,
                adc_gain=[200.0] * 3, baseline=[0] * 3, write_dir=str(tmp_path))
    whole = read_record(tmp_path / "r")
    np.testing.assert_allclose(whole.signal, wfdb.rdrecord(str(tmp_path / "r")).p_signal.T, atol=1e-6)
    for a, b in [(0, 1001), (1, 6), (3, 1000), (500, 501), (1000, None), (7, 7), (990, 5000)]:
        part = read_record(tmp_path / "r", start=a, stop=b)
        np.testing.assert_array_equal(part.signal, whole.signal[:, a:b])
        assert part.metadata["record_samples"] == 1001
        assert part.metadata["sample_range"] == (a, min(b or 1001, 1001))


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
        if Path(path) == sample_records[2]:
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
    # a crash in the middle of a line: the cut row is dropped on resume, not read as data
    with open(out_csv, "a") as f:
        f.write("00003_lr,/cut/in/the/mid")

    calls.clear()

    def counting_read(path, **kwargs):
        calls.append(Path(path))
        return real_read(path, **kwargs)

    monkeypatch.setattr(records_module, "read_record", counting_read)
    df = predict_records(checkpoint, sample_records, output_csv=out_csv, resume=True, progress=False)
    assert set(calls) == {sample_records[2]}  # only the missing record is read again
    assert [Path(p) for p in df["path"]] == sample_records
    again = pd.read_csv(out_csv, keep_default_na=False)
    assert len(again) == 3
    np.testing.assert_array_equal(again[LABELS].to_numpy(), df[LABELS].to_numpy())


def test_strict_keeps_every_finished_record(checkpoint, sample_records, tmp_path):
    """--strict: the records read before the bad one are scored and written, then the error is raised."""
    bad = corrupted_copy(sample_records[0], tmp_path / "bad")
    out_csv = tmp_path / "pred.csv"
    with pytest.raises(TruncatedSignalError):
        predict_records(checkpoint, [*sample_records[1:], bad, sample_records[0]], output_csv=out_csv,
                        strict=True, batch_size=64, progress=False)
    on_disk = pd.read_csv(out_csv)
    assert [Path(p) for p in on_disk["path"]] == sample_records[1:]


def test_resume_refuses_files_of_another_model_options_or_format(checkpoint, sample_records, tmp_path):
    out_csv = tmp_path / "pred.csv"
    predict_records(checkpoint, sample_records[:1], output_csv=out_csv, progress=False)
    assert (tmp_path / "pred.run.json").is_file()

    from transformers import AutoModelForSequenceClassification

    other = make_checkpoint(tmp_path / "other")  # same architecture, labels and preprocessing ...
    model = AutoModelForSequenceClassification.from_pretrained(other)
    with torch.no_grad():
        model.classifier.bias += 0.01  # ... other weights
    model.save_pretrained(other)
    with pytest.raises(ResumeError, match="another model"):
        predict_records(other, sample_records, output_csv=out_csv, resume=True, progress=False)
    with pytest.raises(ResumeError, match="other options.*aggregate"):
        predict_records(checkpoint, sample_records, output_csv=out_csv, resume=True, aggregate="max", progress=False)

    unrelated = tmp_path / "unrelated.csv"
    unrelated.write_text("a,b\n1,2\n")
    with pytest.raises(ResumeError, match="unrelated.run.json is missing"):
        predict_records(checkpoint, sample_records, output_csv=unrelated, resume=True, progress=False)
    assert unrelated.read_text() == "a,b\n1,2\n"  # untouched

    (tmp_path / "pred.run.json").write_text('{"format": "something-else/1"}')
    with pytest.raises(ResumeError, match="format"):
        predict_records(checkpoint, sample_records, output_csv=out_csv, resume=True, progress=False)


def test_output_checked_before_any_work(checkpoint, sample_records, tmp_path, monkeypatch):
    import ecgnat_hf.data.records as records_module

    calls = []
    monkeypatch.setattr(records_module, "read_record", lambda *a, **k: calls.append(a))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        predict_records(checkpoint, sample_records, output_csv=blocker / "pred.csv", progress=False)
    with pytest.raises(OSError):
        predict_records(checkpoint, sample_records, timeline=tmp_path, progress=False)  # a folder
    assert calls == []


def test_pretraining_checkpoint_is_refused(sample_records, tmp_path):
    """A checkpoint without a trained head would give random labels: refused, with what to do instead."""
    from ecgnat_hf import ECGNATForPreTraining

    pre = tmp_path / "pretrained"
    ECGNATForPreTraining(ECGNATConfig.from_preset("tiny")).save_pretrained(pre)
    ECGNATFeatureExtractor(sampling_rate=100).save_pretrained(pre)
    with pytest.raises(CheckpointError, match="no trained classification head.*classifier.*ECGNATForPreTraining.*"
                                              "ecgnat finetune"):
        predict_records(pre, sample_records[:1], progress=False)


def test_parquet_timeline_and_quality_hook(checkpoint, sample_records, shared_data, tmp_path):
    seen = []

    def quality(signal, fs, names):
        seen.append((signal.shape, fs, tuple(names)))
        if signal.shape[0] == 2:
            raise InvalidSignalError("mitdb-100", "refused by the quality check")
        return ["baseline wander in V1", "baseline wander in V1", None]

    timeline = tmp_path / "t.parquet"
    df = predict_records(checkpoint, [*sample_records[:2], shared_data / "mitdb" / "100"], timeline=timeline,
                         quality_fn=quality, progress=False)
    assert df["quality"].tolist() == ["baseline wander in V1"] * 2  # deduplicated
    assert [e["problem"] for e in df.attrs["errors"]] == ["refused by the quality check"]
    assert seen[0] == ((12, 1000), 100.0, tuple(read_record(sample_records[0]).lead_names))
    tl = pd.read_parquet(timeline)
    assert list(tl.columns) == list(TIMELINE_COLUMNS) + LABELS
    assert tl["path"].tolist() == [str(p) for p in sample_records[:2]]  # the refused record has no windows
    np.testing.assert_array_equal(tl[LABELS].to_numpy(), df[LABELS].to_numpy())  # one window each


def test_single_label_checkpoint_gives_the_argmax_label(sample_records, tmp_path):
    from ecgnat_hf import ECGNATForSequenceClassification

    torch.manual_seed(0)
    names = ["AF", "OTHER", "SR"]
    cfg = ECGNATConfig.from_preset("tiny", num_labels=3, id2label=dict(enumerate(names)),
                                   label2id={n: i for i, n in enumerate(names)},
                                   problem_type="single_label_classification")
    ECGNATForSequenceClassification(cfg).save_pretrained(tmp_path / "ckpt")
    ECGNATFeatureExtractor(sampling_rate=100).save_pretrained(tmp_path / "ckpt")
    df = predict_records(tmp_path / "ckpt", sample_records, progress=False)
    probs = df[names].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert df["labels"].tolist() == [names[i] for i in probs.argmax(axis=1)]
    np.testing.assert_allclose(df[[f"time_positive_{n}" for n in names]].sum(axis=1), 1.0)
    assert df.attrs["thresholds_source"] == "argmax"


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


def _rewrite(record: Path, folder: Path, name: str, edit) -> Path:
    """A WFDB copy of a real record with ``edit(signal (samples, leads), names) -> (signal, names)`` applied."""
    import wfdb

    rec = wfdb.rdrecord(str(record))
    signal, names = edit(rec.p_signal.copy(), list(rec.sig_name))
    wfdb.wrsamp(name, fs=rec.fs, units=["mV"] * len(names), sig_name=names, p_signal=signal,
                fmt=["16"] * len(names), write_dir=str(folder))
    return folder / name


def test_predict_quality_column_flags_a_dead_lead(loaded, sample_records, tmp_path):
    """A real record whose lead V3 is a flat line: scored on the other leads, V3 masked, and the flag shown."""
    model, fe = loaded

    def kill_v3(sig, names):
        sig[:, names.index("V3")] = 0.0
        return sig, names

    dead = _rewrite(sample_records[0], tmp_path, "dead_v3", kill_v3)
    df = predict_records(model, [sample_records[0], dead], feature_extractor=fe, progress=False)
    good, bad = df.iloc[0], df.iloc[1]
    assert good["quality"] == ""
    assert "V3" in bad["quality"] and "flat" in bad["quality"] and "masked (not scored): V3" in bad["quality"]
    assert df.attrs["errors"] == []
    off = predict_records(model, [dead], feature_extractor=fe, progress=False, quality_fn=False)
    assert off.iloc[0]["quality"] == ""


def test_predict_names_a_channel_with_a_mapping(loaded, sample_records, tmp_path):
    """CinC-2017 style: one channel called ECG; ``{"ECG": "I"}`` says what it is (lead I of a real record)."""
    model, fe = loaded

    def only_lead_i(sig, names):
        return sig[:, [names.index("I")]], ["ECG"]

    rec = _rewrite(sample_records[0], tmp_path, "ecg_only", only_lead_i)
    df = predict_records(model, [rec], feature_extractor=fe, progress=False, lead_names={"ECG": "I"})
    assert df.attrs["errors"] == [] and df.iloc[0]["leads_used"] == "I"
    reference = predict_records(model, [sample_records[0]], feature_extractor=fe, progress=False, lead_names=["I"])
    np.testing.assert_allclose(df[LABELS].to_numpy(float), reference[LABELS].to_numpy(float), atol=1e-4)
    unnamed = predict_records(model, [rec], feature_extractor=fe, progress=False)
    assert len(unnamed) == 0 and len(unnamed.attrs["errors"]) == 1  # not silently scored as some lead


@pytest.mark.shared_data
def test_scoring_threads_give_the_same_windows_on_a_long_record(loaded, shared_data, tmp_path):
    """``num_workers`` (batches scored at once in threads, torch on one thread: what ``ecgnat app`` does) gives
    every window of MIT-BIH 100 (30 min, 2 leads, 360 Hz, streamed in 5-minute chunks) the probabilities of
    one batch at a time, and the same pooled row."""
    model, fe = loaded
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows, timelines = [], []
        for workers in (1, 3):
            timeline = tmp_path / f"timeline_{workers}.csv"
            rows.append(predict_records(model, [shared_data / "mitdb" / "100"], feature_extractor=fe, batch_size=16,
                                        chunk_s=300, progress=False, timeline=timeline, num_workers=workers))
            timelines.append(pd.read_csv(timeline))
    finally:
        torch.set_num_threads(threads)
    one, many = timelines
    assert len(one) == len(many) == rows[0]["n_windows"].iloc[0] > 300
    np.testing.assert_array_equal(one["start_s"].to_numpy(), many["start_s"].to_numpy())
    np.testing.assert_allclose(many[LABELS].to_numpy(), one[LABELS].to_numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(rows[1][LABELS].to_numpy(), rows[0][LABELS].to_numpy(), atol=ATOL, rtol=0)
    assert rows[1][TIME_COLUMNS].to_numpy().tolist() == rows[0][TIME_COLUMNS].to_numpy().tolist()
    with pytest.raises(ValueError, match="num_workers"):
        predict_records(model, [shared_data / "mitdb" / "100"], feature_extractor=fe, num_workers=0)


def test_window_outputs_in_threads_keep_the_order_and_lead_weights(loaded, sample_records):
    """Batches scored in threads come back in window order, lead-fusion weights included."""
    model, fe = loaded
    feats = fe([read_record(p).signal for p in sample_records], sampling_rate=100)
    one = window_outputs(model, feats, batch_size=1, output_lead_weights=True)
    many = window_outputs(model, feats, batch_size=1, output_lead_weights=True, num_workers=3)
    np.testing.assert_allclose(many[0], one[0], atol=ATOL, rtol=0)
    assert len(many[1]) == len(one[1]) == len(sample_records)
    for a, b in zip(one[1], many[1]):
        np.testing.assert_allclose(b, a, atol=ATOL, rtol=0)
