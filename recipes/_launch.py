"""Shared preamble of the thin recipe scripts in this folder; importing it is the whole effect.

- BLAS threads fight torch's on small machines (5-10x slower epochs): pin them before numpy loads.
- This folder holds a script named evaluate.py: take the folder off sys.path so that `import evaluate` finds
  the library, not the script.
"""
import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
_here = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
