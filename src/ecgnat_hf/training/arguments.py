"""Argument dataclasses of the recipes, parsed with ``transformers.HfArgumentParser``.

Every recipe parses ``(ModelArguments, DataArguments, TrainingArguments)`` (plus one recipe-specific
dataclass for ``evaluate`` and ``label_efficiency``) from the command line, or from one ``.json`` /
``.yaml`` file as in the transformers example scripts. Command-line flags given after the file
override its values::

    python recipes/finetune.py recipes/configs/tiny_sample_finetune.yaml --max_steps 20

:func:`parse_recipe_args` does this and also fills recipe-specific defaults for ``TrainingArguments``
(``report_to="none"``, epoch-wise evaluation with the best checkpoint kept, ...): a default is only
used when neither the file nor the command line sets that field.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

__all__ = [
    "ModelArguments",
    "DataArguments",
    "EvaluationArguments",
    "LabelEfficiencyArguments",
    "LEAD_SUBSETS",
    "parse_int_list",
    "parse_float_list",
    "parse_lead_subset",
    "parse_recipe_args",
    "arguments_to_dict",
]

#: lead subsets used by the per-lead-subset evaluation (names -> leads; canonical spelling)
LEAD_SUBSETS: dict[str, tuple[str, ...]] = {
    "12-lead": ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"),
    "6-limb": ("I", "II", "III", "aVR", "aVL", "aVF"),
    "I+II": ("I", "II"),
    "II": ("II",),
    "I": ("I",),
}
_SUBSET_ALIASES = {"12": "12-lead", "all": "12-lead", "limb": "6-limb", "6": "6-limb", "limb6": "6-limb",
                   "i,ii": "I+II", "i+ii": "I+II"}


def parse_int_list(value: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"1,2,3"`` / ``"1-8"`` / ``[1, 2]`` -> ``(1, 2, 3)``; ``None`` or ``""`` -> ``None``."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    out: list[int] = []
    for part in str(value).replace(" ", "").split(","):
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return tuple(out)


def parse_float_list(value: str | Sequence[float] | None) -> tuple[float, ...]:
    """``"0.1,0.25"``, a sequence of numbers or ``None``/``""`` as a tuple of floats (empty for none)."""
    if value is None or value == "":
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(float(v) for v in value)
    return tuple(float(v) for v in str(value).replace(" ", "").split(",") if v)


def parse_lead_subset(value: str | None) -> tuple[str, tuple[str, ...]] | None:
    """A lead subset by name (``"6-limb"``, ``"I+II"``, ``"II"``, ``"12-lead"``) or as a comma list of lead
    names (``"I,II,V2"``; aliases such as ``MLII`` accepted) -> ``(name, leads)``; ``None`` -> ``None``."""
    if value is None or str(value).strip() == "":
        return None
    key = str(value).strip()
    key = _SUBSET_ALIASES.get(key.lower(), key)
    if key in LEAD_SUBSETS:
        return key, LEAD_SUBSETS[key]
    from ..models.ecgnat.feature_extraction_ecgnat import normalize_lead_name

    leads = tuple(normalize_lead_name(v) for v in key.replace("+", ",").split(",") if v.strip())
    if not leads:
        raise ValueError(f"empty lead subset {value!r}")
    return "+".join(leads), leads


@dataclass
class ModelArguments:
    """Which model to train or evaluate."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Checkpoint folder or hub id to start from (a pretraining checkpoint keeps its encoder). "
                          "None: a new model from --preset (ECG-NAT) or the default ResNet1d config."},
    )
    model_type: str = field(default="ecgnat", metadata={"help": "ecgnat, resnet1d (the 1-D ResNet comparison baseline) or beatnet (BEAT-Net: heartbeats as tokens)."})
    preset: str = field(default="tiny", metadata={"help": "ECG-NAT size preset for new models: tiny, small or base."})
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Extra config values for a new model, 'key=value,key=value' (values parsed as JSON when possible), "
                          "e.g. 'drop_path_rate=0.0,hidden_sizes=[32,64,128]'."},
    )
    freeze_encoder: bool = field(default=False, metadata={"help": "Train the head only (requires_grad=False on the encoder)."})
    layer_decay: float = field(
        default=1.0,
        metadata={"help": "Fine-tuning ECG-NAT: layer-wise learning-rate decay. The head learns at --learning_rate and each "
                          "encoder layer below at layer_decay times the rate of the one above (stem lowest); 1 = off. "
                          "Label efficiency applies it to the pretrained arm only."},
    )
    supcon_weight: float | None = field(default=None, metadata={"help": "Weight of the supervised-contrastive loss (ECG-NAT); None keeps the config's."})
    supcon_temperature: float | None = field(default=None, metadata={"help": "Temperature of the supervised-contrastive loss."})
    lead_mask_prob: float | None = field(default=None, metadata={"help": "Pretraining: probability of hiding each lead from the encoder."})
    mask_ratio: float | None = field(default=None, metadata={"help": "Pretraining: fraction of masked time units."})
    global_loss_weight: float | None = field(default=None, metadata={"help": "Pretraining: weight of the global segment-contrast (CMSC) term; 0 disables."})
    drop_path_rate: float | None = field(default=None, metadata={"help": "Stochastic depth rate (ECG-NAT)."})
    classifier_dropout: float | None = field(default=None, metadata={"help": "Dropout before the classification head."})
    attn_implementation: str | None = field(default=None, metadata={"help": "Neighborhood-attention backend: auto, na_torch or natten."})
    num_threads: int | None = field(
        default=None,
        metadata={"help": "torch intra-op threads; default: CPU cores divided by the number of local processes."},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow remote code when loading --model_name_or_path from the hub."})

    def __post_init__(self):
        self.model_type = self.model_type.lower().replace("-", "").replace("_", "")
        if self.model_type not in ("ecgnat", "resnet1d", "beatnet"):
            raise ValueError(f"--model_type must be 'ecgnat', 'resnet1d' or 'beatnet', got {self.model_type!r}")
        if not 0 < self.layer_decay <= 1:  # NaN fails too
            raise ValueError(f"--layer_decay must be in (0, 1] (1 = off), got {self.layer_decay!r}")

    def overrides(self) -> dict[str, Any]:
        """Config values set by these arguments (explicit fields and --config_overrides)."""
        out: dict[str, Any] = {}
        if self.config_overrides:
            for item in _split_top_level(self.config_overrides):
                if "=" not in item:
                    raise ValueError(f"--config_overrides item {item!r} is not key=value")
                k, v = item.split("=", 1)
                try:
                    out[k.strip()] = json.loads(v)
                except json.JSONDecodeError:
                    out[k.strip()] = v.strip()
        for name in ("supcon_weight", "supcon_temperature", "lead_mask_prob", "mask_ratio", "global_loss_weight",
                     "drop_path_rate", "classifier_dropout"):
            v = getattr(self, name)
            if v is not None:
                out[name] = v
        return out


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets (so list values survive)."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


@dataclass
class DataArguments:
    """Which data, which splits, how much of it."""

    dataset: str = field(default="sample", metadata={"help": "sample (bundled PTB-XL 100 Hz subset), ptbxl, challenge, folder, mimic-iv-ecg, "
                                                                "code15, or store (a folder written by `ecgnat prepare`)."})
    data_dir: str | None = field(default=None, metadata={"help": "Folder of the data (not needed for 'sample')."})
    task: str = field(default="superdiagnostic", metadata={"help": "PTB-XL task: all, diagnostic, subdiagnostic, superdiagnostic, form, rhythm."})
    sampling_rate: int | None = field(
        default=None,
        metadata={"help": "PTB-XL: which release to read, 100 or 500 Hz (default: 100 for a <=100 Hz model, else 500). "
                          "The feature extractor resamples to the model's rate either way."},
    )
    train_folds: str | None = field(default=None, metadata={"help": "PTB-XL folds for training, e.g. '1-8' (sample: '1-7')."})
    validation_folds: str | None = field(default=None, metadata={"help": "PTB-XL validation folds (default 9; sample: 8); 'none' for no validation split."})
    test_folds: str | None = field(default=None, metadata={"help": "PTB-XL test folds (default 10; sample: 9)."})
    labels_csv: str | None = field(default=None, metadata={"help": "folder: labels CSV (see ECGFolder); none -> unlabelled."})
    label_type: str = field(default="multi_label", metadata={"help": "folder: multi_label or single_label."})
    challenge_sources: str | None = field(default=None, metadata={"help": "challenge: comma list of sources to keep (e.g. 'Georgia,PTB-XL')."})
    validation_fraction: float = field(default=0.1, metadata={"help": "folder/challenge/mimic-iv-ecg/code15: fraction held out for validation (the corpora: of subjects / patients)."})
    test_fraction: float = field(default=0.1, metadata={"help": "folder/challenge/mimic-iv-ecg/code15: fraction held out for test (the corpora: of subjects / patients)."})
    split_seed: int = field(default=0, metadata={"help": "Seed of random splits (folder/challenge; the subject / patient hash of mimic-iv-ecg/code15)."})
    max_records: int | None = field(default=None, metadata={"help": "Read only the first N records of the source (quick runs)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training examples (after label_fraction)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N validation examples."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Keep the first N test examples."})
    label_fraction: float = field(default=1.0, metadata={"help": "Fraction of training labels used, stratified (e.g. 0.01, 0.1, 1.0)."})
    label_fraction_seed: int = field(default=0, metadata={"help": "Seed of the stratified label-fraction subsample."})
    leads: str | None = field(
        default=None,
        metadata={"help": "Train/evaluate on a lead subset: a name (6-limb, I+II, II, I, 12-lead) or comma list of leads. "
                          "Absent leads are zeroed and masked."},
    )
    lead_names: str | None = field(
        default=None,
        metadata={"help": "Name the channels of the records: a mapping 'ECG=I' / 'ECG1=I,ECG2=II' (channels called like a "
                          "key get that lead; e.g. the PhysioNet/CinC 2017 recordings name their single lead 'ECG'), or a comma "
                          "list 'I,II' giving every record's channels in order (for records whose files name none: ch0, ch1...). "
                          "Records the naming leaves without a lead the model takes are left out and reported."},
    )
    empty_labels: str = field(
        default="error",
        metadata={"help": "folder: what an empty label cell means: error (default), negative (no label / 0) or skip (leave the record out)."},
    )
    duplicate_rows: str = field(
        default="error",
        metadata={"help": "folder: conflicting rows for one record in the labels CSV: error (default), first, last or skip."},
    )
    labels_encoding: str = field(default="utf-8", metadata={"help": "folder: text encoding of the labels CSV (e.g. latin-1)."})
    window_s: float = field(default=10.0, metadata={"help": "Example length in seconds (records are cropped from the start / padded)."})
    scaling: str = field(
        default="center",
        metadata={"help": "Feature-extractor scaling of a new checkpoint (a checkpoint's own extractor keeps its scaling): "
                  "center (default: per-lead mean removed, mV kept, so amplitudes and their ratios across leads "
                  "survive), standardize (per-lead z-score), robust, none, or a number of mV."},
    )
    pretrain_windows: bool = field(
        default=True, metadata={"help": "Pretraining: a random window of each record every epoch, so a long record is "
                                   "seen over its whole length across epochs (false: always its first window)."}
    )
    extra_sources: list[str] = field(
        default_factory=list,
        metadata={"help": "Pretraining: more unlabelled sources, 'kind:path' with kind ptbxl, challenge, folder, sample, mimic-iv-ecg "
                          "or code15 "
                          "(e.g. challenge:/data/cinc2021 folder:/data/holter)."},
    )
    source_weights: str | None = field(
        default=None,
        metadata={"help": "Pretraining from stores: relative share of each source in an epoch, '--dataset' first, then each "
                          "--extra_sources item (e.g. '1,2'). Default: every record once per epoch."},
    )
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache folder for prepared builders."})
    streaming: bool = field(
        default=False,
        metadata={"help": "Pretraining from stores: read them from another filesystem shard by shard through a bounded local "
                          "cache (--data_dir and store: sources may be fsspec URLs: hf://datasets/ORG/NAME/PATH, s3://..., "
                          "or local folders). See docs/scale.md."})
    stream_cache_dir: str | None = field(
        default=None, metadata={"help": "--streaming: local cache folder for fetched shards (default "
                                        "$ECGNAT_STREAM_CACHE or ~/.cache/ecgnat_hf/stream)."})
    stream_cache_gb: float = field(
        default=20.0, metadata={"help": "--streaming: most GB the cache folder may hold (it must hold one shard per "
                                        "reader on the machine: ranks x DataLoader workers, two with prefetch)."})
    stream_timeout_s: float = field(
        default=60.0, metadata={"help": "--streaming from http(s):// URLs: a connection or a read that stalls this many "
                                        "seconds fails (and is retried); other protocols use their library's timeouts."})
    stream_retries: int = field(
        default=3, metadata={"help": "--streaming: how many more times a fetch that failed on a network fault, timeout "
                                     "or server error is tried (pauses of 1, 2, 4... s) before the run stops with "
                                     "StoreFetchError naming the file."})

    def __post_init__(self):
        self.dataset = self.dataset.lower()
        if self.dataset not in ("sample", "ptbxl", "challenge", "folder", "mimic-iv-ecg", "code15", "store"):
            raise ValueError(f"--dataset must be sample, ptbxl, challenge, folder, mimic-iv-ecg, code15 or store, got {self.dataset!r}")
        if self.dataset in ("ptbxl", "challenge", "folder", "mimic-iv-ecg", "code15", "store") and not self.data_dir:
            raise ValueError(f"--dataset {self.dataset} needs --data_dir")
        if not 0.0 < self.label_fraction <= 1.0:
            raise ValueError(f"--label_fraction must be in (0, 1], got {self.label_fraction}")
        if isinstance(self.extra_sources, str):
            self.extra_sources = [self.extra_sources]
        # one quoted, space-separated argument ("challenge:/a folder:/b") or several: the same list
        self.extra_sources = [s for item in self.extra_sources for s in str(item).split() if s]
        for src in self.extra_sources:
            kind = src.split(":", 1)[0].lower()
            if kind not in ("ptbxl", "challenge", "folder", "sample", "mimic-iv-ecg", "code15", "store"):
                raise ValueError(f"--extra_sources item {src!r}: expected kind:path with kind ptbxl, challenge, folder, "
                                 "sample, mimic-iv-ecg, code15 or store")
        if isinstance(self.source_weights, str):
            try:
                self.source_weights = [float(w) for w in self.source_weights.replace(",", " ").split()]
            except ValueError:
                raise ValueError(f"--source_weights must be numbers, got {self.source_weights!r}") from None
        if self.source_weights:
            if len(self.source_weights) != 1 + len(self.extra_sources):
                raise ValueError(f"--source_weights gives {len(self.source_weights)} weight(s) for "
                                 f"{1 + len(self.extra_sources)} source(s) (--dataset, then each --extra_sources item)")
            if any(not w >= 0 for w in self.source_weights) or not sum(self.source_weights) > 0:
                raise ValueError(f"--source_weights must be >= 0 with a positive sum, got {self.source_weights}")
        if self.streaming:
            if self.dataset != "store" or any(not s.lower().startswith("store:") for s in self.extra_sources):
                raise ValueError("--streaming reads prepared stores: use --dataset store (and store:URL extra sources)")
            if self.source_weights:
                raise ValueError("--source_weights is not supported with --streaming (every record is read once per "
                                 "epoch); drop it, or copy the stores locally and train without --streaming")
            if not self.stream_cache_gb > 0:
                raise ValueError(f"--stream_cache_gb must be positive, got {self.stream_cache_gb}")
            if not self.stream_timeout_s > 0 or self.stream_retries < 0:
                raise ValueError(f"--stream_timeout_s must be positive and --stream_retries >= 0, got "
                                 f"{self.stream_timeout_s} and {self.stream_retries}")
        parse_lead_subset(self.leads)  # validate early
        from ..data.labels import DUPLICATE_ROW_POLICIES, EMPTY_LABEL_POLICIES
        from ..data.leads import parse_lead_names

        parse_lead_names(self.lead_names)  # LeadNameError (a ValueError) for a bad target lead
        if self.empty_labels not in EMPTY_LABEL_POLICIES:
            raise ValueError(f"--empty_labels must be one of {', '.join(EMPTY_LABEL_POLICIES)}, got {self.empty_labels!r}")
        if self.duplicate_rows not in DUPLICATE_ROW_POLICIES:
            raise ValueError(f"--duplicate_rows must be one of {', '.join(DUPLICATE_ROW_POLICIES)}, got {self.duplicate_rows!r}")


@dataclass
class EvaluationArguments:
    """``evaluate`` recipe: what to evaluate on."""

    eval_splits: str = field(default="test", metadata={"help": "Comma list of builder splits to evaluate (train, validation, test)."})
    lead_subsets: str = field(
        default="12-lead;6-limb;I+II;II;I",
        metadata={"help": "';'-separated lead subsets evaluated from the one checkpoint ('' for 12 leads only)."},
    )
    plot_roc: bool = field(default=True, metadata={"help": "Write ROC-curve PNGs."})


@dataclass
class LabelEfficiencyArguments:
    """``label_efficiency`` recipe: which fractions, repeats and models."""

    fractions: str = field(default="0.1,1.0", metadata={"help": "Comma list of label fractions in (0, 1], e.g. 0.01,0.1,1.0."})
    repeats: int = field(default=2, metadata={"help": "Repeats per fraction (seeds seed, seed+1, ...): subsample and init differ."})
    pretrained_model: str | None = field(
        default=None, metadata={"help": "Pretraining checkpoint for the 'pretrained' arm (default: --model_name_or_path)."}
    )
    include_scratch: bool = field(default=True, metadata={"help": "Also train ECG-NAT from scratch (--preset)."})
    include_resnet1d: bool = field(default=False, metadata={"help": "Also train the ResNet1d baseline with the same budget."})
    include_beatnet: bool = field(default=False, metadata={"help": "Also train BEAT-Net (new model at the data's rate) with the same budget."})
    metric: str = field(default="macro_auroc", metadata={"help": "Test metric reported in the table and plot."})
    save_models: bool = field(default=False, metadata={"help": "Keep a hub-ready checkpoint of every run (slower)."})


# --------------------------------------------------------------------------------------------- parsing
def _load_config_file(path: str) -> dict[str, Any]:
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a run config must be a mapping of argument names to values")
    return data


def _to_flags(data: dict[str, Any]) -> list[str]:
    flags: list[str] = []
    for k, v in data.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            flags.append(f"--{k}")
            flags.extend(str(x) for x in v)
        elif isinstance(v, dict):
            flags.extend([f"--{k}", json.dumps(v)])
        else:
            flags.extend([f"--{k}", str(v)])
    return flags


def parse_recipe_args(dataclass_types: Sequence[type], args: Sequence[str] | None, defaults: dict[str, Any] | None = None):
    """Parse recipe arguments from ``args`` (``sys.argv[1:]`` if None).

    ``args`` may start with one ``.json``/``.yaml``/``.yml`` file; flags after it override it.
    ``defaults`` are recipe defaults applied to fields neither the file nor the flags set.
    Returns the dataclass instances in order. Unknown keys raise an error naming them.
    """
    from transformers import HfArgumentParser

    args = list(sys.argv[1:] if args is None else args)
    parser = HfArgumentParser(tuple(dataclass_types))
    file_values: dict[str, Any] = {}
    if args and args[0].lower().endswith((".json", ".yaml", ".yml")) and not args[0].startswith("-"):
        file_values = _load_config_file(args[0])
        args = args[1:]
    known = {f.name for dc in dataclass_types for f in fields(dc) if f.init}
    unknown = sorted(set(file_values) - known)
    if unknown:
        raise ValueError(f"unknown argument(s) in the config file: {', '.join(unknown)}")
    given_flags = {a[2:].split("=", 1)[0] for a in args if a.startswith("--")}
    merged = {k: v for k, v in (defaults or {}).items() if k in known and k not in file_values and k not in given_flags}
    merged.update(file_values)
    if not args:
        return parser.parse_dict(merged)
    outputs = parser.parse_args_into_dataclasses(args=_to_flags(merged) + args, return_remaining_strings=True)
    remaining = outputs[-1]
    if remaining:
        raise ValueError(f"unknown command-line argument(s): {' '.join(remaining)}")
    return outputs[:-1]


def arguments_to_dict(*objs) -> dict[str, Any]:
    """JSON-safe dict of argument dataclasses (TrainingArguments via ``to_dict``, secrets dropped)."""
    out: dict[str, Any] = {}
    for obj in objs:
        name = type(obj).__name__
        if hasattr(obj, "to_dict"):
            d = obj.to_dict()
        else:
            d = {f.name: getattr(obj, f.name) for f in fields(obj)}
        clean = {}
        for k, v in d.items():
            if any(s in k.lower() for s in ("token", "secret", "password")):
                continue
            try:
                json.dumps(v)
                clean[k] = v
            except TypeError:
                clean[k] = str(v)
        out[name] = clean
    return out


def default_num_threads() -> int:
    """CPU cores per local process (torchrun sets LOCAL_WORLD_SIZE)."""
    procs = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, (os.cpu_count() or 1) // max(1, procs))
