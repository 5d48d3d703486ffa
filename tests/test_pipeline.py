"""transformers pipelines "ecg-classification" and "ecg-feature-extraction": inputs (record path, dict, ECGRecord),
scores against predict_records, top_k and thresholds, embeddings, and the saved checkpoint used through remote
code from a local folder and an offline hub-cache repo id without the package."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import pipeline

from ecgnat_hf import ECGNATConfig, ECGNATFeatureExtractor, ECGNATForSequenceClassification, ECGNATModel
from ecgnat_hf.data import read_record
from ecgnat_hf.data.builders.common import find_records
from ecgnat_hf.inference import predict_records
from ecgnat_hf.pipeline_ecgnat import ECGClassificationPipeline, ECGFeatureExtractionPipeline
from ecgnat_hf.sample_data import sample_dir

from helpers import CHECKPOINT_LABELS as LABELS
from helpers import make_tiny_checkpoint
from test_modeling import _hub_cache_layout, _run_without_package


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def classifier(checkpoint):
    return pipeline("ecg-classification", model=str(checkpoint))


@pytest.fixture(scope="module")
def records() -> list[Path]:
    return find_records(sample_dir() / "records100")[:3]


def _scores(result) -> dict:
    return {r["label"]: r["score"] for r in result}


@pytest.mark.slow
def test_classification_inputs_agree_and_match_predict(classifier, checkpoint, records):
    assert isinstance(classifier, ECGClassificationPipeline)
    rec = read_record(records[0])
    by_path = classifier(str(records[0]))
    by_record = classifier(rec)
    by_dict = classifier({"array": rec.signal, "sampling_rate": rec.sampling_rate, "lead_names": rec.lead_names})
    assert [r["label"] for r in by_path] == sorted(LABELS, key=lambda k: -_scores(by_path)[k])
    assert _scores(by_path) == _scores(by_record) == _scores(by_dict)
    df = predict_records(checkpoint, records, progress=False)
    batch = classifier([str(p) for p in records])
    assert len(batch) == len(records)
    for (_, row), result in zip(df.iterrows(), batch):
        for label, score in _scores(result).items():
            assert score == pytest.approx(row[label], abs=1e-6)
    for r in by_path:  # no thresholds saved: multi-label default 0.5
        assert r["threshold"] == 0.5 and r["positive"] == (r["score"] >= 0.5)


@pytest.mark.shared_data
@pytest.mark.slow
def test_top_k_thresholds_and_long_lead_subset_record(classifier, shared_data):
    path = str(shared_data / "mitdb" / "100")  # 30 min, MLII + V5 at 360 Hz: 361 windows averaged
    full = classifier(path, window_batch_size=128)
    assert len(classifier(path, top_k=2)) == 2
    assert classifier(path, top_k=2) == full[:2]
    low = classifier(path, threshold=0.0)
    assert all(r["positive"] for r in low)
    per_label = classifier(path, threshold={"NORM": 1.0})
    assert [r for r in per_label if r["label"] == "NORM"][0]["positive"] is False
    only_ii = classifier(path, lead_names="II")
    assert _scores(only_ii) != _scores(full)
    with pytest.raises(ValueError, match="unknown labels"):
        classifier(path, threshold={"AFIB": 0.3})
    with pytest.raises(ValueError, match="top_k"):
        classifier(path, top_k=0)


@pytest.mark.slow
def test_saved_decision_thresholds_and_single_label(checkpoint, records, tmp_path):
    ckpt = tmp_path / "with_thresholds"
    shutil.copytree(checkpoint, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["decision_thresholds"] = {"NORM": 0.9, "MI": 0.1, "STTC": 0.5, "CD": 0.5, "HYP": 0.5}
    (ckpt / "config.json").write_text(json.dumps(config))
    result = pipeline("ecg-classification", model=str(ckpt))(str(records[0]))
    for r in result:
        assert r["threshold"] == config["decision_thresholds"][r["label"]]
        assert r["positive"] == (r["score"] >= r["threshold"])

    torch.manual_seed(0)
    single = ECGNATConfig.from_preset("tiny", num_labels=3, id2label={0: "SR", 1: "AF", 2: "OTHER"},
                                      label2id={"SR": 0, "AF": 1, "OTHER": 2},
                                      problem_type="single_label_classification")
    ECGNATForSequenceClassification(single).save_pretrained(tmp_path / "single")
    ECGNATFeatureExtractor(sampling_rate=100).save_pretrained(tmp_path / "single")
    out = pipeline("ecg-classification", model=str(tmp_path / "single"))(str(records[0]))
    assert sum(r["score"] for r in out) == pytest.approx(1.0)
    assert [r["positive"] for r in out] == [True, False, False] and out[0]["threshold"] is None


def test_feature_extraction_pipeline_embeddings(checkpoint, records):
    extractor = pipeline("ecg-feature-extraction", model=str(checkpoint))
    assert isinstance(extractor, ECGFeatureExtractionPipeline) and isinstance(extractor.model, ECGNATModel)
    out = extractor(str(records[1]), per_window=True)
    assert out["embedding"].shape == (128,) and out["embedding"].dtype == np.float32
    assert out["n_windows"] == 1 and out["window_embeddings"].shape == (1, 128)
    rec = read_record(records[1])
    fe = extractor.feature_extractor
    feats = fe(rec.signal, sampling_rate=rec.sampling_rate, lead_names=rec.lead_names, return_tensors="pt")
    with torch.no_grad():
        direct = ECGNATModel.from_pretrained(checkpoint).eval()(**{k: feats[k] for k in ("input_values", "lead_mask")})
    np.testing.assert_allclose(out["embedding"], direct.pooler_output[0].numpy(), atol=1e-6)
    np.testing.assert_array_equal(extractor(str(records[1]))["embedding"], out["embedding"])  # deterministic


def test_bad_inputs_are_named(classifier, tmp_path):
    with pytest.raises(TypeError, match="record path"):
        classifier(3.5)
    with pytest.raises(ValueError, match="sampling_rate"):
        classifier({"array": np.zeros((12, 1000))})
    with pytest.raises(ValueError, match="unexpected keys"):
        classifier({"array": np.zeros((12, 1000)), "sampling_rate": 100, "fs": 100})
    from ecgnat_hf.data import ECGDataError

    with pytest.raises(ECGDataError, match="missing"):
        classifier(str(tmp_path / "missing_record"))


@pytest.mark.slow
def test_saved_pipeline_runs_through_remote_code_without_package(classifier, records, tmp_path):
    saved = tmp_path / "ckpt"
    classifier.save_pretrained(saved)
    config = json.loads((saved / "config.json").read_text())
    assert config["custom_pipelines"] == {
        "ecg-classification": {"impl": "pipeline_ecgnat.ECGClassificationPipeline",
                               "pt": ["AutoModelForSequenceClassification"]},
        "ecg-feature-extraction": {"impl": "pipeline_ecgnat.ECGFeatureExtractionPipeline", "pt": ["AutoModel"]},
    }
    assert (saved / "pipeline_ecgnat.py").is_file() and (saved / "feature_extraction_ecgnat.py").is_file()
    # transformers asks for trust_remote_code as soon as a checkpoint declares custom pipelines
    with pytest.raises(ValueError, match="trust_remote_code"):
        pipeline("ecg-classification", model=str(saved))

    rec = read_record(records[2])
    np.save(tmp_path / "signal.npy", rec.signal)
    expected = _scores(classifier(rec))
    embedding = pipeline("ecg-feature-extraction", model=str(saved), trust_remote_code=True)(rec)["embedding"]
    np.save(tmp_path / "embedding.npy", embedding)
    _hub_cache_layout(saved, tmp_path / "hub", "ecg-org/ecgnat-pipeline")
    code = f"""
    import json, numpy as np
    from transformers import pipeline
    signal = np.load({str(tmp_path / 'signal.npy')!r})
    expected = json.loads({json.dumps(json.dumps(expected))})
    embedding = np.load({str(tmp_path / 'embedding.npy')!r})
    for source in ({str(saved)!r}, "ecg-org/ecgnat-pipeline"):
        clf = pipeline("ecg-classification", model=source, trust_remote_code=True)
        assert type(clf).__name__ == "ECGClassificationPipeline", type(clf)
        for inputs in ({str(records[2])!r}, {{"array": signal, "sampling_rate": 100, "lead_names": {rec.lead_names!r}}}):
            got = {{r["label"]: r["score"] for r in clf(inputs)}}
            assert set(got) == set(expected), got
            assert all(abs(got[k] - expected[k]) < 1e-6 for k in got), (got, expected)
        emb = pipeline("ecg-feature-extraction", model=source, trust_remote_code=True)(
            {{"array": signal, "sampling_rate": 100, "lead_names": {rec.lead_names!r}}})["embedding"]
        assert np.abs(emb - embedding).max() < 1e-6
    import sys
    assert not any(m.startswith("ecgnat_hf") for m in sys.modules)
    print("remote-pipeline-ok")
    """
    out = _run_without_package(code, env={"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "home")})
    assert "remote-pipeline-ok" in out
