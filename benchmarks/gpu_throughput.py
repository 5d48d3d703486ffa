"""Training throughput of the ECG-NAT presets and ResNet1d on an accelerator: windows per second.

What a data loader has to deliver to keep a GPU busy (issue 21 compares the store's loader against the
``base`` preset here). Each model trains on random 10 s windows at its own rate (tiny 100 Hz, small/base
500 Hz, ResNet1d 100 Hz) with AdamW and bf16 autocast, data already on the device; after warm-up steps,
``--seconds`` of steps are timed with CUDA synchronisation. On CPU it runs too (slowly), so it is testable.

    python benchmarks/gpu_throughput.py --seconds 5 --batch_size 128
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402


def build(name: str):
    from ecgnat_hf.models.ecgnat import ECGNATConfig, ECGNATForSequenceClassification
    from ecgnat_hf.models.resnet1d import ResNet1dConfig, ResNet1dForSequenceClassification

    kw = dict(num_labels=5, problem_type="multi_label_classification")
    if name == "resnet1d":
        return ResNet1dForSequenceClassification(ResNet1dConfig(**kw)), 100
    cfg = ECGNATConfig.from_preset(name, **kw)
    return ECGNATForSequenceClassification(cfg), int(cfg.sampling_rate)


def measure(name: str, batch_size: int, seconds: float, device, warmup: int = 3) -> dict:
    model, rate = build(name)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, 12, 10 * rate, device=device)
    mask = torch.ones(batch_size, 12, dtype=torch.long, device=device)
    y = (torch.rand(batch_size, 5, device=device) > 0.7).float()
    amp = device.type == "cuda"

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model(input_values=x, lead_mask=mask, labels=y).loss
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        opt.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
        if n % 5 == 0:
            sync()
    sync()
    dt = time.perf_counter() - t0
    return {"model": name, "rate_hz": rate, "batch_size": batch_size, "steps": n,
            "windows_per_s": round(n * batch_size / dt, 1),
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="tiny,small,base,resnet1d")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--output")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    rows = [measure(m, args.batch_size, args.seconds, device) for m in args.models.split(",")]
    for r in rows:
        print(f"{name}: {r['model']:9s} {r['rate_hz']:4d} Hz  {r['params_m']:6.2f} M params  "
              f"{r['windows_per_s']:9.1f} training windows/s (batch {r['batch_size']})", flush=True)
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
