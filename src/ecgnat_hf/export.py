"""Export an ECG-NAT checkpoint for other runtimes: ONNX (onnxruntime, ...) or ``torch.export``.

``ecgnat export -m CKPT --format onnx -o exported/`` (or :func:`export_model`) writes:

* ``model.onnx`` (or ``model.pt2`` for ``--format torch_export``): the encoder and, for a classifier,
  its head. Inputs ``input_values`` float32 ``(batch, leads, length)`` and ``lead_mask`` bool
  ``(batch, leads)``; outputs ``logits`` ``(batch, num_labels)`` (classifiers only) and
  ``pooler_output`` ``(batch, hidden_size)`` (the embedding). ``batch`` and ``length`` are dynamic.
* ``export_config.json``: what a runtime needs besides the graph: input/output names, the model's
  lead order and sampling rate, the shortest length the graph is valid for, labels, decision
  thresholds, how to turn logits into probabilities, and the preprocessing (a copy of the feature
  extractor's settings; ``docs/deployment.md`` spells out each step).
* ``preprocessor_config.json``: the checkpoint's feature extractor, unchanged.

The attention runs on the plain-PyTorch neighborhood-attention backend (``attn_implementation=
"na_torch"``); with a symbolic length it takes its traceable form (explicit neighbour indices), so
one graph serves every length from ``min_length`` samples up. Shorter inputs need a smaller kernel
or dilation, which is control flow a static graph cannot hold: they are outside the exported range
(run them in PyTorch, or use the feature extractor's windows, which are far longer).

After writing, the export is checked: the graph is run (onnxruntime or the loaded ``.pt2``) at two
lengths on real preprocessed input and compared with PyTorch; the largest difference is returned and
saved in ``export_config.json`` (the export fails above ``atol``).
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["EXPORT_FORMATS", "ECGNATExportModule", "export_model", "load_onnx_session", "check_export"]

EXPORT_FORMATS = ("onnx", "torch_export")
_FILES = {"onnx": "model.onnx", "torch_export": "model.pt2"}


class ECGNATExportModule(nn.Module):
    """The graph that is exported: ``(input_values, lead_mask) -> (logits, pooler_output)`` for a
    classifier, ``-> (pooler_output,)`` for an encoder or a pretraining model (its encoder only)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        from . import ECGNATForPreTraining, ECGNATForSequenceClassification, ECGNATModel

        if isinstance(model, ECGNATForSequenceClassification):
            self.model, self.has_classifier = model, True
        elif isinstance(model, ECGNATForPreTraining):
            self.model, self.has_classifier = model.ecgnat, False
        elif isinstance(model, ECGNATModel):
            self.model, self.has_classifier = model, False
        else:
            raise ValueError(f"only ECG-NAT models can be exported here; got {type(model).__name__}")
        self.output_names = ["logits", "pooler_output"] if self.has_classifier else ["pooler_output"]

    def forward(self, input_values: torch.Tensor, lead_mask: torch.Tensor):
        out = self.model(input_values=input_values, lead_mask=lead_mask, return_dict=True)
        if self.has_classifier:
            return out.logits, out.pooler_output
        return (out.pooler_output,)


def _load(model_or_path, feature_extractor=None):
    """(model on CPU in eval mode with the plain-PyTorch attention, feature extractor)."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForSequenceClassification

    from . import ECGNATConfig  # noqa: F401  (registers the Auto classes)

    if isinstance(model_or_path, (str, os.PathLike)):
        source = os.fspath(model_or_path)
        config = AutoConfig.from_pretrained(source)
        heads = [a for a in (getattr(config, "architectures", None) or []) if "SequenceClassification" in a]
        auto = AutoModelForSequenceClassification if heads else AutoModel
        model = auto.from_pretrained(source, attn_implementation="na_torch")
        if feature_extractor is None:
            feature_extractor = AutoFeatureExtractor.from_pretrained(source)
    else:
        model = model_or_path
        model.set_attn_implementation("na_torch")
        if feature_extractor is None:
            from .inference import load_model_and_feature_extractor

            _, feature_extractor = load_model_and_feature_extractor(model)
    return model.to("cpu").eval(), feature_extractor


def _example_inputs(feature_extractor, lengths, n_leads: int, sample_records=None):
    """Real preprocessed windows: the bundled PTB-XL records, cut/tiled to each length (samples)."""
    from .data.records import read_record
    from .sample_data import sample_dir

    if sample_records is None:
        from .data.builders.common import find_records

        sample_records = find_records(sample_dir() / "records100")[:2]
    signals = []
    for path in sample_records:
        rec = read_record(path)
        feats = feature_extractor(rec.signal, sampling_rate=rec.sampling_rate, lead_names=rec.lead_names,
                                  window=False)
        signals.append((feats["input_values"][0], feats["lead_mask"][0]))
    out = []
    for length in lengths:  # a longer length repeats the record end to end
        x = np.stack([np.tile(s, (1, -(-length // s.shape[1])))[:, :length] for s, _ in signals]).astype(np.float32)
        mask = np.stack([m for _, m in signals]).astype(bool)
        mask[-1, n_leads // 2:] = False  # one example with a lead subset
        x[~mask] = 0.0
        out.append((torch.from_numpy(x), torch.from_numpy(mask)))
    return out


def load_onnx_session(path, num_threads: int | None = None):
    """An onnxruntime CPU session for ``path`` (``num_threads`` intra-op threads; default: onnxruntime's)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError("running ONNX models needs onnxruntime: pip install 'ecgnat-hf[export]'") from exc
    options = ort.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = int(num_threads)
        options.inter_op_num_threads = 1
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def check_export(path, module: ECGNATExportModule, examples) -> float:
    """Largest absolute difference between the exported graph at ``path`` and ``module`` over ``examples``."""
    path = Path(path)
    if path.suffix == ".onnx":
        session = load_onnx_session(path)
        run = lambda x, m: session.run(None, {"input_values": x.numpy(), "lead_mask": m.numpy()})  # noqa: E731
    else:
        program = torch.export.load(str(path)).module()
        run = lambda x, m: [t.detach().numpy() for t in program(x, m)]  # noqa: E731
    worst = 0.0
    for x, mask in examples:
        with torch.inference_mode():
            expected = [t.numpy() for t in module(x, mask)]
        with torch.no_grad():
            got = run(x, mask)
        for a, b in zip(expected, got):
            worst = max(worst, float(np.abs(a - np.asarray(b)).max()))
    return worst


def _length_range(program) -> tuple[int, int | None]:
    """(min, max) of the input length the exported program accepts (from its range constraints)."""
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name.startswith("input_values"))
    symbol = node.meta["val"].shape[2]
    if isinstance(symbol, int):  # pragma: no cover - would mean the length was specialised
        raise RuntimeError(f"the export fixed the input length to {symbol} samples; it should be dynamic")
    bounds = program.range_constraints[symbol.node.expr]
    upper = int(bounds.upper) if bounds.upper.is_Integer else None  # None: unbounded
    return int(bounds.lower), upper


def export_model(
    model_or_path,
    output_dir,
    format: str = "onnx",
    feature_extractor=None,
    check_lengths: tuple[int, ...] | None = None,
    atol: float = 1e-4,
    opset_version: int | None = None,
) -> dict:
    """Export ``model_or_path`` (checkpoint folder, hub id or loaded ECG-NAT model) to ``output_dir``.

    Returns the content of ``export_config.json`` (with ``max_abs_difference`` from the check at
    ``check_lengths`` samples; default one window and 7/9 of one).
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {EXPORT_FORMATS}, got {format!r}")
    model, fe = _load(model_or_path, feature_extractor)
    config = model.config
    module = ECGNATExportModule(model).eval()
    window = int(fe.window_length)
    # one window, and a shorter length that is no multiple of any stride: both real, uncut-then-cropped records
    check_lengths = tuple(check_lengths or (window, (window * 7) // 9 + 1))
    examples = _example_inputs(fe, check_lengths, config.num_leads)
    example = examples[0]
    dims = ({0: torch.export.Dim("batch", min=1, max=1 << 20), 2: torch.export.Dim.AUTO},
            {0: torch.export.Dim("batch", min=1, max=1 << 20)})
    output_dir = Path(os.fspath(output_dir))
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / _FILES[format]
    # the exporter warns about optional torchvision ops and deprecated pytree names: nothing for this model
    exporter_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.export.export(module, example, dynamic_shapes=dims, strict=False)
            min_length, max_length = _length_range(program)
            if format == "torch_export":
                torch.export.save(program, str(target))
            else:
                kwargs = {} if opset_version is None else {"opset_version": int(opset_version)}
                onnx_program = torch.onnx.export(
                    program, example, dynamo=True, input_names=["input_values", "lead_mask"],
                    output_names=module.output_names, optimize=True, verbose=False, **kwargs,
                )
                onnx_program.save(str(target))
                _rename_onnx_dims(target)
    finally:
        exporter_log.setLevel(level)
    if any(n < min_length for n in check_lengths):
        raise ValueError(f"check_lengths {check_lengths} go below the exported minimum of {min_length} samples")
    worst = check_export(target, module, examples)
    info = _export_config(model, fe, format, target.name, module.output_names, min_length, max_length)
    info["check"] = {"lengths": list(check_lengths), "max_abs_difference": worst, "atol": atol,
                     "inputs": "bundled PTB-XL records preprocessed by the feature extractor, one with a lead subset"}
    (output_dir / "export_config.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    fe.save_pretrained(output_dir)
    if format == "onnx":
        _write_onnx_metadata(target, info)
    if not worst <= atol:
        raise RuntimeError(f"the exported graph differs from PyTorch by {worst:.3g} (> {atol:g}); see {output_dir}")
    logger.info("exported %s (lengths >= %d samples), max |difference| %.3g", target, min_length, worst)
    return info


def _export_config(model, fe, format, filename, output_names, min_length, max_length) -> dict:
    config = model.config
    info: dict = {
        "format": format,
        "file": filename,
        "model_type": config.model_type,
        "inputs": {
            "input_values": {"dtype": "float32", "shape": ["batch", len(config.lead_names), "length"]},
            "lead_mask": {"dtype": "bool", "shape": ["batch", len(config.lead_names)]},
        },
        "outputs": {name: {"dtype": "float32", "shape": ["batch", config.num_labels if name == "logits"
                                                         else config.hidden_size]} for name in output_names},
        "lead_names": list(config.lead_names),
        "sampling_rate": config.sampling_rate,
        "min_length": min_length,
        "max_length": max_length,
        "attention_backend": "na_torch (plain PyTorch, traced form)",
        "preprocessing": {k: v for k, v in fe.to_dict().items() if not k.startswith("_")},
    }
    if "logits" in output_names:
        id2label = config.id2label or {}
        labels = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(config.num_labels)]
        problem = config.problem_type
        info["labels"] = labels
        info["problem_type"] = problem
        info["probabilities"] = {"single_label_classification": "softmax", "regression": "none"}.get(problem, "sigmoid")
        thresholds = getattr(config, "decision_thresholds", None)
        info["decision_thresholds"] = thresholds
        info["decision_rule"] = (
            "argmax" if problem == "single_label_classification"
            else "probability >= decision_thresholds[label] (0.5 where none is given)"
        )
    return info


def _rename_onnx_dims(path: Path) -> None:
    """Give the graph's dynamic input/output dimensions readable names (batch, length)."""
    import onnx

    model = onnx.load(str(path))
    names = {}
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        for i, dim in enumerate(dims):
            if dim.dim_param:
                wanted = "batch" if i == 0 else "length"
                names.setdefault(dim.dim_param, wanted)
    if not names:
        return
    for value in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]
    onnx.save(model, str(path))


def _write_onnx_metadata(path: Path, info: dict) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key in ("lead_names", "sampling_rate", "min_length", "labels", "problem_type", "probabilities",
                "decision_thresholds"):
        if key in info:
            entry = model.metadata_props.add()
            entry.key, entry.value = f"ecgnat.{key}", json.dumps(info[key])
    entry = model.metadata_props.add()
    entry.key, entry.value = "ecgnat.preprocessing", json.dumps(info["preprocessing"])
    onnx.save(model, str(path))
