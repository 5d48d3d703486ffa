"""A real 2-process run of ``ecgnat pretrain --dataset store`` under ``torchrun`` (gloo on CPU), memory-mapped and
``--streaming``: it finishes, the ranks read disjoint records, and the saved checkpoint loads.

CPU DDP needs no environment variable beyond what torchrun sets (RANK, WORLD_SIZE, MASTER_ADDR/PORT):
``--use_cpu true --ddp_backend gloo`` are enough for the Trainer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

WORKER = textwrap.dedent(
    """
    import os
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(v, "1")
    import json, sys
    import torch
    from ecgnat_hf.training.store_data import StoreWindows
    from ecgnat_hf.training.store_stream import StreamingStoreWindows
    from ecgnat_hf.recipes.pretrain import main

    out, mode = sys.argv[1], sys.argv[2]
    rank = os.environ["RANK"]

    def log(k, i):  # every record a rank reads (its DataLoader workers too), one file per process
        with open(os.path.join(out, f"reads-rank{rank}-pid{os.getpid()}.txt"), "a") as f:
            f.write(f"{k} {i}\\n")

    get_item = StoreWindows.__getitem__
    def logged_getitem(self, j):
        if self.random_crop:  # the training set, not the evaluation set
            log(*self.locate(int(j)))
        return get_item(self, j)
    StoreWindows.__getitem__ = logged_getitem
    example = StreamingStoreWindows._example
    def logged_example(self, k, i):
        if self.random_crop:
            log(k, i)
        return example(self, k, i)
    StreamingStoreWindows._example = logged_example

    args = sys.argv[3:]
    res = main(args)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"global_step": res["global_step"], "n_train": res["n_train"], "world": int(os.environ["WORLD_SIZE"]),
                   "backend": torch.distributed.is_initialized() and torch.distributed.get_backend()}, f)
    """
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from ecgnat_hf import ECGNATFeatureExtractor
    from ecgnat_hf.data.store import prepare_store
    from ecgnat_hf.training.arguments import DataArguments

    out = tmp_path_factory.mktemp("ddp") / "sample"
    fe = ECGNATFeatureExtractor(sampling_rate=100, window_s=10.0, scaling="center")
    prepare_store(DataArguments(dataset="sample", max_records=60), fe, out, records_per_shard=6, progress=False,
                  command="test")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["mmap", "streaming"])
def test_torchrun_two_ranks_pretrain_from_store(store, tmp_path, mode):
    from ecgnat_hf.data.store import ECGStore
    from ecgnat_hf.models.ecgnat.modeling_ecgnat import ECGNATForPreTraining

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    run = tmp_path / "run"
    args = ["--dataset", "store", "--data_dir", str(store), "--output_dir", str(run), "--preset", "tiny",
            "--scaling", "center", "--max_steps", "3", "--per_device_train_batch_size", "3",
            "--per_device_eval_batch_size", "8", "--dataloader_num_workers", "2", "--eval_strategy", "no",
            "--save_strategy", "steps", "--save_steps", "3", "--use_cpu", "true", "--ddp_backend", "gloo",
            "--disable_tqdm", "true", "--report_to", "none", "--logging_steps", "1"]
    if mode == "streaming":
        cap = 5 * max(s["bytes"] for s in json.loads((store / "manifest.json").read_text())["shards"]) + 20_000
        args += ["--streaming", "true", "--stream_cache_dir", str(tmp_path / "cache"), "--stream_cache_gb", str(cap / 1e9)]
        # 5 of the store's 11 shards (7 of them training shards): 4 readers (2 ranks x 2 workers) hold one each
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_DATASETS_CACHE=str(tmp_path / "hf"))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", "29531" if mode == "mmap" else "29532", str(script), str(tmp_path), mode, *args],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    r = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert all(x["world"] == 2 and x["backend"] == "gloo" and x["global_step"] == 3 for x in r)
    reads = []
    for k in (0, 1):
        lines = [ln for f in tmp_path.glob(f"reads-rank{k}-pid*.txt") for ln in f.read_text().split()]
        reads.append({(int(a), int(b)) for a, b in zip(lines[::2], lines[1::2])})
    train = {(0, int(i)) for i in ECGStore(store).indices(["train"])}
    # 3 steps of 3 per rank (the loader workers read a few batches ahead, in the same epoch order). The 42
    # training records make 7 batches of 3 per rank, so no batch is filled from the epoch's start (with another
    # count, up to one batch per rank would be: accelerate's even_batches, or the streaming wrap-around)
    assert all(len(x) >= 9 for x in reads) and reads[0] | reads[1] <= train and len(train) == 42
    assert not reads[0] & reads[1]  # disjoint: each rank read its own records
    for folder in (run, run / "checkpoint-3"):
        model = ECGNATForPreTraining.from_pretrained(folder)
        assert all(np.isfinite(p.detach().numpy()).all() for p in model.parameters())
    if mode == "streaming":
        from ecgnat_hf.data.remote_store import ShardCache

        assert 0 < ShardCache(tmp_path / "cache", 1).peak_bytes() <= cap
