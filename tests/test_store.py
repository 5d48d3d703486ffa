"""The prepared store (``ecgnat prepare``) and training from it, on the bundled PTB-XL sample and the
Challenge fixtures: manifest and skipped.csv, byte-identical reruns, resume after ``kill -9``, the lock,
parts + merge equal to one prepare, a full disk, memory-mapped reading, the per-rank partition, weighted
sources, and pretrain / finetune smoke runs from a store."""
from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _args(**kw):
    from ecgnat_hf.training.arguments import DataArguments

    return DataArguments(**kw)


def _fe(rate=100):
    from ecgnat_hf import ECGNATFeatureExtractor

    return ECGNATFeatureExtractor(sampling_rate=rate, window_s=10.0, scaling="center")


def _prepare(out, n=60, per_shard=16, rate=100, **kw):
    from ecgnat_hf.data.store import prepare_store

    return prepare_store(_args(dataset="sample", max_records=n), _fe(rate), out, records_per_shard=per_shard,
                         progress=False, command="test", **kw)


def _checksums(store: Path) -> list[str]:
    return [s["sha256"] for s in json.loads((store / "manifest.json").read_text())["shards"]]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "sample"
    _prepare(out)
    return out


def test_manifest_index_and_signals(store):
    from ecgnat_hf.data.builders import PTBXL
    from ecgnat_hf.data.store import ECGStore
    from ecgnat_hf.sample_data import sample_dir

    m = json.loads((store / "manifest.json").read_text())
    assert m["n_records"] == 60 and m["n_skipped"] == 0 and m["sampling_rate"] == 100.0
    assert m["sources"] == {"PTB-XL (bundled sample)": 60} and m["label_names"] == ["CD", "HYP", "MI", "NORM", "STTC"]
    # shards of at most 16 records, cut within each split (train: folds 1-7, validation: 8, test: 9)
    assert len(m["shards"]) >= 4 and all(s["n_records"] <= 16 for s in m["shards"])
    assert sum(s["n_records"] for s in m["shards"]) == 60
    assert m["command"] == "test"
    with open(store / "skipped.csv", newline="") as f:
        assert next(csv.reader(f)) == ["record", "reason", "message"]
    st = ECGStore(store)
    assert len(st) == 60 and set(st.split) <= {"train", "validation", "test"}
    assert (st.n_samples == 1000).all() and st.labels.shape == (60, 5) and st.lead_mask.shape == (60, 12)
    # the stored signal is the extractor's own preparation of the record, within half an int16 step per lead
    b = PTBXL(config_name="superdiagnostic", data_dir=str(sample_dir()), sampling_rate=100, max_records=60,
              train_folds=(1, 2, 3, 4, 5, 6, 7), validation_folds=(8,), test_folds=(9,))
    gens = b._split_generators(None)
    ids = [i for g in gens for i in g.gen_kwargs["ecg_ids"]]
    key, ex = next(iter(b._generate_examples([ids[0]])))
    ref, mask, _ = _fe()._prepare_record(0, 1, ex["signal"], ex["sampling_rate"], ex["lead_names"], True)
    i = st.record.index(ex["record_id"])
    got = st.signal(i)
    step = np.abs(ref).max(axis=1) / 32767
    assert np.all(np.abs(got - ref).max(axis=1) <= step * 0.51 + 1e-9)
    assert np.array_equal(st.lead_mask[i], mask)
    np.testing.assert_array_equal(st.labels[i], ex["labels"])
    np.testing.assert_allclose(st.window(i, 250, 100), got[:, 250:350])


def test_int16_beats_float16_on_real_records(store):
    """The documented choice: int16 with a per-lead scale loses less than float16 (and both far less than the
    sources' own 1 uV / 5 uV steps)."""
    from ecgnat_hf.data.store import ECGStore, dequantize_int16, quantize_int16

    st = ECGStore(store)
    e16, ef16 = [], []
    for i in range(10):
        x = st.signal(i).astype(np.float64)
        q, s = quantize_int16(x)
        e16.append(np.abs(dequantize_int16(q, s) - x).max())
        ef16.append(np.abs(x.astype(np.float16).astype(np.float64) - x).max())
    assert max(e16) < max(ef16) and max(e16) < 1e-3  # mV: below 1 uV


def test_reading_is_memory_mapped(store):
    import pyarrow as pa

    from ecgnat_hf.data.store import ECGStore

    st = ECGStore(store)
    before = pa.total_allocated_bytes()
    for i in range(len(st)):
        st.window(i, 0, 500)
    size = sum(s["bytes"] for s in st.manifest["shards"])
    assert pa.total_allocated_bytes() - before < size / 20  # the shards were mapped, not copied into memory
    assert all(isinstance(m[0].column("signal").chunks[0].buffers()[-1], pa.Buffer) for m in st._maps.values())


def test_rerun_and_num_proc_give_the_same_bytes(store, tmp_path):
    again = tmp_path / "again"
    _prepare(again, num_proc=2)
    assert _checksums(again) == _checksums(store)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (again / "shards").glob("*.arrow")}
    _prepare(again)  # everything finished: nothing is rewritten
    assert {p.name: p.stat().st_mtime_ns for p in (again / "shards").glob("*.arrow")} == mtimes


def test_parts_and_merge_equal_one_prepare(store, tmp_path):
    from ecgnat_hf.data.store import merge_stores

    a, b = tmp_path / "a", tmp_path / "b"
    part = _prepare(a, num_shards=2, shard_index=0)
    assert part["shards_missing"] == 2 and not (a / "manifest.json").exists()
    _prepare(b, num_shards=2, shard_index=1)
    merged = merge_stores([a, b], tmp_path / "merged", command="test")
    assert _checksums(tmp_path / "merged") == _checksums(store) and merged["n_records"] == 60
    # or both parts into one shared folder: the last one to finish writes the manifest
    shared = tmp_path / "shared"
    _prepare(shared, num_shards=2, shard_index=1)
    _prepare(shared, num_shards=2, shard_index=0)
    assert _checksums(shared) == _checksums(store)


def test_other_settings_into_the_same_folder_are_refused(store, tmp_path):
    from ecgnat_hf.data.store import StoreError

    out = tmp_path / "s"
    _prepare(out, n=20)
    with pytest.raises(StoreError, match="other settings or from other data"):
        _prepare(out, n=20, rate=50)


def test_second_prepare_is_locked_out(tmp_path):
    from ecgnat_hf.data.store import StoreLockedError, _Lock

    out = tmp_path / "locked"
    out.mkdir()
    with _Lock(out, "prepare"):
        with pytest.raises(StoreLockedError, match="another prepare is writing this store"):
            _prepare(out, n=20)
    _prepare(out, n=20)  # free again


def test_disk_full_keeps_finished_shards(store, tmp_path, monkeypatch):
    from datasets.arrow_writer import ArrowWriter

    from ecgnat_hf.data.store import StoreDiskFullError

    out = tmp_path / "full"
    real, calls = ArrowWriter.write, {"n": 0}

    def write(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 40:  # in the third shard
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(ArrowWriter, "write", write)
    with pytest.raises(StoreDiskFullError, match=r"00002\.arrow: disk full while writing shard 2"):
        _prepare(out)
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["00000.arrow", "00000.json", "00001.arrow", "00001.json"]
    monkeypatch.setattr(ArrowWriter, "write", real)
    _prepare(out)
    assert _checksums(out) == _checksums(store)


@pytest.mark.slow
def test_kill_9_then_rerun(store, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "ecgnat_hf.cli", "prepare", "--dataset", "sample", "--max_records", "60",
           "--records_per_shard", "4", "--output_dir", str(out), "--no_progress", "true", "--scaling", "center"]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "shards").glob("*.json")) and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((out / "shards").glob("*.json")))
    assert 1 <= done < 15, "the prepare was not stopped mid-way"
    assert not (out / "manifest.json").exists()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not list((out / "shards").glob(".*.tmp"))  # the shard being written when killed is gone
    ref = tmp_path / "ref"
    _prepare(ref, per_shard=4)
    assert _checksums(out) == _checksums(ref)


def test_challenge_records_and_skips(tmp_path):
    """Records of several rates are resampled to the model's; a record the extractor cannot use is a row of
    skipped.csv with its path relative to the data folder."""
    from ecgnat_hf.data.store import ECGStore, prepare_store

    out = tmp_path / "cinc"
    m = prepare_store(_args(dataset="challenge", data_dir=str(FIXTURES / "cinc2021")), _fe(100), out,
                      records_per_shard=3, progress=False)
    st = ECGStore(out)
    with open(out / "skipped.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert m["n_records"] + len(rows) >= len(list((FIXTURES / "cinc2021").rglob("*.hea")))
    assert m["n_records"] == len(st) > 0 and m["n_skipped"] == len(rows)
    assert all(not Path(r["record"]).is_absolute() and r["reason"] for r in rows)
    assert all(not Path(r).is_absolute() for r in st.record)
    assert set(st.source) - {""}  # Challenge names each record's source
    assert (st.n_samples > 0).all()


def test_per_rank_partition_disjoint_and_complete(store):
    """The Trainer's sampler, sharded by accelerate for 2 ranks over the store's training records: every record
    is read by one rank (the last batch of one rank is filled from the start, as accelerate does)."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler, RandomSampler

    from ecgnat_hf.training.store_data import StoreWindows, open_store

    st = open_store(store)
    ds = StoreWindows([st], [st.indices(["train"])], _fe())
    n = len(ds)
    seen = []
    for rank in range(2):
        bs = BatchSamplerShard(BatchSampler(RandomSampler(range(n), generator=__import__("torch").Generator().manual_seed(0)),
                                            8, False), num_processes=2, process_index=rank)
        seen.append([i for b in bs for i in b])
    records = [[ds.locate(i)[1] for i in s] for s in seen]
    assert set(records[0]) | set(records[1]) == set(st.indices(["train"]).tolist())
    overlap = set(records[0]) & set(records[1])
    assert len(overlap) <= 8 and len(records[0]) == len(records[1])


def test_crops_weights_and_epochs(store, tmp_path):
    from ecgnat_hf.training.store_data import StoreWindows, open_store

    st = open_store(store)
    fe = _fe()
    fe.window_s = 4.0  # 400 of 1000 samples: room for random crops
    ds = StoreWindows([st], [st.indices(["train"])], fe, seed=3)
    a = ds[0]["input_values"]
    assert a.shape == (12, 400) and np.array_equal(a, ds[0]["input_values"])  # reproducible within an epoch
    ds.set_epoch(1)
    assert not np.array_equal(a, ds[0]["input_values"])  # a new crop next epoch
    np.testing.assert_allclose(a.mean(axis=1), 0, atol=1e-5)  # centred like the extractor's windows
    # two sources weighted 1:3: each epoch draws a quarter / three quarters of N from them
    small = tmp_path / "small"
    _prepare(small, n=20)
    st2 = open_store(small)
    w = StoreWindows([st, st2], [st.indices(), st2.indices()], _fe(), weights=[1, 3])
    src = np.asarray([w.locate(j)[0] for j in range(len(w))])
    assert len(w) == 80 and (src == 0).sum() == 20 and (src == 1).sum() == 60


@pytest.mark.slow
def test_pretrain_and_finetune_from_store(store, tmp_path):
    from ecgnat_hf.recipes.finetune import main as finetune
    from ecgnat_hf.recipes.pretrain import main as pretrain

    fast = ["--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16", "--logging_steps", "1",
            "--disable_tqdm", "true", "--use_cpu", "true", "--max_steps", "2", "--save_strategy", "no",
            "--report_to", "none", "--preset", "tiny", "--scaling", "center"]
    res = pretrain(["--dataset", "store", "--data_dir", str(store), "--output_dir", str(tmp_path / "pre"),
                    "--eval_strategy", "steps", "--eval_steps", "2", "--dataloader_num_workers", "2", *fast])
    assert res["global_step"] == 2 and np.isfinite(res["eval_results"]["validation"]["loss"])
    assert res["n_train"] == int((open_store_split(store) == "train").sum())
    ft = finetune(["--dataset", "store", "--data_dir", str(store), "--output_dir", str(tmp_path / "ft"),
                   "--model_name_or_path", str(tmp_path / "pre"), "--eval_strategy", "no",
                   "--load_best_model_at_end", "false", *fast])
    assert ft["global_step"] == 2 and "test" in ft["eval_results"]


def open_store_split(path):
    from ecgnat_hf.data.store import ECGStore

    return ECGStore(path).split


def _mimic_and_code15(root: Path, n: int = 24):
    """Tiny corpora in both real layouts from the bundled records (varied copies), with one faulty record each."""
    from ecgnat_hf.data.corpus_layouts import bundled_signals, vary, write_code15, write_mimic_iv_ecg

    rng = np.random.default_rng(0)
    sig500 = [vary(s, rng) for _, s in bundled_signals(500, n)]
    mimic = root / "mimic"
    paths = write_mimic_iv_ecg(mimic, sig500, subject_ids=[10000000 + i // 2 for i in range(n)], writer="numpy")
    (mimic / (paths[3] + ".dat")).write_bytes((mimic / (paths[3] + ".dat")).read_bytes()[:1000])  # truncated
    sig400 = [vary(s, rng) for _, s in bundled_signals(400, n)]
    sig400[5][:] = 0.0  # an all-zero exam
    code = root / "code15"
    y = (rng.random((n, 6)) < 0.3).astype(np.float32)
    write_code15(code, sig400, exam_ids=list(range(1, n + 1)), patient_ids=[500 + i // 2 for i in range(n)], labels=y,
                 part_size=10)
    return mimic, paths, code, y


@pytest.mark.slow
def test_mimic_and_code15_layouts(tmp_path):
    """Both corpora into stores: records at the model's rate in canonical lead order, split by subject, the faulty
    records in skipped.csv named as the corpus index writes them; CODE-15 % keeps its six labels."""
    from ecgnat_hf.data.store import ECGStore, prepare_store

    mimic, paths, code, y = _mimic_and_code15(tmp_path)
    fe = _fe(100)
    m = prepare_store(_args(dataset="mimic-iv-ecg", data_dir=str(mimic), validation_fraction=0.2, test_fraction=0.2),
                      fe, tmp_path / "s_mimic", records_per_shard=5, progress=False, num_proc=2)
    st = ECGStore(tmp_path / "s_mimic")
    with open(tmp_path / "s_mimic" / "skipped.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["record"] for r in rows] == [paths[3]] and m["n_records"] == 23
    assert sorted(st.record) == sorted(p for i, p in enumerate(paths) if i != 3)
    assert (st.n_samples == 1000).all()  # 10 s at 500 Hz, resampled once to the model's 100 Hz
    by_subject = {}
    for subj, split in zip(st.subject, st.split):
        by_subject.setdefault(subj, set()).add(split)
    assert all(len(v) == 1 for v in by_subject.values())  # no subject in two splits
    # the stored leads are in canonical order (MIMIC stores aVF before aVL): aVL ~ (I - III) / 2, aVF ~ (II + III) / 2
    x = st.signal(0)
    corr = lambda a, b: np.corrcoef(a, b)[0, 1]  # noqa: E731
    assert corr(x[4], (x[0] - x[2]) / 2) > 0.9 and corr(x[5], (x[1] + x[2]) / 2) > 0.9
    m2 = prepare_store(_args(dataset="code15", data_dir=str(code), validation_fraction=0.2, test_fraction=0.2),
                       fe, tmp_path / "s_code", records_per_shard=4, progress=False)
    st2 = ECGStore(tmp_path / "s_code")
    with open(tmp_path / "s_code" / "skipped.csv", newline="") as f:
        rows2 = list(csv.DictReader(f))
    assert [r["record"] for r in rows2] == ["exams_part0.hdf5:6"] and m2["n_records"] == 23
    assert m2["label_names"] == ["1dAVb", "RBBB", "LBBB", "SB", "ST", "AF"]
    i = st2.record.index("exams_part1.hdf5:12")
    np.testing.assert_array_equal(st2.labels[i], y[11])
    assert (st2.n_samples == 1000).all()  # the zero padding of the 4096-sample tracings is trimmed


def test_trainer_resumes_mid_epoch_where_it_stopped(store, tmp_path):
    """Trainer + accelerate on the map-style store dataset: a run resumed from a mid-epoch checkpoint reads the
    same records, with the same crops, as the uninterrupted run, and does not read the skipped batches."""
    import torch
    from transformers import Trainer, TrainingArguments

    from ecgnat_hf.recipes.pretrain import _PretrainCollator
    from ecgnat_hf.training.store_data import StoreWindows, open_store

    class Seen(StoreWindows):
        log: list = []

        def __getitem__(self, j):
            ex = super().__getitem__(j)
            Seen.log.append((self.epoch, int(j), float(ex["input_values"].sum())))
            return ex

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, input_values, lead_mask=None, **kw):
            return {"loss": ((self.w * input_values.mean()) ** 2).sum()}

    st = open_store(store)
    fe = _fe()
    fe.window_s = 4.0

    def run(out, resume=None):
        Seen.log = []
        ds = Seen([st], [st.indices(["train"])[:8]], fe, seed=1)
        args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=2, max_steps=6, save_strategy="steps",
                                 save_steps=3, logging_steps=1, report_to="none", use_cpu=True, seed=5,
                                 remove_unused_columns=False, disable_tqdm=True, learning_rate=1e-3)
        Trainer(model=Tiny(), args=args, train_dataset=ds, data_collator=_PretrainCollator()).train(
            resume_from_checkpoint=resume)
        return list(Seen.log)

    full = run(tmp_path / "a")
    # 4 steps per epoch: the run crosses an epoch (accelerate's loader reads one batch ahead: 12 or 14 reads)
    assert len(full) >= 12 and {e for e, _, _ in full} == {0, 1} and sum(e == 0 for e, _, _ in full) == 8
    resumed = run(tmp_path / "b", resume=None) and run(tmp_path / "b", resume=str(tmp_path / "b" / "checkpoint-3"))
    assert resumed == full[6:]  # steps 4-6 only: same records, same epoch, same crops


def test_scale_pretrain_config_parses():
    from transformers import TrainingArguments

    from ecgnat_hf.training.arguments import DataArguments, ModelArguments, parse_recipe_args

    m, d, t = parse_recipe_args((ModelArguments, DataArguments, TrainingArguments),
                                [str(REPO / "recipes" / "configs" / "base_scale_pretrain.yaml"), "--bf16", "false"])
    assert d.dataset == "store" and d.extra_sources == ["store:stores/code15", "store:stores/cinc2021"]
    assert d.source_weights == [2.0, 1.0, 1.0] and m.preset == "base"
    with pytest.raises(ValueError, match="2 weight"):
        DataArguments(dataset="store", data_dir="x", source_weights="1,2")


def test_cli_errors_name_the_store(tmp_path, capsys):
    from ecgnat_hf.cli import main
    from ecgnat_hf.data.store import _Lock

    out = tmp_path / "busy"
    out.mkdir()
    with _Lock(out, "prepare"):
        assert main(["prepare", "--dataset", "sample", "--max_records", "8", "--output_dir", str(out)]) == 1
    assert "another prepare is writing this store" in capsys.readouterr().err
    assert main(["pretrain", "--dataset", "store", "--data_dir", str(out), "--output_dir", str(tmp_path / "o")]) == 2
    assert f"{out}: not a prepared store" in capsys.readouterr().err
