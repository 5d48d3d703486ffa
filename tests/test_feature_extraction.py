"""ECGNATFeatureExtractor: lead mapping, resampling, windows, scaling, round trip, errors."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
import scipy.signal
import torch
from transformers import BatchFeature

from ecgnat_hf.data import LeadNameError, read_record
from ecgnat_hf.feature_extraction_ecgnat import (
    CANONICAL_LEADS,
    ECGInputError,
    ECGLeadNameError,
    ECGNATFeatureExtractor,
    ECGUnusableSignalError,
    QualityThresholds,
    check_signal_quality,
    normalize_lead_name,
)


def _rng_signal(leads=12, samples=5000, seed=0):
    return np.random.default_rng(seed).normal(size=(leads, samples))


@pytest.mark.parametrize(
    "alias, canonical",
    [("MLII", "II"), ("mlii", "II"), ("avr", "aVR"), ("AVR", "aVR"), ("aVL", "aVL"), ("V1 ", "V1"),
     (" v6", "V6"), ("i", "I"), ("III", "III"), ("D2", "II"), ("Lead II", "II"), ("lead_v3", "V3")],
)
def test_alias_mapping(alias, canonical):
    assert normalize_lead_name(alias) == canonical


@pytest.mark.parametrize("bad", ["CM5", "MV5", "X", "vx", "V7", "", "ECG"])
def test_unknown_alias_raises(bad):
    with pytest.raises(ECGLeadNameError) as info:
        normalize_lead_name(bad)
    assert repr(bad) in str(info.value) and isinstance(info.value, ValueError)


def test_lead_mask_and_order():
    fe = ECGNATFeatureExtractor(scaling="none", quality_check=False)  # constant leads: placement only
    x = np.stack([np.full(5000, 1.0), np.full(5000, 2.0), np.full(5000, 3.0)])
    out = fe(x, sampling_rate=500, lead_names=["V1 ", "mlii", "avr"])
    assert out["input_values"].shape == (1, 12, 5000)
    np.testing.assert_array_equal(out["lead_mask"][0], [0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0])
    v = out["input_values"][0]
    assert (v[1] == 2).all() and (v[3] == 3).all() and (v[6] == 1).all()
    assert (v[[0, 2, 4, 5, 7, 8, 9, 10, 11]] == 0).all()  # missing leads are zeros


def test_unnamed_12_lead_signal_taken_in_canonical_order():
    fe = ECGNATFeatureExtractor(scaling="none")
    x = _rng_signal()
    out = fe(x, sampling_rate=500)
    np.testing.assert_allclose(out["input_values"][0], x.astype(np.float32))
    assert out["lead_mask"].sum() == 12


@pytest.mark.shared_data
def test_mitdb_resampling_matches_scipy(shared_data):
    rec = read_record(shared_data / "mitdb/100")
    x = rec.signal[:, : 360 * 20].astype(np.float64)  # 20 s
    fe = ECGNATFeatureExtractor(scaling="none", mode="pad")
    out = fe(x, sampling_rate=360, lead_names=rec.lead_names)
    frac = Fraction(500, 360)
    ref = scipy.signal.resample_poly(x, frac.numerator, frac.denominator, axis=-1)
    assert out["input_values"].shape == (1, 12, 10000) and ref.shape[-1] == 10000
    np.testing.assert_allclose(out["input_values"][0, 1], ref[0], rtol=1e-5, atol=1e-6)  # MLII -> II
    np.testing.assert_allclose(out["input_values"][0, 10], ref[1], rtol=1e-5, atol=1e-6)  # V5
    np.testing.assert_array_equal(out["lead_mask"][0], [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0])


@pytest.mark.parametrize("src_fs, n_in, n_out", [(360, 3600, 5000), (100, 1000, 5000), (1000, 10000, 5000),
                                                 (257, 2570, 5000), (500, 5000, 5000)])
def test_resampled_length(src_fs, n_in, n_out):
    fe = ECGNATFeatureExtractor(scaling="none", mode="pad")
    out = fe(_rng_signal(12, n_in), sampling_rate=src_fs)
    assert out["input_values"].shape[-1] == n_out
    assert out["attention_mask"].sum() == n_out


def test_anti_aliasing_suppresses_tone_above_new_nyquist():
    # 1000 Hz -> 100 Hz (Nyquist 50 Hz): a 120 Hz tone must vanish, a 10 Hz tone must survive.
    fs, t = 1000, np.arange(10_000) / 1000
    high = np.sin(2 * np.pi * 120 * t)[None]
    low = np.sin(2 * np.pi * 10 * t)[None]
    fe = ECGNATFeatureExtractor(sampling_rate=100, scaling="none", mode="pad", lead_names=["II"])
    out_high = fe(high, sampling_rate=fs, lead_names=["II"])["input_values"][0, 0, 100:-100]
    out_low = fe(low, sampling_rate=fs, lead_names=["II"])["input_values"][0, 0, 100:-100]
    assert np.sqrt(np.mean(out_high**2)) < 0.01  # naive decimation would alias it to 20 Hz at full amplitude
    assert np.sqrt(np.mean(out_low**2)) == pytest.approx(np.sqrt(0.5), rel=0.02)
    naive = high[0, ::10][10:-10]
    assert np.sqrt(np.mean(naive**2)) > 0.5


def test_target_rate_is_never_ignored():
    fe = ECGNATFeatureExtractor(sampling_rate=250, window_s=4.0, scaling="none")
    out = fe(_rng_signal(12, 4000), sampling_rate=1000)
    assert out["input_values"].shape == (1, 12, 1000)


@pytest.mark.shared_data
@pytest.mark.slow
def test_long_record_windows(shared_data):
    rec = read_record(shared_data / "mitdb/100")  # 650000 samples at 360 Hz = 1805.6 s
    fe = ECGNATFeatureExtractor()  # window 10 s, stride 5 s, 500 Hz
    out = fe(rec, return_tensors="pt")
    n_500 = int(np.ceil(rec.n_samples * 500 / 360))
    starts = out["window_start"].numpy()
    expected = [s / 500 for s in range(0, n_500 - 5000 + 1, 2500)]
    if expected[-1] * 500 + 5000 < n_500:
        expected.append((n_500 - 5000) / 500)
    np.testing.assert_allclose(starts, expected, rtol=0, atol=1e-3)
    assert out["input_values"].shape == (len(expected), 12, 5000)
    assert out["input_values"].dtype == torch.float32
    assert (out["record_index"] == 0).all() and out["attention_mask"].all()
    assert starts[-1] + 10 == pytest.approx(n_500 / 500, abs=1e-3)  # the tail is covered
    np.testing.assert_allclose(np.diff(starts[:-1]), 5.0)  # 50 % overlap
    # the windows are slices of one resampled signal
    full = ECGNATFeatureExtractor(scaling="none", mode="pad")(rec)["input_values"][0]
    raw = ECGNATFeatureExtractor(scaling="none")(rec)["input_values"]
    np.testing.assert_array_equal(raw[3], full[:, 3 * 2500 : 3 * 2500 + 5000])


def test_windows_record_index_and_aggregate():
    fe = ECGNATFeatureExtractor(window_s=2.0, window_stride_s=1.0, scaling="none")
    a, b, c = _rng_signal(12, 2500, 1), _rng_signal(12, 500, 2), _rng_signal(12, 1000, 3)  # 5 s, 1 s, 2 s
    out = fe([a, b, c], sampling_rate=500)
    np.testing.assert_array_equal(out["record_index"], [0, 0, 0, 0, 1, 2])
    np.testing.assert_allclose(out["window_start"], [0, 1, 2, 3, 0, 0])
    assert out["attention_mask"][4].sum() == 500 and out["attention_mask"][5].sum() == 1000
    assert (out["input_values"][4, :, 500:] == 0).all()  # padded
    agg = fe.aggregate(np.arange(6.0)[:, None], out["record_index"])
    np.testing.assert_allclose(agg[:, 0], [1.5, 4, 5])


def test_list_of_records_different_rates_and_lengths():
    fe = ECGNATFeatureExtractor(mode="crop")
    sigs = [_rng_signal(12, 1000, 0), _rng_signal(2, 7200, 1), torch.randn(15, 38400, dtype=torch.float64)]
    names = [list(CANONICAL_LEADS), ["MLII", "V5"],
             [n.lower() for n in CANONICAL_LEADS] + ["vx", "vy", "vz"]]
    out = fe(sigs, sampling_rate=[100, 360, 1000], lead_names=names, ignore_unknown_leads=True)
    assert out["input_values"].shape == (3, 12, 5000)
    np.testing.assert_array_equal(out["lead_mask"].sum(1), [12, 2, 12])
    np.testing.assert_array_equal(out["record_index"], [0, 1, 2])
    # standardised per lead over the real samples
    v = out["input_values"][2]
    np.testing.assert_allclose(v.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(v.std(1), 1, atol=1e-4)
    with pytest.raises(ECGLeadNameError, match="vx"):
        fe(sigs[2], sampling_rate=1000, lead_names=names[2])


def test_numpy_and_torch_inputs_agree():
    fe = ECGNATFeatureExtractor()
    x = _rng_signal(12, 3600).astype(np.float32)
    a = fe(x, sampling_rate=360, return_tensors="np")
    b = fe(torch.from_numpy(x), sampling_rate=360, return_tensors="pt")
    assert isinstance(b, BatchFeature) and isinstance(b["input_values"], torch.Tensor)
    np.testing.assert_array_equal(a["input_values"], b["input_values"].numpy())
    batch = fe(np.stack([x, x]), sampling_rate=360)  # (batch, leads, samples)
    assert batch["input_values"].shape == (2, 12, 5000)


def test_record_objects_duck_typed(fixtures_dir):
    rec = read_record(fixtures_dir / "cinc2021" / "E07500")
    fe = ECGNATFeatureExtractor(sampling_rate=250, window_s=8.0)
    out = fe([rec, rec])
    assert out["input_values"].shape == (4, 12, 2000)  # 10 s -> windows at 0 s and 2 s (end-aligned)
    np.testing.assert_array_equal(out["record_index"], [0, 0, 1, 1])
    np.testing.assert_allclose(out["window_start"], [0, 2, 0, 2])


def test_scaling_options():
    x = np.stack([np.linspace(0, 1, 5000) * k for k in range(1, 13)])
    z = ECGNATFeatureExtractor()(x, sampling_rate=500)["input_values"][0]
    np.testing.assert_allclose(z.std(1), 1, atol=1e-4)
    robust = ECGNATFeatureExtractor(scaling="robust")(x, sampling_rate=500)["input_values"][0]
    np.testing.assert_allclose(np.median(robust, axis=1), 0, atol=1e-3)
    fixed = ECGNATFeatureExtractor(scaling=0.5)(x, sampling_rate=500)["input_values"][0]
    np.testing.assert_allclose(fixed, (x / 0.5).astype(np.float32), rtol=1e-6)
    flat = ECGNATFeatureExtractor(quality_check=False)(np.ones((12, 5000)), sampling_rate=500)["input_values"]
    assert np.isfinite(flat).all()
    with pytest.raises(ECGUnusableSignalError, match="all 12 leads flat"):  # the default refuses it
        ECGNATFeatureExtractor()(np.ones((12, 5000)), sampling_rate=500)


def test_center_scaling_keeps_amplitudes_and_refuses_microvolts(shared_data):
    """'center' removes each lead's mean and keeps mV: the ratio of two leads' amplitudes survives
    (z-scoring makes every lead unit-sized). A record in microvolts is refused, not scored 1000x too big."""
    rec = read_record(shared_data / "ptbxl-subset" / "records100" / "00000" / "00001_lr")
    x = np.asarray(rec.signal, dtype=np.float64)
    fe = ECGNATFeatureExtractor(sampling_rate=100, scaling="center")
    assert fe.keeps_amplitude and not ECGNATFeatureExtractor().keeps_amplitude
    c = fe(x, sampling_rate=rec.sampling_rate, lead_names=rec.lead_names)["input_values"][0]
    np.testing.assert_allclose(c, (x - x.mean(1, keepdims=True)).astype(np.float32), atol=1e-5)
    z = ECGNATFeatureExtractor(sampling_rate=100)(x, sampling_rate=rec.sampling_rate, lead_names=rec.lead_names)
    spread = c.std(1)
    assert spread.max() / spread.min() > 1.5  # leads differ in size here ...
    np.testing.assert_allclose(z["input_values"][0].std(1), 1, atol=1e-4)  # ... and not after z-scoring
    with pytest.raises(ECGUnusableSignalError, match=r"00001_lr.*microvolts.*scaling='center'"):
        fe(x * 1000, sampling_rate=rec.sampling_rate, lead_names=rec.lead_names, record_ids=["00001_lr"])
    flagged = ECGNATFeatureExtractor(sampling_rate=100)(x * 1000, sampling_rate=rec.sampling_rate,
                                                         lead_names=rec.lead_names)
    assert any("microvolts" in f for f in flagged.quality_flags[0])  # scale-free: a visible flag


def test_pad_mode_flags_records_padded_for_their_batch():
    """mode='pad' pads to the longest record of the batch and the model has no attention mask: the shorter
    record's output then depends on its neighbours, which must be visible, not silent."""
    long, short = _rng_signal(samples=5000, seed=1), _rng_signal(samples=3000, seed=2)
    out = ECGNATFeatureExtractor(mode="pad")([long, short], sampling_rate=500)
    assert out.quality_flags[0] == []
    assert any("zero-padded from 3000 to 5000 samples" in f for f in out.quality_flags[1])
    alone = ECGNATFeatureExtractor(mode="pad")([short], sampling_rate=500)
    assert not any("zero-padded" in f for f in alone.quality_flags[0])


def test_filters_run_and_remove_baseline():
    t = np.arange(5000) / 500
    x = np.tile(np.sin(2 * np.pi * 10 * t) + 5.0 + 2 * np.sin(2 * np.pi * 0.05 * t), (12, 1))
    fe = ECGNATFeatureExtractor(do_baseline_removal=True, do_bandpass=True, scaling="none")
    y = fe(x, sampling_rate=500)["input_values"][0, 0, 500:-500]
    assert abs(y.mean()) < 0.05 and np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(0.5), rel=0.05)
    with pytest.raises(ValueError, match="Nyquist"):
        ECGNATFeatureExtractor(sampling_rate=100, do_bandpass=True, bandpass_high=60)


def test_save_load_round_trip(tmp_path):
    fe = ECGNATFeatureExtractor(sampling_rate=250, window_s=5.0, window_stride_s=2.0, do_bandpass=True,
                                bandpass_high=45.0, scaling="robust", lead_names=["I", "II", "V1"])
    fe.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert cfg["feature_size"] == 3 and cfg["sampling_rate"] == 250 and cfg["lead_names"] == ["I", "II", "V1"]
    again = ECGNATFeatureExtractor.from_pretrained(tmp_path)
    assert again.to_dict() == fe.to_dict()
    x = _rng_signal(3, 3000)
    a = fe(x, sampling_rate=300, lead_names=["I", "II", "V1"])
    b = again(x, sampling_rate=300, lead_names=["I", "II", "V1"])
    np.testing.assert_array_equal(a["input_values"], b["input_values"])
    default = ECGNATFeatureExtractor()
    default.save_pretrained(tmp_path / "d")
    assert ECGNATFeatureExtractor.from_pretrained(tmp_path / "d").to_dict() == default.to_dict()


def test_model_input_names():
    assert ECGNATFeatureExtractor.model_input_names == ["input_values", "lead_mask"]


# ------------------------------------------------------------------------------ errors
def test_error_missing_sampling_rate():
    with pytest.raises(ECGInputError, match=r"pass sampling_rate=\.\.\."):
        ECGNATFeatureExtractor()(_rng_signal())


def test_error_wrong_lead_count():
    with pytest.raises(ECGInputError, match="2 lead names .* 12 leads"):
        ECGNATFeatureExtractor()(_rng_signal(), sampling_rate=500, lead_names=["I", "II"])
    with pytest.raises(ECGInputError, match="transpose"):
        ECGNATFeatureExtractor()(_rng_signal(3, 5000).T, sampling_rate=500, lead_names=["I", "II", "V1"])
    with pytest.raises(ECGInputError, match="pass lead_names"):
        ECGNATFeatureExtractor()(_rng_signal(3, 5000), sampling_rate=500)


def test_error_nan_inf():
    x = _rng_signal()
    x[4, 10] = np.nan
    with pytest.raises(ECGInputError, match="NaN/inf .*aVL"):
        ECGNATFeatureExtractor()(x, sampling_rate=500)
    x[4, 10] = np.inf
    with pytest.raises(ECGInputError, match="record 1"):
        ECGNATFeatureExtractor()([_rng_signal(), x], sampling_rate=500)


def test_error_too_short():
    with pytest.raises(ECGInputError, match="too short"):
        ECGNATFeatureExtractor()(_rng_signal(12, 40), sampling_rate=100)


def test_error_unknown_and_duplicate_leads():
    names = list(CANONICAL_LEADS)
    names[3] = "CM5"
    with pytest.raises(ECGLeadNameError, match="CM5") as info:
        ECGNATFeatureExtractor()(_rng_signal(), sampling_rate=500, lead_names=names)
    assert info.value.leads == ("CM5",) and isinstance(info.value, ValueError)
    names[3] = "MLII"
    with pytest.raises(ECGLeadNameError, match="duplicate"):
        ECGNATFeatureExtractor()(_rng_signal(), sampling_rate=500, lead_names=names)
    # the data layer's LeadNameError is the same family
    assert issubclass(LeadNameError, ECGLeadNameError)


def test_error_bad_settings():
    with pytest.raises(ValueError, match="mode"):
        ECGNATFeatureExtractor(mode="stretch")
    with pytest.raises(ValueError, match="scaling"):
        ECGNATFeatureExtractor(scaling="zscore")
    with pytest.raises(ValueError, match="sampling_rate"):
        ECGNATFeatureExtractor(sampling_rate=0)
    with pytest.raises(ECGInputError, match="sampling rates"):
        ECGNATFeatureExtractor()([_rng_signal(), _rng_signal()], sampling_rate=[500])


@pytest.mark.parametrize("stride", [0.0, -1.0, 10.5, float("nan")])
def test_window_stride_beyond_the_window_is_refused(stride):
    """A stride over the window would leave gaps in every record; refused at construction, on load, and when
    set afterwards (before any window is cut). The stride equal to the window (no overlap) is allowed."""
    with pytest.raises(ValueError, match="window_stride_s must be > 0 and at most window_s"):
        ECGNATFeatureExtractor(window_s=10.0, window_stride_s=stride)
    with pytest.raises(ValueError, match="window_stride_s must be > 0 and at most window_s"):
        ECGNATFeatureExtractor.from_dict({"window_s": 10.0, "window_stride_s": stride})
    fe = ECGNATFeatureExtractor(window_s=2.0, window_stride_s=2.0, scaling="none")
    assert fe(_rng_signal(12, 3000), sampling_rate=500)["input_values"].shape[0] == 3  # 0, 2, 4 s (6 s record)
    fe.window_stride_s = stride * 0.2 if stride == 10.5 else stride  # 2.1 s > 2 s window, or non-positive
    with pytest.raises(ValueError, match="window_stride_s must be > 0 and at most window_s"):
        fe(_rng_signal(12, 3000), sampling_rate=500)


# ------------------------------------------------------------------------------- issue 8: quality and hostile input
def test_ragged_and_non_numeric_lists_are_typed_errors():
    fe = ECGNATFeatureExtractor(sampling_rate=100)
    for bad in ([[0.1, 0.2, 0.3], [0.1, 0.2]], [[[0.0] * 500] * 2, [[0.0] * 400] * 2], [["a", "b"]], [None]):
        with pytest.raises(ECGInputError):
            fe(bad, sampling_rate=100)


@pytest.mark.parametrize("rate", [0.5, 0.001, 1e7])
def test_implausible_input_rate_is_refused_before_resampling(rate):
    import time

    fe = ECGNATFeatureExtractor(sampling_rate=100)
    t0 = time.perf_counter()
    with pytest.raises(ECGUnusableSignalError, match="implausible sampling rate"):
        fe(_rng_signal(samples=1000), sampling_rate=rate)
    assert time.perf_counter() - t0 < 1.0  # no 45 GiB allocation attempted
    relaxed = ECGNATFeatureExtractor(sampling_rate=100, quality_thresholds={"min_sampling_rate": 0.1})
    if rate == 0.5:
        assert relaxed(_rng_signal(samples=1000), sampling_rate=rate)["input_values"].shape[1] == 12


def test_dead_lead_masked_and_reported_flat_record_refused_by_name():
    fe = ECGNATFeatureExtractor(sampling_rate=100)
    x = _rng_signal(samples=1000)
    x[3] = 0.0
    out = fe(x, sampling_rate=100)
    assert out["lead_mask"][0].tolist() == [1, 1, 1, 0] + [1] * 8
    assert (out["input_values"][0, 3] == 0).all()
    assert out.quality_flags == [["lead aVR flat (range 0.000 mV)"]]
    assert fe(_rng_signal(samples=1000), sampling_rate=100, return_tensors="pt").quality_flags == [[]]
    with pytest.raises(ECGUnusableSignalError, match=r"^data/r17: no usable lead \(all 12 leads flat\)") as info:
        fe([x, np.zeros((12, 1000))], sampling_rate=100, record_ids=["data/r16", "data/r17"])
    assert info.value.report.usable == [False] * 12


def test_quality_thresholds_saved_with_the_extractor(tmp_path):
    fe = ECGNATFeatureExtractor(sampling_rate=100, quality_thresholds={"flat_range_mv": 0.5})
    fe.save_pretrained(tmp_path)
    again = ECGNATFeatureExtractor.from_pretrained(tmp_path)
    assert again.thresholds.flat_range_mv == 0.5 and again.quality_check
    x = _rng_signal(samples=1000) * 0.1  # robust range ~0.5 mV: flat for this extractor
    with pytest.raises(ECGUnusableSignalError):
        again(x, sampling_rate=100)
    with pytest.raises(ValueError, match="unknown quality threshold"):
        ECGNATFeatureExtractor(quality_thresholds={"flat_mv": 1})
    r = check_signal_quality(x, 100, list(CANONICAL_LEADS), QualityThresholds())
    assert all(r.usable) and r.ok
