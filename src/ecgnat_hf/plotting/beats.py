"""Detected against reference beats on a stretch of a long record (``ecgnat plot RECORD --beats``).

The QRS detector runs on the whole record (as in ``benchmarks/qrs.py``); the detections are matched one to one
with the reference beats within ``tolerance_s`` (:func:`ecgnat_hf.metrics.qrs_scoring.match_beats`) and the
stretch ``[start_s, start_s + duration_s)`` is drawn, one panel per lead, with matched beats (green ``|``),
false detections (red ``x``) and missed reference beats (orange triangle) marked, so a person sees the misses.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..metrics.qrs_scoring import match_beats
from .figures import _new_figure, _save

__all__ = ["plot_detected_beats"]


def plot_detected_beats(signal, sampling_rate: float, lead_names: Sequence[str], detected, reference=None,
                        start_s: float = 0.0, duration_s: float = 20.0, tolerance_s: float = 0.150,
                        title: str | None = None, path: str | os.PathLike | None = None) -> dict:
    """Draw the stretch and return its counts.

    ``signal`` (leads, samples); ``detected`` and ``reference`` are R-peak sample indices over the whole record
    (``reference`` None: only detections are drawn). Returns a dict with ``start``/``stop`` (samples) and the
    counts inside the stretch: ``detected``, ``reference``, ``matched``, ``missed`` (reference beats without a
    detection), ``false`` (detections without a reference beat), each a count, and ``missed_samples`` /
    ``false_samples`` (the sample indices).
    """
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    fs = float(sampling_rate)
    if len(lead_names) != x.shape[0]:
        raise ValueError(f"{len(lead_names)} lead names for {x.shape[0]} leads.")
    n = x.shape[1]
    start = int(round(start_s * fs))
    if not 0 <= start < n:
        raise ValueError(f"start_s {start_s:g} is outside the record ({n / fs:.1f} s).")
    if not duration_s > 0:
        raise ValueError(f"duration_s must be positive, got {duration_s!r}.")
    stop = min(n, start + int(round(duration_s * fs)))
    det = np.sort(np.asarray(detected, dtype=np.int64).reshape(-1))
    ref = None if reference is None else np.sort(np.asarray(reference, dtype=np.int64).reshape(-1))
    matched_det = np.zeros(det.size, bool)
    matched_ref = np.zeros(0 if ref is None else ref.size, bool)
    if ref is not None:
        di, ri = match_beats(det, ref, int(round(tolerance_s * fs)))
        matched_det[di] = True
        matched_ref[ri] = True
    in_det = (det >= start) & (det < stop)
    out = {"start": start, "stop": stop, "detected": int(in_det.sum())}
    if ref is not None:
        in_ref = (ref >= start) & (ref < stop)
        out.update(reference=int(in_ref.sum()), matched=int((in_ref & matched_ref).sum()),
                   missed=int((in_ref & ~matched_ref).sum()), false=int((in_det & ~matched_det).sum()),
                   missed_samples=ref[in_ref & ~matched_ref], false_samples=det[in_det & ~matched_det])

    leads = x.shape[0]
    fig = _new_figure(max(8.0, min(24.0, 0.8 * (stop - start) / fs)), 1.2 + 1.6 * leads)
    t = np.arange(start, stop) / fs
    for i in range(leads):
        ax = fig.add_subplot(leads, 1, i + 1)
        seg = x[i, start:stop]
        ax.plot(t, seg, color="black", linewidth=0.6)
        lo, hi = (float(np.nanmin(seg)), float(np.nanmax(seg))) if seg.size and np.isfinite(seg).any() else (0.0, 1.0)
        top = hi + 0.1 * (hi - lo + 1e-9)
        ok = det[in_det & matched_det] if ref is not None else det[in_det]
        ax.vlines(ok / fs, lo, top, color="tab:green", linewidth=0.8, alpha=0.7,
                  label="detected" + (" (matched)" if ref is not None else ""))
        if ref is not None:
            fp = det[in_det & ~matched_det]
            fn = ref[in_ref & ~matched_ref]
            ax.plot(fp / fs, np.full(fp.size, top), "x", color="tab:red", markersize=8, label=f"false ({fp.size})")
            ax.plot(fn / fs, np.full(fn.size, top), "v", color="tab:orange", markersize=8, label=f"missed ({fn.size})")
        ax.set_ylabel(str(lead_names[i]))
        ax.set_xlim(start / fs, stop / fs)
        if i == 0:
            ax.legend(loc="upper right", fontsize=7, ncol=3)
            head = title or "QRS detection"
            if ref is not None:
                head += (f": {out['reference']} reference beats, {out['matched']} matched, {out['missed']} missed, "
                         f"{out['false']} false")
            ax.set_title(head, fontsize=9)
    fig.axes[-1].set_xlabel("time (s)")
    _save(fig, path)
    return out
