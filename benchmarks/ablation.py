"""Ablations on the validation fold only: which model and fine-tuning choices help, before the test fold is read.

Trains on PTB-XL folds 1-7 of the bundled sample and scores fold 8 (44 records with a superdiagnostic label);
fold 9, the test fold, is never loaded (``test_folds="none"``). Because 44 records separate arms poorly,
``--cv_folds 5,6,7,8`` instead cross-validates inside folds 1-8: for each listed fold k it trains on the other
seven folds of 1-8 and scores fold k (still never fold 9), and reports the mean over folds and seeds. Each arm runs over several seeds and reports the
validation macro AUROC at the last step and at the best evaluated step, per class, and per lead subset (one
checkpoint, leads removed). The loop is the recipe's in miniature (AdamW, weight decay 0.05, linear warm-up over
10% then cosine, batch 32, gradient clipping at 1.0) without the Trainer's bookkeeping, so an arm takes a
minute or two on a 2-core CPU. Results are appended to ``--output`` as JSON lines.

    python benchmarks/ablation.py --name resnet1d --kind resnet1d
    python benchmarks/ablation.py --name scratch-meanmax --overrides '{"classifier_pooling": "mean_max"}'
    python benchmarks/ablation.py --name pretrained --pretrained ecgnat-demo/pretrained --seeds 0,1,2
    python benchmarks/ablation.py --name centered --scaling center --cv_folds 5,6,7,8 --seeds 0
    python benchmarks/ablation.py --name hz500 --sampling_rate 500 --scaling center \
        --overrides '{"sampling_rate": 500, "patch_size": 10, "stem_kernel_size": 31}'
    python benchmarks/ablation.py --name llrd --pretrained ecgnat-demo/pretrained --layer_decay 0.6 --scaling center
"""
import os

for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(v, "1")  # BLAS threads fight torch's on 2 cores
import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

CACHE_DIR = Path(os.environ.get("ECGNAT_ABLATION_CACHE", Path.home() / ".cache" / "ecgnat_hf"))


def load_data(scaling="standardize", val_fold=8, sampling_rate=100):
    """Folds 1-8 of the PTB-XL sample at ``sampling_rate``: 100 Hz is the bundled sample; 500 Hz reads
    ``records500`` of the subset in ``$ECGNAT_SHARED_DATA/ptbxl-subset`` (the same records)."""
    rate = "" if sampling_rate == 100 else f"_{sampling_rate}hz"
    cache = CACHE_DIR / f"ablation_sample100_{scaling}_val{val_fold}{rate}.pt"
    if cache.exists():
        return torch.load(cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    from ecgnat_hf.training.arguments import DataArguments
    from ecgnat_hf.training.data import prepare_classification_data
    from ecgnat_hf.feature_extraction_ecgnat import ECGNATFeatureExtractor
    fe = ECGNATFeatureExtractor(sampling_rate=sampling_rate, window_s=10, mode="window", scaling=scaling)
    train = ",".join(str(f) for f in range(1, 9) if f != val_fold)  # fold 9 (test) is never a choice
    if sampling_rate == 100:
        da = DataArguments(dataset="sample", train_folds=train, validation_folds=str(val_fold), test_folds="none")
    elif sampling_rate == 500:
        shared = Path(os.environ.get("ECGNAT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
        subset = shared / "ptbxl-subset"
        if not (subset / "records500").is_dir():
            raise SystemExit(f"--sampling_rate 500 needs the PTB-XL subset's records500 in {subset} (set ECGNAT_SHARED_DATA)")
        da = DataArguments(dataset="ptbxl", data_dir=str(subset), sampling_rate=500, train_folds=train,
                           validation_folds=str(val_fold), test_folds="none")
    else:
        raise SystemExit(f"--sampling_rate must be 100 or 500 (PTB-XL's two rates), got {sampling_rate}")
    p = prepare_classification_data(da, fe, splits=("train", "validation"))
    out = {}
    for s, ds in p.splits.items():
        d = ds.with_format("numpy")
        out[s] = (torch.tensor(np.asarray(d["input_values"])), torch.tensor(np.asarray(d["lead_mask"])).bool(),
                  torch.tensor(np.asarray(d["labels"])).float())
    out["label_names"] = p.label_names
    torch.save(out, cache)
    return out


def auroc(y, p):
    from ecgnat_hf.metrics.functional import binary_auroc

    vals = {j: binary_auroc(y[:, j], p[:, j]) for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)}
    return float(np.mean(list(vals.values()))), vals


def build(kind, overrides, pretrained, n_labels):
    if kind == "resnet1d":
        from ecgnat_hf.training.baselines import ResNet1dConfig, ResNet1dForSequenceClassification
        return ResNet1dForSequenceClassification(ResNet1dConfig(num_labels=n_labels, problem_type="multi_label_classification"))
    from ecgnat_hf import ECGNATConfig, ECGNATForSequenceClassification
    kw = dict(num_labels=n_labels, problem_type="multi_label_classification", **overrides)
    if pretrained:
        return ECGNATForSequenceClassification.from_pretrained(pretrained, **kw)
    preset = kw.pop("preset", "tiny")
    return ECGNATForSequenceClassification(ECGNATConfig.from_preset(preset, **kw))


def run(kind, overrides, pretrained, seed, steps, lr, bs=32, wd=0.05, eval_every=20, frac=1.0, scaling="standardize",
        val_fold=8, layer_decay=1.0, ema_decay=0.0, sampling_rate=100):
    if val_fold == 9:
        raise SystemExit("fold 9 is the test fold: ablations never score it")
    data = load_data(scaling, val_fold, sampling_rate)
    xtr, mtr, ytr = data["train"]
    xva, mva, yva = data["validation"]
    if frac < 1.0:
        from ecgnat_hf.training.data import stratified_subset
        idx = stratified_subset(ytr.numpy(), frac, seed)
        xtr, mtr, ytr = xtr[idx], mtr[idx], ytr[idx]
    torch.manual_seed(seed)
    model = build(kind, overrides, pretrained, ytr.shape[1])
    model_rate = getattr(model.config, "sampling_rate", sampling_rate)
    if kind != "resnet1d" and model_rate != sampling_rate:
        raise SystemExit(f"the model reads {model_rate} Hz but --sampling_rate is {sampling_rate}: set both")
    params = [p for p in model.parameters() if p.requires_grad]
    if layer_decay < 1:  # layer-wise learning-rate decay (weight decay on every parameter, as in the plain arm)
        from ecgnat_hf.training.optimization import layerwise_lr_param_groups

        groups = layerwise_lr_param_groups(model, lr, wd, layer_decay)
        opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups], lr=lr, weight_decay=wd)
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    ema = None
    if ema_decay > 0:  # an exponential moving average of the weights is what gets evaluated
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
    scored = ema.module if ema is not None else model
    warm = int(0.1 * steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / max(1, warm) if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    g = torch.Generator().manual_seed(seed)
    n = len(xtr)
    curve = []
    t0 = time.perf_counter()
    step = 0
    best = (-1, 0)
    while step < steps:
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            if len(idx) < 2:
                continue
            model.train()
            out = model(input_values=xtr[idx], lead_mask=mtr[idx], labels=ytr[idx])
            opt.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step(); sched.step(); step += 1
            if ema is not None:
                ema.update_parameters(model)
            if step % eval_every == 0 or step == steps:
                scored.eval()
                with torch.no_grad():
                    lv = scored(input_values=xva, lead_mask=mva).logits
                p = torch.sigmoid(lv).numpy()
                a, per = auroc(yva.numpy(), p)
                curve.append((step, float(out.loss.detach()), a))
                if a > best[0]:
                    best = (a, step)
            if step >= steps:
                break
    secs = time.perf_counter() - t0
    final = curve[-1][2]
    # lead subsets on validation (final weights)
    from ecgnat_hf.configuration_ecgnat import CANONICAL_LEADS as names
    from ecgnat_hf.training.arguments import LEAD_SUBSETS

    subs = {}
    scored.eval()
    for sname in ("6-limb", "I+II", "II", "I"):
        keep = torch.tensor([nm in LEAD_SUBSETS[sname] for nm in names])
        with torch.no_grad():
            lv = scored(input_values=xva * keep[None, :, None], lead_mask=mva & keep[None]).logits
        subs[sname] = auroc(yva.numpy(), torch.sigmoid(lv).numpy())[0]
    return dict(final=final, best=best[0], best_step=best[1], per_class={data["label_names"][j]: round(v, 3) for j, v in per.items()},
                subsets=subs, curve=curve, seconds=round(secs, 1), params=sum(p.numel() for p in model.parameters()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument("--kind", default="ecgnat")
    ap.add_argument("--overrides", default="{}")
    ap.add_argument("--pretrained", default=None)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--frac", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scaling", default="standardize", help="feature-extractor scaling: standardize, robust, center, none")
    ap.add_argument("--sampling_rate", type=int, default=100, help="100 (bundled sample) or 500 (records500 of the shared subset)")
    ap.add_argument("--cv_folds", default="8", help="validation folds to cross-validate over (each trains on the rest of 1-8)")
    ap.add_argument("--layer_decay", type=float, default=1.0, help="layer-wise learning-rate decay (ECG-NAT; 1 = off)")
    ap.add_argument("--ema_decay", type=float, default=0.0, help="evaluate an EMA of the weights with this decay (0 = off)")
    ap.add_argument("--output", default="ablation_results.jsonl")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    res = []
    folds = [int(x) for x in a.cv_folds.split(",")]
    for fold, s in itertools.product(folds, [int(x) for x in a.seeds.split(",")]):
        r = run(a.kind, json.loads(a.overrides), a.pretrained, s, a.steps, a.lr, frac=a.frac, scaling=a.scaling, val_fold=fold,
                layer_decay=a.layer_decay, ema_decay=a.ema_decay, sampling_rate=a.sampling_rate)
        r.update(seed=s, val_fold=fold)
        res.append(r)
        print(a.name, "fold", fold, "seed", s, "final %.3f best %.3f@%d" % (r["final"], r["best"], r["best_step"]), r["per_class"],
              {k: round(v, 3) for k, v in r["subsets"].items()}, r["seconds"], "s", flush=True)
    f = np.array([r["final"] for r in res])
    summ = dict(name=a.name, kind=a.kind, overrides=a.overrides, pretrained=a.pretrained, steps=a.steps, lr=a.lr, frac=a.frac,
                scaling=a.scaling, sampling_rate=a.sampling_rate, layer_decay=a.layer_decay, ema_decay=a.ema_decay, cv_folds=a.cv_folds,
                final_mean=float(f.mean()), final_std=float(f.std()), best_mean=float(np.mean([r["best"] for r in res])),
                subsets={k: float(np.mean([r["subsets"][k] for r in res])) for k in res[0]["subsets"]},
                per_class={k: float(np.mean([r["per_class"].get(k, np.nan) for r in res])) for k in res[0]["per_class"]},
                seconds=float(np.mean([r["seconds"] for r in res])), params=res[0]["params"], runs=res)
    with open(a.output, "a") as fh:
        fh.write(json.dumps(summ) + "\n")
    print("SUMMARY", a.name, "val final %.3f ± %.3f best %.3f" % (summ["final_mean"], summ["final_std"], summ["best_mean"]),
          {k: round(v, 3) for k, v in summ["subsets"].items()}, {k: round(v, 3) for k, v in summ["per_class"].items()}, "%.0fs" % summ["seconds"], summ["params"])


if __name__ == "__main__":
    main()
