"""End-to-end tests of the recipes on the real bundled PTB-XL sample, with tiny budgets.

Each recipe's ``main()`` runs for a few optimisation steps; the outputs must be hub-ready (config with a
complete auto_map, safetensors, preprocessor config with auto_map, copied remote-code files, a model
card whose numbers are those of eval_results.json). Also: configs parse, resuming continues the step
count, and ``--push_to_hub`` round-trips offline through a hub-cache layout into a fresh process where
``ecgnat_hf`` cannot be imported.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs"

# tiny budgets: a handful of steps, small splits (the sample has 434 records)
FAST = ["--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "32", "--max_train_samples", "48",
        "--max_eval_samples", "24", "--max_test_samples", "32", "--logging_steps", "1", "--disable_tqdm", "true",
        "--use_cpu", "true"]


def _fast_steps(n: int) -> list[str]:
    return ["--max_steps", str(n), "--eval_strategy", "steps", "--save_strategy", "steps", "--eval_steps", str(n),
            "--save_steps", str(n)]


def _assert_hub_ready(folder: Path, heads=("AutoModelForSequenceClassification",)):
    from ecgnat_hf.training.hub import check_hub_ready

    assert check_hub_ready(folder) == []
    cfg = json.loads((folder / "config.json").read_text())
    for head in ("AutoConfig", "AutoModel") + tuple(heads):
        assert head in cfg["auto_map"], head
        module = cfg["auto_map"][head].split(".")[0]
        assert (folder / f"{module}.py").is_file()
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    assert pre["auto_map"]["AutoFeatureExtractor"].startswith("feature_extraction_ecgnat.")
    assert (folder / "feature_extraction_ecgnat.py").is_file()
    assert (folder / "run_arguments.json").is_file()
    assert (folder / "README.md").read_text().startswith("---")


def _assert_card_matches(folder: Path):
    """Every scalar of eval_results.json appears in the card (same 4-decimal formatting) and in model-index."""
    card = (folder / "README.md").read_text()
    results = json.loads((folder / "eval_results.json").read_text())
    n = 0
    for split, metrics in results.items():
        for k, v in metrics.items():
            if isinstance(v, float):
                assert f"{v:.4f}" in card, (split, k, v)
                assert f"value: {v}" in card or f"value: {v!r}" in card, (split, k, v)
                n += 1
    assert n > 0


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from ecgnat_hf.recipes.pretrain import main

    out = tmp_path_factory.mktemp("pre") / "pretrain"
    res = main(["--preset", "tiny", "--dataset", "sample", "--output_dir", str(out), *FAST, *_fast_steps(2)])
    return out, res


@pytest.mark.slow
def test_pretrain_outputs_hub_ready(pretrained):
    out, res = pretrained
    assert res["global_step"] == 2
    assert np.isfinite(res["eval_results"]["validation"]["loss"])
    assert res["sources"] == ["PTB-XL (bundled sample)"]
    _assert_hub_ready(out, heads=("AutoModelForPreTraining", "AutoModelForSequenceClassification"))
    _assert_card_matches(out)
    assert "python -m ecgnat_hf.recipes.pretrain --preset tiny" in (out / "README.md").read_text()


@pytest.mark.slow
def test_finetune_from_pretrained(pretrained, tmp_path):
    import torch
    from safetensors.torch import load_file

    from ecgnat_hf.recipes.finetune import main

    out = tmp_path / "ft"
    args = ["--model_name_or_path", str(pretrained[0]), "--output_dir", str(out), "--lead_subsets", "12-lead;II",
            *FAST, *_fast_steps(2)]
    res = main(args)
    assert res["global_step"] == 2 and res["n_train"] == 48
    ev = res["eval_results"]
    assert set(ev) == {"validation", "test"}
    assert 0.0 <= ev["test"]["macro_auroc"] <= 1.0
    assert set(ev["test"]["auroc"]) == {"CD", "HYP", "MI", "NORM", "STTC"}
    assert set(res["lead_subsets"]) == {"12-lead", "II"}
    _assert_hub_ready(out)
    _assert_card_matches(out)
    assert json.loads((out / "eval_results.json").read_text()) == json.loads(json.dumps(ev))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["id2label"] == {"0": "CD", "1": "HYP", "2": "MI", "3": "NORM", "4": "STTC"}
    assert cfg["label2id"]["NORM"] == 3 and cfg["problem_type"] == "multi_label_classification"
    card = (out / "README.md").read_text()
    assert "python -m ecgnat_hf.recipes.finetune --model_name_or_path" in card
    assert "Results per lead subset" in card
    # the encoder started from the pretraining checkpoint (the stem moved only a little in 2 steps)
    pre = load_file(str(pretrained[0] / "model.safetensors"))
    ft = load_file(str(out / "model.safetensors"))
    key = next(k for k in pre if k.startswith("ecgnat.") and k.endswith("weight"))
    assert torch.allclose(pre[key], ft[key], atol=0.05)


@pytest.mark.slow
def test_finetune_resnet1d_baseline_hub_ready(tmp_path):
    from ecgnat_hf.recipes.finetune import main

    out = tmp_path / "rn"
    res = main(["--model_type", "resnet1d", "--output_dir", str(out), "--config_overrides", "hidden_sizes=[32,32],"
                "block_strides=[1,2],stem_hidden_size=32", *FAST, *_fast_steps(2)])
    assert res["global_step"] == 2
    _assert_hub_ready(out)
    assert (out / "configuration_resnet1d.py").is_file() and (out / "modeling_resnet1d.py").is_file()
    _assert_card_matches(out)


@pytest.mark.slow
def test_linear_probe_freezes_encoder(pretrained, tmp_path):
    import torch
    from safetensors.torch import load_file

    from ecgnat_hf.recipes.linear_probe import main

    out = tmp_path / "probe"
    res = main(["--model_name_or_path", str(pretrained[0]), "--output_dir", str(out), *FAST, *_fast_steps(2)])
    assert res["frozen_parameters"] > 0 and res["parameters"]["trainable"] < res["parameters"]["total"]
    pre, probe = load_file(str(pretrained[0] / "model.safetensors")), load_file(str(out / "model.safetensors"))
    enc = [k for k in probe if k.startswith("ecgnat.")]
    assert enc and all(torch.equal(pre[k], probe[k]) for k in enc)
    assert json.loads((out / "config.json").read_text())["supcon_weight"] == 0.0
    _assert_hub_ready(out)


@pytest.mark.slow
def test_evaluate_lead_subsets(pretrained, tmp_path):
    from ecgnat_hf.recipes.evaluate import main
    from ecgnat_hf.recipes.finetune import main as finetune

    ft = tmp_path / "ft"
    finetune(["--model_name_or_path", str(pretrained[0]), "--output_dir", str(ft), *FAST, *_fast_steps(1)])
    out = tmp_path / "eval"
    rep = main(["--model_name_or_path", str(ft), "--dataset", "sample", "--eval_splits", "validation,test",
                "--output_dir", str(out), "--max_test_samples", "32", "--max_eval_samples", "24",
                "--disable_tqdm", "true", "--use_cpu", "true"])
    assert set(rep["lead_subsets"]["test"]) == {"12-lead", "6-limb", "I+II", "II", "I"}
    assert set(rep["per_class"]["test"]) == {"CD", "HYP", "MI", "NORM", "STTC"}
    # 12-lead numbers equal the fine-tune's own test evaluation (same checkpoint, same examples)
    ft_test = json.loads((ft / "eval_results.json").read_text())["test"]
    assert rep["lead_subsets"]["test"]["12-lead"]["macro_auroc"] == pytest.approx(ft_test["macro_auroc"], abs=1e-6)
    # fewer leads change the predictions
    assert rep["lead_subsets"]["test"]["II"]["loss"] != rep["lead_subsets"]["test"]["12-lead"]["loss"]
    assert (out / "evaluation.json").is_file() and (out / "roc_test.png").stat().st_size > 1000
    md = (out / "evaluation.md").read_text()
    assert "| 6-limb |" in md and "| NORM |" in md


@pytest.mark.slow
def test_label_efficiency_table_and_plot(pretrained, tmp_path):
    from ecgnat_hf.recipes.label_efficiency import main

    out = tmp_path / "le"
    # --layer_decay is for the pretrained arm only: the ResNet1d arm would refuse it
    res = main(["--pretrained_model", str(pretrained[0]), "--fractions", "0.1,1.0", "--repeats", "1",
                "--include_resnet1d", "true", "--layer_decay", "0.5", "--output_dir", str(out), *FAST, *_fast_steps(1)])
    models = {r["model"] for r in res["rows"]}
    assert models == {"ecgnat-pretrained", "ecgnat-tiny-scratch", "resnet1d"}
    assert len(res["rows"]) == 6
    # a paired interval for every pair of arms at each fraction, in arm order
    pairs = [(c["fraction"], c["a_name"], c["b_name"]) for c in res["comparisons"]]
    assert pairs == [(f, a, b) for f in (0.1, 1.0) for a, b in (("ecgnat-pretrained", "ecgnat-tiny-scratch"),
                     ("ecgnat-pretrained", "resnet1d"), ("ecgnat-tiny-scratch", "resnet1d"))]
    assert "ecgnat-tiny-scratch - resnet1d = " in (out / "label_efficiency.md").read_text()
    # and per class, with the test positives behind each interval
    per_class = res["comparisons"][0]["per_class"]
    assert [r["label"] for r in per_class] == ["CD", "HYP", "MI", "NORM", "STTC"]
    assert all(r["n_records"] == per_class[0]["n_records"] for r in per_class)
    assert "Per-class AUROC differences" in (out / "label_efficiency.md").read_text()
    n = {(r["model"], r["fraction"]): r["n_train"] for r in res["rows"]}
    assert n[("ecgnat-pretrained", 1.0)] == 48 and n[("ecgnat-pretrained", 0.1)] < 48
    for key in ("csv", "runs_csv", "markdown", "plot", "json"):
        assert Path(res["files"][key]).is_file()
    assert "10% labels" in (out / "label_efficiency.md").read_text()
    assert not (out / "runs").exists() or not any((out / "runs").iterdir())
    # every run's test probabilities are kept, so that a later run can be paired with these record by record
    import numpy as np

    saved = np.load(res["files"]["test_predictions"])
    keys = {f"{m}|{f:g}|0" for m in models for f in (0.1, 1.0)}
    assert set(saved.files) == keys | {"labels"}
    for key in keys:
        assert saved[key].shape == saved["labels"].shape and np.isfinite(saved[key]).all()


@pytest.mark.slow
def test_resume_from_checkpoint_continues(tmp_path):
    from ecgnat_hf.recipes.finetune import main

    out = tmp_path / "resume"
    base = ["--output_dir", str(out), "--save_strategy", "steps", "--save_steps", "2", "--eval_strategy", "no",
            "--load_best_model_at_end", "false", "--save_total_limit", "3", *FAST]
    first = main(base + ["--max_steps", "2"])
    assert first["global_step"] == 2 and (out / "checkpoint-2").is_dir()
    state1 = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    second = main(base + ["--max_steps", "4", "--resume_from_checkpoint", "true"])
    assert second["global_step"] == 4 and (out / "checkpoint-4").is_dir()
    state = json.loads((out / "trainer_state.json").read_text())
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert steps[:2] == [1, 2] and steps[-1] == 4
    # the first run's logged losses are kept, not recomputed: the run continued from checkpoint-2
    assert [h["loss"] for h in state["log_history"] if "loss" in h][:2] == [h["loss"] for h in state1["log_history"] if "loss" in h]
    _assert_hub_ready(out)


def test_run_configs_parse():
    import torch
    from transformers import TrainingArguments

    from ecgnat_hf.training.arguments import (DataArguments, EvaluationArguments, ModelArguments,
                                              parse_recipe_args)

    names = ["tiny_sample_pretrain", "tiny_sample_finetune", "base_ptbxl_pretrain", "base_ptbxl_finetune",
             "base_challenge2021_finetune"]
    for name in names:
        path = CONFIGS / f"{name}.yaml"
        data = yaml.safe_load(path.read_text())
        assert isinstance(data, dict) and data["output_dir"]
        types = (ModelArguments, DataArguments, TrainingArguments, EvaluationArguments)
        # the GPU configs ask for bf16, which TrainingArguments refuses on a CPU-only machine
        cpu_fix = ["--bf16", "false"] if data.get("bf16") and not torch.cuda.is_available() else []
        m, d, t, e = parse_recipe_args(types, [str(path), *cpu_fix])
        assert t.report_to == [] or t.report_to == "none" or t.report_to == ["none"]
        assert t.output_dir == data["output_dir"]
        # flags after the file override it
        m2, d2, t2, e2 = parse_recipe_args(types, [str(path), *cpu_fix, "--max_steps", "3", "--output_dir", "/tmp/x"])
        assert t2.max_steps == 3 and t2.output_dir == "/tmp/x" and d2.dataset == d.dataset
    m, d, t, e = parse_recipe_args(types, [str(CONFIGS / "base_ptbxl_pretrain.yaml"), "--bf16", "false"])
    assert d.extra_sources == ["challenge:/data/challenge-2021/training"] and m.preset == "base"
    # several sources: separate arguments or one quoted, space-separated argument give the same list
    for given in (["challenge:/a", "folder:/b"], ["challenge:/a folder:/b"]):
        _, d, _, _ = parse_recipe_args(types, ["--dataset", "sample", "--output_dir", "/tmp/x", "--extra_sources", *given])
        assert d.extra_sources == ["challenge:/a", "folder:/b"]
    m, d, t, e = parse_recipe_args(types, [str(CONFIGS / "tiny_sample_finetune.yaml")])
    assert t.load_best_model_at_end and t.metric_for_best_model == "macro_auroc"


def test_json_config_and_unknown_keys(tmp_path):
    from transformers import TrainingArguments

    from ecgnat_hf.training.arguments import DataArguments, ModelArguments, parse_recipe_args

    p = tmp_path / "run.json"
    p.write_text(json.dumps({"preset": "tiny", "output_dir": str(tmp_path), "label_fraction": 0.1}))
    m, d, t = parse_recipe_args((ModelArguments, DataArguments, TrainingArguments), [str(p)])
    assert d.label_fraction == 0.1 and t.output_dir == str(tmp_path)
    p.write_text(json.dumps({"not_an_argument": 1}))
    with pytest.raises(ValueError, match="not_an_argument"):
        parse_recipe_args((ModelArguments, DataArguments, TrainingArguments), [str(p)])


def test_accelerate_configs_load():
    cpu = yaml.safe_load((CONFIGS / "accelerate_cpu.yaml").read_text())
    ddp = yaml.safe_load((CONFIGS / "accelerate_ddp.yaml").read_text())
    fsdp = yaml.safe_load((CONFIGS / "accelerate_fsdp.yaml").read_text())
    assert cpu["use_cpu"] is True and cpu["distributed_type"] == "NO" and cpu["num_processes"] == 1
    assert ddp["distributed_type"] == "MULTI_GPU" and ddp["num_processes"] > 1
    assert fsdp["distributed_type"] == "FSDP" and "ECGNATLayer" in fsdp["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"]
    from accelerate.commands.config.config_args import ClusterConfig

    for d in (cpu, ddp, fsdp):
        ClusterConfig(**{k: v for k, v in d.items()})  # accelerate's own schema accepts them


def test_stratified_subset_multilabel():
    from ecgnat_hf.training.data import stratified_subset

    rng = np.random.default_rng(0)
    y = (rng.random((500, 5)) < np.array([0.02, 0.1, 0.2, 0.5, 0.3])).astype(np.float32)
    a = stratified_subset(y, 0.1, seed=3)
    assert a == stratified_subset(y, 0.1, seed=3) and a != stratified_subset(y, 0.1, seed=4)
    assert abs(len(a) - 50) <= 2
    sel = y[a]
    assert (sel.sum(0) >= 1).all()  # every class present, the rarest included
    ratio = sel.mean(0) / y.mean(0)
    assert np.all(ratio[1:] > 0.8) and np.all(ratio[1:] < 1.25)
    tiny = stratified_subset(y, 0.01, seed=0)
    assert 5 <= len(tiny) <= 5 + 5 and (y[tiny].sum(0) >= 1).all()
    assert stratified_subset(y, 1.0) == list(range(500))
    single = stratified_subset(np.repeat(np.arange(4), 25), 0.2, seed=0)
    assert np.bincount(np.repeat(np.arange(4), 25)[single]).tolist() == [5, 5, 5, 5]


def test_collator_lead_subset():
    import torch

    from ecgnat_hf.training.data import ECGDataCollator, lead_subset_mask

    leads = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    feats = [{"input_values": torch.ones(12, 50), "lead_mask": torch.ones(12, dtype=torch.int8),
              "labels": torch.tensor([1.0, 0.0])} for _ in range(3)]
    b = ECGDataCollator("multi_label_classification", keep_leads=lead_subset_mask(leads, ("II",)))(feats)
    assert b["lead_mask"].sum().item() == 3 and b["lead_mask"][0, 1] == 1
    assert b["input_values"][:, 0].abs().sum() == 0 and b["input_values"][:, 1].abs().sum() > 0
    assert b["labels"].dtype == torch.float32
    with pytest.raises(ValueError):
        lead_subset_mask(leads, ("X",))


# ------------------------------------------------------------------------------ offline push round trip
def _fake_hub(cache: Path, calls: list):
    """Replacements for HfApi.create_repo / upload_folder that write the hub-cache layout."""
    import fnmatch
    import hashlib

    def create_repo(self, repo_id, *args, **kwargs):
        calls.append(("create_repo", repo_id))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, ignore_patterns=None, **kwargs):
        calls.append(("upload_folder", repo_id))
        folder = Path(folder_path)
        files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
        keep = []
        for p in files:
            rel = p.relative_to(folder).as_posix()
            if any(fnmatch.fnmatch(rel, pat) for pat in (ignore_patterns or [])):
                continue
            keep.append((rel, p))
        rev = hashlib.sha1("".join(r for r, _ in keep).encode() + os.urandom(8)).hexdigest()
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        snap = repo / "snapshots" / rev
        for rel, p in keep:
            (snap / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, snap / rel)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(rev)
        return type("CommitInfo", (), {"oid": rev, "commit_url": f"https://huggingface.co/{repo_id}/commit/{rev}",
                                       "__str__": lambda s: s.commit_url})()

    return create_repo, upload_folder


_LOADER = textwrap.dedent(
    """
    import importlib.abc, json, sys
    import numpy as np

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "ecgnat_hf" or name.startswith("ecgnat_hf."):
                raise ImportError(f"{name} is blocked: the checkpoint must load without the package")
            return None

    sys.meta_path.insert(0, Block())
    import torch
    from transformers import AutoFeatureExtractor, AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained("org/ecgnat-test", trust_remote_code=True).eval()
    fe = AutoFeatureExtractor.from_pretrained("org/ecgnat-test", trust_remote_code=True)
    signal = np.load(sys.argv[1])
    inputs = fe(signal, sampling_rate=250, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_values=inputs["input_values"], lead_mask=inputs["lead_mask"]).logits
    assert "ecgnat_hf" not in sys.modules
    np.save(sys.argv[2], logits.numpy())
    print(type(model).__module__, type(fe).__module__)
    """
)


@pytest.mark.slow
def test_push_to_hub_offline_roundtrip(tmp_path, monkeypatch):
    import huggingface_hub
    import torch
    from transformers import AutoFeatureExtractor, AutoModelForSequenceClassification

    from ecgnat_hf.recipes.finetune import main

    cache, calls = tmp_path / "hub", []
    create_repo, upload_folder = _fake_hub(cache, calls)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    out = tmp_path / "ft"
    res = main(["--output_dir", str(out), "--push_to_hub", "true", "--hub_model_id", "org/ecgnat-test", *FAST,
                *_fast_steps(1)])
    assert calls == [("create_repo", "org/ecgnat-test"), ("upload_folder", "org/ecgnat-test")]
    snap = next((cache / "models--org--ecgnat-test" / "snapshots").iterdir())
    assert not list(snap.glob("checkpoint-*")) and (snap / "modeling_ecgnat.py").is_file()
    assert "org/ecgnat-test" in (snap / "README.md").read_text()
    assert res["hub_commit"]

    # expected outputs: the saved checkpoint loaded here (with the package), on a fixed 250 Hz input
    signal = np.random.default_rng(0).standard_normal((12, 2500)).astype(np.float32)
    np.save(tmp_path / "signal.npy", signal)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    fe = AutoFeatureExtractor.from_pretrained(out)
    inputs = fe(signal, sampling_rate=250, return_tensors="pt")
    with torch.no_grad():
        expected = model(input_values=inputs["input_values"], lead_mask=inputs["lead_mask"]).logits.numpy()

    script = tmp_path / "load_remote.py"
    script.write_text(_LOADER)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_MODULES_CACHE=str(tmp_path / "modules"),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "signal.npy"), str(tmp_path / "logits.npy")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "transformers_modules" in proc.stdout
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_finetune_on_challenge_records_draws_validation_and_test(shared_data, tmp_path):
    """The Challenge data has only a train split: validation and test are drawn from it (records, fixed seed).
    Regression: drawing the validation split raised KeyError('validation')."""
    from ecgnat_hf.recipes.finetune import main

    out = tmp_path / "cinc"
    res = main(["--dataset", "challenge", "--data_dir", str(shared_data / "cinc2021-sample"), "--preset", "tiny",
                "--output_dir", str(out), "--validation_fraction", "0.2", "--test_fraction", "0.2",
                "--per_device_train_batch_size", "8", "--logging_steps", "1", "--disable_tqdm", "true",
                "--use_cpu", "true", *_fast_steps(2)])
    assert res["global_step"] == 2
    results = json.loads((out / "eval_results.json").read_text())
    assert {"validation", "test"} <= set(results)
    config = json.loads((out / "config.json").read_text())
    assert len(config["id2label"]) == 26  # the Challenge's scored classes, equivalences merged
    _assert_hub_ready(out)
