"""Render the EXAMPLE model card in ``model_cards/example/README.md``.

    python model_cards/render_example.py

It runs the package's real card writer (``ecgnat_hf.training.model_card.write_model_card``) on the
made-up numbers in ``example_eval_results.json`` so reviewers can see a rendered card without
training anything. ``tests/test_model_card.py`` re-renders it and fails if the committed copy is stale.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ecgnat_hf.training.model_card import load_eval_results, write_model_card

HERE = Path(__file__).resolve().parent

BANNER = (
    "> **EXAMPLE RENDERING - NOT A REAL MODEL.** This file shows what `write_model_card` produces. "
    "Its numbers are made up (`model_cards/example_eval_results.json`); regenerate it with "
    "`python model_cards/render_example.py`.\n"
)


def render(output_dir: str | Path) -> Path:
    output_dir = Path(output_dir)
    path = write_model_card(
        output_dir,
        kind="finetuned",
        model_name="example-ecgnat-tiny-ptbxl-superdiagnostic",
        repo_id="your-org/ecgnat-tiny-ptbxl-superdiagnostic",
        eval_results=load_eval_results(HERE / "example_eval_results.json"),
        task_name="PTB-XL superdiagnostic (5 classes, multi-label)",
        dataset_name="PTB-XL",
        command="python recipes/finetune.py recipes/configs/finetune_tiny_ptbxl.yaml --output_dir runs/example",
        training_args={
            "learning_rate": 0.0005,
            "num_train_epochs": 20,
            "per_device_train_batch_size": 64,
            "weight_decay": 0.05,
            "warmup_ratio": 0.05,
            "lr_scheduler_type": "cosine",
            "seed": 42,
            "metric_for_best_model": "macro_auroc",
        },
        label_names=["NORM", "MI", "STTC", "CD", "HYP"],
        base_model="your-org/ecgnat-tiny",
        model_config={
            "model_type": "ecgnat",
            "problem_type": "multi_label_classification",
            "num_leads": 12,
            "note": "example values",
        },
        preprocessor_config={
            "feature_extractor_type": "ECGNATFeatureExtractor",
            "sampling_rate": 100,
            "note": "example values",
        },
        extra_sections={
            "About this example": "This card was rendered from made-up numbers to document the card format. "
            "No model was trained for it and none of its numbers is a measurement."
        },
    )
    text = path.read_text(encoding="utf-8")
    head, sep, body = text.partition("\n---\n")  # after the YAML front matter
    path.write_text(head + sep + "\n" + BANNER + body, encoding="utf-8")
    return path


if __name__ == "__main__":
    out = render(sys.argv[1] if len(sys.argv) > 1 else HERE / "example")
    print(out)
