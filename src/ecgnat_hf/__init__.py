"""ecgnat_hf: ECG-NAT and friends for the Hugging Face ecosystem."""

__version__ = "0.1.0"
