"""Label efficiency: fine-tune with fractions of the training labels (stratified, fixed seeds, several
repeats), from pretrained weights vs from scratch (and optionally the ResNet1d baseline), every arm with
the same recipe and budget; report the test metric as a table (CSV + Markdown) with a paired bootstrap interval
for every pair of arms, and a plot (PNG)::

    python recipes/label_efficiency.py --model_name_or_path runs/pretrain --fractions 0.01,0.1,1.0 \\
        --repeats 3 --include_resnet1d --output_dir runs/label_efficiency --num_train_epochs 10

Runs call :func:`ecgnat_hf.recipes.finetune.train_classifier` in-process (no subprocesses): records are
read and preprocessed once. Repeat ``r`` uses seed ``--seed + r`` for both the label subsample
(:func:`ecgnat_hf.training.data.stratified_subset`) and the model initialisation; at fraction 1.0
repeats differ by initialisation only. Arms: ``ecgnat-pretrained`` (needs ``--pretrained_model`` or
``--model_name_or_path``), ``ecgnat-scratch`` (``--preset``), ``resnet1d``, ``beatnet`` (``--include_beatnet``).

Outputs in ``--output_dir``: ``label_efficiency_runs.csv`` (one row per run), ``label_efficiency.csv``
(mean/std per arm and fraction), ``label_efficiency.md``, ``label_efficiency.png``, ``label_efficiency.json``.

Python: ``main(args: list[str] | None = None, command: str | None = None) -> dict``.
"""
from __future__ import annotations

# On 2-core machines BLAS threads started by numpy/scipy/sklearn fight torch's threads (5-10x slower
# epochs): pin them before numpy is imported (the recipes' _common module also limits pools at run time).
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import copy  # noqa: E402
import csv  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Sequence  # noqa: E402

from . import _common as C  # noqa: E402
from .finetune import FINETUNE_DEFAULTS, train_classifier  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = ["main", "run_label_efficiency", "summarize"]


def summarize(rows: list[dict], metric: str) -> list[dict]:
    """Mean / std (population, over repeats) of ``metric`` per (model, fraction), in first-seen order."""
    import numpy as np

    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["fraction"]), [])
        if r.get(metric) is not None:
            groups[(r["model"], r["fraction"])].append(float(r[metric]))
    out = []
    for (model, frac), vals in groups.items():
        n_train = [r["n_train"] for r in rows if r["model"] == model and r["fraction"] == frac]
        row = {"model": model, "fraction": frac, "n_train": int(round(sum(n_train) / max(1, len(n_train)))),
               "repeats": len(vals), "mean": float(np.mean(vals)) if vals else None,
               "std": float(np.std(vals)) if vals else None, "metric": metric}
        members = [r for r in rows if r["model"] == model and r["fraction"] == frac]
        for key in dict.fromkeys(k for r in members for k in r if k.startswith((f"{metric}[", "auroc_"))):  # subsets, classes
            sub = [float(r[key]) for r in members if r.get(key) is not None]
            row[f"mean_{key}"] = float(np.mean(sub)) if sub else None
        out.append(row)
    return out


def _csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _markdown(summary: list[dict], metric: str, command: str, comparisons: list[dict] | None = None,
              skipped_by_subset: dict | None = None) -> str:
    fracs = sorted({s["fraction"] for s in summary})
    models = list(dict.fromkeys(s["model"] for s in summary))
    cell = {(s["model"], s["fraction"]): s for s in summary}
    lines = [f"Test {metric} (mean ± std over repeats; training examples in brackets).", "",
             "| model | " + " | ".join(f"{100 * f:g}% labels" for f in fracs) + " |", "|---|" + "---|" * len(fracs)]
    for m in models:
        cells = []
        for f in fracs:
            s = cell.get((m, f))
            cells.append("n/a" if not s or s["mean"] is None else f"{s['mean']:.4f} ± {s['std']:.4f} ({s['n_train']})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if comparisons:
        lines += ["", "Paired differences on the same test records (bootstrap over records, repeats averaged):", ""]
        lines += [f"- {100 * c['fraction']:g}% labels: {c['text']}" for c in comparisons]
        if comparisons[0].get("per_class"):
            lines += _per_class_markdown(comparisons)
    if skipped_by_subset:
        from .finetune import skipped_records_note

        note = skipped_records_note({k: {"skipped_records": v} for k, v in skipped_by_subset.items()})
        lines += ["", f"Per-lead-subset test {metric} leaves out the test records that have none of the subset's "
                      "leads (not scored as zeros; column `n_skipped[subset]` of label_efficiency_runs.csv):"] + note[1:]
    lines += ["", f"Command: `{command}`", ""]
    return "\n".join(lines)


def run_label_efficiency(model_args, data_args, training_args, eval_args, le_args, command: str) -> dict:
    """The sweep; see the module docstring. Returns ``{"rows", "summary", "files", "metric"}``."""
    from ..training.arguments import parse_float_list
    from ..training.data import prepare_classification_data

    C.setup_runtime(model_args)
    fractions = parse_float_list(le_args.fractions)
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"--fractions must be values in (0, 1], got {le_args.fractions!r}")
    pretrained = le_args.pretrained_model or model_args.model_name_or_path
    arms = []
    if pretrained:
        arms.append(("ecgnat-pretrained", dict(model_type="ecgnat", model_name_or_path=pretrained)))
    if le_args.include_scratch:
        arms.append((f"ecgnat-{model_args.preset}-scratch", dict(model_type="ecgnat", model_name_or_path=None)))
    if le_args.include_resnet1d:
        arms.append(("resnet1d", dict(model_type="resnet1d", model_name_or_path=None)))
    if le_args.include_beatnet:
        arms.append(("beatnet", dict(model_type="beatnet", model_name_or_path=None)))
    if not arms:
        raise ValueError("no arm to run: give --pretrained_model / --model_name_or_path, or keep --include_scratch")

    # one feature extractor (the pretrained checkpoint's when there is one) for every arm: same inputs
    first = copy.copy(model_args)
    first.model_name_or_path = pretrained
    rate = C.model_sampling_rate(first, data_args)
    fe = C.load_feature_extractor(first, data_args, rate)
    out_dir = Path(training_args.output_dir)
    rows: list[dict[str, Any]] = []
    test_scores: dict[tuple[str, float], list] = {}  # (arm, fraction) -> test probabilities per repeat
    skipped_by_subset: dict[str, list] = {}  # lead subset -> test records with none of its leads (not scored)
    test_labels = None
    label_names = None
    for fraction in fractions:
        for rep in range(le_args.repeats):
            seed = training_args.seed + rep
            d_args = copy.copy(data_args)
            d_args.label_fraction = float(fraction)
            d_args.label_fraction_seed = seed
            with training_args.main_process_first(desc="dataset preparation"):
                prepared = prepare_classification_data(d_args, fe)
            label_names = prepared.label_names
            for arm, over in arms:
                m_args = copy.copy(model_args)
                for k, v in over.items():
                    setattr(m_args, k, v)
                if m_args.model_name_or_path is None:  # --layer_decay is for the pretrained encoder only
                    m_args.layer_decay = 1.0
                run_dir = out_dir / "runs" / f"{arm}-frac{fraction:g}-rep{rep}"
                t_args = copy.deepcopy(training_args)
                t_args.output_dir = str(run_dir)
                t_args.seed = seed
                t_args.push_to_hub = False
                t0 = time.perf_counter()
                res, trainer = train_classifier(m_args, d_args, t_args, eval_args, command=command, prepared=prepared,
                                                save=le_args.save_models, feature_extractor=fe)
                test = res["eval_results"].get("test", {})
                if "test" in res["raw_predictions"]:
                    probs, labels = res["raw_predictions"]["test"]
                    test_scores.setdefault((arm, float(fraction)), []).append(probs)
                    test_labels = labels
                val = res["eval_results"].get("validation", {})
                rows.append({"model": arm, "fraction": float(fraction), "repeat": rep, "seed": seed,
                             "n_train": res["n_train"], "steps": res["global_step"],
                             le_args.metric: test.get(le_args.metric), f"validation_{le_args.metric}": val.get(le_args.metric),
                             "seconds": round(time.perf_counter() - t0, 1)})
                for name, value in (test.get("auroc") or {}).items():  # per-class test AUROC
                    rows[-1][f"auroc_{name}"] = value
                for subset, metrics in res.get("lead_subsets", {}).items():  # test split, leads removed
                    rows[-1][f"{le_args.metric}[{subset}]"] = metrics.get(le_args.metric)
                    if metrics.get("n_skipped"):  # test records with none of the subset's leads: not scored
                        rows[-1][f"n_skipped[{subset}]"] = metrics["n_skipped"]
                        skipped_by_subset[subset] = metrics.get("skipped_records") or []
                logger.info("label efficiency: %s", rows[-1])
                del trainer
                if not le_args.save_models and trainer_is_main(training_args):
                    shutil.rmtree(run_dir, ignore_errors=True)
    summary = summarize(rows, le_args.metric)
    comparisons = (compare_arms(test_scores, test_labels, [a for a, _ in arms], fractions, label_names)
                   if le_args.metric == "macro_auroc" else [])
    files = {}
    if trainer_is_main(training_args):
        from ..plotting.figures import plot_label_efficiency

        files["runs_csv"] = str(C.write_text(_csv(rows), out_dir / "label_efficiency_runs.csv"))
        files["csv"] = str(C.write_text(_csv(summary), out_dir / "label_efficiency.csv"))
        files["markdown"] = str(C.write_text(_markdown(summary, le_args.metric, command, comparisons, skipped_by_subset),
                                             out_dir / "label_efficiency.md"))
        plot_rows = [s for s in summary if s["mean"] is not None]
        if plot_rows:
            import matplotlib.pyplot as plt

            fig = plot_label_efficiency(plot_rows, f"test {le_args.metric.replace('_', ' ')}", out_dir / "label_efficiency.png")
            plt.close(fig)
            files["plot"] = str(out_dir / "label_efficiency.png")
        C.write_json({"metric": le_args.metric, "command": command, "rows": rows, "summary": summary,
                      "comparisons": comparisons, "lead_subset_skipped_records": skipped_by_subset},
                     out_dir / "label_efficiency.json")
        files["json"] = str(out_dir / "label_efficiency.json")
        if test_scores:
            # every run's test probabilities ("arm|fraction|repeat"), in the test split's (deterministic) record
            # order, with the labels: a later run with the same protocol can be paired with them record by record
            import numpy as np

            runs = {f"{arm}|{fraction:g}|{rep}": np.asarray(p)
                    for (arm, fraction), per_repeat in test_scores.items() for rep, p in enumerate(per_repeat)}
            np.savez_compressed(out_dir / "test_predictions.npz", labels=np.asarray(test_labels), **runs)
            files["test_predictions"] = str(out_dir / "test_predictions.npz")
    return {"rows": rows, "summary": summary, "comparisons": comparisons, "files": files, "metric": le_args.metric,
            "lead_subset_skipped_records": skipped_by_subset, "output_dir": str(out_dir.resolve())}


def compare_arms(test_scores: dict, labels, arm_names: list[str], fractions,
                 label_names: Sequence[str] | None = None) -> list[dict]:
    """Paired bootstrap intervals (test records resampled; each arm averaged over its repeats) for every pair of
    arms, in arm order (the pretrained arm first), at each fraction. Each row also carries ``per_class``: the
    same interval for every class's AUROC, with its number of test positives."""
    from itertools import combinations

    from ..metrics.comparison import compare_runs, per_class_paired_bootstrap

    if labels is None or not arm_names:
        return []
    out = []
    for fraction in fractions:
        arms = {a: s for (a, f), s in test_scores.items() if f == float(fraction)}
        for row in compare_runs(labels, arms, list(combinations(arm_names, 2)), n_boot=2000, seed=0):
            per_class = per_class_paired_bootstrap(labels, arms[row["a_name"]], arms[row["b_name"]], label_names,
                                                   n_boot=2000, seed=0)
            out.append({"fraction": float(fraction), **row, "per_class": per_class})
    return out


def _per_class_markdown(comparisons: list[dict]) -> list[str]:
    """One table: a row per (fraction, pair), a column per class, each cell ``difference [interval]``."""
    labels = [r["label"] for r in comparisons[0]["per_class"]]
    n_pos = {r["label"]: r["n_positive"] for r in comparisons[0]["per_class"]}
    lines = ["", "Per-class AUROC differences on the same test records (95% bootstrap interval; test positives in "
                 "brackets: with few positives the interval is wide):", "",
             "| labels | comparison | " + " | ".join(f"{n} ({n_pos[n]})" for n in labels) + " |",
             "|---|---|" + "---|" * len(labels)]
    for c in comparisons:
        cells = ["n/a" if r["difference"] is None else f"{r['difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
                 for r in c["per_class"]]
        lines.append(f"| {100 * c['fraction']:g}% | {c['a_name']} - {c['b_name']} | " + " | ".join(cells) + " |")
    return lines


def trainer_is_main(training_args) -> bool:
    return training_args.process_index == 0


def main(args: Sequence[str] | None = None, command: str | None = None) -> dict:
    """Run the sweep. Returns ``{"rows": [per run], "summary": [per arm and fraction: mean, std],
    "files": {"csv", "runs_csv", "markdown", "plot", "json"}, "metric", "output_dir"}``."""
    from transformers import TrainingArguments

    from ..training.arguments import (DataArguments, EvaluationArguments, LabelEfficiencyArguments, ModelArguments,
                                      parse_recipe_args)

    defaults = dict(FINETUNE_DEFAULTS, lead_subsets="")
    model_args, data_args, training_args, eval_args, le_args = parse_recipe_args(
        (ModelArguments, DataArguments, TrainingArguments, EvaluationArguments, LabelEfficiencyArguments), args, defaults)
    return run_label_efficiency(model_args, data_args, training_args, eval_args, le_args,
                                C.command_line("label_efficiency", args, command))


if __name__ == "__main__":
    main()
