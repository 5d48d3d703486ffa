"""QRS scoring as the field reports it: EC57 beat-by-beat counts (tolerance, one-to-one matching, the scored
interval's edges, beat symbols) and the CPSC 2019 challenge's record score."""
from __future__ import annotations

import numpy as np
import pytest

from ecgnat_hf.metrics.qrs_scoring import (
    EC57_BEAT_SYMBOLS,
    BeatCounts,
    cpsc2019_counts,
    ec57_counts,
    match_beats,
    reference_beats,
)

FS = 360.0  # MIT-BIH: 150 ms = 54 samples


def test_tolerance_is_inclusive_at_150_ms():
    ref = [10_000]
    assert ec57_counts([10_054], ref, FS, 20_000, start_s=0) == BeatCounts(1, 0, 0)
    assert ec57_counts([9_946], ref, FS, 20_000, start_s=0) == BeatCounts(1, 0, 0)
    assert ec57_counts([10_055], ref, FS, 20_000, start_s=0) == BeatCounts(0, 1, 1)
    assert ec57_counts([9_945], ref, FS, 20_000, start_s=0) == BeatCounts(0, 1, 1)


def test_matching_is_one_to_one():
    # two detections on one beat: one TP, one FP
    assert ec57_counts([1000, 1030], [1010], FS, 5000, start_s=0) == BeatCounts(1, 0, 1)
    # one detection between two close beats: it serves one of them only
    assert ec57_counts([1040], [1000, 1080], FS, 5000, start_s=0) == BeatCounts(1, 1, 0)


def test_matching_maximises_pairs_where_nearest_first_would_not():
    """Reference beats 0 and 100 (tolerance 54), detections -50 and 48: taking the nearest detection for the
    first beat (48) would leave the second without one; the best pairing is -50 -> 0 and 48 -> 100."""
    det_idx, ref_idx = match_beats([48, -50], [0, 100], 54)
    assert ref_idx.tolist() == [0, 1] and det_idx.tolist() == [0, 1]  # indices into the sorted arrays
    # among pairings of equal size, the least total error wins
    d, r = match_beats([95, 5], [0, 100], 54)
    assert list(zip(d.tolist(), r.tolist())) == [(0, 0), (1, 1)]
    assert match_beats([], [1, 2], 5)[0].size == 0 and match_beats([1], [], 5)[1].size == 0
    with pytest.raises(ValueError, match="tolerance"):
        match_beats([1], [1], -1)
    with pytest.raises(ValueError, match="integer"):
        match_beats([1.5], [1], 3)


def test_ec57_learning_period_and_interval_edges():
    start = int(300 * FS)
    n = start + 10_000
    # beats before 5:00 are not scored, whatever the detector did there
    assert ec57_counts([100, 200, 5000], [100, 900], FS, n) == BeatCounts(0, 0, 0)
    # a beat just before the start matched by a detection just after it: neither counts
    assert ec57_counts([start + 10], [start - 10], FS, n) == BeatCounts(0, 0, 0)
    # ... and the reverse: a beat just inside matched by a detection just before counts as a TP
    assert ec57_counts([start - 10], [start + 10], FS, n) == BeatCounts(1, 0, 0)
    # the end of the record: a last beat and a stray detection are both scored
    assert ec57_counts([n - 5, n - 200], [n - 5], FS, n) == BeatCounts(1, 0, 1)
    # whole record (start_s=0)
    assert ec57_counts([100, 5000], [100, 900], FS, n, start_s=0) == BeatCounts(1, 1, 1)
    with pytest.raises(ValueError, match="empty scoring interval"):
        ec57_counts([1], [1], FS, 1000)  # 1000 samples: shorter than the 5-minute learning period


def test_reference_beats_keep_beat_symbols_only():
    samples = np.arange(10) * 100
    symbols = ["N", "+", "V", "~", "/", "|", "x", "f", "Q", '"']
    assert reference_beats(samples, symbols).tolist() == [0, 200, 400, 700, 800]
    assert {"N", "L", "R", "V", "A", "/", "f", "F", "Q", "j", "E"} <= EC57_BEAT_SYMBOLS
    assert not {"+", "~", "|", "x", "!", "[", "]"} & EC57_BEAT_SYMBOLS
    with pytest.raises(ValueError, match="symbols"):
        reference_beats([1, 2], ["N"])


def test_counts_statistics_and_gross_sum():
    a, b = BeatCounts(90, 10, 0), BeatCounts(10, 0, 10)
    g = a + b
    assert g == BeatCounts(100, 10, 10)
    assert g.se == pytest.approx(100 / 110) and g.ppv == pytest.approx(100 / 110) and g.f1 == pytest.approx(200 / 220)
    assert np.isnan(BeatCounts().se)


def test_cpsc2019_record_score_rules():
    fs, n = 500.0, 5000  # 10 s
    ref = np.array([100, 600, 1100, 1600, 2100, 2600, 3100, 3600, 4100, 4600, 4950])  # 100 and 4950 at the edges
    inner = ref[1:-1]
    assert cpsc2019_counts(inner, ref, fs, n) == (BeatCounts(9, 0, 0), 1.0)
    assert cpsc2019_counts(inner + 37, ref, fs, n)[1] == 1.0  # 74 ms off: inside the 75 ms tolerance
    assert cpsc2019_counts(np.r_[inner, 1350], ref, fs, n) == (BeatCounts(9, 0, 1), 0.7)  # one FP between beats
    assert cpsc2019_counts(np.r_[inner, 605], ref, fs, n) == (BeatCounts(9, 0, 1), 0.7)  # two on one beat
    assert cpsc2019_counts(inner[1:], ref, fs, n) == (BeatCounts(8, 1, 0), 0.3)  # one FN
    assert cpsc2019_counts(np.r_[inner[1:], 1350], ref, fs, n)[1] == 0.0  # one of each
    # detections inside the 0.5 s margins (and the edge beats) are not scored
    assert cpsc2019_counts(np.r_[10, 100, inner, 4950, 4990], ref, fs, n) == (BeatCounts(9, 0, 0), 1.0)
    assert cpsc2019_counts([], ref, fs, n) == (BeatCounts(0, 9, 0), 0.0)


def test_cpsc2019_follows_the_official_script_and_strict_counts_what_it_skips():
    """The official scoring script checks the gap before the first scored beat but never the gap between the
    first and the second one, and scores a record without reference beats 1; ``strict=True`` counts both."""
    fs, n = 500.0, 5000
    ref = np.array([600, 1100, 1600, 2100])
    assert cpsc2019_counts(np.r_[ref, 850], ref, fs, n) == (BeatCounts(4, 0, 0), 1.0)  # skipped gap
    assert cpsc2019_counts(np.r_[ref, 850], ref, fs, n, strict=True) == (BeatCounts(4, 0, 1), 0.7)
    assert cpsc2019_counts(np.r_[ref, 400], ref, fs, n) == (BeatCounts(4, 0, 1), 0.7)  # before the first: counted
    assert cpsc2019_counts(np.r_[ref, 1350], ref, fs, n) == (BeatCounts(4, 0, 1), 0.7)  # later gaps: counted
    assert cpsc2019_counts(np.r_[ref, 3000], ref, fs, n) == (BeatCounts(4, 0, 1), 0.7)  # after the last: counted
    assert cpsc2019_counts(np.r_[ref, 4740], ref, fs, n)[0].fp == 0  # within 75 ms of the 0.5 s end margin
    assert cpsc2019_counts([1000, 2000], [100], fs, n) == (BeatCounts(0, 0, 0), 1.0)  # no scored beat
    assert cpsc2019_counts([1000, 2000], [100], fs, n, strict=True) == (BeatCounts(0, 0, 2), 0.0)
