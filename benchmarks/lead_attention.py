"""Which leads a classifier attends to, averaged over the records of PTB-XL folds: ECG-NAT's lead fusion or
BEAT-Net's spatial encoder (``ecgnat_hf.training.lead_attention.record_lead_attention`` per record).

    python benchmarks/lead_attention.py CHECKPOINT [CHECKPOINT ...] [--folds 9] [--data-dir ../shared/data]

Prints, per checkpoint, the mean weight of each lead over the records (each record's weights sum to one over
its 12 present leads, so 1/12 = 0.083 is "no preference") and the leads ranked by weight.
"""

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(argv=None):
    import pandas as pd
    from transformers import AutoFeatureExtractor, AutoModelForSequenceClassification

    import ecgnat_hf  # noqa: F401  (registers the Auto classes)
    from ecgnat_hf.data.records import read_record
    from ecgnat_hf.training.arguments import parse_int_list
    from ecgnat_hf.training.lead_attention import record_lead_attention

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--folds", default="9")
    args = ap.parse_args(argv)
    root = Path(args.data_dir) / "ptbxl-subset"
    db = pd.read_csv(root / "ptbxl_database.csv")
    db = db[db.strat_fold.isin(parse_int_list(args.folds))]
    for ckpt in args.checkpoints:
        model = AutoModelForSequenceClassification.from_pretrained(ckpt).eval()
        fe = AutoFeatureExtractor.from_pretrained(ckpt)
        rows, units = [], 0
        for f in db.filename_lr:
            rec = read_record(root / f)
            att = record_lead_attention(model, fe, rec.signal, rec.sampling_rate, rec.lead_names)
            assert abs(att["weights"][att["lead_mask"]].sum() - 1) < 1e-4
            rows.append(att["weights"])
            units += att["n_units"]
        w = np.mean(rows, axis=0)
        names = att["lead_names"]
        order = np.argsort(-w)
        kind = "BEAT-Net spatial encoder" if model.config.model_type == "beatnet" else "ECG-NAT lead fusion"
        print(f"\n{ckpt} ({kind}; {len(rows)} records of fold(s) {args.folds}, {units} {att['unit']}s)")
        print("| " + " | ".join(names) + " |")
        print("|" + "---:|" * len(names))
        print("| " + " | ".join(f"{v:.4f}" for v in w) + " |")
        spread = np.std(rows, axis=0).mean()
        print("ranked: " + ", ".join(f"{names[i]} {w[i]:.4f}" for i in order[:4])
              + f" ... {names[order[-1]]} {w[order[-1]]:.4f}; mean across-record std {spread:.4f}")


if __name__ == "__main__":
    main()
