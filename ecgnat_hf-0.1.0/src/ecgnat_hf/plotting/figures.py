"""Figures for ECG work: a clinical 12-lead printout, lead-fusion attention, ROC curves, label efficiency.

Every function builds a ``matplotlib.figure.Figure`` on an Agg canvas directly (no ``pyplot``): nothing
touches the global backend or pyplot's figure registry, so this works headless, in worker processes
and inside notebooks alike, and figures are freed when dropped. Each returns the Figure and, when
``path`` is given, also saves it there (format from the file extension, PNG by default).

The 12-lead printout follows the clinical convention: 25 mm/s and 10 mm/mV on ECG paper (1 mm minor
squares = 0.04 s x 0.1 mV, 5 mm major squares = 0.2 s x 0.5 mV), leads in 3 rows x 4 columns of
2.5 s each (I aVR V1 V4 / II aVL V2 V5 / III aVF V3 V6), a 10 s lead II rhythm strip at the bottom,
and a 1 mV calibration pulse at the start of each row.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

__all__ = [
    "CANONICAL_LEADS",
    "CLINICAL_LAYOUT",
    "plot_ecg_12lead",
    "plot_lead_fusion",
    "plot_beats_and_lead_attention",
    "plot_roc_curves",
    "plot_label_efficiency",
    "plot_timeline",
]

CANONICAL_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
#: rows of the standard printout, each row = 4 columns of 2.5 s
CLINICAL_LAYOUT = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))

_MM = 1 / 25.4  # inches per mm
_PAPER = "#fff6f4"
_MINOR = "#f5c6c0"
_MAJOR = "#e07b72"
_TRACE = "#111111"
_MISSING_FACE = "#e4e4e4"
_MISSING_TEXT = "#6b6b6b"


def _new_figure(width_in: float, height_in: float, dpi: int = 150) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike | None, **kwargs: Any) -> None:
    if path is None:
        return
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(path, facecolor=fig.get_facecolor(), **kwargs)


def _norm_lead(name: str) -> str:
    return str(name).strip().upper().replace(" ", "")


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _paper_axes(ax, x0: float, x1: float, y0: float, y1: float, face: str = _PAPER) -> None:
    """Turn ``ax`` into a piece of ECG paper: minor 0.04 s / 0.1 mV, major 0.2 s / 0.5 mV lines."""
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_facecolor(face)
    grid_minor = _MINOR if face == _PAPER else "#d2d2d2"
    grid_major = _MAJOR if face == _PAPER else "#b5b5b5"
    # draw the grid as line collections (faster and crisper than tick-based grids with 250+ lines)
    xs_minor = np.arange(math.ceil(x0 / 0.04 - 1e-6), math.floor(x1 / 0.04 + 1e-6) + 1) * 0.04
    ys_minor = np.arange(math.ceil(y0 / 0.1 - 1e-6), math.floor(y1 / 0.1 + 1e-6) + 1) * 0.1
    major_x = np.isclose(np.mod(np.round(xs_minor / 0.04), 5), 0)
    major_y = np.isclose(np.mod(np.round(ys_minor / 0.1), 5), 0)
    for xs, lw, col in ((xs_minor[~major_x], 0.35, grid_minor), (xs_minor[major_x], 0.8, grid_major)):
        if len(xs):
            ax.vlines(xs, y0, y1, colors=col, linewidths=lw, zorder=0)
    for ys, lw, col in ((ys_minor[~major_y], 0.35, grid_minor), (ys_minor[major_y], 0.8, grid_major)):
        if len(ys):
            ax.hlines(ys, x0, x1, colors=col, linewidths=lw, zorder=0)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _robust_center(seg: np.ndarray, half_height: float) -> float:
    """Centre of a panel, snapped so that the panel's top edge lies on a 0.5 mV major grid line:
    then the grid runs on continuously from panel to panel, as on one sheet of ECG paper."""
    seg = seg[np.isfinite(seg)]
    if seg.size == 0:
        return 0.0
    lo, hi = np.percentile(seg, [1, 99])
    top = math.ceil(((lo + hi) / 2 + half_height) / 0.5 - 0.5) * 0.5
    return top - half_height


def plot_ecg_12lead(
    signal: Any,
    sampling_rate: float,
    lead_names: Sequence[str] | None = None,
    title: str | None = None,
    prediction: Mapping[str, float] | None = None,
    lead_mask: Any = None,
    path: str | os.PathLike | None = None,
    *,
    start_s: float = 0.0,
    row_height_mv: float | None = None,
    rhythm_lead: str = "II",
    max_predictions: int = 8,
    dpi: int = 150,
    offset_s: float = 0.0,
    record_duration_s: float | None = None,
) -> Figure:
    """Plot an ECG as a clinical 12-lead printout on ECG paper.

    Args:
        signal: array (leads, samples) in mV (numpy or torch).
        sampling_rate: samples per second of ``signal``.
        lead_names: names of the rows of ``signal`` (default: the 12 canonical leads in order).
            Matching is case-insensitive; any of the 12 standard leads not named is drawn as
            "not recorded", so a 1- or 2-lead recording can be shown in the same layout.
        title: text in the header (e.g. record id, age/sex).
        prediction: ``{label: probability}`` shown as a text box (highest first, at most
            ``max_predictions``).
        lead_mask: (leads,) booleans aligned with ``signal`` rows; False marks a lead that was not
            recorded (drawn greyed out with "not recorded", never as a flat line).
        path: where to save the figure (optional).
        start_s: start of the 10 s window shown (for recordings longer than 10 s).
        offset_s, record_duration_s: when ``signal`` is a piece of a longer record (``ecgnat plot`` reads
            only the 10 s it shows): the time of its first sample in the record, and the record's duration
            (default: the piece's), so that the printout states the record's times.
        row_height_mv: height of each row in mV (10 mm per mV); default: fitted to the signal,
            between 3 and 5 mV.
        rhythm_lead: lead of the bottom rhythm strip; if absent, the first recorded lead is used
            and the strip says so.

    Returns:
        the Figure: 12 lead panels + 1 rhythm strip = 13 axes.
    """
    sig = _to_numpy(signal).astype(np.float64, copy=False)
    if sig.ndim == 1:
        sig = sig[None, :]
    if sig.ndim != 2:
        raise ValueError(f"signal must have shape (leads, samples), got {sig.shape}")
    if not sampling_rate or sampling_rate <= 0:
        raise ValueError(f"sampling_rate must be a positive number of Hz, got {sampling_rate!r}")
    n_leads, n = sig.shape
    if lead_names is None:
        if n_leads != 12:
            raise ValueError(
                f"signal has {n_leads} leads: pass lead_names to say which they are (default assumes the 12 "
                f"canonical leads {list(CANONICAL_LEADS)})"
            )
        lead_names = CANONICAL_LEADS
    lead_names = [str(x) for x in lead_names]
    if len(lead_names) != n_leads:
        raise ValueError(f"{len(lead_names)} lead_names for a signal with {n_leads} leads")
    if lead_mask is None:
        mask = np.ones(n_leads, dtype=bool)
    else:
        mask = _to_numpy(lead_mask).astype(bool).reshape(-1)
        if mask.shape[0] != n_leads:
            raise ValueError(f"lead_mask has {mask.shape[0]} entries for a signal with {n_leads} leads")

    canon = {_norm_lead(c): c for c in CANONICAL_LEADS}
    unknown = [x for x in lead_names if _norm_lead(x) not in canon]
    if unknown:
        raise ValueError(f"unknown lead name(s) {unknown}; expected some of {list(CANONICAL_LEADS)}")
    rows_by_lead: dict[str, np.ndarray | None] = {c: None for c in CANONICAL_LEADS}
    for i, name in enumerate(lead_names):
        x = sig[i]
        if mask[i] and np.isfinite(x).any():
            rows_by_lead[canon[_norm_lead(name)]] = x

    fs = float(sampling_rate)
    t = np.arange(n) / fs
    panel_s = 2.5
    total_s = 4 * panel_s

    def window(x: np.ndarray, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
        i0 = max(int(round((start_s - offset_s + a) * fs)), 0)
        i1 = min(int(round((start_s - offset_s + b) * fs)) + 1, n)
        return t[i0:i1] - (start_s - offset_s), x[i0:i1]

    if row_height_mv is None:
        # fit the tallest 2.5 s panel (each panel is centred on its own signal), 3-5 mV, whole mV
        spans = []
        for x in (v for v in rows_by_lead.values() if v is not None):
            for c in range(4):
                _, seg = window(x, c * panel_s, (c + 1) * panel_s)
                seg = seg[np.isfinite(seg)]
                if seg.size:
                    lo, hi = np.percentile(seg, [0.5, 99.5])
                    spans.append(hi - lo)
        row_height_mv = float(np.clip(math.ceil((max(spans) if spans else 2.0) + 0.5), 3.0, 5.0))

    # geometry in mm: paper is 250 mm (10 s) wide, each row row_height_mv * 10 mm high
    left_mm, right_mm, top_mm, bottom_mm = 14.0, 6.0, 24.0, 8.0
    row_mm = row_height_mv * 10.0
    paper_w = total_s * 25.0
    paper_h = 4 * row_mm
    fig_w = left_mm + paper_w + right_mm
    fig_h = top_mm + paper_h + bottom_mm
    fig = _new_figure(fig_w * _MM, fig_h * _MM, dpi=dpi)
    fig.set_facecolor("white")

    def rect(x_mm: float, y_from_top_mm: float, w_mm: float, h_mm: float) -> list[float]:
        return [x_mm / fig_w, 1 - (y_from_top_mm + h_mm) / fig_h, w_mm / fig_w, h_mm / fig_h]

    label_kw = dict(fontsize=9, fontweight="bold", va="top", ha="left", zorder=5)
    for r, row in enumerate(CLINICAL_LAYOUT):
        for c, lead in enumerate(row):
            ax = fig.add_axes(rect(left_mm + c * panel_s * 25.0, top_mm + r * row_mm, panel_s * 25.0, row_mm))
            ax.set_label(f"lead {lead}")
            a, b = c * panel_s, (c + 1) * panel_s
            x = rows_by_lead[lead]
            if x is None:
                _paper_axes(ax, a, b, -row_height_mv / 2, row_height_mv / 2, face=_MISSING_FACE)
                ax.text(
                    (a + b) / 2, 0, "not recorded", ha="center", va="center", fontsize=10, style="italic",
                    color=_MISSING_TEXT, zorder=5,
                )
                ax.text(a + 0.06, row_height_mv / 2 - 0.12, lead, color=_MISSING_TEXT, **label_kw)
                continue
            tt, seg = window(x, a, b)
            center = _robust_center(seg, row_height_mv / 2)
            y0, y1 = center - row_height_mv / 2, center + row_height_mv / 2
            _paper_axes(ax, a, b, y0, y1)
            ax.plot(tt, seg, color=_TRACE, linewidth=0.7, zorder=3, clip_on=True)
            ax.text(a + 0.06, y1 - 0.12, lead, color=_TRACE, **label_kw)
            if c > 0:  # lead-change marker, as on printed ECGs
                ax.vlines(a, center - 0.35, center + 0.35, colors=_TRACE, linewidth=1.0, zorder=4)

    # rhythm strip
    strip_lead = rhythm_lead if rows_by_lead.get(rhythm_lead) is not None else next(
        (k for k in CANONICAL_LEADS if rows_by_lead[k] is not None), None
    )
    ax = fig.add_axes(rect(left_mm, top_mm + 3 * row_mm, paper_w, row_mm))
    ax.set_label("rhythm strip")
    if strip_lead is None:
        _paper_axes(ax, 0, total_s, -row_height_mv / 2, row_height_mv / 2, face=_MISSING_FACE)
        ax.text(total_s / 2, 0, "no lead recorded", ha="center", va="center", fontsize=10, style="italic",
                color=_MISSING_TEXT)
    else:
        tt, seg = window(rows_by_lead[strip_lead], 0, total_s)
        center = _robust_center(seg, row_height_mv / 2)
        y0, y1 = center - row_height_mv / 2, center + row_height_mv / 2
        _paper_axes(ax, 0, total_s, y0, y1)
        ax.plot(tt, seg, color=_TRACE, linewidth=0.7, zorder=3)
        label = strip_lead if strip_lead == rhythm_lead else f"{strip_lead} (rhythm; {rhythm_lead} not recorded)"
        ax.text(0.06, y1 - 0.12, label, color=_TRACE, **label_kw)

    # 1 mV / 0.2 s calibration pulse in the left margin of every row (drawn in figure mm coordinates)
    for r in range(4):
        base_mm = top_mm + r * row_mm + row_mm / 2 + 5.0  # 0.5 mV below the row centre
        xs = [left_mm - 11, left_mm - 8, left_mm - 8, left_mm - 3, left_mm - 3, left_mm - 0.5]
        ys = [base_mm, base_mm, base_mm - 10, base_mm - 10, base_mm, base_mm]
        fig.add_artist(Line2D([x / fig_w for x in xs], [1 - y / fig_h for y in ys], color=_TRACE, linewidth=0.9,
                              transform=fig.transFigure))
    # border around the paper
    fig.add_artist(Rectangle((left_mm / fig_w, bottom_mm / fig_h), paper_w / fig_w, paper_h / fig_h, fill=False,
                             edgecolor=_MAJOR, linewidth=1.0, transform=fig.transFigure))

    # header: title, scale, predictions
    fig.text(left_mm / fig_w, 1 - 5 / fig_h, title or "12-lead ECG", fontsize=12, fontweight="bold", va="top")
    dur = record_duration_s if record_duration_s is not None else offset_s + n / fs
    scale = f"25 mm/s   10 mm/mV   {fs:g} Hz   shown {start_s:g}-{start_s + total_s:g} s of {dur:.1f} s"
    missing = [k for k in CANONICAL_LEADS if rows_by_lead[k] is None]
    if missing:
        scale += f"   not recorded: {', '.join(missing)}"
    fig.text(left_mm / fig_w, 1 - 12 / fig_h, scale, fontsize=8, va="top", color="#333333")
    fig.text(left_mm / fig_w, bottom_mm / fig_h - 2.5 / fig_h,
             "Research use only - not a medical device, not for clinical decisions.",
             fontsize=7, va="top", color="#777777")
    if prediction:
        items = sorted(((str(k), float(v)) for k, v in prediction.items()), key=lambda kv: -kv[1])[:max_predictions]
        cols = 4
        width = max(len(k) for k, _ in items)
        lines = []
        for i in range(0, len(items), cols):
            lines.append("   ".join(f"{k:<{width}} {v:.2f}" for k, v in items[i:i + cols]))
        fig.text(
            1 - right_mm / fig_w, 1 - 3 / fig_h, "model output (probability)\n" + "\n".join(lines), ha="right",
            va="top", multialignment="left", fontsize=8, family="monospace",
            bbox=dict(boxstyle="round,pad=0.4", facecolor="white", edgecolor="#888888", linewidth=0.8),
        )
    _save(fig, path, dpi=dpi)
    return fig


def plot_lead_fusion(
    weights: Any,
    lead_names: Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
    time_step_s: float | None = None,
) -> Figure:
    """Show lead-fusion attention: a bar chart for ``(leads,)`` weights, a heatmap for ``(time, leads)``.

    Args:
        weights: attention weights per lead, averaged over time (1-D) or per time step (2-D,
            time along axis 0). Rows need not sum to one; values are shown as given.
        lead_names: names of the leads (default: the 12 canonical leads).
        time_step_s: duration of one time step (for a time axis in seconds); token index otherwise.
    """
    w = _to_numpy(weights).astype(np.float64)
    if w.ndim not in (1, 2):
        raise ValueError(f"weights must have shape (leads,) or (time, leads), got {w.shape}")
    n_leads = w.shape[-1]
    if lead_names is None:
        if n_leads != len(CANONICAL_LEADS):
            raise ValueError(f"{n_leads} leads: pass lead_names")
        lead_names = CANONICAL_LEADS
    lead_names = [str(x) for x in lead_names]
    if len(lead_names) != n_leads:
        raise ValueError(f"{len(lead_names)} lead_names for weights with {n_leads} leads")

    if w.ndim == 1:
        fig = _new_figure(7.0, 3.6)
        ax = fig.add_subplot(1, 1, 1)
        order = np.arange(n_leads)
        colors = ["#c0392b" if i == int(np.nanargmax(w)) else "#5d7fa3" for i in order]
        ax.bar(order, w, color=colors, edgecolor="#333333", linewidth=0.5)
        ax.axhline(1.0 / n_leads, color="#888888", linestyle="--", linewidth=0.8, label=f"uniform (1/{n_leads})")
        ax.set_xticks(order, lead_names)
        ax.set_ylabel("attention weight")
        ax.set_xlabel("lead")
        ax.legend(frameon=False, fontsize=8, loc="upper right")
        ax.spines[["top", "right"]].set_visible(False)
    else:
        fig = _new_figure(9.0, 4.2)
        ax = fig.add_subplot(1, 1, 1)
        n_t = w.shape[0]
        extent_x = n_t * time_step_s if time_step_s else n_t
        im = ax.imshow(w.T, aspect="auto", interpolation="nearest", cmap="magma", origin="upper",
                       extent=(0, extent_x, n_leads - 0.5, -0.5))
        ax.set_yticks(np.arange(n_leads), lead_names)
        ax.set_xlabel("time (s)" if time_step_s else "time step (token)")
        ax.set_ylabel("lead")
        cb = fig.colorbar(im, ax=ax, pad=0.02)
        cb.set_label("attention weight")
    ax.set_title(title or "Lead-fusion attention")
    fig.tight_layout()
    _save(fig, path, dpi=150)
    return fig


def plot_beats_and_lead_attention(
    signal: Any,
    sampling_rate: float,
    lead_names: Sequence[str],
    beat_times_s: Any,
    weights: Any,
    weight_lead_names: Sequence[str] | None = None,
    *,
    weight_mask: Any = None,
    path: str | os.PathLike | None = None,
    start_s: float = 0.0,
    duration_s: float = 10.0,
    title: str | None = None,
) -> Figure:
    """The record with its detected beats marked, beside each lead's attention weight.

    Args:
        signal: (leads, samples) in mV, one row per name in ``lead_names``.
        beat_times_s: R-peak times in seconds from the record start (drawn as vertical lines).
        weights: (leads,) attention per lead, e.g. from
            :func:`ecgnat_hf.plotting.lead_attention.record_lead_attention` (ECG-NAT lead fusion or BEAT-Net
            spatial encoder), in the order of ``weight_lead_names`` (default: the 12 canonical leads).
        weight_mask: (leads,) bool, leads present in the model input; absent ones are labelled, not drawn.
        start_s, duration_s: the span of the record shown.
    """
    x = _to_numpy(signal).astype(np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] != len(lead_names):
        raise ValueError(f"signal must be (leads, samples) with one row per lead name, got {x.shape} for "
                         f"{len(lead_names)} names")
    if not (isinstance(sampling_rate, (int, float, np.integer, np.floating)) and sampling_rate > 0):
        raise ValueError(f"sampling_rate must be a positive number, got {sampling_rate!r}")
    w = _to_numpy(weights).astype(np.float64).reshape(-1)
    names_w = [str(n) for n in (weight_lead_names if weight_lead_names is not None else CANONICAL_LEADS)]
    if len(names_w) != w.shape[0]:
        raise ValueError(f"{len(names_w)} weight_lead_names for {w.shape[0]} weights")
    present = np.ones(w.shape[0], dtype=bool) if weight_mask is None else _to_numpy(weight_mask).astype(bool).reshape(-1)
    fs = float(sampling_rate)
    i0 = int(max(0.0, start_s) * fs)
    i1 = min(x.shape[1], i0 + int(duration_s * fs))
    t = np.arange(i0, i1) / fs
    beats = np.asarray(_to_numpy(beat_times_s), dtype=np.float64).reshape(-1)
    shown = beats[(beats >= i0 / fs) & (beats < i1 / fs)]

    n = x.shape[0]
    fig = _new_figure(12.0, max(3.6, 0.55 * n + 1.6))
    gs = fig.add_gridspec(1, 2, width_ratios=(3.2, 1.0), wspace=0.25)
    ax = fig.add_subplot(gs[0, 0])
    ax.set_label("record with beats")
    for k in range(n):
        seg = x[k, i0:i1]
        center = float(np.median(seg)) if seg.size else 0.0
        spread = np.percentile(np.abs(seg - center), 99) if seg.size else 1.0
        ax.plot(t, (seg - center) / (2.2 * spread if spread > 0 else 1.0) - k, color=_TRACE, linewidth=0.6)
    for b in shown:
        ax.axvline(b, color="#c0392b", linewidth=0.7, alpha=0.6)
    ax.set_yticks(-np.arange(n), [str(v) for v in lead_names])
    ax.set_ylim(-n + 0.4, 0.8)
    ax.set_xlim(i0 / fs, i1 / fs)
    ax.set_xlabel("time (s)")
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(f"{len(beats)} detected beats (red lines; {len(shown)} in this {(i1 - i0) / fs:.1f} s)", fontsize=9)

    bx = fig.add_subplot(gs[0, 1])
    bx.set_label("lead attention")
    order = np.arange(w.shape[0])
    vals = np.where(present, w, 0.0)
    best = int(np.argmax(vals)) if present.any() else -1
    colors = ["#c0392b" if i == best else ("#5d7fa3" if present[i] else _MISSING_FACE) for i in order]
    bx.barh(order, vals, color=colors, edgecolor="#333333", linewidth=0.4)
    for i in order[~present]:
        bx.text(0.0, i, "  absent", va="center", fontsize=7, color=_MISSING_TEXT)
    if present.any():
        bx.axvline(1.0 / present.sum(), color="#888888", linestyle="--", linewidth=0.8,
                   label=f"uniform (1/{int(present.sum())})")
        bx.legend(frameon=False, fontsize=7, loc="lower right")
    bx.set_yticks(order, names_w)
    bx.invert_yaxis()
    bx.set_xlabel("attention weight (sums to 1)")
    bx.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title or "Detected beats and lead attention", fontsize=10)
    _save(fig, path, dpi=150)
    return fig


def plot_roc_curves(
    y_true: Any,
    y_score: Any,
    label_names: Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """One ROC curve per class, AUROC in the legend, macro AUROC in the title.

    Args:
        y_true: (n, classes) multi-hot, or (n,) integer class ids (single-label; one-vs-rest).
        y_score: (n, classes) scores (probabilities or logits).
        label_names: class names (default ``class 0``, ``class 1``, ...).
    Classes with only one outcome present in ``y_true`` have no ROC curve; they are listed as n/a.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    score = _to_numpy(y_score).astype(np.float64)
    if score.ndim == 1:
        score = score[:, None]
    truth = _to_numpy(y_true)
    n_classes = score.shape[1]
    if truth.ndim == 1 and n_classes > 1:
        ids = truth.astype(int)
        if ids.min(initial=0) < 0 or ids.max(initial=0) >= n_classes:
            raise ValueError(f"class ids in y_true must be in [0, {n_classes}), got {ids.min()}..{ids.max()}")
        truth = np.eye(n_classes, dtype=int)[ids]
    truth = truth.reshape(score.shape[0], -1).astype(int)
    if truth.shape != score.shape:
        raise ValueError(f"y_true {truth.shape} and y_score {score.shape} do not match")
    if label_names is None:
        label_names = [f"class {i}" for i in range(n_classes)]
    if len(label_names) != n_classes:
        raise ValueError(f"{len(label_names)} label_names for {n_classes} classes")

    fig = _new_figure(6.0, 5.6)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="#aaaaaa", linestyle="--", linewidth=0.8, label="chance (0.500)")
    aucs = []
    for k, name in enumerate(label_names):
        yk = truth[:, k]
        if yk.min() == yk.max():
            ax.plot([], [], " ", label=f"{name}: n/a (one class only)")
            continue
        fpr, tpr, _ = roc_curve(yk, score[:, k])
        auc = roc_auc_score(yk, score[:, k])
        aucs.append(auc)
        ax.plot(fpr, tpr, linewidth=1.4, label=f"{name}: AUROC {auc:.3f} (n+={int(yk.sum())})")
    macro = f"macro AUROC {np.mean(aucs):.3f}" if aucs else "no class has both outcomes"
    ax.set_title(f"{title or 'ROC curves'} - {macro}", fontsize=10)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7.5, frameon=True)
    fig.tight_layout()
    _save(fig, path, dpi=150)
    return fig


def plot_label_efficiency(
    table: Sequence[Mapping[str, Any]],
    metric_name: str,
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
    references: Mapping[str, float] | None = None,
) -> Figure:
    """Metric vs fraction of labels used, one line per model, error bars = std over seeds/splits.

    Args:
        table: rows ``{"fraction": 0.01, "model": "ecgnat-tiny", "mean": 0.81, "std": 0.02}``
            (``std`` optional). Fractions in (0, 1]; the x axis is logarithmic, labelled in percent.
        metric_name: y-axis label (e.g. "macro AUROC").
        references: optional ``{name: value}`` drawn as horizontal dotted lines (published numbers).
    """
    if not table:
        raise ValueError("table is empty: nothing to plot")
    by_model: dict[str, list[tuple[float, float, float]]] = {}
    for row in table:
        try:
            frac = float(row["fraction"])
            mean = float(row["mean"])
            model = str(row["model"])
        except KeyError as e:
            raise ValueError(f"label-efficiency row {dict(row)} lacks {e}; need fraction, model, mean (and std)") from e
        if not 0 < frac <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {frac} (model {model})")
        std = row.get("std")
        by_model.setdefault(model, []).append((frac, mean, float(std) if std is not None else 0.0))

    fig = _new_figure(6.4, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    markers = "osD^vP*X"
    fracs_all = set()
    for i, (model, pts) in enumerate(by_model.items()):
        pts.sort()
        f, m, s = (np.array(v) for v in zip(*pts))
        fracs_all.update(f.tolist())
        ax.errorbar(f, m, yerr=s, marker=markers[i % len(markers)], markersize=5, capsize=3, linewidth=1.4,
                    label=model)
    for j, (name, value) in enumerate((references or {}).items()):
        ax.axhline(float(value), linestyle=":", linewidth=1.0, color=f"C{len(by_model) + j}", label=name)
    ax.set_xscale("log")
    ticks = sorted(fracs_all)
    ax.set_xticks(ticks, [f"{100 * x:g}%" for x in ticks])
    ax.minorticks_off()
    ax.set_xlabel("fraction of labelled training data (log scale)")
    ax.set_ylabel(metric_name)
    ax.set_title(title or f"Label efficiency: {metric_name}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    _save(fig, path, dpi=150)
    return fig


def plot_timeline(
    timeline: Any,
    path: str | os.PathLike | None = None,
    *,
    record_id: str | None = None,
    thresholds: Mapping[str, float] | None = None,
    classes: Sequence[str] | None = None,
    title: str | None = None,
    max_records: int = 6,
) -> Figure:
    """Class probabilities over each recording, from an ``ecgnat predict --timeline`` file.

    Args:
        timeline: the timeline file (``.csv`` or ``.parquet``) or its DataFrame: columns ``record_id,
            path, window, start_s, end_s`` and one probability column per class.
        record_id: draw only this record (default: every record in the file, one panel each, at most
            ``max_records``).
        thresholds: ``{class: threshold}`` drawn as dashed lines (the checkpoint's
            ``config.decision_thresholds``), with the fraction of time at or above each in the legend.
        classes: the classes to draw (default: all).

    Each window's probability is drawn over the time it stands for (from its start to the next
    window's start, as in ``time_positive_<class>`` of the per-record summary); the time axis is in
    seconds, minutes, hours or days depending on the length.
    """
    import pandas as pd

    df = timeline
    if not isinstance(df, pd.DataFrame):
        p = os.fspath(timeline)
        df = pd.read_parquet(p) if p.lower().endswith((".parquet", ".pq")) else pd.read_csv(p)
    base = ["record_id", "path", "window", "start_s", "end_s"]
    missing = [c for c in base if c not in df.columns]
    if missing:
        raise ValueError(f"not a timeline: columns {missing} are missing (expected {base} + one per class)")
    all_classes = [c for c in df.columns if c not in base]
    classes = list(all_classes if classes is None else classes)
    unknown = [c for c in classes if c not in all_classes]
    if unknown or not classes:
        raise ValueError(f"unknown classes {unknown}; the timeline has {all_classes}")
    df = df.assign(record_id=df["record_id"].astype(str))
    if record_id is not None:
        df = df[df["record_id"] == str(record_id)]
        if df.empty:
            raise ValueError(f"record {record_id!r} is not in the timeline")
    groups = list(df.groupby("path", sort=False))
    if not groups:
        raise ValueError("the timeline has no windows")
    if len(groups) > max_records:
        raise ValueError(f"{len(groups)} records in the timeline: pick one with record_id "
                         f"(e.g. {groups[0][1]['record_id'].iloc[0]!r})")
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
              "#7f7f7f", "#bcbd22"]
    fig = _new_figure(11.0, 2.0 + 2.4 * len(groups))
    for i, (rec_path, g) in enumerate(groups):
        g = g.sort_values("window")
        start = g["start_s"].to_numpy(dtype=np.float64)
        end = g["end_s"].to_numpy(dtype=np.float64)
        duration = float(end.max())
        owned_end = np.r_[start[1:], duration]  # each window stands for the time up to the next start
        owned = np.clip(owned_end - start, 0.0, None)
        unit, scale = ("days", 86400.0) if duration > 3 * 86400 else ("hours", 3600.0) if duration > 3 * 3600 else (
            "minutes", 60.0) if duration > 180 else ("seconds", 1.0)
        ax = fig.add_subplot(len(groups), 1, i + 1)
        x = np.r_[start, duration] / scale
        for k, c in enumerate(classes):
            color = colors[k % len(colors)]
            y = g[c].to_numpy(dtype=np.float64)
            label = str(c)
            t = None if thresholds is None else thresholds.get(c)
            if t is not None:
                frac = float(owned[y >= t].sum() / owned.sum()) if owned.sum() > 0 else float("nan")
                label += f" ({100 * frac:.1f}% of time >= {t:.2f})"
                ax.axhline(t, color=color, linestyle="--", linewidth=0.8, alpha=0.8)
            ax.stairs(y, x, color=color, linewidth=0.9, label=label, baseline=None)
        ax.set_xlim(0, duration / scale)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("probability")
        rid = str(g["record_id"].iloc[0])
        n = len(g)
        ax.set_title(f"{rid}: {n} window{'s' if n != 1 else ''} over {duration / scale:.3g} {unit}", fontsize=9,
                     loc="left")
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_xlabel(f"time from the start of the recording ({unit})", fontsize=8)
    fig.suptitle(title or "Class probabilities over the recording", fontsize=11)
    fig.tight_layout()
    _save(fig, path, dpi=120)
    return fig
