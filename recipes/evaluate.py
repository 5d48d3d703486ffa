#!/usr/bin/env python
"""Thin entry point: `python recipes/evaluate.py [config.yaml] [--flags]`; see ecgnat_hf.recipes.evaluate."""
import _launch  # noqa: F401  (thread pinning; keeps this folder off sys.path)

from ecgnat_hf.recipes.evaluate import main  # noqa: E402

if __name__ == "__main__":
    main()
