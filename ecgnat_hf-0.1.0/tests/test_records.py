"""Record reading: real files compared against wfdb, Challenge header quirks, CPSC MATLAB, broken inputs."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import wfdb

from ecgnat_hf.data import (
    CANONICAL_LEADS,
    ECGDataError,
    ECGRecord,
    HeaderError,
    InvalidSignalError,
    LeadNameError,
    MissingFileError,
    MissingSamplingRateError,
    SamplingRateError,
    SignalMismatchError,
    TruncatedSignalError,
    lead_indices,
    normalize_lead_name,
    read_header,
    read_matlab_record,
    read_record,
)
from ecgnat_hf.feature_extraction_ecgnat import ECGInputError, ECGLeadNameError

_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "v": 1e3}


def _wfdb_mv(path) -> np.ndarray:
    """Reference: wfdb's physical signal, (leads, samples), converted to mV from the header units."""
    r = wfdb.rdrecord(str(path))
    factors = np.array([_TO_MV[u.lower()] for u in r.units])
    return (r.p_signal * factors).T.astype(np.float32)


def _parse_comments(hea: Path) -> dict[str, str]:
    """Independent parse of '# Key: value' lines, for checking the reader's metadata."""
    out = {}
    for line in hea.read_text().splitlines():
        if line.startswith("#") and ":" in line:
            key, value = line[1:].split(":", 1)
            out[key.strip().lower()] = value.strip()
    return out


# --------------------------------------------------------------------------- shared real data
@pytest.mark.shared_data
@pytest.mark.parametrize(
    "rel, fs, n_leads",
    [
        ("ptbxl-subset/records100/00000/00001_lr", 100, 12),
        ("ptbxl-subset/records500/00000/00001_hr", 500, 12),
        ("cinc2021-sample/E07500", 500, 12),
        ("cinc2021-sample/HR06001", 500, 12),  # lowercase "/mv" units
        ("cinc2021-sample/JS20001", 500, 12),
        ("mitdb/100", 360, 2),  # format 212
        ("ptbdb/s0010_re", 1000, 15),  # two signal files (.dat and .xyz)
    ],
)
def test_signal_matches_wfdb(shared_data, rel, fs, n_leads):
    base = shared_data / rel
    rec = read_record(base)
    ref = _wfdb_mv(base)
    assert isinstance(rec, ECGRecord)
    assert rec.signal.dtype == np.float32 and rec.signal.shape == ref.shape
    assert rec.signal.shape[0] == n_leads
    np.testing.assert_array_equal(rec.signal, ref)
    assert rec.sampling_rate == fs
    assert rec.lead_names == wfdb.rdheader(str(base)).sig_name
    assert rec.record_id == base.name and Path(rec.path) == base


@pytest.mark.shared_data
@pytest.mark.parametrize("suffix", ["", ".hea", ".dat"])
def test_path_with_or_without_extension(shared_data, suffix):
    base = shared_data / "ptbxl-subset/records100/00000/00001_lr"
    rec = read_record(str(base) + suffix)
    np.testing.assert_array_equal(rec.signal, _wfdb_mv(base))


@pytest.mark.shared_data
def test_lead_names_mitdb_and_ptb(shared_data):
    mit = read_record(shared_data / "mitdb/100")
    assert mit.lead_names == ["MLII", "V5"]
    assert list(lead_indices(mit.lead_names)) == [1, 10]
    ptb = read_record(shared_data / "ptbdb/s0010_re")
    assert ptb.lead_names[:3] == ["i", "ii", "iii"] and ptb.lead_names[-3:] == ["vx", "vy", "vz"]
    mapping = lead_indices(ptb.lead_names, allow_extra=True)
    assert list(mapping) == list(range(12)) and mapping.extra == ["vx", "vy", "vz"]
    assert mapping.positions == list(range(12))
    with pytest.raises(LeadNameError, match="vx"):
        lead_indices(ptb.lead_names)
    with pytest.raises(LeadNameError, match="vx"):
        read_record(shared_data / "ptbdb/s0010_re", validate_leads=True)
    # PTB comments: lowercase keys, free text kept raw
    assert ptb.metadata["age"] == 81.0 and ptb.metadata["sex"] == "female"
    assert any("Myocardial infarction" in c for c in ptb.metadata["comments"])


@pytest.mark.shared_data
def test_channel_selection(shared_data):
    mit = read_record(shared_data / "mitdb/100", channel_names=["V5", "II"])  # "II" finds "MLII"
    full = read_record(shared_data / "mitdb/100")
    assert mit.lead_names == ["V5", "MLII"]
    np.testing.assert_array_equal(mit.signal, full.signal[[1, 0]])
    with pytest.raises(LeadNameError, match="V1"):
        read_record(shared_data / "mitdb/100", channel_names=["V1"])


@pytest.mark.shared_data
def test_cinc_metadata_against_header_text(shared_data):
    for name in ("E07500", "JS20001", "HR06001"):
        base = shared_data / "cinc2021-sample" / name
        expected = _parse_comments(base.with_suffix(".hea"))
        rec = read_record(base)
        assert rec.metadata["age"] == float(expected["age"])
        assert rec.metadata["sex"] == expected["sex"]
        assert rec.metadata["dx"] == expected["dx"].split(",")
        assert all(isinstance(code, str) for code in rec.metadata["dx"])
        hdr = read_header(base)
        assert hdr["dx"] == rec.metadata["dx"] and hdr["sampling_rate"] == 500 and hdr["sig_len"] == 5000
        assert hdr["lead_names"] == list(CANONICAL_LEADS)


@pytest.mark.shared_data
def test_cpsc2018_matlab(shared_data):
    path = shared_data / "cpsc2018-sample/A1980.mat"
    rec = read_record(path)
    raw = scipy.io.loadmat(str(path))["ECG"][0, 0]
    np.testing.assert_array_equal(rec.signal, raw["data"].astype(np.float32))
    assert rec.sampling_rate == 500 and rec.lead_names == list(CANONICAL_LEADS)
    assert rec.metadata["sex"] == str(raw["sex"][0]) and rec.metadata["age"] == float(raw["age"][0, 0])
    assert rec.metadata["layout"] == "cpsc2018"


@pytest.mark.shared_data
def test_cpsc2019_matlab_shared(shared_data):
    path = sorted((shared_data / "cpsc2019-sample/data").glob("*.mat"))[0]
    rec = read_matlab_record(path)
    assert rec.signal.shape == (1, 5000) and rec.sampling_rate == 500
    np.testing.assert_array_equal(rec.signal[0], scipy.io.loadmat(str(path))["ecg"][:, 0].astype(np.float32))


@pytest.mark.shared_data
def test_reading_is_fast(shared_data):
    import time

    files = sorted((shared_data / "ptbxl-subset/records100").glob("*/*.hea"))[:200]
    t0 = time.perf_counter()
    for f in files:
        read_record(f)
    rate = len(files) / (time.perf_counter() - t0)
    assert rate > 300, f"{rate:.0f} records/s on one core"


# --------------------------------------------------------------------------- own fixtures
def test_cinc2021_fixture_matches_wfdb(fixtures_dir):
    for name in ("E07500", "HR06001"):
        base = fixtures_dir / "cinc2021" / name
        rec = read_record(base.with_suffix(".mat"))  # .mat with a header beside it: WFDB route
        np.testing.assert_array_equal(rec.signal, _wfdb_mv(base))
        assert rec.metadata["source"] == "wfdb"
        expected = _parse_comments(base.with_suffix(".hea"))
        assert rec.metadata["dx"] == expected["dx"].split(",")


def test_challenge_2020_quirky_header(fixtures_dir):
    """Record line 'Q0001.mat 12 500 1000 05-Feb-2020 11:39:16', format '16+24', gain '2000(100)/mv'."""
    base = fixtures_dir / "cinc2020_quirks" / "Q0001"
    with pytest.raises(Exception):  # wfdb itself rejects this header: the reason for our parser
        wfdb.rdheader(str(base))
    rec = read_record(base)
    ref = read_record(fixtures_dir / "cinc2021" / "E07500")
    assert rec.signal.shape == (12, 1000) and rec.sampling_rate == 500
    # header gain and baseline are trusted: (2*v + 100 - 100) / 2000 == v / 1000
    np.testing.assert_allclose(rec.signal, ref.signal[:, :1000], rtol=0, atol=1e-7)
    assert rec.record_id == "Q0001"
    assert rec.metadata["base_date"] == "05-Feb-2020" and rec.metadata["base_time"] == "11:39:16"
    assert rec.metadata["age"] == 78.0 and rec.metadata["sex"] == "Male"
    assert rec.metadata["dx"] == ["67741000119109", "426177001"]
    assert rec.metadata["header_quirks"]
    # the digital values decode the same way scipy reads the MATLAB v4 matrix
    val = scipy.io.loadmat(str(base.with_suffix(".mat")))["val"].astype(np.float64)
    np.testing.assert_array_equal(rec.signal, ((val - 100) / 2000).astype(np.float32))


def test_standard_time_then_date_and_uv_units(fixtures_dir, tmp_path):
    src = fixtures_dir / "cinc2021" / "E07500"
    shutil.copy(src.with_suffix(".mat"), tmp_path / "E07500.mat")
    lines = src.with_suffix(".hea").read_text().splitlines()
    lines[0] = "E07500 12 500 5000 11:39:16 05/02/2020"
    lines[1:13] = [ln.replace("1000.0(0)/mV", "1.0(0)/uV") for ln in lines[1:13]]
    (tmp_path / "E07500.hea").write_text("\n".join(lines) + "\n")
    rec = read_record(tmp_path / "E07500")
    ref = read_record(src)
    np.testing.assert_allclose(rec.signal, ref.signal, rtol=1e-6)  # µV converted to mV
    assert rec.metadata["units"][0] == "uV" and rec.metadata["base_date"] == "05/02/2020"


def test_cpsc2019_fixture(fixtures_dir):
    rec = read_record(fixtures_dir / "cpsc2019" / "data_00014.mat")
    assert rec.signal.shape == (1, 5000) and rec.sampling_rate == 500
    assert rec.lead_names == ["II"] and rec.metadata["assumed"]
    raw = scipy.io.loadmat(str(fixtures_dir / "cpsc2019" / "data_00014.mat"))["ecg"]
    np.testing.assert_array_equal(rec.signal[0], raw[:, 0].astype(np.float32))
    peaks = scipy.io.loadmat(str(fixtures_dir / "cpsc2019" / "R_00014.mat"))["R_peak"].ravel()
    assert peaks.max() < rec.n_samples


def test_normalize_lead_name_aliases():
    assert normalize_lead_name("MLII") == "II"
    assert normalize_lead_name(" avr") == "aVR"
    assert normalize_lead_name("V1 ") == "V1"
    assert normalize_lead_name("D3") == "III"
    with pytest.raises(LeadNameError, match="CM5"):
        normalize_lead_name("CM5", record="rec1")


# --------------------------------------------------------------------------- broken inputs
@pytest.fixture
def cinc_copy(fixtures_dir, tmp_path) -> Path:
    for ext in (".hea", ".mat"):
        shutil.copy(fixtures_dir / "cinc2021" / f"E07500{ext}", tmp_path / f"E07500{ext}")
    return tmp_path / "E07500"


@pytest.fixture
def dat_copy(fixtures_dir, tmp_path) -> Path:
    """A .dat record made from the cinc fixture (same digital data, format 16, no byte offset)."""
    val = scipy.io.loadmat(str(fixtures_dir / "cinc2021" / "E07500.mat"))["val"]
    val.T.astype("<i2").tofile(tmp_path / "rec01.dat")
    lines = (fixtures_dir / "cinc2021" / "E07500.hea").read_text().splitlines()
    lines[0] = lines[0].replace("E07500", "rec01")
    lines[1:13] = [ln.replace("E07500.mat 16x1+24", "rec01.dat 16") for ln in lines[1:13]]
    (tmp_path / "rec01.hea").write_text("\n".join(lines) + "\n")
    rec = read_record(tmp_path / "rec01")
    np.testing.assert_array_equal(rec.signal, read_record(fixtures_dir / "cinc2021" / "E07500").signal)
    return tmp_path / "rec01"


def _raises(exc_type, path, **kw) -> ECGDataError:
    with pytest.raises(exc_type) as info:
        read_record(path, **kw)
    err = info.value
    assert Path(path).stem in str(err), str(err)
    assert isinstance(err, ECGDataError) and err.problem in str(err)
    return err


def test_truncated_dat(dat_copy):
    dat = dat_copy.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:50_000])
    err = _raises(TruncatedSignalError, dat_copy)
    assert "truncated" in str(err) and "rec01.dat" in str(err)
    assert isinstance(err, ValueError)


def test_truncated_mat(cinc_copy):
    mat = cinc_copy.with_suffix(".mat")
    mat.write_bytes(mat.read_bytes()[:-1000])
    _raises(TruncatedSignalError, cinc_copy)


def test_missing_header(cinc_copy):
    cinc_copy.with_suffix(".hea").unlink()
    err = _raises(MissingFileError, cinc_copy.with_name("E07500.hea"))
    assert ".hea" in str(err) and isinstance(err, FileNotFoundError)


def test_missing_signal_file(dat_copy):
    dat_copy.with_suffix(".dat").unlink()
    err = _raises(MissingFileError, dat_copy)
    assert "rec01.dat" in str(err)


def test_missing_mat_signal_file(cinc_copy):
    cinc_copy.with_suffix(".mat").unlink()
    _raises(MissingFileError, cinc_copy)


def test_invalid_sample_value_is_nan(dat_copy):
    dat = dat_copy.with_suffix(".dat")
    raw = np.fromfile(dat, dtype="<i2")
    raw[12 * 100 + 3] = -32768  # WFDB "invalid sample" for format 16 -> NaN
    raw.tofile(dat)
    # the edit also breaks the header's checksum: verify=False reads what the file holds
    _raises(SignalMismatchError, dat_copy)
    err = _raises(InvalidSignalError, dat_copy, verify=False)
    assert "aVR" in str(err) and "NaN" in str(err)
    rec = read_record(dat_copy, check_finite=False, verify=False)
    assert np.isnan(rec.signal[3, 100])


def test_nan_in_matlab_file(tmp_path):
    sig = np.random.default_rng(0).normal(size=(5000, 1))
    sig[10, 0] = np.nan
    scipy.io.savemat(str(tmp_path / "data_nan.mat"), {"ecg": sig})
    err = _raises(InvalidSignalError, tmp_path / "data_nan.mat")
    assert "data_nan" in str(err)


def test_inf_in_matlab_file(tmp_path):
    sig = np.zeros((12, 1000))
    sig[5, 7] = np.inf
    scipy.io.savemat(str(tmp_path / "plain.mat"), {"val": sig})
    with pytest.raises(InvalidSignalError, match="plain"):
        read_matlab_record(tmp_path / "plain.mat", sampling_rate=500, lead_names=list(CANONICAL_LEADS))
    with pytest.raises(MissingSamplingRateError, match="sampling_rate"):
        read_matlab_record(tmp_path / "plain.mat")


def _edit_signal_line(path: Path, index: int, old: str, new: str) -> None:
    hea = path.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    parts = lines[index].rsplit(" ", 1)
    assert parts[1] == old
    lines[index] = parts[0] + " " + new
    hea.write_text("\n".join(lines) + "\n")


def test_duplicate_lead_name(cinc_copy):
    _edit_signal_line(cinc_copy, 3, "III", "II")
    err = _raises(LeadNameError, cinc_copy)
    assert "duplicate" in str(err) and "'II'" in str(err)
    assert isinstance(err, ValueError) and isinstance(err, ECGLeadNameError) and isinstance(err, ECGInputError)


def test_alias_duplicate_lead_name(cinc_copy):
    _edit_signal_line(cinc_copy, 3, "III", "MLII")  # MLII is lead II, already present
    _raises(LeadNameError, cinc_copy)


def test_unknown_lead_name(cinc_copy):
    _edit_signal_line(cinc_copy, 7, "V1", "CM5")
    rec = read_record(cinc_copy)  # allowed unless validation is asked for
    assert rec.lead_names[6] == "CM5"
    err = _raises(LeadNameError, cinc_copy, validate_leads=True)
    assert "CM5" in str(err)


def test_garbage_header(cinc_copy):
    cinc_copy.with_suffix(".hea").write_text("this is not a header\n")
    err = _raises(HeaderError, cinc_copy)
    assert "E07500" in str(err)


def test_binary_header(cinc_copy):
    cinc_copy.with_suffix(".hea").write_bytes(bytes(range(256)))
    _raises(HeaderError, cinc_copy)


def test_empty_header(cinc_copy):
    cinc_copy.with_suffix(".hea").write_text("# only a comment\n")
    _raises(HeaderError, cinc_copy)


def test_missing_signal_lines(cinc_copy):
    hea = cinc_copy.with_suffix(".hea")
    hea.write_text("\n".join(hea.read_text().splitlines()[:5]) + "\n")
    err = _raises(HeaderError, cinc_copy)
    assert "12 signals" in str(err)


@pytest.mark.parametrize("record_line", ["E07500 12", "E07500 12 05-Feb-2020 11:39:16"])
def test_missing_sampling_rate(cinc_copy, record_line):
    hea = cinc_copy.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    lines[0] = record_line
    hea.write_text("\n".join(lines) + "\n")
    err = _raises(HeaderError, cinc_copy)
    assert isinstance(err, SamplingRateError) and isinstance(err, MissingSamplingRateError)
    assert "sampling rate" in str(err)
    with pytest.raises(HeaderError):
        read_header(cinc_copy)


def test_zero_sampling_rate(cinc_copy):
    hea = cinc_copy.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    lines[0] = "E07500 12 0 5000"
    hea.write_text("\n".join(lines) + "\n")
    _raises(SamplingRateError, cinc_copy)


def test_errors_pickle():
    err = TruncatedSignalError("/data/rec", "file too short")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is TruncatedSignalError and str(again) == "/data/rec: file too short"
    assert again.record == "/data/rec" and again.problem == "file too short"


def test_read_header_is_header_only(cinc_copy):
    cinc_copy.with_suffix(".mat").unlink()  # no signal I/O: still works
    hdr = read_header(cinc_copy)
    assert hdr["record_id"] == "E07500" and hdr["n_sig"] == 12 and hdr["sampling_rate"] == 500.0
    assert hdr["age"] == 78.0 and hdr["sex"] == "Male" and hdr["dx"] == ["67741000119109", "426177001"]
    assert hdr["files"] == ["E07500.mat"] and hdr["units"] == ["mV"] * 12


@pytest.mark.parametrize("rel", ["cinc2020_quirks/Q0001", "cinc2021/HR06001"])
def test_wfdb_fallback_path(fixtures_dir, monkeypatch, rel):
    """Formats we do not decode go through wfdb.rdrecord; a quirky header is rewritten for it."""
    from ecgnat_hf.data import records

    fast = read_record(fixtures_dir / rel)
    monkeypatch.setattr(records, "_needs_wfdb", lambda header: "forced in test")
    slow = read_record(fixtures_dir / rel)
    np.testing.assert_allclose(slow.signal, fast.signal, rtol=0, atol=1e-7)
    assert slow.lead_names == fast.lead_names and slow.metadata["dx"] == fast.metadata["dx"]


# ------------------------------------------------------------------------------- issue 8: no silent wrong answers
def _v73(path, arr):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w", userblock_size=512) as f:
        f["val"] = arr.T  # MATLAB writes matrices transposed into HDF5
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116, b" "))


@pytest.mark.parametrize("how", ["v5", "v5_other_name", "v5_double", "v5_transposed", "v5_compressed",
                                 "v4_other_name", "v4_double", "v4_two_matrices", "v73"])
def test_resaved_matlab_signal_file_reads_the_same_leads(cinc_copy, how):
    """A Challenge .mat re-saved by MATLAB/scipy (another version, variable name, precision or orientation)
    reads exactly as the original; before, the .hea byte offset 24 was trusted and the leads came out
    scrambled with header bytes as the first samples."""
    ref = read_record(cinc_copy)
    mat = cinc_copy.with_suffix(".mat")
    val = scipy.io.loadmat(str(mat))["val"]
    writers = {
        "v5": lambda: scipy.io.savemat(str(mat), {"val": val}),
        "v5_other_name": lambda: scipy.io.savemat(str(mat), {"data": val}),
        "v5_double": lambda: scipy.io.savemat(str(mat), {"val": val.astype(np.float64)}),
        "v5_transposed": lambda: scipy.io.savemat(str(mat), {"val": val.T}),
        "v5_compressed": lambda: scipy.io.savemat(str(mat), {"val": val}, do_compression=True),
        "v4_other_name": lambda: scipy.io.savemat(str(mat), {"signal": val}, format="4"),
        "v4_double": lambda: scipy.io.savemat(str(mat), {"val": val.astype(np.float64)}, format="4"),
        "v4_two_matrices": lambda: scipy.io.savemat(str(mat), {"a": np.ones((3, 3)), "val": val}, format="4"),
        "v73": lambda: _v73(mat, val),
    }
    writers[how]()
    rec = read_record(cinc_copy)
    assert rec.lead_names == ref.lead_names
    np.testing.assert_array_equal(rec.signal, ref.signal)


def test_foreign_or_damaged_matlab_signal_file_is_refused(cinc_copy, fixtures_dir, tmp_path):
    mat = cinc_copy.with_suffix(".mat")
    val = scipy.io.loadmat(str(mat))["val"]
    scipy.io.savemat(str(mat), {"val": val / 1000.0})  # re-saved in mV: not digital samples
    assert "non-integer" in str(_raises(HeaderError, cinc_copy))
    scipy.io.savemat(str(mat), {"val": val[:6]}, format="4")  # 6 leads for a 12-lead header
    assert "6x5000" in str(_raises(SignalMismatchError, cinc_copy))
    mat.write_bytes(np.random.default_rng(0).bytes(120_024))  # not a MATLAB file at all
    assert "not a MATLAB" in str(_raises(HeaderError, cinc_copy))
    mat.write_bytes(b"")
    _raises(TruncatedSignalError, cinc_copy)
    # another record's signal file with the same layout: the header's first samples / checksums differ
    other = sorted((fixtures_dir / "cinc2021").glob("*.mat"))
    other = [p for p in other if p.stem != "E07500"] or [fixtures_dir / "cinc2020_quirks" / "Q0001.mat"]
    scipy.io.savemat(str(mat), {"val": np.roll(val, 1, axis=0)}, format="4")  # leads re-ordered
    assert "does not match the header" in str(_raises(SignalMismatchError, cinc_copy))


def test_byte_flip_and_swapped_dat_are_detected_by_the_header_checksums(dat_copy):
    dat = dat_copy.with_suffix(".dat")
    good = dat.read_bytes()
    flipped = bytearray(good)
    flipped[5001] ^= 0x10
    dat.write_bytes(bytes(flipped))
    err = _raises(SignalMismatchError, dat_copy)
    assert "checksum" in str(err)
    raw = np.frombuffer(good, dtype="<i2").reshape(-1, 12)
    dat.write_bytes(raw[:, [1, 0] + list(range(2, 12))].tobytes())  # leads I and II swapped
    _raises(SignalMismatchError, dat_copy)
    assert read_record(dat_copy, verify=False).signal.shape == (12, 5000)  # the check can be turned off


def test_empty_path_symlink_loop_and_folder_are_typed(tmp_path):
    for bad in ("", ".", tmp_path):
        with pytest.raises(MissingFileError):
            read_record(bad)
    loop = tmp_path / "loop.hea"
    os.symlink(loop, loop)
    err = _raises(MissingFileError, tmp_path / "loop")
    assert "symbolic" in str(err).lower() or "loop" in str(err).lower()
    (tmp_path / "d.hea").mkdir()
    _raises(MissingFileError, tmp_path / "d")


def _unnamed_copy(dat_copy) -> Path:
    hea = dat_copy.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    lines[1:13] = [" ".join(ln.split()[:8]) for ln in lines[1:13]]  # signal lines without descriptions
    hea.write_text("\n".join(lines) + "\n")
    return dat_copy


def test_record_without_lead_names_reads_and_takes_caller_names(dat_copy):
    ref = read_record(dat_copy)
    rec = read_record(_unnamed_copy(dat_copy))
    assert rec.lead_names == [f"ch{i}" for i in range(12)] and rec.metadata["unnamed_channels"]
    named = read_record(dat_copy, lead_names=ref.lead_names)
    assert named.lead_names == ref.lead_names
    np.testing.assert_array_equal(named.signal, ref.signal)
    renamed = read_record(dat_copy, lead_names={"ch0": "I", "ch1": "II"})
    assert renamed.lead_names[:3] == ["I", "II", "ch2"]
    with pytest.raises(LeadNameError, match="3 lead names"):
        read_record(dat_copy, lead_names=["I", "II", "III"])
    with pytest.raises(LeadNameError, match="no channel 'ECG'"):
        read_record(dat_copy, lead_names={"ECG": "I"})


@pytest.mark.parametrize("rate", ["0.5", "0.001", "1e9"])
def test_implausible_sampling_rate_is_refused(dat_copy, rate):
    hea = dat_copy.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    tok = lines[0].split()
    tok[2] = rate
    lines[0] = " ".join(tok)
    hea.write_text("\n".join(lines) + "\n")
    err = _raises(SamplingRateError, dat_copy)
    assert "implausible sampling rate" in str(err)
    assert read_record(dat_copy, check_sampling_rate=False).sampling_rate == float(rate)


def test_signal_quality_flags_and_refusal(shared_data):
    from ecgnat_hf.data import NoUsableLeadError, QualityThresholds, check_record_quality, check_signal_quality

    # a real Chapman-Ningbo record whose V2, V4 and V6 are all-zero channels
    rec = read_record(shared_data / "cinc2021-sample" / "JS20004")
    report = check_record_quality(rec)
    assert report.unusable_leads == ["V2", "V4", "V6"]
    assert "lead V2 flat (range 0.000 mV)" in report.flags
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5000))
    x[1] = np.clip(x[1] * 3, -1, 1)  # clipped at the rails
    r = check_signal_quality(x, 500, ["I", "II", "III"])
    assert r.usable == [True, False, True] and "lead II saturated" in r.flags[0]
    r = check_signal_quality(x * 1000, 500, ["I", "II", "III"],
                             QualityThresholds(mask_saturated=False))
    assert any("microvolts" in f for f in r.flags) and all(r.usable)
    with pytest.raises(NoUsableLeadError, match="rec7: no usable lead \\(all 2 leads flat\\)") as info:
        check_signal_quality(np.zeros((2, 1000)), 500, ["I", "II"], record="rec7")
    assert isinstance(info.value, ECGDataError) and info.value.report.usable == [False, False]
    with pytest.raises(SamplingRateError):
        check_signal_quality(x, 0.5, ["I", "II", "III"])
    assert check_signal_quality(np.zeros((1, 100)), 500, ["I"], require_usable=False).usable == [False]
    loose = check_signal_quality(x * 1e-3, 500, ["I", "II", "III"], {"flat_range_mv": 1e-4})
    assert loose.usable[0]
