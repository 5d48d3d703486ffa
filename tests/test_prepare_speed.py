"""The fast paths of ``ecgnat prepare`` give the same numbers as the reference paths they replace.

The quality check sorts each lead once and reads its percentiles, extremes, rail counts and polarity from
the sorted samples (:func:`sorted_percentiles`); the lead-by-lead path (``np.percentile`` per lead) is kept
for leads with NaN samples and is the reference here (``_SORT_LEADS = False``). Equal reports mean equal
lead masks and refusals, so a store's bytes do not change (``benchmarks/scale.py --speed`` also compares
the stores of the old and new code).
"""
from __future__ import annotations

import numpy as np
import pytest

import ecgnat_hf.models.ecgnat.feature_extraction_ecgnat as F
from ecgnat_hf.data.records import read_record
from ecgnat_hf.models.ecgnat.feature_extraction_ecgnat import check_signal_quality, sorted_percentiles
from ecgnat_hf.sample_data import sample_dir


def test_sorted_percentiles_equal_numpy_to_the_bit():
    rng = np.random.default_rng(0)
    for t in range(400):
        n = int(rng.integers(2, 9000))
        leads = int(rng.integers(1, 13))
        if t % 3 == 0:
            x = rng.normal(size=(leads, n))
        else:  # digital samples over a gain, as read from WFDB files: many repeated values
            x = (rng.integers(-60, 60, (leads, n)) / rng.choice([200.0, 1000.0, 7.3])).astype(np.float32).astype(np.float64)
        for q in ([1, 99], [99.5, 0.5], [50], [0.01, 25, 75, 99.99]):
            want = np.percentile(x, q, axis=1)
            got = sorted_percentiles(np.sort(x, axis=1), q)
            assert got.shape == want.shape
            assert np.array_equal(got, want), (n, q)
            assert np.array_equal(sorted_percentiles(np.sort(x[0]), q), np.percentile(x[0], q))


def test_sorted_percentiles_refuses_what_it_does_not_cover():
    with pytest.raises(ValueError, match="0 < q < 100"):
        sorted_percentiles(np.arange(10.0), [0, 50])
    with pytest.raises(ValueError, match="at least 2 samples"):
        sorted_percentiles(np.arange(1.0), [50])


def _reports(x, fs, names, monkeypatch):
    fast = check_signal_quality(x, fs, names, record="r")
    with monkeypatch.context() as m:
        m.setattr(F, "_SORT_LEADS", False)
        ref = check_signal_quality(x, fs, names, record="r")
    return fast, ref


def _same(fast, ref):
    assert fast.usable == ref.usable
    assert fast.flags == ref.flags
    assert fast.lead_flags == ref.lead_flags


def _records():
    recs = [read_record(p.with_suffix("")) for p in sorted((sample_dir() / "records100").rglob("*.hea"))[:60]]
    assert len(recs) == 60
    return recs


def test_quality_check_sorted_path_equals_lead_by_lead_on_real_records(monkeypatch):
    for rec in _records():
        x = rec.signal.astype(np.float64)
        _same(*_reports(x, rec.sampling_rate, rec.lead_names, monkeypatch))


def test_quality_check_sorted_path_equals_lead_by_lead_on_every_finding(monkeypatch):
    """Flat, saturated, inverted, microvolt-scaled and swapped leads: the findings (and masks) agree."""
    rng = np.random.default_rng(1)
    found = set()
    for k, rec in enumerate(_records()[:30]):
        names = list(rec.lead_names)
        x = rec.signal.astype(np.float64)
        variants = [x.copy() for _ in range(6)]
        variants[0][int(rng.integers(12))] = 0.0  # flat lead
        lead = int(rng.integers(12))
        top = np.percentile(variants[1][lead], 80)
        variants[1][lead] = np.minimum(variants[1][lead], top)  # saturated at the upper rail
        variants[2][names.index("I")] *= -1  # inverted lead I (Einthoven's law breaks)
        variants[3] *= 1000.0  # microvolts labelled mV
        variants[4] = -variants[4]  # every lead inverted (lead I negative, aVR positive)
        variants[5][:] = 0.0  # nothing usable
        for v in variants:
            fast, ref = _reports(v, rec.sampling_rate, names, monkeypatch)
            _same(fast, ref)
            found.update(fast.flags)
    for finding in ("flat", "saturated", "inverted", "amplitude suggests microvolts", "aVR positive"):
        assert any(finding in f for f in found), (finding, found)


def test_limb_lead_identities_from_the_gram_matrix_equal_lead_by_lead(monkeypatch):
    """Einthoven/Goldberger checks read from one Gram matrix (all samples finite) name the same inverted lead
    as the lead-by-lead correlations, for each of the six limb leads inverted in turn, and treat a combination
    that cancels exactly (II = -I, so aVR's value from I and II is zero) as no variance, as the reference does."""
    limb = ["I", "II", "III", "aVR", "aVL", "aVF"]
    named = set()
    for rec in _records()[:20]:
        names = list(rec.lead_names)
        at = {F.LEAD_ALIASES.get(F._squash(n)): i for i, n in enumerate(names)}  # the file's own spelling
        x = rec.signal.astype(np.float64)
        for lead in limb:
            v = x.copy()
            v[at[lead]] *= -1
            fast, ref = _reports(v, rec.sampling_rate, names, monkeypatch)
            _same(fast, ref)
            named.update(f for f in fast.flags if f.endswith("limb leads by Einthoven's law)"))
        v = x.copy()
        v[at["II"]] = -v[at["I"]]
        _same(*_reports(v, rec.sampling_rate, names, monkeypatch))
    assert len({f.split(" (")[0] for f in named}) == 6, named


def test_quality_check_on_shared_500hz_records(shared_data, monkeypatch):
    """500 Hz records as MIMIC-IV-ECG stores them (PTB-XL records500, Challenge 2021): the same reports."""
    heads = sorted((shared_data / "ptbxl-subset" / "records500").rglob("*.hea"))[:40]
    heads += sorted((shared_data / "cinc2021-sample").glob("*.hea"))[:40]
    assert heads
    for h in heads:
        rec = read_record(h.with_suffix(""), check_finite=False)
        x = rec.signal.astype(np.float64)
        _same(*_reports(x, rec.sampling_rate, rec.lead_names, monkeypatch))


def test_float32_records_sorted_as_float32_give_the_same_reports(monkeypatch):
    """Records are float32: the quality check sorts them as float32 and widens the sorted samples (float64 holds
    each float32 exactly, in the same order). Every finding equals the float64 lead-by-lead reference."""
    rng = np.random.default_rng(2)
    found = set()
    for rec in _records()[:30]:
        names = list(rec.lead_names)
        x = rec.signal
        assert x.dtype == np.float32
        variants = [x, x.copy(), -x, x * np.float32(1000.0), x.copy()]
        variants[1][int(rng.integers(12))] = 0.0
        at = {F.LEAD_ALIASES.get(F._squash(n)): i for i, n in enumerate(names)}  # the file's own spelling
        variants[4][at["aVL"]] *= -1
        for v in variants:
            fast = check_signal_quality(v, rec.sampling_rate, names, record="r")
            with monkeypatch.context() as m:
                m.setattr(F, "_SORT_LEADS", False)
                ref = check_signal_quality(v.astype(np.float64), rec.sampling_rate, names, record="r")
            _same(fast, ref)
            found.update(fast.flags)
    for finding in ("flat", "inverted", "amplitude suggests microvolts", "aVR positive"):
        assert any(finding in f for f in found), (finding, found)
