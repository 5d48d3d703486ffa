#!/usr/bin/env python
"""Thin entry point: `python recipes/linear_probe.py [config.yaml] [--flags]`; see ecgnat_hf.recipes.linear_probe."""
import _launch  # noqa: F401  (thread pinning; keeps this folder off sys.path)

from ecgnat_hf.recipes.linear_probe import main  # noqa: E402

if __name__ == "__main__":
    main()
