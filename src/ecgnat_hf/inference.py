"""Batch inference on ECG record files of any length: records or folders in, one row per record out.

:func:`predict_records` is the engine behind ``ecgnat predict`` and usable on its own::

    from ecgnat_hf.inference import predict_records
    df = predict_records("path/to/checkpoint", "path/to/folder_of_wfdb_records", timeline="timeline.csv")
    df.attrs["errors"]          # records that could not be used: which file, which error, why

How a record becomes a row
--------------------------
1. :class:`ecgnat_hf.streaming.RecordStream` reads the record (WFDB ``.hea`` + ``.dat``/``.mat``, or a
   MATLAB file) one chunk of ``chunk_s`` seconds at a time, and the checkpoint's own feature extractor
   (``preprocessor_config.json``) maps the leads, resamples to the model's rate and cuts windows of
   ``window_s`` seconds (overlapping, the last one aligned to the end): the same windows as for the
   whole record at once, so a 10-second 12-lead ECG, a 24-hour Holter and a 14-day patch go through
   the same path, and memory does not grow with the length. A record shorter than one window is one
   padded window.
2. The model scores every window; scores become probabilities per window (sigmoid for multi-label,
   softmax for single-label, unchanged for regression), pooled per record (mean by default, or max).
3. Decisions: a multi-label class is positive when its probability reaches the checkpoint's decision
   threshold (``config.decision_thresholds``, fitted on the validation split at fine-tuning; 0.5 when
   the checkpoint has none, said in the log and in ``df.attrs["thresholds_source"]``); a single-label
   model gives its arg-max label. ``labels`` lists the positive labels of the pooled probabilities;
   ``time_positive_<class>`` is the fraction of the recording's time whose window is positive (each
   window stands for the time from its start to the next window's start).
4. ``timeline``: every window's probabilities with its start and end time (CSV or Parquet).

Windows of several records share a batch, so many short records run as fast as one long one.

Failures and durability
-----------------------
A record that cannot be used (missing or truncated file, unreadable header, NaN samples, unknown
leads, too short...) does not stop the run: it is recorded as an :class:`ECGDataError` (record +
problem) in ``df.attrs["errors"]`` and, when ``errors_csv`` is given, in that file. With
``output_csv``, the files are opened (so checked) before any work, and every record's row is written
and flushed as soon as the record is finished: Ctrl-C, a crash or ``strict=True`` keep every finished
record. ``resume=True`` keeps the rows of a previous run and skips their records; it refuses a file
written by another model, with other options or in another format (the run's description is kept
beside the CSV in ``<stem>.run.json``). A checkpoint without a trained classification head (a
pretraining checkpoint) is refused with :class:`CheckpointError` rather than scored with random weights.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .data.errors import ECGDataError, InvalidSignalError, LeadNameError
from .models.ecgnat.feature_extraction_ecgnat import (
    CANONICAL_LEADS,
    LEAD_ALIASES,
    ECGInputError,
    ECGLeadNameError,
    _squash,
)

logger = logging.getLogger(__name__)

__all__ = [
    "predict_records",
    "load_model_and_feature_extractor",
    "collect_record_paths",
    "select_leads",
    "window_outputs",
    "scores_to_probabilities",
    "write_csv_atomic",
    "run_description",
    "CheckpointError",
    "ResumeError",
    "META_COLUMNS",
    "DECISION_COLUMNS",
    "ERROR_COLUMNS",
    "TIMELINE_COLUMNS",
    "RUN_FORMAT",
]

#: columns before the per-class probability columns, in order
META_COLUMNS = ("record_id", "path", "n_windows", "duration_s", "sampling_rate", "leads_used", "leads_ignored")
#: after META_COLUMNS: ``quality`` (signal-quality findings, ``;``-separated, empty when none or when no
#: check ran; filled by the ``quality_fn`` hook) and ``labels`` (the decided labels, ``;``-separated)
DECISION_COLUMNS = ("quality", "labels")
#: columns of the errors table
ERROR_COLUMNS = ("record_id", "path", "error", "problem")
#: columns of the timeline before the per-class probabilities
TIMELINE_COLUMNS = ("record_id", "path", "window", "start_s", "end_s")
#: format tag of ``<stem>.run.json``, checked by ``resume``
RUN_FORMAT = "ecgnat-predict/2"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used for prediction (e.g. no trained classification head)."""


class ResumeError(ValueError):
    """``resume`` asked to continue a file written by another model, with other options or in another format."""


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
        model, info = AutoModelForSequenceClassification.from_pretrained(
            source, output_loading_info=True, **load_kwargs)
        _check_trained(model, info, source)
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


def _check_trained(model, info: dict, source: str) -> None:
    """Refuse weights that from_pretrained had to initialise at random (a pretraining checkpoint has no
    classification head: its predictions would be noise with real-looking labels)."""
    missing = list(info.get("missing_keys") or []) + [k[0] if isinstance(k, tuple) else k
                                                      for k in info.get("mismatched_keys") or []]
    if not missing:
        return
    archs = getattr(model.config, "architectures", None) or []
    kind = (" It was saved as " + ", ".join(archs) + ": a pretraining checkpoint."
            if any("PreTraining" in a for a in archs) else "")
    shown = ", ".join(sorted(missing)[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    raise CheckpointError(
        f"{source}: no trained classification head: {len(missing)} weight(s) are not in the checkpoint and "
        f"would be random ({shown}).{kind} Fine-tune it first (ecgnat finetune --model_name_or_path "
        f"{source} ...) and predict with the fine-tuned checkpoint."
    )


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


def signal_quality_findings(signal, sampling_rate, lead_names) -> list[str]:
    """The default quality column: findings of :func:`ecgnat_hf.data.quality.check_signal_quality` (flat,
    saturated or implausible leads). Records with no usable lead are refused by the feature extractor."""
    from .data.quality import check_signal_quality

    report = check_signal_quality(signal, sampling_rate, lead_names, require_usable=False)
    findings = list(report.flags)
    if report.unusable_leads:  # the feature extractor masks these: say so next to leads_used
        findings.append("masked (not scored): " + ",".join(report.unusable_leads))
    return findings


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
    if isinstance(lead_names, Mapping):  # {"ECG": "I"}: name the record's channels, then use every standard lead
        from .data.leads import rename_leads

        names = rename_leads(names, lead_names, record.path, missing="ignore")
        lead_names = None
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


def window_outputs(model, features, batch_size: int = 32, output_lead_weights: bool = False, num_workers: int = 1):
    """Run ``model`` over the windows in ``features`` (a feature-extractor output) in batches.

    Returns ``(logits (windows, classes) numpy, lead_weights or None)``; with ``output_lead_weights``
    the second item is a list with one (stem_tokens, leads) array per window, cut to the tokens that
    cover real samples (padding excluded).

    ``num_workers`` > 1 scores that many batches at once, each in its own thread (torch releases the GIL
    inside its operations). Meant for ``torch.set_num_threads(1)``: the threads then share nothing and
    never wait for each other, where torch's own multi-threaded operations (OpenMP) meet at a barrier
    after every operation and stall when another process takes a core (measured 3-8x slower than one
    thread on a busy 2-core machine). Each window's result does not depend on it (nor on the batch it
    lands in) beyond float rounding.
    """
    import torch

    values = torch.as_tensor(np.asarray(features["input_values"]))
    lead_mask = torch.as_tensor(np.asarray(features["lead_mask"]))
    attention = features.get("attention_mask") if hasattr(features, "get") else None
    device = next(model.parameters()).device
    patch = int(getattr(model.config, "patch_size", 1))

    def batch(i: int):
        with torch.inference_mode():  # thread-local: entered in the thread that runs the batch
            out = model(
                input_values=values[i : i + batch_size].to(device),
                lead_mask=lead_mask[i : i + batch_size].to(device),
                output_lead_weights=output_lead_weights,
                return_dict=True,
            )
            logits = out.logits.float().cpu().numpy()
            weights = []
            if output_lead_weights and out.lead_fusion_weights is not None:
                w = out.lead_fusion_weights.float().cpu().numpy()
                for j in range(w.shape[0]):
                    n_real = int(np.asarray(attention[i + j]).sum()) if attention is not None else values.shape[-1]
                    weights.append(w[j, : max(1, -(-n_real // patch))])
        return logits, weights

    starts = range(0, values.shape[0], batch_size)
    workers = min(max(1, int(num_workers)), len(starts))
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers, thread_name_prefix="ecgnat-windows") as pool:
            results = list(pool.map(batch, starts))  # in order
    else:
        results = [batch(i) for i in starts]
    n_classes = getattr(model.config, "num_labels", 0)
    logits = np.concatenate([r[0] for r in results]) if results else np.zeros((0, n_classes))
    weights = [w for r in results for w in r[1]] if output_lead_weights else None
    return logits, weights


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


# --------------------------------------------------------------------------------------------- run files
def _fingerprint(model, fe) -> str:
    """sha256 of the weights, the model config (thresholds and labels included) and the preprocessing."""
    import hashlib

    import torch

    h = hashlib.sha256()
    cfg = model.config.to_dict()
    cfg.pop("_name_or_path", None)
    cfg.pop("transformers_version", None)
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    pre = fe.to_dict() if hasattr(fe, "to_dict") else {}
    h.update(json.dumps(pre, sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def run_description(model, fe, columns, options: dict) -> dict:
    """What ``<stem>.run.json`` holds: enough to refuse resuming a file made by another model or with
    other options."""
    return {
        "format": RUN_FORMAT,
        "model": str(getattr(model, "name_or_path", "") or ""),
        "model_fingerprint": _fingerprint(model, fe),
        "columns": list(columns),
        "options": options,
    }


def _run_json_path(output_csv) -> Path:
    p = Path(os.fspath(output_csv))
    return p.with_name(p.stem + ".run.json")


def _check_resumable(output_csv: Path, expected: dict) -> None:
    meta_path = _run_json_path(output_csv)
    try:
        previous = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResumeError(
            f"cannot resume {output_csv}: {meta_path.name} is missing beside it, so the file was not written by "
            f"this version of ecgnat predict (or was moved without it); predict into a new file") from None
    except (OSError, ValueError) as exc:
        raise ResumeError(f"cannot resume {output_csv}: {meta_path} is unreadable ({exc})") from None
    if not isinstance(previous, dict) or previous.get("format") != RUN_FORMAT:
        got = previous.get("format") if isinstance(previous, dict) else type(previous).__name__
        raise ResumeError(f"cannot resume {output_csv}: written in format {got!r}, this is {RUN_FORMAT!r}")
    if previous.get("model_fingerprint") != expected["model_fingerprint"]:
        raise ResumeError(
            f"cannot resume {output_csv}: it was written by another model ({previous.get('model') or 'unnamed'}, "
            f"weights/config/preprocessing {str(previous.get('model_fingerprint'))[:12]}) than this one "
            f"({expected['model'] or 'unnamed'}, {expected['model_fingerprint'][:12]})")
    if previous.get("columns") != expected["columns"]:
        raise ResumeError(f"cannot resume {output_csv}: its columns {previous.get('columns')} differ from "
                          f"this run's {expected['columns']}")
    diff = {k: (previous.get("options", {}).get(k), v) for k, v in expected["options"].items()
            if previous.get("options", {}).get(k) != v}
    if diff:
        shown = "; ".join(f"{k}: was {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise ResumeError(f"cannot resume {output_csv}: it was written with other options ({shown})")


def _complete_rows(path: Path, columns: list[str]) -> list[list[str]]:
    """The complete data rows of a CSV written by a previous run (a last line cut by a crash is dropped).
    Raises ResumeError when its header is not ``columns``."""
    import csv

    text = path.read_text(encoding="utf-8")
    complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
    rows = list(csv.reader(complete.splitlines()))
    if not rows or rows[0] != list(columns):
        raise ResumeError(f"cannot resume {path}: its header is not this run's columns {list(columns)}")
    return [r for r in rows[1:] if len(r) == len(columns)]


class _CsvAppender:
    """A CSV opened before the work starts; rows are appended and flushed one by one."""

    def __init__(self, path, columns, keep_rows: list[list[str]] | None = None, fsync_every_s: float = 10.0):
        import csv

        self.path = Path(os.fspath(path))
        self.columns = list(columns)
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.path} is a folder, not a CSV file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # header (+ rows kept by resume) through an atomic rename, then append
        import pandas as pd

        write_csv_atomic(pd.DataFrame(keep_rows or [], columns=self.columns), self.path)
        self._f = open(self.path, "a", encoding="utf-8", newline="")
        self._w = csv.writer(self._f, lineterminator="\n")
        self._last_sync = time.monotonic()
        self.fsync_every_s = fsync_every_s

    def write(self, row: dict) -> None:
        self._w.writerow([_csv_cell(row.get(c, "")) for c in self.columns])
        self._f.flush()
        if time.monotonic() - self._last_sync >= self.fsync_every_s:
            os.fsync(self._f.fileno())
            self._last_sync = time.monotonic()

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()


def _csv_cell(v):
    if isinstance(v, float):
        return repr(v)  # shortest text that reads back to the same float
    return v


class _TimelineWriter:
    """Per-window probabilities, appended as records are scored: CSV (flushed per chunk) or Parquet
    (``.parquet``/``.pq``; row groups of ``rows_per_group``, complete once closed)."""

    def __init__(self, path, columns, keep_paths: set[str] | None = None, rows_per_group: int = 50_000):
        self.path = Path(os.fspath(path))
        self.columns = list(columns)
        self.parquet = self.path.suffix.lower() in (".parquet", ".pq")
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.path} is a folder, not a timeline file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._buffer: list = []
        self._n_buffered = 0
        self.rows_per_group = rows_per_group
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            kept = None
            if keep_paths is not None and self.path.is_file():
                table = pq.read_table(self.path)
                if table.column_names != self.columns:
                    raise ResumeError(f"cannot resume {self.path}: its columns are not this run's")
                mask = [str(p) in keep_paths for p in table.column("path").to_pylist()]
                kept = table.filter(pa.array(mask))
            self._schema = pa.schema([(c, pa.string() if c in ("record_id", "path") else
                                       pa.int64() if c == "window" else pa.float64()) for c in self.columns])
            self._writer = pq.ParquetWriter(self.path, self._schema)
            if kept is not None and kept.num_rows:
                self._writer.write_table(kept.cast(self._schema))
        else:
            import csv

            keep_rows = []
            if keep_paths is not None and self.path.is_file():
                keep_rows = [r for r in _complete_rows(self.path, self.columns) if r[1] in keep_paths]
            import pandas as pd

            write_csv_atomic(pd.DataFrame(keep_rows, columns=self.columns), self.path)
            self._f = open(self.path, "a", encoding="utf-8", newline="")
            self._csv = csv.writer(self._f, lineterminator="\n")

    def write(self, record_id: str, path: str, chunk, probs: np.ndarray) -> None:
        n = len(chunk)
        cols = {
            "record_id": [record_id] * n, "path": [path] * n, "window": chunk.index.astype(np.int64),
            "start_s": chunk.start_s, "end_s": chunk.end_s,
        }
        for k, c in enumerate(self.columns[len(TIMELINE_COLUMNS):]):
            cols[c] = probs[:, k]
        if self.parquet:
            import pyarrow as pa

            self._buffer.append(pa.table({c: cols[c] for c in self.columns}, schema=self._schema))
            self._n_buffered += n
            if self._n_buffered >= self.rows_per_group:
                self._flush_parquet()
        else:
            for i in range(n):
                self._csv.writerow([record_id, path, int(cols["window"][i]), repr(float(chunk.start_s[i])),
                                    repr(float(chunk.end_s[i]))] + [repr(float(v)) for v in probs[i]])
            self._f.flush()

    def _flush_parquet(self) -> None:
        import pyarrow as pa

        if self._buffer:
            self._writer.write_table(pa.concat_tables(self._buffer))
            self._buffer, self._n_buffered = [], 0

    def close(self) -> None:
        if self.parquet:
            if self._writer is not None:
                self._flush_parquet()
                self._writer.close()
                self._writer = None
        elif not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()


# --------------------------------------------------------------------------------------------- main API
@dataclass
class _Record:
    """One record in flight: its stream, its running pools and its row."""

    path: str
    stream: Any
    row: dict
    quality: list = field(default_factory=list)
    n_scored: int = 0
    sum: Any = None
    max: Any = None
    positive_s: Any = None
    scored: Any = None  # per model lead: present (lead_mask 1) in at least one scored window
    read_done: bool = False
    in_flight: int = 0


def _time_columns(class_cols: Sequence[str]) -> list[str]:
    return [f"time_positive_{c}" for c in class_cols]


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
    timeline: str | os.PathLike | None = None,
    resume: bool = False,
    strict: bool = False,
    function_to_apply: str | None = None,
    device=None,
    chunk_s: float = 600.0,
    quality_fn=None,
    flush_every_s: float = 10.0,
    sampling_rate: float | None = None,
    num_workers: int = 1,
):
    """Predict per-class probabilities and labels for ECG records of any length; one row per record.

    Args:
        model_or_path: a checkpoint directory / hub id, or a loaded ECG-NAT classification model. A
            checkpoint without a trained head (a pretraining checkpoint) raises :class:`CheckpointError`.
        paths: a folder (searched recursively), a record path, or a list of those. Record paths may
            carry ``.hea``/``.dat``/``.mat`` or no extension.
        feature_extractor: default: the checkpoint's own (``preprocessor_config.json``): its
            ``window_s`` and ``window_stride_s`` decide the windows.
        batch_size: windows per forward pass (windows of several records share a batch).
        lead_names: restrict to these leads (``["I", "II"]`` or ``"I,II"``), or name the leads of
            records whose files do not (see :func:`select_leads`).
        aggregate: ``"mean"`` or ``"max"`` over a record's windows.
        progress: show a tqdm bar over records.
        output_csv: write each record's row there as soon as the record is finished (opened, so
            checked, before any work). ``<stem>.run.json`` beside it describes the run for ``resume``.
        errors_csv: the failed records (columns ``record_id, path, error, problem``), one line per
            failure as it happens; header only when nothing failed, so it is never stale.
        timeline: also write every window's probabilities with ``record_id, path, window, start_s,
            end_s`` (seconds from the start of the recording): CSV, or Parquet for ``.parquet``/``.pq``.
        resume: with ``output_csv``, keep its rows and skip their records; refuses (:class:`ResumeError`)
            a file written by another model, with other options or in another format.
        strict: stop at the first record error: records already read are finished and written, then
            the error is raised.
        function_to_apply: override the score -> probability function (see
            :func:`scores_to_probabilities`).
        device: move the model there (default: where it is).
        chunk_s: seconds of recording read and preprocessed at a time (bounded memory; see
            :mod:`ecgnat_hf.streaming`). Results do not depend on it.
        quality_fn: signal-quality hook, called on every chunk of raw signal as
            ``quality_fn(signal (leads, samples) mV, sampling_rate, lead_names)``. Default
            (``None``): :func:`signal_quality_findings` (flat, saturated and implausible leads from
            :mod:`ecgnat_hf.data.quality`); ``False`` turns the column off. It returns a finding
            (str), a list of findings or None, which go (deduplicated, ``;``-separated) to the ``quality``
            column; raising :class:`ECGDataError` refuses the record. The header's doubtful calibration
            (negative or zero gains of the leads used, ``metadata["calibration_flags"]``) is added as well.
        sampling_rate: the rate (Hz) of MATLAB files without a WFDB header and of no known layout; their
            channels are named by ``lead_names`` (one name per channel). Ignored for other records.
        num_workers: batches scored at once, each in its own thread (see :func:`window_outputs`; for
            ``torch.set_num_threads(1)``). Windows are gathered ``batch_size * num_workers`` at a time.
            Results do not depend on it.

    Returns:
        ``pandas.DataFrame`` with columns ``record_id, path, n_windows, duration_s, sampling_rate,
        leads_used, leads_ignored, quality, labels``, one probability column per class
        (``config.id2label`` order; a label that collides with those names gets a ``prob_`` prefix),
        then ``time_positive_<class>`` per class (classification models). ``df.attrs``: ``errors``
        (dicts ``{record_id, path, error, problem}``), ``error_objects`` (the :class:`ECGDataError`
        instances), ``thresholds`` and ``thresholds_source``, ``timing`` (``windows`` scored,
        ``recording_s`` of recording and wall ``seconds`` of this call, model loading excluded).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from .data.records import calibration_findings
    from .streaming import RecordStream

    if quality_fn is None:
        quality_fn = signal_quality_findings
    from .training.thresholds import decision_rule, positive_mask, thresholds_from_config

    if aggregate not in ("mean", "max"):
        raise ValueError(f"aggregate must be 'mean' or 'max', got {aggregate!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not chunk_s > 0:
        raise ValueError(f"chunk_s must be positive, got {chunk_s}")
    if int(num_workers) < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    batch_size, num_workers = int(batch_size), int(num_workers)
    if isinstance(lead_names, str):
        lead_names = [x for x in lead_names.replace(" ", ",").split(",") if x]
    if resume and output_csv is None:
        raise ValueError("resume=True needs output_csv (the file whose rows are kept)")
    from .output_paths import check_output_file

    for what, target in (("output_csv", output_csv), ("errors_csv", errors_csv), ("timeline", timeline)):
        if target is not None:  # OutputPathError naming the path, before the model is even loaded
            check_output_file(target, what)
    model, fe = load_model_and_feature_extractor(model_or_path, feature_extractor, device=device)
    config = model.config
    class_cols = _label_columns(config)
    rule = decision_rule(config)
    thresholds, thresholds_source = thresholds_from_config(config)
    if function_to_apply is not None and rule != "none":
        logger.info("function_to_apply=%r: decisions use the same rule (%s) on these scores", function_to_apply, rule)
    if rule == "threshold" and thresholds_source != "config":
        logger.warning("the checkpoint has no fitted decision thresholds: labels use %s", thresholds_source)
    time_cols = _time_columns(class_cols) if rule != "none" else []
    columns = list(META_COLUMNS) + list(DECISION_COLUMNS) + class_cols + time_cols
    record_paths = collect_record_paths(paths)
    options = {
        "aggregate": aggregate,
        "lead_names": (dict(lead_names) if isinstance(lead_names, Mapping) else list(lead_names)) if lead_names else None,
        "function_to_apply": function_to_apply,
    }

    rows: list[dict] = []
    errors: list[ECGDataError] = []
    out = err_out = tl = None
    description = run_description(model, fe, columns, options) if output_csv is not None else None
    # open every output first: an unwritable path fails now, not after the work
    try:
        keep: list[list[str]] = []
        if resume and Path(output_csv).is_file():
            _check_resumable(Path(output_csv), description)
            keep = _complete_rows(Path(output_csv), columns)
            done = {os.path.abspath(r[1]) for r in keep}
            before = len(record_paths)
            record_paths = [p for p in record_paths if os.path.abspath(str(p)) not in done]
            logger.info("resume: %d of %d records already in %s", before - len(record_paths), before, output_csv)
            rows = [_typed_row(dict(zip(columns, r)), columns) for r in keep]
        if output_csv is not None:
            out = _CsvAppender(output_csv, columns, keep, fsync_every_s=flush_every_s)
            write_json_atomic(description, _run_json_path(output_csv))
        if errors_csv is not None:
            err_out = _CsvAppender(errors_csv, ERROR_COLUMNS, fsync_every_s=flush_every_s)
        if timeline is not None:
            kept_paths = {r[1] for r in keep} if resume else None
            tl = _TimelineWriter(timeline, list(TIMELINE_COLUMNS) + class_cols, kept_paths)
    except BaseException:
        for w in (out, err_out, tl):
            if w is not None:
                w.close()
        raise

    def frame():
        df = pd.DataFrame(rows, columns=columns)
        df.attrs["errors"] = [_error_dict(e) for e in errors]
        df.attrs["error_objects"] = list(errors)
        df.attrs["thresholds"] = None if thresholds is None else dict(zip(class_cols, map(float, thresholds)))
        df.attrs["thresholds_source"] = thresholds_source
        df.attrs["timing"] = {"windows": n_scored, "recording_s": float(recording_s),
                              "seconds": time.monotonic() - t_start}
        return df

    pending: list = []  # (record, chunk) read and preprocessed, not yet scored
    n_pending = 0
    n_scored, recording_s, t_start = 0, 0.0, time.monotonic()

    def finish(r: _Record):
        nonlocal n_scored, recording_s
        n_scored += r.n_scored
        recording_s += r.stream.duration_s
        n = max(r.n_scored, 1)
        pooled = r.sum / n if aggregate == "mean" else r.max
        if r.scored is not None:  # leads_used: only the leads scored in at least one window (masked ones are not)
            used = r.row["leads_used"].split(",") if r.row["leads_used"] else []
            model_leads = list(fe.lead_names)
            scored = [u for u in used if _canonical(u) in model_leads and r.scored[model_leads.index(_canonical(u))]]
            if scored != used:
                r.row["leads_used"] = ",".join(scored)
                r.row["leads_ignored"] = ",".join([x for x in r.row["leads_ignored"].split(",") if x]
                                                  + [u for u in used if u not in scored])
        r.row["quality"] = ";".join(dict.fromkeys(r.quality))
        decided = positive_mask(pooled[None, :], config, thresholds) if rule != "none" else None
        r.row["labels"] = ";".join(c for c, on in zip(_label_names(config), decided[0]) if on) if decided is not None else ""
        r.row.update({c: float(v) for c, v in zip(class_cols, pooled)})
        if time_cols:
            dur = r.stream.duration_s
            r.row.update({c: float(v / dur) if dur > 0 else float("nan") for c, v in zip(time_cols, r.positive_s)})
        rows.append(r.row)
        if out is not None:
            out.write(r.row)

    def run_pending():
        nonlocal pending, n_pending
        if not pending:
            return
        merged = {k: np.concatenate([c.features[k] for _, c in pending])
                  for k in ("input_values", "lead_mask") if k in pending[0][1].features}
        try:
            logits, _ = window_outputs(model, merged, batch_size=batch_size, num_workers=num_workers)
            probs = scores_to_probabilities(logits, config, function_to_apply)
        except Exception as exc:  # a model failure is not the current record's fault: stop the run
            raise _BatchFailed(exc) from exc
        at = 0
        for r, chunk in pending:
            p = probs[at : at + len(chunk)]
            at += len(chunk)
            r.sum = p.sum(axis=0) if r.sum is None else r.sum + p.sum(axis=0)
            r.max = p.max(axis=0) if r.max is None else np.maximum(r.max, p.max(axis=0))
            if time_cols:
                pos = positive_mask(p, config, thresholds)
                owned = (pos * chunk.owned_s[:, None]).sum(axis=0)
                r.positive_s = owned if r.positive_s is None else r.positive_s + owned
            r.n_scored += len(chunk)
            present = np.asarray(chunk.features["lead_mask"]).astype(bool).any(axis=0)
            r.scored = present if r.scored is None else (r.scored | present)
            r.in_flight -= 1
            if tl is not None:
                tl.write(r.row["record_id"], r.path, chunk, p)
            if r.read_done and r.in_flight == 0:
                finish(r)
        pending, n_pending = [], 0

    def fail(r_path: str, exc: Exception, r: _Record | None):
        nonlocal pending, n_pending
        err = _as_data_error(exc, r_path)
        if r is not None:  # drop its chunks that were waiting for the model
            pending = [(q, c) for q, c in pending if q is not r]
            n_pending = sum(len(c) for _, c in pending)
        errors.append(err)
        if err_out is not None:  # with strict too: the record the run stopped at is in the errors file
            err_out.write(_error_dict(err))
        if strict:
            run_pending()  # finish (and write) the records read before this one
            raise err from (None if err is exc else exc)
        logger.warning("skipping %s", err)

    bar = tqdm(total=len(record_paths), disable=not progress, unit="record", desc="ecgnat predict")
    try:
        for rec_path in record_paths:
            rec = str(rec_path)
            r = None
            try:
                stream = RecordStream(rec_path, fe, lead_names=lead_names, chunk_s=chunk_s, sampling_rate=sampling_rate)
                r = _Record(rec, stream, {
                    "record_id": stream.record_id, "path": rec, "n_windows": stream.n_windows,
                    "duration_s": round(float(stream.duration_s), 6), "sampling_rate": float(stream.sampling_rate),
                    "leads_used": ",".join(stream.lead_names_used), "leads_ignored": ",".join(stream.leads_ignored),
                })
                r.quality.extend(calibration_findings(stream.metadata, stream.lead_names_used))
                if quality_fn is not False:
                    stream.on_read = lambda x, fs, names, _r=r: _r.quality.extend(_findings(quality_fn(x, fs, names)))
                for chunk in stream:
                    pending.append((r, chunk))
                    r.in_flight += 1
                    n_pending += len(chunk)
                    if n_pending >= batch_size * num_workers:
                        run_pending()
                r.row["n_windows"] = stream.n_windows
                r.read_done = True
                if r.in_flight == 0:
                    finish(r)
            except _BatchFailed as exc:
                raise exc.__cause__ from None
            except Exception as exc:  # noqa: BLE001 - every per-record failure is reported, none stops the run
                fail(rec, exc, r)
                if r is not None:
                    r.read_done, r.in_flight = False, -1  # never finished
            if errors:
                bar.set_postfix(errors=len(errors))
            bar.update(1)
        try:
            run_pending()
        except _BatchFailed as exc:
            raise exc.__cause__ from None
    finally:
        bar.close()
        for w in (out, err_out, tl):
            if w is not None:
                try:
                    w.close()
                except Exception:  # noqa: BLE001 - never mask the original error
                    logger.exception("could not close %s", getattr(w, "path", w))
    if errors:
        logger.info("%d of %d record(s) could not be used", len(errors), len(record_paths))
    return frame()


class _BatchFailed(Exception):
    """The model failed on a batch (windows of several records): re-raised as the original error."""


def _findings(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value if v]


def _label_names(config) -> list[str]:
    from .training.thresholds import label_names_from_config

    return label_names_from_config(config)


def _error_dict(e: ECGDataError) -> dict:
    return {"record_id": Path(str(e.record)).name, "path": e.record, "error": type(e).__name__, "problem": e.problem}


_INT_COLUMNS = ("n_windows",)
_TEXT_COLUMNS = ("record_id", "path", "leads_used", "leads_ignored", "quality", "labels")


def _typed_row(row: dict, columns) -> dict:
    """A row read back from CSV text with the types a fresh row has."""
    out = {}
    for c in columns:
        v = row.get(c, "")
        if c in _TEXT_COLUMNS:
            out[c] = v
        elif c in _INT_COLUMNS:
            out[c] = int(v)
        else:
            out[c] = float(v) if v != "" else float("nan")
    return out


def write_json_atomic(obj, path: str | os.PathLike) -> None:
    """Write JSON through a temporary file and an atomic rename."""
    path = Path(os.fspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
