#!/usr/bin/env python
"""Thin entry point: `python recipes/pretrain.py [config.yaml] [--flags]`; see ecgnat_hf.recipes.pretrain."""
import os
import sys
from pathlib import Path

# BLAS threads fight torch's on small machines (5-10x slower epochs): pin them before numpy loads.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
# This folder holds a file named evaluate.py: keep it off sys.path so `import evaluate` finds the library.
_here = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]

from ecgnat_hf.recipes.pretrain import main  # noqa: E402

if __name__ == "__main__":
    main()
