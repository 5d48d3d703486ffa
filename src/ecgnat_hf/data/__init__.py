"""Record reading, lead names and typed errors (dataset builders live in ``ecgnat_hf.data.builders``)."""

from .errors import (
    ECGDataError,
    HeaderError,
    InvalidSignalError,
    LeadNameError,
    MissingFileError,
    MissingSamplingRateError,
    SamplingRateError,
    TruncatedSignalError,
)
from .leads import CANONICAL_LEADS, LEAD_ALIASES, LeadMapping, lead_indices, normalize_lead_name
from .records import ECGRecord, check_lead_names, read_header, read_matlab_record, read_record

__all__ = [
    "ECGDataError",
    "HeaderError",
    "InvalidSignalError",
    "LeadNameError",
    "MissingFileError",
    "MissingSamplingRateError",
    "SamplingRateError",
    "TruncatedSignalError",
    "CANONICAL_LEADS",
    "LEAD_ALIASES",
    "LeadMapping",
    "lead_indices",
    "normalize_lead_name",
    "ECGRecord",
    "check_lead_names",
    "read_header",
    "read_matlab_record",
    "read_record",
]
