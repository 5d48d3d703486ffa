"""Unlabelled pretraining mixture of several ECG sources at one sampling rate and window length.

:func:`build_pretraining_mixture` turns every source into fixed windows

* ``input_values``: float32 (12, sampling_rate * seconds), leads in canonical order
  (I, II, III, aVR, aVL, aVF, V1-V6); leads a record lacks are zeros;
* ``lead_mask``: bool (12,), True where the lead is present (never imputed);
* ``source``: the source name;

resampled with ``scipy.signal.resample_poly`` (polyphase, anti-aliased) and cropped (random
offset, seeded per record, or from the start) or zero-padded at the end, then interleaves them with
``datasets.interleave_datasets``. Non-standard leads (e.g. Frank X/Y/Z) are dropped.
"""

from __future__ import annotations

import hashlib
import logging
from fractions import Fraction
from typing import Sequence

import datasets
import numpy as np

from ..leads import CANONICAL_LEADS, lead_indices

logger = logging.getLogger(__name__)

__all__ = ["build_pretraining_mixture", "to_window", "resample_signal"]

N_LEADS = len(CANONICAL_LEADS)


def resample_signal(signal: np.ndarray, from_rate: float, to_rate: float) -> np.ndarray:
    """Resample along the last axis with a rational polyphase filter (float32 out)."""
    from scipy.signal import resample_poly

    if abs(float(from_rate) - float(to_rate)) < 1e-9:
        return np.asarray(signal, dtype=np.float32)
    frac = Fraction(float(to_rate) / float(from_rate)).limit_denominator(1000)
    out = resample_poly(np.asarray(signal, dtype=np.float64), frac.numerator, frac.denominator, axis=-1)
    return out.astype(np.float32)


def _offset(key: str, seed: int, span: int) -> int:
    if span <= 0:
        return 0
    h = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") % (span + 1)


def to_window(
    signal,
    lead_names: Sequence[str],
    sampling_rate: float,
    target_rate: float,
    n_samples: int,
    crop: str = "random",
    key: str = "",
    seed: int = 0,
    record: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One record -> (``input_values`` (12, n_samples) float32, ``lead_mask`` (12,) bool)."""
    x = np.asarray(signal, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{record or key}: expected a (leads, samples) signal, got shape {x.shape}")
    mapping = lead_indices(list(lead_names), record, allow_extra=True)
    x = resample_signal(x[mapping.positions], sampling_rate, target_rate)
    length = x.shape[1]
    if length > n_samples:
        start = _offset(key, seed, length - n_samples) if crop == "random" else 0
        x = x[:, start : start + n_samples]
    out = np.zeros((N_LEADS, n_samples), dtype=np.float32)
    mask = np.zeros(N_LEADS, dtype=bool)
    out[list(mapping), : x.shape[1]] = x
    mask[list(mapping)] = True
    out[~mask] = 0.0
    return out, mask


def _as_dataset(src, split: str, streaming: bool):
    if isinstance(src, datasets.DatasetBuilder):
        if streaming:
            return src.as_streaming_dataset(split=split)
        src.download_and_prepare()
        return src.as_dataset(split=split)
    if isinstance(src, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return src[split]
    return src


def _source_name(src, i: int) -> str:
    if isinstance(src, datasets.DatasetBuilder):
        return src.name
    return f"source{i}"


def build_pretraining_mixture(
    builders_or_datasets: Sequence | dict,
    sampling_rate: float,
    seconds: float,
    probabilities: Sequence[float] | None = None,
    seed: int = 0,
    stopping_strategy: str = "all_exhausted",
    split: str = "train",
    crop: str = "random",
    streaming: bool = False,
    keep_in_memory: bool = False,
):
    """Interleave several sources into fixed 12-lead windows at one rate.

    Args:
        builders_or_datasets: builders (prepared on demand), ``Dataset``/``IterableDataset`` or
            ``DatasetDict`` objects with ``signal``, ``lead_names`` and ``sampling_rate`` columns;
            or a dict ``{name: source}`` to name the sources (default: the builder name).
        sampling_rate: target rate in Hz; seconds: window length.
        probabilities, seed, stopping_strategy: passed to ``datasets.interleave_datasets``
            (``"all_exhausted"`` oversamples the smaller sources; ``"first_exhausted"`` stops early).
        split: the split taken from builders and dataset dicts.
        crop: ``"random"`` (offset drawn from a hash of seed and record, so reproducible) or ``"start"``.
        streaming: use ``as_streaming_dataset`` for builders (returns an ``IterableDataset``).

    Returns:
        ``Dataset`` (or ``IterableDataset``) with ``input_values``, ``lead_mask`` and ``source``.
    """
    if isinstance(builders_or_datasets, dict):
        named = list(builders_or_datasets.items())
    else:
        named = [(_source_name(s, i), s) for i, s in enumerate(builders_or_datasets)]
    if not named:
        raise ValueError("build_pretraining_mixture needs at least one source")
    n = int(round(float(sampling_rate) * float(seconds)))
    if n <= 0:
        raise ValueError(f"window of {seconds} s at {sampling_rate} Hz has no samples")
    features = datasets.Features(
        {
            "input_values": datasets.Array2D(shape=(N_LEADS, n), dtype="float32"),
            "lead_mask": datasets.List(datasets.Value("bool"), length=N_LEADS),
            "source": datasets.Value("string"),
        }
    )

    parts = []
    for name, src in named:
        ds = _as_dataset(src, split, streaming)

        def convert(batch, _name=name):
            xs, ms = [], []
            ids = batch.get("record_id")
            if ids is None:
                ids = [str(i) for i in range(len(batch["signal"]))]
            for sig, leads, fs, rid in zip(batch["signal"], batch["lead_names"], batch["sampling_rate"], ids):
                x, m = to_window(sig, leads, float(fs), float(sampling_rate), n, crop=crop,
                                 key=f"{_name}/{rid}", seed=seed, record=str(rid))
                xs.append(x)
                ms.append(m)
            return {"input_values": xs, "lead_mask": ms, "source": [_name] * len(xs)}

        columns = list(ds.column_names) if ds.column_names is not None else None
        if isinstance(ds, datasets.IterableDataset):
            mapped = ds.map(convert, batched=True, batch_size=16, remove_columns=columns, features=features)
        else:
            ds = ds.with_format("numpy", columns=["signal", "lead_names", "sampling_rate"]
                                + (["record_id"] if "record_id" in ds.column_names else []))
            mapped = ds.map(convert, batched=True, batch_size=16, remove_columns=columns, features=features,
                            keep_in_memory=keep_in_memory, desc=f"windows from {name}")
            mapped = mapped.with_format(None)
        parts.append(mapped)
    if len(parts) == 1:
        return parts[0]
    return datasets.interleave_datasets(parts, probabilities=probabilities, seed=seed,
                                        stopping_strategy=stopping_strategy)
