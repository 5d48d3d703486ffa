"""Whole-model throughput and peak memory: ECG-NAT presets against a global-attention twin, or against
the ResNet1d baseline (``--against resnet1d``).

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
    python benchmarks/model.py --against resnet1d --presets tiny --mode infer --batch 32 \
        --variant tiny-v1='{"stem_hidden_size": null, ...}'    # a config variant, timed beside ResNet1d

Against ResNet1d, both models take the same input (12 leads, 10 s or 60 s at 100 Hz for ``tiny``), and the
ratio is ECG-NAT records/s over ResNet1d records/s measured in the same run.
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


def _child(preset: str, attention: str, seconds: int, mode: str, repeats: int, threads: int,
           overrides: dict | None = None, batch: int | None = None) -> dict:
    import resource

    import psutil
    import torch
    import torch.nn.functional as F

    import ecgnat_hf.modeling_ecgnat as modeling
    from ecgnat_hf import ECGNATConfig, ECGNATForSequenceClassification

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = ECGNATConfig.from_preset(preset, num_labels=5, problem_type="multi_label_classification", supcon_weight=0.0,
                                      **(overrides or {}))
    if attention == "resnet1d":
        from ecgnat_hf.training.baselines import ResNet1dConfig, ResNet1dForSequenceClassification

        rate = config.sampling_rate
        config = ResNet1dConfig(num_labels=5, problem_type="multi_label_classification")
        config.sampling_rate = rate
    if attention == "global":

        def global_forward(self, x):
            b, length, dim = x.shape
            q, k, v = self.qkv(x).reshape(b, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            out = F.scaled_dot_product_attention(q, k, v)
            return self.dropout(self.proj(out.transpose(1, 2).reshape(b, length, dim)))

        modeling.ECGNATNeighborhoodAttention.forward = global_forward
    model = (ResNet1dForSequenceClassification if attention == "resnet1d" else ECGNATForSequenceClassification)(config)
    batch = batch or BATCH[seconds]
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
        "tokens_stage1": x.shape[-1] // getattr(config, "patch_size", 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "base"])
    parser.add_argument("--seconds", nargs="+", type=int, default=[10, 60], choices=sorted(BATCH))
    parser.add_argument("--mode", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per measurement")
    parser.add_argument("--against", choices=["global", "resnet1d"], default="global",
                        help="baseline timed in the same run: the global-attention twin, or the ResNet1d baseline")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: 8 at 10 s, 2 at 60 s)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                        help="a named ECG-NAT config variant: preset overrides as JSON (repeatable)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(**json.loads(args.child))))
        return
    if args.against == "resnet1d":
        _against_resnet1d(args)
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


def _measure(spec: dict, timeout: int) -> dict | None:
    try:
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                             capture_output=True, text=True, timeout=timeout, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return None
    except subprocess.CalledProcessError as err:
        print(f"<!-- {spec} failed: {err.stderr.strip().splitlines()[-1]} -->")
        return None


def _against_resnet1d(args) -> None:
    import torch

    variants = [(p, p, {}) for p in args.presets]
    for item in args.variant:
        name, _, text = item.partition("=")
        preset = json.loads(text).pop("preset", args.presets[0]) if text else args.presets[0]
        over = {k: v for k, v in json.loads(text).items() if k != "preset"}
        variants.append((name, preset, over))
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs; records/s, median of {args.repeats}")
    print("| model | params | input | mode | batch | ECG-NAT rec/s | ResNet1d rec/s | ECG-NAT / ResNet1d |")
    print("|---|---|---|---|---|---|---|---|")
    for seconds in args.seconds:
        for mode in args.mode:
            batch = args.batch or BATCH[seconds]
            base = dict(preset=args.presets[0], seconds=seconds, mode=mode, repeats=args.repeats, threads=args.threads,
                        batch=batch)
            ref = _measure(dict(base, attention="resnet1d"), args.timeout)
            for name, preset, over in variants:
                na = _measure(dict(base, preset=preset, attention="neighborhood", overrides=over), args.timeout)
                if na is None or ref is None:
                    continue
                print(f"| {name} | {na['params_m']:.2f}M | {seconds} s | {mode} | {batch} | {na['records_per_s']:.1f} | "
                      f"{ref['records_per_s']:.1f} | {na['records_per_s'] / ref['records_per_s']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
