"""Figures, for prediction as much as for training: the clinical 12-lead printout, lead-fusion attention, the
record with its detected beats beside each lead's attention, ROC curves, label-efficiency curves, and the
timeline of a long recording (:mod:`.figures`); which leads a classifier attends to on one record
(:mod:`.lead_attention`). Everything draws on an Agg canvas, without pyplot."""

from .figures import (
    CLINICAL_LAYOUT,
    plot_beats_and_lead_attention,
    plot_ecg_12lead,
    plot_label_efficiency,
    plot_lead_fusion,
    plot_roc_curves,
    plot_timeline,
)
from .lead_attention import record_lead_attention

__all__ = [
    "CLINICAL_LAYOUT",
    "plot_ecg_12lead",
    "plot_lead_fusion",
    "plot_beats_and_lead_attention",
    "plot_roc_curves",
    "plot_label_efficiency",
    "plot_timeline",
    "record_lead_attention",
]
