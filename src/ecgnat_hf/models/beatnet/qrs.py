"""QRS detection and beat tokenization (numpy/scipy), the front end of BEAT-Net.

The detector follows the Pan-Tompkins recipe, adapted to several leads and to any sampling rate:

1. zero-phase band-pass 8-25 Hz (the QRS energy band; the upper edge is lowered below Nyquist at low rates),
2. derivative and squaring per lead, each lead scaled by a robust amplitude so no single lead dominates,
3. centred moving-window integration (150 ms) per lead, then a weighted sum over the *present* leads: each
   lead weighted by its QRS contrast (99th percentile of its integrated energy over its median, relative to
   the best lead; ``lead_weighting="contrast"``), so a noisy lead adds little. Equal weights (``"equal"``,
   the first release) let a noisy V1 add ~200 false beats over the MIT-BIH 100 series (docs/qrs.md),
4. candidate peaks at least one refractory period (200 ms) apart, classified by an adaptive threshold
   between running signal and noise peak levels, with T-wave rejection (a candidate within 360 ms of a
   beat whose slope is under 0.65 of the beat's slope is a T wave) and search-back at half the threshold
   when no beat was found for 1.66 mean RR intervals,
5. refinement of each beat to the local maximum of the |band-passed| signal (summed over scaled leads),
6. the extra-beat rule: a detection whose integrated energy is under ``extra_height`` of its neighbours'
   (the median of two beats on each side) and whose removal leaves an RR interval no longer than
   ``extra_span`` times the local median RR is dropped. It split a regular interval with something weak: a
   T or P wave, an artefact in a noise burst. A real premature beat is followed by a pause (its neighbours
   are further apart than one RR) or is about as strong as its neighbours, so it stays (docs/qrs.md),
7. a noise gate: when the integrated energy at the beats is not clearly above the record's median
   (``min_contrast``), the "beats" are noise peaks and none are returned. Measured on real data: every record
   of the shared sets has a contrast of 1.9 or more (PTB-XL sample 6 or more, MIT-BIH 100 about 490), white
   noise and real records with their samples shuffled 1.1-1.6.

Backends (``detector`` setting, saved with the other settings in BEAT-Net's config and feature extractor):
``"package"`` (the above), ``"xqrs"`` / ``"gqrs"`` (wfdb) and ``"neurokit2:<method>"``. The library
detectors are single-channel: they get the first present lead, and the noise gate of step 6 is applied to
their beats too. Their libraries are imported by name when first used (``importlib``), so loading a
checkpoint as remote code never requires them; a missing one raises an ``ImportError`` saying what to install.

Hub-facing: ``modeling_beatnet.py`` imports this module with a single-dot import, so it depends on numpy,
scipy and (for the batch helper) torch only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, find_peaks, sosfiltfilt

__all__ = [
    "BeatTokens",
    "QRS_DEFAULTS",
    "detect_qrs",
    "tokenize_beats",
    "tokenize_batch",
    "beat_window_samples",
    "match_peaks",
    "NEUROKIT2_METHODS",
]

#: detector settings (seconds unless stated); saved in BEAT-Net's config and preprocessor_config.json
QRS_DEFAULTS = {
    "refractory_s": 0.200,  # no two beats closer than this
    "integration_s": 0.150,  # moving-window integration
    "twave_s": 0.360,  # a weak-slope candidate this soon after a beat is a T wave
    "twave_slope": 0.65,  # ... "weak" = below this fraction of the beat's slope (0.5 before; docs/qrs.md)
    "refine_s": 0.080,  # search radius for the R peak around a detection
    "learn_s": 2.0,  # initial threshold learning phase
    "threshold": 0.25,  # threshold position between noise and signal peak levels
    "min_contrast": 1.7,  # median integrated energy at the beats / median over the record; below: noise, no beats
    "band_hz": (8.0, 25.0),  # QRS band-pass (upper edge lowered below Nyquist at low rates)
    "chunk_s": 300.0,  # longer records are processed in chunks of this length (bounded memory)
    "chunk_overlap_s": 5.0,  # ... each chunk extended by this on both sides
    "extra_height": 0.9,  # extra-beat rule: weaker than this fraction of the neighbours' energy ... (0: off)
    "extra_span": 1.3,  # ... and its neighbours at most this many local median RR apart: dropped (_drop_extra_beats)
    "lead_weighting": "contrast",  # how leads enter the summed energy: "equal" or "contrast" (see _lead_weights)
    "detector": "package",  # "package" (this module), "xqrs", "gqrs" (wfdb) or "neurokit2:<method>" (see BACKENDS)
}

#: keys of the settings saved by checkpoints written before ``lead_weighting`` and ``detector`` existed: such a
#: saved dict is completed with the behaviour of that time (equal lead weights, the package's detector), so an
#: old checkpoint keeps tokenizing exactly as it was trained
_FIRST_RELEASE_KEYS = frozenset(("refractory_s", "integration_s", "twave_s", "twave_slope", "refine_s", "learn_s",
                                 "threshold", "min_contrast", "band_hz", "chunk_s", "chunk_overlap_s"))

#: neurokit2 R-peak methods accepted as ``"neurokit2:<method>"`` (all measured in benchmarks/qrs.py)
NEUROKIT2_METHODS = ("neurokit", "pantompkins1985", "hamilton2002", "elgendi2010", "engzeemod2012", "kalidas2017",
                     "nabian2018", "rodrigues2021", "christov2004", "zong2003", "martinez2004")
# (manikandan2012 is left out: in neurokit2 0.3.0 it raises a TypeError on MIT-BIH records under numpy 2)
#: neurokit2 methods that have their own cleaning in ``neurokit2.ecg_clean`` (the others use its default)
_NEUROKIT2_OWN_CLEAN = ("neurokit", "pantompkins1985", "hamilton2002", "elgendi2010", "engzeemod2012")


def _as_2d(signal) -> np.ndarray:
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"signal must have shape (leads, samples) or (samples,), got {x.shape}.")
    return x


def _check_rate(sampling_rate) -> float:
    if not (isinstance(sampling_rate, (int, float, np.integer, np.floating)) and sampling_rate > 0):
        raise ValueError(f"sampling_rate must be a positive number of Hz, got {sampling_rate!r}.")
    fs = float(sampling_rate)
    if fs < 40:
        raise ValueError(f"sampling_rate {fs} Hz is too low for QRS detection (need >= 40 Hz).")
    return fs


def _present_leads(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return np.nan_to_num(x[keep], nan=0.0, posinf=0.0, neginf=0.0)


def _robust_scale(a: np.ndarray) -> np.ndarray:
    """Per-row amplitude scale (99th percentile); 0 for flat rows."""
    return np.percentile(a, 99, axis=-1)


def qrs_settings(**overrides) -> dict:
    """``QRS_DEFAULTS`` updated with ``overrides`` (unknown names raise ``ValueError``)."""
    unknown = sorted(set(overrides) - set(QRS_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown QRS setting(s) {unknown}; known: {sorted(QRS_DEFAULTS)}")
    cfg = dict(QRS_DEFAULTS)
    if _FIRST_RELEASE_KEYS <= set(overrides) and "lead_weighting" not in overrides:
        cfg["lead_weighting"] = "equal"  # a complete dict saved by an older checkpoint (see _FIRST_RELEASE_KEYS)
    if _FIRST_RELEASE_KEYS <= set(overrides) and "extra_height" not in overrides:
        cfg["extra_height"] = 0.0  # saved before the extra-beat rule existed: keep tokenizing as it was trained
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    _check_detector(cfg["detector"])
    cfg["band_hz"] = tuple(float(v) for v in cfg["band_hz"])
    if len(cfg["band_hz"]) != 2 or not 0 < cfg["band_hz"][0] < cfg["band_hz"][1]:
        raise ValueError(f"band_hz must be (low, high) with 0 < low < high, got {cfg['band_hz']}.")
    for k in ("refractory_s", "integration_s", "twave_s", "refine_s", "learn_s", "chunk_s", "min_contrast",
              "extra_span"):
        if not float(cfg[k]) > 0:
            raise ValueError(f"QRS setting {k} must be positive, got {cfg[k]!r}.")
    if not 0 <= float(cfg["extra_height"]) < 1:
        raise ValueError(f"QRS setting extra_height must be in [0, 1) (0 turns the rule off), "
                         f"got {cfg['extra_height']!r}.")
    if cfg["lead_weighting"] not in ("equal", "contrast"):
        raise ValueError(f"lead_weighting must be 'equal' or 'contrast', got {cfg['lead_weighting']!r}.")
    if cfg["chunk_overlap_s"] < 0 or cfg["chunk_overlap_s"] * 2 >= cfg["chunk_s"]:
        raise ValueError("chunk_overlap_s must be >= 0 and less than half of chunk_s.")
    return cfg


def detect_qrs(signal, sampling_rate: float, lead_mask=None, **settings) -> np.ndarray:
    """R-peak sample indices of ``signal`` ((leads, samples) or (samples,)) sampled at ``sampling_rate`` Hz.

    ``lead_mask`` (leads,) selects the present leads; absent leads are ignored entirely. Non-finite samples
    are treated as 0. ``settings`` override :data:`QRS_DEFAULTS`. Returns a sorted int64 array, empty when no
    beat is found (flat line, asystole, a signal too short to hold one).

    ``settings["detector"]`` picks the backend (see the module docstring); library backends use the first
    present lead. With the package's own detector, records longer than ``chunk_s`` are processed in chunks of that length, each extended by
    ``chunk_overlap_s`` on both sides and keeping only the beats of its own core, so memory stays bounded
    by the chunk length whatever the record length (a 24 h Holter needs as much as a 5 min strip).
    """
    fs = _check_rate(sampling_rate)
    cfg = qrs_settings(**settings)
    x = _as_2d(signal)
    keep = np.ones(x.shape[0], dtype=bool) if lead_mask is None else np.asarray(lead_mask, dtype=bool).reshape(-1)
    if keep.shape[0] != x.shape[0]:
        raise ValueError(f"lead_mask has {keep.shape[0]} entries for {x.shape[0]} leads.")
    if cfg["detector"] != "package":
        return _detect_library(_present_leads(x, keep), fs, cfg)
    n = x.shape[-1]
    chunk = int(round(cfg["chunk_s"] * fs))
    if n <= chunk + int(round(2 * cfg["chunk_overlap_s"] * fs)):
        return _detect(_present_leads(x, keep), fs, cfg)
    margin = int(round(cfg["chunk_overlap_s"] * fs))
    found = []
    for core in range(0, n, chunk):
        lo, hi = max(0, core - margin), min(n, core + chunk + margin)
        peaks = _detect(_present_leads(x[:, lo:hi], keep), fs, cfg) + lo
        found.append(peaks[(peaks >= core) & (peaks < core + chunk)])
    peaks = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
    # a beat split by a chunk border may be found on both sides: re-apply the refractory period
    refractory = max(1, int(round(cfg["refractory_s"] * fs)))
    if peaks.size > 1:
        peaks = peaks[np.concatenate([[True], np.diff(peaks) >= refractory])]
    return peaks.astype(np.int64)


def _lead_weights(mwi_leads: np.ndarray, mode: str) -> np.ndarray:
    """Weight of each lead in the summed energy.

    ``"equal"``: every lead 1 (each lead is already scaled to the same 99th-percentile energy).
    ``"contrast"``: each lead weighted by its QRS contrast (99th percentile of its integrated energy over its
    median), relative to the best lead; a lead whose background is as high as its beats (noise, wander
    leaking through, a loose electrode) then adds little instead of as much as a clean lead.
    """
    if mode == "equal" or mwi_leads.shape[0] == 1:
        return np.ones(mwi_leads.shape[0])
    contrast = np.percentile(mwi_leads, 99, axis=-1) / np.maximum(np.median(mwi_leads, axis=-1), 1e-12)
    return contrast / contrast.max()


def _features(x: np.ndarray, fs: float, cfg: dict):
    """Integrated QRS energy, |band-passed signal| and slope, summed over the weighted live leads of ``x``;
    ``None`` when every lead is flat."""
    n = x.shape[-1]
    low, high = cfg["band_hz"]
    high = min(high, 0.45 * fs)
    sos = butter(2, [low, high], btype="bandpass", fs=fs, output="sos")
    padlen = min(3 * (2 * len(sos) + 1), n - 1)
    bp = sosfiltfilt(sos, x - x.mean(axis=-1, keepdims=True), axis=-1, padlen=padlen)

    deriv = np.gradient(bp, axis=-1)
    energy = deriv**2
    scale = _robust_scale(energy)
    live = scale > 0
    if not live.any():
        return None
    w = max(1, int(round(cfg["integration_s"] * fs)))
    kernel = np.ones(w) / w
    energy = energy[live] / scale[live, None]
    mwi_leads = np.stack([np.convolve(e, kernel, mode="same") for e in energy])
    weight = _lead_weights(mwi_leads, cfg["lead_weighting"])
    mwi = (weight[:, None] * mwi_leads).sum(0)
    abs_bp = np.abs(bp[live])
    abs_bp = (weight[:, None] * abs_bp / np.maximum(_robust_scale(abs_bp), 1e-12)[:, None]).sum(0)
    slope = np.abs(deriv[live]) / np.maximum(_robust_scale(np.abs(deriv[live])), 1e-12)[:, None]
    slope = (weight[:, None] * slope).sum(0)
    return mwi, abs_bp, slope


def _detect(x: np.ndarray, fs: float, cfg: dict) -> np.ndarray:
    """One chunk of :func:`detect_qrs` on the present leads ``x`` (leads, samples)."""
    n = x.shape[-1]
    empty = np.zeros(0, dtype=np.int64)
    if x.shape[0] == 0 or n < int(0.5 * fs):
        return empty
    feats = _features(x, fs, cfg)
    if feats is None:
        return empty
    mwi, abs_bp, slope = feats

    refractory = max(1, int(round(cfg["refractory_s"] * fs)))
    cand, _ = find_peaks(mwi, distance=refractory)
    if cand.size == 0:
        return empty
    heights = mwi[cand]

    learn = mwi[: max(int(cfg["learn_s"] * fs), 1)]
    spki = 0.25 * float(learn.max())
    npki = 0.5 * float(learn.mean())
    half_w = max(1, int(round(0.04 * fs)))
    thr_frac, twave_s, twave_slope = float(cfg["threshold"]), float(cfg["twave_s"]), float(cfg["twave_slope"])

    def max_slope(p: int) -> float:
        return float(slope[max(0, p - half_w) : p + half_w + 1].max())

    beats: list[int] = []
    beat_slopes: list[float] = []
    rr_avg = None
    noise_cands: list[tuple[int, float]] = []  # candidates rejected since the last beat

    def accept(p: int, h: float, weight: float):
        nonlocal spki, rr_avg
        if beats:
            rr = p - beats[-1]
            rr_avg = rr if rr_avg is None else 0.875 * rr_avg + 0.125 * rr
        beats.append(p)
        beat_slopes.append(max_slope(p))
        # cap the update so one artefact cannot lift the signal level far above real beats
        spki = weight * min(h, 3.0 * spki if spki > 0 else h) + (1 - weight) * spki
        noise_cands.clear()

    def search_back(limit: int):
        """No beat for 1.66 RR: accept the strongest rejected candidate above half the threshold."""
        nonlocal npki
        if rr_avg is None or not beats or limit - beats[-1] <= 1.66 * rr_avg:
            return
        thr2 = 0.5 * (npki + thr_frac * (spki - npki))
        pool = [(p, h) for p, h in noise_cands if p - beats[-1] > refractory and h > thr2]
        if pool:
            p, h = max(pool, key=lambda ph: ph[1])
            accept(p, h, 0.25)

    for p, h in zip(cand.tolist(), heights.tolist()):
        search_back(p)
        thr1 = npki + thr_frac * (spki - npki)
        is_beat = h > thr1 and (not beats or p - beats[-1] > refractory)
        if is_beat and beats and p - beats[-1] < twave_s * fs and max_slope(p) < twave_slope * beat_slopes[-1]:
            is_beat = False  # T wave
        if is_beat:
            accept(p, h, 0.125)
        else:
            npki = 0.125 * h + 0.875 * npki
            noise_cands.append((p, h))
    search_back(n + (int(1.66 * rr_avg) if rr_avg else 0))

    # refine each beat to the local maximum of |band-passed signal|; then re-apply the refractory period
    r = max(1, int(round(cfg["refine_s"] * fs)))
    refined = []
    for p in beats:
        lo, hi = max(0, p - r), min(n, p + r + 1)
        refined.append(lo + int(np.argmax(abs_bp[lo:hi])))
    out: list[int] = []
    for q in sorted(refined):
        if out and q - out[-1] < refractory:
            if abs_bp[q] > abs_bp[out[-1]]:
                out[-1] = q
            continue
        out.append(q)
    out = _drop_extra_beats(np.asarray(out, dtype=np.int64), mwi, fs, cfg)
    return _noise_gate(out, mwi, cfg)


def _drop_extra_beats(peaks: np.ndarray, mwi: np.ndarray, fs: float, cfg: dict) -> np.ndarray:
    """The extra-beat rule (module docstring, step 6): drop weak detections that split a regular RR interval.

    A beat's strength is the peak of the integrated energy ``mwi`` within half an integration window of it.
    Beat ``i`` (not the first or last) is an extra beat when its strength is under ``extra_height`` times the
    median strength of beats ``i-2, i-1, i+1, i+2`` and ``peaks[i+1] - peaks[i-1]`` is at most ``extra_span``
    times the median RR of the intervals among beats ``i-8 .. i+8``. Of two adjacent extra beats only the
    weaker one (relative to its neighbours) is dropped, then the rule is applied again to what is left: a real
    beat next to a false one (a P wave just before it) is judged again without it, and stays.
    """
    height, span = float(cfg["extra_height"]), float(cfg["extra_span"])
    if height <= 0:
        return peaks
    w = max(1, int(round(0.5 * cfg["integration_s"] * fs)))
    strength = np.array([mwi[max(0, p - w) : p + w + 1].max() for p in peaks])
    while peaks.size >= 4:
        k = peaks.size
        rr = np.diff(peaks)
        ratio = np.full(k, np.inf)  # strength / neighbours' strength, for the extra beats only
        for i in range(1, k - 1):
            r = strength[i] / max(float(np.median(strength[[j for j in (i - 2, i - 1, i + 1, i + 2) if j < k]])), 1e-12)
            if r < height and peaks[i + 1] - peaks[i - 1] <= span * float(np.median(rr[max(0, i - 8) : i + 8])):
                ratio[i] = r
        left, right = np.r_[np.inf, ratio[:-1]], np.r_[ratio[1:], np.inf]
        drop = np.isfinite(ratio) & (ratio <= left) & (ratio < right)
        if not drop.any():
            break
        peaks, strength = peaks[~drop], strength[~drop]
    return peaks


def _noise_gate(peaks: np.ndarray, mwi: np.ndarray, cfg: dict) -> np.ndarray:
    """No beats when the integrated energy at the peaks is not clearly above the record's median (noise)."""
    if peaks.size and float(np.median(mwi[peaks])) < float(cfg["min_contrast"]) * float(np.median(mwi)):
        return np.zeros(0, dtype=np.int64)
    return peaks


# ------------------------------------------------------------------------------------- library backends
def _check_detector(name) -> None:
    if name in ("package", "xqrs", "gqrs"):
        return
    if isinstance(name, str) and name.startswith("neurokit2:"):
        method = name.split(":", 1)[1]
        if method in NEUROKIT2_METHODS:
            return
        raise ValueError(f"unknown neurokit2 QRS method {method!r}; known: {', '.join(NEUROKIT2_METHODS)}.")
    raise ValueError(f"QRS detector must be 'package', 'xqrs', 'gqrs' or 'neurokit2:<method>', got {name!r}.")


def _optional(module: str, detector: str):
    """Import an optional library by name (``importlib``, so remote-code loading never requires it)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        raise ImportError(
            f"QRS detector {detector!r} needs the {package} package, which is not installed: "
            f"pip install {package} (or pip install 'ecgnat-hf[qrs]'), or use qrs_settings={{'detector': 'package'}}."
        ) from exc


def _library_peaks(lead: np.ndarray, fs: float, detector: str) -> np.ndarray:
    """R peaks of one lead from wfdb's xqrs/gqrs or a neurokit2 method (single-channel detectors)."""
    import warnings

    if detector in ("xqrs", "gqrs"):
        processing = _optional("wfdb.processing", detector)
        if detector == "xqrs":
            return np.asarray(processing.xqrs_detect(sig=lead, fs=fs, verbose=False), dtype=np.int64)
        return np.asarray(processing.gqrs_detect(sig=lead, fs=fs), dtype=np.int64)
    nk = _optional("neurokit2", detector)
    method = detector.split(":", 1)[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clean = nk.ecg_clean(lead, sampling_rate=fs, method=method if method in _NEUROKIT2_OWN_CLEAN else "neurokit")
        try:
            _, info = nk.ecg_peaks(clean, sampling_rate=fs, method=method)
        except (ValueError, IndexError, ZeroDivisionError):
            # neurokit2 raises these on signals without a detectable beat (flat, very short): no beats
            return np.zeros(0, dtype=np.int64)
        except Exception as exc:  # anything else is a library failure: say which backend, never guess beats
            raise RuntimeError(f"QRS detector {detector!r} failed on a {lead.size / fs:.1f} s signal at {fs:g} Hz: "
                               f"{type(exc).__name__}: {exc}") from exc
    return np.asarray(info["ECG_R_Peaks"], dtype=np.int64)


def _detect_library(x: np.ndarray, fs: float, cfg: dict) -> np.ndarray:
    """A library backend on the first present lead of ``x``, with the package's noise gate applied after."""
    if x.shape[0] == 0 or x.shape[-1] < int(0.5 * fs):
        return np.zeros(0, dtype=np.int64)
    lead = x[0]
    if not np.ptp(lead) > 0:
        return np.zeros(0, dtype=np.int64)
    feats = _features(lead[None], fs, cfg)
    if feats is None:
        return np.zeros(0, dtype=np.int64)
    peaks = _library_peaks(lead, fs, cfg["detector"])
    peaks = np.unique(peaks[(peaks >= 0) & (peaks < lead.size)])
    return _noise_gate(peaks, feats[0], cfg)


def match_peaks(detected, reference, tolerance: int) -> tuple[int, int, int]:
    """One-to-one matching of detected to reference peaks within ``tolerance`` samples.

    Returns ``(true positives, false negatives, false positives)``. Both lists are sorted and matched
    greedily in time order (each reference takes the nearest unused detection within tolerance).
    """
    det = np.sort(np.asarray(detected, dtype=np.int64).reshape(-1))
    ref = np.sort(np.asarray(reference, dtype=np.int64).reshape(-1))
    used = np.zeros(det.size, dtype=bool)
    tp = 0
    for r in ref:
        lo, hi = np.searchsorted(det, r - tolerance), np.searchsorted(det, r + tolerance, side="right")
        best, best_d = -1, None
        for j in range(lo, hi):
            if not used[j] and (best_d is None or abs(det[j] - r) < best_d):
                best, best_d = j, abs(det[j] - r)
        if best >= 0:
            used[best] = True
            tp += 1
    return tp, int(ref.size - tp), int(det.size - tp)


def beat_window_samples(sampling_rate: float, window_s=(0.25, 0.45)) -> tuple[int, int]:
    """Samples before and after the R peak in one beat window."""
    pre, post = window_s
    if pre < 0 or post <= 0:
        raise ValueError(f"window_s must be (seconds before >= 0, seconds after > 0), got {window_s}.")
    return int(round(pre * sampling_rate)), int(round(post * sampling_rate))


@dataclass
class BeatTokens:
    """Heartbeats of one record.

    beats: (n_beats, leads, beat_samples) windows ``[r - pre, r + post)`` around each R peak, zero-padded
        where they cross the record edges (and all zero for padding beats).
    rr_intervals: (n_beats, 2) previous and next RR interval in seconds. At the record edges, where a
        neighbour is missing, the other interval (or the median RR) is used; 0 for a record with one beat.
    r_peaks: (n_beats,) R-peak sample indices (-1 for padding beats).
    beat_mask: (n_beats,) True for real beats, False for padding up to ``max_beats``.
    """

    beats: np.ndarray
    rr_intervals: np.ndarray
    r_peaks: np.ndarray
    beat_mask: np.ndarray

    @property
    def num_beats(self) -> int:
        return int(self.beat_mask.sum())


def _rr_features(r_peaks: np.ndarray, fs: float) -> np.ndarray:
    k = len(r_peaks)
    rr = np.zeros((k, 2), dtype=np.float32)
    if k < 2:
        return rr
    d = np.diff(r_peaks).astype(np.float64) / fs
    prev = np.concatenate([[np.nan], d])
    nxt = np.concatenate([d, [np.nan]])
    prev[0] = nxt[0]
    nxt[-1] = prev[-1]
    rr[:, 0] = prev
    rr[:, 1] = nxt
    return rr


def tokenize_beats(
    signal,
    sampling_rate: float,
    r_peaks=None,
    window_s=(0.25, 0.45),
    max_beats: int | None = None,
    lead_mask=None,
    qrs: dict | None = None,
) -> BeatTokens:
    """Cut ``signal`` ((leads, samples) or (samples,)) into fixed-size beat windows around each R peak.

    ``r_peaks`` defaults to :func:`detect_qrs` (on the leads of ``lead_mask``, with the ``qrs`` settings). A
    record without beats gives zero tokens (``num_beats == 0``; with ``max_beats`` all padding). With ``max_beats`` the first
    ``max_beats`` beats are kept and the result is padded to exactly ``max_beats`` (``beat_mask`` marks real
    beats). RR intervals are computed from all detected beats, before truncation.
    """
    fs = _check_rate(sampling_rate)
    x = np.nan_to_num(_as_2d(signal), nan=0.0, posinf=0.0, neginf=0.0)
    if r_peaks is None:
        r_peaks = detect_qrs(x, fs, lead_mask=lead_mask, **(qrs or {}))
    r_peaks = np.asarray(r_peaks, dtype=np.int64).reshape(-1)
    if r_peaks.size and (r_peaks.min() < 0 or r_peaks.max() >= x.shape[-1]):
        raise ValueError(f"r_peaks must lie in [0, {x.shape[-1]}), got range [{r_peaks.min()}, {r_peaks.max()}].")
    r_peaks = np.sort(r_peaks)
    rr = _rr_features(r_peaks, fs)
    if max_beats is not None:
        if max_beats < 1:
            raise ValueError(f"max_beats must be >= 1, got {max_beats}.")
        r_peaks, rr = r_peaks[:max_beats], rr[:max_beats]
    pre, post = beat_window_samples(fs, window_s)
    width = pre + post
    leads, n = x.shape
    k = len(r_peaks)
    total = k if max_beats is None else max_beats
    beats = np.zeros((total, leads, width), dtype=np.float32)
    padded = np.pad(x, ((0, 0), (pre, post)))
    for i, r in enumerate(r_peaks):
        beats[i] = padded[:, r : r + width]  # padded index r == original index r - pre
    rr_out = np.zeros((total, 2), dtype=np.float32)
    rr_out[:k] = rr
    peaks_out = np.full(total, -1, dtype=np.int64)
    peaks_out[:k] = r_peaks
    mask = np.zeros(total, dtype=bool)
    mask[:k] = True
    return BeatTokens(beats=beats, rr_intervals=rr_out, r_peaks=peaks_out, beat_mask=mask)


def tokenize_batch(
    signals,
    sampling_rate: float,
    lead_mask=None,
    window_s=(0.25, 0.45),
    max_beats: int | None = None,
    qrs: dict | None = None,
    as_numpy: bool = False,
):
    """Tokenize a batch of recordings (batch, leads, samples) into padded torch tensors (numpy with ``as_numpy``).

    Returns a dict with ``beats`` (batch, max_beats, leads, beat_samples) float32, ``beat_mask``
    (batch, max_beats) bool, ``rr`` (batch, max_beats, 2) float32 seconds and ``r_peaks``
    (batch, max_beats) int64 (-1 on padding). Without ``max_beats`` the batch is padded to its longest record.
    Absent leads (``lead_mask`` False) are zeroed before cutting, so their content never reaches the beats.
    A record in which no QRS is found (flat line, asystole, noise) has no real beat: its ``beat_mask`` row is
    all False (``num_beats`` 0). The beat axis has at least one slot, so such a batch still has a shape the
    model accepts; BEAT-Net then uses its learned empty-sequence token for that record.
    ``num_beats`` (batch,) int64 counts the real beats of each row (after ``max_beats``).
    """
    if hasattr(signals, "detach"):  # torch tensor
        signals = signals.detach().cpu().float().numpy()
    x = np.asarray(signals, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"signals must have shape (batch, leads, samples), got {x.shape}.")
    b, leads, n = x.shape
    if lead_mask is None:
        masks = np.ones((b, leads), dtype=bool)
    else:
        if hasattr(lead_mask, "detach"):
            lead_mask = lead_mask.detach().cpu().numpy()
        masks = np.asarray(lead_mask, dtype=bool)
        if masks.shape != (b, leads):
            raise ValueError(f"lead_mask must have shape {(b, leads)}, got {masks.shape}.")
    x = np.where(masks[:, :, None], np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    toks = []
    for i in range(b):
        peaks = detect_qrs(x[i], sampling_rate, lead_mask=masks[i], **(qrs or {}))
        toks.append(tokenize_beats(x[i], sampling_rate, r_peaks=peaks, window_s=window_s, max_beats=max_beats))
    total = max_beats if max_beats is not None else max([1] + [t.beats.shape[0] for t in toks])
    pre, post = beat_window_samples(float(sampling_rate), window_s)
    width = pre + post
    beats = np.zeros((b, total, leads, width), dtype=np.float32)
    rr = np.zeros((b, total, 2), dtype=np.float32)
    peaks = np.full((b, total), -1, dtype=np.int64)
    mask = np.zeros((b, total), dtype=bool)
    for i, t in enumerate(toks):
        k = t.beats.shape[0]
        beats[i, :k], rr[i, :k], peaks[i, :k], mask[i, :k] = t.beats, t.rr_intervals, t.r_peaks, t.beat_mask
    out = {"beats": beats, "beat_mask": mask, "rr": rr, "r_peaks": peaks, "num_beats": mask.sum(1).astype(np.int64)}
    if as_numpy:
        return out
    import torch

    return {k: torch.from_numpy(v) for k, v in out.items()}
