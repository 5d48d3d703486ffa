"""Layer-wise learning-rate decay: which layer each ECG-NAT parameter belongs to, the rates of the groups, and that
the fine-tuning recipe's Trainer really optimises with them (and refuses the option where it means nothing)."""
from __future__ import annotations

import math

import pytest
import torch

from ecgnat_hf import ECGNATConfig, ECGNATForSequenceClassification
from ecgnat_hf.training.optimization import layer_index, layerwise_lr_param_groups


def _tiny(**kw):
    return ECGNATForSequenceClassification(ECGNATConfig.from_preset("tiny", num_labels=3, **kw))


def test_layer_index_follows_the_encoder_order():
    depths = [1, 1, 2]
    assert layer_index("ecgnat.stem.conv1.weight", depths) == 0
    assert layer_index("ecgnat.stem.lead_embeddings", depths) == 0
    assert layer_index("ecgnat.stages.0.position.conv.weight", depths) == 1
    assert layer_index("ecgnat.stages.0.layers.0.attention.qkv.weight", depths) == 1
    assert layer_index("ecgnat.stages.1.downsample.conv.weight", depths) == 2  # goes with the stage's first layer
    assert layer_index("ecgnat.stages.2.layers.0.mlp.fc1.weight", depths) == 3
    assert layer_index("ecgnat.stages.2.layers.1.mlp.fc1.weight", depths) == 4
    assert layer_index("ecgnat.layernorm.weight", depths) == 5
    assert layer_index("classifier.weight", depths) == 5


def test_groups_cover_every_trainable_parameter_once_with_decayed_rates():
    model = _tiny()
    groups = layerwise_lr_param_groups(model, 1e-3, 0.05, 0.5)
    names = [n for g in groups for n in g["names"]]
    assert sorted(names) == sorted(n for n, p in model.named_parameters())
    by_layer = {g["layer"]: g["lr"] for g in groups}
    assert sorted(by_layer) == [0, 1, 2, 3, 4, 5]
    assert by_layer[5] == pytest.approx(1e-3)  # head: the full rate
    for layer in range(5):
        assert by_layer[layer] == pytest.approx(1e-3 * 0.5 ** (5 - layer))
    assert all(g["weight_decay"] == 0.05 for g in groups)  # no names given: weight decay everywhere
    # the Trainer's no-decay parameters (biases, norms) get 0
    decay = {n for n, p in model.named_parameters() if p.ndim > 1}
    groups = layerwise_lr_param_groups(model, 1e-3, 0.05, 0.5, decay)
    for g in groups:
        assert all((n in decay) == (g["weight_decay"] == 0.05) for n in g["names"])


def test_decay_one_is_plain_and_frozen_parameters_are_left_out():
    model = _tiny()
    for p in model.ecgnat.stem.parameters():
        p.requires_grad_(False)
    groups = layerwise_lr_param_groups(model, 2e-3, 0.0, 1.0)
    assert {g["lr"] for g in groups} == {2e-3}
    assert not any(".stem." in n for g in groups for n in g["names"])


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5, math.nan])
def test_bad_decay_is_refused(bad):
    with pytest.raises(ValueError, match="layer_decay"):
        layerwise_lr_param_groups(_tiny(), 1e-3, 0.05, bad)
    from ecgnat_hf.training.arguments import ModelArguments

    with pytest.raises(ValueError, match="--layer_decay"):
        ModelArguments(layer_decay=bad)


def test_non_ecgnat_model_is_refused():
    from ecgnat_hf.models.resnet1d import ResNet1dConfig, ResNet1dForSequenceClassification

    with pytest.raises(ValueError, match="ECG-NAT"):
        layerwise_lr_param_groups(ResNet1dForSequenceClassification(ResNet1dConfig(num_labels=3)), 1e-3, 0.05, 0.5)


FAST = ["--dataset", "sample", "--per_device_train_batch_size", "8", "--max_train_samples", "16", "--max_eval_samples", "8",
        "--max_test_samples", "8", "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no",
        "--load_best_model_at_end", "false", "--disable_tqdm", "true", "--use_cpu", "true", "--warmup_steps", "0",
        "--lr_scheduler_type", "constant", "--learning_rate", "0.001"]


@pytest.mark.slow
def test_finetune_recipe_optimises_with_decayed_rates(tmp_path):
    from ecgnat_hf.recipes.finetune import _parse, train_classifier

    args = _parse(["--layer_decay", "0.5", "--output_dir", str(tmp_path / "ft"), *FAST])
    _, trainer = train_classifier(*args, save=False)
    rates = sorted({g["lr"] for g in trainer.optimizer.param_groups})
    assert rates == pytest.approx([1e-3 * 0.5 ** k for k in range(5, -1, -1)])
    head = [g for g in trainer.optimizer.param_groups if any(p is trainer.model.classifier.weight for p in g["params"])]
    assert head[0]["lr"] == pytest.approx(1e-3) and head[0]["weight_decay"] > 0
    stem_bias = trainer.model.ecgnat.stem.conv1.bias
    g = next(g for g in trainer.optimizer.param_groups if any(p is stem_bias for p in g["params"]))
    assert g["lr"] == pytest.approx(1e-3 * 0.5 ** 5) and g["weight_decay"] == 0.0  # the Trainer's no-decay rule
    # default: one rate for everything (the Trainer's own optimizer)
    args = _parse(["--output_dir", str(tmp_path / "ft1"), *FAST])
    _, trainer = train_classifier(*args, save=False)
    assert {g["lr"] for g in trainer.optimizer.param_groups} == {1e-3}


def test_finetune_recipe_refuses_layer_decay_for_the_baseline(tmp_path):
    from ecgnat_hf.recipes.finetune import _parse, train_classifier

    args = _parse(["--model_type", "resnet1d", "--layer_decay", "0.5", "--output_dir", str(tmp_path / "rn"), *FAST])
    with pytest.raises(ValueError, match="--layer_decay 0.5 needs --model_type ecgnat"):
        train_classifier(*args, save=False)
