"""The MIMIC-IV-ECG and CODE-15 % builders (and the Challenge builder's source quirks) on corpora built here,
in each release's real layout, from the bundled real PTB-XL records (resampled to 500 / 400 Hz).

The MIMIC corpus is written with ``wfdb.wrsamp`` (leads on disk in MIMIC's order I, II, III, aVR, aVF, aVL,
V1-V6), the CODE-15 % parts with ``h5py`` (zero padding, centred; a placeholder row ends each part). Expected
values come from the source arrays and from ``wfdb`` / ``h5py`` / ``csv``, not from the package's readers.
Every fault the builders must report is planted and its exact skip reason asserted.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")
wfdb = pytest.importorskip("wfdb")
h5py = pytest.importorskip("h5py")

from ecgnat_hf.data.builders import CODE15, CODE15_LABELS, MIMICIVECG, PhysioNetChallenge, hash_split  # noqa: E402
from ecgnat_hf.data.corpus_layouts import (  # noqa: E402
    MIMIC_DISK_ORDER,
    bundled_signals,
    write_code15,
    write_mimic_iv_ecg,
)

CANON = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
GAIN = 200.0  # adu per mV in the written MIMIC files: values come back within half a step


# ------------------------------------------------------------------------------------------ MIMIC-IV-ECG
N_MIMIC = 22
SUBJECTS = [10000032 + i // 2 for i in range(N_MIMIC)]  # two studies per subject
FAULTS = {  # record index -> what is planted
    2: "nan_lead",       # aVL entirely NaN-coded (-32768)
    3: "nan_run",        # a run of NaN-coded samples in V3
    4: "truncated",      # .dat cut to half
    5: "missing_dat",    # .dat deleted
    6: "all_zero",       # every sample zero
    7: "header_short",   # header announces fewer samples than the .dat holds
    8: "all_nan",        # every lead NaN-coded
    9: "missing_hea",    # listed in record_list.csv, no header on disk
}


@pytest.fixture(scope="module")
def mimic(tmp_path_factory):
    root = tmp_path_factory.mktemp("mimic-iv-ecg")
    src = [s for _, s in bundled_signals(500, N_MIMIC)]
    sigs = [s.copy() for s in src]
    sigs[2][CANON.index("aVL")] = np.nan
    sigs[3][CANON.index("V3"), 1000:1400] = np.nan
    sigs[6][:] = 0.0
    sigs[8][:] = np.nan
    meas = []
    for i in range(N_MIMIC):
        m = {"report_0": "Sinus rhythm", "report_1": f"statement {i}", "report_17": "Abnormal ECG" if i % 3 else None,
             "cart_id": 6848296, "bandwidth": "0.005-150 Hz", "filtering": "60 Hz notch Baseline filter",
             "rr_interval": 800 + i, "p_onset": 40, "p_end": 29999 if i % 2 else 150, "qrs_onset": 200,
             "qrs_end": 290, "t_end": 600, "p_axis": 29999, "qrs_axis": -10 + i, "t_axis": 45}
        meas.append(m)
    paths = write_mimic_iv_ecg(root, sigs, SUBJECTS, measurements=meas, writer="wfdb")
    # machine_measurements has no row for the last record
    mm = root / "machine_measurements.csv"
    lines = mm.read_text().splitlines()
    mm.write_text("\n".join(lines[:-1]) + "\n")
    dat = {i: root / (paths[i] + ".dat") for i in FAULTS}
    raw = dat[4].read_bytes()
    dat[4].write_bytes(raw[: len(raw) // 2])
    dat[5].unlink()
    hea7 = root / (paths[7] + ".hea")
    head, *rest = hea7.read_text().splitlines()
    f = head.split()
    f[3] = "4000"
    hea7.write_text("\n".join([" ".join(f), *rest]) + "\n")
    (root / (paths[9] + ".hea")).unlink()
    return root, paths, src, meas


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf-cache"))


@pytest.fixture(scope="module")
def mimic_built(mimic, cache):
    root, *_ = mimic
    b = MIMICIVECG(data_dir=str(root), cache_dir=cache, validation_fraction=0.25, test_fraction=0.25)
    b.download_and_prepare()
    return b


def _all_examples(builder):
    dd = builder.as_dataset()
    out = {}
    for split, ds in dd.items():
        for ex in ds.with_format("numpy"):
            out[str(ex["path"])] = (split, ex)
    return out


def test_mimic_records_leads_by_name_and_skips(mimic, mimic_built):
    root, paths, src, _ = mimic
    exs = _all_examples(mimic_built)
    bad = {paths[i] for i, k in FAULTS.items() if k not in ("nan_lead", "nan_run")}
    assert set(exs) == set(paths) - bad
    skipped = {(s.record, s.reason) for s in mimic_built.skipped}
    assert skipped == {
        (paths[4], "TruncatedSignalError"),
        (paths[5], "MissingFileError"),
        (paths[6], "NoUsableLeadError"),
        (paths[7], "SignalMismatchError"),
        (paths[8], "InvalidSignalError"),
        (paths[9], "MissingFileError"),
    }
    msgs = {s.record: s.error for s in mimic_built.skipped}
    assert "truncated" in msgs[paths[4]] and "4000" in msgs[paths[7]] and "10000 bytes" not in msgs[paths[7]]
    assert ".dat" in msgs[paths[5]] and ".hea" in msgs[paths[9]]
    # a clean record: every lead placed by name; the file stores aVF before aVL
    _, ex = exs[paths[0]]
    assert list(ex["lead_names"]) == CANON and ex["signal"].shape == (12, 5000) and ex["sampling_rate"] == 500
    on_disk = wfdb.rdrecord(str(root / paths[0]))
    assert on_disk.sig_name == list(MIMIC_DISK_ORDER)
    for lead in ("aVL", "aVF", "V6"):
        got = ex["signal"][CANON.index(lead)]
        np.testing.assert_allclose(got, src[0][CANON.index(lead)], atol=0.5 / GAIN + 1e-6)
        np.testing.assert_allclose(got, on_disk.p_signal[:, MIMIC_DISK_ORDER.index(lead)], atol=1e-6)
    assert np.abs(ex["signal"][CANON.index("aVL")] - src[0][CANON.index("aVF")]).max() > 0.05  # not swapped
    assert ex["subject_id"] == SUBJECTS[0] and str(ex["record_id"]) == paths[0].rsplit("/", 1)[-1]


def test_mimic_nan_coded_leads_are_masked_not_imputed(mimic, mimic_built):
    _, paths, src, _ = mimic
    exs = _all_examples(mimic_built)
    for i, lead in ((2, "aVL"), (3, "V3")):
        _, ex = exs[paths[i]]
        assert list(ex["masked_leads"]) == [lead]
        assert list(ex["lead_names"]) == [c for c in CANON if c != lead] and ex["signal"].shape == (11, 5000)
        assert np.isfinite(ex["signal"]).all()
        np.testing.assert_allclose(ex["signal"][list(ex["lead_names"]).index("V1")], src[i][CANON.index("V1")],
                                   atol=0.5 / GAIN + 1e-6)
    assert all(len(ex["masked_leads"]) == 0 for p, (_, ex) in exs.items() if p not in (paths[2], paths[3]))


def test_mimic_invalid_leads_skip_policy(mimic, cache):
    root, paths, _, _ = mimic
    b = MIMICIVECG(data_dir=str(root), cache_dir=cache, invalid_leads="skip", record_ids=(paths[2], paths[3], paths[0]))
    b.download_and_prepare()
    reasons = {s.record: s.reason for s in b.skipped}
    assert reasons == {paths[2]: "InvalidSignalError", paths[3]: "InvalidSignalError"}
    assert "aVL" in next(s.error for s in b.skipped if s.record == paths[2])


def test_mimic_splits_by_subject(mimic_built):
    by_split: dict[str, set] = {}
    for split, ex in _all_examples(mimic_built).values():
        by_split.setdefault(split, set()).add(int(ex["subject_id"]))
    assert set(by_split) == {"train", "validation", "test"}
    splits = list(by_split.values())
    assert all(not (a & b) for i, a in enumerate(splits) for b in splits[i + 1:])
    for split, subjects in by_split.items():  # the subject hash alone decides, whatever else is present
        assert all(hash_split(s, 0.25, 0.25, 0) == split for s in subjects)


def test_mimic_machine_measurements(mimic, mimic_built):
    _, paths, _, meas = mimic
    exs = _all_examples(mimic_built)
    for i in (0, 1, 3):
        _, ex = exs[paths[i]]
        want = ["Sinus rhythm", f"statement {i}"] + (["Abnormal ECG"] if i % 3 else [])
        assert list(ex["report_statements"]) == want and ex["report"] == "; ".join(want)
        assert ex["rr_interval"] == 800 + i and ex["qrs_axis"] == -10 + i
        assert np.isnan(ex["p_axis"])  # 29999 in the file: missing
        assert (np.isnan(ex["p_end"]) if i % 2 else ex["p_end"] == 150)
        assert ex["bandwidth"] == "0.005-150 Hz" and ex["cart_id"] == "6848296"
    _, last = exs[paths[-1]]  # no row in machine_measurements.csv
    assert last["report"] is None and len(last["report_statements"]) == 0 and np.isnan(last["rr_interval"])
    ds = mimic_built.as_dataset("train")
    row = next(r for r in ds if r["path"] in (paths[1], paths[3]))
    assert row["p_axis"] is None  # stored as None, not 29999


def test_mimic_without_record_list_walks_files(mimic, cache, tmp_path):
    root, paths, _, _ = mimic
    copy = tmp_path / "mimic-copy"
    shutil.copytree(root / Path(paths[0]).parent, copy / Path(paths[0]).parent)
    shutil.copytree(root / Path(paths[10]).parent, copy / Path(paths[10]).parent)
    b = MIMICIVECG(data_dir=str(copy), cache_dir=cache, validation_fraction=0.0, test_fraction=0.0)
    b.download_and_prepare()
    ds = b.as_dataset("train")
    assert sorted(ds["path"]) == sorted([paths[0], paths[10]]) and b.skipped == []
    assert sorted(ds["subject_id"]) == sorted([SUBJECTS[0], SUBJECTS[10]])
    with pytest.raises(FileNotFoundError, match="record_list.csv"):
        MIMICIVECG(data_dir=str(tmp_path), cache_dir=cache).download_and_prepare()


# ------------------------------------------------------------------------------------------ CODE-15 %
N_CODE = 16


@pytest.fixture(scope="module")
def code15(tmp_path_factory):
    root = tmp_path_factory.mktemp("code15")
    src = [s for _, s in bundled_signals(400, N_CODE)]
    src = [s if i % 3 else s[:, :2800] for i, s in enumerate(src)]  # some 7 s exams
    sigs = [s.copy() for s in src]
    sigs[4][CANON.index("V2"), 100:300] = np.nan  # NaN inside an exam: V2 masked
    sigs[5][:] = 0.0                               # an all-zero exam (not the placeholder)
    exam_ids = [2000 + i for i in range(N_CODE)]
    patients = [700 + i // 2 for i in range(N_CODE)]
    labels = np.zeros((N_CODE, 6), dtype=int)
    labels[0, 0] = labels[1, 5] = labels[2, 1] = labels[2, 3] = labels[7, 4] = labels[8, 2] = 1
    parts = write_code15(root, sigs, exam_ids, patients, labels, part_size=6)  # parts 0, 1, 2
    rows = list(csv.reader(open(root / "exams.csv")))
    header, body = rows[0], rows[1:]
    by_id = {int(r[0]): r for r in body}
    del by_id[2009]                                 # exam of part 1 without a row in exams.csv
    by_id[2010][header.index("AF")] = "maybe"       # a label that is not True/False
    extra = list(by_id[2011])
    extra[0], extra[header.index("patient_id")] = "2999", "799"  # exams.csv puts 2999 in part 1: it is not there
    by_id[2999] = extra
    # part 2 cannot be read: its exams are reported one by one (exams.csv names them)
    (root / parts[2]).write_bytes(b"this is not an HDF5 file" * 100)
    with open(root / "exams.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(by_id.values())
    return root, src, exam_ids, patients, labels, parts


@pytest.fixture(scope="module")
def code15_built(code15, cache):
    root, *_ = code15
    b = CODE15(data_dir=str(root), cache_dir=cache, validation_fraction=0.25, test_fraction=0.25)
    b.download_and_prepare()
    return b


def test_code15_records_trimmed_labelled_and_skips(code15, code15_built):
    root, src, exam_ids, patients, labels, parts = code15
    exs = _all_examples(code15_built)
    rec = {i: f"{parts[i // 6]}:{exam_ids[i]}" for i in range(N_CODE)}
    assert code15_built.placeholder_rows == 2  # parts 0 and 1 were read; none is a record
    assert all(int(ex["exam_id"]) != 0 for _, ex in exs.values())
    assert {(s.record, s.reason) for s in code15_built.skipped} == {
        (rec[5], "NoUsableLeadError"),
        (rec[9], "not in exams.csv"),
        (rec[10], "LabelFileError"),
        (f"{parts[1]}:2999", "MissingFileError"),
        *((rec[i], "UnreadableRecordError") for i in range(12, N_CODE)),
    }
    msgs = {s.record: s.error for s in code15_built.skipped}
    assert "exams_part2.hdf5" in msgs[rec[12]] and "AF" in msgs[rec[10]] and "line" in msgs[rec[10]]
    assert set(exs) == {rec[i] for i in range(12) if i not in (5, 9, 10)}
    with h5py.File(root / parts[0], "r") as h5:  # the file really is padded
        assert h5["tracings"].shape == (7, 4096, 12) and not h5["tracings"][0, :10].any()
    for i in (0, 1, 3, 6):
        _, ex = exs[rec[i]]
        assert ex["n_samples"] == src[i].shape[1] and ex["signal"].shape == src[i].shape  # padding trimmed
        assert list(ex["lead_names"]) == CANON and ex["sampling_rate"] == 400
        np.testing.assert_array_equal(ex["signal"], src[i].astype(np.float32))
        np.testing.assert_array_equal(ex["labels"], labels[i].astype(np.float32))
        assert ex["patient_id"] == patients[i] and ex["sex"] == ("male" if i % 2 else "female")
    _, ex = exs[rec[2]]
    assert [code15_built.label_names[j] for j in ex["label_ids"]] == ["RBBB", "SB"]
    assert list(code15_built.label_names) == list(CODE15_LABELS)


def test_code15_nan_inside_an_exam_masks_that_lead(code15, code15_built):
    _, src, exam_ids, _, _, parts = code15
    _, ex = _all_examples(code15_built)[f"{parts[0]}:{exam_ids[4]}"]
    assert list(ex["masked_leads"]) == ["V2"] and "V2" not in list(ex["lead_names"])
    np.testing.assert_array_equal(ex["signal"][list(ex["lead_names"]).index("V3")], src[4][CANON.index("V3")])


def test_code15_splits_by_patient(code15_built):
    by_split: dict[str, set] = {}
    for split, ex in _all_examples(code15_built).values():
        by_split.setdefault(split, set()).add(int(ex["patient_id"]))
    splits = list(by_split.values())
    assert len(splits) >= 2 and all(not (a & b) for i, a in enumerate(splits) for b in splits[i + 1:])


def test_code15_reads_slices_not_whole_parts(code15, cache, monkeypatch):
    """Every read of ``tracings`` is a slice of at most ``read_rows`` exams, and each part is opened once."""
    root, *_ = code15
    reads, opens = [], []
    real_getitem = h5py.Dataset.__getitem__
    real_init = h5py.File.__init__

    def getitem(self, key):
        if self.name == "/tracings":
            reads.append(key)
        return real_getitem(self, key)

    def init(self, name, *a, **k):
        opens.append(Path(str(name)).name)
        return real_init(self, name, *a, **k)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", getitem)
    monkeypatch.setattr(h5py.File, "__init__", init)
    b = CODE15(data_dir=str(root), cache_dir=cache, read_rows=2, parts=(0,), validation_fraction=0.0, test_fraction=0.0)
    list(b._generate_examples(**b._split_generators(None)[0].gen_kwargs))
    assert reads and all(isinstance(k, slice) and k.stop - k.start <= 2 for k in reads)
    assert opens.count("exams_part0.hdf5") == 2  # once for the index (exam_id only), once by the generator


def test_code15_unreadable_part_without_index_rows_is_one_row(code15, cache, tmp_path):
    root, *_ = code15
    copy = tmp_path / "c"
    copy.mkdir()
    shutil.copy(root / "exams_part0.hdf5", copy / "exams_part0.hdf5")
    (copy / "exams_part7.hdf5").write_bytes(b"\x00" * 64)
    shutil.copy(root / "exams.csv", copy / "exams.csv")
    b = CODE15(data_dir=str(copy), cache_dir=cache, validation_fraction=0.0, test_fraction=0.0)
    b.download_and_prepare()
    assert [(s.record, s.reason) for s in b.skipped if "part7" in s.record] == [("exams_part7.hdf5", "UnreadableRecordError")]


# ------------------------------------------------------------------------------------------ Challenge quirks
def _challenge_record(folder: Path, name: str, signal_mv: np.ndarray, fs: float, dx: str = "426783006"):
    """A Challenge 2021 record: WFDB header + MATLAB v4 .mat of int16 digital values (gain 1000 /mV)."""
    import scipy.io

    d = np.round(signal_mv * 1000).astype(np.int16)
    scipy.io.savemat(folder / f"{name}.mat", {"val": d}, format="4")
    lines = [f"{name}.mat 12 {fs:g} {d.shape[1]} 05-Feb-2020 11:39:16"]
    for j, lead in enumerate(CANON):
        lines.append(f"{name}.mat 16+24 1000/mV 16 0 {int(d[j, 0])} {int(d[j].astype(np.int64).sum()) % 65536 - 0} 0 {lead}")
    lines += ["# Age: 63", "# Sex: Male", f"# Dx: {dx}", "# Rx: Unknown", "# Hx: Unknown", "# Sx: Unknown"]
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")


def test_challenge_sources_quirks_and_headerless_mat(tmp_path, cache):
    src = [s for _, s in bundled_signals(100, 3)]
    from ecgnat_hf.data.builders.mixture import resample_signal

    root = tmp_path / "cinc2021"
    (root / "ptb").mkdir(parents=True)
    (root / "incart").mkdir()
    (root / "ningbo").mkdir()
    _challenge_record(root / "ptb", "S0001", resample_signal(src[0], 100, 1000), 1000)  # PTB: 1000 Hz
    incart = np.tile(resample_signal(src[1], 100, 257), (1, 18))                        # INCART: 257 Hz, 3 min here
    _challenge_record(root / "incart", "I0001", incart, 257)
    _challenge_record(root / "ningbo", "JS20001", resample_signal(src[2], 100, 500), 500)
    (root / "ningbo" / "JS20001.hea").unlink()                                        # a Ningbo .mat without header
    _challenge_record(root / "ningbo", "JS20002", resample_signal(src[2], 100, 500), 500)
    b = PhysioNetChallenge(data_dir=str(root), cache_dir=cache)
    b.download_and_prepare()
    ds = b.as_dataset("train").with_format("numpy")
    got = {ex["record_id"]: ex for ex in ds}
    assert set(got) == {"S0001", "I0001", "JS20002"}
    assert (got["S0001"]["source"], got["S0001"]["sampling_rate"], got["S0001"]["n_samples"]) == ("PTB", 1000, 10000)
    assert (got["I0001"]["source"], got["I0001"]["sampling_rate"]) == ("INCART", 257)
    assert got["I0001"]["n_samples"] == incart.shape[1]
    np.testing.assert_allclose(got["I0001"]["signal"], np.round(incart * 1000) / 1000, atol=1e-6)
    assert [(s.record, s.reason) for s in b.skipped] == [("ningbo/JS20001.mat", "MissingFileError")]
    assert "no header" in b.skipped[0].error


# ------------------------------------------------------------------------------------------ recipes
FAST = ["--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8", "--logging_steps", "1",
        "--disable_tqdm", "true", "--use_cpu", "true", "--max_steps", "2", "--eval_strategy", "steps",
        "--save_strategy", "steps", "--eval_steps", "2", "--save_steps", "2", "--report_to", "none"]


@pytest.mark.slow
def test_pretrain_on_mimic_plus_code15_and_finetune_on_code15(mimic, code15, tmp_path):
    """``--dataset mimic-iv-ecg`` with ``--extra_sources code15:DIR`` pretrains; ``--dataset code15`` fine-tunes on
    its six labels; both through the CLI argument parsing of the recipes."""
    from ecgnat_hf.recipes.finetune import main as finetune
    from ecgnat_hf.recipes.pretrain import main as pretrain

    mroot, *_ = mimic
    croot, *_ = code15
    cache = str(tmp_path / "hf")
    pre = tmp_path / "pre"
    res = pretrain(["--preset", "tiny", "--dataset", "mimic-iv-ecg", "--data_dir", str(mroot), "--extra_sources",
                    f"code15:{croot}", "--cache_dir", cache, "--output_dir", str(pre), *FAST])
    assert res["global_step"] == 2 and res["sources"] == ["MIMIC-IV-ECG", "CODE-15 %"]
    # every MIMIC train record and every CODE-15 exam outside its test split is one 10 s window
    m = MIMICIVECG(data_dir=str(mroot), cache_dir=cache, validation_fraction=0.1, test_fraction=0.1)
    c = CODE15(data_dir=str(croot), cache_dir=cache, validation_fraction=0.1, test_fraction=0.1)
    m.download_and_prepare()
    c.download_and_prepare()
    n_code = sum(len(d) for s, d in c.as_dataset().items() if s != "test")
    assert res["n_train"] == len(m.as_dataset("train")) + n_code
    run = json.loads((pre / "run_arguments.json").read_text())["DataArguments"]
    assert run["dataset"] == "mimic-iv-ecg" and run["extra_sources"] == [f"code15:{croot}"]
    ft = tmp_path / "ft"
    res = finetune(["--model_name_or_path", str(pre), "--dataset", "code15", "--data_dir", str(croot),
                    "--validation_fraction", "0.25", "--test_fraction", "0.25", "--cache_dir", cache,
                    "--output_dir", str(ft), *FAST])
    assert res["global_step"] == 2
    config = json.loads((ft / "config.json").read_text())
    assert list(config["id2label"].values()) == list(CODE15_LABELS)


def test_numpy_writer_writes_what_wfdb_writes(tmp_path):
    """The fast writer (for benchmark corpora) gives the same samples and header fields as ``wfdb.wrsamp``."""
    sigs = [s for _, s in bundled_signals(500, 2)]
    sigs[1][CANON.index("V4"), 10:20] = np.nan
    a = write_mimic_iv_ecg(tmp_path / "a", sigs, [10000001, 10000002], writer="wfdb")
    b = write_mimic_iv_ecg(tmp_path / "b", sigs, [10000001, 10000002], writer="numpy")
    assert a == b
    for p in a:
        ra, rb = wfdb.rdrecord(str(tmp_path / "a" / p)), wfdb.rdrecord(str(tmp_path / "b" / p))
        np.testing.assert_array_equal(ra.d_signal if ra.d_signal is not None else ra.adc(), rb.adc())
        assert (ra.sig_name, ra.fs, ra.sig_len, ra.adc_gain, ra.checksum, ra.init_value) == \
               (rb.sig_name, rb.fs, rb.sig_len, rb.adc_gain, rb.checksum, rb.init_value)
        assert (tmp_path / "a" / (p + ".dat")).read_bytes() == (tmp_path / "b" / (p + ".dat")).read_bytes()
    assert (tmp_path / "a" / "record_list.csv").read_text() == (tmp_path / "b" / "record_list.csv").read_text()
