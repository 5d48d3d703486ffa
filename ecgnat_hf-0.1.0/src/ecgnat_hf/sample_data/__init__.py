"""Real ECG recordings bundled with the package, for the demo, examples and tests.

``ptbxl100/`` holds the 100 Hz records of a 434-record subset of PTB-XL 1.0.3 (Wagner et al. 2020,
PhysioNet, CC-BY-4.0), unmodified, in the original WFDB layout. See ``README.md`` in this folder
for the attribution and exactly what was copied.
"""
from __future__ import annotations

import pathlib
from importlib import resources

__all__ = ["sample_dir", "PTBXL100_N_RECORDS"]

#: number of records in the bundled PTB-XL subset (rows of ``ptbxl_database.csv``)
PTBXL100_N_RECORDS = 434


def sample_dir() -> pathlib.Path:
    """Path to the bundled PTB-XL 100 Hz sample (``.../sample_data/ptbxl100``).

    The folder mirrors the PTB-XL release: ``ptbxl_database.csv`` (its ``filename_lr`` column gives
    each record's path relative to this folder, e.g. ``records100/00000/00001_lr``),
    ``scp_statements.csv``, ``LICENSE.txt`` and ``records100/<group>/<id>_lr.{hea,dat}``.
    """
    root = resources.files(__name__).joinpath("ptbxl100")
    # The package is installed as plain files (wheel or editable), so this is a real directory;
    # guard anyway so a zipped install fails with a clear message instead of a confusing one later.
    path = pathlib.Path(str(root))
    if not path.is_dir():
        raise FileNotFoundError(
            f"bundled sample data not found at {path}: the package data was not installed "
            "(a zipped or partial install?). Reinstall ecgnat-hf from a wheel or source tree."
        )
    return path
