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
one graph serves every length from ``min_length`` samples up.

Below ``min_length`` the two runtimes differ, and this is made explicit rather than left to chance:

* PyTorch accepts any length. Where a stage's sequence is shorter than its attention window
  (``kernel_size * dilation`` tokens), it shrinks the window and the dilation for that input. That is
  a different computation from the one the model was trained on at full length.
* The exported graph holds only the full-window computation (a static graph cannot hold that control
  flow). ``model.pt2`` refuses shorter inputs with a guard error. **onnxruntime does not check: it returns
  wrong numbers.** :class:`ExportedECGNAT` (``load_exported``) runs either file and raises
  :class:`~ecgnat_hf.data.errors.SignalTooShortError` below ``min_length``, naming the record.
  ``min_length`` (samples) and ``min_length_s`` are written to ``export_config.json`` and to the ONNX
  metadata (``ecgnat.min_length``).
* The feature extractor's windows (``mode="window"``/``"crop"``) zero-pad a recording shorter than one
  window to the full window, which is longer than ``min_length``, so both runtimes give the same numbers
  for it. Only raw arrays, or ``mode="pad"`` batches of recordings shorter than ``min_length``, fall below.

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

__all__ = ["EXPORT_FORMATS", "ECGNATExportModule", "ExportedECGNAT", "export_model", "load_exported",
           "load_onnx_session", "check_export"]

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
    from .output_paths import check_output_dir

    check_output_dir(output_dir, "output folder")  # OutputPathError (an OSError) before the work, never after
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
        "min_length_s": min_length / float(config.sampling_rate),
        "max_length": max_length,
        "below_min_length": (
            "refused: the graph holds only the full attention window and gives wrong numbers below min_length "
            "(onnxruntime does not check; ecgnat_hf.export.ExportedECGNAT raises SignalTooShortError). PyTorch "
            "shrinks the window instead. The feature extractor's windows zero-pad short recordings to "
            "window_s, which is always long enough"
        ),
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
    for key in ("lead_names", "sampling_rate", "min_length", "min_length_s", "max_length", "labels", "problem_type",
                "probabilities", "decision_thresholds"):
        if key in info:
            entry = model.metadata_props.add()
            entry.key, entry.value = f"ecgnat.{key}", json.dumps(info[key])
    entry = model.metadata_props.add()
    entry.key, entry.value = "ecgnat.preprocessing", json.dumps(info["preprocessing"])
    onnx.save(model, str(path))


# ------------------------------------------------------------------------------------------ running an export
class ExportedECGNAT:
    """Run an exported folder (``model.onnx`` with onnxruntime, or ``model.pt2``) with the input checks that
    the graph itself cannot hold, so that it raises instead of returning wrong numbers.

    Usage::

        exported = load_exported("my-ecgnat-onnx")          # reads export_config.json
        feats = ECGNATFeatureExtractor.from_pretrained("my-ecgnat-onnx")(signal, sampling_rate=fs,
                                                                          lead_names=leads)
        out = exported(feats["input_values"], feats["lead_mask"], record="rec01")
        out["logits"], out["pooler_output"]                 # numpy arrays, one row per window

    Checks, each a typed :class:`~ecgnat_hf.data.errors.ECGDataError` naming the record (``record``: one
    name, or one per batch row):

    * ``input_values`` is ``(batch, leads, length)`` with the export's number of leads, and finite where a
      lead is present (:class:`~ecgnat_hf.data.errors.InvalidSignalError`);
    * ``length >= min_length``, the shortest input the graph computes correctly
      (:class:`~ecgnat_hf.data.errors.SignalTooShortError`; see the module docstring for what PyTorch does
      instead), and ``<= max_length`` when the export has one;
    * ``lead_mask`` is ``(batch, leads)`` and every row has a present lead (the graph would return NaN for
      that row; PyTorch raises).

    Attributes: ``config`` (``export_config.json``), ``min_length``, ``max_length``, ``lead_names``,
    ``sampling_rate``, ``output_names``, ``path`` (the graph file).
    """

    def __init__(self, folder, num_threads: int | None = None):
        from .data.errors import MissingFileError

        folder = Path(os.fspath(folder))
        cfg_file = folder / "export_config.json"
        if not cfg_file.is_file():
            raise MissingFileError(folder, "export_config.json not found: not a folder written by `ecgnat export`")
        self.config = json.loads(cfg_file.read_text(encoding="utf-8"))
        self.path = folder / self.config["file"]
        if not self.path.is_file():
            raise MissingFileError(self.path, "the exported graph named in export_config.json is missing")
        self.min_length = int(self.config["min_length"])
        self.max_length = None if self.config.get("max_length") is None else int(self.config["max_length"])
        self.lead_names = list(self.config["lead_names"])
        self.sampling_rate = float(self.config["sampling_rate"])
        self.output_names = list(self.config["outputs"])
        if self.path.suffix == ".onnx":
            session = load_onnx_session(self.path, num_threads)
            self._run = lambda x, m: session.run(None, {"input_values": x, "lead_mask": m})  # noqa: E731
        else:
            program = torch.export.load(str(self.path)).module()

            def run(x, m):
                with torch.no_grad():
                    return [t.detach().numpy() for t in program(torch.from_numpy(x), torch.from_numpy(m))]

            self._run = run

    def _names(self, record, n: int) -> list[str]:
        if record is None:
            return [f"input (batch row {i})" for i in range(n)]
        if isinstance(record, (str, os.PathLike)):
            return [os.fspath(record) if n == 1 else f"{os.fspath(record)} (batch row {i})" for i in range(n)]
        names = [os.fspath(r) for r in record]
        if len(names) != n:
            raise ValueError(f"record names {len(names)} for a batch of {n}")
        return names

    def check_inputs(self, input_values, lead_mask=None, record=None) -> tuple[np.ndarray, np.ndarray]:
        """The inputs as the graph takes them (float32, bool), or a typed error naming the record."""
        from .data.errors import InvalidSignalError, SignalTooShortError

        x = input_values.detach().cpu().numpy() if isinstance(input_values, torch.Tensor) else np.asarray(input_values)
        n_leads = len(self.lead_names)
        if x.ndim != 3 or x.shape[1] != n_leads:
            names = self._names(record, 1 if x.ndim < 3 else x.shape[0])
            raise InvalidSignalError(names[0] if len(names) == 1 else ", ".join(names),
                                     f"input_values must be (batch, {n_leads}, length) in the lead order "
                                     f"{','.join(self.lead_names)}; got shape {tuple(x.shape)}")
        names = self._names(record, x.shape[0])
        length = int(x.shape[2])
        if length < self.min_length:
            fs = self.sampling_rate
            raise SignalTooShortError(
                names[0] if len(names) == 1 else ", ".join(names),
                f"{length} samples ({length / fs:.2f} s at {fs:g} Hz) is shorter than the exported graph's "
                f"min_length of {self.min_length} samples ({self.min_length / fs:.2f} s); below it the graph "
                "gives wrong numbers, not an error. Use the feature extractor's windows (a short recording is "
                "zero-padded to one window) or run the checkpoint in PyTorch")
        if self.max_length is not None and length > self.max_length:
            raise InvalidSignalError(", ".join(names), f"{length} samples exceeds the exported max_length {self.max_length}")
        if lead_mask is None:
            mask = np.ones(x.shape[:2], dtype=bool)
        else:
            mask = lead_mask.detach().cpu().numpy() if isinstance(lead_mask, torch.Tensor) else np.asarray(lead_mask)
            if mask.shape != x.shape[:2]:
                raise InvalidSignalError(", ".join(names), f"lead_mask must be (batch, leads) = {x.shape[:2]}, "
                                                           f"got {tuple(mask.shape)}")
            mask = mask.astype(bool)
        empty = np.flatnonzero(~mask.any(1))
        if len(empty):
            raise InvalidSignalError(", ".join(names[i] for i in empty),
                                     "no lead present in lead_mask (the exported graph would return NaN)")
        x = x.astype(np.float32, copy=False)
        bad = np.flatnonzero(~np.isfinite(np.where(mask[:, :, None], x, 0.0)).all(axis=(1, 2)))
        if len(bad):
            raise InvalidSignalError(", ".join(names[i] for i in bad), "NaN or infinite values in a present lead")
        return np.ascontiguousarray(x), np.ascontiguousarray(mask)

    def __call__(self, input_values, lead_mask=None, record=None) -> dict[str, np.ndarray]:
        """``{output name: array}`` (``logits`` for a classifier, ``pooler_output``) after :meth:`check_inputs`."""
        x, mask = self.check_inputs(input_values, lead_mask, record)
        return dict(zip(self.output_names, (np.asarray(o) for o in self._run(x, mask))))


def load_exported(folder, num_threads: int | None = None) -> ExportedECGNAT:
    """:class:`ExportedECGNAT` for a folder written by :func:`export_model` / ``ecgnat export``."""
    return ExportedECGNAT(folder, num_threads=num_threads)
