"""benchmarks/ptbxl.py (issue 20): packing, the crop/sliding-window evaluation, the compact transport form, resumable
runs, and the shipped PTB-XL checkpoints against their cards.

The fast tests use the bundled PTB-XL sample (same layout as full PTB-XL). The full-data tests restore
``../shared/data/ptbxl-full`` once per session (about a minute; set ECGNAT_PTBXL_FULL to an already restored
folder to skip that) and are skipped with a reason where the shared data is absent; in CI they run.
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT

CHECKPOINTS = REPO_ROOT / "checkpoints"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("ptbxl_benchmark", REPO_ROOT / "benchmarks" / "ptbxl.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ptbxl_benchmark"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sample_pack(bench, tmp_path_factory):
    from ecgnat_hf.sample_data import sample_dir

    out = tmp_path_factory.mktemp("pack") / "sample_pack.npz"
    bench.pack(sample_dir(), out, progress=False)
    return out


def test_pack_holds_the_reader_signals_and_the_benchmark_labels(bench, sample_pack):
    import pandas as pd

    from ecgnat_hf.data.labels import aggregate_ptbxl_labels, load_scp_statements, parse_scp_codes
    from ecgnat_hf.data.records import read_record
    from ecgnat_hf.sample_data import sample_dir

    data = bench.load_pack(sample_pack)
    df = pd.read_csv(sample_dir() / "ptbxl_database.csv", index_col="ecg_id")
    assert len(data.ecg_id) == len(df)  # every bundled record is readable
    for i in (0, 57, len(data.ecg_id) - 1):
        rec = read_record(sample_dir() / df.loc[int(data.ecg_id[i]), "filename_lr"])
        order = [[n.upper() for n in rec.lead_names].index(n.upper()) for n in bench.LEADS]
        np.testing.assert_allclose(data.signal[i], rec.signal[order], atol=5e-4)  # int16 microvolts
    df["scp_codes"] = df["scp_codes"].apply(parse_scp_codes)
    agg = aggregate_ptbxl_labels(df, load_scp_statements(sample_dir() / "scp_statements.csv"), "rhythm")
    assert data.classes["rhythm"] == agg.classes
    j = data.classes["rhythm"].index("SR")
    has_sr = {e for e, labs in agg.labels.items() if "SR" in labs}
    assert {int(e) for e in data.ecg_id[data.labels["rhythm"][:, j] == 1]} == has_sr
    # the benchmark drops records without a label for the task from that task only
    unlabelled = set(agg.dropped)
    assert not unlabelled & {int(e) for e in data.ecg_id[data.split("rhythm", range(1, 10))]}


def test_pack_refuses_fold_10(bench, tmp_path):
    from ecgnat_hf.sample_data import sample_dir

    d = tmp_path / "ptbxl"
    shutil.copytree(sample_dir(), d)
    import pandas as pd

    csv = d / "ptbxl_database.csv"
    df = pd.read_csv(csv, index_col="ecg_id")
    df.iloc[0, df.columns.get_loc("strat_fold")] = 10
    df.to_csv(csv)
    with pytest.raises(ValueError, match="fold 10"):
        bench.pack(d, tmp_path / "p.npz", progress=False)


def test_sliding_windows_are_the_feature_extractors_windows(bench, sample_pack):
    """Evaluation windows on the device copy equal what a user's ECGNATFeatureExtractor makes of the record."""
    from ecgnat_hf.models.ecgnat import ECGNATFeatureExtractor

    data = bench.load_pack(sample_pack)
    batcher = bench.Batcher(data, bench._device("cpu"))
    for window_s in (2.5, 5.0, 10.0):
        fe = ECGNATFeatureExtractor(sampling_rate=100, window_s=window_s, window_stride_s=window_s / 2,
                                    mode="window", scaling="center")
        idx = np.array([3, 40])
        x, m, per_record = batcher.windows(idx, int(window_s * 100))
        feats = fe([data.signal[i] for i in idx], sampling_rate=100, lead_names=list(bench.LEADS))
        assert x.shape[0] == len(feats["input_values"]) == per_record * len(idx)
        np.testing.assert_allclose(x.numpy(), feats["input_values"], atol=1e-5)
        np.testing.assert_array_equal(m.numpy(), feats["lead_mask"] & data.lead_mask[idx].repeat(per_record, 0))


def test_random_crops_are_centred_windows_of_the_record(bench, sample_pack):
    import torch

    data = bench.load_pack(sample_pack)
    batcher = bench.Batcher(data, bench._device("cpu"))
    gen = torch.Generator().manual_seed(0)
    idx = np.array([5, 5, 5, 9])
    x, m = batcher.crops(idx, 250, gen)
    assert x.shape == (4, 12, 250)
    np.testing.assert_allclose(x.mean(dim=-1).numpy(), 0.0, atol=1e-5)
    found = []
    for b, i in enumerate(idx):
        full = data.signal[i]
        starts = [s for s in range(0, 751) if np.allclose(full[:, s:s + 250] - full[:, s:s + 250].mean(-1, keepdims=True),
                                                          x[b].numpy(), atol=1e-4)]
        assert starts, "a crop must be a centred 2.5 s stretch of its own record"
        found.append(starts[0])
    assert len(set(found[:3])) > 1  # the same record drawn three times gets different crops


def test_transport_form_is_within_the_quantization_step(bench, sample_pack, tmp_path):
    blob = bench.encode_transport(sample_pack, q_uv=20)
    back = bench.decode_transport(blob)
    orig = bench.load_pack(sample_pack)
    np.testing.assert_array_equal(back.ecg_id, orig.ecg_id)
    np.testing.assert_array_equal(back.lead_mask, orig.lead_mask)
    for t in bench.TASKS:
        np.testing.assert_array_equal(back.labels[t], orig.labels[t])
    err = np.abs(back.signal - orig.signal)
    kept = list(bench._KEPT)
    assert err[:, kept].max() <= 0.010 + 1e-6  # half of 20 uV on the stored leads
    assert err[:, 2:6].max() <= 0.031  # derived limb leads: rounding of I and II, plus one step
    assert back.quantized_uv == 20
    assert len(blob) < 0.5 * orig.signal[:, kept].size  # under 4 bits per stored sample (16 in the files)


def test_runs_resume_and_sweeps_never_read_the_test_fold(bench, sample_pack, tmp_path):
    data = bench.load_pack(sample_pack)
    res = bench.Results(tmp_path / "runs")
    quick = dict(task="superdiagnostic", epochs=1, min_steps=2, eval_every=1, batch_size=32)
    specs = [bench.RunSpec(model="ecgnat-tiny", lead_subsets=True, **quick),
             bench.RunSpec(model="resnet1d", **quick),
             bench.RunSpec(model="resnet1d", score_test=False, window_s=5.0, **quick)]
    rows = bench.run_many(specs, data, res, "cpu")
    assert [r["key"] for r in rows] == [s.key for s in specs]
    by_key = {r["key"]: r for r in res.rows()}
    nat = by_key[specs[0].key]
    assert nat["n_train"] == len(data.split("superdiagnostic", range(1, 8)))
    assert nat["n_validation"] == len(data.split("superdiagnostic", [8]))
    assert 0.0 <= nat["test_auroc"] <= 1.0 and "test_auroc_II" in nat
    sweep = by_key[specs[2].key]
    assert specs[2].key.startswith("sweep-") and "test_auroc" not in sweep
    assert "test_prob" not in res.preds(specs[2].key)
    # a second call finds every run finished and trains nothing
    assert bench.run_many(specs, data, res, "cpu") == []
    summary = bench.summarize(res)
    assert {r["model"] for r in summary["table"]} == {"ecgnat-tiny (1 epoch)", "resnet1d (1 epoch)"}
    interval = bench.paired(res, data, [specs[0].key], [specs[1].key], "superdiagnostic", n_boot=200)
    assert interval["ci_low"] <= interval["ci_high"]
    assert interval["n_records"] == nat["n_test"]


def test_label_fractions_are_stratified_subsets(bench, sample_pack):
    data = bench.load_pack(sample_pack)
    tr = data.split("superdiagnostic", range(1, 8))
    y = data.labels["superdiagnostic"][tr]
    sub = bench.stratified(y, 0.1, seed=0)
    assert abs(len(sub) - round(0.1 * len(tr))) <= y.shape[1]
    assert (y[sub].sum(0) > 0).all()  # every class keeps a positive
    assert not np.array_equal(sub, bench.stratified(y, 0.1, seed=1))


def test_the_validation_sweep_choice_is_the_best_validation_run(bench):
    def row(model, w, lr, val):
        spec = dict(model=model, window_s=w, lr=lr)
        return {"key": f"sweep-dev-x-{model}-{w}-{lr}", "spec": spec, "validation_auroc": val}

    rows = [row("ecgnat-tiny", 2.5, 1e-3, 0.90), row("ecgnat-small", 5.0, 1e-3, 0.91), row("resnet1d", 10.0, 1e-2, 0.92),
            row("resnet1d", 2.5, 1e-3, 0.93), {"key": "dev-x", "spec": dict(model="ecgnat-base", window_s=1, lr=1),
                                               "validation_auroc": 0.99}]
    assert bench.choose(rows, "ecgnat") == {"preset": "small", "window_s": 5.0, "lr": 1e-3, "validation_auroc": 0.91,
                                            "from": rows[1]["key"]}
    assert bench.choose(rows, "resnet1d")["window_s"] == 2.5


def test_bundles_fit_what_the_gpu_machine_sends_back(bench, tmp_path):
    import tarfile

    src = tmp_path / "runs"
    (src / "ship" / "a").mkdir(parents=True)
    (src / "results.jsonl").write_text("{}\n")
    rng = np.random.default_rng(0)
    (src / "ship" / "a" / "model.safetensors").write_bytes(rng.bytes(3 * 2**20))
    (src / "pretrained-tiny").mkdir()
    (src / "pretrained-tiny" / "model.safetensors").write_bytes(rng.bytes(3 * 2**20))
    out = bench.bundle(src, tmp_path / "out", max_files=1, max_mib=4)
    assert len(out) == 1 and out[0].stat().st_size <= 4.2 * 2**20
    with tarfile.open(out[0]) as tar:
        assert tar.getnames()[0] == "results.jsonl"  # results travel first
    assert (tmp_path / "out" / "not_sent.txt").read_text().strip() == "pretrained-tiny/model.safetensors"


# ------------------------------------------------------------------------------ full PTB-XL (shared data)
@pytest.fixture(scope="session")
def ptbxl_full(shared_data, tmp_path_factory):
    """The restored full PTB-XL (folds 1-9) with its pack."""
    given = os.environ.get("ECGNAT_PTBXL_FULL")
    if given and (Path(given) / "ptbxl_database.csv").exists():
        d = Path(given)
    else:
        d = tmp_path_factory.mktemp("ptbxl-full")
        subprocess.run([sys.executable, str(shared_data / "ptbxl-full" / "restore.py"), str(d)], check=True,
                       capture_output=True)
    if not (d / "ecgnat_pack.npz").exists():
        subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "ptbxl.py"), "pack", "--data_dir", str(d)],
                       check=True, capture_output=True)
    return d


@pytest.mark.slow
@pytest.mark.shared_data
def test_full_ptbxl_pack_has_every_record_and_no_fold_10(bench, ptbxl_full):
    data = bench.load_pack(ptbxl_full)
    assert len(data.ecg_id) == 19601
    assert set(np.unique(data.fold)) == set(range(1, 10))
    assert len(data.split("superdiagnostic", [9])) > 2000
    assert len(data.classes["all"]) == 71 and len(data.classes["superdiagnostic"]) == 5


SHIPPED = sorted(p for p in CHECKPOINTS.glob("*-ptbxl-*") if (p / "ptbxl_benchmark.json").exists())


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("folder", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_checkpoint_matches_its_card_on_fold_9(bench, ptbxl_full, folder):
    info = json.loads((folder / "ptbxl_benchmark.json").read_text())
    card = (folder / "README.md").read_text()
    assert f"{info['fold9_macro_auroc']:.4f}" in card
    auroc, probs, y = bench.score_checkpoint(folder, ptbxl_full, info["task"], (9,))
    assert len(y) == info["n_fold9_records"]
    assert auroc == pytest.approx(info["fold9_macro_auroc"], abs=6e-4)


def test_shipped_checkpoints_are_small_hub_ready_and_load(tmp_path):
    if not SHIPPED:
        pytest.skip("no checkpoints/*-ptbxl-* in this checkout")
    import torch
    from transformers import AutoFeatureExtractor, AutoModelForSequenceClassification

    from ecgnat_hf.data.records import read_record
    from ecgnat_hf.sample_data import sample_dir
    from ecgnat_hf.training.hub import check_hub_ready

    rec = read_record(sample_dir() / "records100/00000/00008_lr")
    for folder in SHIPPED:
        assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 25e6, folder
        assert check_hub_ready(folder) == []
        overrides = json.loads((folder / "run_arguments.json").read_text()).get("overrides")
        card = (folder / "README.md").read_text()
        if overrides:  # the card's command must rebuild the same config, not the preset's
            assert f"--overrides '{overrides}'" in card, folder
        for encoder in re.findall(r"--pretrained (\S+)", card):  # and start from an encoder that is shipped
            assert (CHECKPOINTS.parent / encoder).is_dir(), (folder, encoder)
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        fe = AutoFeatureExtractor.from_pretrained(folder)
        assert model.config.decision_thresholds, "thresholds fitted on fold 9 travel in the config"
        inputs = fe(rec.signal, sampling_rate=rec.sampling_rate, lead_names=rec.lead_names, return_tensors="pt")
        with torch.no_grad():
            probs = torch.sigmoid(model(**inputs).logits)
        assert probs.shape[-1] == len(model.config.id2label) and torch.isfinite(probs).all()


def test_push_uploads_a_hub_ready_folder_and_refuses_others(tmp_path, monkeypatch, capsys):
    """`ecgnat push FOLDER REPO_ID`: the documented way to publish a shipped checkpoint (hub calls faked)."""
    import huggingface_hub

    from ecgnat_hf.cli import main
    from ecgnat_hf.models.ecgnat import ECGNATConfig, ECGNATFeatureExtractor, ECGNATForSequenceClassification
    from ecgnat_hf.training.hub import save_hub_ready

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create", repo_id))

        def upload_folder(self, repo_id, folder_path, **kw):
            calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
            return type("Info", (), {"commit_url": f"https://hub.example/{repo_id}/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    model = ECGNATForSequenceClassification(ECGNATConfig.from_preset("tiny", num_labels=2))
    fe = ECGNATFeatureExtractor(sampling_rate=100, window_s=2.5, scaling="center")
    folder = save_hub_ready(model, fe, tmp_path / "ckpt", card_kwargs=dict(
        kind="finetuned", model_name="t", task_name="t", dataset_name="PTB-XL", command="x", training_args={}))
    assert main(["push", str(folder), "me/ckpt", "--token", "tok"]) == 0
    assert ("create", "me/ckpt") in calls
    upload = [c for c in calls if c[0] == "upload"][0]
    assert "model.safetensors" in upload[2] and "README.md" in upload[2]
    assert "https://hub.example/me/ckpt" in capsys.readouterr().out
    (folder / "README.md").unlink()
    calls.clear()
    assert main(["push", str(folder), "me/ckpt"]) != 0
    assert not calls and "not hub-ready" in capsys.readouterr().err


def test_shipped_pretrained_encoder_loads_and_embeds():
    encoder = CHECKPOINTS / "ecgnat-tiny-ptbxl-pretrained"
    if not encoder.exists():
        pytest.skip("no checkpoints/ecgnat-tiny-ptbxl-pretrained in this checkout")
    import torch
    from transformers import AutoFeatureExtractor, AutoModel

    from ecgnat_hf.data.records import read_record
    from ecgnat_hf.sample_data import sample_dir
    from ecgnat_hf.training.hub import check_hub_ready

    assert check_hub_ready(encoder) == []
    assert sum(p.stat().st_size for p in encoder.rglob("*") if p.is_file()) < 25e6
    model = AutoModel.from_pretrained(encoder).eval()
    fe = AutoFeatureExtractor.from_pretrained(encoder)
    rec = read_record(sample_dir() / "records100/00000/00008_lr")
    inputs = fe(rec.signal, sampling_rate=rec.sampling_rate, lead_names=rec.lead_names, return_tensors="pt")
    with torch.no_grad():
        out = model(input_values=inputs["input_values"], lead_mask=inputs["lead_mask"])
    assert out.pooler_output.shape == (1, model.config.hidden_size) and torch.isfinite(out.pooler_output).all()
    assert "19,601" in (encoder / "README.md").read_text()


def test_runs_of_two_schedules_are_two_arms_not_seeds(bench, tmp_path):
    """A results file holding 10- and 20-epoch runs of one model reports them apart (never as one mean)."""
    res = bench.Results(tmp_path / "runs")
    for seed, epochs, auroc in ((0, 10, 0.928), (1, 10, 0.929), (0, 20, 0.933), (1, 30, 0.936)):
        spec = bench.RunSpec(task="superdiagnostic", model="ecgnat-tiny", init="pretrained", epochs=epochs, seed=seed)
        res.add({"key": spec.key, "spec": vars(spec), "steps": 5, "planned_steps": 5, "test_auroc": auroc,
                 "validation_auroc": auroc + 0.01})
    table = {r["model"]: r for r in bench.summarize(res)["table"]}
    assert set(table) == {"ecgnat-tiny (pretrained, 10 epochs)", "ecgnat-tiny (pretrained, 20 epochs)",
                          "ecgnat-tiny (pretrained)"}
    assert table["ecgnat-tiny (pretrained, 10 epochs)"]["seeds"] == [0, 1]
    assert table["ecgnat-tiny (pretrained, 20 epochs)"]["test_mean"] == 0.933


def test_config_overrides_are_an_arm_of_their_own_and_reach_the_model(bench, tmp_path):
    """``--overrides`` changes the ECG-NAT config of a run, names it in the key and the table, and refuses
    arguments that are not ECG-NAT config arguments (a typo must not train the default silently)."""
    base = bench.RunSpec(task="all", model="ecgnat-tiny")
    changed = bench.RunSpec(task="all", model="ecgnat-tiny",
                            overrides='{"supcon_weight": 0, "finetune_lead_mask_prob": 0.0}')
    assert base.key.endswith("-e30-s0") and base.config_overrides() == {}
    assert changed.key.endswith("-e30-finetune_lead_mask_prob0-supcon_weight0-s0")
    model = bench.build_model(changed, ["A", "B", "C"])
    assert model.config.supcon_weight == 0 and model.config.finetune_lead_mask_prob == 0.0
    assert bench.build_model(base, ["A", "B", "C"]).config.supcon_weight == 0.1
    assert bench._pretrained_arg(base) == ""
    for given in ("runs/pretrained-tiny", "checkpoints/ecgnat-tiny-ptbxl-pretrained"):  # a GPU plan's, a shipped one
        spec = bench.RunSpec(model="ecgnat-tiny", init="pretrained", pretrained=given)
        assert bench._pretrained_arg(spec) == " --pretrained checkpoints/ecgnat-tiny-ptbxl-pretrained"
    assert bench._overrides_arg(base) == "" and bench._overrides_arg(changed) == f" --overrides '{changed.overrides}'"

    res = bench.Results(tmp_path / "runs")
    for spec, auroc in ((base, 0.875), (changed, 0.90)):
        res.add({"key": spec.key, "spec": vars(spec), "steps": 5, "planned_steps": 5, "test_auroc": auroc,
                 "validation_auroc": auroc})
    table = {r["model"]: r["test_mean"] for r in bench.summarize(res)["table"]}
    assert table == {"ecgnat-tiny": 0.875, "ecgnat-tiny (finetune_lead_mask_prob=0, supcon_weight=0)": 0.90}

    with pytest.raises(ValueError, match="unknown ECG-NAT config argument.*supcon_wieght"):
        bench.build_model(bench.RunSpec(model="ecgnat-tiny", overrides='{"supcon_wieght": 0}'), ["A"])
    with pytest.raises(ValueError, match="not JSON"):
        bench.RunSpec(model="ecgnat-tiny", overrides="supcon_weight=0").key
    with pytest.raises(ValueError, match="not to 'resnet1d'"):
        bench.RunSpec(model="resnet1d", overrides='{"supcon_weight": 0}').key


def test_validation_only_runs_never_read_the_test_fold(bench, sample_pack, tmp_path):
    """``run --validation_only`` (a sweep) scores fold 8 and stores no test figure or test probabilities."""
    code = bench.main(["run", "--data_dir", str(sample_pack), "--results", str(tmp_path / "runs"), "--tasks",
                       "superdiagnostic", "--models", "ecgnat-tiny", "--epochs", "1", "--min_steps", "2",
                       "--batch_size", "16", "--eval_every", "2", "--validation_only", "--overrides",
                       '{"supcon_weight": 0}', "--device", "cpu"])
    assert code == 0
    rows = bench.Results(tmp_path / "runs").rows()
    assert len(rows) == 1 and rows[0]["key"].startswith("sweep-dev-superdiagnostic-ecgnat-tiny-scratch")
    assert "supcon_weight0" in rows[0]["key"] and "test_auroc" not in rows[0] and rows[0]["n_test"] == 0
    preds = bench.Results(tmp_path / "runs").preds(rows[0]["key"])
    assert "val_prob" in preds and "test_prob" not in preds


RESULT_FOLDERS = sorted(p for p in (REPO_ROOT / "benchmarks" / "results").glob("ptbxl-*")
                        if (p / "results.jsonl").exists())


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("folder", RESULT_FOLDERS, ids=[p.name for p in RESULT_FOLDERS])
def test_committed_results_follow_from_their_probabilities(bench, ptbxl_full, folder):
    """Every figure of a committed results file is re-derived from its stored per-record probabilities and
    the restored labels: a figure in the docs cannot drift from the predictions behind it. Sweep rows carry no
    test figure and no test probabilities."""
    from ecgnat_hf.metrics.comparison import macro_auroc

    data = bench.load_pack(ptbxl_full)
    row_of = {int(e): i for i, e in enumerate(data.ecg_id)}
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]
    assert rows
    for row in rows:
        preds = np.load(folder / "preds" / f"{row['key']}.npz")
        labels = data.labels[row["spec"]["task"]]
        val = [row_of[int(e)] for e in preds["val_ids"]]
        assert macro_auroc(labels[val], preds["val_prob"]) == pytest.approx(row["validation_auroc"], abs=1e-4)
        if row["key"].startswith("sweep-"):
            assert "test_prob" not in preds.files and not row.get("test_auroc")
            continue
        test = [row_of[int(e)] for e in preds["test_ids"]]
        assert set(data.fold[test]) == {9} and set(data.fold[val]) == {8}
        assert macro_auroc(labels[test], preds["test_prob"]) == pytest.approx(row["test_auroc"], abs=1e-4)
