"""ecgnat export: ONNX (run with onnxruntime) and torch.export graphs with a dynamic length, compared with
PyTorch on real records (bundled PTB-XL, MIT-BIH 100 from ../shared/data) at several lengths."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ecgnat_hf.cli import main
from ecgnat_hf.data import read_record
from ecgnat_hf.data.builders.common import find_records
from ecgnat_hf.sample_data import sample_dir

from helpers import CHECKPOINT_LABELS as LABELS
from helpers import make_tiny_checkpoint

ort = pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxscript, onnxruntime) is not installed")
pytest.importorskip("onnxscript", reason="the export extra is not installed")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def pytorch(checkpoint):
    from transformers import AutoFeatureExtractor, AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()  # default attention backend
    return model, AutoFeatureExtractor.from_pretrained(checkpoint)


@pytest.fixture(scope="module")
def onnx_export(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    assert main(["export", "-m", str(checkpoint), "--format", "onnx", "-o", str(out)]) == 0
    return out


def _real_inputs(fe, records, length):
    """Whole records preprocessed by the checkpoint's extractor (no windowing), cropped to ``length`` samples."""
    xs, masks = [], []
    for rec in records:
        feats = fe(rec.signal, sampling_rate=rec.sampling_rate, lead_names=rec.lead_names, window=False)
        assert feats["input_values"].shape[-1] >= length, (rec.record_id, feats["input_values"].shape)
        xs.append(feats["input_values"][0][:, :length])
        masks.append(feats["lead_mask"][0].astype(bool))
    return np.stack(xs).astype(np.float32), np.stack(masks)


def _compare(session, model, x, mask):
    logits, pooled = session.run(None, {"input_values": x, "lead_mask": mask})
    with torch.inference_mode():
        out = model(input_values=torch.from_numpy(x), lead_mask=torch.from_numpy(mask))
    assert logits.shape == tuple(out.logits.shape) and pooled.shape == tuple(out.pooler_output.shape)
    return (float(np.abs(logits - out.logits.numpy()).max()), float(np.abs(pooled - out.pooler_output.numpy()).max()))


@pytest.mark.slow
@pytest.mark.shared_data
def test_onnx_matches_pytorch_on_real_records_at_two_lengths(onnx_export, pytorch, shared_data):
    model, fe = pytorch
    info = json.loads((onnx_export / "export_config.json").read_text())
    assert info["labels"] == LABELS and info["lead_names"] == list(fe.lead_names) and info["sampling_rate"] == 100
    assert info["check"]["max_abs_difference"] < 1e-4
    assert (onnx_export / "preprocessor_config.json").is_file()
    session = ort.InferenceSession(str(onnx_export / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_values", "lead_mask"]
    assert session.get_inputs()[0].shape == ["batch", 12, "length"]

    # MIT-BIH 100: 2 leads (MLII, V5) at 360 Hz, 30 min -> resampled to 100 Hz; two lengths, neither a
    # multiple of the model's strides, and one batch mixing it with 12-lead PTB-XL records
    mitdb = read_record(shared_data / "mitdb" / "100")
    ptbxl = [read_record(p) for p in find_records(sample_dir() / "records100")[:2]]
    for length, records in ((1000, [mitdb, *ptbxl]), (4321, [mitdb])):
        x, mask = _real_inputs(fe, records, length)
        assert length >= info["min_length"]
        d_logits, d_pooled = _compare(session, model, x, mask)
        assert d_logits < 1e-4 and d_pooled < 1e-4, (length, d_logits, d_pooled)
    # a single lead of a real record
    x, mask = _real_inputs(fe, [ptbxl[0]], 777)
    mask[:, 2:] = False
    x[~mask] = 0.0
    assert max(_compare(session, model, x, mask)) < 1e-4


@pytest.mark.slow
def test_short_input_is_padded_or_refused_never_silently_wrong(onnx_export, pytorch):
    """Below ``min_length`` PyTorch shrinks the attention window while the ONNX graph (full window only)
    returns wrong numbers without an error. The export records the limit, the feature extractor pads short
    recordings to one window (both runtimes then agree), and the Python runner refuses shorter raw input."""
    import onnx

    from ecgnat_hf.data.errors import InvalidSignalError, SignalTooShortError
    from ecgnat_hf.export import load_exported

    model, fe = pytorch
    exported = load_exported(onnx_export)
    n_min = exported.min_length
    info = json.loads((onnx_export / "export_config.json").read_text())
    assert info["min_length"] == n_min and info["min_length_s"] == pytest.approx(n_min / 100)
    assert "refused" in info["below_min_length"]
    meta = {m.key: m.value for m in onnx.load(str(onnx_export / "model.onnx")).metadata_props}
    assert json.loads(meta["ecgnat.min_length"]) == n_min and n_min < fe.window_length
    rec = read_record(find_records(sample_dir() / "records100")[0])

    def torch_out(x, mask):
        with torch.inference_mode():
            return model(input_values=torch.from_numpy(x), lead_mask=torch.from_numpy(mask))

    # a real 3 s recording through the feature extractor: zero-padded to one 10 s window, both runtimes agree
    feats = fe(rec.signal[:, :300], sampling_rate=rec.sampling_rate, lead_names=rec.lead_names)
    x, mask = feats["input_values"], feats["lead_mask"].astype(bool)
    assert x.shape == (1, 12, fe.window_length)
    out = exported(x, mask, record=rec.path)
    assert float(np.abs(out["logits"] - torch_out(x, mask).logits.numpy()).max()) < 1e-4

    # the same 300 samples as raw input: PyTorch computes with a shrunk attention window; the runner refuses
    x, mask = _real_inputs(fe, [rec], 300)
    assert torch.isfinite(torch_out(x, mask).logits).all()
    with pytest.raises(SignalTooShortError, match=rf"{rec.record_id}: 300 samples .*min_length of {n_min}"):
        exported(x, mask, record=rec.path)
    # ...which is needed: bare onnxruntime returns numbers far from PyTorch's, and no error
    session = ort.InferenceSession(str(onnx_export / "model.onnx"), providers=["CPUExecutionProvider"])
    assert max(_compare(session, model, x, mask)) > 1e-3

    # the boundary: min_length is accepted and equals PyTorch, one sample less is refused
    x, mask = _real_inputs(fe, [rec], n_min)
    out = exported(x, mask, record=rec.path)
    assert float(np.abs(out["logits"] - torch_out(x, mask).logits.numpy()).max()) < 1e-4
    with pytest.raises(SignalTooShortError):
        exported(x[:, :, :-1], mask[:, :], record=rec.path)
    # a row without a present lead: the graph would give NaN, PyTorch raises, the runner names the record
    with pytest.raises(InvalidSignalError, match=f"{rec.record_id}: no lead present"):
        exported(x, np.zeros_like(mask), record=[rec.path])
    with pytest.raises(ValueError, match="at least one present lead"):
        torch_out(x, np.zeros_like(mask))


@pytest.mark.slow
def test_torch_export_round_trip(checkpoint, pytorch, tmp_path):
    from ecgnat_hf.export import export_model

    model, fe = pytorch
    info = export_model(checkpoint, tmp_path, format="torch_export", check_lengths=(1000, 613))
    assert info["file"] == "model.pt2" and info["check"]["max_abs_difference"] < 1e-4
    program = torch.export.load(str(tmp_path / "model.pt2")).module()
    records = [read_record(p) for p in find_records(sample_dir() / "records100")[2:5]]
    for length in (1000, 555):
        x, mask = _real_inputs(fe, records, length)
        with torch.no_grad():
            logits, pooled = program(torch.from_numpy(x), torch.from_numpy(mask))
            ref = model(input_values=torch.from_numpy(x), lead_mask=torch.from_numpy(mask))
        assert float((logits - ref.logits).abs().max()) < 1e-4
        assert float((pooled - ref.pooler_output).abs().max()) < 1e-4
    # below the exported range the program refuses the input instead of computing something else
    x, mask = _real_inputs(fe, records[:1], info["min_length"] - 1)
    with pytest.raises(Exception, match="length|size|Guard|constraint|range"):
        program(torch.from_numpy(x), torch.from_numpy(mask))
    # and the Python runner says so with a typed error naming the record, as for ONNX
    from ecgnat_hf.data.errors import SignalTooShortError
    from ecgnat_hf.export import load_exported

    with pytest.raises(SignalTooShortError, match=f"{records[0].record_id}.*min_length of {info['min_length']}"):
        load_exported(tmp_path)(x, mask, record=records[0].path)
    x, mask = _real_inputs(fe, records[:1], info["min_length"])
    out = load_exported(tmp_path)(x, mask, record=records[0].path)
    with torch.no_grad():
        ref = model(input_values=torch.from_numpy(x), lead_mask=torch.from_numpy(mask))
    assert float(np.abs(out["logits"] - ref.logits.numpy()).max()) < 1e-4


def test_export_module_rejects_other_models_and_cli_usage(tmp_path, capsys):
    from ecgnat_hf.export import ECGNATExportModule

    with pytest.raises(ValueError, match="only ECG-NAT models"):
        ECGNATExportModule(torch.nn.Linear(2, 2))
    assert main(["export", "-m", str(tmp_path / "nope"), "-o", str(tmp_path / "out")]) == 2
    assert "cannot load the checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("length, kernel, dilation", [(15, 15, 1), (101, 15, 1), (101, 15, 4), (64, 7, 3), (500, 15, 8)])
def test_traced_attention_form_equals_the_blocked_kernel(length, kernel, dilation):
    """The gather form used under a symbolic length computes the same neighbourhoods as the eager kernel."""
    from ecgnat_hf.neighborhood_attention import _na1d_torch, _na1d_torch_traced

    g = torch.Generator().manual_seed(length + kernel + dilation)
    q, k, v = (torch.randn(2, length, 3, 8, generator=g) for _ in range(3))
    expected = _na1d_torch(q, k, v, kernel, dilation, False, 0.35)
    torch.testing.assert_close(_na1d_torch_traced(q, k, v, kernel, dilation, False, 0.35), expected,
                               atol=2e-6, rtol=0)
