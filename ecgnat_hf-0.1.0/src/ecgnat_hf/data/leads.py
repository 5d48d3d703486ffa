"""Lead names: canonical 12-lead order, aliases, and mapping a record's leads to canonical indices.

The alias table and :func:`normalize_lead_name` live in ``feature_extraction_ecgnat.py`` (a hub-facing
module copied next to checkpoints, which must not import this package); they are re-exported here so
the reader, the dataset builders and the feature extractor all share one definition.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from ..models.ecgnat.feature_extraction_ecgnat import (
    CANONICAL_LEADS,
    LEAD_ALIASES,
    ECGLeadNameError,
    _squash,
)
from ..models.ecgnat.feature_extraction_ecgnat import normalize_lead_name as _fe_normalize
from .errors import LeadNameError

__all__ = ["CANONICAL_LEADS", "LEAD_ALIASES", "normalize_lead_name", "lead_indices", "LeadMapping",
           "parse_lead_names", "rename_leads"]


def normalize_lead_name(name: str, record: str | None = None) -> str:
    """Canonical spelling of a lead name or alias; :class:`LeadNameError` naming the lead otherwise."""
    try:
        return _fe_normalize(name)
    except ECGLeadNameError as exc:
        raise LeadNameError(record, str(exc)) from None


class LeadMapping(list):
    """Canonical indices of a record's leads (a ``list[int]``), plus ``extra``: the names of
    non-standard leads that were skipped (``allow_extra=True``) and ``positions``: the positions in
    the record of the leads that were kept, aligned with the indices."""

    def __init__(self, indices, positions, extra):
        super().__init__(indices)
        self.positions = list(positions)
        self.extra = list(extra)


def lead_indices(
    names: Sequence[str], record: str | None = None, *, allow_extra: bool = False
) -> LeadMapping:
    """Map lead names (aliases allowed) to indices into :data:`CANONICAL_LEADS`.

    With ``allow_extra=False`` (default) an unknown name raises :class:`LeadNameError`; with
    ``allow_extra=True`` such leads (e.g. PTB's Frank leads ``vx``, ``vy``, ``vz``) are skipped and
    reported in ``result.extra``; ``result.positions`` says which rows of the record were kept.
    Duplicates (``"II"`` and ``"MLII"``) always raise.
    """
    indices, positions, extra = [], [], []
    seen: dict[int, str] = {}
    for pos, name in enumerate(names):
        canonical = LEAD_ALIASES.get(_squash(name))
        if canonical is None:
            if allow_extra:
                extra.append(name)
                continue
            raise LeadNameError(
                record,
                f"unknown lead name {name!r}; expected one of {', '.join(CANONICAL_LEADS)} or an alias "
                "(pass allow_extra=True to skip non-standard leads)",
            )
        idx = CANONICAL_LEADS.index(canonical)
        if idx in seen:
            raise LeadNameError(record, f"duplicate lead {name!r}: same lead as {seen[idx]!r} ({canonical})")
        seen[idx] = name
        indices.append(idx)
        positions.append(pos)
    return LeadMapping(indices, positions, extra)


def parse_lead_names(text: str | Sequence[str] | Mapping[str, str] | None) -> list[str] | dict[str, str] | None:
    """Parse a lead-naming option: ``"I,II"`` -> ``["I", "II"]`` (the channels' names, in order);
    ``"ECG=I"`` / ``"ECG1=I,ECG2=II"`` -> ``{"ECG": "I", ...}`` (rename these channels). Lists and dicts
    pass through. Target names must be standard leads or aliases (returned in canonical spelling for a
    mapping); :class:`LeadNameError` otherwise. ``None`` or ``""`` -> ``None``."""
    if text is None:
        return None
    if isinstance(text, Mapping):
        items = list(text.items())
        return {str(k).strip(): normalize_lead_name(str(v).strip()) for k, v in items}
    if not isinstance(text, str):
        names = [str(n).strip() for n in text if str(n).strip()]
        return names or None
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    if not parts:
        return None
    if any("=" in p for p in parts):
        out: dict[str, str] = {}
        for p in parts:
            src, sep, dst = p.partition("=")
            if not sep or not src.strip() or not dst.strip():
                raise LeadNameError(None, f"lead naming {text!r}: item {p!r} is not CHANNEL=LEAD (e.g. ECG=I)")
            out[src.strip()] = normalize_lead_name(dst.strip())
        return out
    return parts


def rename_leads(names: Sequence[str], spec, record: str | None = None, *, missing: str = "raise") -> list[str]:
    """Apply a lead-naming ``spec`` (see :func:`parse_lead_names`) to a record's channel names.

    * a list: one name per channel, in order (count must match; :class:`LeadNameError` otherwise);
    * a mapping: channels named like a key (exactly, else case/space-insensitively) get the value;
      a key matching no channel raises (a typo must not pass silently; ``missing="ignore"`` lets a
      mapping meant for some records of a mixed folder pass over the others), other channels keep their
      names.
    """
    spec = parse_lead_names(spec) if isinstance(spec, str) else spec
    names = [str(n) for n in names]
    if spec is None:
        return names
    if isinstance(spec, Mapping):
        out = list(names)
        squashed = [_squash(n) for n in names]
        for src, dst in spec.items():
            hits = [i for i, n in enumerate(names) if n == src] or [i for i, k in enumerate(squashed) if k == _squash(src)]
            if not hits and missing == "ignore":
                continue
            if not hits:
                raise LeadNameError(record, f"lead naming {src}={dst}: the record has no channel {src!r} "
                                    f"(it has {', '.join(names) or 'none'})")
            for i in hits:
                out[i] = str(dst)
        return out
    spec = [str(n) for n in spec]
    if len(spec) != len(names):
        raise LeadNameError(record, f"{len(spec)} lead names ({', '.join(spec)}) given for a record with "
                            f"{len(names)} channels ({', '.join(names) or 'none'})")
    return spec
