"""Physical units, gains, baselines and lead polarity (issue 25): built from the bundled real PTB-XL record by
rewriting its header. Each bad calibration is refused with a typed error naming the record and the channel, or
read and flagged; never read silently at the wrong scale or sign."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from ecgnat_hf import ECGNATFeatureExtractor
from ecgnat_hf.data import HeaderError, InvalidSignalError, LeadNameError, SamplingRateError, read_matlab_record
from ecgnat_hf.data import read_record
from ecgnat_hf.data.errors import LabelFileError, UnitError
from ecgnat_hf.data.labels import read_label_table
from ecgnat_hf.data.quality import check_signal_quality
from ecgnat_hf.feature_extraction_ecgnat import ECGInputError, ECGUnusableSignalError
from ecgnat_hf.sample_data import sample_dir

SRC = sample_dir() / "records100" / "00000" / "00001_lr"


def _copy(tmp_path: Path, edit=None, name: str = "00001_lr") -> Path:
    """The bundled record in ``tmp_path``; ``edit(list of header tokens per signal line) -> tokens``."""
    for ext in (".hea", ".dat"):
        shutil.copy(SRC.with_suffix(ext), tmp_path / (name + ext))
    if edit is not None:
        hea = tmp_path / (name + ".hea")
        lines = hea.read_text().splitlines()
        lines[1:13] = [" ".join(edit(i, line.split())) for i, line in enumerate(lines[1:13])]
        hea.write_text("\n".join(lines) + "\n")
    return tmp_path / name


def _with_gain(text: str, leads=range(12)):
    def edit(i, toks):
        if i in leads:
            toks[2] = text
        return toks
    return edit


@pytest.fixture(scope="module")
def clean():
    return read_record(SRC)


# ----------------------------------------------------------------------------------------- units
@pytest.mark.parametrize("unit", ["mmHg", "furlong", "unknown", "%", "degC"])
def test_non_voltage_unit_on_an_ecg_lead_is_refused(tmp_path, unit):
    rec = _copy(tmp_path, lambda i, t: t[:2] + [t[2].replace("/mV", f"/{unit}")] + t[3:] if i == 3 else t)
    with pytest.raises(UnitError) as err:
        read_record(rec)
    msg = str(err.value)
    assert str(rec) in msg and "signal 4 (AVR)" in msg and repr(unit) in msg
    # read as written on request, the unit kept in the metadata
    r = read_record(rec, check_units=False)
    assert r.metadata["units"][3] == unit and r.metadata["units_converted_to_mV"][3] is False


def test_non_voltage_unit_on_a_non_ecg_channel_is_read(tmp_path, clean):
    """A blood-pressure channel in mmHg beside ECG leads: not an ECG lead, read unconverted, not refused."""
    rec = _copy(tmp_path, lambda i, t: t[:2] + [t[2].replace("/mV", "/mmHg")] + t[3:8] + ["ABP"] if i == 11 else t)
    r = read_record(rec)
    assert r.lead_names[11] == "ABP" and r.metadata["units_converted_to_mV"][11] is False
    np.testing.assert_allclose(r.signal[:11], clean.signal[:11])


@pytest.mark.parametrize("unit,factor", [("mV", 1), ("mv", 1), ("MV", 1), ("millivolts", 1), ("uV", 1e-3),
                                         ("µV", 1e-3), ("μV", 1e-3), ("Âµv", 1e-3), ("microvolt", 1e-3),
                                         ("V", 1e3), ("nV", 1e-6)])
def test_voltage_units_convert_to_mv(tmp_path, clean, unit, factor):
    rec = _copy(tmp_path, lambda i, t: t[:2] + [t[2].replace("/mV", f"/{unit}")] + t[3:])
    np.testing.assert_allclose(read_record(rec).signal, clean.signal * factor, rtol=1e-6)


# ----------------------------------------------------------------------------------------- gains and baselines
def test_negative_gain_is_read_inverted_and_flagged(tmp_path, clean):
    rec = _copy(tmp_path, _with_gain("-1000/mV", leads=[0]))
    r = read_record(rec)
    np.testing.assert_allclose(r.signal[0], -clean.signal[0])  # as wfdb reads it
    assert r.metadata["negative_gain_leads"] == ["I"]
    assert any("lead I: negative gain" in f for f in r.metadata["calibration_flags"])
    # and the signal itself says so: lead I is the negative of II - III
    flags = check_signal_quality(r.signal, r.sampling_rate, r.lead_names).flags
    assert any(f.startswith("lead I inverted") for f in flags), flags


def test_every_gain_negative_is_flagged_by_polarity(tmp_path):
    r = read_record(_copy(tmp_path, _with_gain("-1000/mV")))
    assert len(r.metadata["negative_gain_leads"]) == 12
    flags = check_signal_quality(r.signal, r.sampling_rate, r.lead_names).flags
    assert any(f.startswith("lead I negative and aVR positive") for f in flags), flags


def test_clean_record_has_no_polarity_flag(clean):
    assert check_signal_quality(clean.signal, clean.sampling_rate, clean.lead_names).flags == []


def test_zero_gain_is_flagged(tmp_path, clean):
    r = read_record(_copy(tmp_path, _with_gain("0/mV", leads=[2])))
    assert r.metadata["zero_gain_leads"] == ["III"]
    assert any("lead III: gain 0" in f and "200" in f for f in r.metadata["calibration_flags"])
    np.testing.assert_allclose(r.signal[2], clean.signal[2] * 1000 / 200, rtol=1e-6)


@pytest.mark.parametrize("gain", ["1000(1e37)/mV", "1000(-3000000000)/mV"])
def test_absurd_baseline_is_refused(tmp_path, gain):
    rec = _copy(tmp_path, _with_gain(gain, leads=[0]))
    with pytest.raises(HeaderError, match=r"signal line 1: baseline .* beyond any ADC's range") as err:
        read_record(rec)
    assert str(rec) in str(err.value)


def test_gain_that_overflows_float32_is_refused(tmp_path):
    rec = _copy(tmp_path, _with_gain("1e-300/mV", leads=[5]))
    with pytest.raises(InvalidSignalError, match=r"signal 6 \(AVF\) reaches .*e\+\d+ mV \(gain 1e-300") as err:
        read_record(rec)
    assert len(str(err.value)) < 300


def test_amplitude_messages_are_readable(clean):
    for factor, start in ((1e3, "amplitude suggests microvolts"), (1e30, "amplitude implausible for an ECG")):
        flags = check_signal_quality(clean.signal.astype(np.float64) * factor, 100, clean.lead_names).flags
        flag = next(f for f in flags if f.startswith(start))
        assert len(flag) < 120, flag
    fe = ECGNATFeatureExtractor(sampling_rate=100, window_s=10, scaling="center")
    with pytest.raises(ECGUnusableSignalError, match="amplitude implausible"):
        fe(clean.signal.astype(np.float64) * 1e30, sampling_rate=100, lead_names=clean.lead_names)


# ----------------------------------------------------------------------------------------- messages
def test_matlab_sampling_rate_not_a_number_names_the_file(tmp_path):
    m = tmp_path / "x.mat"
    scipy.io.savemat(str(m), {"val": read_record(SRC).signal[:2]})
    with pytest.raises(SamplingRateError) as err:
        read_matlab_record(m, sampling_rate="abc", lead_names=["I", "II"])
    assert str(m) in str(err.value) and "'abc'" in str(err.value)
    with pytest.raises(LeadNameError, match=r"lead_names\[0\] is None"):
        read_matlab_record(m, sampling_rate=100, lead_names=[None, "II"])
    with pytest.raises(SamplingRateError, match="--sampling_rate"):
        read_matlab_record(m)


def test_lead_names_with_none_for_one_record(clean):
    fe = ECGNATFeatureExtractor(sampling_rate=100, window_s=10)
    with pytest.raises(ECGInputError, match=r"lead_names\[0\] is None: every lead needs a name") as err:
        fe(clean.signal[:2], sampling_rate=100, lead_names=[None, "II"])
    assert "lists given" not in str(err.value)
    out = fe([clean.signal[:2], clean.signal[:2]], sampling_rate=100, lead_names=[["I", "II"], ["I", "II"]])
    assert out["input_values"].shape[0] == 2


def test_labels_csv_with_bom_in_any_encoding(tmp_path):
    f = tmp_path / "labels.csv"
    body = "record,labels\nr00,NORM\nr01,Schrittmacher \u00e4\n".encode("cp1252")
    f.write_bytes(b"\xef\xbb\xbf" + body)
    with pytest.raises(LabelFileError) as err:
        read_label_table(f)
    at = f.read_bytes().index(b"\xe4")
    assert f"byte 0xe4 at offset {at}" in str(err.value) and "line 3" in str(err.value)
    for enc in ("cp1252", "latin-1"):
        table = read_label_table(f, encoding=enc)  # the BOM is not part of the first column's name
        assert set(table.rows) == {"r00", "r01"} and table.rows["r01"]["labels"] == ["Schrittmacher \u00e4"]
