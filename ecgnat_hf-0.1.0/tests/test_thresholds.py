"""Decision thresholds: fitted on the validation split at the end of fine-tuning (real bundled PTB-XL sample),
saved in config.json with id2label, listed on the model card, and applied by predict_records."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ecgnat_hf import ECGNATConfig
from ecgnat_hf.metrics.functional import f1_at_thresholds, fit_thresholds
from ecgnat_hf.training.thresholds import (
    decide_labels,
    fit_decision_thresholds,
    positive_mask,
    thresholds_from_config,
)

FAST = ["--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "32", "--max_train_samples", "48",
        "--max_eval_samples", "40", "--max_test_samples", "16", "--logging_steps", "1", "--disable_tqdm", "true",
        "--use_cpu", "true", "--max_steps", "2", "--eval_strategy", "steps", "--save_strategy", "steps",
        "--eval_steps", "2", "--save_steps", "2"]


def test_rules_multi_and_single_label():
    labels = ["A", "B", "C"]
    cfg = ECGNATConfig.from_preset("tiny", num_labels=3, id2label=dict(enumerate(labels)),
                                   problem_type="multi_label_classification")
    t, source = thresholds_from_config(cfg)
    assert source.startswith("default 0.5") and t.tolist() == [0.5, 0.5, 0.5]
    cfg.decision_thresholds = {"A": 0.2, "B": 0.9, "C": 0.5}
    t, source = thresholds_from_config(cfg)
    assert source == "config" and t.tolist() == [0.2, 0.9, 0.5]
    probs = np.array([[0.25, 0.85, 0.5], [0.1, 0.95, 0.49]])
    assert decide_labels(probs, cfg) == [["A", "C"], ["B"]]  # >= threshold; none is possible too
    assert decide_labels([0.0, 0.0, 0.0], cfg) == [[]]
    cfg.decision_thresholds = {"A": 0.2}
    with pytest.raises(ValueError, match="lacks classes"):
        thresholds_from_config(cfg)

    cfg.problem_type = "single_label_classification"
    assert thresholds_from_config(cfg) == (None, "argmax")
    assert decide_labels(probs, cfg) == [["B"], ["B"]]
    assert positive_mask(probs, cfg).sum(axis=1).tolist() == [1, 1]
    cfg.problem_type, cfg.num_labels = "regression", 1
    assert decide_labels([[0.3]], cfg) is None


def test_fit_matches_max_f1():
    rng = np.random.default_rng(0)
    y = (rng.random((60, 2)) < 0.3).astype(float)
    y[:, 1] = 0  # no positives: keeps the default
    p = np.clip(y * 0.4 + rng.random((60, 2)) * 0.6, 0, 1)
    t, info = fit_decision_thresholds(p, y, ["X", "Y"], "multi_label_classification")
    assert t["X"] == pytest.approx(fit_thresholds(y, p)[0]) and t["Y"] == 0.5
    assert info["classes_at_default"] == ["Y"] and info["n_examples"] == 60 and info["split"] == "validation"
    best = f1_at_thresholds(y[:, :1], p[:, :1], [t["X"]])["macro"]
    for other in np.linspace(0.05, 0.95, 19):  # no other threshold does better on the fitting data
        assert f1_at_thresholds(y[:, :1], p[:, :1], [other])["macro"] <= best + 1e-12
    assert fit_decision_thresholds(p, y, ["X", "Y"], "single_label_classification")[0] is None


@pytest.mark.slow
def test_finetune_saves_thresholds_card_and_predict_uses_them(tmp_path):
    """Fine-tune 2 steps on the real bundled sample: thresholds fitted on its validation split are in
    config.json (with id2label), on the model card, and ecgnat predict's labels follow them."""
    from ecgnat_hf.inference import predict_records
    from ecgnat_hf.recipes.finetune import train_classifier, _parse
    from ecgnat_hf.sample_data import sample_dir

    out = tmp_path / "ft"
    m, d, t, e = _parse(["--preset", "tiny", "--output_dir", str(out), *FAST])
    results, _ = train_classifier(m, d, t, e, command="finetune test")
    probs, labels = results["raw_predictions"]["validation"]
    cfg = json.loads((out / "config.json").read_text())
    names = [cfg["id2label"][str(i)] for i in range(len(cfg["id2label"]))]
    expected = fit_thresholds(labels, probs)
    assert list(cfg["decision_thresholds"]) == names
    np.testing.assert_allclose([cfg["decision_thresholds"][n] for n in names], expected, atol=1e-12)
    info = cfg["decision_threshold_info"]
    assert info["split"] == "validation" and info["n_examples"] == len(probs) == 40
    card = (out / "README.md").read_text()
    assert "| class | threshold |" in card
    for n in names:
        assert f"| {n} | {cfg['decision_thresholds'][n]:.4f} |" in card

    records = sorted((sample_dir() / "records100" / "00000").glob("*.hea"))[:6]
    df = predict_records(out, [r.with_suffix("") for r in records], progress=False)
    assert df.attrs["thresholds_source"] == "config"
    th = np.array([cfg["decision_thresholds"][n] for n in names])
    for _, row in df.iterrows():
        p = row[names].to_numpy(dtype=float)
        assert row["labels"] == ";".join(n for n, v, t_ in zip(names, p, th) if v >= t_)
