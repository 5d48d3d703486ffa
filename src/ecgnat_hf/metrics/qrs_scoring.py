"""Scoring a QRS detector against reference beats, the way the field reports it.

* :func:`match_beats`: one-to-one matching of detections to reference beats within a tolerance. Pairs are
  chosen to match as many beats as possible and, among those pairings, to minimise the total time error.
  Because every feasible pair lies within ``tolerance`` samples, the two lists split into independent
  stretches wherever consecutive events (detections and references merged in time) are more than
  ``tolerance`` apart; each stretch (usually one or two beats) is solved exactly with
  ``scipy.optimize.linear_sum_assignment``.
* :func:`ec57_counts`: ANSI/AAMI EC57 beat-by-beat counts (as the WFDB ``bxb`` program makes them): 150 ms
  match window, only beat annotations count (:data:`EC57_BEAT_SYMBOLS`; rhythm, noise and comment
  annotations and non-conducted P waves ``x`` are not beats), and the comparison starts after a 5-minute
  learning period. Edges of the scored interval: a reference beat inside counts (TP or FN); a detection
  inside is a FP only if it matched no reference at all, so a detection inside that matches a beat just
  outside (or the reverse) counts for nothing.
* :func:`cpsc2019_counts`: the China Physiological Signal Challenge 2019 rules, as its official scoring
  script applies them: 75 ms tolerance, reference beats in the first and last 0.5 s ignored; every detection
  within the tolerance of a reference beat beyond the first is a FP, and so is a detection in a gap between
  reference windows (from the window ends, inside the 0.5 s margins); the record scores 1 without error, 0.7
  with one FP only, 0.3 with one FN only, else 0, and the challenge score is the mean over records. The
  official script checks the gap *before* the first reference beat but never the gap between the first and
  the second one (its loop tests ``j == 0`` before the "between beats" case), and a record without reference
  beats scores 1. The challenge's published scores were computed that way, so that is the default here;
  ``strict=True`` also counts the skipped gap (and detections in a record without reference beats).

Sensitivity ``Se = TP / (TP + FN)``, positive predictivity ``+P = TP / (TP + FP)``, ``F1 = 2 TP / (2 TP + FN
+ FP)``. "Gross" statistics sum the counts of all records (EC57); the per-record figures are reported too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    "EC57_BEAT_SYMBOLS",
    "BeatCounts",
    "match_beats",
    "ec57_counts",
    "cpsc2019_counts",
    "reference_beats",
]

#: annotation codes that are beats (QRS complexes) for EC57 / bxb: normal, bundle branch blocks, atrial /
#: nodal / supraventricular premature, ventricular premature and escape, R-on-T, fusion, escapes, paced,
#: fusion of paced and normal, unclassifiable (``Q``) and learning beats (``?``). Not beats: ``+`` rhythm
#: change, ``~`` noise, ``|`` isolated artefact, ``x`` non-conducted P wave, ``!`` flutter wave, ``"`` comment,
#: ``[``/``]`` flutter/fibrillation onset/end, ``p``/``t``/``u`` wave peaks.
EC57_BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")


@dataclass
class BeatCounts:
    """True positives, false negatives and false positives; ``+`` adds counts (gross statistics)."""

    tp: int = 0
    fn: int = 0
    fp: int = 0

    def __add__(self, other: "BeatCounts") -> "BeatCounts":
        return BeatCounts(self.tp + other.tp, self.fn + other.fn, self.fp + other.fp)

    @property
    def se(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def ppv(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fn + self.fp
        return 2 * self.tp / d if d else float("nan")


def _sorted_int(name: str, values) -> np.ndarray:
    a = np.asarray(values)
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise ValueError(f"{name} must be integer sample indices, got non-integer values.")
    return np.sort(a.astype(np.int64).reshape(-1))


def reference_beats(samples, symbols) -> np.ndarray:
    """Sample indices of the annotations in ``samples`` whose code is a beat (:data:`EC57_BEAT_SYMBOLS`)."""
    samples = np.asarray(samples, dtype=np.int64).reshape(-1)
    if len(symbols) != samples.size:
        raise ValueError(f"{samples.size} annotation samples but {len(symbols)} symbols.")
    keep = np.fromiter((s in EC57_BEAT_SYMBOLS for s in symbols), dtype=bool, count=samples.size)
    return np.sort(samples[keep])


def match_beats(detected, reference, tolerance: int) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching within ``tolerance`` samples (inclusive): most pairs, then least total error.

    ``detected`` and ``reference`` are sample indices (sorted here). Returns ``(det_idx, ref_idx)``: indices
    into the *sorted* arrays of the matched pairs, in time order. Unmatched detections are false positives,
    unmatched references false negatives.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 samples, got {tolerance}.")
    det = _sorted_int("detected", detected)
    ref = _sorted_int("reference", reference)
    if det.size == 0 or ref.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    times = np.concatenate([det, ref])
    is_ref = np.concatenate([np.zeros(det.size, bool), np.ones(ref.size, bool)])
    index = np.concatenate([np.arange(det.size), np.arange(ref.size)])
    order = np.argsort(times, kind="stable")
    times, is_ref, index = times[order], is_ref[order], index[order]
    breaks = np.flatnonzero(np.diff(times) > tolerance) + 1  # no feasible pair spans a gap wider than tolerance
    out_d, out_r = [], []
    for lo, hi in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [times.size]])):
        r = index[lo:hi][is_ref[lo:hi]]
        d = index[lo:hi][~is_ref[lo:hi]]
        if r.size == 0 or d.size == 0:
            continue
        dist = np.abs(det[d][:, None] - ref[r][None, :]).astype(np.float64)
        feasible = dist <= tolerance
        # infeasible pairs cost more than all feasible ones together: the solver first maximises the number
        # of feasible pairs, then minimises their total distance
        big = float(tolerance + 1) * (min(d.size, r.size) + 1)
        rows, cols = linear_sum_assignment(np.where(feasible, dist, big))
        ok = feasible[rows, cols]
        out_d.append(d[rows[ok]])
        out_r.append(r[cols[ok]])
    if not out_d:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    di, ri = np.concatenate(out_d), np.concatenate(out_r)
    order = np.argsort(ri)
    return di[order].astype(np.int64), ri[order].astype(np.int64)


def ec57_counts(detected, reference, sampling_rate: float, n_samples: int | None = None,
                tolerance_s: float = 0.150, start_s: float = 300.0, end_s: float | None = None) -> BeatCounts:
    """EC57 beat-by-beat counts over ``[start_s, end_s)`` (default: after the 5-minute learning period to the end).

    ``reference`` holds beat annotations only (see :func:`reference_beats`). Matching runs over the whole
    record, so a beat just outside the interval can claim a detection just inside it (neither counts).
    """
    if not sampling_rate > 0:
        raise ValueError(f"sampling_rate must be positive, got {sampling_rate!r}.")
    det = _sorted_int("detected", detected)
    ref = _sorted_int("reference", reference)
    lo = int(round(start_s * sampling_rate))
    hi = n_samples if end_s is None else int(round(end_s * sampling_rate))
    if hi is None:
        hi = int(max(det.max(initial=-1), ref.max(initial=-1))) + 1
    if hi <= lo:
        raise ValueError(f"empty scoring interval: start {lo} >= end {hi} samples (record too short for "
                         f"a {start_s} s learning period?).")
    di, ri = match_beats(det, ref, int(round(tolerance_s * sampling_rate)))
    ref_in = (ref >= lo) & (ref < hi)
    det_in = (det >= lo) & (det < hi)
    matched_ref = np.zeros(ref.size, bool)
    matched_ref[ri] = True
    matched_det = np.zeros(det.size, bool)
    matched_det[di] = True
    tp = int(ref_in[ri].sum())
    fn = int((ref_in & ~matched_ref).sum())
    fp = int((det_in & ~matched_det).sum())
    return BeatCounts(tp, fn, fp)


def cpsc2019_counts(detected, reference, sampling_rate: float, n_samples: int,
                    tolerance_s: float = 0.075, edge_s: float = 0.5, strict: bool = False) -> tuple[BeatCounts, float]:
    """CPSC 2019 counts and record score (1, 0.7 for one FP only, 0.3 for one FN only, else 0).

    Reference beats within ``edge_s`` of either end are ignored; detections within those margins are not
    counted either (an FP gap starts ``tolerance`` after a window and ends ``tolerance`` before the next, the
    first gap starting at ``edge_s + tolerance`` and the last ending at ``n_samples - edge_s - tolerance``).
    By default the gap between the first two reference beats is not checked and a record without reference
    beats scores 1, as in the challenge's official scoring script; ``strict=True`` counts both (module doc).
    """
    fs = float(sampling_rate)
    det = _sorted_int("detected", detected)
    ref = _sorted_int("reference", reference)
    lo_edge, hi_edge = edge_s * fs, n_samples - edge_s * fs
    ref = ref[(ref >= lo_edge) & (ref <= hi_edge)]
    tol = tolerance_s * fs
    tp = fn = fp = 0
    for j, r in enumerate(ref):
        near = int((np.abs(det - r) <= tol).sum())
        if near:
            tp += 1
            fp += near - 1  # a second detection on the same beat is a FP
        else:
            fn += 1
        if j == 0:  # before the first reference beat
            fp += int(((det >= lo_edge + tol) & (det <= r - tol)).sum())
            if not strict:
                continue  # the official script's loop never reaches the gap after the first beat
        gap_hi = hi_edge - tol if j == ref.size - 1 else ref[j + 1] - tol
        fp += int(((det >= r + tol) & (det <= gap_hi)).sum())
    if ref.size == 0 and strict:  # no reference beat in the scored part: every detection there is a FP
        fp = int(((det >= lo_edge + tol) & (det <= hi_edge - tol)).sum())
    if fn + fp == 0:
        score = 1.0
    elif fn == 0 and fp == 1:
        score = 0.7
    elif fn == 1 and fp == 0:
        score = 0.3
    else:
        score = 0.0
    return BeatCounts(tp, fn, fp), score
