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
import codecs
import csv
import io
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
    "parse_binary_label",
    "read_label_table",
    "LabelTable",
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


# ------------------------------------------------------------------------------------ user label tables
_TRUE_WORDS = frozenset({"true", "yes", "y", "t"})
_FALSE_WORDS = frozenset({"false", "no", "n", "f"})
EMPTY_LABEL_POLICIES = ("error", "negative", "skip")
DUPLICATE_ROW_POLICIES = ("error", "first", "last", "skip")


def parse_binary_label(value: str) -> int | None:
    """Strict 0/1 cell: ``0``/``1`` (also ``0.0``, ``1.00``), ``true``/``false``, ``yes``/``no``, ``y``/``n``,
    ``t``/``f`` (any case) -> 1 or 0; an empty cell -> ``None``; anything else (``NaN``, ``2``, ``-1``,
    ``maybe``) raises ``ValueError``."""
    s = str(value).strip()
    if s == "":
        return None
    low = s.lower()
    if low in _TRUE_WORDS:
        return 1
    if low in _FALSE_WORDS:
        return 0
    try:
        number = float(s)
    except ValueError:
        number = None
    if number is not None and number in (0.0, 1.0):
        return int(number)
    raise ValueError(f"{s!r} is not a 0/1 value (accepted: 0, 1, true/false, yes/no)")


@dataclass
class LabelTable:
    """A parsed user labels CSV (see :func:`read_label_table`).

    ``rows``: record key -> ``{"labels", "patient", "split", "age", "sex", "line"}``; ``classes``: class
    names in column / first-seen-sorted order; ``patient_column``; ``skipped``: ``(key, reason, message)``
    of rows left out by an explicit ``empty_labels="skip"`` / ``duplicate_rows="skip"`` policy;
    ``notes``: what the policies did (also logged)."""

    path: str
    rows: dict
    classes: list
    patient_column: str | None
    skipped: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def read_label_table(
    path: str | os.PathLike,
    *,
    record_column: str = "record",
    labels_column: str = "labels",
    patient_column: str | None = None,
    split_column: str = "split",
    label_separator: str = ";",
    classes: Iterable[str] | None = None,
    encoding: str = "utf-8",
    empty_labels: str = "error",
    duplicate_rows: str = "error",
) -> LabelTable:
    """Read a labels CSV strictly. Every problem raises :class:`~ecgnat_hf.data.errors.LabelFileError`
    naming the file, the line and the column.

    * ``encoding``: the file's text encoding (default UTF-8; a BOM is accepted). Bytes that are not
      valid in it raise (pass ``encoding="latin-1"`` for such files) instead of being guessed.
    * 0/1 class columns accept only unambiguous values (see :func:`parse_binary_label`).
    * ``empty_labels``: what an empty ``labels`` cell or an empty 0/1 cell means. ``"error"`` (default):
      raise; ``"negative"``: no label (an all-negative example / 0); ``"skip"``: leave the record out
      (reported in ``skipped``).
    * ``duplicate_rows``: several rows for one record. Identical rows are merged; for conflicting ones
      ``"error"`` (default) raises, ``"first"``/``"last"`` keep that row, ``"skip"`` leaves the record out.
    """
    from .errors import LabelFileError

    src = os.fspath(path)
    if empty_labels not in EMPTY_LABEL_POLICIES:
        raise ValueError(f"empty_labels must be one of {EMPTY_LABEL_POLICIES}, got {empty_labels!r}")
    if duplicate_rows not in DUPLICATE_ROW_POLICIES:
        raise ValueError(f"duplicate_rows must be one of {DUPLICATE_ROW_POLICIES}, got {duplicate_rows!r}")
    try:
        raw = Path(src).read_bytes()
    except OSError as exc:
        raise LabelFileError(src, f"cannot read the labels file: {exc.strerror or exc}") from None
    # a byte-order mark is stripped in every encoding (a UTF-8 BOM read as latin-1 would otherwise become
    # part of the first column's name, "\u00ef\u00bb\u00bfrecord"); offsets in messages count from the file's start
    skip = 0
    for bom in (codecs.BOM_UTF8, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        if raw.startswith(bom) and (bom == codecs.BOM_UTF8 or "16" in encoding or "32" in encoding):
            skip = len(bom) if bom == codecs.BOM_UTF8 else 0  # UTF-16/32 decoders read their own BOM
            break
    body = raw[skip:]
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        at = skip + exc.start
        line = raw[:at].count(b"\n") + 1
        raise LabelFileError(
            src, f"not valid {encoding} text (byte 0x{raw[at]:02x} at offset {at}); save the file "
            "as UTF-8 or give its encoding (labels_encoding='cp1252' or 'latin-1')", row=line) from None
    except LookupError:
        raise ValueError(f"unknown text encoding {encoding!r}") from None
    text = text.lstrip("\ufeff")
    if "\x00" in text:
        raise LabelFileError(src, "the file holds NUL bytes: not a CSV text file")
    reader = csv.reader(io.StringIO(text, newline=""))
    table: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if any(c.strip() for c in row):
                table.append((reader.line_num, [c.strip() for c in row]))
    except csv.Error as exc:
        raise LabelFileError(src, f"not a readable CSV: {exc}", row=reader.line_num) from None
    if not table:
        raise LabelFileError(src, f"the file is empty: expected a header row with a '{record_column}' column")
    header_line, header = table[0]
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise LabelFileError(src, f"duplicate column name(s) {dup}", row=header_line)
    if record_column not in header:
        raise LabelFileError(src, f"no '{record_column}' column (columns: {header})", row=header_line)
    if patient_column is None:
        patient_column = next((c for c in ("patient", "patient_id") if c in header), None)
    elif patient_column not in header:
        raise LabelFileError(src, f"no patient column '{patient_column}' (columns: {header})", row=header_line)
    col = {c: i for i, c in enumerate(header)}
    reserved = {record_column, patient_column, split_column, "age", "sex"}
    use_list = labels_column in header
    class_cols = [] if use_list else [c for c in header if c not in reserved]
    if not use_list and not class_cols:
        raise LabelFileError(src, f"neither a '{labels_column}' column nor class columns (columns: {header})",
                             row=header_line)

    parsed: dict[str, list[dict]] = {}
    order: list[str] = []
    skipped: list[tuple[str, str, str]] = []
    for line, cells in table[1:]:
        if len(cells) != len(header):
            raise LabelFileError(src, f"{len(cells)} cells for {len(header)} columns", row=line)
        key = cells[col[record_column]]
        if key.lower().endswith((".hea", ".dat", ".mat")):
            key = key[:-4]
        if not key:
            raise LabelFileError(src, "empty record name", row=line, column=record_column)
        if use_list:
            cell = cells[col[labels_column]]
            labs = [x.strip() for x in cell.split(label_separator) if x.strip()]
            empty = not labs
        else:
            labs, empty = [], False
            for c in class_cols:
                try:
                    v = parse_binary_label(cells[col[c]])
                except ValueError as exc:
                    raise LabelFileError(src, str(exc), row=line, column=c) from None
                if v is None:
                    empty = True
                elif v == 1:
                    labs.append(c)
        if empty and empty_labels == "error":
            which = labels_column if use_list else next(c for c in class_cols if cells[col[c]] == "")
            raise LabelFileError(
                src, "empty label cell: say what it means with empty_labels='negative' (no label / 0) or "
                "empty_labels='skip' (leave the record out)", row=line, column=which)
        if empty and empty_labels == "skip":
            skipped.append((key, "empty labels", f"{src} line {line}: empty label cell (empty_labels='skip')"))
            continue
        entry = {
            "labels": labs,
            "patient": cells[col[patient_column]] if patient_column else None,
            "split": cells[col[split_column]].lower() if split_column in col else "",
            "age": cells[col["age"]] if "age" in col else None,
            "sex": cells[col["sex"]] if "sex" in col else None,
            "line": line,
        }
        if key not in parsed:
            order.append(key)
        parsed.setdefault(key, []).append(entry)

    rows: dict[str, dict] = {}
    notes: list[str] = []
    for key in order:
        entries = parsed[key]
        distinct = []
        for e in entries:
            sig = (sorted(e["labels"]), e["patient"], e["split"], e["age"], e["sex"])
            if sig not in [d[0] for d in distinct]:
                distinct.append((sig, e))
        if len(distinct) == 1:
            rows[key] = entries[0]
            continue
        lines = ", ".join(str(e["line"]) for e in entries)
        if duplicate_rows == "error":
            raise LabelFileError(
                src, f"record {key!r} has conflicting rows (lines {lines}); fix the file or choose "
                "duplicate_rows='first', 'last' or 'skip'", row=entries[1]["line"], column=record_column)
        if duplicate_rows == "skip":
            skipped.append((key, "conflicting label rows", f"{src} lines {lines}: conflicting rows (duplicate_rows='skip')"))
            continue
        rows[key] = entries[0] if duplicate_rows == "first" else entries[-1]
        notes.append(f"record {key!r}: conflicting rows on lines {lines}; kept line {rows[key]['line']} "
                     f"(duplicate_rows={duplicate_rows!r})")
    derived = sorted({c for r in rows.values() for c in r["labels"]}) if use_list else list(class_cols)
    out_classes = list(classes) if classes is not None else derived
    return LabelTable(src, rows, out_classes, patient_column, skipped, notes)
