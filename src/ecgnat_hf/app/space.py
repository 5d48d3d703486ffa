"""``ecgnat space``: write a Hugging Face Space folder that runs the same app as ``ecgnat app``.

The folder holds everything the app needs, so ``python app.py`` in it works on a machine without this
repository (``pip install -r requirements.txt`` first):

* ``app.py``: starts the app (``--host``/``--port``; on a Space, Gradio's ``GRADIO_SERVER_NAME`` /
  ``GRADIO_SERVER_PORT`` environment variables);
* ``ecgnat_hf/``: a copy of this package's code (readers, streaming inference, plots, the app), without
  the bundled data set;
* ``model/``: the checkpoint (config, weights, preprocessor config, its remote-code files and model card),
  copied from a local folder or from the hub cache;
* ``examples/``: the example records (PTB-XL, CC-BY-4.0, with its licence);
* ``requirements.txt``: this package's dependencies and gradio;
* ``README.md``: the Space metadata block (``sdk: gradio``, ``app_file: app.py``) and a description.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["write_space", "space_requirements"]

_SKIP_MODEL = ("checkpoint-", ".", "_", "training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state",
               "trainer_state.json")

_APP_PY = '''"""ECG-NAT demo Space: drop an ECG record, see the printout, labels, lead attention, beats and timeline.

Runs the same app as `ecgnat app` (https://github.com/ecgnat-hf/ecgnat_hf), from the copy of the package
in ./ecgnat_hf and the checkpoint in ./model. Locally: pip install -r requirements.txt; python app.py
(binds 127.0.0.1:7860; --host/--port to change). Research use only: not a medical device.
"""
import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the copy of ecgnat_hf beside this file, before any installed one

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")  # BLAS threads would fight torch's on small machines

from ecgnat_hf.app.interface import launch_app  # noqa: E402
from ecgnat_hf.inference import CheckpointError  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description="ECG-NAT demo app")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--concurrency", type=int, default={concurrency})
    parser.add_argument("--max_file_mb", type=float, default={max_file_mb})
    args = parser.parse_args()
    import ecgnat_hf

    print(f"ecgnat_hf code: {{Path(ecgnat_hf.__file__).parent}}", flush=True)
    try:
        launch_app(HERE / "model", host=args.host, port=args.port, concurrency=args.concurrency,
                   max_file_mb=args.max_file_mb, examples_dir=HERE / "examples")
    except (CheckpointError, OSError, ValueError) as exc:
        print(f"app.py: cannot start: {{exc}}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''

_README = """---
title: {title}
emoji: 🫀
colorFrom: red
colorTo: gray
sdk: gradio
sdk_version: {gradio_version}
app_file: app.py
pinned: false
license: apache-2.0
short_description: Drop an ECG record and see what {kind} makes of it
---

# {title}

Drop your own ECG record and see what a {kind} checkpoint makes of it: the clinical 12-lead printout
(25 mm/s, 10 mm/mV), the labels above the checkpoint's decision thresholds with every class's probability,
the detected beats and the model's lead attention and, for records longer than one {window_s:g} s window,
the timeline of class probabilities with the time spent above each threshold (AF burden for an AF class).
Predictions download as CSV and JSON, figures as PNG.

Accepted: a WFDB record (`.hea` + `.dat`), a PhysioNet/CinC Challenge record (`.hea` + `.mat`), a `.zip` of
either, or a `.csv` with one column per lead (type its sampling rate). Channels not named as standard
leads (`ECG`, `ch1`) can be named on the page. Uploads up to {max_file_mb:g} MiB; long recordings (24-hour
Holters) are read and scored piece by piece.

Model: `model/` ({classes}). Examples: PTB-XL records (Wagner et al. 2020, PhysioNet, CC-BY-4.0; see
`examples/LICENSE.txt`).

Run it locally: `pip install -r requirements.txt && python app.py` (http://127.0.0.1:7860).

> Research use only. Not a medical device, not validated for clinical decisions.
"""


def space_requirements() -> list[str]:
    """This package's run-time dependencies (no extras) and gradio, as requirement lines."""
    from importlib.metadata import PackageNotFoundError, requires, version

    lines: list[str] = []
    try:
        for req in requires("ecgnat-hf") or []:
            if "extra ==" not in req:
                lines.append(req.split(";")[0].strip())
    except PackageNotFoundError:  # a source tree that is not installed: the pyproject.toml beside it
        pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
        text = pyproject.read_text() if pyproject.is_file() else ""
        block = text.split("dependencies = [", 1)[1].split("]", 1)[0] if "dependencies = [" in text else ""
        lines = [x.strip().strip(",").strip('"') for x in block.splitlines() if x.strip().startswith('"')]
    try:
        lines.append(f"gradio>={version('gradio')}")
    except PackageNotFoundError:
        lines.append("gradio>=5")
    return lines


def _resolve_model(model: str | os.PathLike) -> Path:
    p = Path(os.fspath(model))
    if p.is_dir():
        return p
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(os.fspath(model), local_files_only=True))


def _copy_model(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    for item in sorted(src.iterdir()):
        if item.name.startswith(_SKIP_MODEL) or item.is_dir():
            continue
        shutil.copy2(item.resolve(), dest / item.name)  # resolve: hub-cache files are symlinks to blobs


def write_space(model: str | os.PathLike, output_dir: str | os.PathLike, *, title: str | None = None,
                concurrency: int = 1, max_file_mb: float = 1024, overwrite: bool = False) -> Path:
    """Write the Space folder for ``model`` (a local checkpoint folder or a hub id in the local cache) to
    ``output_dir`` and return its path. The checkpoint is loaded first: one without a trained classification
    head raises :class:`ecgnat_hf.inference.CheckpointError`. The folder is written beside its target and
    renamed into place; an existing non-empty ``output_dir`` is refused unless ``overwrite``."""
    from importlib.metadata import PackageNotFoundError, version

    import ecgnat_hf

    from ..training.thresholds import label_names_from_config
    from .analysis import model_kind
    from .interface import EXAMPLES, example_records, load_checkpoint

    out = Path(output_dir).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (pass overwrite=True / --overwrite to replace it)")
    src = _resolve_model(model)
    m, fe = load_checkpoint(src, device="cpu")  # refuses a checkpoint without a trained head
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        package = Path(ecgnat_hf.__file__).resolve().parent
        shutil.copytree(package, tmp / "ecgnat_hf", ignore=shutil.ignore_patterns(
            "__pycache__", "*.pyc", "ptbxl100", "*.egg-info"))
        _copy_model(src, tmp / "model")
        ex = tmp / "examples"
        ex.mkdir()
        for rec in example_records().values():
            for f in rec.parent.glob(rec.name + ".*"):
                shutil.copy2(f, ex / f.name)
        try:
            from ..sample_data import sample_dir

            shutil.copy2(sample_dir() / "LICENSE.txt", ex / "LICENSE.txt")
        except (FileNotFoundError, OSError):
            pass
        (tmp / "app.py").write_text(_APP_PY.format(concurrency=int(concurrency), max_file_mb=float(max_file_mb)),
                                    encoding="utf-8")
        (tmp / "requirements.txt").write_text("\n".join(space_requirements()) + "\n", encoding="utf-8")
        try:
            gradio_version = version("gradio")
        except PackageNotFoundError:
            gradio_version = "5.0.0"
        names = label_names_from_config(m.config)
        kind = model_kind(m)
        (tmp / "README.md").write_text(_README.format(
            title=title or f"ECG-NAT demo: {kind}", gradio_version=gradio_version, kind=kind, window_s=float(fe.window_s),
            max_file_mb=float(max_file_mb),
            classes=f"{len(names)} classes: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}"), encoding="utf-8")
        if len(list(ex.glob("*.hea"))) < len(EXAMPLES):
            (ex / "README.txt").write_text("Some bundled examples were not found when this folder was written.\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
