"""One record through a classifier, for the page: predictions, printout, beats and lead attention, timeline.

:func:`analyse_record` puts the package's own pieces together, so the page shows what ``ecgnat predict``
and ``ecgnat plot`` would give for the same record and checkpoint:

* **predictions**: :func:`ecgnat_hf.inference.predict_records` on the record file (the streaming path:
  read, resampled and windowed one chunk at a time, so a 24-hour Holter needs no more memory than a
  10-second ECG), with the checkpoint's decision thresholds (``config.decision_thresholds``), the
  fraction of time above each threshold and, for records longer than one window, the timeline of every
  window's probabilities. Records longer than ``whole_window_after_s`` (1 hour) are scored with
  whole-window strides (each second scored once: half the windows, a timeline point per window);
* **printout**: :func:`ecgnat_hf.plotting.plot_ecg_12lead` on a 10-second segment (25 mm/s, 10 mm/mV),
  the box holding every class's probability;
* **beats and lead attention**: :func:`ecgnat_hf.plotting.record_lead_attention` on the same segment
  (ECG-NAT lead fusion or BEAT-Net spatial attention; ResNet1d has none, its beats are still shown);
* **timeline**: :func:`ecgnat_hf.plotting.plot_timeline` with the thresholds, and the time above each.

Files for download (CSV, JSON, PNG) are written to ``out_dir``. Errors are the package's typed errors
(:class:`~ecgnat_hf.data.errors.ECGDataError` and the feature extractor's :class:`ECGInputError`), each
naming the record and the problem.
"""
from __future__ import annotations

import copy
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = ["Analysis", "analyse_record", "model_kind", "AF_PATTERN"]

#: class names whose time above threshold is called the AF burden
AF_PATTERN = re.compile(r"^(AF|AFIB|AFLT|AFL|AF/AFL|AFIB/AFL|ATRIAL[ _-]?FIBRILLATION)$", re.IGNORECASE)
_SEGMENT_S = 10.0
# resolution of the page's figures: the printout's 1 mm grid is 4.3 px at 110 dpi. Drawing and PNG encoding are
# most of the time a 10 s record takes, so PNGs are written with light compression.
_PRINTOUT_DPI, _FIGURE_DPI = 110, 100


def _save_png(fig, path: Path, dpi: int) -> None:
    fig.savefig(path, dpi=dpi, facecolor=fig.get_facecolor(), pil_kwargs={"compress_level": 1})


def model_kind(model) -> str:
    """``"ECG-NAT"``, ``"BEAT-Net"``, ``"ResNet1d"`` or the config's model type."""
    t = str(getattr(model.config, "model_type", ""))
    return {"ecgnat": "ECG-NAT", "beatnet": "BEAT-Net", "ecgnat-resnet1d": "ResNet1d"}.get(t, t or "model")


@dataclass
class Analysis:
    """What the page shows for one record."""

    record_id: str
    duration_s: float
    sampling_rate: float
    n_leads_file: int
    leads_used: list[str]
    leads_ignored: list[str]
    plotted_leads: list[str]
    quality: list[str]
    labels: list[str]
    table: Any  # pandas.DataFrame: class, probability, threshold, above, time above threshold
    thresholds_source: str
    n_windows: int
    window_s: float
    stride_s: float
    segment_start_s: float
    figures: dict[str, Path] = field(default_factory=dict)
    downloads: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    af_burden: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def summary_markdown(self) -> str:
        dur = _duration_text(self.duration_s)
        lines = [f"### Record {self.record_id}: {dur}, {self.n_leads_file} channel(s) at {self.sampling_rate:g} Hz"]
        if self.labels:
            lines.append("**Above threshold: " + ", ".join(self.labels) + "**")
        else:
            lines.append("**No class above its threshold.**")
        for name, frac in self.af_burden.items():
            lines.append(f"**AF burden ({name}): {100 * frac:.1f}% of the recording above threshold**")
        pooled = (f"mean over {self.n_windows} windows of {self.window_s:g} s, one every {self.stride_s:g} s"
                  if self.n_windows > 1 else f"one window of {self.window_s:g} s")
        lines.append(f"Probabilities: {pooled}. Thresholds: {self.thresholds_source}.")
        lines.append(f"Leads used by the model: {', '.join(self.leads_used)}"
                     + (f"; ignored: {', '.join(self.leads_ignored)}" if self.leads_ignored else ""))
        lines.append(f"Printout: {len(self.plotted_leads)} of 12 standard leads plotted "
                     f"({', '.join(self.plotted_leads)}), {self.segment_start_s:g}-{self.segment_start_s + _SEGMENT_S:g} s")
        if self.quality:
            lines.append("Signal quality: " + "; ".join(self.quality))
        lines.extend(self.notes)
        lines.append(f"Analysed in {self.seconds:.1f} s. Research use only: not a medical device.")
        return "\n\n".join(lines)


def _duration_text(seconds: float) -> str:
    if seconds >= 3 * 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 180:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def _thresholds_text(source: str) -> str:
    return {"config": "fitted on the validation split (config.decision_thresholds)",
            "argmax": "single-label model: the most probable class",
            "none": "none (regression)"}.get(source, source)


def analyse_record(
    model,
    feature_extractor,
    record_path: str | Path,
    out_dir: str | Path,
    *,
    lead_names: Sequence[str] | Mapping[str, str] | None = None,
    start_s: float = 0.0,
    whole_window_after_s: float = 3600.0,
    batch_size: int = 32,
    chunk_s: float = 600.0,
    progress: Callable[[float, str], None] | None = None,
    title: str | None = None,
    num_workers: int = 1,
) -> Analysis:
    """Analyse one record file (see the module docstring); raises the package's typed errors.

    ``num_workers``: window batches scored at once, each in its own thread
    (:func:`ecgnat_hf.inference.window_outputs`; for ``torch.set_num_threads(1)``)."""
    import pandas as pd

    from ..data.records import read_record
    from ..inference import _label_columns, predict_records
    from ..training.thresholds import label_names_from_config

    t0 = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record_path = Path(record_path)
    probe = read_record(record_path, start=0, stop=0)  # the header only: length, rate, names
    n_samples = int(probe.metadata.get("record_samples", probe.n_samples))
    duration = n_samples / float(probe.sampling_rate)
    if n_samples == 0:
        from ..data.errors import InvalidSignalError

        raise InvalidSignalError(probe.path, "the record has no samples")
    fe = copy.deepcopy(feature_extractor)  # the stride may change per record; the shared one stays as it is
    if duration > whole_window_after_s:
        fe.window_stride_s = float(fe.window_s)
    rid = probe.record_id

    seen = [0]

    def hook(x, fs, names):
        from ..inference import signal_quality_findings

        seen[0] += x.shape[-1]
        if progress is not None:
            progress(min(0.95, 0.95 * seen[0] / max(n_samples, 1)), f"scoring {_duration_text(duration)} of recording")
        return signal_quality_findings(x, fs, names)

    if progress is not None:
        progress(0.0, "reading the record")
    pred_csv = out_dir / f"{rid}_predictions.csv"
    timeline_csv = out_dir / f"{rid}_timeline.csv"
    df = predict_records(model, [record_path], feature_extractor=fe, batch_size=batch_size, lead_names=lead_names,
                         progress=False, output_csv=pred_csv, timeline=timeline_csv, strict=True, chunk_s=chunk_s,
                         quality_fn=hook, num_workers=num_workers)
    (out_dir / f"{rid}_predictions.run.json").unlink(missing_ok=True)  # predict's resume file: not for the page
    row = df.iloc[0]
    config = model.config
    names = label_names_from_config(config)
    cols = _label_columns(config)
    thresholds = df.attrs.get("thresholds") or {}
    probs = {n: float(row[c]) for n, c in zip(names, cols)}
    labels = [x for x in str(row["labels"]).split(";") if x]
    time_above = {n: float(row[f"time_positive_{c}"]) for n, c in zip(names, cols) if f"time_positive_{c}" in row}
    n_windows = int(row["n_windows"])
    long_record = n_windows > 1
    table = pd.DataFrame({
        "class": names,
        "probability": [round(probs[n], 3) for n in names],
        "threshold": [round(float(thresholds[c]), 3) if c in thresholds else None for c in cols],
        "above threshold": ["yes" if n in labels else "no" for n in names],
    })
    if long_record and time_above:
        table["time above threshold (%)"] = [round(100 * time_above.get(n, float("nan")), 1) for n in names]
    table = table.sort_values("probability", ascending=False, kind="stable").reset_index(drop=True)
    af = {n: time_above[n] for n in names if AF_PATTERN.match(n) and n in time_above and long_record}

    analysis = Analysis(
        record_id=rid, duration_s=duration, sampling_rate=float(probe.sampling_rate), n_leads_file=probe.n_leads,
        leads_used=[x for x in str(row["leads_used"]).split(",") if x],
        leads_ignored=[x for x in str(row["leads_ignored"]).split(",") if x],
        plotted_leads=[], quality=[x for x in str(row["quality"]).split(";") if x], labels=labels, table=table,
        thresholds_source=_thresholds_text(str(df.attrs.get("thresholds_source"))), n_windows=n_windows,
        window_s=float(fe.window_s), stride_s=float(fe.window_stride_s), segment_start_s=0.0, af_burden=af,
    )
    if duration > whole_window_after_s:
        analysis.notes.append(f"Recording longer than {_duration_text(whole_window_after_s)}: windows do not "
                              "overlap (each second scored once).")

    # ---- the 10 s shown: printout, beats, lead attention
    if progress is not None:
        progress(0.96, "drawing the figures")
    start = float(start_s or 0.0)
    if not math.isfinite(start) or start < 0:
        start = 0.0
    start = min(start, max(0.0, duration - _SEGMENT_S))
    fs = float(probe.sampling_rate)
    a, b = int(round(start * fs)), min(n_samples, int(round((start + _SEGMENT_S) * fs)))
    analysis.segment_start_s = a / fs
    mapping = lead_names if isinstance(lead_names, Mapping) else None
    segment = read_record(record_path, start=a, stop=b, lead_names=mapping)
    leads_list = None if isinstance(lead_names, Mapping) else lead_names
    _draw_segment(analysis, model, fe, segment, leads_list, probs, out_dir, title, batch_size)

    # ---- timeline
    if long_record:
        from ..plotting.figures import plot_timeline

        tl = pd.read_csv(timeline_csv)
        tl.columns = list(tl.columns[:5]) + names  # probability columns under their class names
        path = out_dir / f"{rid}_timeline.png"
        fig = plot_timeline(tl, thresholds={n: float(thresholds[c]) for n, c in zip(names, cols) if c in thresholds},
                      title=f"{rid}: class probabilities over the recording (dashed: decision thresholds)")
        _save_png(fig, path, dpi=_FIGURE_DPI)
        analysis.figures["timeline"] = path
    else:
        timeline_csv.unlink(missing_ok=True)

    analysis.seconds = time.monotonic() - t0
    json_path = out_dir / f"{rid}_predictions.json"
    json_path.write_text(json.dumps(_as_json(analysis, probs, thresholds, names, cols, time_above, model), indent=2)
                         + "\n", encoding="utf-8")
    analysis.downloads = [p for p in (pred_csv, json_path, timeline_csv if long_record else None) if p is not None]
    analysis.downloads += list(analysis.figures.values())
    if progress is not None:
        progress(1.0, "done")
    return analysis


def _draw_segment(analysis: Analysis, model, fe, segment, leads, probs, out_dir: Path, title, batch_size) -> None:
    from ..data.errors import ECGDataError
    from ..inference import select_leads
    from ..models.ecgnat.feature_extraction_ecgnat import LEAD_ALIASES, ECGInputError, _squash
    from ..plotting.figures import plot_beats_and_lead_attention, plot_ecg_12lead
    from ..plotting.lead_attention import record_lead_attention

    rid, fs = analysis.record_id, float(segment.sampling_rate)
    signal, used, _ = select_leads(segment, leads, None)  # every standard lead of the record (as named)
    canon = [LEAD_ALIASES[_squash(n)] for n in used]
    rows, plotted = [], []
    for i, c in enumerate(canon):  # first of any duplicates
        if c not in plotted:
            rows.append(i)
            plotted.append(c)
    signal = signal[rows]
    analysis.plotted_leads = plotted
    head = title or rid
    meta = segment.metadata or {}
    if meta.get("age") is not None:
        head += f", age {meta['age']:g}"
    if meta.get("sex"):
        head += f", {meta['sex']}"
    kind = model_kind(model)
    path = out_dir / f"{rid}_printout.png"
    fig = plot_ecg_12lead(signal, fs, plotted, title=f"{head}  ({kind}: {'; '.join(analysis.labels) or 'no class above threshold'})",
                          prediction=probs, max_predictions=len(probs), start_s=analysis.segment_start_s,
                          offset_s=analysis.segment_start_s, record_duration_s=analysis.duration_s)
    _save_png(fig, path, dpi=_PRINTOUT_DPI)
    analysis.figures["printout"] = path

    att_path = out_dir / f"{rid}_beats_lead_attention.png"
    span = f"{analysis.segment_start_s:g}-{analysis.segment_start_s + signal.shape[1] / fs:g} s"
    if kind in ("ECG-NAT", "BEAT-Net"):
        try:
            model_signal, model_used, _ = select_leads(segment, leads, fe.lead_names)
            att = record_lead_attention(model, fe, model_signal, fs, model_used, batch_size=batch_size)
        except (ECGDataError, ECGInputError, ValueError) as exc:
            analysis.notes.append(f"Lead attention: not available for {span} ({getattr(exc, 'problem', exc)}).")
            att = None
        if att is not None:
            unit = "beats" if att["unit"] == "beat" else "stem tokens"
            fig = plot_beats_and_lead_attention(
                signal, fs, plotted, att["beat_times_s"], att["weights"], att["lead_names"], weight_mask=att["lead_mask"],
                offset_s=analysis.segment_start_s,
                title=f"{rid}, {span}: detected beats and {kind} lead attention (mean over {att['n_units']} {unit})")
            _save_png(fig, att_path, dpi=_FIGURE_DPI)
            analysis.figures["beats_lead_attention"] = att_path
            return
    from ..models.beatnet.qrs import detect_qrs

    beats = detect_qrs(signal, fs) / fs
    fig = plot_beats_and_lead_attention(signal, fs, plotted, beats, None, offset_s=analysis.segment_start_s,
                                        title=f"{rid}, {span}: detected beats ({kind} has no lead attention)")
    _save_png(fig, att_path, dpi=_FIGURE_DPI)
    analysis.figures["beats_lead_attention"] = att_path


def _as_json(a: Analysis, probs, thresholds, names, cols, time_above, model) -> dict:
    return {
        "record_id": a.record_id, "duration_s": a.duration_s, "sampling_rate": a.sampling_rate,
        "model": {"kind": model_kind(model), "name_or_path": str(getattr(model, "name_or_path", "") or "")},
        "labels": a.labels,
        "probabilities": probs,
        "thresholds": {n: float(thresholds[c]) for n, c in zip(names, cols) if c in thresholds},
        "thresholds_source": a.thresholds_source,
        "time_above_threshold": time_above if a.n_windows > 1 else None,
        "af_burden": a.af_burden or None,
        "n_windows": a.n_windows, "window_s": a.window_s, "window_stride_s": a.stride_s,
        "leads_used": a.leads_used, "leads_ignored": a.leads_ignored, "quality": a.quality,
        "printout_start_s": a.segment_start_s, "analysis_seconds": round(a.seconds, 3),
        "note": "Research use only: not a medical device, not for clinical decisions.",
    }
