"""`ecgnat demo --quick`: the README's main job, end to end on the bundled real sample with tiny budgets."""
import json

import pytest

from ecgnat_hf.cli import main as cli_main
from ecgnat_hf.training.hub import check_hub_ready


@pytest.mark.slow
def test_demo_quick_default_arms(tmp_path, capsys):
    """The default demo (about 11 minutes at full budget): the checkpoint users take away and its baseline, and
    it says how to run the whole label-efficiency sweep."""
    out = tmp_path / "demo"
    assert cli_main(["demo", "--output_dir", str(out), "--quick"]) in (0, None)
    printed = capsys.readouterr().out
    assert "ecgnat demo --full" in printed
    summary = json.loads((out / "demo_summary.json").read_text())
    assert {(row["model"], row["fraction"]) for row in summary["label_efficiency"]} == {
        ("ecgnat-pretrained", 1.0), ("resnet1d", 1.0)}
    assert check_hub_ready(out / "finetuned") == []


@pytest.mark.slow
def test_demo_quick_full_writes_every_artifact(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--output_dir", str(out), "--quick", "--full"]) in (0, None)
    printed = capsys.readouterr().out
    assert "Label efficiency on held-out fold 9" in printed and str(out.resolve()) in printed
    assert "ecgnat demo --full" not in printed

    summary = json.loads((out / "demo_summary.json").read_text())
    arms = {(row["model"], row["fraction"]) for row in summary["label_efficiency"]}
    assert arms == {(m, f) for m in ("ecgnat-pretrained", "ecgnat-tiny-scratch", "resnet1d") for f in (0.1, 1.0)}
    for row in summary["label_efficiency"]:
        assert 0.0 <= row["mean"] <= 1.0

    final = out / "finetuned"
    assert check_hub_ready(final) == []
    card = (final / "README.md").read_text()
    results = json.loads((final / "eval_results.json").read_text())
    test_auroc = results["test"]["macro_auroc"]
    assert f"{test_auroc:.4f}" in card  # the card's numbers come from the evaluation JSON
    assert "not a medical device" in card.lower()
    for name in ("label_efficiency.csv", "label_efficiency.md", "label_efficiency.png"):
        assert (out / "label_efficiency" / name).stat().st_size > 0
    assert (out / "evaluation" / "roc_test.png").stat().st_size > 0
    evaluation = (out / "evaluation" / "evaluation.md").read_text()
    for subset in ("12-lead", "6-limb", "I+II", "II", "I"):
        assert f"| {subset} |" in evaluation
    assert (out / "example_ecg.png").stat().st_size > 10_000
    assert (out / "example_lead_fusion.png").stat().st_size > 5_000
    # the demo refuses to overwrite earlier results unless asked
    from ecgnat_hf.recipes.demo import main as demo_main

    with pytest.raises(ValueError, match="not empty"):
        demo_main(["--output_dir", str(out), "--quick", "--full"])
