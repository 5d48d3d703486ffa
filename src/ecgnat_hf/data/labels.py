"""Label maps: PTB-XL benchmark tasks and PhysioNet/CinC Challenge 2020/2021 SNOMED-CT classes.

PTB-XL
------
:func:`aggregate_ptbxl_labels` reproduces the label aggregation of the PTB-XL benchmark
(Strodthoff et al. 2020, ``compute_label_aggregations`` followed by ``select_data``):

* a statement counts whenever it is a key of ``scp_codes``; the likelihood value is ignored
  (``{'NORM': 100.0, 'LVOLT': 0.0}`` yields both NORM and LVOLT);
* ``all``: every statement; ``diagnostic``: statements with ``diagnostic == 1`` in
  ``scp_statements.csv``; ``subdiagnostic`` / ``superdiagnostic``: their ``diagnostic_subclass`` /
  ``diagnostic_class``; ``form``: ``form == 1``; ``rhythm``: ``rhythm == 1``;
* for every task except ``diagnostic`` (where the benchmark applies no filter) only labels that
  occur **more than** ``min_samples`` times over the whole table are kept (the benchmark's default
  is ``min_samples=0``, i.e. every label that occurs at all);
* records left with no label for the task are dropped from that task;
* classes are sorted as ``sklearn.preprocessing.MultiLabelBinarizer`` sorts them (Python ``sorted``).

Challenge
---------
The scored classes, their order and the equivalences come from ``weights.csv`` of the official
2021 scoring code (a header entry ``"713427006|59118001"`` is one class made of equivalent codes; the
first code represents it).  The three equivalences of the 2020 scoring code (CRBBB/RBBB, PAC/SVPB,
PVC/VPB) are always applied as well, plus CLBBB/LBBB which the 2021 weights merge.  Copies of the
scoring tables ship in ``ecgnat_hf/resources`` (BSD-2, physionetchallenges/evaluation-2021).
"""

from __future__ import annotations

import ast
import csv
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

__all__ = [
    "PTBXL_TASKS",
    "RESOURCES_DIR",
    "parse_scp_codes",
    "load_scp_statements",
    "ptbxl_record_labels",
    "aggregate_ptbxl_labels",
    "PTBXLLabels",
    "SINUS_RHYTHM",
    "EQUIVALENT_CODES",
    "ChallengeClasses",
    "load_challenge_classes",
    "load_weights",
    "load_dx_mapping",
    "canonical_code",
    "canonicalize_codes",
    "codes_to_multi_hot",
    "challenge_scored_codes",
    "ptbxl_task_classes",
]

PTBXL_TASKS = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")

RESOURCES_DIR = Path(__file__).resolve().parent.parent / "resources"


# --------------------------------------------------------------------------------------------- PTB-XL
def parse_scp_codes(value) -> dict[str, float]:
    """Parse the ``scp_codes`` column (a Python dict literal) of ``ptbxl_database.csv``."""
    if isinstance(value, Mapping):
        return dict(value)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return {}
    parsed = ast.literal_eval(str(value))
    if not isinstance(parsed, dict):
        raise ValueError(f"scp_codes is not a dict literal: {value!r}")
    return {str(k): float(v) for k, v in parsed.items()}


def _is_one(value) -> bool:
    try:
        return float(value) == 1.0
    except (TypeError, ValueError):
        return False


def _is_set(value) -> bool:
    if value is None:
        return False
    s = str(value).strip()
    return s != "" and s.lower() != "nan"


@dataclass(frozen=True)
class _Statements:
    diagnostic: dict  # code -> (subclass or None, superclass or None)
    form: frozenset
    rhythm: frozenset


def load_scp_statements(path: str | os.PathLike) -> _Statements:
    """Read ``scp_statements.csv`` (first column: the statement code)."""
    import pandas as pd

    df = pd.read_csv(path, index_col=0)
    diagnostic = {}
    for code, row in df.iterrows():
        if _is_one(row.get("diagnostic")):
            sub = row.get("diagnostic_subclass")
            sup = row.get("diagnostic_class")
            diagnostic[str(code)] = (str(sub) if _is_set(sub) else None, str(sup) if _is_set(sup) else None)
    form = frozenset(str(c) for c, v in df["form"].items() if _is_one(v))
    rhythm = frozenset(str(c) for c, v in df["rhythm"].items() if _is_one(v))
    return _Statements(diagnostic=diagnostic, form=form, rhythm=rhythm)


def ptbxl_record_labels(scp_codes: Mapping[str, float], task: str, statements: _Statements) -> list[str]:
    """Labels of one record for ``task`` before the ``min_samples`` filter (sorted, unique)."""
    keys = list(scp_codes.keys())  # likelihood ignored, as in the benchmark
    if task == "all":
        out = set(keys)
    elif task == "diagnostic":
        out = {k for k in keys if k in statements.diagnostic}
    elif task == "subdiagnostic":
        out = {statements.diagnostic[k][0] for k in keys if k in statements.diagnostic}
    elif task == "superdiagnostic":
        out = {statements.diagnostic[k][1] for k in keys if k in statements.diagnostic}
    elif task == "form":
        out = {k for k in keys if k in statements.form}
    elif task == "rhythm":
        out = {k for k in keys if k in statements.rhythm}
    else:
        raise ValueError(f"unknown PTB-XL task {task!r}; expected one of {PTBXL_TASKS}")
    out.discard(None)
    return sorted(out)


@dataclass
class PTBXLLabels:
    """Result of :func:`aggregate_ptbxl_labels`."""

    task: str
    classes: list[str]
    labels: dict[int, list[str]]  # ecg_id -> labels (only records with >= 1 label)
    dropped: list[int] = field(default_factory=list)  # ecg_ids without any label for the task

    def multi_hot(self, ecg_id: int) -> np.ndarray:
        idx = {c: i for i, c in enumerate(self.classes)}
        y = np.zeros(len(self.classes), dtype=np.float32)
        for c in self.labels[ecg_id]:
            y[idx[c]] = 1.0
        return y

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(self.classes, 0)
        for labs in self.labels.values():
            for c in labs:
                out[c] += 1
        return out


def aggregate_ptbxl_labels(
    database,
    statements,
    task: str = "superdiagnostic",
    min_samples: int = 0,
) -> PTBXLLabels:
    """Benchmark label aggregation for one task.

    ``database``: a DataFrame indexed by ``ecg_id`` with a ``scp_codes`` column (strings or dicts), or a
    path to ``ptbxl_database.csv``. ``statements``: the object returned by :func:`load_scp_statements`
    or a path to ``scp_statements.csv``. Counting for ``min_samples`` runs over the whole table given,
    as the benchmark does before splitting by fold.
    """
    import pandas as pd

    if task not in PTBXL_TASKS:
        raise ValueError(f"unknown PTB-XL task {task!r}; expected one of {PTBXL_TASKS}")
    if isinstance(database, (str, os.PathLike)):
        database = pd.read_csv(database, index_col="ecg_id")
    if isinstance(statements, (str, os.PathLike)):
        statements = load_scp_statements(statements)
    per_record = {
        int(eid): ptbxl_record_labels(parse_scp_codes(codes), task, statements)
        for eid, codes in database["scp_codes"].items()
    }
    if task != "diagnostic":  # the benchmark filters every task but "diagnostic"
        counts: dict[str, int] = {}
        for labs in per_record.values():
            for c in labs:
                counts[c] = counts.get(c, 0) + 1
        keep = {c for c, n in counts.items() if n > min_samples}
        per_record = {k: [c for c in v if c in keep] for k, v in per_record.items()}
    labels = {k: v for k, v in per_record.items() if v}
    dropped = [k for k, v in per_record.items() if not v]
    classes = sorted({c for v in labels.values() for c in v})
    return PTBXLLabels(task=task, classes=classes, labels=labels, dropped=dropped)


# ------------------------------------------------------------------------------------------ Challenge
SINUS_RHYTHM = "426783006"

# Equivalences of the official scoring code (first code represents the class). The 2021 weights.csv
# also merges complete LBBB with LBBB; those come from the weights header.
EQUIVALENT_CODES: tuple[tuple[str, ...], ...] = (
    ("713427006", "59118001"),  # CRBBB == RBBB
    ("284470004", "63593006"),  # PAC == SVPB
    ("427172004", "17338001"),  # PVC == VPB
)


def _read_table(path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    with open(path, newline="") as f:
        rows = [[c.strip() for c in r] for r in csv.reader(f) if any(c.strip() for c in r)]
    cols = rows[0][1:]
    names = [r[0] for r in rows[1:]]
    values = np.full((len(names), len(cols)), np.nan, dtype=np.float64)
    for i, r in enumerate(rows[1:]):
        for j, v in enumerate(r[1:]):
            try:
                values[i, j] = float(v)
            except ValueError:
                pass
    return names, cols, values


@dataclass(frozen=True)
class ChallengeClasses:
    """The scored classes of the Challenge metric.

    ``codes``: representative SNOMED code of each class (the order of ``weights.csv``);
    ``groups``: all equivalent codes of each class; ``abbreviations``/``names`` from the dx mapping;
    ``weights``: the (classes, classes) reward matrix.
    """

    codes: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...]
    weights: np.ndarray
    abbreviations: tuple[str, ...]
    names: tuple[str, ...]

    @property
    def equivalences(self) -> dict[str, str]:
        """Map of every scored code (and every official equivalent) to its class representative."""
        out: dict[str, str] = {}
        for grp in self.groups:
            for c in grp:
                out[c] = grp[0]
        for grp in EQUIVALENT_CODES:
            rep = out.get(grp[0]) or out.get(grp[1]) or grp[0]
            for c in grp:
                out.setdefault(c, rep)
        return out

    @property
    def index(self) -> dict[str, int]:
        pos = {c: i for i, c in enumerate(self.codes)}
        return {code: pos[rep] for code, rep in self.equivalences.items() if rep in pos}

    def __len__(self) -> int:
        return len(self.codes)


def canonical_code(code, equivalences: Mapping[str, str] | None = None) -> str:
    """Normalise one SNOMED code (strip, drop a trailing ``.0``) and map it to its class representative."""
    s = str(code).strip()
    if s.endswith(".0") and s[:-2].isdigit():
        s = s[:-2]
    if equivalences is None:
        equivalences = load_challenge_classes().equivalences
    return equivalences.get(s, s)


def canonicalize_codes(codes: Iterable, equivalences: Mapping[str, str] | None = None) -> list[str]:
    """Canonical, de-duplicated codes in first-seen order (empty strings dropped)."""
    if equivalences is None:
        equivalences = load_challenge_classes().equivalences
    out: list[str] = []
    for c in codes:
        if str(c).strip() == "":
            continue
        k = canonical_code(c, equivalences)
        if k not in out:
            out.append(k)
    return out


def codes_to_multi_hot(codes: Iterable, classes: "ChallengeClasses | None" = None) -> np.ndarray:
    """Multi-hot float32 vector over the scored classes; unscored codes are ignored."""
    classes = classes or load_challenge_classes()
    index = classes.index
    y = np.zeros(len(classes), dtype=np.float32)
    for c in codes:
        s = canonical_code(c, classes.equivalences)
        if s in index:
            y[index[s]] = 1.0
    return y


def load_dx_mapping(path: str | os.PathLike | None = None, scored: bool = True) -> dict[str, dict]:
    """``SNOMEDCTCode -> {"name", "abbreviation", <per-source counts>}`` from a dx mapping CSV."""
    if path is None:
        path = RESOURCES_DIR / ("dx_mapping_scored.csv" if scored else "dx_mapping_unscored.csv")
    out: dict[str, dict] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            code = str(row.get("SNOMEDCTCode", "")).strip()
            if not code:
                continue
            entry = {"name": row.get("Dx", ""), "abbreviation": row.get("Abbreviation", "")}
            entry.update({k: v for k, v in row.items() if k not in ("Dx", "SNOMEDCTCode", "Abbreviation")})
            out[code] = entry
    return out


def load_weights(path: str | os.PathLike | None = None) -> tuple[list[tuple[str, ...]], np.ndarray]:
    """Read a Challenge ``weights.csv``: (class groups, weight matrix). Checks symmetry of names."""
    path = RESOURCES_DIR / "weights.csv" if path is None else path
    rows, cols, values = _read_table(path)
    if rows != cols:
        raise ValueError(f"{path}: row and column classes of the weights table differ")
    if np.isnan(values).any():
        raise ValueError(f"{path}: the weights table has non-numeric entries")
    groups = [tuple(c.strip() for c in name.split("|") if c.strip()) for name in cols]
    return groups, values


@lru_cache(maxsize=8)
def _load_challenge_classes_cached(weights_path: str, scored_path: str) -> ChallengeClasses:
    groups, weights = load_weights(weights_path)
    # merge the official equivalences that a weights file might list as separate classes
    rep_of = {}
    for grp in EQUIVALENT_CODES:
        for c in grp:
            rep_of[c] = grp[0]
    merged_groups: list[list[str]] = []
    keep_idx: list[int] = []
    seen: dict[str, int] = {}
    for i, grp in enumerate(groups):
        key = rep_of.get(grp[0], grp[0])
        if key in seen:
            j = seen[key]
            if not np.array_equal(weights[i], weights[keep_idx[j]]):
                raise ValueError(f"equivalent classes {grp} and {merged_groups[j]} have different weights")
            merged_groups[j].extend(c for c in grp if c not in merged_groups[j])
            continue
        seen[key] = len(merged_groups)
        merged_groups.append(list(grp))
        keep_idx.append(i)
    for grp in merged_groups:  # add the official partner codes
        for eq in EQUIVALENT_CODES:
            if any(c in grp for c in eq):
                grp.extend(c for c in eq if c not in grp)
    weights = weights[np.ix_(keep_idx, keep_idx)]
    mapping = load_dx_mapping(scored_path) if os.path.exists(scored_path) else {}
    abbrevs, names = [], []
    for grp in merged_groups:
        abbrevs.append("|".join(mapping[c]["abbreviation"] for c in grp if c in mapping) or grp[0])
        names.append("|".join(mapping[c]["name"] for c in grp if c in mapping) or grp[0])
    return ChallengeClasses(
        codes=tuple(g[0] for g in merged_groups),
        groups=tuple(tuple(g) for g in merged_groups),
        weights=weights,
        abbreviations=tuple(abbrevs),
        names=tuple(names),
    )


def load_challenge_classes(
    weights_path: str | os.PathLike | None = None, scored_path: str | os.PathLike | None = None
) -> ChallengeClasses:
    """Scored classes, equivalences and weights (default: the bundled 2021 scoring tables)."""
    weights_path = RESOURCES_DIR / "weights.csv" if weights_path is None else Path(weights_path)
    scored_path = RESOURCES_DIR / "dx_mapping_scored.csv" if scored_path is None else Path(scored_path)
    return _load_challenge_classes_cached(str(weights_path), str(scored_path))


def challenge_scored_codes(classes: ChallengeClasses | None = None) -> list[str]:
    """Representative codes of the scored classes, in ``weights.csv`` order."""
    return list((classes or load_challenge_classes()).codes)


def ptbxl_task_classes(database, statements, min_samples: int = 0) -> dict[str, list[str]]:
    """Class list of every benchmark task."""
    if isinstance(statements, (str, os.PathLike)):
        statements = load_scp_statements(statements)
    return {t: aggregate_ptbxl_labels(database, statements, t, min_samples).classes for t in PTBXL_TASKS}
