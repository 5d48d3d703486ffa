"""Speed-up of torch threads on the streaming predict path: model scoring of 128 real windows (the first chunk of
the 1-hour benchmark record written by benchmarks/streaming.py), alternating 1 and 2 threads, 3 rounds.

    python benchmarks/streaming.py --hours 1 && python benchmarks/threads.py
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# A/B: model scoring of the first 128 windows of the 1 h benchmark record (real recordings, streamed),
# alternating 1 and 2 torch threads, 3 rounds each; BLAS at 1 thread.
import statistics
import time

import torch

from ecgnat_hf.inference import load_model_and_feature_extractor, window_outputs
from ecgnat_hf.streaming import RecordStream
m, fe = load_model_and_feature_extractor("/tmp/ecgnat-streaming-bench/ckpt")
chunks = iter(RecordStream("/tmp/ecgnat-streaming-bench/holter_1h/holter_1h", fe, chunk_s=700))
c = next(chunks)
feats = {k: v[:128] for k, v in c.features.items()}
window_outputs(m, feats, batch_size=32)  # warm-up
res = {1: [], 2: []}
for rnd in range(3):
    for n in (1, 2):
        torch.set_num_threads(n)
        t = time.perf_counter(); window_outputs(m, feats, batch_size=32); dt = time.perf_counter() - t
        res[n].append(128 / dt)
        print(f"round {rnd} threads {n}: 128 windows in {dt:.2f} s = {res[n][-1]:.1f} windows/s, load {os.getloadavg()[0]:.1f}", flush=True)
print({n: round(statistics.median(v), 1) for n, v in res.items()}, "speed-up 2 vs 1:", round(statistics.median(res[2]) / statistics.median(res[1]), 2))
