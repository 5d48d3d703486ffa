"""The ``ecgnat`` command.

::

    ecgnat predict --model CKPT records_or_folders... -o predictions.csv [--lead_names I,II] [--timeline t.csv]
    ecgnat plot RECORD [--model CKPT] [-o ecg.png] [--fusion_output fusion.png]
    ecgnat plot --timeline t.csv [-o timeline.png] [--record_id ID]
    ecgnat plot RECORD --beats [--start_s S] [--duration_s 20] [--qrs_detector package] [-o beats.png]
    ecgnat embed --model CKPT records_or_folders... -o embeddings.parquet|.npz [--per_window]
    ecgnat export --model CKPT --format onnx|torch_export -o folder
    ecgnat push FOLDER REPO_ID                                      (upload a hub-ready checkpoint)
    ecgnat prepare --dataset KIND --data_dir DIR --output_dir STORE [--num_proc N]
    ecgnat app --model CKPT [--host 127.0.0.1] [--port 7860]       (pip install 'ecgnat-hf[app]')
    ecgnat space --model CKPT --output_dir DIR                      (a Hugging Face Space folder)
    ecgnat pretrain | finetune | linear-probe | evaluate | label-efficiency | demo  [recipe arguments]
    ecgnat --version

The recipe subcommands hand every argument after their name, unchanged, to
``ecgnat_hf.recipes.<name>.main(args)`` (``linear-probe`` -> ``linear_probe``); ``ecgnat finetune --help``
therefore shows the recipe's own options.

Exit codes: 0 success; 1 a data error (the record and the problem are printed; ``predict`` still writes
every other record's row and lists the failed ones in its errors CSV); 2 bad usage (unknown option, missing
path, checkpoint that cannot be loaded).
"""
from __future__ import annotations

import os

# Before numpy/torch are imported: on small machines BLAS threads started by numpy/scipy/sklearn fight
# torch's intra-op threads (measured 5-10x slower training on 2 cores), so BLAS gets one thread. torch
# gets one thread for the recipes (their dataloaders use the other cores) and every available core for
# ``predict`` and ``plot``. A user's own setting wins; ``--num_threads`` sets torch's thread count.
# Note: the console script imports the package ``ecgnat_hf`` (and with it numpy and torch) before this
# module, so these variables can come too late for libraries already loaded; ``_limit_threads`` in
# ``main()`` therefore also applies the same limits at run time (threadpoolctl for BLAS, torch directly).
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_USER_SET_THREADS = {_var: _var in os.environ for _var in _THREAD_VARS}
for _var in _THREAD_VARS:
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import importlib  # noqa: E402
import inspect  # noqa: E402
import logging  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

__all__ = ["main", "build_parser", "RECIPES"]

PROG = "ecgnat"

#: subcommand -> module under ``ecgnat_hf.recipes`` whose ``main(args)`` gets the remaining arguments
RECIPES = {
    "prepare": ("prepare", "prepare a source once into a sharded, memory-mapped store for training"),
    "pretrain": ("pretrain", "masked-reconstruction pretraining on unlabelled records"),
    "finetune": ("finetune", "supervised fine-tuning (from a pretrained checkpoint or from scratch)"),
    "linear-probe": ("linear_probe", "frozen encoder + linear head"),
    "evaluate": ("evaluate", "evaluate a checkpoint: per-class metrics, ROC curves, lead subsets"),
    "label-efficiency": ("label_efficiency", "1%%/10%%/100%% label fractions, pretrained vs scratch: table + plot"),
    "demo": ("demo", "the one-command demo on the bundled PTB-XL sample"),
}

# global options that take a value (needed to find the subcommand before argparse sees recipe arguments)
_GLOBAL_WITH_VALUE = ("--num_threads", "--log_level")


class UsageError(Exception):
    """Bad command-line usage (exit code 2)."""


def _version() -> str:
    # ecgnat_hf.__version__ is the one place the version is written: pyproject.toml reads it at build time
    # (dynamic version), and docs/changelog.md's latest entry must match it (tests/test_packaging.py).
    from . import __version__

    return __version__


# --------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The ``ecgnat`` argument parser: one sub-command per recipe, plus ``predict``, ``plot``, ``demo`` and the rest."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="ECG-NAT: neighborhood-attention transformer for multi-lead ECG (research use only, "
        "not a medical device).",
        epilog="Recipe subcommands pass their arguments on unchanged: `ecgnat finetune --help` lists the "
        "recipe's options. Exit codes: 0 ok, 1 data error (record named), 2 bad usage.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    parser.add_argument("--num_threads", type=int, default=None,
                        help="torch CPU threads (default: the OMP_NUM_THREADS environment variable; else every "
                        "available core for predict and plot, 1 for the training recipes). BLAS stays at 1 "
                        "thread so that it does not fight torch's threads")
    parser.add_argument("--log_level", default="warning", choices=["debug", "info", "warning", "error"],
                        help="logging verbosity (default: warning)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for name, (module, text) in RECIPES.items():
        sub.add_parser(
            name, help=text, add_help=False, description=f"{text}. Arguments are passed to "
            f"ecgnat_hf.recipes.{module}.main(); see `ecgnat {name} --help`.",
        )

    p = sub.add_parser(
        "predict",
        help="records or folders in, a CSV of per-class probabilities out",
        description="Predict per-class probabilities and labels for ECG records of any length (WFDB "
        ".hea/.dat/.mat or MATLAB files). Folders are searched recursively. Records are read and scored "
        "chunk by chunk (memory does not grow with length: 24-hour Holters, 14-day patches) in windows "
        "of the checkpoint's window_s (preprocessor_config.json), whose probabilities are averaged per "
        "record. 'labels' holds the classes at or above the checkpoint's decision thresholds (arg-max for "
        "single-label models); time_positive_<class> is the fraction of the recording's time above them. "
        "Each record's row is written as soon as it is finished. Records that cannot be read are listed "
        "in the errors CSV; the others are still predicted (exit code 1 when any record failed).",
    )
    p.add_argument("inputs", nargs="+", metavar="RECORD_OR_FOLDER",
                   help="record paths (with or without extension) and/or folders")
    p.add_argument("--model", "-m", required=True, help="checkpoint directory (or hub id in the local cache)")
    p.add_argument("--output", "-o", default="predictions.csv", help="CSV to write (default: predictions.csv)")
    p.add_argument("--errors_csv", default=None,
                   help="CSV of records that failed (default: <output stem>.errors.csv; header only if none)")
    p.add_argument("--lead_names", default=None,
                   help='comma-separated leads to use, e.g. "I,II" (others are treated as not recorded); for '
                   "records whose files name no standard lead, the names of their channels in order")
    p.add_argument("--sampling_rate", type=float, default=None, metavar="HZ",
                   help="sampling rate of MATLAB files that have no WFDB header (.hea) beside them and no known "
                   "layout; name their leads with --lead_names (ignored for records with a header)")
    p.add_argument("--batch_size", type=int, default=32, help="windows per forward pass (default: 32)")
    p.add_argument("--aggregate", choices=["mean", "max"], default="mean",
                   help="how window probabilities are pooled per record (default: mean)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if available)")
    p.add_argument("--timeline", default=None, metavar="FILE",
                   help="also write every window's probabilities with its start/end time in seconds "
                   "(.csv, or .parquet); draw it with `ecgnat plot --timeline FILE`")
    p.add_argument("--chunk_s", type=float, default=600.0,
                   help="seconds of recording read and preprocessed at a time (bounded memory; results do "
                   "not depend on it; default: 600)")
    p.add_argument("--window_stride_s", type=float, default=None, metavar="S",
                   help="seconds between window starts (default: the checkpoint's, usually half a window). "
                   "A whole window (e.g. 10 for 10 s windows) scores each second once: half the windows, "
                   "about twice as fast on long records, with a coarser timeline")
    p.add_argument("--resume", action="store_true",
                   help="skip records already in --output and keep its rows (refused when it was written "
                   "by another model or with other options)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad record")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")

    q = sub.add_parser(
        "plot",
        help="one record -> 12-lead ECG printout (and, with --model, predictions and lead-fusion weights)",
        description="Draw one record as a clinical 12-lead printout (25 mm/s, 10 mm/mV; leads the record "
        "lacks are marked 'not recorded'). With --model the box shows the model's top predictions for the "
        "whole record and a second PNG shows the lead-fusion attention weights averaged over time.",
    )
    q.add_argument("record", nargs="?", default=None,
                   help="record path (with or without extension); not needed with --timeline")
    q.add_argument("--timeline", default=None, metavar="FILE",
                   help="draw the class probabilities over time from an `ecgnat predict --timeline` file "
                   "instead of a printout (one panel per record; --record picks one)")
    q.add_argument("--record_id", default=None, help="with --timeline: the record to draw (default: all)")
    # with --timeline, --model only reads the checkpoint's config.json: its decision thresholds are drawn
    q.add_argument("--model", "-m", default=None, help="checkpoint directory: adds predictions and the fusion plot")
    q.add_argument("--output", "-o", default=None, help="PNG to write (default: <record id>_ecg.png)")
    q.add_argument("--fusion_output", default=None,
                   help="lead-fusion PNG (default: <output stem>_lead_fusion.png; needs --model)")
    q.add_argument("--lead_names", default=None, help='leads the model uses, e.g. "I,II" (as in predict)')
    q.add_argument("--sampling_rate", type=float, default=None, metavar="HZ",
                   help="sampling rate of a MATLAB file without a WFDB header (as in predict)")
    q.add_argument("--start_s", type=float, default=0.0, help="start of the 10 s shown (default: 0)")
    q.add_argument("--top_k", type=int, default=8, help="predictions shown in the box (default: 8)")
    q.add_argument("--title", default=None, help="header text (default: record id, age, sex)")
    q.add_argument("--batch_size", type=int, default=32, help="windows per forward pass (default: 32)")
    q.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    _add_plot_beats(q)
    _add_embed_and_export(sub)
    _add_app_and_space(sub)
    return parser


def _add_plot_beats(q) -> None:
    b = q.add_argument_group("--beats: detected against reference beats on a stretch of a long record")
    b.add_argument("--beats", action="store_true",
                   help="draw the record's leads from --start_s for --duration_s with the detected beats and, when "
                   "the record has an annotation file (--annotator), its reference beats: misses and false "
                   "detections are marked")
    b.add_argument("--duration_s", type=float, default=20.0, help="with --beats: seconds shown (default: 20)")
    b.add_argument("--annotator", default="atr", help="with --beats: reference annotation extension (default: atr)")
    b.add_argument("--qrs_detector", default=None,
                   help="with --beats: 'package', 'xqrs', 'gqrs' or 'neurokit2:<method>' (default: the "
                   "checkpoint's with --model, else the package default)")


def _cmd_plot_beats(args) -> int:
    """``ecgnat plot RECORD --beats``: detected (and reference) beats on a stretch of the record."""
    from .data.records import read_record
    from .metrics.qrs_scoring import reference_beats
    from .models.beatnet.qrs import detect_qrs, qrs_settings
    from .plotting.beats import plot_detected_beats

    rec_path = Path(args.record)
    if rec_path.suffix.lower() in (".hea", ".dat"):
        rec_path = rec_path.with_suffix("")
    if not _record_exists(rec_path):
        raise UsageError(f"no such record: {args.record}")
    settings = {}
    if args.model:
        _, fe = _load(args.model, _device(args.device))
        settings = dict(getattr(fe, "qrs_settings", None) or {})
    if args.qrs_detector:
        settings["detector"] = args.qrs_detector
    try:
        settings = qrs_settings(**settings)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    record = read_record(rec_path)
    if args.start_s < 0 or args.start_s >= record.duration_s:
        raise UsageError(f"--start_s {args.start_s:g} is outside the record ({record.duration_s:.1f} s)")
    if not args.duration_s > 0:
        raise UsageError(f"--duration_s must be positive, got {args.duration_s:g}")
    detected = detect_qrs(record.signal, record.sampling_rate, **settings)
    reference = None
    ann_file = Path(f"{record.path}.{args.annotator}")
    if ann_file.is_file():
        import wfdb

        ann = wfdb.rdann(str(record.path), args.annotator)
        reference = reference_beats(ann.sample, ann.symbol)
    output = Path(args.output) if args.output else Path(f"{record.record_id}_beats.png")
    _check_writable("--output", output)
    counts = plot_detected_beats(record.signal, record.sampling_rate, record.lead_names, detected, reference,
                                 start_s=args.start_s, duration_s=args.duration_s,
                                 title=f"{record.record_id} ({settings['detector']})", path=output)
    seconds = (counts["stop"] - counts["start"]) / record.sampling_rate
    line = f"{output}: {counts['detected']} detected beats in {seconds:.1f} s from {args.start_s:g} s"
    if reference is None:
        line += f" (no {ann_file.name}: no reference beats)"
    else:
        line += (f"; {counts['reference']} reference beats: {counts['matched']} matched, {counts['missed']} missed, "
                 f"{counts['false']} false")
    print(line)
    return 0


def _add_app_and_space(sub) -> None:
    a = sub.add_parser(
        "app",
        help="a web page (Gradio) where a record is dropped in and the printout, labels, beats, lead attention "
        "and timeline appear",
        description="Serve a Gradio page for a classifier checkpoint (ECG-NAT, BEAT-Net or ResNet1d; a local "
        "folder or a hub id in the local cache). A record dropped on the page (WFDB .hea + .dat, Challenge "
        ".hea + .mat, a .zip of either, or a .csv with its sampling rate) or a bundled example is scored "
        "through the streaming path; the page shows the 12-lead printout, the labels above the checkpoint's "
        "thresholds with every class's probability, the detected beats and lead attention and, for long "
        "records, the timeline with the time above each threshold; results download as CSV/JSON/PNG. "
        "Binds 127.0.0.1 (this machine only) unless --host says otherwise; no public link unless --share. "
        "Needs gradio: pip install 'ecgnat-hf[app]'. See docs/app.md.",
    )
    a.add_argument("--model", "-m", required=True, help="checkpoint directory (or hub id in the local cache)")
    a.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 serves the network)")
    a.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    a.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    a.add_argument("--concurrency", type=int, default=1,
                   help="analyses run at once; more requests wait in Gradio's queue (default: 1)")
    a.add_argument("--max_queue", type=int, default=16, help="requests that may wait in the queue (default: 16)")
    a.add_argument("--max_file_mb", type=float, default=1024,
                   help="largest upload in MiB, refused by the page before it is sent (default: 1024)")
    a.add_argument("--device", default=None, help="torch device (default: cuda if available)")

    s = sub.add_parser(
        "space",
        help="write a Hugging Face Space folder (app.py, requirements.txt, README with Space metadata) for a checkpoint",
        description="Write a folder that runs the same app as `ecgnat app` on a machine without this repository: "
        "app.py, requirements.txt, README.md with the Space metadata block, a copy of the ecgnat_hf code, the "
        "checkpoint under model/ and the example records. `python app.py` in it serves the page; uploaded to a "
        "Hugging Face Space (sdk: gradio) it runs there.",
    )
    s.add_argument("--model", "-m", required=True, help="checkpoint directory (or hub id in the local cache)")
    s.add_argument("--output_dir", "-o", required=True, help="folder to write (must be empty or not exist)")
    s.add_argument("--title", default=None, help="the Space's title (default: 'ECG-NAT demo: <model kind>')")
    s.add_argument("--concurrency", type=int, default=1, help="analyses at once in the Space (default: 1)")
    s.add_argument("--max_file_mb", type=float, default=1024, help="largest upload in MiB (default: 1024)")
    s.add_argument("--overwrite", action="store_true", help="replace a non-empty --output_dir")


def _cmd_app(args) -> int:
    _check_positive("--concurrency", args.concurrency)
    _check_positive("--max_queue", args.max_queue)
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be 1-65535, got {args.port}")
    if not args.max_file_mb > 0:
        raise UsageError(f"--max_file_mb must be positive, got {args.max_file_mb}")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UsageError("the app needs gradio: pip install 'ecgnat-hf[app]'") from None
    if Path(args.model).exists() and not Path(args.model).is_dir():
        raise UsageError(f"--model {args.model}: not a checkpoint directory")
    _quiet_transformers()
    from .app.interface import launch_app
    from .inference import CheckpointError

    if args.share:
        print(f"{PROG} app: --share: a public link will be opened; anyone with it can upload records", file=sys.stderr)
    try:
        launch_app(args.model, host=args.host, port=args.port, share=args.share, concurrency=args.concurrency,
                   max_queue=args.max_queue, max_file_mb=args.max_file_mb, device=str(_device(args.device)),
                   # --num_threads or the user's OMP_NUM_THREADS: torch's own threads, as asked (the app scores on
                   # one thread); else torch runs single-threaded and the app scores on one thread per core
                   num_workers=1 if args.num_threads is not None or _USER_SET_THREADS["OMP_NUM_THREADS"] else None)
    except (CheckpointError, OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return 0


def _cmd_space(args) -> int:
    _check_positive("--concurrency", args.concurrency)
    if Path(args.model).exists() and not Path(args.model).is_dir():
        raise UsageError(f"--model {args.model}: not a checkpoint directory")
    _quiet_transformers()
    from .app.space import write_space
    from .inference import CheckpointError

    try:
        out = write_space(args.model, args.output_dir, title=args.title, concurrency=args.concurrency,
                          max_file_mb=args.max_file_mb, overwrite=args.overwrite)
    except FileExistsError as exc:
        raise UsageError(str(exc)) from None
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"cannot load the checkpoint {args.model!r}: {exc}") from None
    print(f"wrote the Space folder {out}: app.py, requirements.txt, README.md, ecgnat_hf/, model/, examples/")
    print(f"run it: cd {out} && pip install -r requirements.txt && python app.py")
    return 0


def _add_embed_and_export(sub) -> None:
    e = sub.add_parser(
        "embed",
        help="records or folders in, embeddings out (Parquet or NumPy .npz)",
        description="Embed ECG records with a checkpoint's encoder (pretraining or fine-tuned; eval mode, no "
        "masking, no dropout). A window's embedding is the mean of the final-stage tokens covering real "
        "samples; a record's is the mean over its windows (--per_window keeps one row per window). Output: "
        ".parquet (metadata columns + emb_0..emb_{hidden-1}) or .npz (array 'embeddings' + metadata arrays). "
        "Records that cannot be read are listed in the errors CSV (exit code 1 when any failed).",
    )
    e.add_argument("inputs", nargs="+", metavar="RECORD_OR_FOLDER",
                   help="record paths (with or without extension) and/or folders")
    e.add_argument("--model", "-m", required=True, help="checkpoint directory (or hub id in the local cache)")
    e.add_argument("--output", "-o", default="embeddings.parquet",
                   help="file to write: .parquet or .npz (default: embeddings.parquet)")
    e.add_argument("--errors_csv", default=None,
                   help="CSV of records that failed (default: <output stem>.errors.csv; header only if none)")
    e.add_argument("--per_window", action="store_true", help="one row per window (window_index, window_start_s)")
    e.add_argument("--lead_names", default=None, help='comma-separated leads to use, e.g. "I,II" (as in predict)')
    e.add_argument("--batch_size", type=int, default=64, help="windows per forward pass (default: 64)")
    e.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    e.add_argument("--strict", action="store_true", help="stop at the first bad record")
    e.add_argument("--no_progress", action="store_true", help="no progress bar")

    x = sub.add_parser(
        "export",
        help="checkpoint -> ONNX or torch.export graph with a dynamic length, checked against PyTorch",
        description="Export a checkpoint's encoder (and classification head, if any) with a dynamic batch and "
        "length, using the plain-PyTorch neighborhood-attention backend. Writes model.onnx (or model.pt2), "
        "export_config.json (inputs, outputs, lead order, sampling rate, shortest valid length, labels, "
        "thresholds, preprocessing) and preprocessor_config.json, then runs the export at two lengths on real "
        "preprocessed records and compares it with PyTorch (fails above --atol). See docs/deployment.md.",
    )
    x.add_argument("--model", "-m", required=True, help="checkpoint directory (or hub id in the local cache)")
    x.add_argument("--format", choices=["onnx", "torch_export"], default="onnx", help="default: onnx")
    x.add_argument("--output", "-o", default="ecgnat-export", help="folder to write (default: ecgnat-export)")
    x.add_argument("--atol", type=float, default=1e-4,
                   help="largest allowed |export - PyTorch| in the check (default: 1e-4)")
    x.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")

    h = sub.add_parser(
        "push",
        help="upload a hub-ready checkpoint folder (e.g. checkpoints/ecgnat-tiny-ptbxl-superdiagnostic) to the hub",
        description="Check that FOLDER is hub-ready (weights, config, feature extractor, remote code, model card) "
        "and upload it to REPO_ID with huggingface_hub (creates the repo if needed; log in first with "
        "`hf auth login` or pass --token).",
    )
    h.add_argument("folder", help="hub-ready checkpoint folder")
    h.add_argument("repo_id", help="target model repo, e.g. your-name/ecgnat-tiny-ptbxl-superdiagnostic")
    h.add_argument("--token", default=None, help="hub token (default: the logged-in one)")
    h.add_argument("--private", action="store_true", help="create the repo as private")
    h.add_argument("--revision", default=None, help="branch to push to")


# --------------------------------------------------------------------------------------------- helpers
def _split_global(argv: list[str]) -> tuple[list[str], str | None, list[str]]:
    """(global options, subcommand or None, arguments after it) without interpreting the latter."""
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            return argv[:i], None, argv[i:]
        if tok in _GLOBAL_WITH_VALUE:
            i += 2
            continue
        if tok.startswith("-"):
            i += 1
            continue
        return argv[:i], tok, argv[i + 1:]
    return argv, None, []


_BLAS_LIMIT = None  # keeps the threadpoolctl limit alive for the life of the process


def available_cores() -> int:
    """CPU cores this process may run on (affinity / cgroup-aware where the OS says so)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


#: subcommands whose torch default is every available core (inference); the recipes keep 1
_ALL_CORES_COMMANDS = ("predict", "plot", "app")


def _limit_threads(num_threads: int | None, command: str | None = None) -> None:
    """Apply the thread limits at run time too (see the note at the top of this module)."""
    global _BLAS_LIMIT
    if not (_USER_SET_THREADS["OPENBLAS_NUM_THREADS"] or _USER_SET_THREADS["MKL_NUM_THREADS"]):
        try:
            from threadpoolctl import threadpool_limits

            _BLAS_LIMIT = threadpool_limits(limits=1, user_api="blas")
        except Exception:  # noqa: BLE001 - threadpoolctl missing or no BLAS found: nothing to limit
            pass
    import torch

    if num_threads is not None:
        torch.set_num_threads(num_threads)
    elif _USER_SET_THREADS["OMP_NUM_THREADS"]:
        pass  # the user's OMP_NUM_THREADS: torch read it at import
    elif command in _ALL_CORES_COMMANDS:
        torch.set_num_threads(available_cores())
    else:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))


def _setup(args, command: str | None = None) -> None:
    level = getattr(logging, str(args.log_level).upper(), logging.WARNING)
    logging.basicConfig(level=level, format="ecgnat: %(levelname)s: %(message)s")
    if args.num_threads is not None and args.num_threads < 1:
        raise UsageError(f"--num_threads must be >= 1, got {args.num_threads}")
    _limit_threads(args.num_threads, command)


def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass


def _parse_leads(text: str | None) -> list[str] | dict[str, str] | None:
    """``--lead_names``: ``"I,II"`` -> ``["I", "II"]`` (leads to use, or the names of unnamed channels in
    order); ``"ECG=I"`` / ``"ECG1=I,ECG2=II"`` -> ``{"ECG": "I", ...}`` (rename channels by name).
    :class:`UsageError` for anything else."""
    if text is None:
        return None
    from .data.errors import LeadNameError
    from .data.leads import parse_lead_names
    from .models.ecgnat.feature_extraction_ecgnat import ECGLeadNameError, normalize_lead_name

    try:
        parsed = parse_lead_names(text)
    except LeadNameError as exc:
        raise UsageError(f"--lead_names: {exc.problem}") from None
    if not parsed:
        raise UsageError(f"--lead_names {text!r} names no lead")
    if isinstance(parsed, dict):
        return parsed
    for n in parsed:
        try:
            normalize_lead_name(n)
        except ECGLeadNameError as exc:
            raise UsageError(f"--lead_names: {exc} (to rename a channel, write CHANNEL=LEAD, e.g. ECG=I)") from None
    return parsed


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise UsageError(f"{name} must be >= 1, got {value}")


def _record_exists(p: Path) -> bool:
    return p.exists() or any(p.with_name(p.name + ext).exists() for ext in (".hea", ".mat"))


def _device(name: str | None):
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"--device {name!r}: {exc}") from None


def _load(model_path: str, device):
    from .inference import load_model_and_feature_extractor

    _quiet_transformers()
    if Path(model_path).exists() and not Path(model_path).is_dir():
        raise UsageError(f"--model {model_path}: not a checkpoint directory")
    # anything else: a checkpoint directory, or a hub id found in the local cache (HF_HUB_OFFLINE=1 works)
    from .inference import CheckpointError

    try:
        return load_model_and_feature_extractor(model_path, device=device)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"cannot load the checkpoint {model_path!r}: {exc}") from None


# --------------------------------------------------------------------------------------------- commands
def _run_recipe(command: str, rest: list[str]) -> int:
    module_name, _ = RECIPES[command]
    full = f"ecgnat_hf.recipes.{module_name}"
    try:
        module = importlib.import_module(full)
    except ModuleNotFoundError as exc:
        if exc.name in (full, "ecgnat_hf.recipes"):
            print(f"{PROG} {command}: the recipe module {full} is not available in this installation "
                  f"({exc}); reinstall ecgnat-hf", file=sys.stderr)
            return 1
        raise
    main_fn = module.main
    kwargs = {}
    try:  # recipes show the command that produced a checkpoint on its model card: give them ours
        if "command" in inspect.signature(main_fn).parameters:
            kwargs["command"] = shlex.join([PROG, command, *rest])
    except (TypeError, ValueError):
        pass
    saved_argv0 = sys.argv[0] if sys.argv else None
    try:
        if sys.argv:  # argparse in the recipe names itself after argv[0]: "usage: ecgnat finetune ..."
            sys.argv[0] = f"{PROG} {command}"
        result = main_fn(list(rest), **kwargs)
    except ValueError as exc:
        from .data.errors import ECGDataError

        if isinstance(exc, ECGDataError) or logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        # recipes reject bad arguments / configs with ValueError: a message, not a traceback
        print(f"{PROG} {command}: error: {exc}\n(run `{PROG} --log_level debug {command} ...` for the "
              "traceback)", file=sys.stderr)
        return 2
    finally:
        if saved_argv0 is not None:
            sys.argv[0] = saved_argv0
    # a recipe may return an exit code, or anything else (metrics, None) on success
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def _check_writable(option: str, path: Path) -> None:
    """Fail before any work when an output file cannot be written (a probe file is created and removed:
    permission bits do not stop root, and say nothing about /proc)."""
    from .output_paths import OutputPathError, check_output_file

    try:
        check_output_file(path, option)
    except OutputPathError as exc:
        raise UsageError(str(exc)) from None


def _finished_rows(path: Path) -> int:
    try:
        with open(path, encoding="utf-8") as f:
            return max(0, sum(1 for line in f if line.endswith("\n")) - 1)
    except OSError:
        return 0


def _cmd_predict(args) -> int:
    from .data.errors import ECGDataError
    from .inference import ResumeError, collect_record_paths, predict_records

    _check_positive("--batch_size", args.batch_size)
    if not args.chunk_s > 0:
        raise UsageError(f"--chunk_s must be > 0, got {args.chunk_s}")
    if args.sampling_rate is not None and not 0 < args.sampling_rate < float("inf"):
        raise UsageError(f"--sampling_rate must be a positive number of Hz, got {args.sampling_rate:g}")
    leads = _parse_leads(args.lead_names)
    missing = [x for x in args.inputs if not _record_exists(Path(x))]
    if missing:
        raise UsageError(f"no such record or folder: {', '.join(missing)}")
    records = collect_record_paths(args.inputs)
    if not records:
        raise UsageError(f"no ECG records (.hea or .mat files) found in {', '.join(args.inputs)}")
    output = Path(args.output)
    errors_csv = Path(args.errors_csv) if args.errors_csv else output.with_name(output.stem + ".errors.csv")
    timeline = Path(args.timeline) if args.timeline else None
    _check_writable("--output", output)
    _check_writable("--errors_csv", errors_csv)
    if timeline is not None:
        _check_writable("--timeline", timeline)
        if timeline.suffix.lower() not in (".csv", ".parquet", ".pq"):
            raise UsageError(f"--timeline {timeline}: give a .csv or .parquet file name")
    if len({p.resolve() for p in (output, errors_csv, timeline) if p is not None}) < (3 if timeline else 2):
        raise UsageError("--output, --errors_csv and --timeline must be different files")
    device = _device(args.device)
    model, fe = _load(args.model, device)
    if args.window_stride_s is not None:
        if not 0 < args.window_stride_s <= fe.window_s:
            raise UsageError(f"--window_stride_s must be > 0 and at most the checkpoint's window of {fe.window_s:g} s "
                             f"(a larger stride would skip part of every record), got {args.window_stride_s:g}")
        fe.window_stride_s = float(args.window_stride_s)
    try:
        df = predict_records(
            model, records, feature_extractor=fe, batch_size=args.batch_size, lead_names=leads,
            aggregate=args.aggregate, progress=not args.no_progress, output_csv=output, errors_csv=errors_csv,
            timeline=timeline, resume=args.resume, strict=args.strict, chunk_s=args.chunk_s,
            sampling_rate=args.sampling_rate,
        )
    except ResumeError as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        print(f"{PROG} predict: interrupted; {_finished_rows(output)} finished record(s) are in {output}"
              f"{' (rerun with --resume to continue)' if records else ''}", file=sys.stderr)
        return 130
    except ECGDataError as exc:  # --strict
        print(f"{PROG}: error: {exc}\n{PROG} predict: stopped at the first bad record (--strict; it is listed in "
              f"{errors_csv}); {_finished_rows(output)} finished record(s) are in {output}", file=sys.stderr)
        return 1
    errors = df.attrs.get("errors", [])
    print(f"wrote {len(df)} record(s) to {output}" + (f", windows to {timeline}" if timeline else ""))
    t = df.attrs.get("timing") or {}
    if t.get("windows") and t.get("seconds"):
        print(f"scored {t['windows']} windows ({t['recording_s'] / 3600:.3g} h of recording) in {t['seconds']:.1f} s: "
              f"{t['recording_s'] / t['seconds']:.0f}x real time with {_torch_threads()} torch thread(s)")
    source = df.attrs.get("thresholds_source")
    if source and source not in ("config", "argmax", "none"):
        print(f"{PROG} predict: note: labels use {source}", file=sys.stderr)
    if errors:
        print(f"{PROG} predict: {len(errors)} record(s) could not be used (listed in {errors_csv}):", file=sys.stderr)
        for e in errors[:10]:
            print(f"  {e['path']}: {e['error']}: {e['problem']}", file=sys.stderr)
        if len(errors) > 10:
            print(f"  ... and {len(errors) - 10} more", file=sys.stderr)
        return 1
    return 0


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _cmd_plot_timeline(args) -> int:
    """``ecgnat plot --timeline FILE``: class probabilities over each recording."""
    from .plotting.figures import plot_timeline

    path = Path(args.timeline)
    if not path.is_file():
        raise UsageError(f"--timeline {path}: no such file")
    if args.fusion_output or args.record:
        raise UsageError("--timeline draws a predict timeline file; it takes no RECORD or --fusion_output")
    output = Path(args.output) if args.output else path.with_name(path.stem + ".png")
    _check_writable("--output", output)
    thresholds = None
    if args.model:  # only the config: the thresholds drawn as dashed lines
        from transformers import AutoConfig

        from .training.thresholds import label_names_from_config, thresholds_from_config

        try:
            config = AutoConfig.from_pretrained(args.model)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot load the checkpoint config {args.model!r}: {exc}") from None
        values, _ = thresholds_from_config(config)
        if values is not None:
            thresholds = dict(zip(label_names_from_config(config), map(float, values)))
    try:
        plot_timeline(path, output, record_id=args.record_id, title=args.title, thresholds=thresholds)
    except (ValueError, KeyError) as exc:
        raise UsageError(f"--timeline {path}: {exc}") from None
    print(f"wrote {output}")
    return 0


#: seconds of record one printout shows (4 columns of 2.5 s)
_PLOT_SPAN_S = 10.0


def _plot_output(option: str, given: str | None, default_name: str) -> Path:
    """Where a figure goes, said truthfully: an existing folder (or a name ending in /) receives
    ``default_name`` inside it; a name without an extension gets ``.png`` (what matplotlib would add
    silently); an extension matplotlib cannot write is refused. Checked for writing before any work."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if given is None:
        out = Path(default_name)
    elif Path(given).is_dir() or given.endswith(("/", os.sep)):
        out = Path(given) / default_name
    else:
        out = Path(given)
        if not out.suffix:
            out = out.with_name(out.name + ".png")
    formats = FigureCanvasAgg(Figure()).get_supported_filetypes()
    if out.suffix.lower().lstrip(".") not in formats:
        raise UsageError(f"{option} {given}: cannot write a {out.suffix} figure; give a .png, .pdf or .svg file name "
                         "(or a folder)")
    _check_writable(option, out)
    return out


def _cmd_plot(args) -> int:
    import numpy as np

    from .data.errors import ECGDataError, InvalidSignalError, LeadNameError
    from .data.records import read_record
    from .models.ecgnat.feature_extraction_ecgnat import LEAD_ALIASES, ECGInputError, _squash
    from .plotting.figures import plot_ecg_12lead, plot_lead_fusion

    _check_positive("--top_k", args.top_k)
    _check_positive("--batch_size", args.batch_size)
    if args.sampling_rate is not None and not 0 < args.sampling_rate < float("inf"):
        raise UsageError(f"--sampling_rate must be a positive number of Hz, got {args.sampling_rate:g}")
    spec = _parse_leads(args.lead_names)
    leads = spec
    rec_path = Path(args.record)
    if rec_path.suffix.lower() in (".hea", ".dat"):
        rec_path = rec_path.with_suffix("")
    if not _record_exists(rec_path):
        raise UsageError(f"no such record: {args.record}")
    if args.fusion_output and not args.model:
        raise UsageError("--fusion_output needs --model (the weights come from the model)")
    model = fe = None
    if args.model:
        model, fe = _load(args.model, _device(args.device))

    read_kw = {"sampling_rate": args.sampling_rate} if args.sampling_rate is not None else {}
    if isinstance(leads, dict):  # CHANNEL=LEAD: the record's channels are renamed as it is read
        read_kw["lead_names"] = leads
        leads = None
    elif leads is not None and rec_path.suffix.lower() == ".mat" and not rec_path.with_suffix(".hea").is_file():
        read_kw["lead_names"] = leads  # a MATLAB file without a header: the names of its channels
    # the header (and, for a WFDB record, nothing of the signal) first: the printout reads only the 10 s it
    # shows, so a 24-hour recording does not have to fit in memory (ECGDataError -> exit 1 in main())
    probe = read_record(rec_path, start=0, stop=0, **read_kw)
    n_total = int(probe.metadata.get("record_samples", probe.n_samples))
    fs = float(probe.sampling_rate)
    duration_s = n_total / fs
    if n_total == 0:
        raise InvalidSignalError(probe.path, "the record has no samples: nothing to plot")
    if args.start_s < 0 or args.start_s >= duration_s:
        raise UsageError(f"--start_s {args.start_s:g} is outside the record ({duration_s:.1f} s)")
    beatnet = model is not None and getattr(model.config, "model_type", None) == "beatnet"
    if beatnet:  # BEAT-Net's lead attention is computed on the whole record
        lo, hi = 0, n_total
    else:
        lo = int(args.start_s * fs)
        hi = min(n_total, lo + int(np.ceil(_PLOT_SPAN_S * fs)) + 1)
    record = read_record(rec_path, start=lo, stop=hi, **read_kw)
    from .data.quality import check_record_quality

    quality = check_record_quality(record, require_usable=False)
    calibration = list(record.metadata.get("calibration_flags") or [])
    findings = calibration + list(quality.flags)
    summary = "; ".join(calibration + ([quality.short_summary()] if quality.flags else []))
    if findings:  # drawn as recorded, but said out loud: a flat line must not pass for an ECG
        span = "" if (lo, hi) == (0, n_total) else f" (in the {(hi - lo) / fs:g} s shown)"
        print(f"{PROG} plot: {record.path}: quality{span}: {summary}", file=sys.stderr)
    output = _plot_output("--output", args.output, f"{record.record_id}_ecg.png")
    fusion_out = None
    if model is not None and not beatnet:
        fusion_out = (_plot_output("--fusion_output", args.fusion_output, f"{record.record_id}_lead_fusion.png")
                      if args.fusion_output else output.with_name(output.stem + "_lead_fusion.png"))

    # the printout shows every standard lead of the record (first of any duplicates)
    rows, names, seen = [], [], set()
    for i, n in enumerate(record.lead_names):
        c = LEAD_ALIASES.get(_squash(n))
        if c is not None and c not in seen:
            seen.add(c)
            rows.append(i)
            names.append(c)
    if not rows and leads is not None and len(leads) == record.n_leads:  # override of unnamed channels
        rows, names = list(range(record.n_leads)), [LEAD_ALIASES[_squash(n)] for n in leads]
    if not rows:
        raise LeadNameError(record.path, f"no standard ECG lead among {', '.join(record.lead_names)} to plot; "
                            "pass --lead_names to name the channels")
    meta = record.metadata or {}
    title = args.title
    if title is None:
        parts = [record.record_id]
        if meta.get("age") is not None:
            parts.append(f"age {meta['age']:g}")
        if meta.get("sex"):
            parts.append(str(meta["sex"]))
        title = ", ".join(parts)
    if findings:
        title += f"  [quality: {summary}]"

    if beatnet:
        # BEAT-Net: beats marked on the record and the spatial encoder's lead attention (no lead fusion)
        from .plotting.lead_attention import beatnet_plot_command

        return beatnet_plot_command(args, model, fe, record, leads, rows, names, title, output)

    prediction = None
    if model is not None:
        from .inference import _as_data_error, scores_to_probabilities, window_outputs
        from .streaming import RecordStream

        # the whole record, chunk by chunk (bounded memory), exactly as ecgnat predict scores it
        prob_sum, n_windows, weight_sum, n_tokens, present = None, 0, None, 0, None
        try:
            stream = RecordStream(rec_path, fe, lead_names=spec, sampling_rate=args.sampling_rate)
            for chunk in stream:
                logits, weights = window_outputs(model, chunk.features, batch_size=args.batch_size,
                                                 output_lead_weights=True)
                p = scores_to_probabilities(logits, model.config)
                prob_sum = p.sum(axis=0) if prob_sum is None else prob_sum + p.sum(axis=0)
                n_windows += len(p)
                if present is None:
                    present = np.asarray(chunk.features["lead_mask"][0]).astype(bool)
                for w in weights or []:
                    weight_sum = w.sum(axis=0) if weight_sum is None else weight_sum + w.sum(axis=0)
                    n_tokens += w.shape[0]
        except ECGDataError:
            raise
        except ECGInputError as exc:
            raise _as_data_error(exc, record.path) from exc
        probs = prob_sum / max(n_windows, 1)
        id2label = model.config.id2label
        labels = [str(id2label.get(i, f"LABEL_{i}")) for i in range(len(probs))]
        prediction = dict(sorted(zip(labels, map(float, probs)), key=lambda kv: -kv[1])[: args.top_k])
        notes = []
        if n_windows > 1:
            notes.append(f"predictions: mean over {n_windows} windows of {fe.window_s:g} s")
        if leads is not None:
            notes.append(f"model input: {', '.join(LEAD_ALIASES[_squash(u)] for u in stream.lead_names_used)}")
        if notes:
            title += "  (" + "; ".join(notes) + ")"

    plot_ecg_12lead(record.signal[rows], fs, names, title=title, prediction=prediction,
                    path=output, start_s=args.start_s, max_predictions=args.top_k,
                    offset_s=lo / fs, record_duration_s=duration_s)
    print(f"wrote {output}")

    if model is not None and weight_sum is None:
        print(f"{PROG} plot: the model returned no lead-fusion weights; no fusion plot written", file=sys.stderr)
    elif model is not None:
        mean = (weight_sum / max(n_tokens, 1))[present]
        lead_labels = [n for n, keep in zip(fe.lead_names, present) if keep]
        if getattr(model.config, "lead_fusion", "attention") == "mean":
            note = " (lead_fusion='mean': fixed equal weights)"
        else:
            note = ""
        plot_lead_fusion(
            mean, lead_labels, fusion_out,
            title=f"Lead-fusion attention, {record.record_id}: mean over {n_tokens} tokens"
            f" of {n_windows} window(s){note}",
        )
        print(f"wrote {fusion_out}")
    return 0


def _cmd_embed(args) -> int:
    import pandas as pd

    from .embeddings import EMBEDDING_FORMATS, embed_records, write_embeddings
    from .inference import ERROR_COLUMNS, collect_record_paths, write_csv_atomic

    _check_positive("--batch_size", args.batch_size)
    leads = _parse_leads(args.lead_names)
    output = Path(args.output)
    if output.suffix.lower() not in EMBEDDING_FORMATS:
        raise UsageError(f"--output {output}: give a {' or '.join(EMBEDDING_FORMATS)} file name")
    missing = [x for x in args.inputs if not _record_exists(Path(x))]
    if missing:
        raise UsageError(f"no such record or folder: {', '.join(missing)}")
    records = collect_record_paths(args.inputs)
    if not records:
        raise UsageError(f"no ECG records (.hea or .mat files) found in {', '.join(args.inputs)}")
    errors_csv = Path(args.errors_csv) if args.errors_csv else output.with_name(output.stem + ".errors.csv")
    _check_writable("--output", output)  # before the work: the file is only written at the end
    _check_writable("--errors_csv", errors_csv)
    _quiet_transformers()
    if Path(args.model).exists() and not Path(args.model).is_dir():
        raise UsageError(f"--model {args.model}: not a checkpoint directory")
    from .embeddings import load_encoder

    try:
        encoder, fe = load_encoder(args.model, device=_device(args.device))
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"cannot load the checkpoint {args.model!r}: {exc}") from None
    df = embed_records(encoder, records, feature_extractor=fe, lead_names=leads, per_window=args.per_window,
                       window_batch_size=args.batch_size, progress=not args.no_progress, strict=args.strict)
    write_embeddings(df, output)
    errors = df.attrs.get("errors", [])
    write_csv_atomic(pd.DataFrame(errors, columns=list(ERROR_COLUMNS)), errors_csv)
    n_rec = df["path"].nunique() if len(df) else 0
    print(f"wrote {len(df)} embedding(s) of size {len([c for c in df.columns if str(c).startswith('emb_')])} "
          f"({n_rec} record(s)) to {output}")
    if errors:
        print(f"{PROG} embed: {len(errors)} record(s) could not be used (listed in {errors_csv}):", file=sys.stderr)
        for err in errors[:10]:
            print(f"  {err['path']}: {err['error']}: {err['problem']}", file=sys.stderr)
        return 1
    return 0


def _cmd_push(args) -> int:
    from .training.hub import check_hub_ready, push_to_hub

    folder = Path(args.folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    problems = check_hub_ready(folder)
    if problems:
        raise UsageError(f"{folder} is not hub-ready: " + "; ".join(problems))
    info = push_to_hub(folder, args.repo_id, token=args.token, private=args.private or None, revision=args.revision)
    print(f"pushed {folder} to {getattr(info, 'commit_url', None) or args.repo_id}")
    return 0


def _cmd_export(args) -> int:
    from .export import export_model

    if Path(args.model).exists() and not Path(args.model).is_dir():
        raise UsageError(f"--model {args.model}: not a checkpoint directory")
    if not args.atol > 0:
        raise UsageError(f"--atol must be positive, got {args.atol}")
    from .output_paths import OutputPathError, check_output_dir

    try:
        check_output_dir(args.output, "--output")  # before the checkpoint: a write failure is not a load failure
    except OutputPathError as exc:
        raise UsageError(str(exc)) from None
    _quiet_transformers()
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        if args.format == "onnx":
            raise UsageError(f"--format onnx needs onnx, onnxscript and onnxruntime ({exc}); "
                             "pip install 'ecgnat-hf[export]'") from None
    try:
        info = export_model(args.model, args.output, format=args.format, atol=args.atol, opset_version=args.opset)
    except (OSError, KeyError) as exc:
        if _under(getattr(exc, "filename", None), args.output) or isinstance(exc, OutputPathError):
            raise UsageError(f"--output {args.output}: cannot write the export: {exc}") from None
        raise UsageError(f"cannot load the checkpoint {args.model!r}: {exc}") from None
    except RuntimeError as exc:  # the check against PyTorch failed: files are kept for inspection
        print(f"{PROG} export: error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.output)
    print(f"wrote {out / info['file']}, {out / 'export_config.json'}, {out / 'preprocessor_config.json'}")
    outputs = ", ".join(f"{k} ({', '.join(map(str, v['shape']))})" for k, v in info["outputs"].items())
    print(f"inputs: input_values (batch, {len(info['lead_names'])}, length) float32 in the lead order "
          f"{','.join(info['lead_names'])} at {info['sampling_rate']:g} Hz, lead_mask (batch, "
          f"{len(info['lead_names'])}) bool; outputs: {outputs}")
    print(f"valid lengths: >= {info['min_length']} samples ({info['min_length'] / info['sampling_rate']:g} s)"
          + ("" if info["max_length"] is None else f", <= {info['max_length']}")
          + "; shorter input gives wrong numbers in bare onnxruntime: run the export through "
            "ecgnat_hf.export.load_exported, which refuses it")
    check = info["check"]
    print(f"check against PyTorch at lengths {check['lengths']}: max |difference| {check['max_abs_difference']:.2e}"
          f" (limit {check['atol']:g})")
    return 0


def _under(filename, folder) -> bool:
    """``filename`` (an OSError's) lies in ``folder``."""
    if not filename:
        return False
    try:
        return Path(os.path.abspath(os.fspath(filename))).is_relative_to(Path(os.path.abspath(folder)))
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ecgnat`` console script; returns the exit code (also when called in-process)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    global_args, command, rest = _split_global(argv)
    try:
        if command in RECIPES:
            args = parser.parse_args(global_args)
            _setup(args, command)
            return _run_recipe(command, rest)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        _setup(args, args.command)
        if args.command == "predict":
            return _cmd_predict(args)
        if args.command == "plot" and args.timeline is not None:
            return _cmd_plot_timeline(args)
        if args.command == "plot":
            if args.record is None:
                raise UsageError("give a RECORD to plot, or --timeline FILE")
            if args.beats:
                return _cmd_plot_beats(args)
            return _cmd_plot(args)
        if args.command == "embed":
            return _cmd_embed(args)
        if args.command == "export":
            return _cmd_export(args)
        if args.command == "push":
            return _cmd_push(args)
        if args.command == "app":
            return _cmd_app(args)
        if args.command == "space":
            return _cmd_space(args)
        parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse catches it first
    except UsageError as exc:
        sub = f" {command}" if command else ""
        print(f"usage: {PROG}{sub} ...\n{PROG}{sub}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # argparse (here or in a recipe): --help, --version, usage errors
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (results written so far are kept)", file=sys.stderr)
        return 130
    except Exception as exc:  # typed data errors name the record and the problem
        from .data.errors import ECGDataError
        from .models.ecgnat.feature_extraction_ecgnat import ECGInputError

        if isinstance(exc, (ECGDataError, ECGInputError)):
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
