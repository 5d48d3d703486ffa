"""Lead names: canonical 12-lead order, aliases, and mapping a record's leads to canonical indices.

The alias table and :func:`normalize_lead_name` live in ``feature_extraction_ecgnat.py`` (a hub-facing
module copied next to checkpoints, which must not import this package); they are re-exported here so
the reader, the dataset builders and the feature extractor all share one definition.
"""

from __future__ import annotations

from typing import Sequence

from ..feature_extraction_ecgnat import (
    CANONICAL_LEADS,
    LEAD_ALIASES,
    ECGLeadNameError,
    _squash,
)
from ..feature_extraction_ecgnat import normalize_lead_name as _fe_normalize
from .errors import LeadNameError

__all__ = ["CANONICAL_LEADS", "LEAD_ALIASES", "normalize_lead_name", "lead_indices", "LeadMapping"]


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
