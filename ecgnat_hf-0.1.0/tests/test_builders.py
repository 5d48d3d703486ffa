"""Dataset builders on the shared real data: labels, signals, folds, skipped records, streaming,
Parquet and the pretraining mixture. Expected values are computed here independently from the CSV
tables and with ``wfdb`` / plain header parsing, not with the package's own helpers."""

import ast
import csv
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")
wfdb = pytest.importorskip("wfdb")

from ecgnat_hf.data.builders import (  # noqa: E402
    PTBXL,
    ECGFolder,
    PhysioNetChallenge,
    build_pretraining_mixture,
    export_parquet,
    group_split,
    infer_source,
    load_parquet,
)
from ecgnat_hf.data.labels import PTBXL_TASKS, aggregate_ptbxl_labels, load_challenge_classes  # noqa: E402

pytestmark = pytest.mark.shared_data
CANON = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


# ------------------------------------------------------------------------------- independent truth
def _read_ptbxl_tables(root: Path):
    with open(root / "ptbxl_database.csv", newline="") as f:
        db = {int(r["ecg_id"]): r for r in csv.DictReader(f)}
    with open(root / "scp_statements.csv", newline="") as f:
        rows = list(csv.reader(f))
    head = rows[0]
    stm = {r[0]: dict(zip(head[1:], r[1:])) for r in rows[1:]}
    return db, stm


def _expected_labels(db, stm, task):
    """Benchmark aggregation written out plainly (min_samples=0 keeps every occurring label)."""
    def one(v):
        return v.strip() in ("1", "1.0")

    out = {}
    for eid, r in db.items():
        codes = ast.literal_eval(r["scp_codes"]).keys()  # likelihood ignored
        if task == "all":
            labs = set(codes)
        elif task == "diagnostic":
            labs = {c for c in codes if c in stm and one(stm[c]["diagnostic"])}
        elif task == "subdiagnostic":
            labs = {stm[c]["diagnostic_subclass"] for c in codes if c in stm and one(stm[c]["diagnostic"])}
        elif task == "superdiagnostic":
            labs = {stm[c]["diagnostic_class"] for c in codes if c in stm and one(stm[c]["diagnostic"])}
        else:
            labs = {c for c in codes if c in stm and one(stm[c][task])}
        labs.discard("")
        if labs:
            out[eid] = labs
    return out


@pytest.fixture(scope="session")
def ptbxl_dir(shared_data):
    return shared_data / "ptbxl-subset"


@pytest.fixture(scope="session")
def cinc_dir(shared_data):
    return shared_data / "cinc2021-sample"


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf-cache"))


@pytest.fixture(scope="session")
def ptbxl_super(ptbxl_dir, cache):
    """The full subset (434 records, 100 Hz), superdiagnostic."""
    b = PTBXL(config_name="superdiagnostic", data_dir=str(ptbxl_dir), cache_dir=cache)
    b.download_and_prepare()
    return b


# ------------------------------------------------------------------------------- PTB-XL
def test_ptbxl_superdiagnostic_full_subset(ptbxl_super, ptbxl_dir):
    db, stm = _read_ptbxl_tables(ptbxl_dir)
    assert len(db) == 434
    expected = _expected_labels(db, stm, "superdiagnostic")
    ds = ptbxl_super.as_dataset()
    assert set(ds.keys()) == {"train", "validation"}  # no fold 10 here: test omitted, not empty
    assert ptbxl_super.skipped == []
    assert sorted(ptbxl_super.unlabelled) == sorted(set(db) - set(expected))
    names = ptbxl_super.label_names
    assert names == ["CD", "HYP", "MI", "NORM", "STTC"]
    counts = Counter()
    seen = set()
    for split, folds in (("train", set(range(1, 9))), ("validation", {9})):
        d = ds[split]
        assert set(d["strat_fold"]) <= folds
        assert {int(db[e]["strat_fold"]) for e in d["ecg_id"]} <= folds
        y = np.asarray(d["labels"])
        for eid, row in zip(d["ecg_id"], y):
            assert {names[i] for i in np.flatnonzero(row)} == expected[eid]
            seen.add(eid)
        counts.update(dict(zip(names, y.sum(0).astype(int))))
    assert seen == set(expected)
    assert dict(counts) == {"NORM": 261, "STTC": 80, "CD": 67, "MI": 65, "HYP": 33}  # SOURCES.md
    assert dict(counts) == dict(Counter(c for v in expected.values() for c in v))
    assert ds["train"].features["signal"] == datasets.Array2D(shape=(12, 1000), dtype="float32")
    assert ds["train"].features["label_ids"].feature.names == names


@pytest.mark.parametrize("task", PTBXL_TASKS)
def test_ptbxl_task_aggregation_matches_independent_count(ptbxl_dir, task):
    db, stm = _read_ptbxl_tables(ptbxl_dir)
    expected = _expected_labels(db, stm, task)
    agg = aggregate_ptbxl_labels(ptbxl_dir / "ptbxl_database.csv", ptbxl_dir / "scp_statements.csv", task)
    assert agg.classes == sorted({c for v in expected.values() for c in v})
    assert {k: set(v) for k, v in agg.labels.items()} == expected


def test_ptbxl_min_samples_filter(ptbxl_dir):
    agg0 = aggregate_ptbxl_labels(ptbxl_dir / "ptbxl_database.csv", ptbxl_dir / "scp_statements.csv", "all")
    agg = aggregate_ptbxl_labels(ptbxl_dir / "ptbxl_database.csv", ptbxl_dir / "scp_statements.csv", "all", min_samples=10)
    counts = agg0.counts()
    assert agg.classes == sorted(c for c, n in counts.items() if n > 10)


def test_ptbxl_signals_equal_wfdb(ptbxl_dir, ptbxl_super, cache):
    d = ptbxl_super.as_dataset("validation").with_format("numpy")
    for i in range(3):
        ex = d[i]
        rec = wfdb.rdrecord(str(ptbxl_dir / "records100" / f"{ex['ecg_id'] // 1000 * 1000:05d}" / ex["record_id"]))
        order = [[n.upper() for n in rec.sig_name].index(n.upper()) for n in CANON]
        np.testing.assert_array_equal(ex["signal"], rec.p_signal.T[order].astype(np.float32))
        assert list(ex["lead_names"]) == CANON
    # 500 Hz, another task, explicit folds, a few records
    ids = tuple(int(e) for e in d["ecg_id"][:2])
    b = PTBXL(config_name="rhythm", data_dir=str(ptbxl_dir), sampling_rate=500, cache_dir=cache,
              record_ids=ids, train_folds=(), validation_folds=(), test_folds=(9,))
    b.download_and_prepare()
    t = b.as_dataset()
    assert list(t.keys()) == ["test"]
    ex = t["test"].with_format("numpy")[0]
    assert ex["signal"].shape == (12, 5000) and ex["sampling_rate"] == 500
    rec = wfdb.rdrecord(str(ptbxl_dir / "records500" / f"{ex['ecg_id'] // 1000 * 1000:05d}" / ex["record_id"]))
    np.testing.assert_array_equal(ex["signal"], rec.p_signal.T.astype(np.float32))


def test_ptbxl_fold_choice(ptbxl_dir, cache):
    b = PTBXL(config_name="superdiagnostic", data_dir=str(ptbxl_dir), cache_dir=cache,
              train_folds=(1, 2), validation_folds=(3,), test_folds=(9,), max_records=80)
    b.download_and_prepare()
    ds = b.as_dataset()
    assert set(ds["train"]["strat_fold"]) <= {1, 2}
    assert set(ds["validation"]["strat_fold"]) == {3}
    assert set(ds["test"]["strat_fold"]) == {9}
    assert sum(len(v) for v in ds.values()) <= 80


@pytest.mark.parametrize("builder, kwargs, match", [
    (PTBXL, dict(sampling_rate=250), "PTB-XL comes at 100 or 500 Hz"),
    (PTBXL, dict(config_name="rhythm", task="bogus"), "unknown PTB-XL task"),
    (PTBXL, dict(max_records=0), "max_records must be >= 1"),
    (ECGFolder, dict(empty_labels="zzz"), "empty_labels must be one of"),
    (ECGFolder, dict(validation_fraction=1.5), "validation_fraction"),
    (PhysioNetChallenge, dict(quality_thresholds={"flat_mv": 1.0}), "unknown quality threshold"),
])
def test_named_config_keywords_are_validated(builder, kwargs, match, tmp_path):
    """``datasets`` applies keyword arguments to a named config after its __post_init__; before, PTBXL(
    sampling_rate=250) built the 500 Hz records under a 250 Hz config. Refused before any record is read."""
    with pytest.raises(ValueError, match=match):
        builder(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), **kwargs)


def test_named_config_keywords_are_normalised(ptbxl_dir, cache):
    b = PTBXL(data_dir=str(ptbxl_dir), cache_dir=cache, train_folds=[1, 2])
    assert b.config.train_folds == (1, 2) and b.config.task == "superdiagnostic"


def _copy_ptbxl_records(ptbxl_dir, tmp_path, n):
    """A PTB-XL folder with the two tables and the first ``n`` 100 Hz records, to damage in a test."""
    db, _ = _read_ptbxl_tables(ptbxl_dir)
    root = tmp_path / "ptbxl"
    root.mkdir()
    for f in ("ptbxl_database.csv", "scp_statements.csv"):
        shutil.copy(ptbxl_dir / f, root / f)
    ids = sorted(db)[:n]
    for e in ids:
        rel = Path(db[e]["filename_lr"])
        (root / rel.parent).mkdir(parents=True, exist_ok=True)
        for ext in (".hea", ".dat"):
            shutil.copy(ptbxl_dir / (str(rel) + ext), root / (str(rel) + ext))
    return db, root, ids


def test_ptbxl_missing_and_truncated_records_are_reported(ptbxl_dir, tmp_path, cache):
    db, root, ids = _copy_ptbxl_records(ptbxl_dir, tmp_path, 6)
    trunc = root / (db[ids[0]]["filename_lr"] + ".dat")
    trunc.write_bytes(trunc.read_bytes()[:5000])
    (root / (db[ids[1]]["filename_lr"] + ".hea")).unlink()
    b = PTBXL(config_name="all", data_dir=str(root), cache_dir=cache, record_ids=tuple(ids),
              validation_folds=(), test_folds=(), train_folds=tuple(range(1, 11)))
    b.download_and_prepare()
    assert b.as_dataset("train").num_rows == 4
    reasons = {Path(s.record).name: s.reason for s in b.skipped}
    assert reasons == {Path(db[ids[0]]["filename_lr"]).name: "TruncatedSignalError",
                       Path(db[ids[1]]["filename_lr"]).name: "MissingFileError"}
    assert b.skipped_summary() == {"TruncatedSignalError": 1, "MissingFileError": 1}
    # a second builder finding the prepared data in the cache still knows what was skipped
    b2 = PTBXL(config_name="all", data_dir=str(root), cache_dir=cache, record_ids=tuple(ids),
               validation_folds=(), test_folds=(), train_folds=tuple(range(1, 11)))
    b2.download_and_prepare()
    assert sorted(s.as_tuple() for s in b2.skipped) == sorted(s.as_tuple() for s in b.skipped)


def _zero_leads(hea: Path, leads=None) -> None:
    """Make leads of a real 12-lead format-16 record all-zero (a disconnected electrode; ``None``: every lead):
    the samples are zeroed in the signal file and the header's initial values and checksums made to match,
    so the reader accepts the record and only the quality check can find it."""
    lines = hea.read_text().splitlines()
    n_sig = int(lines[0].split()[1])
    sig = [ln.split() for ln in lines[1 : 1 + n_sig]]
    leads = set(range(n_sig)) if leads is None else set(leads)
    fname, fmt = sig[0][0], sig[0][1]
    offset = int(fmt.split("+")[1]) if "+" in fmt else 0
    assert fmt.split("x")[0].split("+")[0] == "16" and all(s[0] == fname for s in sig)
    dat = hea.parent / fname
    raw = bytearray(dat.read_bytes())
    x = np.frombuffer(bytes(raw[offset:]), dtype="<i2").reshape(-1, n_sig).copy()
    x[:, sorted(leads)] = 0
    raw[offset:] = x.tobytes()
    dat.write_bytes(bytes(raw))
    for j in leads:
        sig[j][5], sig[j][6] = "0", "0"  # initial value, checksum of an all-zero lead
    hea.write_text("\n".join([lines[0], *(" ".join(s) for s in sig), *lines[1 + n_sig :]]) + "\n")


def test_ptbxl_records_without_a_usable_lead_are_reported(ptbxl_dir, tmp_path, cache):
    """The PTB-XL builder applies the same no-usable-lead check as ECGFolder and the feature extractor:
    an all-flat record is left out at build time with the quality finding as the reason, never scored;
    a record with one flat lead stays (the lead is masked later)."""
    db, root, ids = _copy_ptbxl_records(ptbxl_dir, tmp_path, 5)
    flat, one_flat = (root / (db[e]["filename_lr"] + ".hea") for e in ids[:2])
    _zero_leads(flat)
    _zero_leads(one_flat, leads=[8])  # V3
    assert np.ptp(wfdb.rdrecord(str(flat.with_suffix(""))).p_signal) == 0  # the reader sees a flat line
    kw = dict(config_name="all", data_dir=str(root), cache_dir=cache, record_ids=tuple(ids),
              validation_folds=(), test_folds=(), train_folds=tuple(range(1, 11)))
    b = PTBXL(**kw)
    b.download_and_prepare()
    ds = b.as_dataset("train")
    assert ds.num_rows == 4 and ids[0] not in ds["ecg_id"] and ids[1] in ds["ecg_id"]
    assert [(Path(s.record).name, s.reason) for s in b.skipped] == [(flat.stem, "NoUsableLeadError")]
    assert "all 12 leads flat" in b.skipped[0].error and "refused, not scored" in b.skipped[0].error
    assert (Path(b._output_dir) / "skipped_records.json").is_file()
    # the check is the configurable one: turned off, the flat record is kept; thresholds are validated early
    off = PTBXL(**kw, quality_check=False)
    off.download_and_prepare()
    assert off.as_dataset("train").num_rows == 5 and off.skipped == []
    with pytest.raises(ValueError, match="unknown quality threshold"):
        PTBXL(**kw, quality_thresholds={"flat_mv": 1.0})


def test_challenge_records_without_a_usable_lead_are_reported(cinc_dir, tmp_path, cache):
    """Same check, same report in the Challenge builder (MATLAB v4 signal files)."""
    root = tmp_path / "cinc"
    root.mkdir()
    names = sorted(p.stem for p in cinc_dir.glob("E*.hea"))[:4]
    for name in names:
        for ext in (".hea", ".mat"):
            shutil.copy(cinc_dir / (name + ext), root / (name + ext))
    _zero_leads(root / f"{names[0]}.hea")
    b = PhysioNetChallenge(data_dir=str(root), cache_dir=cache, quality_thresholds={"flat_range_mv": 0.02})
    b.download_and_prepare()
    assert b.as_dataset("train").num_rows == 3
    assert [(Path(s.record).name, s.reason) for s in b.skipped] == [(names[0], "NoUsableLeadError")]


def test_ptbxl_streaming_equals_prepared(ptbxl_super):
    prepared = ptbxl_super.as_dataset("validation").with_format("numpy")
    stream = ptbxl_super.as_streaming_dataset(split="validation")
    for i, ex in zip(range(5), stream):
        assert ex["ecg_id"] == prepared[i]["ecg_id"]
        np.testing.assert_array_equal(np.asarray(ex["signal"], dtype=np.float32), prepared[i]["signal"])
        assert ex["labels"] == list(prepared[i]["labels"])


def test_parquet_round_trip(ptbxl_super, tmp_path):
    out = export_parquet(ptbxl_super, tmp_path / "pq")
    assert set(out) == {"train", "validation"}
    back = load_parquet(tmp_path / "pq")
    orig = ptbxl_super.as_dataset()
    assert back["validation"].features == orig["validation"].features
    assert isinstance(back["validation"].features["signal"], datasets.Array2D)
    a = back["validation"].with_format("torch")[:4]
    b = orig["validation"].with_format("torch")[:4]
    assert a["signal"].shape == (4, 12, 1000)
    assert (a["signal"] == b["signal"]).all() and (a["labels"] == b["labels"]).all()


# ------------------------------------------------------------------------------- Challenge
def _header_dx(hea: Path):
    for line in hea.read_text().splitlines():
        if line.startswith("#") and line.lstrip("# ").lower().startswith("dx:"):
            return [c.strip() for c in line.split(":", 1)[1].split(",") if c.strip()]
    return []


def test_challenge_builder(cinc_dir, cache):
    b = PhysioNetChallenge(data_dir=str(cinc_dir), cache_dir=cache)
    b.download_and_prepare()
    ds = b.as_dataset("train")
    assert ds.num_rows == 50 and b.skipped == []
    cc = load_challenge_classes()
    assert b.label_names == list(cc.codes) and len(b.label_names) == 26
    # equivalences merged by the representative code: RBBB -> CRBBB, SVPB -> PAC, VPB -> PVC
    rep = {"59118001": "713427006", "63593006": "284470004", "17338001": "427172004", "164909002": "733534002"}
    scored = set(cc.codes)
    for ex in ds.with_format("numpy"):
        hea = cinc_dir / f"{ex['record_id']}.hea"
        dx = _header_dx(hea)
        assert list(ex["dx"]) == dx  # raw codes, unscored kept
        want = {rep.get(c, c) for c in dx} & scored
        got = {b.label_names[i] for i in np.flatnonzero(ex["labels"])}
        assert got == want
        assert ex["source"] == {"E": "Georgia", "H": "PTB-XL", "J": "Ningbo"}[ex["record_id"][0]]
        assert ex["signal"].shape == (12, 5000) and list(ex["lead_names"]) == CANON
    # a record with RBBB (59118001) is labelled CRBBB|RBBB
    rbbb = [ex for ex in ds if "59118001" in ex["dx"]]
    assert rbbb and all(ex["labels"][b.label_names.index("713427006")] == 1 for ex in rbbb)
    # signals are the WFDB physical values
    ex = ds.with_format("numpy")[0]
    rec = wfdb.rdrecord(str(cinc_dir / ex["record_id"]))
    np.testing.assert_allclose(ex["signal"], rec.p_signal.T.astype(np.float32), rtol=0, atol=1e-6)


def test_challenge_sources_filter_and_inference(cinc_dir, cache):
    b = PhysioNetChallenge(data_dir=str(cinc_dir), cache_dir=cache, sources=("Georgia",))
    b.download_and_prepare()
    ds = b.as_dataset("train")
    assert ds.num_rows == 20 and set(ds["source"]) == {"Georgia"}
    assert infer_source("A0001") == "CPSC" and infer_source("Q0001") == "CPSC-Extra"
    assert infer_source("I01") == "INCART" and infer_source("S0001") == "PTB"
    assert infer_source("HR00001") == "PTB-XL" and infer_source("E00001.hea") == "Georgia"
    assert infer_source("JS00001") == "Chapman-Shaoxing" and infer_source("JS10646") == "Chapman-Shaoxing"
    assert infer_source("JS10647") == "Ningbo"
    assert infer_source("/data/training/ningbo/g1/rec01") == "Ningbo"
    with pytest.raises(ValueError, match="unknown Challenge source"):
        PhysioNetChallenge(data_dir=str(cinc_dir), cache_dir=cache, sources=("Mars",)).download_and_prepare()


# ------------------------------------------------------------------------------- own folder
@pytest.fixture
def own_folder(ptbxl_dir, tmp_path):
    """12 PTB-XL records in a nested folder, 6 synthetic patients with 2 records each."""
    db, stm = _read_ptbxl_tables(ptbxl_dir)
    expected = _expected_labels(db, stm, "superdiagnostic")
    ids = sorted(expected)[:12]
    root = tmp_path / "mine"
    rows = []
    for i, e in enumerate(ids):
        src = ptbxl_dir / db[e]["filename_lr"]
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        for ext in (".hea", ".dat"):
            shutil.copy(str(src) + ext, sub / (src.name + ext))
        rows.append({"record": src.name, "labels": ";".join(sorted(expected[e])), "patient": f"p{i // 2}"})
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["record", "labels", "patient"])
        w.writeheader()
        w.writerows(rows)
    return root, rows


def test_folder_patient_disjoint_splits(own_folder, cache):
    root, rows = own_folder
    b = ECGFolder(data_dir=str(root), labels_file=str(root / "labels.csv"), cache_dir=cache,
                  validation_fraction=0.2, test_fraction=0.2, seed=0)
    b.download_and_prepare()
    ds = b.as_dataset()
    assert set(ds.keys()) == {"train", "validation", "test"} and b.skipped == []
    patients = {s: set(ds[s]["patient_id"]) for s in ds}
    assert not (patients["train"] & patients["validation"] or patients["train"] & patients["test"]
                or patients["validation"] & patients["test"])
    assert sum(ds[s].num_rows for s in ds) == 12
    names = b.label_names
    by_rec = {r["record"]: set(r["labels"].split(";")) for r in rows}
    for s in ds:
        for ex in ds[s]:
            assert {names[i] for i, v in enumerate(ex["labels"]) if v} == by_rec[ex["record_id"]]
    # the same seed gives the same split; group_split is deterministic and order-free
    assert group_split(list("abcdef"), 0.2, 0.2, 0) == group_split(list("fedcba"), 0.2, 0.2, 0)


def test_folder_single_label_unlabelled_and_skips(own_folder, cache):
    root, rows = own_folder
    # single label: records with several labels are reported, not silently dropped
    single = ECGFolder(data_dir=str(root), labels_file=str(root / "labels.csv"), label_type="single_label",
                       cache_dir=cache, validation_fraction=0.0, test_fraction=0.0)
    single.download_and_prepare()
    ds = single.as_dataset("train")
    multi = [r["record"] for r in rows if ";" in r["labels"]]
    assert ds.num_rows == 12 - len(multi)
    assert isinstance(ds.features["labels"], datasets.ClassLabel)
    assert sorted(Path(s.record).name for s in single.skipped) == sorted(multi)

    # corrupt: truncate one .dat, delete one .hea, add a record that is not in the CSV
    dats = sorted(root.rglob("*.dat"))
    dats[0].write_bytes(dats[0].read_bytes()[:1000])
    heas = sorted(root.rglob("*.hea"))
    heas[1].unlink()
    extra = root / "b" / "zz_extra"
    shutil.copy(heas[2], str(extra) + ".hea")
    shutil.copy(str(heas[2])[:-4] + ".dat", str(extra) + ".dat")
    (extra.with_suffix(".hea")).write_text(
        (extra.with_suffix(".hea")).read_text().replace(heas[2].stem + ".dat", "zz_extra.dat").replace(heas[2].stem, "zz_extra", 1)
    )
    b = ECGFolder(data_dir=str(root), labels_file=str(root / "labels.csv"), cache_dir=cache,
                  validation_fraction=0.0, test_fraction=0.0)
    b.download_and_prepare()
    assert b.as_dataset("train").num_rows == 10
    assert b.skipped_summary() == {"TruncatedSignalError": 1, "MissingFileError": 1, "not in labels file": 1}
    by_reason = {s.reason: Path(s.record).name for s in b.skipped}
    assert by_reason["TruncatedSignalError"] == dats[0].stem
    assert by_reason["MissingFileError"] == heas[1].stem
    assert by_reason["not in labels file"] == "zz_extra"

    # no CSV: unlabelled, one split, for pretraining
    u = ECGFolder(data_dir=str(root), cache_dir=cache)
    u.download_and_prepare()
    ud = u.as_dataset()
    assert list(ud.keys()) == ["train"] and "labels" not in ud["train"].column_names
    assert ud["train"].num_rows == 11 and u.skipped_summary() == {"TruncatedSignalError": 1}


# ------------------------------------------------------------------------------- mixture
def test_pretraining_mixture_ptbxl_and_challenge(ptbxl_dir, cinc_dir, cache):
    from scipy.signal import resample_poly

    p = PTBXL(config_name="superdiagnostic", data_dir=str(ptbxl_dir), cache_dir=cache, max_records=40)
    c = PhysioNetChallenge(data_dir=str(cinc_dir), cache_dir=cache, max_records=20)
    mix = build_pretraining_mixture({"ptbxl": p, "cinc": c}, sampling_rate=250, seconds=4, seed=0,
                                    stopping_strategy="first_exhausted", crop="start")
    assert set(mix.column_names) == {"input_values", "lead_mask", "source"}
    assert mix.features["input_values"] == datasets.Array2D(shape=(12, 1000), dtype="float32")
    src = mix["source"]
    assert set(src) == {"ptbxl", "cinc"} and src[:4] == ["ptbxl", "cinc", "ptbxl", "cinc"]
    m = mix.with_format("numpy")
    first = m[0]
    assert first["lead_mask"].all()
    # PTB-XL 100 Hz -> 250 Hz (x5/2), first 4 s
    raw = p.as_dataset("train").with_format("numpy")[0]["signal"]
    np.testing.assert_allclose(first["input_values"], resample_poly(raw.astype(np.float64), 5, 2, axis=-1)[:, :1000],
                               rtol=0, atol=1e-5)
    # Challenge 500 Hz -> 250 Hz (x1/2)
    raw_c = c.as_dataset("train").with_format("numpy")[0]["signal"]
    np.testing.assert_allclose(m[1]["input_values"], resample_poly(raw_c.astype(np.float64), 1, 2, axis=-1)[:, :1000],
                               rtol=0, atol=1e-5)
    # streaming gives the same windows
    stream = build_pretraining_mixture({"ptbxl": p, "cinc": c}, 250, 4, seed=0, stopping_strategy="first_exhausted",
                                       crop="start", streaming=True)
    ex = next(iter(stream))
    assert ex["source"] == "ptbxl"
    np.testing.assert_allclose(np.asarray(ex["input_values"]), first["input_values"], atol=1e-6)


# ------------------------------------------------------------------------------- issue 8: strict labels
from ecgnat_hf.data import LabelFileError  # noqa: E402
from ecgnat_hf.data.labels import parse_binary_label, read_label_table  # noqa: E402


def _write(path: Path, text: str, encoding="utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_binary_label_cells_are_parsed_strictly(tmp_path):
    for v, want in [("1", 1), ("0", 0), ("0.00", 0), ("1.0", 1), ("FALSE", 0), ("no", 0), ("Yes", 1), ("", None)]:
        assert parse_binary_label(v) == want, v
    for v in ("NaN", "2", "-1", "maybe", "0.5"):
        with pytest.raises(ValueError):
            parse_binary_label(v)
    f = _write(tmp_path / "l.csv", "record,AF,NORM\nr1,FALSE,1\nr2,no,0.00\nr3,NaN,1\n")
    with pytest.raises(LabelFileError, match=r"l\.csv: line 4, column 'AF': 'NaN' is not a 0/1 value") as info:
        read_label_table(f)
    assert info.value.row == 4 and info.value.column == "AF"
    t = read_label_table(_write(tmp_path / "ok.csv", "record,AF,NORM\nr1,FALSE,1\nr2,no,0.00\n"))
    assert t.rows["r1"]["labels"] == ["NORM"] and t.rows["r2"]["labels"] == []


def test_empty_cells_and_conflicting_duplicates_need_an_explicit_policy(tmp_path):
    f = _write(tmp_path / "l.csv", "record,labels\nr1,AF\nr2,\nr3,NORM\n")
    with pytest.raises(LabelFileError, match="line 3, column 'labels': empty label cell"):
        read_label_table(f)
    assert read_label_table(f, empty_labels="negative").rows["r2"]["labels"] == []
    t = read_label_table(f, empty_labels="skip")
    assert "r2" not in t.rows and t.skipped[0][:2] == ("r2", "empty labels")
    d = _write(tmp_path / "d.csv", "record,labels\nr1,AF\nr2,NORM\nr1,NORM\nr2,NORM\n")
    with pytest.raises(LabelFileError, match="record 'r1' has conflicting rows \\(lines 2, 4\\)"):
        read_label_table(d)
    assert read_label_table(d, duplicate_rows="first").rows["r1"]["labels"] == ["AF"]
    assert read_label_table(d, duplicate_rows="last").rows["r1"]["labels"] == ["NORM"]
    t = read_label_table(d, duplicate_rows="skip")
    assert set(t.rows) == {"r2"} and t.skipped[0][0] == "r1"  # identical r2 rows merged silently


def test_unreadable_label_files_name_the_file(tmp_path):
    latin = _write(tmp_path / "latin.csv", "record,labels\nr1,Vorhofflimmern\nr2,Schenkelblock öäü\n", "latin-1")
    with pytest.raises(LabelFileError, match=r"latin\.csv: line 3: not valid utf-8 text"):
        read_label_table(latin)
    assert read_label_table(latin, encoding="latin-1").rows["r2"]["labels"] == ["Schenkelblock öäü"]
    for name, text in [("empty.csv", ""), ("blank.csv", "\n\n"), ("nocol.csv", "id,labels\nr1,AF\n"),
                       ("ragged.csv", "record,labels\nr1,AF,extra\n")]:
        with pytest.raises(LabelFileError, match=name.replace(".", r"\.")):
            read_label_table(_write(tmp_path / name, text))
    with pytest.raises(LabelFileError, match="missing.csv"):
        read_label_table(tmp_path / "missing.csv")


def test_folder_label_policies_and_flat_records_are_reported(own_folder, cache):
    root, rows = own_folder
    text = (root / "labels.csv").read_text().splitlines()
    rec0, rec1 = rows[0]["record"], rows[1]["record"]
    text[1] = f"{rec0},,p0"  # empty labels cell
    (root / "labels.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(LabelFileError, match="empty label cell"):
        ECGFolder(data_dir=str(root), labels_file=str(root / "labels.csv"), cache_dir=cache)
    # an all-zero record: left out with the quality finding as the reason
    hea = next(root.rglob(f"{rec1}.hea"))
    dat = hea.with_suffix(".dat")
    dat.write_bytes(bytes(len(dat.read_bytes())))
    lines = hea.read_text().splitlines()
    lines[1:13] = [" ".join(ln.split()[:5] + ["0", "0", "0"] + ln.split()[8:]) for ln in lines[1:13]]
    hea.write_text("\n".join(lines) + "\n")
    b = ECGFolder(data_dir=str(root), labels_file=str(root / "labels.csv"), cache_dir=cache,
                  empty_labels="skip", validation_fraction=0.0, test_fraction=0.0)
    b.download_and_prepare()
    assert b.as_dataset("train").num_rows == 10
    reasons = {Path(s.record).name: (s.reason, s.error) for s in b.skipped}
    assert reasons[rec0][0] == "empty labels"
    assert reasons[rec1][0] == "NoUsableLeadError" and "all 12 leads flat" in reasons[rec1][1]
