"""Metrics: equal to sklearn where sklearn has them, hand-computed Challenge score, Trainer glue."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

from ecgnat_hf.data.labels import SINUS_RHYTHM, codes_to_multi_hot, load_challenge_classes
from ecgnat_hf.metrics import (
    METRIC_MODULES,
    ChallengeScore,
    ECGAccuracy,
    MultilabelAUC,
    ThresholdedF1,
    challenge_score,
    challenge_score_from_codes,
    f1_at_thresholds,
    fit_thresholds,
    make_compute_metrics,
    metric_path,
    modified_confusion_matrix,
    multilabel_auprc,
    multilabel_auroc,
)


@pytest.fixture
def multilabel():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 6)) < [0.1, 0.3, 0.5, 0.05, 0.2, 0.4]).astype(int)
    s = rng.normal(size=y.shape) + 1.2 * y
    s[:, 2] = np.round(s[:, 2], 1)  # ties
    return y, s


def test_auroc_auprc_match_sklearn(multilabel):
    y, s = multilabel
    roc = multilabel_auroc(y, s)
    pr = multilabel_auprc(y, s)
    assert roc["skipped_classes"] == []
    assert roc["macro"] == pytest.approx(roc_auc_score(y, s, average="macro"), abs=1e-12)
    assert pr["macro"] == pytest.approx(average_precision_score(y, s, average="macro"), abs=1e-12)
    for k in range(y.shape[1]):
        assert roc["per_class"][str(k)] == pytest.approx(roc_auc_score(y[:, k], s[:, k]), abs=1e-12)
        assert pr["per_class"][str(k)] == pytest.approx(average_precision_score(y[:, k], s[:, k]), abs=1e-12)


def test_single_valued_classes_are_skipped_and_reported(multilabel):
    y, s = multilabel
    y = y.copy()
    y[:, 1] = 0
    y[:, 4] = 1
    names = ["a", "b", "c", "d", "e", "f"]
    out = MultilabelAUC().compute(predictions=s, references=y, label_names=names)
    assert out["skipped_classes"] == ["b", "e"]
    assert np.isnan(out["auroc"]["b"]) and np.isnan(out["auprc"]["e"])
    keep = [0, 2, 3, 5]
    assert out["macro_auroc"] == pytest.approx(roc_auc_score(y[:, keep], s[:, keep], average="macro"))
    assert out["macro_auprc"] == pytest.approx(average_precision_score(y[:, keep], s[:, keep], average="macro"))


def test_accuracy_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 300)
    logits = rng.normal(size=(300, 5)) + 1.5 * np.eye(5)[y]
    pred = logits.argmax(1)
    assert ECGAccuracy().compute(predictions=pred, references=y)["accuracy"] == pytest.approx(accuracy_score(y, pred))


@pytest.mark.slow
def test_fit_thresholds_maximise_f1(multilabel):
    y, s = multilabel
    th = fit_thresholds(y, s)
    best = f1_at_thresholds(y, s, th)
    for k in range(y.shape[1]):
        # brute force over every distinct score as threshold
        cands = [f1_score(y[:, k], s[:, k] >= t, zero_division=0) for t in np.unique(s[:, k])]
        assert best["per_class"][str(k)] == pytest.approx(max(cands), abs=1e-12)
    assert best["macro"] >= f1_at_thresholds(y, s, 0.5)["macro"]
    out = ThresholdedF1().compute(predictions=s, references=y, thresholds=th)
    assert out["macro_f1"] == pytest.approx(f1_score(y, s >= th, average="macro", zero_division=0))
    assert out["micro_f1"] == pytest.approx(f1_score(y, s >= th, average="micro", zero_division=0))
    # a class without positives keeps the default threshold
    y0 = y.copy()
    y0[:, 0] = 0
    assert fit_thresholds(y0, s, default=0.5)[0] == 0.5


def test_challenge_score_hand_computed():
    # classes A, B, N (N: the normal class); weights: A/B half credit, N only with itself
    classes = ["1", "2", SINUS_RHYTHM]
    W = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1]])
    outputs = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1]])
    # rec 1: {A}->{A}, |union|=1: A[A,A]=1            -> 1
    # rec 2: {B}->{A}, |union|=2: A[B,A]=0.5          -> 0.25
    # rec 3: {A,N}->{N}, |union|=2: A[A,N]=A[N,N]=0.5 -> 0.5
    A = modified_confusion_matrix(labels, outputs)
    assert np.allclose(A, [[1.0, 0.0, 0.5], [0.5, 0.0, 0.0], [0.0, 0.0, 0.5]])
    # observed 1.75, correct 3.0, inactive 0.5 -> (1.75 - 0.5) / (3 - 0.5) = 0.5
    assert challenge_score(labels, outputs, W, classes) == pytest.approx(0.5)
    assert challenge_score(labels, labels, W, classes) == pytest.approx(1.0)


def test_challenge_score_real_weights():
    cc = load_challenge_classes()
    assert len(cc.codes) == 26 and cc.weights.shape == (26, 26)
    rng = np.random.default_rng(0)
    labels = (rng.random((40, 26)) < 0.1).astype(int)
    labels[labels.sum(1) == 0, cc.codes.index(SINUS_RHYTHM)] = 1
    assert challenge_score(labels, labels) == pytest.approx(1.0)
    inactive = np.zeros_like(labels)
    inactive[:, cc.codes.index(SINUS_RHYTHM)] = 1
    assert challenge_score(labels, inactive) == pytest.approx(0.0)
    metric = ChallengeScore()
    assert metric.compute(predictions=labels * 0.9, references=labels)["challenge_score"] == pytest.approx(1.0)
    assert metric.compute(predictions=inactive, references=labels)["challenge_score"] == pytest.approx(0.0)
    noisy = np.clip(labels * 0.6 + rng.random(labels.shape) * 0.6, 0, 1)  # some false positives
    assert -1.0 < metric.compute(predictions=noisy, references=labels)["challenge_score"] < 1.0


def test_challenge_equivalent_codes():
    # RBBB (59118001) is the same class as CRBBB (713427006); VPB == PVC; SVPB == PAC; LBBB == CLBBB
    truth = [["713427006"], ["427172004", "426783006"], ["284470004"], ["733534002"]]
    preds = [["59118001"], ["17338001", "426783006"], ["63593006"], ["164909002"]]
    assert challenge_score_from_codes(truth, preds) == pytest.approx(1.0)
    assert np.array_equal(codes_to_multi_hot(["59118001"]), codes_to_multi_hot(["713427006"]))


def test_metric_modules_load_with_evaluate(multilabel):
    import evaluate

    y, s = multilabel
    for name in METRIC_MODULES:
        assert isinstance(evaluate.load(metric_path(name)), evaluate.Metric)
    m = evaluate.load(metric_path("multilabel_auc"))
    for i in range(0, len(y), 50):  # batched accumulation
        m.add_batch(predictions=s[i : i + 50], references=y[i : i + 50])
    assert m.compute()["macro_auroc"] == pytest.approx(roc_auc_score(y, s, average="macro"))


def test_make_compute_metrics(multilabel):
    from transformers import EvalPrediction

    y, s = multilabel
    fn = make_compute_metrics("multi_label_classification", [f"c{i}" for i in range(6)])
    out = fn(EvalPrediction(predictions=s, label_ids=y))
    assert out["macro_auroc"] == pytest.approx(roc_auc_score(y, s, average="macro"))
    assert "auroc_c0" in out and "challenge_score" not in out
    probs = 1 / (1 + np.exp(-s))
    assert out["macro_f1"] == pytest.approx(f1_score(y, probs >= 0.5, average="macro", zero_division=0))

    rng = np.random.default_rng(2)
    yy = rng.integers(0, 3, 100)
    logits = rng.normal(size=(100, 3)) + 2 * np.eye(3)[yy]
    out = make_compute_metrics("single_label", ["a", "b", "c"])(EvalPrediction(predictions=(logits,), label_ids=yy))
    assert out["accuracy"] == pytest.approx(accuracy_score(yy, logits.argmax(1)))
    assert out["macro_f1"] == pytest.approx(f1_score(yy, logits.argmax(1), average="macro"))

    cc = load_challenge_classes()
    lab = np.zeros((5, 26))
    lab[:, cc.codes.index(SINUS_RHYTHM)] = 1
    lab[0, 0] = 1
    out = make_compute_metrics("multi_label", list(cc.codes))(EvalPrediction(predictions=(lab - 0.5) * 20, label_ids=lab))
    assert out["challenge_score"] == pytest.approx(1.0)
