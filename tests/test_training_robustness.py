"""Issue 8, training side: nothing a builder accepts aborts training, errors name files, any dataset size
trains, and single-channel records named ``ECG`` (PhysioNet/CinC 2017 style) fine-tune once the user says
which lead the channel is."""
from __future__ import annotations

import ast
import csv
from pathlib import Path

import numpy as np
import pytest
import torch

datasets = pytest.importorskip("datasets")
wfdb = pytest.importorskip("wfdb")


def test_resnet1d_trains_on_a_batch_of_one():
    """The last batch of a dataset of 8k+1 examples holds one example; the head's BatchNorm used to fail
    with 'Expected more than 1 value per channel when training'."""
    from ecgnat_hf.training.baselines import ResNet1dConfig, ResNet1dForSequenceClassification

    model = ResNet1dForSequenceClassification(ResNet1dConfig(
        num_labels=3, problem_type="multi_label_classification", hidden_sizes=[16, 16], block_strides=[1, 2],
        stem_hidden_size=16))
    model.train()
    before = model.head_norm.running_mean.clone()
    out = model(torch.randn(1, 12, 500), labels=torch.tensor([[1.0, 0.0, 1.0]]))
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.equal(model.head_norm.running_mean, before)
    out = model(torch.randn(4, 12, 500), labels=torch.zeros(4, 3))  # normal batches still update the stats
    assert not torch.equal(model.head_norm.running_mean, before)


def _ds(records):
    feats = datasets.Features({
        "path": datasets.Value("string"),
        "signal": datasets.List(datasets.List(datasets.Value("float32"))),
        "sampling_rate": datasets.Value("float32"),
        "lead_names": datasets.List(datasets.Value("string")),
        "labels": datasets.List(datasets.Value("float32"), length=2),
    })
    return datasets.Dataset.from_list(records, features=feats)


def test_unusable_records_are_left_out_with_their_file_named():
    from ecgnat_hf.feature_extraction_ecgnat import ECGNATFeatureExtractor
    from ecgnat_hf.training.data import _featurize

    rng = np.random.default_rng(0)
    good = rng.normal(size=(1, 1000)).astype(np.float32)
    recs = [
        {"path": "f/good.hea", "signal": good.tolist(), "sampling_rate": 100, "lead_names": ["I"], "labels": [1, 0]},
        {"path": "f/one_sample.hea", "signal": [[0.3]], "sampling_rate": 100, "lead_names": ["I"], "labels": [0, 1]},
        {"path": "f/flat.hea", "signal": np.zeros((1, 1000)).tolist(), "sampling_rate": 100, "lead_names": ["I"],
         "labels": [0, 1]},
        {"path": "f/ecg.hea", "signal": good.tolist(), "sampling_rate": 100, "lead_names": ["ECG"], "labels": [0, 1]},
    ]
    fe = ECGNATFeatureExtractor(sampling_rate=100, window_s=10)
    skipped = []
    out = _featurize(_ds(recs), fe, "crop", True, "test split", None, skipped)
    assert len(out) == 1 and list(out[0]["labels"]) == [1, 0]
    by_file = {s.record: (s.reason, s.error) for s in skipped}
    assert set(by_file) == {"f/one_sample.hea", "f/flat.hea", "f/ecg.hea"}
    assert "too short" in by_file["f/one_sample.hea"][1] and "record 1" not in by_file["f/one_sample.hea"][1]
    assert by_file["f/flat.hea"][0] == "ECGUnusableSignalError"
    assert "none of the leads ['ECG']" in by_file["f/ecg.hea"][1]
    skipped = []
    named = _featurize(_ds(recs), fe, "crop", True, "test split", {"ECG": "I"}, skipped)
    assert len(named) == 2 and [s.record for s in skipped] == ["f/one_sample.hea", "f/flat.hea"]
    assert list(named[1]["lead_mask"]) == [1] + [0] * 11


def test_lead_names_option_parses_and_validates():
    from ecgnat_hf.data import LeadNameError, parse_lead_names, rename_leads
    from ecgnat_hf.training.arguments import DataArguments

    assert parse_lead_names("ECG=I") == {"ECG": "I"} and parse_lead_names("I, ii") == ["I", "ii"]
    assert parse_lead_names("ECG1=mlii;ECG2=v5") == {"ECG1": "II", "ECG2": "V5"}
    with pytest.raises(LeadNameError):
        parse_lead_names("ECG=Q")
    with pytest.raises(ValueError):
        DataArguments(dataset="sample", lead_names="ECG=nonsense")
    assert DataArguments(dataset="sample", lead_names="ECG=I").lead_names == "ECG=I"
    assert rename_leads(["ecg"], {"ECG": "I"}) == ["I"]  # case-insensitive second pass
    assert rename_leads(["I", "II"], {"ECG": "I"}, missing="ignore") == ["I", "II"]


@pytest.fixture(scope="module")
def cinc2017_style(shared_data, tmp_path_factory):
    """26 single-channel records named 'ECG' at 300 Hz (lead I of PTB-XL 500 Hz records, resampled), labels
    N (normal) / O (other) like the PhysioNet/CinC 2017 REFERENCE.csv."""
    from scipy.signal import resample_poly

    root = shared_data / "ptbxl-subset"
    out = tmp_path_factory.mktemp("cinc2017")
    rows = []
    with open(root / "ptbxl_database.csv", newline="") as f:
        db = list(csv.DictReader(f))[:26]
    for r in db:
        x = wfdb.rdrecord(str(root / r["filename_hr"]), channel_names=["I"]).p_signal[:, 0]
        x = resample_poly(x, 3, 5)
        name = f"A{int(r['ecg_id']):05d}"
        wfdb.wrsamp(name, fs=300, units=["mV"], sig_name=["ECG"], p_signal=x[:, None], fmt=["16"],
                    adc_gain=[1000.0], baseline=[0], write_dir=str(out))
        rows.append((name, "N" if "NORM" in ast.literal_eval(r["scp_codes"]) else "O"))
    with open(out / "REFERENCE.csv", "w", newline="") as f:
        csv.writer(f).writerows([("record", "labels"), *rows])
    return out


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("model_type", ["ecgnat", "resnet1d"])
def test_single_channel_ecg_folder_finetunes_with_a_lead_mapping(cinc2017_style, tmp_path, model_type):
    from ecgnat_hf.recipes.finetune import main

    base = ["--dataset", "folder", "--data_dir", str(cinc2017_style), "--labels_csv",
            str(cinc2017_style / "REFERENCE.csv"), "--label_type", "single_label", "--cache_dir", str(tmp_path / "hf"),
            "--model_type", model_type, "--max_steps", "6",
            # resnet1d: 20 training records in batches of 19 -> every other batch holds one example
            "--per_device_train_batch_size", "19" if model_type == "resnet1d" else "4",
            "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
            "--use_cpu", "true", "--disable_tqdm", "true", "--report_to", "none"]
    if model_type == "resnet1d":
        base += ["--config_overrides", "hidden_sizes=[16,16],block_strides=[1,2],stem_hidden_size=16"]
    with pytest.raises(ValueError, match="no usable train example.*--lead_names"):
        main([*base, "--output_dir", str(tmp_path / "a")])
    # 26 records -> 20 train, 3 validation, 3 test
    res = main([*base, "--output_dir", str(tmp_path / "b"), "--lead_names", "ECG=I"])
    assert res["global_step"] == 6 and res["n_train"] > 0
    assert set(res["label_names"]) == {"N", "O"}


@pytest.fixture(scope="module")
def folder_with_a_precordial_record(shared_data, tmp_path_factory):
    """16 PTB-XL records (100 Hz) as a labelled folder, NORM / OTHER, 10 train + 6 test; one test record keeps
    only its chest leads V1-V6 (as a precordial-only recording would), and a seeded untrained tiny
    checkpoint with the folder's classes."""
    from ecgnat_hf import ECGNATConfig, ECGNATFeatureExtractor, ECGNATForSequenceClassification

    root = shared_data / "ptbxl-subset"
    out = tmp_path_factory.mktemp("v1v6")
    data = out / "data"
    data.mkdir()
    with open(root / "ptbxl_database.csv", newline="") as f:
        db = list(csv.DictReader(f))[:16]
    rows = []
    for i, r in enumerate(db):
        rec = wfdb.rdrecord(str(root / r["filename_lr"]))
        name = Path(r["filename_lr"]).name
        keep = [j for j, n in enumerate(rec.sig_name) if (i != 12 or n.startswith("V"))]
        wfdb.wrsamp(name, fs=rec.fs, units=[rec.units[j] for j in keep], sig_name=[rec.sig_name[j] for j in keep],
                    p_signal=rec.p_signal[:, keep], fmt=["16"] * len(keep), adc_gain=[1000.0] * len(keep),
                    baseline=[0] * len(keep), write_dir=str(data))
        label = "NORM" if "NORM" in ast.literal_eval(r["scp_codes"]) else "OTHER"
        rows.append((name, label, "train" if i < 10 else "test"))
    with open(data / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("record", "labels", "split"), *rows])
    labels = ["NORM", "OTHER"]
    torch.manual_seed(0)
    config = ECGNATConfig.from_preset("tiny", num_labels=2, id2label=dict(enumerate(labels)),
                                      label2id={n: i for i, n in enumerate(labels)},
                                      problem_type="multi_label_classification")
    ckpt = out / "ckpt"
    ECGNATForSequenceClassification(config).save_pretrained(ckpt)
    ECGNATFeatureExtractor(sampling_rate=100, window_s=10).save_pretrained(ckpt)
    return data, ckpt, rows[12][0]


@pytest.mark.shared_data
@pytest.mark.slow
def test_lead_subset_evaluation_leaves_out_records_without_its_leads(folder_with_a_precordial_record, tmp_path):
    """A test record with only V1-V6 has nothing to show under 'I+II': that subset's metrics leave it out and
    say so (count and name, JSON and Markdown), instead of aborting the whole evaluation; the full-lead and
    other subsets still score it. The subset's numbers equal an evaluation of a folder without the record, so
    nothing was scored as zeros."""
    import json
    import shutil

    from ecgnat_hf.recipes.evaluate import main

    data, ckpt, v_only = folder_with_a_precordial_record

    def evaluate(folder, out):
        return main(["--model_name_or_path", str(ckpt), "--dataset", "folder", "--data_dir", str(folder),
                     "--labels_csv", str(folder / "labels.csv"), "--cache_dir", str(tmp_path / "hf"),
                     "--eval_splits", "test", "--lead_subsets", "12-lead;I+II;V1,V2", "--plot_roc", "false",
                     "--output_dir", str(out), "--use_cpu", "true", "--disable_tqdm", "true"])

    rep = evaluate(data, tmp_path / "eval")
    test = rep["lead_subsets"]["test"]
    assert rep["n_examples"]["test"] == 6
    assert test["I+II"]["n_scored"] == 5 and test["I+II"]["n_skipped"] == 1
    assert [Path(r).name for r in test["I+II"]["skipped_records"]] == [v_only]
    assert test["V1+V2"]["n_scored"] == 6 and test["V1+V2"]["n_skipped"] == 0  # the chest leads are there
    assert "n_skipped" not in test["12-lead"] and np.isfinite(test["12-lead"]["loss"])
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert saved["lead_subsets"]["test"]["I+II"]["n_skipped"] == 1
    md = (tmp_path / "eval" / "evaluation.md").read_text()
    assert "| I+II | 5 of 6 |" in md and v_only in md and "| 12-lead | 6 |" in md

    # the same subset on the folder without that record: identical numbers (the record was never scored)
    other = tmp_path / "without"
    shutil.copytree(data, other)
    for f in other.glob(f"{v_only}.*"):
        f.unlink()
    lines = (other / "labels.csv").read_text().splitlines()
    (other / "labels.csv").write_text("\n".join(ln for ln in lines if not ln.startswith(v_only + ",")) + "\n")
    ref = evaluate(other, tmp_path / "eval2")["lead_subsets"]["test"]["I+II"]
    assert ref["n_skipped"] == 0 and ref["n_scored"] == 5
    for k in ("loss", "macro_auroc"):
        assert test["I+II"][k] == pytest.approx(ref[k], abs=1e-6), k


@pytest.mark.shared_data
def test_training_lead_subset_leaves_out_and_names_records_without_its_leads(folder_with_a_precordial_record, tmp_path):
    """--leads for training / evaluation uses the same rule, and the collator names a record it must refuse."""
    from ecgnat_hf.feature_extraction_ecgnat import ECGNATFeatureExtractor
    from ecgnat_hf.recipes.finetune import _without_records_lacking
    from ecgnat_hf.training.arguments import DataArguments
    from ecgnat_hf.training.data import ECGDataCollator, lead_subset_mask, prepare_classification_data

    data, _, v_only = folder_with_a_precordial_record
    fe = ECGNATFeatureExtractor(sampling_rate=100, window_s=10)
    prepared = prepare_classification_data(DataArguments(
        dataset="folder", data_dir=str(data), labels_csv=str(data / "labels.csv"), cache_dir=str(tmp_path / "hf")), fe)
    test = prepared.splits["test"]
    assert v_only in [Path(r).name for r in test["record"]]  # prepared splits carry the record name
    keep = lead_subset_mask(fe.lead_names, ("I", "II"))
    with pytest.raises(ValueError, match=f"{v_only}: none of the kept leads"):
        ECGDataCollator(prepared.problem_type, keep_leads=keep)([test[i] for i in range(len(test))])
    out = _without_records_lacking(prepared, keep, "I+II")
    assert len(out.splits["test"]) == 5 and len(out.splits["train"]) == len(prepared.splits["train"])
    assert v_only not in [Path(r).name for r in out.splits["test"]["record"]]
    assert [(Path(s.record).name, s.reason) for s in out.skipped[-1:]] == [(v_only, "no lead of --leads")]
