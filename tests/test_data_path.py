"""One data path, whatever the corpus: pretraining reads every source through a prepared store (the bundled
sample included), and the fine-tuning splits are memory-mapped files of the ``datasets`` cache, reused by a
second call and by another process, never a corpus held in RAM."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def _args(tmp_path, **kw):
    from ecgnat_hf.training.arguments import DataArguments

    kw.setdefault("cache_dir", str(tmp_path / "hf"))
    return DataArguments(**kw)


def _fe(rate=100):
    from ecgnat_hf import ECGNATFeatureExtractor

    return ECGNATFeatureExtractor(sampling_rate=rate, window_s=10.0, scaling="center")


def test_pretraining_from_the_sample_goes_through_a_cached_store(tmp_path):
    from ecgnat_hf.data.store import ECGStore
    from ecgnat_hf.training.data import prepare_pretraining_data
    from ecgnat_hf.training.store_data import StoreWindows

    args = _args(tmp_path, dataset="sample", max_records=40)
    dd, names = prepare_pretraining_data(args, _fe())
    assert isinstance(dd["train"], StoreWindows) and isinstance(dd["validation"], StoreWindows)
    stores = list((tmp_path / "hf" / "ecgnat_stores").glob("sample-*"))
    assert len(stores) == 1 and names == ["PTB-XL (bundled sample)"]
    st = ECGStore(stores[0])
    split = np.asarray(st.split)
    # folds 1-7 train, fold 8 gives the evaluation loss, fold 9 (the fine-tune's test fold) is never read
    assert len(dd["train"]) == int((split == "train").sum()) > 0
    assert len(dd["validation"]) == int((split == "validation").sum()) > 0
    seen = {dd["train"].locate(j)[1] for j in range(len(dd["train"]))}
    seen |= {dd["validation"].locate(j)[1] for j in range(len(dd["validation"]))}
    assert not seen & set(np.flatnonzero(split == "test").tolist())
    ex = dd["train"][0]
    assert ex["input_values"].shape == (12, 1000) and ex["input_values"].dtype == np.float32
    # a second run reuses the store: no shard is written again
    shards = sorted((stores[0] / "shards").glob("*.arrow"))
    before = [p.stat().st_mtime_ns for p in shards]
    prepare_pretraining_data(args, _fe())
    assert [p.stat().st_mtime_ns for p in shards] == before
    # another extractor (another rate) is another store, not a mix-up
    prepare_pretraining_data(args, _fe(rate=50))
    assert len(list((tmp_path / "hf" / "ecgnat_stores").glob("sample-*"))) == 2


def test_extra_source_folder_needs_its_path(tmp_path):
    from ecgnat_hf.training.data import prepare_pretraining_data

    with pytest.raises(ValueError, match="folder:PATH"):
        prepare_pretraining_data(_args(tmp_path, dataset="sample", max_records=10, extra_sources=["folder"]), _fe())


def test_classification_splits_are_memory_mapped_and_reused(tmp_path, monkeypatch):
    from ecgnat_hf import ECGNATFeatureExtractor
    from ecgnat_hf.training.data import prepare_classification_data

    args = _args(tmp_path, dataset="sample", max_records=40)
    first = prepare_classification_data(args, _fe())
    for name, ds in first.splits.items():
        assert ds.cache_files, f"{name} split is held in memory"
        assert all(Path(f["filename"]).name.startswith(("ecgnat-features-", "cache-")) for f in ds.cache_files)
    x = np.asarray(first.splits["train"].with_format("numpy")["input_values"])

    def refuse(*a, **k):
        raise AssertionError("the extractor ran again although the prepared split is cached")

    monkeypatch.setattr(ECGNATFeatureExtractor, "__call__", refuse)
    again = prepare_classification_data(args, _fe())
    np.testing.assert_array_equal(np.asarray(again.splits["train"].with_format("numpy")["input_values"]), x)
    assert {k: len(v) for k, v in again.splits.items()} == {k: len(v) for k, v in first.splits.items()}


def test_left_out_records_are_reported_again_from_the_cache(tmp_path, caplog):
    """A record the extractor refuses is named on the first run and again when the split comes from the cache."""
    from ecgnat_hf.data import read_record
    from ecgnat_hf.data.builders.common import find_records
    from ecgnat_hf.sample_data import sample_dir
    from ecgnat_hf.training.data import prepare_classification_data

    import wfdb

    root = tmp_path / "folder"
    root.mkdir()
    recs = find_records(sample_dir() / "records100")[:12]
    rows = []
    for i, path in enumerate(recs):
        r = read_record(path)
        sig = np.asarray(r.signal, dtype=np.float64).T  # (samples, leads) for wfdb
        # r03's channels have names no model knows: the builder reads it, the extractor refuses it
        names = [f"ch{j}" for j in range(sig.shape[1])] if i == 3 else list(r.lead_names)
        wfdb.wrsamp(f"r{i:02d}", fs=r.sampling_rate, units=["mV"] * sig.shape[1], sig_name=names,
                    p_signal=sig, fmt=["16"] * sig.shape[1], adc_gain=[1000.0] * sig.shape[1],
                    baseline=[0] * sig.shape[1], write_dir=str(root))
        rows.append(f"r{i:02d},{'NORM' if i % 2 else 'MI'}\n")
    (root / "labels.csv").write_text("record,labels\n" + "".join(rows))
    args = _args(tmp_path, dataset="folder", data_dir=str(root), labels_csv=str(root / "labels.csv"),
                 validation_fraction=0.0, test_fraction=0.0)
    first = prepare_classification_data(args, _fe(), splits=("train",))
    second = prepare_classification_data(args, _fe(), splits=("train",))
    for prepared in (first, second):
        assert [Path(s.record).name for s in prepared.skipped] == ["r03"]
        assert len(prepared.splits["train"]) == 11
    sides = list((tmp_path / "hf").rglob("ecgnat-features-*.arrow.skipped.json"))
    assert len(sides) == 1 and json.loads(sides[0].read_text())[0][0].endswith("r03")


def test_store_prepare_applies_the_lead_naming(tmp_path):
    """--lead_names reaches `ecgnat prepare` (and so pretraining): a one-channel 'ECG' folder becomes lead II."""
    from ecgnat_hf.data import read_record
    from ecgnat_hf.data.builders.common import find_records
    from ecgnat_hf.data.store import ECGStore, prepare_store
    from ecgnat_hf.sample_data import sample_dir

    import wfdb

    root = tmp_path / "single"
    root.mkdir()
    for i, path in enumerate(find_records(sample_dir() / "records100")[:4]):
        r = read_record(path)
        ii = list(r.lead_names).index("II")
        wfdb.wrsamp(f"s{i}", fs=r.sampling_rate, units=["mV"], sig_name=["ECG"],
                    p_signal=np.asarray(r.signal, dtype=np.float64)[[ii]].T, fmt=["16"], adc_gain=[1000.0],
                    baseline=[0], write_dir=str(root))
    plain = prepare_store(_args(tmp_path, dataset="folder", data_dir=str(root), validation_fraction=0.0,
                                test_fraction=0.0), _fe(), tmp_path / "plain", progress=False)
    assert plain["n_records"] == 0 and plain["n_skipped"] == 4  # no channel the model knows
    named = prepare_store(_args(tmp_path, dataset="folder", data_dir=str(root), validation_fraction=0.0,
                                test_fraction=0.0, lead_names="ECG=II"), _fe(), tmp_path / "named", progress=False)
    st = ECGStore(tmp_path / "named")
    assert named["n_records"] == 4
    ii = st.lead_names.index("II")
    assert all(st.lead_mask[i][ii] == 1 and st.lead_mask[i].sum() == 1 for i in range(len(st)))
