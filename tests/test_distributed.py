"""A 2-process CPU fine-tune under torchrun (gloo): the ranks must end with identical parameters, and
those parameters must have moved from the initialisation (so the check is not vacuous)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

WORKER = textwrap.dedent(
    """
    import os
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(v, "1")
    import hashlib, json, sys
    import torch
    from transformers import TrainerCallback
    from ecgnat_hf.recipes.finetune import _parse, train_classifier

    def digest(model):
        h = hashlib.sha256()
        total = 0.0
        for name, p in sorted(model.named_parameters()):
            t = p.detach().cpu().contiguous()
            h.update(name.encode()); h.update(t.numpy().tobytes())
            total += float(t.double().abs().sum())
        return h.hexdigest(), total

    class Init(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            self.init = digest(model)

    out = sys.argv[1]
    args = ["--output_dir", os.path.join(out, "run"), "--max_steps", "3", "--per_device_train_batch_size", "4",
            "--max_train_samples", "24", "--max_eval_samples", "8", "--max_test_samples", "8",
            "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
            "--use_cpu", "true", "--ddp_backend", "gloo", "--disable_tqdm", "true", "--num_threads", "1",
            "--report_to", "none"]
    m, d, t, e = _parse(args)
    init = Init()
    res, trainer = train_classifier(m, d, t, e, command="torchrun test", save=False, callbacks=[init])
    rank = int(os.environ["RANK"])
    final = digest(trainer.model)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"init": init.init, "final": final, "world": int(os.environ["WORLD_SIZE"]),
                   "dist": torch.distributed.is_initialized() and torch.distributed.get_backend(),
                   "global_step": res["global_step"]}, f)
    """
)


@pytest.mark.slow
def test_two_process_cpu_finetune_keeps_ranks_identical(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_DATASETS_CACHE=str(tmp_path / "hf"))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         str(script), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world"] == r1["world"] == 2 and r0["dist"] == "gloo"
    assert r0["global_step"] == r1["global_step"] == 3
    assert r0["init"] == r1["init"]  # same initialisation on both ranks
    assert r0["final"] == r1["final"]  # gradients were all-reduced: replicas stayed identical
    assert r0["final"][0] != r0["init"][0]  # and training did change the parameters
