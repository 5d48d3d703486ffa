"""Whole-model throughput and peak memory: ECG-NAT presets against a global-attention twin.

The twin is the *same* model (same stem, widths, depths, heads, MLPs, parameters) with every
neighborhood-attention call replaced by global scaled-dot-product attention over the whole sequence, so the
ratio isolates what neighborhood attention buys. Inputs are 12-lead recordings of 10 s and 60 s at each
preset's sampling rate (``small``/``base`` take 500 Hz; ``tiny`` takes 100 Hz: the feature extractor
resamples 500 Hz recordings to it).

Each measurement runs in a fresh subprocess so that peak resident memory (ru_maxrss) belongs to that
configuration alone; "peak MiB" is the growth of resident memory over the process after the model and input
were built (activations, gradients, workspace).

    python benchmarks/model.py                       # train (forward+backward) and inference, 10 s and 60 s
    python benchmarks/model.py --presets tiny small --mode infer --repeats 3
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # BLAS threads would fight torch's intra-op threads on 2 cores

import argparse
import json
import statistics
import subprocess
import sys
import time

BATCH = {10: 8, 60: 2}


def _child(preset: str, attention: str, seconds: int, mode: str, repeats: int, threads: int) -> dict:
    import resource

    import psutil
    import torch
    import torch.nn.functional as F

    import ecgnat_hf.modeling_ecgnat as modeling
    from ecgnat_hf import ECGNATConfig, ECGNATForSequenceClassification

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = ECGNATConfig.from_preset(preset, num_labels=5, problem_type="multi_label_classification", supcon_weight=0.0)
    if attention == "global":

        def global_forward(self, x):
            b, length, dim = x.shape
            q, k, v = self.qkv(x).reshape(b, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            out = F.scaled_dot_product_attention(q, k, v)
            return self.dropout(self.proj(out.transpose(1, 2).reshape(b, length, dim)))

        modeling.ECGNATNeighborhoodAttention.forward = global_forward
    model = ECGNATForSequenceClassification(config)
    batch = BATCH[seconds]
    x = torch.randn(batch, 12, int(seconds * config.sampling_rate))
    y = (torch.rand(batch, 5) > 0.5).float()
    if mode == "train":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-4)

        def step():
            model(x, labels=y).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    else:
        model.eval()

        def step():
            with torch.inference_mode():
                model(x)

    rss0 = psutil.Process().memory_info().rss
    step()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "records_per_s": batch / statistics.median(times),
        "peak_mib": max(0.0, (peak - rss0) / 2**20),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "tokens_stage1": x.shape[-1] // config.patch_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "base"])
    parser.add_argument("--seconds", nargs="+", type=int, default=[10, 60], choices=sorted(BATCH))
    parser.add_argument("--mode", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per measurement")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(**json.loads(args.child))))
        return

    import torch

    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs; batch {BATCH} per duration")
    print("| preset | params | input | mode | ECG-NAT rec/s | global rec/s | speed ratio | ECG-NAT peak MiB | global peak MiB | memory ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        for seconds in args.seconds:
            for mode in args.mode:
                row = {}
                for attention in ("neighborhood", "global"):
                    spec = dict(preset=preset, attention=attention, seconds=seconds, mode=mode, repeats=args.repeats, threads=args.threads)
                    try:
                        out = subprocess.run(
                            [sys.executable, __file__, "--child", json.dumps(spec)],
                            capture_output=True, text=True, timeout=args.timeout, check=True,
                        )
                        row[attention] = json.loads(out.stdout.strip().splitlines()[-1])
                    except subprocess.TimeoutExpired:
                        row[attention] = None
                    except subprocess.CalledProcessError as err:
                        row[attention] = None
                        print(f"<!-- {preset} {attention} {seconds}s {mode} failed: {err.stderr.strip().splitlines()[-1]} -->")
                na, ga = row["neighborhood"], row["global"]
                if na is None:
                    continue
                if ga is None:
                    g_rate, g_mem, speed, mem = f"> {args.timeout} s", "-", "-", "-"
                else:
                    g_rate, g_mem = f"{ga['records_per_s']:.2f}", f"{ga['peak_mib']:.0f}"
                    speed = f"{na['records_per_s'] / ga['records_per_s']:.2f}x"
                    mem = f"{ga['peak_mib'] / max(na['peak_mib'], 1):.2f}x less"
                print(
                    f"| {preset} | {na['params_m']:.2f}M | {seconds} s ({na['tokens_stage1']} tokens) | {mode} | "
                    f"{na['records_per_s']:.2f} | {g_rate} | {speed} | {na['peak_mib']:.0f} | {g_mem} | {mem} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
