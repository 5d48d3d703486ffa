"""BEAT-Net as a first-class model: saved feature extractor, remote code, records without beats, long records,
the recipes, predict/plot, and lead attention on real records."""
from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import torch

import ecgnat_hf  # noqa: F401  (registers the Auto classes)
from ecgnat_hf.beats import (
    BeatNetConfig,
    BeatNetFeatureExtractor,
    BeatNetForSequenceClassification,
    NoBeatsError,
    detect_qrs,
    match_peaks,
)
from ecgnat_hf.feature_extraction_ecgnat import ECGUnusableSignalError
from ecgnat_hf.sample_data import sample_dir

from helpers import load_ptbxl, make_tiny_checkpoint
from test_modeling import _hub_cache_layout, _run_without_package

LABELS = ["NORM", "MI", "STTC"]


def _config(**kw):
    base = dict(sampling_rate=100, max_beats=32, morphology_channels=[8, 16], hidden_size=32, spatial_num_heads=2,
                num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, hidden_dropout_prob=0.0,
                classifier_dropout=0.0, num_labels=3, id2label=dict(enumerate(LABELS)),
                label2id={n: i for i, n in enumerate(LABELS)}, problem_type="multi_label_classification")
    base.update(kw)
    return BeatNetConfig(**base)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A seeded, untrained BEAT-Net classifier with its feature extractor (100 Hz, 10 s windows)."""
    path = tmp_path_factory.mktemp("beatnet") / "ckpt"
    torch.manual_seed(0)
    cfg = _config()
    BeatNetForSequenceClassification(cfg).save_pretrained(path)
    BeatNetFeatureExtractor.from_model_config(cfg, window_s=10).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ptbxl():
    x, _ = load_ptbxl(sample_dir(), n=6)
    return x


def _wfdb_record(folder, name, signal_mv, fs, names):
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=fs, units=["mV"] * len(names), sig_name=list(names), p_signal=np.asarray(signal_mv).T,
                fmt=["16"] * len(names), write_dir=str(folder))
    return folder / name


# ------------------------------------------------------------------------------------------ feature extractor
def test_feature_extractor_saves_tokenizer_settings_and_reloads(checkpoint):
    from transformers import AutoFeatureExtractor, AutoProcessor

    saved = json.loads((checkpoint / "preprocessor_config.json").read_text())
    assert saved["feature_extractor_type"] == "BeatNetFeatureExtractor"
    assert saved["beat_window_s"] == [0.25, 0.45] and saved["max_beats"] == 32
    assert saved["qrs_settings"]["band_hz"] == [8.0, 25.0] and saved["qrs_settings"]["refractory_s"] == 0.2
    assert saved["lead_names"][1] == "II" and saved["sampling_rate"] == 100 and saved["no_beats"] == "error"
    assert saved["auto_map"] == {"AutoFeatureExtractor": "feature_extraction_beatnet.BeatNetFeatureExtractor"}
    for loader in (AutoFeatureExtractor, AutoProcessor):
        fe = loader.from_pretrained(checkpoint)
        assert isinstance(fe, BeatNetFeatureExtractor)
        assert fe.qrs_settings == saved["qrs_settings"] and fe.beat_window_s == [0.25, 0.45]
        fe.check_matches(BeatNetConfig.from_pretrained(checkpoint))
    with pytest.raises(ValueError, match="max_beats"):
        BeatNetFeatureExtractor.from_model_config(_config(), max_beats=8).check_matches(_config())
    with pytest.raises(ValueError, match="unknown QRS setting"):
        BeatNetFeatureExtractor(qrs_settings={"threshhold": 0.3})


def test_precomputed_tokens_equal_raw_input_path(checkpoint, ptbxl):
    """Beats tokenized once by the extractor give exactly what the model computes from raw input_values."""
    model = BeatNetForSequenceClassification.from_pretrained(checkpoint).eval()
    fe = BeatNetFeatureExtractor.from_pretrained(checkpoint)
    feats = fe(list(ptbxl), sampling_rate=100, return_beats=True, return_tensors="pt")
    assert (feats["num_beats"] >= 7).all() and feats["beats"].shape[2:] == (12, 70)
    lead_mask = feats["lead_mask"].clone()
    lead_mask[1, 6:] = 0  # a record with limb leads only: the extractor would zero them; do it here too
    raw = model(input_values=feats["input_values"] * lead_mask[..., None], lead_mask=lead_mask)
    tok = fe.tokenize(feats["input_values"] * lead_mask[..., None], lead_mask)
    pre = model(beats=torch.from_numpy(tok["beats"]), beat_mask=torch.from_numpy(tok["beat_mask"]),
                rr=torch.from_numpy(tok["rr"]), lead_mask=lead_mask)
    assert torch.equal(raw.logits, pre.logits)
    assert torch.equal(raw.num_beats, torch.from_numpy(tok["num_beats"]))


# ------------------------------------------------------------------------------------------ remote code
@pytest.mark.slow
def test_remote_code_loads_without_package(checkpoint, tmp_path, ptbxl):
    for name in ("configuration_beatnet.py", "modeling_beatnet.py", "qrs.py", "feature_extraction_beatnet.py",
                 "feature_extraction_ecgnat.py"):
        assert (checkpoint / name).is_file(), name
    assert set(json.loads((checkpoint / "config.json").read_text())["auto_map"]) == {
        "AutoConfig", "AutoModel", "AutoModelForSequenceClassification"}
    from ecgnat_hf.training.hub import check_hub_ready

    assert [p for p in check_hub_ready(checkpoint) if "README" not in p] == []
    x = torch.from_numpy(ptbxl[:2])
    np.save(tmp_path / "x.npy", x.numpy())
    model = BeatNetForSequenceClassification.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        np.save(tmp_path / "expected.npy", model(x).logits.numpy())
    _hub_cache_layout(checkpoint, tmp_path / "hub", "ecg-org/beatnet-tiny")
    code = f"""
    import numpy as np, torch
    from transformers import (AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoFeatureExtractor,
                              AutoProcessor)
    x = torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r}))
    expected = np.load({str(tmp_path / 'expected.npy')!r})
    for source in ({str(checkpoint)!r}, "ecg-org/beatnet-tiny"):
        cfg = AutoConfig.from_pretrained(source, trust_remote_code=True)
        clf = AutoModelForSequenceClassification.from_pretrained(source, trust_remote_code=True).eval()
        enc = AutoModel.from_pretrained(source, trust_remote_code=True).eval()
        fe = AutoFeatureExtractor.from_pretrained(source, trust_remote_code=True)
        proc = AutoProcessor.from_pretrained(source, trust_remote_code=True)
        assert type(clf).__name__ == "BeatNetForSequenceClassification" and type(enc).__name__ == "BeatNetModel"
        assert type(fe).__name__ == "BeatNetFeatureExtractor" == type(proc).__name__
        assert cfg.qrs_settings == fe.qrs_settings
        with torch.no_grad():
            np.testing.assert_array_equal(clf(x).logits.numpy(), expected)
        batch = fe(np.asarray(x[0, :2]) , sampling_rate=100, lead_names=["I", "II"], return_beats=True,
                   return_tensors="pt")
        assert batch["input_values"].shape == (1, 12, 1000) and int(batch["num_beats"][0]) > 5
        with torch.no_grad():
            out = clf(input_values=batch["input_values"], lead_mask=batch["lead_mask"], output_lead_weights=True)
        assert torch.allclose(out.lead_weights.sum(-1)[0, :int(out.num_beats[0])], torch.tensor(1.0))
        try:
            fe(np.zeros((2, 1000)), sampling_rate=100, lead_names=["I", "II"])
            raise AssertionError("no error for a flat record")
        except ValueError as exc:
            assert "no usable lead" in str(exc)  # a flat line is refused by the signal-quality check first
    import sys
    assert not any(m.startswith("ecgnat_hf") for m in sys.modules)
    print("remote-ok")
    """
    out = _run_without_package(code, env={"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "home")})
    assert "remote-ok" in out


# ------------------------------------------------------------------------------------------ no beats
def test_records_without_beats_real_flat_and_noise(checkpoint, tmp_path):
    """A real PTB-XL record zeroed (flat line, asystole) and the same record with its samples shuffled in time
    (real amplitudes, no QRS structure: noise) have no beats: the extractor raises an error naming the record,
    predict lists it in its errors with the file, and the model itself returns its empty-sequence token."""
    import wfdb

    from ecgnat_hf.inference import predict_records

    rec = wfdb.rdrecord(str(sample_dir() / "records100/00000/00008_lr"))
    sig = rec.p_signal.T
    rng = np.random.default_rng(0)
    noise = np.stack([rng.permutation(row) for row in sig])
    assert detect_qrs(sig, 100).size >= 8
    assert detect_qrs(np.zeros_like(sig), 100).size == 0
    assert detect_qrs(noise, 100).size == 0

    fe = BeatNetFeatureExtractor.from_pretrained(checkpoint)
    # a flat line is refused by the signal-quality check before any beat is looked for ...
    with pytest.raises(ECGUnusableSignalError, match="input: no usable lead"):
        fe(np.zeros_like(sig), sampling_rate=100, lead_names=rec.sig_name)
    # ... and without that check, by the beat detector
    fe_unchecked = BeatNetFeatureExtractor.from_pretrained(checkpoint, quality_check=False)
    with pytest.raises(NoBeatsError, match="input: no heartbeat"):
        fe_unchecked(np.zeros_like(sig), sampling_rate=100, lead_names=rec.sig_name)
    with pytest.raises(NoBeatsError, match="record 1: no heartbeat"):
        fe([sig, noise], sampling_rate=100, lead_names=rec.sig_name)
    kept = fe([sig, noise], sampling_rate=100, lead_names=rec.sig_name, no_beats="empty", return_beats=True,
              return_tensors="pt")
    assert kept["num_beats"][0] >= 8 and kept["num_beats"][1] == 0
    model = BeatNetForSequenceClassification.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        out = model(**{k: kept[k] for k in ("input_values", "lead_mask")}, output_lead_weights=True)
    assert torch.isfinite(out.logits).all() and out.num_beats.tolist()[1] == 0
    assert (out.lead_weights[1] == 0).all()
    # records padded to one slot by precomputed tokens take the same path
    with torch.no_grad():
        empty = model(beats=torch.zeros(1, 0, 12, 70), beat_mask=torch.zeros(1, 0, dtype=torch.bool),
                      rr=torch.zeros(1, 0, 2))
    torch.testing.assert_close(empty.logits[0], out.logits[1])

    folder = tmp_path / "records"
    _wfdb_record(folder, "flat", np.zeros_like(sig), 100, rec.sig_name)
    _wfdb_record(folder, "shuffled", noise, 100, rec.sig_name)
    _wfdb_record(folder, "ok", sig, 100, rec.sig_name)
    df = predict_records(checkpoint, folder, progress=False)
    assert df["record_id"].tolist() == ["ok"]
    errors = {e["record_id"]: e for e in df.attrs["errors"]}
    assert set(errors) == {"flat", "shuffled"}
    assert "no usable lead" in errors["flat"]["problem"] and "no heartbeat" in errors["shuffled"]["problem"]
    assert all(e["path"].endswith(k) for k, e in errors.items())


# ------------------------------------------------------------------------------------------ long records
@pytest.mark.slow
def test_long_record_detection_in_bounded_memory(shared_data):
    """MIT-BIH 100 tiled to 2 hours: chunked detection finds 4 x its beats with memory that does not grow with
    the record (a chunk of 5 min), and chunk borders do not change the beats of the original 30 minutes."""
    import wfdb

    rec = wfdb.rdrecord(str(shared_data / "mitdb" / "100"))
    x = np.ascontiguousarray(rec.p_signal.T)
    fs = rec.fs
    whole = detect_qrs(x, fs, chunk_s=4000)  # one piece
    chunked = detect_qrs(x, fs, chunk_s=120)
    assert abs(len(whole) - len(chunked)) <= 1 and len(whole) >= 2270
    tp, _, _ = match_peaks(chunked, whole, 3)  # chunk-wise amplitude scaling may move a peak by a sample or two
    assert tp >= len(whole) - 2
    long = np.tile(x, 4)  # 2 hours, 2 leads
    tracemalloc.start()
    peaks = detect_qrs(long, fs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tracemalloc.start()
    detect_qrs(x[:, : int(600 * fs)], fs)  # a 10-minute record in one piece
    _, peak_short = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert abs(len(peaks) - 4 * len(whole)) <= 4
    assert peak < 2 * peak_short + 8 * 2**20, (peak / 2**20, peak_short / 2**20)


# ------------------------------------------------------------------------------------------ recipes, CLI, attention
@pytest.mark.slow
def test_finetune_evaluate_predict_plot_from_the_recipes(tmp_path, capsys):
    from ecgnat_hf.cli import main as cli
    from ecgnat_hf.recipes import evaluate, finetune, linear_probe
    from ecgnat_hf.training.hub import check_hub_ready

    out = tmp_path / "bn"
    common = ["--dataset", "sample", "--task", "superdiagnostic", "--max_train_samples", "32",
              "--max_eval_samples", "16", "--max_test_samples", "16"]
    res = finetune.main(["--model_type", "beatnet", *common, "--max_steps", "2", "--per_device_train_batch_size", "8",
                         "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
                         "--config_overrides", "hidden_size=32,morphology_channels=[8,16],num_attention_heads=2",
                         "--output_dir", str(out)])
    assert res["global_step"] == 2 and "macro_auroc" in res["eval_results"]["test"]
    assert check_hub_ready(out) == []
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "beatnet" and cfg["hidden_size"] == 32 and cfg["sampling_rate"] == 100
    card = (out / "README.md").read_text()
    assert "BEAT-Net" in card and f"{res['eval_results']['test']['macro_auroc']:.4f}"[:5] in card
    probe = linear_probe.main(["--model_type", "beatnet", "--model_name_or_path", str(out), *common, "--max_steps", "1",
                               "--per_device_train_batch_size", "8", "--eval_strategy", "no", "--save_strategy", "no",
                               "--load_best_model_at_end", "false", "--output_dir", str(tmp_path / "probe")])
    assert probe["parameters"]["trainable"] == 32 * 5 + 5  # the linear head only
    assert probe["frozen_parameters"] > 10_000
    report = evaluate.main(["--model_name_or_path", str(out), *common, "--lead_subsets", "12-lead;II",
                            "--plot_roc", "false", "--output_dir", str(tmp_path / "ev")])
    assert set(report["lead_subsets"]["test"]) == {"12-lead", "II"}
    record = sample_dir() / "records100/00000/00008_lr"
    assert cli(["predict", str(record), "-m", str(out), "-o", str(tmp_path / "p.csv"), "--no_progress"]) == 0
    assert cli(["plot", str(record), "-m", str(out), "-o", str(tmp_path / "ecg.png")]) == 0
    assert (tmp_path / "ecg.png").stat().st_size > 10_000
    assert (tmp_path / "ecg_lead_attention.png").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.parametrize("family", ["beatnet", "ecgnat"])
def test_lead_attention_on_real_records_sums_to_one(family, checkpoint, tmp_path, shared_data):
    """Real records with a lead subset: the figure is written and the weights sum to one over present leads."""
    from matplotlib.figure import Figure
    from transformers import AutoFeatureExtractor, AutoModelForSequenceClassification

    from ecgnat_hf.data.records import read_record
    from ecgnat_hf.training.lead_attention import record_lead_attention
    from ecgnat_hf.training.plots import plot_beats_and_lead_attention

    ckpt = checkpoint if family == "beatnet" else make_tiny_checkpoint(tmp_path / "ecgnat")
    model = AutoModelForSequenceClassification.from_pretrained(ckpt).eval()
    fe = AutoFeatureExtractor.from_pretrained(ckpt)
    cases = [
        (read_record(shared_data / "ptbxl-subset/records500/00000/00008_hr"), ["I", "II", "V2", "V5"]),
        (read_record(shared_data / "mitdb/100"), None),  # 30 min, MLII + V5, 361 windows
    ]
    for rec, keep in cases:
        signal, names = rec.signal, list(rec.lead_names)
        if keep:
            rows = [names.index(k) for k in keep]
            signal, names = signal[rows], keep
        if rec.duration_s > 60:
            signal = signal[:, : int(120 * rec.sampling_rate)]  # two minutes keep the test fast
        att = record_lead_attention(model, fe, signal, rec.sampling_rate, names)
        present = att["lead_mask"]
        assert present.sum() == len(names)
        assert att["weights"][present].sum() == pytest.approx(1.0, abs=1e-5)
        assert (att["weights"][~present] == 0).all() and att["n_units"] > 0
        assert len(att["beat_times_s"]) >= 0.8 * signal.shape[1] / rec.sampling_rate  # >= 48 bpm
        png = tmp_path / f"{family}_{rec.record_id}.png"
        fig = plot_beats_and_lead_attention(signal, rec.sampling_rate, names, att["beat_times_s"], att["weights"],
                                            att["lead_names"], weight_mask=present, path=png)
        assert isinstance(fig, Figure) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        labels = [t.get_text() for t in fig.axes[1].get_yticklabels()]
        assert labels == att["lead_names"]


def test_collator_pads_tokens_and_drops_them_for_lead_subsets():
    from ecgnat_hf.training.data import ECGDataCollator

    feats = [{"input_values": np.ones((12, 100), np.float32), "lead_mask": np.ones(12, np.int8),
              "beats": np.ones((k, 12, 70), np.float32), "beat_mask": [True] * k, "rr": np.ones((k, 2), np.float32),
              "labels": np.zeros(3, np.float32)} for k in (3, 5)]
    batch = ECGDataCollator()(feats)
    assert batch["beats"].shape == (2, 5, 12, 70) and batch["beat_mask"].sum(1).tolist() == [3, 5]
    assert (batch["beats"][0, 3:] == 0).all() and batch["rr"].shape == (2, 5, 2)
    keep = np.zeros(12, dtype=bool)
    keep[1] = True
    assert "beats" not in ECGDataCollator(keep_leads=keep)(feats)
