"""Shared test set-up.

Thread counts are pinned before numpy/torch are imported: on 2-core machines BLAS threads started by
scipy/sklearn fight torch's intra-op threads and slow training 5-10x.
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED_DATA = Path(os.environ.get("ECGNAT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def _shared_missing_reason() -> str:
    return (
        f"real recordings not found at {SHARED_DATA} (the team's ../shared/data beside the project; "
        "set ECGNAT_SHARED_DATA to point elsewhere). CI has it; these tests are skipped here."
    )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data. In CI (CI=true) a missing folder is an error, never a silent skip."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(_shared_missing_reason())
        pytest.skip(_shared_missing_reason())
    return SHARED_DATA


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
    yield
