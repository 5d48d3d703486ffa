"""Model cards: numbers come from the evaluation JSON, model-index metadata round-trips, disclaimers present."""
from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from ecgnat_hf.training.model_card import (
    TEMPLATES_DIR,
    flatten_eval_results,
    load_eval_results,
    template_path,
    write_model_card,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

EVAL = {
    "eval_loss": 0.41237,
    "eval_macro_auroc": 0.87654,
    "eval_runtime": 3.2,
    "eval_samples_per_second": 99.0,
    "epoch": 3.0,
    "test": {
        "macro_auroc": 0.86127,
        "accuracy": 0.7031,
        "per_class_auroc": {"NORM": 0.9123, "MI": 0.8012},
    },
}
COMMAND = "python recipes/finetune.py --config recipes/configs/tiny.yaml --max_steps 30"


@pytest.fixture()
def eval_json(tmp_path):
    path = tmp_path / "all_results.json"
    path.write_text(json.dumps(EVAL))
    return path


def _write(out, eval_json, kind="finetuned", **kw):
    (out / "config.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(
        {"model_type": "ecgnat", "problem_type": "multi_label_classification", "id2label": {"0": "NORM", "1": "MI"}}
    ))
    (out / "preprocessor_config.json").write_text(json.dumps(
        {"feature_extractor_type": "ECGNATFeatureExtractor", "sampling_rate": 100, "target_leads": ["I", "II"]}
    ))
    args = dict(
        kind=kind,
        model_name="ecgnat-test-model",
        eval_results=load_eval_results(eval_json),
        task_name="PTB-XL superdiagnostic",
        dataset_name="PTB-XL",
        command=COMMAND,
        training_args={"learning_rate": 0.0005, "num_train_epochs": 3, "seed": 7, "report_to": [],
                       "hub_token": "hf_SECRETSECRET"},
        label_names=None,
        base_model="org/ecgnat-tiny" if kind == "finetuned" else None,
        extra_sections={"Notes": "Trained on a tiny subset for testing."},
    )
    args.update(kw)
    return write_model_card(out, **args)


def test_card_numbers_and_model_index_come_from_the_json(tmp_path, eval_json):
    path = _write(tmp_path / "ckpt", eval_json)
    assert path == tmp_path / "ckpt" / "README.md"
    text = path.read_text()
    # the results table holds the JSON's numbers
    for value in ("0.4124", "0.8765", "0.8613", "0.7031", "0.9123", "0.8012"):
        assert value in text, value
    assert "| validation | Macro AUROC | 0.8765 |" in text
    assert "| test | Per Class AUROC | NORM | 0.9123 |" in text
    # bookkeeping is not a result
    assert "Runtime" not in text and "Epoch |" not in text
    # the exact command, the run's arguments, labels and preprocessing are on the card
    assert COMMAND in text
    assert "| `learning_rate` | `0.0005` |" in text and "| `seed` | `7` |" in text
    assert "hf_SECRETSECRET" not in text and "| `hub_token` | `<redacted>` |" in text
    assert "`NORM`, `MI`" in text and "sigmoid" in text
    assert "**100 Hz**" in text and "preprocessor_config.json" in text
    assert "## Notes" in text and "Trained on a tiny subset" in text
    assert "{{" not in text.replace("{{PTB-XL}", "").replace("{{ECG-NAT}", "").replace("{{BEAT-Net}", "")
    assert "{%" not in text

    # model-index parsed back by huggingface_hub matches the JSON exactly (full precision)
    card = ModelCard.load(path)
    data = card.data
    assert data.model_name == "ecgnat-test-model"
    assert data.base_model == "org/ecgnat-tiny"
    assert data.library_name == "transformers"
    got = {(r.dataset_split, r.metric_type, r.metric_name): r.metric_value for r in data.eval_results}
    assert got == {
        ("validation", "loss", "Loss (validation)"): 0.41237,
        ("validation", "roc_auc", "Macro AUROC (validation)"): 0.87654,
        ("test", "roc_auc", "Macro AUROC (test)"): 0.86127,
        ("test", "accuracy", "Accuracy (test)"): 0.7031,
    }
    assert {r.task_name for r in data.eval_results} == {"PTB-XL superdiagnostic"}
    assert {r.dataset_name for r in data.eval_results} == {"PTB-XL"}
    assert "model-index" in data.to_dict()


def test_intended_use_disclaimer_licences_and_citations(tmp_path, eval_json):
    for kind in ("finetuned", "pretrained"):
        text = _write(tmp_path / kind, eval_json, kind=kind).read_text()
        assert "## Intended use and limits" in text
        assert "Research use only" in text
        assert "not a medical device" in text
        assert "not been validated for clinical" in text
        assert "CC-BY-4.0" in text  # PTB-XL licence in the training-data table
        assert "trust_remote_code=True" in text
        for cite in ("10.1038/s41597-020-0495-6", "2605.13194", "2601.07316", "Lead-agnostic", "CHIL"):
            assert cite in text, (kind, cite)
    pre = (tmp_path / "pretrained" / "README.md").read_text()
    assert "AutoModel.from_pretrained" in pre and "self-supervised" in pre
    assert ModelCard.load(tmp_path / "pretrained" / "README.md").data.pipeline_tag == "feature-extraction"


def test_no_results_and_bad_inputs(tmp_path):
    path = write_model_card(
        tmp_path, kind="pretrained", model_name="m", eval_results={}, task_name="t", dataset_name="Own data",
        command="python x.py", training_args=None,
    )
    text = path.read_text()
    assert "No evaluation results were recorded" in text
    assert "model-index" not in ModelCard.load(path).data.to_dict()
    assert "not recorded here" in text  # unknown dataset: licence not invented
    with pytest.raises(ValueError, match="kind"):
        template_path("other")
    with pytest.raises(ValueError, match="command"):
        write_model_card(tmp_path, kind="finetuned", model_name="m", eval_results={}, task_name="t",
                         dataset_name="d", command=" ", training_args={})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_eval_results(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_eval_results(tmp_path / "missing.json")


def test_flatten_rules():
    rows, per_label = flatten_eval_results(
        {"test_macro_auroc": 0.9, "predict_runtime": 1.0, "fold10": {"auroc": 0.8}, "note": "x", "ok": True,
         "per_class_f1": {"A": 0.5}}
    )
    assert [(r.split, r.metric, r.value) for r in rows] == [("test", "macro_auroc", 0.9), ("fold10", "auroc", 0.8)]
    assert per_label == {("test", "per_class_f1"): {"A": 0.5}}


def test_templates_are_packaged_and_example_is_current(tmp_path):
    assert (TEMPLATES_DIR / "pretrained.md").is_file() and (TEMPLATES_DIR / "finetuned.md").is_file()
    example = REPO_ROOT / "model_cards" / "example" / "README.md"
    script = REPO_ROOT / "model_cards" / "render_example.py"
    if not script.is_file():
        pytest.skip("model_cards/ not present (installed package without the repository)")
    fresh = runpy.run_path(str(script))["render"](tmp_path)
    assert fresh.read_text() == example.read_text(), "run `python model_cards/render_example.py` and commit"
    assert "EXAMPLE RENDERING" in example.read_text()
