"""Full PTB-XL benchmark: ECG-NAT and the ResNet1d baseline on the six tasks of Strodthoff et al. (2020).

One command trains and scores any cell of task x model x label fraction x seed, on CPU or CUDA:

    python benchmarks/ptbxl.py pack --data_dir PTBXL_DIR                   # once: ~1 min, PTBXL_DIR/ecgnat_pack.npz
    python benchmarks/ptbxl.py run  --data_dir PTBXL_DIR --tasks superdiagnostic --models ecgnat-tiny,resnet1d \\
        --fractions 1.0 --seeds 0,1,2 --results runs/ptbxl                    # resumable: finished runs are kept
    python benchmarks/ptbxl.py report --results runs/ptbxl                   # means over seeds, paired intervals

``PTBXL_DIR`` is a PTB-XL folder at 100 Hz (``ptbxl_database.csv``, ``scp_statements.csv``, ``records100/``), e.g.
the one ``python ../shared/data/ptbxl-full/restore.py DIR`` writes. ``pack`` reads every record once through the
package's reader and the ECG-NAT feature extractor (lead order, quality mask) and the benchmark's label
aggregation for all six tasks (:func:`ecgnat_hf.data.labels.aggregate_ptbxl_labels`), so training never touches
the WFDB files again.

Protocol (``--protocol``):

* ``dev`` (default): folds 1-7 train, fold 8 validation, fold 9 test. Every comparison in the README uses it;
  the test fold is scored once per run, with the weights chosen on validation.
* ``ship``: folds 1-8 train, fold 9 validation, as the published benchmark does (fold 10, its test fold, is not
  in the shared data and is never looked for). Used for the checkpoints under ``checkpoints/``.

Training: random crops of ``--window_s`` seconds from each 10 s record (a new crop every time a record is drawn),
per-crop centring as the feature extractor does (``scaling="center"``), AdamW with weight decay 0.05, linear
warm-up over 5 % of the steps then cosine, gradient clipping at 1.0; the weights with the best validation macro
AUROC are kept. Evaluation: sliding windows of ``--window_s`` with half-window hop covering the record, the
window probabilities averaged per record (``ECGNATFeatureExtractor.aggregate``). A label fraction below 1 takes
a stratified subset of the training records (:func:`ecgnat_hf.training.data.stratified_subset`, seeded by the
run's seed).

Every run appends one line to ``RESULTS/results.jsonl`` and writes its validation and test probabilities to
``RESULTS/preds/<run>.npz``, so ``report`` can give multi-seed means and paired bootstrap intervals without
retraining, and an interrupted sweep resumes where it stopped (``run`` skips finished runs).

Choosing a configuration: ``run --validation_only`` scores fold 8 only and never reads the test fold (its key
starts with ``sweep-``; ``report`` leaves it out); ``--overrides '{"supcon_positives": "jaccard"}'`` changes
ECG-NAT config arguments, and such runs form an arm of their own in the key and in every table.

``plan`` (used for the GPU sweep of the README's results, ``--plan readme``) runs a whole schedule with several
worker processes: a validation sweep of window length and learning rate on the superdiagnostic task, masked
pretraining on all records (labels unused), then the six tasks, label efficiency, a linear probe and the
checkpoints to ship, in priority order until ``--deadline_s``.
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # BLAS threads fight torch's on 2 cores

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import lzma  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

TASKS = ("superdiagnostic", "subdiagnostic", "diagnostic", "form", "rhythm", "all")
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
PROTOCOLS = {
    "dev": {"train": (1, 2, 3, 4, 5, 6, 7), "validation": (8,), "test": (9,)},
    "ship": {"train": (1, 2, 3, 4, 5, 6, 7, 8), "validation": (9,), "test": ()},
}
RATE = 100
RECORD_SAMPLES = 1000
PACK_NAME = "ecgnat_pack.npz"
LEAD_SUBSETS = {"12-lead": LEADS, "6-limb": LEADS[:6], "I+II": ("I", "II"), "II": ("II",), "I": ("I",)}
# ECG-NAT presets at the 100 Hz of PTB-XL's records100 (small and base are defined at 500 Hz: same layers, a
# 20 ms stem token as in tiny)
AT_100HZ = {"tiny": {}, "small": dict(sampling_rate=100, patch_size=2, stem_kernel_size=7),
            "base": dict(sampling_rate=100, patch_size=2, stem_kernel_size=7)}


# ----------------------------------------------------------------------------------------------- packing
def pack(data_dir: str | os.PathLike, output: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Read every record and the six tasks' labels into one ``.npz`` (signals as int16 microvolts)."""
    import pandas as pd
    from tqdm.auto import tqdm

    from ecgnat_hf.data.labels import aggregate_ptbxl_labels, load_scp_statements, parse_scp_codes
    from ecgnat_hf.data.records import read_record
    from ecgnat_hf.models.ecgnat.feature_extraction_ecgnat import ECGInputError, ECGNATFeatureExtractor

    d = Path(data_dir)
    if not (d / "ptbxl_database.csv").exists():
        raise FileNotFoundError(f"{d}: ptbxl_database.csv not found (restore PTB-XL there first)")
    out = Path(output) if output else d / PACK_NAME
    df = pd.read_csv(d / "ptbxl_database.csv", index_col="ecg_id")
    if 10 in set(df["strat_fold"].astype(int)):
        raise ValueError(f"{d} holds fold 10, the benchmark's held-out test fold: this runner never reads it")
    df["scp_codes"] = df["scp_codes"].apply(parse_scp_codes)
    statements = load_scp_statements(d / "scp_statements.csv")
    fe = ECGNATFeatureExtractor(sampling_rate=RATE, window_s=RECORD_SAMPLES / RATE, mode="pad", scaling="none")
    ids, folds, signals, masks, skipped = [], [], [], [], []
    for eid, row in tqdm(df.iterrows(), total=len(df), desc="reading PTB-XL", disable=not progress,
                         unit="rec", mininterval=2):
        path = d / row["filename_lr"]
        try:
            rec = read_record(path)
            feats = fe(rec.signal, sampling_rate=rec.sampling_rate, lead_names=rec.lead_names, record_ids=[str(path)])
        except (OSError, ECGInputError, ValueError) as exc:  # a typed reader/extractor error names the record
            skipped.append(f"{eid}\t{type(exc).__name__}: {exc}")
            continue
        x = feats["input_values"][0]
        if x.shape != (len(LEADS), RECORD_SAMPLES):
            skipped.append(f"{eid}\tshape {x.shape}, expected {(len(LEADS), RECORD_SAMPLES)}")
            continue
        ids.append(int(eid))
        folds.append(int(row["strat_fold"]))
        signals.append(np.round(x * 1000.0).clip(-32768, 32767).astype(np.int16))
        masks.append(feats["lead_mask"][0].astype(bool))
    arrays = {
        "ecg_id": np.asarray(ids, np.int64), "fold": np.asarray(folds, np.int8),
        "signal_uv": np.stack(signals), "lead_mask": np.stack(masks),
        "skipped": np.asarray(skipped, dtype=str),
    }
    meta = {"tasks": {}, "sampling_rate": RATE, "source": str(d)}
    for task in TASKS:
        agg = aggregate_ptbxl_labels(df, statements, task)
        index = {c: j for j, c in enumerate(agg.classes)}
        y = np.zeros((len(ids), len(agg.classes)), np.uint8)
        for i, eid in enumerate(ids):
            for c in agg.labels.get(eid, ()):
                y[i, index[c]] = 1
        arrays[f"y_{task}"] = y
        meta["tasks"][task] = list(agg.classes)
    arrays["meta"] = np.asarray(json.dumps(meta))
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, out)
    return out


@dataclass
class Pack:
    """The packed benchmark data: ``signal`` float32 mV (records, 12, 1000) and labels per task."""

    ecg_id: np.ndarray
    fold: np.ndarray
    signal: np.ndarray
    lead_mask: np.ndarray
    labels: dict
    classes: dict
    quantized_uv: float = 0.0

    def split(self, task: str, folds) -> np.ndarray:
        """Indices of the records of ``folds`` that have a label for ``task`` (the benchmark drops the others)."""
        has = self.labels[task].any(axis=1)
        return np.flatnonzero(np.isin(self.fold, list(folds)) & has)


def load_pack(path: str | os.PathLike) -> Pack:
    path = Path(path)
    if path.is_dir():
        path = path / PACK_NAME
    if path.suffix == ".xz":
        return decode_transport(path.read_bytes())
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `python benchmarks/ptbxl.py pack --data_dir DIR` first")
    z = np.load(path, allow_pickle=False)
    meta = json.loads(str(z["meta"]))
    return Pack(ecg_id=z["ecg_id"], fold=z["fold"], signal=z["signal_uv"].astype(np.float32) / 1000.0,
                lead_mask=z["lead_mask"], labels={t: z[f"y_{t}"] for t in meta["tasks"]}, classes=meta["tasks"],
                quantized_uv=float(meta.get("quantized_uv", 0.0)))


# -------------------------------------------------------------------------------- compact transport form
# The GPU machine receives at most 64 MiB. Lossless, the signals need ~150 MB; quantized to q microvolts
# (q/sqrt(12) rms error, 5.8 uV at q=20, well under PTB-XL's noise floor) and with the four limb leads that
# PTB-XL derives from I and II rebuilt from them (records whose limb leads deviate are kept whole), they
# need ~45 MB. Only training on the GPU uses this form; every figure for a shipped checkpoint is re-scored on
# the original signals.
_DERIVED = {2: (-1.0, 1.0), 3: (-0.5, -0.5), 4: (1.0, -0.5), 5: (-0.5, 1.0)}  # lead: (w_I, w_II)
_KEPT = (0, 1, 6, 7, 8, 9, 10, 11)


def _derive_limb(q: np.ndarray) -> np.ndarray:
    """Limb leads III, aVR, aVL, aVF from I and II (in quantized units)."""
    i, ii = q[:, 0].astype(np.float64), q[:, 1].astype(np.float64)
    return np.stack([np.round(a * i + b * ii) for a, b in _DERIVED.values()], axis=1).astype(np.int32)


def encode_transport(pack_path: str | os.PathLike, q_uv: int = 20) -> bytes:
    z = np.load(pack_path, allow_pickle=False)
    x = z["signal_uv"].astype(np.int32)
    q = np.round(x / q_uv).astype(np.int32)
    derived = _derive_limb(q)
    exact = np.abs(q[:, 2:6] - derived).max(axis=(1, 2)) <= 1
    kept = q[:, _KEPT]
    d = np.diff(kept, axis=-1, prepend=0)
    d[:, 3:] -= d[:, 2:-1].copy()  # V2..V6: difference from the previous precordial lead's difference
    d[:, 1] -= d[:, 0]  # II from I
    if np.abs(d).max() > 2**31 - 1:
        raise ValueError("signal too steep for the transport form; use a larger q_uv")
    # one byte per value; the few larger steps (QRS upstrokes of tall records) go into an escape list
    big = np.abs(d) > 127
    parts = {"d": np.where(big, -128, d).astype(np.int8), "esc_pos": np.flatnonzero(big).astype(np.int64),
             "esc_val": d[big].astype(np.int32), "limb_idx": np.flatnonzero(~exact).astype(np.int32),
             "limb": q[~exact][:, 2:6].astype(np.int16)}
    for k in ("ecg_id", "fold", "lead_mask", "meta"):
        parts[k] = z[k]
    for k in z.files:
        if k.startswith("y_"):
            parts[k] = z[k]
    parts["q_uv"] = np.asarray(q_uv)
    import io

    buf = io.BytesIO()
    np.savez(buf, **parts)
    return lzma.compress(buf.getvalue(), preset=6)


def decode_transport(blob: bytes) -> Pack:
    import io

    z = np.load(io.BytesIO(lzma.decompress(blob)), allow_pickle=False)
    d = z["d"].astype(np.int32)
    d.reshape(-1)[z["esc_pos"]] = z["esc_val"]
    d[:, 1] += d[:, 0]
    for j in range(3, d.shape[1]):
        d[:, j] += d[:, j - 1]
    kept = np.cumsum(d, axis=-1)
    q = np.zeros((kept.shape[0], len(LEADS), kept.shape[-1]), np.int32)
    q[:, _KEPT] = kept
    q[:, 2:6] = _derive_limb(q)
    q[z["limb_idx"], 2:6] = z["limb"]
    q_uv = float(z["q_uv"])
    meta = json.loads(str(z["meta"]))
    lead_mask = z["lead_mask"]
    signal = (q * (q_uv / 1000.0)).astype(np.float32)
    signal[~lead_mask] = 0.0
    return Pack(ecg_id=z["ecg_id"], fold=z["fold"], signal=signal, lead_mask=lead_mask,
                labels={t: z[f"y_{t}"] for t in meta["tasks"]}, classes=meta["tasks"], quantized_uv=q_uv)


# ------------------------------------------------------------------------------------------------ runs
@dataclass
class RunSpec:
    """One training run. ``model``: ``ecgnat-<preset>`` or ``resnet1d``; ``init``: ``scratch``,
    ``pretrained`` (fine-tune the whole ECG-NAT from ``pretrained``) or ``probe`` (frozen encoder)."""

    task: str = "superdiagnostic"
    model: str = "ecgnat-tiny"
    fraction: float = 1.0
    seed: int = 0
    protocol: str = "dev"
    init: str = "scratch"
    pretrained: str | None = None
    window_s: float = 2.5
    lr: float = 1e-3
    epochs: int = 30
    min_steps: int = 600
    batch_size: int = 256
    eval_every: int = 0  # 0: ~25 evaluations per run
    lead_subsets: bool = False  # also score the test fold on LEAD_SUBSETS (leads removed from one checkpoint)
    save: str | None = None  # folder for the trained weights (save_pretrained)
    max_seconds: float = 0.0  # stop training after this long (0: no limit); recorded in the results
    score_test: bool = True  # False for validation-only sweeps: the test fold is not read
    overrides: str = ""  # ECG-NAT config changes as JSON, e.g. '{"supcon_weight": 0}': an arm of its own

    @property
    def key(self) -> str:
        init = self.init if self.model.startswith("ecgnat") else "scratch"
        sweep = "" if self.score_test else "sweep-"
        extra = "".join(f"-{k}{_compact(v)}" for k, v in sorted(self.config_overrides().items()))
        return (f"{sweep}{self.protocol}-{self.task}-{self.model}-{init}-f{self.fraction:g}-w{self.window_s:g}"
                f"-lr{self.lr:g}-e{self.epochs}{extra}-s{self.seed}")

    def config_overrides(self) -> dict:
        """The parsed ``overrides``: a JSON object of ECG-NAT config arguments (``{}`` when empty)."""
        if not self.overrides:
            return {}
        try:
            out = json.loads(self.overrides)
        except json.JSONDecodeError as err:
            raise ValueError(f"overrides {self.overrides!r} is not JSON: {err}") from None
        if not isinstance(out, dict):
            raise ValueError(f"overrides {self.overrides!r} must be a JSON object of config arguments")
        if out and not self.model.startswith("ecgnat"):
            raise ValueError(f"overrides {self.overrides!r} apply to ECG-NAT configs, not to {self.model!r}")
        return out


def _pretrained_arg(spec: RunSpec) -> str:
    """The ``--pretrained`` part of a model card's command: the shipped encoder's folder under ``checkpoints/``.
    A GPU plan's encoder (``runs/pretrained-tiny``) was shipped as ``ecgnat-tiny-ptbxl-pretrained``; a run that
    already started from a shipped encoder names it as it is."""
    if not spec.pretrained:
        return ""
    name = Path(spec.pretrained).name
    if not name.endswith("-ptbxl-pretrained"):
        name = name.replace("pretrained-", "ecgnat-") + "-ptbxl-pretrained"
    return f" --pretrained checkpoints/{name}"


def _overrides_arg(spec: RunSpec) -> str:
    """The ``--overrides`` part of a run's command line (empty when the run has none), for model cards."""
    return f" --overrides '{spec.overrides}'" if spec.overrides else ""


def _compact(value) -> str:
    """A config value as it appears in a run key: ``0``, ``0.3``, ``jaccard``."""
    return f"{value:g}" if isinstance(value, float) else str(value).replace(" ", "")


def _device(name: str | None = None):
    import torch

    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_model(spec: RunSpec, classes: list[str]):
    import torch  # noqa: F401

    from ecgnat_hf.models.ecgnat import ECGNATConfig, ECGNATForSequenceClassification
    from ecgnat_hf.models.resnet1d import ResNet1dConfig, ResNet1dForSequenceClassification

    label_kw = dict(num_labels=len(classes), problem_type="multi_label_classification",
                    id2label={i: c for i, c in enumerate(classes)}, label2id={c: i for i, c in enumerate(classes)})
    if spec.model == "resnet1d":
        return ResNet1dForSequenceClassification(ResNet1dConfig(**label_kw))
    if not spec.model.startswith("ecgnat-"):
        raise ValueError(f"unknown model {spec.model!r}: ecgnat-<preset> or resnet1d")
    preset = spec.model.split("-", 1)[1]
    extra = spec.config_overrides()
    unknown = sorted(set(extra) - set(ECGNATConfig().to_dict()))
    if unknown:
        raise ValueError(f"{spec.key}: unknown ECG-NAT config argument(s) in overrides: {', '.join(unknown)}")
    if spec.init in ("pretrained", "probe"):
        if not spec.pretrained:
            raise ValueError(f"{spec.key}: init={spec.init!r} needs a pretrained checkpoint")
        model = ECGNATForSequenceClassification.from_pretrained(spec.pretrained, ignore_mismatched_sizes=True,
                                                                **label_kw, **extra)
        if spec.init == "probe":
            for p in model.ecgnat.parameters():
                p.requires_grad_(False)
            model.config.supcon_weight = 0.0
        return model
    return ECGNATForSequenceClassification(ECGNATConfig.from_preset(preset, **{**AT_100HZ[preset], **extra},
                                                                    **label_kw))


class Batcher:
    """Random crops and sliding windows on a device-resident copy of the signals."""

    def __init__(self, pack: Pack, device):
        import torch

        self.torch = torch
        self.device = device
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        self.x = torch.as_tensor(pack.signal).to(device=device, dtype=dtype)
        self.mask = torch.as_tensor(pack.lead_mask).to(device)

    def crops(self, idx, window: int, generator):
        torch = self.torch
        idx = torch.as_tensor(idx, device=self.device)
        n = self.x.shape[-1]
        starts = torch.randint(0, n - window + 1, (len(idx),), device=self.device, generator=generator)
        pos = starts[:, None] + torch.arange(window, device=self.device)
        x = torch.gather(self.x[idx], 2, pos[:, None, :].expand(-1, self.x.shape[1], -1)).float()
        return self._center(x, self.mask[idx]), self.mask[idx].long()

    def _center(self, x, mask):
        x = x - x.mean(dim=-1, keepdim=True)
        return x * mask[:, :, None].to(x.dtype)

    def windows(self, idx, window: int, keep=None):
        """All sliding windows (hop window/2, the last one aligned to the end) of the records ``idx``:
        (records * windows, leads, window) centred inputs, their lead masks, and the windows per record."""
        torch = self.torch
        idx = torch.as_tensor(idx, device=self.device)
        n = self.x.shape[-1]
        hop = max(window // 2, 1)
        starts = list(range(0, n - window + 1, hop))
        if starts[-1] + window < n:
            starts.append(n - window)
        mask = self.mask[idx]
        if keep is not None:
            mask = mask & torch.as_tensor(keep, device=self.device)[None, :]
        x = torch.stack([self.x[idx, :, s:s + window] for s in starts], dim=1).float()  # (B, W, L, T)
        B, W = x.shape[:2]
        m = mask[:, None, :].expand(B, W, -1)
        x = self._center(x.reshape(B * W, *x.shape[2:]), m.reshape(B * W, -1))
        return x, m.reshape(B * W, -1).long(), W


def predict(model, batcher: Batcher, idx, window: int, keep=None, batch_records: int = 256) -> np.ndarray:
    """Per-record probabilities: window probabilities averaged per record."""
    torch = batcher.torch
    model.eval()
    out = []
    amp = batcher.device.type == "cuda"
    with torch.no_grad(), torch.autocast(batcher.device.type, dtype=torch.bfloat16, enabled=amp):
        for s in range(0, len(idx), batch_records):
            x, m, W = batcher.windows(idx[s:s + batch_records], window, keep)
            p = torch.sigmoid(model(input_values=x, lead_mask=m).logits.float())
            out.append(p.reshape(-1, W, p.shape[-1]).mean(dim=1).cpu().numpy())
    model.train()
    return np.concatenate(out) if out else np.zeros((0, 0))


def macro_auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Macro AUROC over the classes with positives and negatives (the package's metric, sklearn off-package)."""
    try:
        from ecgnat_hf.metrics.comparison import macro_auroc as _m

        return _m(y, p)
    except ImportError:  # the GPU image has no `evaluate`, which ecgnat_hf.metrics imports
        from sklearn.metrics import roc_auc_score

        ok = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
        return float(np.mean([roc_auc_score(y[:, j], p[:, j]) for j in ok]))


def stratified(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    if fraction >= 1.0:
        return np.arange(len(labels))
    from ecgnat_hf.training.data import stratified_subset  # numpy only: importable without `datasets`

    return np.asarray(sorted(stratified_subset(labels, fraction, seed=seed)))


def train_run(spec: RunSpec, pack: Pack, batcher: Batcher, log=print, progress: bool = False) -> dict:
    """Train one run; return its result row and predictions (and write nothing: the caller stores them).
    ``progress``: a step bar with the ETA and the latest validation AUROC (long CPU runs)."""
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(spec.seed)
    np.random.seed(spec.seed)
    classes = pack.classes[spec.task]
    folds = PROTOCOLS[spec.protocol]
    y_all = pack.labels[spec.task].astype(np.float32)
    tr_all = pack.split(spec.task, folds["train"])
    tr = tr_all[stratified(y_all[tr_all], spec.fraction, spec.seed)]
    va = pack.split(spec.task, folds["validation"])
    te = pack.split(spec.task, folds["test"]) if folds["test"] and spec.score_test else np.zeros(0, np.int64)
    device = batcher.device
    model = build_model(spec, classes).to(device)
    window = int(round(spec.window_s * RATE))
    bs = int(min(spec.batch_size, max(16, len(tr) // 8)))
    steps_per_epoch = max(1, math.ceil(len(tr) / bs))
    steps = max(spec.epochs * steps_per_epoch, spec.min_steps)
    eval_every = spec.eval_every or max(steps // 25, 10)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.05)
    warm = max(1, int(0.05 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    gen = torch.Generator(device=device)
    gen.manual_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    y_dev = torch.as_tensor(y_all, device=device)
    amp = device.type == "cuda"
    best = (-1.0, 0, None)
    history = []
    order = np.zeros(0, np.int64)
    t0 = time.time()
    model.train()
    step = 0
    bar = tqdm(total=steps, desc=spec.key, unit="step", disable=not progress, leave=False, mininterval=5)
    for step in range(1, steps + 1):
        bar.update(1)
        if len(order) < bs:
            order = np.concatenate([order, rng.permutation(tr)])
        idx, order = order[:bs], order[bs:]
        x, m = batcher.crops(idx, window, gen)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(input_values=x, lead_mask=m, labels=y_dev[torch.as_tensor(idx, device=device)])
        opt.zero_grad(set_to_none=True)
        out.loss.float().backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        timed_out = spec.max_seconds and time.time() - t0 > spec.max_seconds
        if step % eval_every == 0 or step == steps or timed_out:
            auc = macro_auroc(y_all[va], predict(model, batcher, va, window))
            history.append((step, round(auc, 5)))
            bar.set_postfix(val_auroc=f"{auc:.4f}")
            if auc > best[0]:
                best = (auc, step, copy.deepcopy(model.state_dict()))
        if timed_out:
            break
    bar.close()
    train_s = time.time() - t0
    model.load_state_dict(best[2])
    row = {"key": spec.key, "spec": asdict(spec), "classes": classes, "n_train": int(len(tr)),
           "n_validation": int(len(va)), "n_test": int(len(te)), "steps": int(step), "planned_steps": int(steps),
           "batch_size": bs, "best_step": int(best[1]), "validation_auroc": float(best[0]), "history": history,
           "train_seconds": round(train_s, 1), "device": str(device), "quantized_uv": pack.quantized_uv,
           "n_params": int(sum(p.numel() for p in model.parameters()))}
    preds = {"val_ids": pack.ecg_id[va], "val_prob": predict(model, batcher, va, window).astype(np.float32)}
    if len(te):  # the test fold, read once, with the weights chosen on validation
        p = predict(model, batcher, te, window)
        preds.update(test_ids=pack.ecg_id[te], test_prob=p.astype(np.float32))
        row["test_auroc"] = macro_auroc(y_all[te], p)
        if spec.lead_subsets:
            for name, leads in LEAD_SUBSETS.items():
                keep = np.isin(np.asarray(LEADS), leads)
                usable = te[(pack.lead_mask[te] & keep).any(axis=1)]
                ps = predict(model, batcher, usable, window, keep=keep)
                row[f"test_auroc_{name}"] = macro_auroc(y_all[usable], ps)
    if spec.save:
        model.save_pretrained(spec.save)
    log(f"{spec.key}: val {best[0]:.4f} (step {best[1]}/{steps})"
        + (f" test {row['test_auroc']:.4f}" if "test_auroc" in row else "") + f" [{train_s:.0f}s]")
    return row, preds


def pretrain_run(preset: str, pack: Pack, batcher: Batcher, save: str, epochs: int = 40, lr: float = 2e-3,
                 batch_size: int = 256, max_seconds: float = 0.0, seed: int = 0, log=print) -> dict:
    """Masked-reconstruction pretraining on every packed record (labels unused), whole 10 s records."""
    import torch

    from ecgnat_hf.models.ecgnat import ECGNATConfig, ECGNATForPreTraining

    torch.manual_seed(seed)
    device = batcher.device
    model = ECGNATForPreTraining(ECGNATConfig.from_preset(preset, **AT_100HZ[preset])).to(device)
    idx_all = np.arange(len(pack.ecg_id))
    steps = epochs * math.ceil(len(idx_all) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warm = max(1, int(0.05 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    rng = np.random.default_rng(seed)
    amp = device.type == "cuda"
    t0, order, losses, step = time.time(), np.zeros(0, np.int64), [], 0
    model.train()
    for step in range(1, steps + 1):
        if len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(idx_all)])
        idx, order = order[:batch_size], order[batch_size:]
        x, m = batcher.crops(idx, RECORD_SAMPLES, gen)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model(input_values=x, lead_mask=m).loss
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0:
            losses.append((step, round(float(loss), 5)))
        if max_seconds and time.time() - t0 > max_seconds:
            break
    model.save_pretrained(save)
    row = {"key": f"pretrain-{preset}", "preset": preset, "steps": step, "planned_steps": steps,
           "records": int(len(idx_all)), "seconds": round(time.time() - t0, 1), "loss": losses,
           "quantized_uv": pack.quantized_uv, "device": str(device), "epochs": epochs, "lr": lr}
    log(f"pretrain-{preset}: {step}/{steps} steps, loss {losses[-1][1] if losses else float('nan')} "
        f"[{row['seconds']:.0f}s]")
    return row


# ------------------------------------------------------------------------------------------ results store
class Results:
    """``results.jsonl`` + ``preds/<key>.npz`` under one folder; a finished key is never run again."""

    def __init__(self, folder: str | os.PathLike):
        self.dir = Path(folder)
        (self.dir / "preds").mkdir(parents=True, exist_ok=True)
        self.file = self.dir / "results.jsonl"

    def rows(self) -> list[dict]:
        if not self.file.exists():
            return []
        out = []
        for line in self.file.read_text().splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a kill: that run is simply redone
                    continue
        return out

    def done(self) -> set[str]:
        return {r["key"] for r in self.rows()}

    def add(self, row: dict, preds: dict | None = None) -> None:
        if preds is not None:
            tmp = self.dir / "preds" / f".{row['key']}.tmp.npz"
            np.savez_compressed(tmp, **preds)
            os.replace(tmp, self.dir / "preds" / f"{row['key']}.npz")
        with open(self.file, "a") as f:
            f.write(json.dumps(row) + "\n")

    def preds(self, key: str) -> dict:
        z = np.load(self.dir / "preds" / f"{key}.npz")
        return {k: z[k] for k in z.files}


def run_many(specs: list[RunSpec], pack: Pack, results: Results, device=None) -> list[dict]:
    """Run every spec not yet in ``results``, in order, with a progress bar and an ETA."""
    from tqdm.auto import tqdm

    batcher = Batcher(pack, _device(device))
    todo = [s for s in specs if s.key not in results.done()]
    rows = []
    bar = tqdm(todo, desc="PTB-XL runs", unit="run")
    for spec in bar:
        bar.set_postfix_str(spec.key)
        row, preds = train_run(spec, pack, batcher, log=bar.write, progress=True)
        results.add(row, preds)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------ report
def _epochs_text(spec: dict) -> str:
    """``"20 epochs"`` for a schedule other than the default, else ``""``: runs of two schedules are two arms,
    not seeds of one."""
    e = spec.get("epochs", RunSpec.epochs)
    return "" if e == RunSpec.epochs else f"{e} epoch{'s' if e != 1 else ''}"


def _epochs_note(spec: dict) -> str:
    return f" ({_epochs_text(spec)})" if _epochs_text(spec) else ""


def _label(row) -> str:
    s = row["spec"]
    parts = [s["init"]] if s["model"].startswith("ecgnat") and s["init"] != "scratch" else []
    parts += [_epochs_text(s)] if _epochs_text(s) else []
    parts += [f"{k}={_compact(v)}" for k, v in sorted(json.loads(s.get("overrides") or "{}").items())]
    return s["model"] + (f" ({', '.join(parts)})" if parts else "")


def summarize(results: Results, protocol: str = "dev") -> dict:
    """Multi-seed means per (task, model, init, fraction) and paired intervals between arms on the test fold."""
    from collections import defaultdict

    groups: dict = defaultdict(list)
    for r in results.rows():
        s = r.get("spec")
        if not s or s["protocol"] != protocol or "test_auroc" not in r or r["steps"] != r["planned_steps"]:
            continue  # validation-only sweeps, and runs cut short by a deadline
        groups[(s["task"], _label(r), s["fraction"])].append(r)
    table = []
    for (task, label, frac), rows in sorted(groups.items()):
        t = np.array([r["test_auroc"] for r in rows])
        v = np.array([r["validation_auroc"] for r in rows])
        table.append({"task": task, "model": label, "fraction": frac, "seeds": sorted(r["spec"]["seed"] for r in rows),
                      "test_mean": float(t.mean()), "test_sd": float(t.std(ddof=1)) if len(t) > 1 else 0.0,
                      "validation_mean": float(v.mean()), "keys": [r["key"] for r in rows],
                      **{k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k.startswith("test_auroc_")}})
    return {"protocol": protocol, "table": table}


def paired(results: Results, pack: Pack, keys_a: list[str], keys_b: list[str], task: str, n_boot: int = 2000,
           seed: int = 0) -> dict:
    """Paired bootstrap of macro AUROC, seeds averaged per arm, on the test records both arms scored."""
    from ecgnat_hf.metrics.comparison import paired_bootstrap

    def stack(keys):
        ps = [results.preds(k) for k in keys]
        return ps[0]["test_ids"], [p["test_prob"] for p in ps]

    ids_a, a = stack(keys_a)
    ids_b, b = stack(keys_b)
    if not np.array_equal(ids_a, ids_b):
        raise ValueError("the two arms scored different test records")
    pos = {int(e): i for i, e in enumerate(pack.ecg_id)}
    y = pack.labels[task][[pos[int(e)] for e in ids_a]]
    return paired_bootstrap(y, a, b, n_boot=n_boot, seed=seed)



# ------------------------------------------------------------------------------------------ the GPU plan
def _worker(wid, pack_path, device, jobs, done):
    """One worker process: holds the signals on the device, trains the specs it is sent."""
    import traceback

    import torch

    torch.set_num_threads(1)
    data = load_pack(pack_path)
    batcher = Batcher(data, _device(device))
    while True:
        job = jobs.get()
        if job is None:
            return
        kind, payload = job
        try:
            if kind == "pretrain":
                row = pretrain_run(pack=data, batcher=batcher, log=lambda m: None, **payload)
                done.put(("ok", kind, payload["save"], row, None))
            else:
                spec = RunSpec(**payload)
                row, preds = train_run(spec, data, batcher, log=lambda m: None)
                done.put(("ok", kind, spec.key, row, preds))
        except Exception:  # a failed run is reported and the sweep goes on
            name = RunSpec(**payload).key if kind == "run" else payload.get("save")
            done.put(("error", kind, name, traceback.format_exc(), None))


def readme_plan(out: Path, sel: dict, stage: str, quick: bool = False) -> list:
    """The README's schedule, in priority order. ``sel`` holds the validation choices made so far.
    ``quick``: the same schedule with a few steps per run (a smoke test of the machinery)."""
    budget = dict(epochs=1, min_steps=2, eval_every=1) if quick else dict(epochs=30, min_steps=600)
    dev = dict(protocol="dev", **budget)
    if stage == "sweep":
        jobs = [("pretrain", dict(preset=p, save=str(out / f"pretrained-{p}"), epochs=1 if quick else 40,
                                  max_seconds=secs, batch_size=16 if quick else 256))
                for p, secs in (("tiny", 150), ("small", 200))]
        for w in (2.5, 5.0, 10.0):
            for preset in ("tiny", "small"):
                jobs.append(("run", dict(task="superdiagnostic", model=f"ecgnat-{preset}", window_s=w, lr=1e-3,
                                         score_test=False, **dev)))
            for lr in (1e-3, 1e-2):
                jobs.append(("run", dict(task="superdiagnostic", model="resnet1d", window_s=w, lr=lr,
                                         score_test=False, **dev)))
        return jobs
    e, r = sel["ecgnat"], sel["resnet1d"]
    nat = dict(model=f"ecgnat-{e['preset']}", window_s=e["window_s"], lr=e["lr"], init="pretrained",
               pretrained=str(out / f"pretrained-{e['preset']}"))
    scratch = {**nat, "init": "scratch", "pretrained": None}
    res = dict(model="resnet1d", window_s=r["window_s"], lr=r["lr"])
    ship = dict(protocol="ship", **budget)

    def seed_block(seed):
        block = []
        for task in TASKS:
            sub = task == "superdiagnostic"
            block += [("run", dict(task=task, seed=seed, lead_subsets=sub, **nat, **dev)),
                      ("run", dict(task=task, seed=seed, lead_subsets=sub, **res, **dev))]
        return block

    def label_block(seed):
        block = []
        for f in (0.01, 0.1):
            for arm in (nat, scratch, res):
                block.append(("run", dict(task="superdiagnostic", fraction=f, seed=seed, **arm, **dev)))
        block.append(("run", dict(task="superdiagnostic", fraction=1.0, seed=seed, **scratch, **dev)))
        block.append(("run", dict(task="superdiagnostic", fraction=0.01, seed=seed, **{**nat, "init": "probe"},
                                  **dev)))
        return block

    def shipped(task, arm, name):
        return ("run", dict(task=task, seed=0, save=str(out / "ship" / name), **arm, **ship))

    other = "small" if e["preset"] == "tiny" else "tiny"
    jobs = seed_block(0)
    jobs += [shipped("superdiagnostic", nat, f"ecgnat-{e['preset']}-ptbxl-superdiagnostic"),
             shipped("all", nat, f"ecgnat-{e['preset']}-ptbxl-all"),
             shipped("superdiagnostic", res, "resnet1d-wang-ptbxl-superdiagnostic")]
    jobs += label_block(0)
    jobs += seed_block(1) + label_block(1)
    jobs += [("run", dict(task="superdiagnostic", seed=0, model=f"ecgnat-{other}", window_s=e["window_s"],
                          lr=e["lr"], init="pretrained", pretrained=str(out / f"pretrained-{other}"), **dev))]
    jobs += seed_block(2) + label_block(2)
    jobs += [shipped(t, nat, f"ecgnat-{e['preset']}-ptbxl-{t}") for t in TASKS if t not in ("superdiagnostic", "all")]
    jobs += [shipped("all", res, "resnet1d-wang-ptbxl-all")]
    jobs += [("run", dict(task="superdiagnostic", seed=0, model="ecgnat-base", window_s=e["window_s"], lr=e["lr"],
                          **dev))]
    return jobs


def choose(rows: list[dict], family: str) -> dict:
    """The validation sweep's choice for a family: the best validation macro AUROC (fold 8)."""
    cand = [r for r in rows if r["key"].startswith("sweep-") and (r["spec"]["model"] == "resnet1d") == (family == "resnet1d")]
    if not cand:
        raise RuntimeError(f"no finished sweep run for {family}")
    best = max(cand, key=lambda r: r["validation_auroc"])
    s = best["spec"]
    return {"preset": s["model"].split("-", 1)[1] if family == "ecgnat" else None, "window_s": s["window_s"],
            "lr": s["lr"], "validation_auroc": best["validation_auroc"], "from": best["key"]}


def run_plan(pack_path: str, out: str, workers: int = 8, deadline_s: float = 540.0, device=None, log=print,
             quick: bool = False) -> dict:
    """Run the README schedule with ``workers`` processes until ``deadline_s``; return the choices made."""
    import multiprocessing as mp

    t_start = time.time()
    out = Path(out)
    results = Results(out)
    ctx = mp.get_context("spawn")
    jobs_q, done_q = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(i, pack_path, device, jobs_q, done_q), daemon=True)
             for i in range(workers)]
    for pr in procs:
        pr.start()
    finished = results.done()
    sel: dict = {}
    pretrained: set = {p.name.split("-", 1)[1] for p in out.glob("pretrained-*") if (p / "config.json").exists()}
    queue = [j for j in readme_plan(out, sel, "sweep", quick)
             if not (j[0] == "pretrain" and Path(j[1]["save"]).name.split("-", 1)[1] in pretrained)
             and not (j[0] == "run" and RunSpec(**j[1]).key in finished)]
    stage, busy, n_ok, n_err = "sweep", 0, 0, 0
    busy_runs = {"n": 0}  # training runs in flight (pretraining may go on past the sweep)
    finished_rows = results.rows()  # kept in step with the results file as runs finish

    def remaining():
        return deadline_s - (time.time() - t_start)

    def expected_seconds(payload):
        """Median duration of finished runs of the same model and label fraction (a guess before any)."""
        same = [r["train_seconds"] for r in finished_rows if r["spec"]["model"] == payload.get("model")
                and r["spec"]["fraction"] == payload.get("fraction", 1.0) and r["steps"] == r["planned_steps"]]
        return float(np.median(same)) if same else 0.0

    while True:
        # move on from the sweep once all of its runs finished (pretraining may still be running)
        sweep_left = [j for j in queue if j[0] == "run"]
        if stage == "sweep" and not sweep_left and busy_runs["n"] == 0:
            rows = results.rows()
            sel = {"ecgnat": choose(rows, "ecgnat"), "resnet1d": choose(rows, "resnet1d")}
            (out / "choices.json").write_text(json.dumps(sel, indent=1))
            log(f"[{time.time() - t_start:5.0f}s] validation choices: {json.dumps(sel)}")
            finished = results.done()
            queue = [j for j in queue if j[0] == "pretrain"] + [
                j for j in readme_plan(out, sel, "main", quick) if RunSpec(**j[1]).key not in finished]
            stage = "main"
        # dispatch while workers are idle
        while busy < workers and queue and remaining() > 20:
            pick = None
            for i, (kind, payload) in enumerate(queue):
                need = payload.get("pretrained") if kind == "run" else None
                if need and Path(need).name.split("-", 1)[1] not in pretrained:
                    continue  # waits for its pretraining
                if kind == "run" and remaining() < 1.15 * expected_seconds(payload) + 15:
                    continue  # would be cut short: a truncated run is not a result
                pick = i
                break
            if pick is None:
                break
            kind, payload = queue.pop(pick)
            payload = dict(payload)
            if kind == "run":
                payload["max_seconds"] = max(10.0, remaining() - 25)
                busy_runs["n"] += 1
            else:
                payload["max_seconds"] = min(payload["max_seconds"], max(10.0, remaining() - 25))
            jobs_q.put((kind, payload))
            busy += 1
        if busy == 0 and (not queue or remaining() <= 20):
            break
        try:
            status, kind, key, row, preds = done_q.get(timeout=max(1.0, min(30.0, remaining())))
        except Exception:
            if remaining() <= 0:
                log(f"deadline reached with {busy} runs in flight: they are dropped")
                break
            continue
        busy -= 1
        if kind == "run":
            busy_runs["n"] -= 1
        if status == "ok":
            n_ok += 1
            if kind == "pretrain":
                pretrained.add(Path(key).name.split("-", 1)[1])
                (out / f"{Path(key).name}.json").write_text(json.dumps(row))
                log(f"[{time.time() - t_start:5.0f}s] {row['key']}: {row['steps']}/{row['planned_steps']} steps")
            else:
                results.add(row, preds)
                finished_rows.append(row)
                log(f"[{time.time() - t_start:5.0f}s] {key}: val {row['validation_auroc']:.4f}"
                    + (f" test {row['test_auroc']:.4f}" if "test_auroc" in row else "")
                    + f" steps {row['steps']}/{row['planned_steps']} {row['train_seconds']}s")
        else:
            n_err += 1
            log(f"[{time.time() - t_start:5.0f}s] FAILED {key}:\n{row}")
            if kind == "pretrain":  # the runs that start from it cannot run
                queue = [j for j in queue if j[1].get("pretrained") != key]
    for _ in procs:
        jobs_q.put(None)
    for pr in procs:
        pr.join(timeout=5)
        if pr.is_alive():
            pr.terminate()
    log(f"plan stopped after {time.time() - t_start:.0f}s: {n_ok} finished, {n_err} failed, {len(queue)} not started")
    return sel

def bundle(folder: str | os.PathLike, dest: str | os.PathLike, max_files: int = 7, max_mib: float = 15.5) -> list:
    """Pack a results folder into at most ``max_files`` tar.gz files of at most ``max_mib`` MiB each (what
    the GPU machine can send back): results first, then shipped checkpoints, then pretrained encoders."""
    import tarfile

    folder, dest = Path(folder), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    items = [p for p in sorted(folder.rglob("*")) if p.is_file()]

    def rank(p):
        rel = p.relative_to(folder).parts
        return (0 if rel[0] not in ("ship",) and not rel[0].startswith("pretrained-") else
                1 if rel[0] == "ship" else 2, str(p))

    items.sort(key=rank)
    bundles, sizes, left = [[]], [0.0], []
    for p in items:
        mib = p.stat().st_size / 2**20
        if sizes[-1] + mib > max_mib and bundles[-1]:
            if len(bundles) == max_files:
                left.append(str(p.relative_to(folder)))
                continue
            bundles.append([])
            sizes.append(0.0)
        bundles[-1].append(p)
        sizes[-1] += mib
    written = []
    for i, files in enumerate(bundles):
        target = dest / f"bundle{i}.tar.gz"
        with tarfile.open(target, "w:gz") as tar:
            for p in files:
                tar.add(p, arcname=str(p.relative_to(folder)))
        written.append(target)
    if left:
        (dest / "not_sent.txt").write_text("\n".join(left))
    return written



# ------------------------------------------------------------------------------------- shipping checkpoints
PUBLISHED = {  # Strodthoff et al. 2020 (fold 10), ../shared/notes/anchors.md
    "resnet1d_wang": {"all": .919, "diagnostic": .936, "subdiagnostic": .928, "superdiagnostic": .930, "form": .880,
                      "rhythm": .946},
    "xresnet1d101": {"all": .925, "diagnostic": .937, "subdiagnostic": .929, "superdiagnostic": .928, "form": .896,
                     "rhythm": .957},
}


def fold_records(data_dir: str | os.PathLike, task: str, folds) -> tuple[list[Path], np.ndarray, list[str]]:
    """Paths, multi-hot labels and classes of the records of ``folds`` labelled for ``task`` (from the pack)."""
    import pandas as pd

    d = Path(data_dir)
    data = load_pack(d)
    idx = data.split(task, folds)
    df = pd.read_csv(d / "ptbxl_database.csv", index_col="ecg_id")
    paths = [d / df.loc[int(e), "filename_lr"] for e in data.ecg_id[idx]]
    return paths, data.labels[task][idx], list(data.classes[task])


def score_checkpoint(folder, data_dir, task: str, folds=(9,), progress: bool = False) -> tuple[float, np.ndarray, np.ndarray]:
    """Macro AUROC of a checkpoint on the original WFDB records of ``folds``, through the user's path
    (:func:`ecgnat_hf.inference.predict_records`: the checkpoint's own feature extractor and windows)."""
    from ecgnat_hf.inference import predict_records
    from ecgnat_hf.metrics.comparison import macro_auroc as _macro

    paths, y, classes = fold_records(data_dir, task, folds)
    df = predict_records(str(folder), paths, progress=progress, quality_fn=False)
    if df.attrs.get("errors"):
        raise RuntimeError(f"{folder}: {len(df.attrs['errors'])} records failed, e.g. {df.attrs['errors'][0]}")
    probs = df[classes].to_numpy(dtype=np.float64)
    return _macro(y, probs), probs, y


def ship(results_dir, data_dir, output_root="checkpoints", names=None, progress: bool = True) -> list[Path]:
    """Turn the GPU run's ``ship/*`` weights into hub-ready folders: the feature extractor the run trained
    with, decision thresholds fitted on fold 9 (the benchmark's validation fold, scored here on the original
    records), and a model card with the run's figures and command."""
    from transformers import AutoModelForSequenceClassification

    import ecgnat_hf  # noqa: F401  (registers the Auto classes)
    from ecgnat_hf.models.ecgnat import ECGNATFeatureExtractor
    from ecgnat_hf.training.hub import save_hub_ready
    from ecgnat_hf.training.thresholds import attach_decision_thresholds

    results = Results(results_dir)
    rows = {Path(r["spec"]["save"]).name: r for r in results.rows() if r.get("spec", {}).get("save")}
    written = []
    for name, row in sorted(rows.items()):
        if names and name not in names:
            continue
        spec = RunSpec(**row["spec"])
        src = Path(results_dir) / "ship" / name
        if not src.is_dir() and Path(spec.save).is_dir():
            src = Path(spec.save)
        if spec.protocol == "dev":
            written.append(_ship_dev(row, spec, src, name, data_dir, output_root, progress))
            continue
        fe = ECGNATFeatureExtractor(sampling_rate=RATE, window_s=spec.window_s, window_stride_s=spec.window_s / 2,
                                    mode="window", scaling="center")
        model = AutoModelForSequenceClassification.from_pretrained(src).eval()
        tmp = Path(results_dir) / f".score-{name}"
        model.save_pretrained(tmp)
        fe.save_pretrained(tmp)
        auroc, probs, y = score_checkpoint(tmp, data_dir, spec.task, (9,), progress=progress)
        attach_decision_thresholds(model, (probs, y), row["classes"], "multi_label_classification")
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if row["device"].startswith("cuda"):
            train_cmd = "python benchmarks/ptbxl.py plan --data_dir ptbxl_q20.xz --results runs  # the GPU schedule"
        else:
            train_cmd = (f"python benchmarks/ptbxl.py run --data_dir PTBXL_DIR --results runs --protocol ship "
                         f"--tasks {spec.task} --models {spec.model} --init {spec.init}"
                         + _pretrained_arg(spec)
                         + f" --window_s {spec.window_s:g} --lr {spec.lr:g} --epochs {spec.epochs} --batch_size "
                         f"{spec.batch_size} --eval_every {spec.eval_every} --seeds {spec.seed}{_overrides_arg(spec)} "
                         f"--save runs/ship/{name}")
        command = f"{train_cmd}\npython benchmarks/ptbxl.py ship --results runs --data_dir PTBXL_DIR --names {name}"
        published = {k: v[spec.task] for k, v in PUBLISHED.items()}
        section = (
            f"Trained on PTB-XL folds 1-8 ({row['n_train']} records with a {spec.task} label), weights chosen on "
            f"fold 9 ({row['n_validation']} records), as the benchmark of Strodthoff et al. (2020) does; its test "
            f"fold 10 was never seen, so this checkpoint's fold-10 figure can be compared with the published rows "
            f"({', '.join(f'{k} {v:.3f}' for k, v in published.items())}).\n\n"
            f"- fold-9 macro AUROC on the original records: **{auroc:.4f}** (this is the validation fold: the "
            f"weights and the decision thresholds were chosen on it, so it is optimistic).\n"
            f"- trained on {row['device']} in {row['train_seconds']} s, {row['steps']} steps of batch "
            f"{row['batch_size']}, random {spec.window_s:g} s crops; inference averages {spec.window_s:g} s windows "
            f"with a {spec.window_s / 2:g} s hop.\n"
            + (f"- training inputs were quantized to {row['quantized_uv']:g} uV to fit the GPU machine's transfer "
               f"limit; the figure above is on the original signals.\n" if row.get("quantized_uv") else ""))
        out = save_hub_ready(
            model, fe, Path(output_root) / name,
            eval_results={"validation": {"macro_auroc": round(auroc, 4), "n_records": len(y)}},
            card_kwargs=dict(kind="finetuned", model_name=name, task_name=f"PTB-XL {spec.task}",
                             dataset_name="PTB-XL", command=command, training_args=asdict(spec),
                             default_split="validation", extra_sections={"PTB-XL benchmark": section}),
            run_arguments=asdict(spec),
            extra_files={"ptbxl_benchmark.json": {"task": spec.task, "fold9_macro_auroc": round(auroc, 4),
                                                  "n_fold9_records": len(y), "train_folds": [1, 2, 3, 4, 5, 6, 7, 8],
                                                  "validation_folds": [9], "published_fold10": published,
                                                  "gpu_validation_auroc": row["validation_auroc"]}})
        print(f"{out}: fold-9 macro AUROC {auroc:.4f} (the training run scored {row['validation_auroc']:.4f})")
        written.append(out)
    return written

def _ship_dev(row, spec, src, name, data_dir, output_root, progress) -> Path:
    """A hub-ready folder from a development-protocol run (folds 1-7 train, fold 8 validation, fold 9 test): the
    decision thresholds are fitted on fold 8 and fold 9 is scored once more, on the original records, as the
    card's test figure (the run itself read it once; the two must agree)."""
    import shutil

    from transformers import AutoModelForSequenceClassification

    import ecgnat_hf  # noqa: F401  (registers the Auto classes)
    from ecgnat_hf.models.ecgnat import ECGNATFeatureExtractor
    from ecgnat_hf.training.hub import save_hub_ready
    from ecgnat_hf.training.thresholds import attach_decision_thresholds

    fe = ECGNATFeatureExtractor(sampling_rate=RATE, window_s=spec.window_s, window_stride_s=spec.window_s / 2,
                                mode="window", scaling="center")
    model = AutoModelForSequenceClassification.from_pretrained(src).eval()
    tmp = Path(src).parent / f".score-{name}"
    model.save_pretrained(tmp)
    fe.save_pretrained(tmp)
    val_auroc, probs, y = score_checkpoint(tmp, data_dir, spec.task, (8,), progress=progress)
    test_auroc, _, y9 = score_checkpoint(tmp, data_dir, spec.task, (9,), progress=progress)
    shutil.rmtree(tmp, ignore_errors=True)
    if abs(test_auroc - row["test_auroc"]) > 2e-3:
        raise RuntimeError(f"{name}: fold 9 scores {test_auroc:.4f} here but {row['test_auroc']:.4f} in the run")
    attach_decision_thresholds(model, (probs, y), row["classes"], "multi_label_classification")
    pre = _pretrained_arg(spec)
    command = (f"python benchmarks/ptbxl.py run --data_dir PTBXL_DIR --results runs --protocol dev --tasks {spec.task} "
               f"--models {spec.model} --init {spec.init}{pre} --window_s {spec.window_s:g} --lr {spec.lr:g} "
               f"--epochs {spec.epochs} --min_steps {spec.min_steps} --batch_size {spec.batch_size} "
               f"--eval_every {spec.eval_every} --seeds {spec.seed}{_overrides_arg(spec)} --save runs/save/{name}\n"
               f"python benchmarks/ptbxl.py ship --results runs --data_dir PTBXL_DIR --names {name}")
    published = {k: v[spec.task] for k, v in PUBLISHED.items()}
    section = (
        f"Trained on PTB-XL folds 1-7 ({row['n_train']} records with a {spec.task} label); the weights kept and the "
        f"decision thresholds were chosen on fold 8 ({row['n_validation']} records); fold 9 ({len(y9)} records) is "
        f"the test fold, read once. Fold 10, the benchmark's test fold, was never seen.\n\n"
        f"- fold-9 (test) macro AUROC on the original records: **{test_auroc:.4f}**; fold 8 (validation): "
        f"{val_auroc:.4f}.\n"
        f"- trained on {row['device']} in {row['train_seconds']} s, {row['steps']} steps of batch {row['batch_size']}, "
        f"random {spec.window_s:g} s crops; inference averages {spec.window_s:g} s windows with a "
        f"{spec.window_s / 2:g} s hop.\n"
        f"- published rows on fold 10, for context only: "
        f"{', '.join(f'{k} {v:.3f}' for k, v in published.items())}.\n")
    out = save_hub_ready(
        model, fe, Path(output_root) / name,
        eval_results={"validation": {"macro_auroc": round(val_auroc, 4), "n_records": len(y)},
                      "test": {"macro_auroc": round(test_auroc, 4), "n_records": len(y9)}},
        card_kwargs=dict(kind="finetuned", model_name=name, task_name=f"PTB-XL {spec.task}",
                         dataset_name="PTB-XL", command=command, training_args=asdict(spec),
                         default_split="test", extra_sections={"PTB-XL benchmark": section}),
        run_arguments=asdict(spec),
        extra_files={"ptbxl_benchmark.json": {"task": spec.task, "fold9_macro_auroc": round(test_auroc, 4),
                                              "fold8_macro_auroc": round(val_auroc, 4), "n_fold9_records": len(y9),
                                              "train_folds": [1, 2, 3, 4, 5, 6, 7], "validation_folds": [8],
                                              "test_folds": [9], "published_fold10": published}})
    print(f"{out}: fold-9 (test) macro AUROC {test_auroc:.4f}, fold 8 {val_auroc:.4f}")
    return out


def markdown_report(results: Results, pack: Pack, n_boot: int = 1000) -> str:
    """The README's tables from a results folder (dev protocol: test fold 9, weights chosen on fold 8)."""
    from collections import defaultdict

    rows = [r for r in results.rows() if r.get("spec", {}).get("protocol") == "dev" and "test_auroc" in r
            and r["steps"] == r["planned_steps"]]  # a run cut short by a deadline is not a result
    arms = defaultdict(list)
    for r in rows:
        s = r["spec"]
        arms[(s["task"], s["model"] + _epochs_note(s), s["init"] if s["model"].startswith("ecgnat") else "scratch",
              s["fraction"])].append(r)

    def fmt(rs, key="test_auroc"):
        v = np.array([r[key] for r in rs])
        return f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else "") + f" ({len(v)})"

    def diff(task, a, b):
        ka = sorted(r["key"] for r in arms[a])
        kb = sorted(r["key"] for r in arms[b])
        seeds = sorted({r["spec"]["seed"] for r in arms[a]} & {r["spec"]["seed"] for r in arms[b]})
        ka = [r["key"] for r in arms[a] if r["spec"]["seed"] in seeds]
        kb = [r["key"] for r in arms[b] if r["spec"]["seed"] in seeds]
        if not ka or not kb:
            return "n/a"
        d = paired(results, pack, ka, kb, task, n_boot=n_boot)
        return f"{d['difference']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"

    counts = defaultdict(int)
    for k, rs in arms.items():
        if k[1].startswith("ecgnat") and k[2] == "pretrained":
            counts[k[1]] += len(rs) + 100 * (k[3] == 1.0)  # the preset with full-label runs, then the most runs
    main_nat = max(counts, key=counts.get) if counts else None
    out = ["| task | ECG-NAT (" + str(main_nat) + ", pretrained) | ResNet1d | ECG-NAT − ResNet1d, 95% CI | "
           "published resnet1d_wang / xresnet1d101 (fold 10) |", "|---|---|---|---|---|"]
    for task in TASKS:
        a, b = (task, main_nat, "pretrained", 1.0), (task, "resnet1d", "scratch", 1.0)
        if not arms.get(a) or not arms.get(b):
            continue
        out.append(f"| {task} | {fmt(arms[a])} | {fmt(arms[b])} | {diff(task, a, b)} | "
                   f"{PUBLISHED['resnet1d_wang'][task]:.3f} / {PUBLISHED['xresnet1d101'][task]:.3f} |")
    out += ["", "| superdiagnostic, labels | ECG-NAT pretrained | ECG-NAT scratch | ResNet1d | linear probe | "
            "pretrained − scratch | pretrained − ResNet1d |", "|---|---|---|---|---|---|---|"]
    for f in (0.01, 0.1, 1.0):
        pre, scr = ("superdiagnostic", main_nat, "pretrained", f), ("superdiagnostic", main_nat, "scratch", f)
        res, probe = ("superdiagnostic", "resnet1d", "scratch", f), ("superdiagnostic", main_nat, "probe", f)
        cell = lambda k: fmt(arms[k]) if arms.get(k) else "–"  # noqa: E731
        n = arms[pre][0]["n_train"] if arms.get(pre) else "?"
        out.append(f"| {f:.0%} ({n} records) | {cell(pre)} | {cell(scr)} | {cell(res)} | {cell(probe)} | "
                   f"{diff('superdiagnostic', pre, scr) if arms.get(scr) and arms.get(pre) else '–'} | "
                   f"{diff('superdiagnostic', pre, res) if arms.get(res) and arms.get(pre) else '–'} |")
    sub_rows = [("superdiagnostic", main_nat, "pretrained", 1.0), ("superdiagnostic", "resnet1d", "scratch", 1.0)]
    if all(arms.get(k) and "test_auroc_I" in arms[k][0] for k in sub_rows):
        out += ["", "| leads (one 12-lead checkpoint) | " + " | ".join(LEAD_SUBSETS) + " |",
                "|---|" + "---|" * len(LEAD_SUBSETS)]
        for k, name in zip(sub_rows, (f"ECG-NAT {main_nat}", "ResNet1d (missing leads zeroed)")):
            out.append(f"| {name} | " + " | ".join(fmt(arms[k], f"test_auroc_{s}") for s in LEAD_SUBSETS) + " |")
    out += ["", "| model (superdiagnostic, 100%) | parameters | test macro AUROC | validation | train time (s) |",
            "|---|---|---|---|---|"]
    for k in sorted(arms):
        if k[0] == "superdiagnostic" and k[3] == 1.0 and k[2] != "probe":
            rs = arms[k]
            out.append(f"| {k[1]} ({k[2]}) | {rs[0]['n_params'] / 1e6:.2f} M | {fmt(rs)} | "
                       f"{np.mean([r['validation_auroc'] for r in rs]):.3f} | "
                       f"{np.mean([r['train_seconds'] for r in rs]):.0f} |")
    return "\n".join(out) + "\n"


def ship_pretrained(results_dir, preset: str, output_root="checkpoints") -> Path:
    """The masked-pretraining encoder of the plan (all 19,601 records, labels unused) as a hub-ready folder."""
    from ecgnat_hf.models.ecgnat import ECGNATFeatureExtractor, ECGNATForPreTraining
    from ecgnat_hf.training.hub import save_hub_ready

    src = Path(results_dir) / f"pretrained-{preset}"
    info = json.loads((Path(results_dir) / f"pretrained-{preset}.json").read_text())
    model = ECGNATForPreTraining.from_pretrained(src)
    fe = ECGNATFeatureExtractor(sampling_rate=RATE, window_s=RECORD_SAMPLES / RATE, mode="window", scaling="center")
    name = f"ecgnat-{preset}-ptbxl-pretrained"
    cut = info["steps"] < info["planned_steps"]
    section = (
        f"Masked-reconstruction pretraining of ECG-NAT `{preset}` (at 100 Hz) on all {info['records']:,} records of "
        f"PTB-XL folds 1-9, labels unused, whole 10 s records, on {info['device']} for {info['seconds']:.0f} s: "
        f"{info['steps']} steps of batch 256 at peak learning rate {info['lr']:g}"
        + (f" (the schedule was planned for {info['planned_steps']} steps and stopped at its time budget, so the "
           "learning rate had not decayed: a longer run is the obvious next step)" if cut else "")
        + f". Final reconstruction loss {info['loss'][-1][1]:.4f}. Inputs were quantized to "
        f"{info['quantized_uv']:g} uV for the transfer to the GPU machine. Fine-tune it with "
        f"`ecgnat finetune --model_name_or_path checkpoints/{name} ...`; the full-PTB-XL label-efficiency figures "
        "that start from it are in docs/ptbxl.md.")
    out = save_hub_ready(model, fe, Path(output_root) / name, eval_results={},
                         card_kwargs=dict(kind="pretrained", model_name=name, task_name="masked ECG reconstruction",
                                          dataset_name="PTB-XL", training_args=info | {"loss": info["loss"][-3:]},
                                          command="python benchmarks/ptbxl.py plan --data_dir ptbxl_q20.xz --results runs",
                                          extra_sections={"Pretraining on full PTB-XL": section}))
    print(f"{out}: pretrained encoder ({info['steps']} steps)")
    return out


# -------------------------------------------------------------------------------------------------- CLI
def _floats(text):
    return [float(v) for v in str(text).split(",") if v.strip()]


def _ints(text):
    return [int(v) for v in str(text).split(",") if v.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help="read PTB-XL once into DATA_DIR/ecgnat_pack.npz")
    pk.add_argument("--data_dir", required=True)
    pk.add_argument("--output")
    pk.add_argument("--transport", help="also write the compact quantized form (for a GPU machine) here")
    pk.add_argument("--q_uv", type=int, default=20)
    rn = sub.add_parser("run", help="train and score task x model x fraction x seed (resumable)")
    rn.add_argument("--data_dir", required=True, help="a PTB-XL folder with its pack, or a .npz / .xz pack")
    rn.add_argument("--results", required=True)
    rn.add_argument("--tasks", default="superdiagnostic")
    rn.add_argument("--models", default="ecgnat-tiny,resnet1d")
    rn.add_argument("--init", default="scratch", choices=("scratch", "pretrained", "probe"))
    rn.add_argument("--pretrained")
    rn.add_argument("--fractions", default="1.0")
    rn.add_argument("--seeds", default="0")
    rn.add_argument("--protocol", default="dev", choices=sorted(PROTOCOLS))
    rn.add_argument("--window_s", type=float, default=2.5)
    rn.add_argument("--lr", type=float, default=1e-3)
    rn.add_argument("--epochs", type=int, default=30)
    rn.add_argument("--min_steps", type=int, default=600)
    rn.add_argument("--batch_size", type=int, default=256)
    rn.add_argument("--eval_every", type=int, default=0, help="steps between validation scores (0: ~25 per run)")
    rn.add_argument("--save", help="save the trained weights here (one run only)")
    rn.add_argument("--overrides", default="",
                    help="ECG-NAT config changes as JSON, e.g. '{\"supcon_weight\": 0}' (the run is an arm of its own)")
    rn.add_argument("--validation_only", action="store_true",
                    help="a sweep run: score the validation fold only, never read the test fold")
    rn.add_argument("--lead_subsets", action="store_true")
    rn.add_argument("--device")
    rp = sub.add_parser("report", help="means over seeds and paired intervals from a results folder")
    rp.add_argument("--results", required=True)
    rp.add_argument("--protocol", default="dev")
    rp.add_argument("--markdown", help="also write the README tables (needs --data_dir for the labels)")
    rp.add_argument("--data_dir", help="the pack, for paired intervals")
    pl = sub.add_parser("plan", help="the README's whole schedule with worker processes (GPU)")
    pl.add_argument("--data_dir", required=True, help="pack (.npz or transport .xz)")
    pl.add_argument("--results", required=True)
    pl.add_argument("--workers", type=int, default=8)
    pl.add_argument("--deadline_s", type=float, default=540.0)
    pl.add_argument("--device")
    pl.add_argument("--quick", action="store_true", help="a few steps per run: checks the machinery")
    pl.add_argument("--bundle_to", help="pack the results folder into a few tar.gz files here at the end")
    sh = sub.add_parser("ship", help="hub-ready checkpoints from a plan's ship/ weights, scored on fold 9")
    sh.add_argument("--results", required=True)
    sh.add_argument("--data_dir", required=True, help="the restored PTB-XL folder (original records)")
    sh.add_argument("--output_root", default="checkpoints")
    sh.add_argument("--names", help="comma list of checkpoint names (default: all)")
    sh.add_argument("--pretrained", help="also ship the plan's pretrained encoder of this preset (e.g. tiny)")
    args = p.parse_args(argv)

    if args.cmd == "pack":
        out = pack(args.data_dir, args.output)
        print(f"wrote {out}")
        if args.transport:
            Path(args.transport).write_bytes(encode_transport(out, args.q_uv))
            print(f"wrote {args.transport} ({Path(args.transport).stat().st_size / 2**20:.1f} MiB)")
        return 0
    if args.cmd == "ship":
        ship(args.results, args.data_dir, args.output_root, args.names.split(",") if args.names else None)
        if args.pretrained:
            ship_pretrained(args.results, args.pretrained, args.output_root)
        return 0
    if args.cmd == "plan":
        src = Path(args.data_dir)
        if src.suffix == ".xz":  # decode once; workers load the plain pack
            data = decode_transport(src.read_bytes())
            plain = Path(args.results) / "_pack.npz"
            plain.parent.mkdir(parents=True, exist_ok=True)
            meta = json.dumps({"tasks": data.classes, "sampling_rate": RATE, "quantized_uv": data.quantized_uv})
            np.savez(plain, ecg_id=data.ecg_id, fold=data.fold, lead_mask=data.lead_mask,
                     signal_uv=np.round(data.signal * 1000).astype(np.int16), meta=np.asarray(meta),
                     **{f"y_{t}": y for t, y in data.labels.items()})
            src = plain
        try:
            run_plan(str(src), args.results, workers=args.workers, deadline_s=args.deadline_s, device=args.device,
                     log=lambda m: print(m, flush=True), quick=args.quick)
        finally:
            if src.name == "_pack.npz":
                src.unlink(missing_ok=True)
            if args.bundle_to:
                for b in bundle(args.results, args.bundle_to, max_files=6):
                    print(f"bundled {b} ({b.stat().st_size / 2**20:.1f} MiB)", flush=True)
        return 0
    if args.cmd == "run":
        src = Path(args.data_dir)
        if src.is_dir() and not (src / PACK_NAME).exists():
            print(f"packing {src} first (once)", file=sys.stderr)
            pack(src)
        data = load_pack(src)
        specs = [RunSpec(task=t, model=m, fraction=f, seed=s, protocol=args.protocol,
                         init=args.init if m.startswith("ecgnat") else "scratch", pretrained=args.pretrained,
                         window_s=args.window_s, lr=args.lr, epochs=args.epochs, min_steps=args.min_steps,
                         batch_size=args.batch_size, lead_subsets=args.lead_subsets, eval_every=args.eval_every,
                         save=args.save, overrides=args.overrides, score_test=not args.validation_only)
                 for t in args.tasks.split(",") for m in args.models.split(",")
                 for f in _floats(args.fractions) for s in _ints(args.seeds)]
        run_many(specs, data, Results(args.results), args.device)
        args.cmd, args.protocol = "report", args.protocol
    if args.cmd == "report":
        res = Results(args.results)
        summary = summarize(res, args.protocol)
        for row in summary["table"]:
            print(f"{row['task']:16s} {row['model']:28s} {row['fraction']:>5g}  test {row['test_mean']:.4f}"
                  f" ± {row['test_sd']:.4f} (seeds {row['seeds']})  val {row['validation_mean']:.4f}")
        if getattr(args, "markdown", None):
            text = markdown_report(res, load_pack(args.data_dir))
            Path(args.markdown).write_text(text)
            print(text)
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
