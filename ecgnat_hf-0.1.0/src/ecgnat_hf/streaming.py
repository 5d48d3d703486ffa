"""Read and preprocess a recording of any length piece by piece, in bounded memory.

:class:`RecordStream` turns one record file into the model's windows exactly as the checkpoint's
feature extractor does for the whole record (``fe(record.signal, ...)`` in ``mode="window"``), but
reads the file one chunk of ``chunk_s`` seconds at a time, so the memory used does not grow with the
recording's length (a 24-hour Holter or a 14-day patch)::

    from ecgnat_hf.streaming import RecordStream

    stream = RecordStream("holter/rec01", feature_extractor, chunk_s=600)
    stream.n_windows, stream.duration_s          # known from the header before any signal is read
    for chunk in stream:                         # WindowChunk: at most ~chunk_s of windows each
        chunk.features["input_values"]           # (windows, leads, samples) float32, as fe(...) gives
        chunk.start_s, chunk.end_s, chunk.owned_s

How the result stays equal to the whole-record one
--------------------------------------------------
Window positions are planned up front from the record length in the header: the same starts as the
feature extractor (every ``window_stride`` samples at the model's rate, plus a last window aligned to
the end). Each chunk is read with a margin of input samples on both sides, resampled and filtered,
and only the windows that lie inside it are kept:

* Resampling (``scipy.signal.resample_poly``) is an FIR filter: an output sample depends on a finite
  number of input samples (``10 * max(up, down) / up`` on each side). Chunks start on a multiple of
  ``down`` input samples, so their output samples fall on the whole record's output grid, and the
  margin covers the filter: the windows are the same numbers, up to float rounding.
* The optional zero-phase Butterworth filters (``do_baseline_removal``, ``do_bandpass``) are IIR: their
  influence decays exponentially. The margin adds ``20 / lowest cutoff`` seconds (40 s at 0.5 Hz,
  dozens of time constants), so the difference is far below float32 resolution.
* Scaling is per window, so it needs nothing from outside the window.

``tests/test_inference.py`` checks the equality on real records (inputs within 1e-5, probabilities
within 1e-5 absolute). A record that fits in one chunk is read in one piece.

Only ``mode="window"`` (the default) streams; an extractor in ``"crop"`` or ``"pad"`` mode is applied to
the whole record as before.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

__all__ = ["RecordStream", "WindowChunk", "plan_window_starts", "resampled_length"]


def plan_window_starts(n_samples: int, window: int, stride: int) -> list[int]:
    """Window starts (samples at the model's rate) for a record of ``n_samples``, as the feature
    extractor places them: every ``stride``, plus a last window aligned to the end; one window for a
    record no longer than ``window``."""
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window + 1, stride))
    if starts[-1] + window < n_samples:
        starts.append(n_samples - window)
    return starts


def _rate_pair(source: float, target: float) -> tuple[int, int]:
    from .models.ecgnat.feature_extraction_ecgnat import _rate_fraction

    if float(source) == float(target):
        return 1, 1
    up, down = _rate_fraction(source, target)
    return (1, 1) if up == down else (up, down)


def resampled_length(n_samples: int, source_rate: float, target_rate: float) -> int:
    """Length after ``resample_poly`` from ``source_rate`` to ``target_rate``, as the extractor does it."""
    up, down = _rate_pair(source_rate, target_rate)
    return -(-n_samples * up // down)


@dataclass
class WindowChunk:
    """Consecutive windows of one record.

    ``features``: ``input_values`` (windows, leads, samples) float32, ``lead_mask`` (windows, leads),
    ``attention_mask`` (windows, samples): the keys and values ``fe(...)`` returns. ``index``: window
    numbers in the record (0-based). ``start_s`` / ``end_s``: each window's span in the recording in
    seconds (``end_s`` capped at the record's end). ``owned_s``: the part of the recording each window
    stands for in time fractions: from its start to the next window's start (the last one: to the end),
    so the owned spans tile the recording exactly once.
    """

    features: dict
    index: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    owned_s: np.ndarray

    def __len__(self) -> int:
        return len(self.index)


class RecordStream:
    """One record file as a sequence of preprocessed window chunks (see the module docstring).

    Args:
        path: record path (WFDB with or without extension, or a MATLAB file).
        feature_extractor: the checkpoint's :class:`~ecgnat_hf.ECGNATFeatureExtractor`.
        lead_names: the ``lead_names`` request of :func:`ecgnat_hf.inference.select_leads`
            (restrict to these leads, or name the channels of a record that does not).
        chunk_s: seconds of recording per chunk (at least one window). Peak memory is about
            ``chunk_s * rate * leads * 8`` bytes for the signal plus the windows of one chunk.
        sampling_rate: the rate of a MATLAB file without a WFDB header and of no known layout (ignored
            for other records); a ``lead_names`` list then names its channels in order.

    Opening reads only the header (and checks the signal file's size); errors are
    :class:`~ecgnat_hf.data.errors.ECGDataError` naming the record. Attributes after opening:
    ``record_id``, ``path``, ``sampling_rate`` (the file's), ``n_samples``, ``duration_s``,
    ``lead_names_used``, ``leads_ignored``, ``n_windows``, ``metadata`` (the header's).
    """

    def __init__(self, path, feature_extractor, lead_names: Sequence[str] | None = None, chunk_s: float = 600.0,
                 sampling_rate: float | None = None):
        from .data.errors import LeadNameError
        from .data.records import ECGRecord, read_record
        from .inference import select_leads

        self.fe = fe = feature_extractor
        self.source = path
        # MATLAB files without a header: ``sampling_rate`` gives their rate (ignored for every other record),
        # and a ``lead_names`` list names their channels when their layout names none
        self._read_kw = {"sampling_rate": sampling_rate} if sampling_rate is not None else {}
        try:
            probe = read_record(path, start=0, stop=0, **self._read_kw)
        except LeadNameError:
            headerless = str(path).lower().endswith(".mat") and not Path(str(path)[:-4] + ".hea").is_file()
            if not (headerless and isinstance(lead_names, (list, tuple)) and lead_names):
                raise
            self._read_kw["lead_names"] = list(lead_names)
            probe = read_record(path, start=0, stop=0, **self._read_kw)
        self.record_id, self.path = probe.record_id, probe.path
        self.sampling_rate = float(probe.sampling_rate)
        self.n_samples = int(probe.metadata.get("record_samples", probe.n_samples))
        self.metadata = probe.metadata
        self.duration_s = self.n_samples / self.sampling_rate
        # which rows the lead request keeps: run it on a record whose "signal" is the row numbers
        rows = ECGRecord(np.arange(probe.n_leads)[:, None], probe.sampling_rate, list(probe.lead_names),
                         probe.record_id, probe.path, {})
        kept, self.lead_names_used, self.leads_ignored = select_leads(rows, lead_names, fe.lead_names)
        self.rows = [int(r) for r in np.asarray(kept)[:, 0]]
        self.target_rate = float(fe.sampling_rate)
        self.up, self.down = _rate_pair(self.sampling_rate, self.target_rate)
        self.n_out = resampled_length(self.n_samples, self.sampling_rate, self.target_rate)
        self.window, self.stride = fe.window_length, fe.window_stride
        self.streams = getattr(fe, "mode", "window") == "window"
        if self.streams:
            self.starts = plan_window_starts(self.n_out, self.window, self.stride)
        else:  # crop / pad: one example per record
            self.starts = [0]
        self.n_windows = len(self.starts)
        if not chunk_s > 0:
            raise ValueError(f"chunk_s must be positive, got {chunk_s}")
        self.chunk_samples = max(int(chunk_s * self.target_rate), self.window)
        self.margin = self._margin()
        #: optional ``callable(signal (leads, samples) mV, sampling_rate, lead_names)`` called on every piece
        #: of raw signal read (the signal-quality hook of ``predict_records``)
        self.on_read = None

    # ------------------------------------------------------------------ planning
    def _margin(self) -> int:
        """Input samples read beyond a chunk on each side (see the module docstring)."""
        fir = math.ceil(10 * max(self.up, self.down) / self.up) + 2 if (self.up, self.down) != (1, 1) else 0
        cutoffs = []
        if getattr(self.fe, "do_baseline_removal", False):
            cutoffs.append(float(self.fe.baseline_cutoff_hz))
        if getattr(self.fe, "do_bandpass", False):
            cutoffs.append(float(self.fe.bandpass_low))
        iir = math.ceil(20.0 / min(cutoffs) * self.sampling_rate) if cutoffs else 0
        return fir + iir

    def chunk_plan(self) -> list[tuple[int, int]]:
        """``[(first window, last window + 1), ...]``: consecutive windows grouped so that each chunk
        spans at most ``chunk_s`` of output samples (always at least one window)."""
        plan, i = [], 0
        while i < self.n_windows:
            j = i + 1
            while j < self.n_windows and self.starts[j] + self.window - self.starts[i] <= self.chunk_samples:
                j += 1
            plan.append((i, j))
            i = j
        return plan

    def _owned(self, k: int) -> float:
        start = self.starts[k] / self.target_rate
        if k + 1 < self.n_windows:
            return min(self.starts[k + 1] / self.target_rate, self.duration_s) - min(start, self.duration_s)
        return max(self.duration_s - start, 0.0)

    # ------------------------------------------------------------------ reading
    def _read(self, start: int, stop: int):
        from .data.records import read_record

        rec = read_record(self.source, start=start, stop=stop, **self._read_kw)
        x = rec.signal[self.rows]
        if self.on_read is not None:
            self.on_read(x, self.sampling_rate, self.lead_names_used)
        return x

    def __iter__(self) -> Iterator[WindowChunk]:
        return self.iter_chunks()

    def iter_chunks(self, plan: Sequence[tuple[int, int]] | None = None) -> Iterator[WindowChunk]:
        """The chunks of ``plan`` (default: :meth:`chunk_plan`, the whole record); any subset of the plan
        may be given, e.g. ``stream.chunk_plan()[-3:]`` for the end of a long recording."""
        if not self.streams or self.n_out <= self.window:
            yield from self._whole()
            return
        for i, j in (self.chunk_plan() if plan is None else plan):
            a, b = self.starts[i], self.starts[j - 1] + self.window  # output samples [a, b)
            s0 = max(0, a * self.down // self.up - self.margin)
            s0 -= s0 % self.down  # on the output grid: s0 * up / down is a whole number
            s1 = min(self.n_samples, -(-b * self.down // self.up) + self.margin)
            x = self._read(s0, s1)
            full, mask = self._prepare(x)
            offset = s0 * self.up // self.down
            local = [s - offset for s in self.starts[i:j]]
            if local[-1] + self.window > full.shape[1] or local[0] < 0:  # pragma: no cover - planning bug guard
                raise RuntimeError(f"{self.path}: chunk [{s0}, {s1}) does not cover windows {i}-{j - 1}")
            yield self._chunk(full, mask, local, range(i, j))

    def _prepare(self, x):
        """Lead mapping, checks, resampling and filtering of one piece: the extractor's own code."""
        full, mask, _report = self.fe._prepare_record(0, 1, x, self.sampling_rate, self.lead_names_used, False,
                                                      where=str(self.path))
        return full, mask  # quality findings of the raw chunk go to predict's quality column (quality_fn)

    def _whole(self) -> Iterator[WindowChunk]:
        """Short records (one window) and crop/pad extractors: the extractor on the whole record."""
        x = self._read(0, self.n_samples)
        feats = self.fe(x, sampling_rate=self.sampling_rate, lead_names=self.lead_names_used)
        n = len(feats["input_values"])
        starts = np.asarray(feats["window_start"], dtype=np.float64)
        index = np.arange(n)
        self.n_windows = n
        self.starts = [int(round(s * self.target_rate)) for s in starts]
        features = {k: np.asarray(feats[k]) for k in ("input_values", "lead_mask", "attention_mask") if k in feats}
        yield self._make(features, index)

    def _chunk(self, full, mask, local_starts, index) -> WindowChunk:
        fe, W = self.fe, self.window
        n_win, n_leads = len(local_starts), full.shape[0]
        values = np.zeros((n_win, n_leads, W), dtype=np.float32)
        attention = np.ones((n_win, W), dtype=np.int64)
        for b, s in enumerate(local_starts):
            seg = fe._scale(np.array(full[:, s : s + W], dtype=np.float64), W, mask)
            values[b] = seg
            values[b, mask == 0, :] = 0.0
        features = {"input_values": values, "lead_mask": np.tile(mask, (n_win, 1)), "attention_mask": attention}
        return self._make(features, np.asarray(list(index)))

    def _make(self, features, index) -> WindowChunk:
        start = np.array([self.starts[k] / self.target_rate for k in index], dtype=np.float64)
        end = np.minimum(start + self.window / self.target_rate, self.duration_s)
        owned = np.array([self._owned(int(k)) for k in index], dtype=np.float64)
        return WindowChunk(features, np.asarray(index, dtype=np.int64), start, end, owned)

    def __repr__(self) -> str:
        return (f"RecordStream({self.path!r}, {self.duration_s:.1f} s at {self.sampling_rate:g} Hz, "
                f"{self.n_windows} windows, chunks of {self.chunk_samples / self.target_rate:g} s)")
