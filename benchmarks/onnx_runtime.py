"""onnxruntime against PyTorch on the same exported ECG-NAT classifier, in one run.

A checkpoint (default: a seeded, untrained ``tiny`` classifier with its 100 Hz feature extractor; pass
``--checkpoint`` for your own) is exported with ``ecgnat_hf.export.export_model``; then the same real input
(bundled PTB-XL records preprocessed by the checkpoint's feature extractor: a batch of 10 s windows and one
60 s record) goes through PyTorch (eager, the model's default attention backend, ``torch.inference_mode``)
and through onnxruntime (CPU provider), alternating, ``--repeats`` times each after a warm-up. Both use
``--threads`` intra-op threads. Reported: median milliseconds per call, the PyTorch / onnxruntime ratio and
the largest absolute output difference.

    nice -n 10 python benchmarks/onnx_runtime.py --threads 2
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # BLAS threads would fight torch's intra-op threads on 2 cores

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder (default: a seeded tiny classifier)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16, help="10 s windows per call (default: 16)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from ecgnat_hf import ECGNATConfig, ECGNATFeatureExtractor, ECGNATForSequenceClassification
    from ecgnat_hf.data import read_record
    from ecgnat_hf.data.builders.common import find_records
    from ecgnat_hf.export import export_model, load_onnx_session
    from ecgnat_hf.sample_data import sample_dir

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="ecgnat-onnx-bench-"))
    checkpoint = args.checkpoint
    if checkpoint is None:
        torch.manual_seed(0)
        labels = ["NORM", "MI", "STTC", "CD", "HYP"]
        config = ECGNATConfig.from_preset("tiny", num_labels=5, id2label=dict(enumerate(labels)),
                                          label2id={n: i for i, n in enumerate(labels)},
                                          problem_type="multi_label_classification")
        checkpoint = work / "ckpt"
        ECGNATForSequenceClassification(config).save_pretrained(checkpoint)
        ECGNATFeatureExtractor(sampling_rate=100, window_s=10).save_pretrained(checkpoint)
    t0 = time.perf_counter()
    info = export_model(checkpoint, work / "onnx", format="onnx")
    export_s = time.perf_counter() - t0

    from transformers import AutoFeatureExtractor, AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    fe = AutoFeatureExtractor.from_pretrained(checkpoint)
    session = load_onnx_session(work / "onnx" / "model.onnx", num_threads=args.threads)

    paths = find_records(sample_dir() / "records100")
    windows = fe([read_record(p) for p in paths[: args.batch]])
    # 60 s: six consecutive real 10 s records, end to end, as one recording
    six = [read_record(p) for p in paths[:6]]
    long = fe(np.concatenate([r.signal for r in six], axis=1), sampling_rate=six[0].sampling_rate,
              lead_names=six[0].lead_names, window=False)
    cases = {
        f"{args.batch} x 10 s windows": (windows["input_values"], windows["lead_mask"].astype(bool)),
        "1 x 60 s record": (long["input_values"], long["lead_mask"].astype(bool)),
    }
    results = {}
    for name, (x, mask) in cases.items():
        xt, mt = torch.from_numpy(x), torch.from_numpy(mask)

        def run_torch():
            with torch.inference_mode():
                return model(input_values=xt, lead_mask=mt).logits.numpy()

        def run_onnx():
            return session.run(["logits"], {"input_values": x, "lead_mask": mask})[0]

        diff = float(np.abs(run_torch() - run_onnx()).max())
        for _ in range(2):  # warm-up
            run_torch(), run_onnx()
        times = {"pytorch": [], "onnxruntime": []}
        for _ in range(args.repeats):  # alternate, so both see the same machine load
            for key, fn in (("pytorch", run_torch), ("onnxruntime", run_onnx)):
                t = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t)
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        results[name] = {"pytorch_ms": round(med["pytorch"], 2), "onnxruntime_ms": round(med["onnxruntime"], 2),
                         "speedup_onnxruntime": round(med["pytorch"] / med["onnxruntime"], 2),
                         "max_abs_difference": diff}
        print(f"{name:>24}: PyTorch {med['pytorch']:8.2f} ms   onnxruntime {med['onnxruntime']:8.2f} ms   "
              f"ratio PyTorch/onnxruntime {med['pytorch'] / med['onnxruntime']:.2f}   max |diff| {diff:.1e}")
    summary = {"threads": args.threads, "repeats": args.repeats, "export_s": round(export_s, 1),
               "min_length": info["min_length"], "torch": torch.__version__,
               "onnxruntime": __import__("onnxruntime").__version__, "results": results}
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
