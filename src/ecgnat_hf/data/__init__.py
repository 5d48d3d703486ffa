"""Record reading, lead names, signal quality and typed errors (dataset builders live in ``ecgnat_hf.data.builders``)."""

from .errors import (
    ECGDataError,
    HeaderError,
    InvalidSignalError,
    LabelFileError,
    LeadNameError,
    MissingFileError,
    MissingSamplingRateError,
    NoUsableLeadError,
    SamplingRateError,
    SignalMismatchError,
    TruncatedSignalError,
    UnreadableRecordError,
)
from .leads import (
    CANONICAL_LEADS,
    LEAD_ALIASES,
    LeadMapping,
    lead_indices,
    normalize_lead_name,
    parse_lead_names,
    rename_leads,
)
from .quality import QualityReport, QualityThresholds, check_record_quality, check_signal_quality
from .records import ECGRecord, check_lead_names, read_header, read_matlab_record, read_record

__all__ = [
    "ECGDataError",
    "HeaderError",
    "InvalidSignalError",
    "LabelFileError",
    "LeadNameError",
    "MissingFileError",
    "MissingSamplingRateError",
    "NoUsableLeadError",
    "SamplingRateError",
    "SignalMismatchError",
    "TruncatedSignalError",
    "UnreadableRecordError",
    "CANONICAL_LEADS",
    "LEAD_ALIASES",
    "LeadMapping",
    "lead_indices",
    "normalize_lead_name",
    "parse_lead_names",
    "rename_leads",
    "QualityReport",
    "QualityThresholds",
    "check_record_quality",
    "check_signal_quality",
    "ECGRecord",
    "check_lead_names",
    "read_header",
    "read_matlab_record",
    "read_record",
]
