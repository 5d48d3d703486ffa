"""Prepare a source once into a sharded store that training reads without loading it.

::

    ecgnat prepare --dataset ptbxl --data_dir /data/ptb-xl --output_dir stores/ptbxl --preset base --num_proc 8
    ecgnat prepare --dataset challenge --data_dir /data/cinc2021 --output_dir stores/cinc --num_shards 4 --shard_index 0
    ecgnat prepare --merge part0 part1 part2 part3 --output_dir stores/cinc

Every record is resampled to the model's rate (``--preset`` or ``--model_name_or_path``) with the
model's extractor and kept at full length; see :mod:`ecgnat_hf.data.store` for the layout. A rerun of the
same command skips finished shards (resume after a stop or ``kill -9``) and writes the same bytes.
Python: ``main(args: list[str] | None = None, command: str | None = None) -> dict`` (the manifest), or exit code 1
after printing a store error (another prepare holds the lock, the disk is full, the folder holds another store).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import logging  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Sequence  # noqa: E402

from . import _common as C  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = ["main", "PrepareArguments"]


@dataclass
class PrepareArguments:
    output_dir: str = field(metadata={"help": "The store folder (created; a rerun resumes it)."})
    num_proc: int = field(default=1, metadata={"help": "Processes writing shards in parallel."})
    records_per_shard: int = field(default=1000, metadata={"help": "Records per shard (part of the plan: keep it on reruns)."})
    num_shards: int = field(default=1, metadata={"help": "Split the work over this many machines (parts)."})
    shard_index: int = field(default=0, metadata={"help": "Which part this machine prepares (0 .. num_shards-1)."})
    merge: list[str] = field(default_factory=list, metadata={
        "help": "Join parts prepared into separate folders (give their folders) into --output_dir; no --dataset needed."})
    no_progress: bool = field(default=False, metadata={"help": "No progress bar."})


def main(args: Sequence[str] | None = None, command: str | None = None) -> dict:
    """``ecgnat prepare``: parse the arguments, prepare (or resume, or merge) the store; return its manifest."""
    from ..data.store import StoreError
    from ..training.arguments import DataArguments, ModelArguments, parse_recipe_args

    model_args, data_args, prep = parse_recipe_args((ModelArguments, DataArguments, PrepareArguments), args)
    command = C.command_line("prepare", args, command)
    try:
        return _run(model_args, data_args, prep, command)
    except StoreError as exc:  # lock held, disk full, a folder holding another store: a message, exit code 1
        print(f"ecgnat prepare: error: {exc}", file=sys.stderr)
        return 1


def _run(model_args, data_args, prep, command) -> dict:
    from ..data.store import merge_stores, prepare_store

    if prep.merge:
        manifest = merge_stores(prep.merge, prep.output_dir, command=command)
    else:
        if data_args.dataset == "store":
            raise ValueError("--dataset store reads a prepared store; prepare a source kind (ptbxl, challenge, folder, ...)")
        if prep.num_proc < 1 or prep.records_per_shard < 1:
            raise ValueError("--num_proc and --records_per_shard must be >= 1")
        rate = C.model_sampling_rate(model_args, data_args)
        fe = C.load_feature_extractor(model_args, data_args, rate)
        manifest = prepare_store(data_args, fe, prep.output_dir, num_proc=prep.num_proc,
                                 records_per_shard=prep.records_per_shard, num_shards=prep.num_shards,
                                 shard_index=prep.shard_index, command=command, progress=not prep.no_progress)
    if manifest.get("prepared_records"):
        dt = manifest["prepare_seconds"]
        print(f"prepared {manifest['prepared_records']} listed record(s) in {manifest['prepared_shards']} shard(s) in "
              f"{dt:.1f} s ({manifest['prepared_records'] / max(dt, 1e-9):.0f} records/s with {manifest['num_proc']} "
              "process(es))")
    if "n_records" in manifest:
        print(f"{prep.output_dir}: {manifest['n_records']} records in {len(manifest['shards'])} shard(s) at "
              f"{manifest['sampling_rate']:g} Hz; {manifest['n_skipped']} left out (skipped.csv)")
    else:
        print(f"{prep.output_dir}: part {manifest['part']} done; {manifest['shards_missing']} shard(s) of other "
              "parts missing")
    return manifest


if __name__ == "__main__":
    main()
