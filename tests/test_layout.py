"""Package layout (issue 9): the model families side by side in ``models/<family>/``, flat and self-contained as
remote code; figures in ``plotting/``; the old import paths answer with the moved modules themselves; ResNet1d
checkpoints, whose remote-code files were renamed, load before and after the move."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch
from transformers.dynamic_module_utils import get_imports, get_relative_imports

import ecgnat_hf
from ecgnat_hf._moved import MOVED

PACKAGE = Path(ecgnat_hf.__file__).resolve().parent
BEATNET_SUBMODULES = ("configuration_beatnet", "modeling_beatnet", "feature_extraction_beatnet", "qrs")
OLD_NEW = sorted(MOVED.items()) + [(f"ecgnat_hf.beats.{m}", f"ecgnat_hf.models.beatnet.{m}") for m in BEATNET_SUBMODULES]


@pytest.mark.parametrize("old, new", OLD_NEW)
def test_old_import_path_is_the_moved_module(old, new):
    module = importlib.import_module(old)
    assert module is importlib.import_module(new) and sys.modules[old] is module
    assert module.__name__ == new and module.__spec__.name == new  # one module, known by its new name
    parent, _, child = old.rpartition(".")
    assert getattr(importlib.import_module(parent), child) is module
    # no stub file at the old path: git records the move as a rename
    assert not (PACKAGE.parent / (old.replace(".", "/") + ".py")).exists()


def test_old_names_are_the_same_objects():
    import ecgnat_hf.models.beatnet as beatnet
    import ecgnat_hf.models.ecgnat as ecgnat
    import ecgnat_hf.models.resnet1d as resnet1d
    import ecgnat_hf.plotting as plotting
    from ecgnat_hf.beats import BeatNetConfig, BeatNetFeatureExtractor, BeatNetForSequenceClassification, detect_qrs
    from ecgnat_hf.beats.qrs import tokenize_beats
    from ecgnat_hf.configuration_ecgnat import PRESETS, ECGNATConfig
    from ecgnat_hf.feature_extraction_ecgnat import ECGNATFeatureExtractor
    from ecgnat_hf.modeling_ecgnat import ECGNATForSequenceClassification, ECGNATModel
    from ecgnat_hf.neighborhood_attention import neighborhood_attention_1d
    from ecgnat_hf.training.baselines import (
        ResNet1dConfig,
        ResNet1dForSequenceClassification,
        ResNet1dModel,
        register_baselines,
    )
    from ecgnat_hf.training.lead_attention import record_lead_attention
    from ecgnat_hf.training.plots import CLINICAL_LAYOUT, plot_ecg_12lead

    assert ECGNATConfig is ecgnat.ECGNATConfig is ecgnat_hf.ECGNATConfig and PRESETS is ecgnat.PRESETS
    assert ECGNATModel is ecgnat.ECGNATModel and ECGNATForSequenceClassification is ecgnat.ECGNATForSequenceClassification
    assert ECGNATFeatureExtractor is ecgnat.ECGNATFeatureExtractor is ecgnat_hf.ECGNATFeatureExtractor
    assert neighborhood_attention_1d is ecgnat.modeling_ecgnat.neighborhood_attention_1d
    assert BeatNetConfig is beatnet.BeatNetConfig and BeatNetFeatureExtractor is beatnet.BeatNetFeatureExtractor
    assert BeatNetForSequenceClassification is beatnet.modeling_beatnet.BeatNetForSequenceClassification
    assert detect_qrs is beatnet.qrs.detect_qrs and tokenize_beats is beatnet.tokenize_beats
    assert ResNet1dConfig is resnet1d.configuration_resnet1d.ResNet1dConfig
    assert ResNet1dModel is resnet1d.modeling_resnet1d.ResNet1dModel
    assert ResNet1dForSequenceClassification is resnet1d.ResNet1dForSequenceClassification
    assert register_baselines is resnet1d.register_resnet1d
    assert plot_ecg_12lead is plotting.plot_ecg_12lead and CLINICAL_LAYOUT is plotting.CLINICAL_LAYOUT
    assert record_lead_attention is plotting.record_lead_attention
    model = ResNet1dForSequenceClassification(ResNet1dConfig(hidden_sizes=[8], block_strides=[1], stem_hidden_size=8))
    assert isinstance(model, resnet1d.ResNet1dPreTrainedModel)


@pytest.mark.parametrize("family", ["ecgnat", "beatnet", "resnet1d"])
def test_family_is_flat_and_self_contained(family):
    """What transformers' remote-code loader copies (the file named in auto_map and its relative imports) must
    be in the family folder, and nothing but transformers' own checks may need ecgnat_hf."""
    folder = PACKAGE / "models" / family
    files = {p.stem for p in folder.glob("*.py")} - {"__init__"}
    assert {f"configuration_{family}", f"modeling_{family}"} <= files
    assert not [p for p in folder.iterdir() if p.is_dir() and p.name != "__pycache__"]
    for name in sorted(files):
        path = folder / f"{name}.py"
        assert "ecgnat_hf" not in get_imports(path), f"{path.name} needs ecgnat_hf outside a try block"
        for target in get_relative_imports(path):
            if (name, target) == ("feature_extraction_beatnet", "feature_extraction_ecgnat"):
                continue  # BEAT-Net's extractor builds on ECG-NAT's; its save_pretrained copies that file too
            assert target in files, f"{path.name} imports .{target}, which is not in models/{family}/"


def _resnet1d(**kw):
    from ecgnat_hf.models.resnet1d import ResNet1dConfig, ResNet1dForSequenceClassification

    torch.manual_seed(0)
    cfg = ResNet1dConfig(stem_hidden_size=16, hidden_sizes=[16, 16], block_strides=[1, 2], num_labels=3,
                         id2label={0: "NORM", 1: "MI", 2: "STTC"}, label2id={"NORM": 0, "MI": 1, "STTC": 2}, **kw)
    return ResNet1dForSequenceClassification(cfg).eval()


@pytest.mark.slow
def test_resnet1d_hub_checkpoint_loads_without_package(tmp_path):
    from test_modeling import _run_without_package

    from ecgnat_hf.training.hub import check_hub_ready, save_hub_ready

    model = _resnet1d()
    save_hub_ready(model, ecgnat_hf.ECGNATFeatureExtractor(sampling_rate=100), tmp_path / "ckpt")
    auto_map = json.loads((tmp_path / "ckpt" / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_resnet1d.ResNet1dConfig",
        "AutoModel": "modeling_resnet1d.ResNet1dModel",
        "AutoModelForSequenceClassification": "modeling_resnet1d.ResNet1dForSequenceClassification",
    }
    assert (tmp_path / "ckpt" / "configuration_resnet1d.py").is_file()
    assert not (tmp_path / "ckpt" / "baselines.py").exists()
    assert check_hub_ready(tmp_path / "ckpt") == ["missing README.md"]  # no model card asked for
    x = torch.randn(2, 12, 1000, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(model(x).logits, tmp_path / "logits.pt")
    out = _run_without_package(f"""
    import sys, torch
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification
    ckpt, x = {str(tmp_path / "ckpt")!r}, torch.load({str(tmp_path / "x.pt")!r})
    cfg = AutoConfig.from_pretrained(ckpt, trust_remote_code=True)
    clf = AutoModelForSequenceClassification.from_pretrained(ckpt, trust_remote_code=True).eval()
    enc = AutoModel.from_pretrained(ckpt, trust_remote_code=True).eval()
    assert type(cfg).__name__ == "ResNet1dConfig" and cfg.id2label[1] == "MI"
    with torch.no_grad():
        assert torch.equal(clf(x).logits, torch.load({str(tmp_path / "logits.pt")!r}))
        assert enc(x).pooler_output.shape == (2, 32)
    assert not any(m.startswith("ecgnat_hf") for m in sys.modules)
    print("remote-ok", type(clf).__module__)
    """)
    assert "remote-ok" in out and "modeling_resnet1d" in out


def test_resnet1d_checkpoint_saved_before_the_move(tmp_path):
    """Checkpoints written before models/resnet1d/ carry baselines.py and an auto_map naming it: they load
    locally (by model_type) with identical outputs, and a model loaded from one re-saves hub-ready."""
    from transformers import AutoModelForSequenceClassification

    from ecgnat_hf.training.hub import check_hub_ready, save_hub_ready

    model = _resnet1d()
    old = tmp_path / "old"
    model.save_pretrained(old)
    cfg = json.loads((old / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "baselines.ResNet1dConfig", "AutoModel": "baselines.ResNet1dModel",
                       "AutoModelForSequenceClassification": "baselines.ResNet1dForSequenceClassification"}
    (old / "config.json").write_text(json.dumps(cfg))
    for name in ("configuration_resnet1d.py", "modeling_resnet1d.py"):
        (old / name).unlink(missing_ok=True)
    loaded = AutoModelForSequenceClassification.from_pretrained(old).eval()
    assert type(loaded) is type(model)
    x = torch.randn(2, 12, 1000, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)
    new = save_hub_ready(loaded, ecgnat_hf.ECGNATFeatureExtractor(sampling_rate=100), tmp_path / "new")
    assert check_hub_ready(new) == ["missing README.md"]  # no model card asked for
    auto_map = json.loads((new / "config.json").read_text())["auto_map"]
    assert not [v for v in auto_map.values() if v.startswith("baselines.")], auto_map
