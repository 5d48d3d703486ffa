"""Figures: files are written, the 12-lead printout has the clinical layout, missing leads are marked."""
from __future__ import annotations

import numpy as np
import pytest
import wfdb
from matplotlib.figure import Figure

from ecgnat_hf.sample_data import sample_dir
from ecgnat_hf.training.plots import (
    CLINICAL_LAYOUT,
    plot_ecg_12lead,
    plot_label_efficiency,
    plot_lead_fusion,
    plot_roc_curves,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def record():
    rec = wfdb.rdrecord(str(sample_dir() / "records100/00000/00008_lr"))
    return rec.p_signal.T, rec.fs, rec.sig_name


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 10_000 and data[:8] == PNG_MAGIC


def _texts(fig):
    out = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        out += [t.get_text() for t in ax.texts]
    return out


def test_ecg_12lead_clinical_layout(record, tmp_path):
    signal, fs, names = record
    path = tmp_path / "ecg.png"
    fig = plot_ecg_12lead(signal, fs, lead_names=names, title="PTB-XL 8",
                          prediction={"MI": 0.81, "NORM": 0.12}, path=path, dpi=60)
    assert isinstance(fig, Figure)
    assert _is_png(path)
    assert len(fig.axes) == 13  # 12 lead panels + the rhythm strip
    labels = [ax.get_label() for ax in fig.axes]
    assert labels[:12] == [f"lead {lead}" for row in CLINICAL_LAYOUT for lead in row]
    assert labels[12] == "rhythm strip"
    # paper scale: 25 mm/s and 10 mm/mV -> 2.5 s panels are 62.5 mm wide; rows are whole mV
    w_in, h_in = fig.get_size_inches()
    first = fig.axes[0].get_position()
    assert first.width * w_in * 25.4 == pytest.approx(62.5, abs=1e-6)
    x0, x1 = fig.axes[0].get_xlim()
    y0, y1 = fig.axes[0].get_ylim()
    assert (x0, x1) == (0, 2.5)
    assert first.height * h_in * 25.4 == pytest.approx((y1 - y0) * 10, abs=1e-6)
    assert fig.axes[12].get_xlim() == (0, 10.0)
    # each column shows its own 2.5 s of the recording, as on a printout
    assert fig.axes[3].get_xlim() == (7.5, 10.0)  # V4
    texts = _texts(fig)
    assert "not recorded" not in texts
    assert any("MI" in t and "0.81" in t for t in texts)
    assert "PTB-XL 8" in texts


def test_ecg_missing_leads_are_marked(record, tmp_path):
    signal, fs, names = record
    mask = np.ones(12, dtype=bool)
    mask[[2, 6, 7]] = False  # III, V1, V2 absent
    fig = plot_ecg_12lead(signal, fs, lead_names=names, lead_mask=mask, path=tmp_path / "m.png", dpi=60)
    assert _is_png(tmp_path / "m.png")
    by_label = {ax.get_label(): ax for ax in fig.axes}
    for lead in ("III", "V1", "V2"):
        ax = by_label[f"lead {lead}"]
        assert "not recorded" in [t.get_text() for t in ax.texts], lead
        assert len(ax.lines) == 0, lead  # never drawn as a flat line
        assert ax.get_facecolor()[:3] != by_label["lead I"].get_facecolor()[:3]
    assert sum(t == "not recorded" for t in _texts(fig)) == 3
    assert len(by_label["lead II"].lines) == 1


def test_ecg_single_lead_and_rhythm_fallback(record):
    signal, fs, _ = record
    fig = plot_ecg_12lead(signal[[0]], fs, lead_names=["I"], dpi=40)
    assert len(fig.axes) == 13
    assert sum(t == "not recorded" for t in _texts(fig)) == 11
    strip_texts = [t.get_text() for t in fig.axes[12].texts]
    assert any("rhythm; II not recorded" in t for t in strip_texts), strip_texts


def test_ecg_bad_input(record):
    signal, fs, names = record
    with pytest.raises(ValueError, match="lead_names"):
        plot_ecg_12lead(signal[:3], fs)
    with pytest.raises(ValueError, match="unknown lead"):
        plot_ecg_12lead(signal[:2], fs, lead_names=["MLII", "V5"])
    with pytest.raises(ValueError, match="sampling_rate"):
        plot_ecg_12lead(signal, 0)


def test_lead_fusion_bar_and_heatmap(tmp_path):
    rng = np.random.default_rng(0)
    fig = plot_lead_fusion(rng.dirichlet(np.ones(12)), None, tmp_path / "bar.png")
    assert _is_png(tmp_path / "bar.png") and len(fig.axes[0].patches) == 12
    fig = plot_lead_fusion(rng.dirichlet(np.ones(3), size=40), ["I", "II", "V5"], tmp_path / "heat.png",
                           time_step_s=0.25)
    assert _is_png(tmp_path / "heat.png") and len(fig.axes[0].images) == 1
    assert fig.axes[0].get_xlim() == (0, 10.0)


def test_roc_curves(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.random((120, 3)) < 0.4).astype(int)
    y[:, 2] = 0  # a class with no positives has no curve
    s = y + rng.normal(0, 0.7, y.shape)
    fig = plot_roc_curves(y, s, ["NORM", "MI", "HYP"], tmp_path / "roc.png")
    assert _is_png(tmp_path / "roc.png")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(t.startswith("NORM: AUROC 0.") for t in legend)
    assert any(t.startswith("HYP: n/a") for t in legend)
    # single-label integer targets are one-vs-rest
    fig = plot_roc_curves(rng.integers(0, 3, 60), rng.random((60, 3)), None, None)
    assert "macro AUROC" in fig.axes[0].get_title()


def test_label_efficiency(tmp_path):
    table = [
        {"fraction": f, "model": m, "mean": 0.7 + 0.05 * np.log10(100 * f) + d, "std": 0.01}
        for f in (0.01, 0.1, 1.0)
        for m, d in (("ecgnat-tiny", 0.03), ("resnet1d", 0.0))
    ]
    fig = plot_label_efficiency(table, "macro AUROC", tmp_path / "le.png", references={"published": 0.93})
    assert _is_png(tmp_path / "le.png")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1%", "10%", "100%"]
    assert len(ax.containers) == 2  # one errorbar container per model
    with pytest.raises(ValueError, match="fraction"):
        plot_label_efficiency([{"fraction": 0, "model": "x", "mean": 1}], "m")
