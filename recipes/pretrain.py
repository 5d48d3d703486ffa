#!/usr/bin/env python
"""Thin entry point: `python recipes/pretrain.py [config.yaml] [--flags]`; see ecgnat_hf.recipes.pretrain."""
import _launch  # noqa: F401  (thread pinning; keeps this folder off sys.path)

from ecgnat_hf.recipes.pretrain import main  # noqa: E402

if __name__ == "__main__":
    main()
