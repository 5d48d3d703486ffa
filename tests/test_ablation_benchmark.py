"""benchmarks/ablation.py: the validation-only ablation loop never scores the test fold, and its 500 Hz input
reads the same PTB-XL records as the bundled 100 Hz sample."""
import importlib.util

import pytest
import torch

from conftest import REPO_ROOT


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("ablation_benchmark", REPO_ROOT / "benchmarks" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.CACHE_DIR = tmp_path_factory.mktemp("ablation_cache")  # never the user's ~/.cache
    return module


def test_test_fold_is_refused_before_any_data_is_read(ablation):
    with pytest.raises(SystemExit, match="fold 9 is the test fold"):
        ablation.run("ecgnat", {}, None, seed=0, steps=1, lr=1e-3, val_fold=9)
    assert not any(ablation.CACHE_DIR.iterdir())


def test_only_ptbxl_rates_are_accepted(ablation):
    with pytest.raises(SystemExit, match="100 or 500"):
        ablation.load_data("center", 8, sampling_rate=250)


@pytest.mark.slow
def test_500hz_reads_the_same_records_and_refuses_a_100hz_model(ablation, shared_data, monkeypatch):
    monkeypatch.setenv("ECGNAT_SHARED_DATA", str(shared_data))
    low = ablation.load_data("center", 8, sampling_rate=100)
    high = ablation.load_data("center", 8, sampling_rate=500)
    for split in ("train", "validation"):
        (x1, m1, y1), (x5, m5, y5) = low[split], high[split]
        assert x5.shape == (x1.shape[0], 12, 5 * x1.shape[2])
        assert torch.equal(y1, y5) and torch.equal(m1, m5)
        # the same recordings: 500 Hz averaged over 5 samples follows the 100 Hz signal
        coarse = x5.reshape(*x5.shape[:2], -1, 5).mean(-1)
        assert torch.corrcoef(torch.stack([coarse.flatten(), x1.flatten()]))[0, 1] > 0.95
    assert low["label_names"] == high["label_names"]

    with pytest.raises(SystemExit, match="reads 100 Hz but --sampling_rate is 500"):
        ablation.run("ecgnat", {}, None, seed=0, steps=1, lr=1e-3, scaling="center", sampling_rate=500)
    overrides = {"sampling_rate": 500, "patch_size": 10, "stem_kernel_size": 31}
    result = ablation.run("ecgnat", overrides, None, seed=0, steps=2, lr=1e-3, scaling="center", sampling_rate=500)
    assert 0.0 <= result["final"] <= 1.0 and set(result["subsets"]) == {"6-limb", "I+II", "II", "I"}
