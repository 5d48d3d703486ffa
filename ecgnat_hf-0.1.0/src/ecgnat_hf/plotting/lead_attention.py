"""Which leads a model attends to, for one record: ECG-NAT's lead fusion and BEAT-Net's spatial encoder.

:func:`record_lead_attention` runs a classifier over the windows of one record (its own feature extractor)
and returns the attention weight of each lead averaged over the record, with the beats found in it:

* ECG-NAT: ``lead_fusion_weights`` (one softmax over the present leads per stem token), averaged over the
  stem tokens that cover real samples of every window;
* BEAT-Net: ``lead_weights`` of the spatial encoder (one softmax over the present leads per beat), averaged
  over the real beats of every window.

Either way each averaged vector sums to one over the present leads, and absent leads get exactly 0. The beats
are the R peaks that BEAT-Net's detector finds in the model's input windows (the same ones BEAT-Net tokenizes),
mapped back to seconds in the record; for ECG-NAT they are only drawn, the model does not use them.

:func:`beatnet_plot_command` is ``ecgnat plot -m <BEAT-Net checkpoint>``: the 12-lead printout with the
predictions, and the record with its beats marked beside the spatial lead attention.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["record_lead_attention", "beatnet_plot_command"]


def _beat_times(features, fs: float, qrs: dict | None, refractory_s: float) -> np.ndarray:
    """R peaks of every window of ``features`` in seconds from the record start (overlaps merged)."""
    from ..models.beatnet.qrs import detect_qrs

    times = []
    values = np.asarray(features["input_values"])
    masks = np.asarray(features["lead_mask"]).astype(bool)
    starts = np.asarray(features.get("window_start", np.zeros(len(values))), dtype=np.float64)
    attention = features.get("attention_mask")
    for i in range(len(values)):
        n = int(np.asarray(attention[i]).sum()) if attention is not None else values.shape[-1]
        peaks = detect_qrs(values[i][:, :n], fs, lead_mask=masks[i], **(qrs or {}))
        times.extend(starts[i] + peaks / fs)
    times = np.sort(np.asarray(times, dtype=np.float64))
    if times.size > 1:  # the same beat seen by two overlapping windows
        keep = np.concatenate([[True], np.diff(times) >= refractory_s])
        times = times[keep]
    return times


def record_lead_attention(model, feature_extractor, signal, sampling_rate: float, lead_names,
                          batch_size: int = 32) -> dict[str, Any]:
    """Lead attention of ``model`` (ECG-NAT or BEAT-Net classifier) on one record.

    Returns ``{"weights": (leads,) in the extractor's lead order, "lead_names", "lead_mask": (leads,) bool,
    "n_units": tokens (ECG-NAT) or beats (BEAT-Net) averaged over, "unit": "stem token" | "beat",
    "beat_times_s": R peaks in seconds, "probabilities": (classes,) mean over windows, "n_windows"}``.
    Raises the extractor's error (naming the record as "input") when the record cannot be used, e.g. a
    BEAT-Net extractor's ``NoBeatsError`` for a record without any beat.
    """
    import torch

    from ..inference import scores_to_probabilities

    fe = feature_extractor
    feats = fe(signal, sampling_rate=sampling_rate, lead_names=lead_names)
    values = torch.as_tensor(np.asarray(feats["input_values"]))
    lead_mask = torch.as_tensor(np.asarray(feats["lead_mask"])).bool()
    attention = feats.get("attention_mask")
    beatnet = getattr(model.config, "model_type", None) == "beatnet"
    total = np.zeros(values.shape[1], dtype=np.float64)
    count = 0
    logits = []
    device = next(model.parameters()).device
    with torch.inference_mode():
        for i in range(0, values.shape[0], batch_size):
            out = model(input_values=values[i:i + batch_size].to(device), lead_mask=lead_mask[i:i + batch_size].to(device),
                        output_lead_weights=True, return_dict=True)
            logits.append(out.logits.float().cpu().numpy())
            if beatnet:
                w = out.lead_weights.float().cpu().numpy()  # (windows, beats, leads), 0 on padding beats
                total += w.reshape(-1, w.shape[-1]).sum(0)
                count += int(out.num_beats.sum())
            else:
                w = out.lead_fusion_weights.float().cpu().numpy()  # (windows, stem tokens, leads)
                patch = int(getattr(model.config, "patch_size", 1))
                for j in range(w.shape[0]):
                    n_real = int(np.asarray(attention[i + j]).sum()) if attention is not None else values.shape[-1]
                    real = w[j, : max(1, -(-n_real // patch))]
                    total += real.sum(0)
                    count += real.shape[0]
    present = lead_mask.any(0).numpy()
    weights = total / max(count, 1)
    probs = scores_to_probabilities(np.concatenate(logits), model.config).mean(axis=0)
    qrs = dict(getattr(model.config, "qrs_settings", None) or getattr(fe, "qrs_settings", None) or {})
    refractory = float(qrs.get("refractory_s", 0.2))
    return {
        "weights": weights, "lead_names": list(fe.lead_names), "lead_mask": present, "n_units": count,
        "unit": "beat" if beatnet else "stem token",
        "beat_times_s": _beat_times(feats, float(fe.sampling_rate), qrs, refractory),
        "probabilities": probs, "n_windows": int(values.shape[0]),
    }


def beatnet_plot_command(args, model, fe, record, leads, rows, names, title, output) -> int:
    """``ecgnat plot`` for a BEAT-Net checkpoint: printout with predictions (``output``) and the record with its
    beats and the spatial lead attention (``--fusion_output``, default ``<output stem>_lead_attention.png``)."""
    from ..data.errors import ECGDataError
    from ..inference import _as_data_error, select_leads
    from .figures import plot_beats_and_lead_attention, plot_ecg_12lead

    try:
        signal, used, _ = select_leads(record, leads, fe.lead_names)
        att = record_lead_attention(model, fe, signal, record.sampling_rate, used, batch_size=args.batch_size)
    except ECGDataError:
        raise
    except ValueError as exc:  # the extractor's errors (NoBeatsError among them) name "input": name the record
        raise _as_data_error(exc, record.path) from exc
    id2label = model.config.id2label
    probs = att["probabilities"]
    labels = [str(id2label.get(i, f"LABEL_{i}")) for i in range(len(probs))]
    prediction = dict(sorted(zip(labels, map(float, probs)), key=lambda kv: -kv[1])[: args.top_k])
    if att["n_windows"] > 1:
        title += f"  (predictions: mean over {att['n_windows']} windows of {fe.window_s:g} s)"
    plot_ecg_12lead(record.signal[rows], record.sampling_rate, names, title=title, prediction=prediction,
                    path=output, start_s=args.start_s, max_predictions=args.top_k)
    print(f"wrote {output}")
    out2 = Path(args.fusion_output) if args.fusion_output else output.with_name(output.stem + "_lead_attention.png")
    plot_beats_and_lead_attention(
        record.signal[rows], record.sampling_rate, names, att["beat_times_s"], att["weights"], att["lead_names"],
        weight_mask=att["lead_mask"], path=out2, start_s=args.start_s,
        title=f"BEAT-Net spatial lead attention, {record.record_id}: mean over {att['n_units']} beats",
    )
    print(f"wrote {out2}")
    if att["n_units"] == 0:
        print("ecgnat plot: no beat found in any window", file=sys.stderr)
    return 0
