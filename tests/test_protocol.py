"""The evaluation protocol: folds 1-7 train, fold 8 validation (every choice), fold 9 test (read once).

The key property is tested directly: scrambling the test split's labels must not change anything that was
selected (best checkpoint, validation metrics, the weights that are kept), while the test metrics do change,
which shows the test split was scored and only scored.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

FAST = ["--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "32", "--max_train_samples", "40",
        "--max_eval_samples", "24", "--max_test_samples", "24", "--logging_steps", "1", "--disable_tqdm", "true",
        "--use_cpu", "true", "--max_steps", "6", "--eval_strategy", "steps", "--eval_steps", "2",
        "--save_strategy", "steps", "--save_steps", "2", "--load_best_model_at_end", "true", "--seed", "3",
        "--learning_rate", "0.003"]


def test_sample_defaults_are_the_protocol():
    from ecgnat_hf.training.arguments import DataArguments
    from ecgnat_hf.training.data import _default_folds

    assert _default_folds(DataArguments(dataset="sample")) == ((1, 2, 3, 4, 5, 6, 7), (8,), (9,))


def test_demo_uses_the_protocol():
    """The demo neither drops the validation fold nor trains on it."""
    from ecgnat_hf.recipes import demo

    flat = demo.COMMON + demo.finetune_arguments("standard")
    assert "none" not in [v.lower() for v in flat]
    assert flat[flat.index("--train_folds") + 1] == "1-7"
    assert flat[flat.index("--validation_folds") + 1] == "8"
    assert flat[flat.index("--test_folds") + 1] == "9"
    assert flat[flat.index("--load_best_model_at_end") + 1] == "true"


def _train(tmp_path, name, scramble_test: bool):
    from transformers import TrainingArguments

    from ecgnat_hf.recipes import _common as C
    from ecgnat_hf.recipes.finetune import FINETUNE_DEFAULTS, train_classifier
    from ecgnat_hf.training.arguments import DataArguments, EvaluationArguments, ModelArguments, parse_recipe_args
    from ecgnat_hf.training.data import prepare_classification_data

    m, d, t, e = parse_recipe_args((ModelArguments, DataArguments, TrainingArguments, EvaluationArguments),
                                   ["--dataset", "sample", "--preset", "tiny", "--output_dir", str(tmp_path / name), *FAST],
                                   dict(FINETUNE_DEFAULTS, lead_subsets=""))
    fe = C.load_feature_extractor(m, d, C.model_sampling_rate(m, d))
    prepared = prepare_classification_data(d, fe)
    if scramble_test:
        test = prepared.splits["test"].with_format("numpy")
        labels = 1.0 - np.asarray(test["labels"], dtype=np.float32)  # every test label inverted
        test = test.remove_columns("labels").add_column("labels", [row.tolist() for row in labels])
        test = test.cast(prepared.splits["test"].features).with_format("torch")
        prepared = replace(prepared, splits={**prepared.splits, "test": test})
    res, trainer = train_classifier(m, d, t, e, prepared=prepared, feature_extractor=fe, save=False)
    weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    return res, weights


@pytest.mark.slow
def test_scrambled_test_labels_change_no_selection(tmp_path):
    a, wa = _train(tmp_path, "a", scramble_test=False)
    b, wb = _train(tmp_path, "b", scramble_test=True)
    assert a["best_checkpoint"] is not None, "checkpoint selection on validation must be on in this test"
    assert a["best_checkpoint"].rsplit("-", 1)[-1] == b["best_checkpoint"].rsplit("-", 1)[-1]
    assert a["eval_results"]["validation"] == b["eval_results"]["validation"]
    # decision thresholds are fitted on validation only
    assert a["decision_thresholds"] and a["decision_thresholds"] == b["decision_thresholds"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    # the test split was scored (inverted labels invert the AUROC), and only scored
    ta, tb = a["eval_results"]["test"]["macro_auroc"], b["eval_results"]["test"]["macro_auroc"]
    assert ta == pytest.approx(1.0 - tb, abs=1e-6)


def test_paired_bootstrap_interval():
    from ecgnat_hf.metrics.comparison import format_difference, paired_bootstrap

    rng = np.random.default_rng(0)
    y = (rng.random((80, 3)) < 0.4).astype(float)
    good = y + rng.normal(0, 0.3, y.shape)  # informative scores
    noise = rng.random(y.shape)  # uninformative
    same = paired_bootstrap(y, good, good, n_boot=200)
    assert same["difference"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0
    res = paired_bootstrap(y, [good, good + 0.01], noise, n_boot=300)
    assert res["a"] > 0.9 and 0.3 < res["b"] < 0.7
    assert 0 < res["ci_low"] < res["difference"] < res["ci_high"]
    assert res["p_a_not_better"] == 0.0
    flipped = paired_bootstrap(y, noise, good, n_boot=300)
    assert flipped["ci_high"] < 0 and flipped["p_a_not_better"] == 1.0
    assert format_difference(res, "A", "B").startswith("A - B = +")
    with pytest.raises(ValueError, match="same records"):
        paired_bootstrap(y, good[:-1], noise)


def test_per_class_paired_bootstrap():
    from ecgnat_hf.metrics.comparison import per_class_paired_bootstrap

    rng = np.random.default_rng(1)
    y = (rng.random((90, 3)) < 0.3).astype(float)
    y[:, 2] = 0  # a class without a positive among the test records
    good = y + rng.normal(0, 0.3, y.shape)
    noise = rng.random(y.shape)
    mixed = good.copy()
    mixed[:, 1] = noise[:, 1]  # A is good on class 0 only; B is good on class 1 only
    other = noise.copy()
    other[:, 1] = good[:, 1]
    rows = per_class_paired_bootstrap(y, [mixed, mixed], other, ["X", "Y", "Z"], n_boot=300)
    assert [r["label"] for r in rows] == ["X", "Y", "Z"]
    assert [r["n_positive"] for r in rows] == [int(y[:, 0].sum()), int(y[:, 1].sum()), 0]
    assert rows[0]["ci_low"] > 0 and rows[1]["ci_high"] < 0  # the two classes point opposite ways
    assert rows[2]["difference"] is None and rows[2]["a"] is None  # not scorable: no figure, not 0.5
    with pytest.raises(ValueError, match="label names"):
        per_class_paired_bootstrap(y, good, noise, ["X"])
    with pytest.raises(ValueError, match="classes"):
        per_class_paired_bootstrap(y, good[:, :2], noise)


def test_resampled_auroc_equals_ranking_each_resample():
    from ecgnat_hf.metrics.comparison import _resampled_auroc
    from ecgnat_hf.metrics.functional import binary_auroc

    rng = np.random.default_rng(3)
    y = (rng.random(40) < 0.2).astype(float)
    score = np.round(rng.random(40), 1)  # many ties
    idx = rng.integers(0, 40, (300, 40))
    counts = np.zeros((300, 40))
    np.add.at(counts, (np.arange(300)[:, None], idx), 1.0)
    fast = _resampled_auroc(y, score, counts)
    slow = np.array([binary_auroc(y[i], score[i]) for i in idx])
    np.testing.assert_allclose(fast[np.isfinite(slow)], slow[np.isfinite(slow)], rtol=0, atol=1e-12)
    assert np.array_equal(np.isnan(fast), np.isnan(slow))  # a resample without a positive: NaN in both

