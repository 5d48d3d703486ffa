"""Batch inference on ECG record files: records or a folder in, one row of class probabilities per record out.

:func:`predict_records` is the engine behind ``ecgnat predict`` and usable on its own::

    from ecgnat_hf.inference import predict_records
    df = predict_records("path/to/checkpoint", "path/to/folder_of_wfdb_records")
    df.attrs["errors"]          # records that could not be used: which file, which error, why

How a record becomes a row
--------------------------
1. :func:`ecgnat_hf.data.read_record` reads it (WFDB ``.hea`` + ``.dat``/``.mat``, or a MATLAB file).
2. The checkpoint's own feature extractor (``preprocessor_config.json``) maps the leads, resamples to
   the model's rate and cuts the record into windows of ``window_s`` seconds (overlapping, the last
   one aligned to the end), so a 30-minute Holter strip and a 10-second 12-lead ECG go through the
   same path. A record shorter than one window is one padded window.
3. The model scores every window; scores become probabilities per window (sigmoid for multi-label,
   softmax for single-label, unchanged for regression) and are then pooled per record (mean by
   default, or max) with :meth:`ECGNATFeatureExtractor.aggregate`. Probabilities, not logits, are
   averaged, so a softmax row still sums to one.

Windows of several records share a batch, so many short records run as fast as one long one.

Failures
--------
A record that cannot be used (missing or truncated file, unreadable header, NaN samples, unknown
leads, too short...) does not stop the run: it is recorded as an :class:`ECGDataError` (record +
problem) in ``df.attrs["errors"]`` and, when ``errors_csv`` is given, in that file. With
``output_csv`` the results are written while the run goes on (at most every ``flush_every_s``
seconds and at the end) to a temporary file that is then renamed over the target, so the CSV on
disk is always complete and readable, and an interrupted run (Ctrl-C) leaves every finished row in
it. ``resume=True`` skips records already present in ``output_csv``.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .data.errors import ECGDataError, InvalidSignalError, LeadNameError
from .feature_extraction_ecgnat import CANONICAL_LEADS, ECGInputError, ECGLeadNameError, LEAD_ALIASES, _squash

logger = logging.getLogger(__name__)

__all__ = [
    "predict_records",
    "load_model_and_feature_extractor",
    "collect_record_paths",
    "select_leads",
    "window_outputs",
    "scores_to_probabilities",
    "write_csv_atomic",
    "META_COLUMNS",
    "ERROR_COLUMNS",
]

#: columns before the per-class probability columns, in order
META_COLUMNS = ("record_id", "path", "n_windows", "duration_s", "sampling_rate", "leads_used", "leads_ignored")
#: columns of the errors table
ERROR_COLUMNS = ("record_id", "path", "error", "problem")


# --------------------------------------------------------------------------------------------- loading
def load_model_and_feature_extractor(model_or_path, feature_extractor=None, device=None, **load_kwargs):
    """Return ``(model, feature_extractor)`` in eval mode.

    ``model_or_path`` is a loaded model or a local directory / hub id (loaded with
    ``AutoModelForSequenceClassification``). Without ``feature_extractor`` the checkpoint's own
    ``preprocessor_config.json`` is used (``AutoFeatureExtractor``); for an in-memory model without
    one, an :class:`ECGNATFeatureExtractor` at the model's sampling rate and leads is built (logged).
    """
    from transformers import AutoFeatureExtractor, AutoModelForSequenceClassification

    from . import ECGNATFeatureExtractor  # noqa: F401  (registers the Auto classes)

    if isinstance(model_or_path, (str, os.PathLike)):
        source = os.fspath(model_or_path)
        model = AutoModelForSequenceClassification.from_pretrained(source, **load_kwargs)
        if feature_extractor is None:
            feature_extractor = AutoFeatureExtractor.from_pretrained(source)
    else:
        model = model_or_path
        if feature_extractor is None:
            source = getattr(model, "name_or_path", "") or ""
            if source and (Path(source) / "preprocessor_config.json").is_file():
                feature_extractor = AutoFeatureExtractor.from_pretrained(source)
            else:
                cfg = model.config
                feature_extractor = ECGNATFeatureExtractor(
                    sampling_rate=getattr(cfg, "sampling_rate", 500),
                    lead_names=getattr(cfg, "lead_names", None),
                )
                logger.warning(
                    "no feature extractor given and none saved with the model: using ECGNATFeatureExtractor("
                    "sampling_rate=%s, window_s=%s) built from the model config; pass the checkpoint's own "
                    "to preprocess exactly as in training", feature_extractor.sampling_rate, feature_extractor.window_s,
                )
    if device is not None:
        model = model.to(device)
    model.eval()
    fe_leads = list(getattr(feature_extractor, "lead_names", []))
    model_leads = list(getattr(model.config, "lead_names", fe_leads))
    if fe_leads and model_leads and fe_leads != model_leads:
        raise ValueError(
            f"feature extractor lead order {fe_leads} differs from the model's {model_leads}: "
            "use the checkpoint's own preprocessor_config.json"
        )
    return model, feature_extractor


# --------------------------------------------------------------------------------------------- inputs
def collect_record_paths(paths) -> list[Path]:
    """Expand ``paths`` (one path or a list; folders are searched recursively) into record paths.

    Folders give their WFDB records (path without extension) and MATLAB files without a header.
    Files keep their path; ``x.hea``/``x.dat`` become ``x``. Duplicates are removed, order kept.
    """
    from .data.builders.common import find_records

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    seen: set[str] = set()
    for p in paths:
        p = Path(os.fspath(p))
        found = find_records(p, include_matlab=True) if p.is_dir() else [
            p.with_suffix("") if p.suffix.lower() in (".hea", ".dat") else p
        ]
        for rec in found:
            key = os.path.abspath(rec)
            if key not in seen:
                seen.add(key)
                out.append(rec)
    return out


def _canonical(name) -> str | None:
    return LEAD_ALIASES.get(_squash(name))


def select_leads(record, lead_names: Sequence[str] | None, model_leads: Sequence[str] | None = None):
    """Apply a ``lead_names`` request to a record; return ``(signal, names_to_use, ignored)``.

    * ``lead_names`` naming leads of the record (aliases match: ``II`` finds ``MLII``): only those
      leads are used, the others are treated as not recorded (a lead-subset evaluation). Requested
      leads the record lacks are skipped; the ``leads_used`` column says what was used.
    * a record whose lead names are all non-standard (``ECG1``, ``ch0``...) and a ``lead_names`` list
      of the same length: the names override the file's, in order.
    * ``None``: every standard lead of the record; non-standard ones (Frank ``vx``...) are ignored.

    Leads the model does not take (``model_leads``, canonical names) are ignored as well.
    Raises :class:`LeadNameError` (naming the record) when no usable lead is left.
    """
    names = [str(n) for n in record.lead_names]
    canon = [_canonical(n) for n in names]
    signal = record.signal
    if lead_names is not None:
        wanted = [str(n).strip() for n in lead_names if str(n).strip()]
        wanted_canon = []
        for w in wanted:
            c = _canonical(w)
            if c is None:
                raise LeadNameError(record.path, f"requested lead {w!r} is not a standard 12-lead name or alias")
            wanted_canon.append(c)
        if all(c is None for c in canon) and len(wanted) == len(names):
            logger.info("%s: lead names %s overridden by %s", record.path, names, wanted)
            names, canon = wanted, wanted_canon
        else:
            keep = [i for i, c in enumerate(canon) if c is not None and c in wanted_canon]
            if model_leads is not None:
                keep = [i for i in keep if canon[i] in model_leads]
            if not keep:
                raise LeadNameError(
                    record.path,
                    f"none of the requested leads {', '.join(wanted)} is in the record (it has {', '.join(names)})",
                )
            ignored = [names[i] for i in range(len(names)) if i not in keep]
            return signal[keep], [names[i] for i in keep], ignored
    keep = [i for i, c in enumerate(canon) if c is not None and (model_leads is None or c in model_leads)]
    if not keep:
        raise LeadNameError(
            record.path,
            f"no usable ECG lead among {', '.join(names) or 'no leads'} (the model takes "
            f"{', '.join(model_leads or CANONICAL_LEADS)}); pass lead_names to name the record's leads",
        )
    ignored = [names[i] for i in range(len(names)) if i not in keep]
    return signal[keep], [names[i] for i in keep], ignored


# --------------------------------------------------------------------------------------------- outputs
def scores_to_probabilities(logits, config=None, function_to_apply: str | None = None) -> np.ndarray:
    """Model scores -> per-class probabilities, as the transformers classification pipelines do.

    ``function_to_apply``: ``"sigmoid"``, ``"softmax"`` or ``"none"``; by default from
    ``config.problem_type``: multi-label -> sigmoid, single-label -> softmax, regression -> none;
    without a problem type: sigmoid for one output, softmax for several.
    """
    x = np.asarray(logits, dtype=np.float64)
    fn = function_to_apply
    if fn is None:
        problem = getattr(config, "problem_type", None)
        num = x.shape[-1] if x.ndim else 1
        fn = {"multi_label_classification": "sigmoid", "single_label_classification": "softmax",
              "regression": "none"}.get(problem, "sigmoid" if num == 1 else "softmax")
    if fn == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if fn == "softmax":
        z = np.exp(x - x.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)
    if fn in ("none", None):
        return x
    raise ValueError(f"function_to_apply must be 'sigmoid', 'softmax' or 'none', got {fn!r}")


def window_outputs(model, features, batch_size: int = 32, output_lead_weights: bool = False):
    """Run ``model`` over the windows in ``features`` (a feature-extractor output) in batches.

    Returns ``(logits (windows, classes) numpy, lead_weights or None)``; with ``output_lead_weights``
    the second item is a list with one (stem_tokens, leads) array per window, cut to the tokens that
    cover real samples (padding excluded).
    """
    import torch

    values = torch.as_tensor(np.asarray(features["input_values"]))
    lead_mask = torch.as_tensor(np.asarray(features["lead_mask"]))
    attention = features.get("attention_mask") if hasattr(features, "get") else None
    device = next(model.parameters()).device
    logits, weights = [], [] if output_lead_weights else None
    patch = int(getattr(model.config, "patch_size", 1))
    with torch.inference_mode():
        for i in range(0, values.shape[0], batch_size):
            out = model(
                input_values=values[i : i + batch_size].to(device),
                lead_mask=lead_mask[i : i + batch_size].to(device),
                output_lead_weights=output_lead_weights,
                return_dict=True,
            )
            logits.append(out.logits.float().cpu().numpy())
            if output_lead_weights and out.lead_fusion_weights is not None:
                w = out.lead_fusion_weights.float().cpu().numpy()
                for j in range(w.shape[0]):
                    n_real = int(np.asarray(attention[i + j]).sum()) if attention is not None else values.shape[-1]
                    weights.append(w[j, : max(1, -(-n_real // patch))])
    n_classes = getattr(model.config, "num_labels", 0)
    return (np.concatenate(logits) if logits else np.zeros((0, n_classes))), weights


def _label_columns(config) -> list[str]:
    id2label = getattr(config, "id2label", None) or {}
    n = int(getattr(config, "num_labels", len(id2label)))
    labels = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(n)]
    return [f"prob_{name}" if name in META_COLUMNS else name for name in labels]


def write_csv_atomic(df, path: str | os.PathLike) -> None:
    """Write ``df`` to ``path`` through a temporary file in the same folder and an atomic rename,
    so readers (and a later crash) never see a half-written file."""
    path = Path(os.fspath(path))
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            df.to_csv(f, index=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _as_data_error(exc: BaseException, record: str) -> ECGDataError:
    """Any per-record failure as a typed :class:`ECGDataError` naming the record."""
    if isinstance(exc, ECGDataError):
        return exc
    msg = str(exc)
    # the feature extractor's messages start with "input: " (it sees one record at a time)
    if msg.startswith("input: "):
        msg = msg[len("input: "):]
    if isinstance(exc, ECGLeadNameError):
        err = LeadNameError(record, msg)
    elif isinstance(exc, ECGInputError):
        err = InvalidSignalError(record, msg)
    else:
        err = ECGDataError(record, f"{type(exc).__name__}: {msg}")
    err.__cause__ = exc
    return err


# --------------------------------------------------------------------------------------------- main API
@dataclass
class _Pending:
    row: dict
    features: Any
    n_windows: int


@dataclass
class _State:
    rows: list = field(default_factory=list)
    errors: list = field(default_factory=list)


def predict_records(
    model_or_path,
    paths,
    feature_extractor=None,
    batch_size: int = 32,
    lead_names: Sequence[str] | str | None = None,
    aggregate: str = "mean",
    progress: bool = True,
    *,
    output_csv: str | os.PathLike | None = None,
    errors_csv: str | os.PathLike | None = None,
    resume: bool = False,
    strict: bool = False,
    function_to_apply: str | None = None,
    device=None,
    flush_every_s: float = 10.0,
):
    """Predict per-class probabilities for ECG records; one row per record.

    Args:
        model_or_path: a checkpoint directory / hub id, or a loaded ECG-NAT classification model.
        paths: a folder (searched recursively), a record path, or a list of those. Record paths may
            carry ``.hea``/``.dat``/``.mat`` or no extension.
        feature_extractor: default: the checkpoint's own (``preprocessor_config.json``): its
            ``window_s`` decides how long records are windowed.
        batch_size: windows per forward pass (windows of several records share a batch).
        lead_names: restrict to these leads (``["I", "II"]`` or ``"I,II"``), or name the leads of
            records whose files do not (see :func:`select_leads`).
        aggregate: ``"mean"`` or ``"max"`` over a record's windows.
        progress: show a tqdm bar over records.
        output_csv: also write the table there, atomically, during and at the end of the run.
        errors_csv: write the failed records there (columns ``record_id, path, error, problem``);
            always written when given (header only when nothing failed), so it is never stale.
        resume: with ``output_csv``, skip records whose path is already in that file and keep its rows.
        strict: raise the first record error instead of collecting it.
        function_to_apply: override the score -> probability function (see
            :func:`scores_to_probabilities`).
        device: move the model there (default: where it is).

    Returns:
        ``pandas.DataFrame`` with columns ``record_id, path, n_windows, duration_s, sampling_rate,
        leads_used, leads_ignored`` and one column per class (``config.id2label`` order; a label
        that collides with those names gets a ``prob_`` prefix). ``df.attrs["errors"]`` lists the
        failed records as dicts ``{record_id, path, error, problem}`` and
        ``df.attrs["error_objects"]`` the :class:`ECGDataError` instances.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from .data.records import read_record

    if aggregate not in ("mean", "max"):
        raise ValueError(f"aggregate must be 'mean' or 'max', got {aggregate!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batch_size = int(batch_size)
    if isinstance(lead_names, str):
        lead_names = [x for x in lead_names.replace(" ", ",").split(",") if x]
    if resume and output_csv is None:
        raise ValueError("resume=True needs output_csv (the file whose rows are kept)")
    model, fe = load_model_and_feature_extractor(model_or_path, feature_extractor, device=device)
    class_cols = _label_columns(model.config)
    columns = list(META_COLUMNS) + class_cols
    record_paths = collect_record_paths(paths)

    state = _State()
    if resume and Path(output_csv).is_file():
        previous = pd.read_csv(output_csv)
        missing = [c for c in columns if c not in previous.columns]
        if missing:
            raise ValueError(f"cannot resume from {output_csv}: it lacks columns {missing} (another model?)")
        state.rows = previous[columns].to_dict("records")
        done = {os.path.abspath(str(p)) for p in previous["path"]}
        before = len(record_paths)
        record_paths = [p for p in record_paths if os.path.abspath(str(p)) not in done]
        logger.info("resume: %d of %d records already in %s", before - len(record_paths), before, output_csv)

    def frame():
        df = pd.DataFrame(state.rows, columns=columns)
        df.attrs["errors"] = [
            {"record_id": Path(e.record).name, "path": e.record, "error": type(e).__name__, "problem": e.problem}
            for e in state.errors
        ]
        df.attrs["error_objects"] = list(state.errors)
        return df

    def write_outputs():
        df = frame()
        if output_csv is not None:
            write_csv_atomic(df, output_csv)
        if errors_csv is not None:
            write_csv_atomic(pd.DataFrame(df.attrs["errors"], columns=list(ERROR_COLUMNS)), errors_csv)
        return df

    pending: list[_Pending] = []
    pending_windows = 0

    def run_pending():
        nonlocal pending, pending_windows
        if not pending:
            return
        keys = [k for k in pending[0].features.keys() if k != "record_index"]
        merged = {k: np.concatenate([np.asarray(p.features[k]) for p in pending]) for k in keys}
        logits, _ = window_outputs(model, merged, batch_size=batch_size)
        probs = scores_to_probabilities(logits, model.config, function_to_apply)
        index = np.concatenate([np.full(p.n_windows, i) for i, p in enumerate(pending)])
        pooled = fe.aggregate(probs, index, n_records=len(pending), reduce=aggregate)
        for p, values in zip(pending, pooled):
            p.row.update({c: float(v) for c, v in zip(class_cols, np.atleast_1d(values))})
            state.rows.append(p.row)
        pending, pending_windows = [], 0

    bar = tqdm(total=len(record_paths), disable=not progress, unit="record", desc="ecgnat predict")
    last_flush = time.monotonic()
    try:
        for rec_path in record_paths:
            rec = str(rec_path)
            try:
                record = read_record(rec_path)
                signal, names, ignored = select_leads(record, lead_names, fe.lead_names)
                feats = fe(signal, sampling_rate=record.sampling_rate, lead_names=names)
                n_windows = int(len(feats["input_values"]))
            except Exception as exc:  # noqa: BLE001 - every per-record failure is reported, none stops the run
                err = _as_data_error(exc, rec)
                if strict:
                    raise err from (None if err is exc else exc)
                state.errors.append(err)
                logger.warning("skipping %s", err)
                bar.set_postfix(errors=len(state.errors))
                bar.update(1)
                continue
            row = {
                "record_id": record.record_id,
                "path": rec,
                "n_windows": n_windows,
                "duration_s": round(float(record.duration_s), 6),
                "sampling_rate": float(record.sampling_rate),
                "leads_used": ",".join(names),
                "leads_ignored": ",".join(ignored),
            }
            pending.append(_Pending(row, feats, n_windows))
            pending_windows += n_windows
            if pending_windows >= batch_size:
                run_pending()
                if output_csv is not None and time.monotonic() - last_flush >= flush_every_s:
                    write_outputs()
                    last_flush = time.monotonic()
            bar.update(1)
        run_pending()
    except BaseException:
        # keep everything finished so far (Ctrl-C, a crash in one batch...), then re-raise
        if output_csv is not None or errors_csv is not None:
            try:
                write_outputs()
            except Exception:  # noqa: BLE001 - never mask the original error
                logger.exception("could not write partial results")
        raise
    finally:
        bar.close()
    df = write_outputs()
    if state.errors:
        logger.info("%d of %d record(s) could not be used", len(state.errors), len(record_paths))
    return df
