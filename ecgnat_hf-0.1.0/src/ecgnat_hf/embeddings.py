"""Embeddings of ECG records from an ECG-NAT checkpoint, for linear probes, clustering and retrieval.

:func:`embed_records` is the engine behind ``ecgnat embed``::

    from ecgnat_hf.embeddings import embed_records, write_embeddings
    df = embed_records("path/to/checkpoint", "path/to/folder_of_records")
    X = df.filter(like="emb_").to_numpy()        # (records, hidden_size) float32
    write_embeddings(df, "embeddings.parquet")   # or .npz

What an embedding is
--------------------
The encoder (``AutoModel``: works with pretraining and fine-tuned checkpoints) runs in eval mode
under ``torch.inference_mode()``: no time masking, no random lead masking, no dropout, no drop path.

* window embedding: ``pooler_output``, the mean of the final-stage tokens that cover real samples
  (tokens over the right padding are left out). It is what the classification head reads.
* record embedding: the mean of its window embeddings (the checkpoint's feature extractor cuts a
  record into its ``window_s`` windows with ``window_stride_s`` overlap, the last one aligned to the
  end; a record shorter than one window is one window).

Each record is embedded on its own (its windows never share a batch with another record's), through
the same ``ecg-feature-extraction`` pipeline that ``transformers.pipeline`` builds, so an embedding
does not depend on which other records are in the run: the same record, checkpoint and torch thread
count give bit-identical values.

Failures
--------
A record that cannot be used is reported as an :class:`ECGDataError` (record + problem) in
``df.attrs["errors"]`` and skipped, as ``ecgnat predict`` does; ``strict=True`` raises instead.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .inference import META_COLUMNS, _as_data_error, collect_record_paths

logger = logging.getLogger(__name__)

__all__ = ["embed_records", "load_encoder", "write_embeddings", "embedding_columns", "EMBEDDING_FORMATS"]

#: output formats of :func:`write_embeddings`, by file suffix
EMBEDDING_FORMATS = (".parquet", ".npz")


def embedding_columns(df) -> list[str]:
    """The ``emb_*`` columns of an :func:`embed_records` table, in order."""
    return [c for c in df.columns if str(c).startswith("emb_")]


def load_encoder(model_or_path, feature_extractor=None, device=None):
    """``(encoder, feature_extractor)``: ``AutoModel`` (the ECG-NAT encoder) in eval mode + the checkpoint's extractor.

    ``model_or_path``: a checkpoint folder or hub id, or a loaded ECG-NAT model (a classifier's or a
    pretraining model's encoder is used).
    """
    from transformers import AutoFeatureExtractor, AutoModel

    from . import ECGNATModel
    from .inference import load_model_and_feature_extractor

    if isinstance(model_or_path, (str, os.PathLike)):
        source = os.fspath(model_or_path)
        model = AutoModel.from_pretrained(source)
        if feature_extractor is None:
            feature_extractor = AutoFeatureExtractor.from_pretrained(source)
    else:
        model = model_or_path
    if not isinstance(model, ECGNATModel):
        encoder = getattr(model, "ecgnat", None)
        if not isinstance(encoder, ECGNATModel):
            raise ValueError(f"embeddings need an ECG-NAT checkpoint; got {type(model).__name__}")
        if feature_extractor is None:  # found next to the checkpoint the wrapper was loaded from
            _, feature_extractor = load_model_and_feature_extractor(model)
        model = encoder
    return load_model_and_feature_extractor(model, feature_extractor, device=device)


def embed_records(
    model_or_path,
    paths,
    feature_extractor=None,
    lead_names: Sequence[str] | str | None = None,
    per_window: bool = False,
    window_batch_size: int = 64,
    progress: bool = True,
    strict: bool = False,
    device=None,
):
    """Embed ECG records; one row per record (or per window with ``per_window=True``).

    Args:
        model_or_path: checkpoint folder / hub id, or a loaded ECG-NAT model.
        paths: a folder (searched recursively), a record path, or a list of those.
        lead_names: use only these leads (``["I", "II"]`` or ``"I,II"``), as ``ecgnat predict`` does.
        per_window: one row per window (with ``window_index`` and ``window_start_s``) instead of per record.
        window_batch_size: windows per forward pass within a record.
        strict: raise the first record error instead of collecting it.

    Returns:
        ``pandas.DataFrame``: ``record_id, path, n_windows, duration_s, sampling_rate, leads_used``
        (+ ``window_index, window_start_s`` per window), then ``emb_0 .. emb_{hidden_size-1}``
        (float32). ``df.attrs["errors"]`` lists the records that could not be used and
        ``df.attrs["pooling"]`` says how the values were pooled.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from .data.records import read_record
    from .inference import select_leads
    from .models.ecgnat.pipeline_ecgnat import ECGFeatureExtractionPipeline

    if isinstance(lead_names, str):
        lead_names = [x for x in lead_names.replace(" ", ",").split(",") if x]
    encoder, fe = load_encoder(model_or_path, feature_extractor, device=device)
    pipe = ECGFeatureExtractionPipeline(model=encoder, feature_extractor=fe, device=encoder.device)
    hidden = int(encoder.config.hidden_size)
    columns = [f"emb_{i}" for i in range(hidden)]
    meta = [c for c in META_COLUMNS if c != "leads_ignored"]
    rows, vectors, errors = [], [], []
    record_paths = collect_record_paths(paths)
    for rec_path in tqdm(record_paths, disable=not progress, unit="record", desc="ecgnat embed"):
        rec = str(rec_path)
        try:
            record = read_record(rec_path)
            signal, names, _ = select_leads(record, lead_names, fe.lead_names)
            out = pipe({"array": signal, "sampling_rate": record.sampling_rate, "lead_names": names},
                       per_window=per_window, window_batch_size=window_batch_size)
        except Exception as exc:  # noqa: BLE001 - every per-record failure is reported, none stops the run
            err = _as_data_error(exc, rec)
            if strict:
                raise err from (None if err is exc else exc)
            errors.append(err)
            logger.warning("skipping %s", err)
            continue
        if getattr(fe, "quality_check", False):  # leads the extractor masked (flat, saturated) were not used
            from .data.quality import check_signal_quality

            report = check_signal_quality(signal, record.sampling_rate, names, fe.thresholds, require_usable=False)
            names = [n for n, ok in zip(names, report.usable) if ok]
        row = {"record_id": record.record_id, "path": rec, "n_windows": out["n_windows"],
               "duration_s": round(float(record.duration_s), 6), "sampling_rate": float(record.sampling_rate),
               "leads_used": ",".join(names)}
        if per_window:
            for i, (start, vec) in enumerate(zip(out["window_start_s"], out["window_embeddings"])):
                rows.append({**row, "window_index": i, "window_start_s": float(start)})
                vectors.append(vec)
        else:
            rows.append(row)
            vectors.append(out["embedding"])
    meta_cols = meta + (["window_index", "window_start_s"] if per_window else [])
    matrix = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), hidden)
    df = pd.concat([pd.DataFrame(rows, columns=meta_cols), pd.DataFrame(matrix, columns=columns)], axis=1)
    df.attrs["errors"] = [
        {"record_id": Path(e.record).name, "path": e.record, "error": type(e).__name__, "problem": e.problem}
        for e in errors
    ]
    df.attrs["pooling"] = (
        "window: mean of the final-stage tokens covering real samples (pooler_output); "
        + ("one row per window" if per_window else f"record: mean over its {fe.window_s:g} s windows")
    )
    return df


def write_embeddings(df, path: str | os.PathLike) -> Path:
    """Write an :func:`embed_records` table: ``.parquet`` (the table as it is) or ``.npz``.

    The ``.npz`` holds ``embeddings`` (rows, hidden_size) float32 and one array per metadata column
    (``record_id``, ``path``, ... as strings or numbers), so ``np.load(f)["embeddings"]`` is the matrix.
    The file is written through a temporary file and renamed, so it is never seen half-written.
    """
    path = Path(os.fspath(path))
    suffix = path.suffix.lower()
    if suffix not in EMBEDDING_FORMATS:
        raise ValueError(f"{path}: embeddings are written as {' or '.join(EMBEDDING_FORMATS)}, not {suffix or 'no suffix'!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{suffix}")
    try:
        if suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            emb = embedding_columns(df)
            meta = {c: df[c].to_numpy() for c in df.columns if c not in emb}
            meta = {c: (v.astype(str) if v.dtype == object else v) for c, v in meta.items()}
            np.savez(tmp, embeddings=df[emb].to_numpy(dtype=np.float32), **meta)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
