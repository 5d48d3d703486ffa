"""The Gradio page of ``ecgnat app``: drop a record (or pick an example), see what the model makes of it.

:func:`build_app` makes the ``gradio.Blocks``; :func:`launch_app` loads the checkpoint (refusing one
without a trained head), makes the temporary folder, and serves the page with Gradio's queue.

Safety of the server:

* it binds ``127.0.0.1`` unless told otherwise, and opens no public share link unless ``share=True``;
* uploads, the per-request working copies and the result files live in one temporary folder made at
  start (Gradio's upload cache is pointed there through ``GRADIO_TEMP_DIR``). Each request's working copy
  (the record as copied, unpacked or converted) is removed when the request ends; results and uploads
  older than an hour are deleted every hour; the whole folder is removed when the app stops;
* the handler takes only uploaded files (refused when they are not in that folder) and the names of
  the bundled examples: no path typed on the page is ever read;
* every failure becomes a message on the page: the package's typed errors and upload problems as they
  are (they name the file and the problem); anything else as a short generic message, the traceback
  going to the server's log only;
* Gradio refuses uploads larger than ``max_file_size`` before they reach the handler.
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

logger = logging.getLogger("ecgnat_hf.app")

__all__ = ["build_app", "launch_app", "load_checkpoint", "example_records", "EXAMPLES", "DEFAULT_MAX_FILE_MB"]

#: bundled PTB-XL records offered as examples (fold 9: held out from the demo's training), with their
#: PTB-XL statements
EXAMPLES = {
    "00010_lr": "PTB-XL 00010: sinus rhythm, normal ECG",
    "00008_lr": "PTB-XL 00008: sinus rhythm, inferior myocardial infarction",
    "00017_lr": "PTB-XL 00017: atrial flutter / atrial fibrillation",
    "00287_lr": "PTB-XL 00287: complete left bundle branch block, ventricular extrasystoles",
}
DEFAULT_MAX_FILE_MB = 1024
_RESULT_MAX_AGE_S = 3600


def example_records(examples_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """``{label: record path}`` of the examples found in ``examples_dir`` (default: the bundled sample)."""
    if examples_dir is None:
        try:
            from ..sample_data import sample_dir

            base = sample_dir() / "records100" / "00000"
        except FileNotFoundError:
            return {}
    else:
        base = Path(examples_dir)
    return {label: base / rid for rid, label in EXAMPLES.items() if (base / f"{rid}.hea").is_file()}


def load_checkpoint(model: str | os.PathLike, device: str | None = None):
    """``(model, feature_extractor)`` from a local folder or an (offline-cached) hub id; raises
    :class:`ecgnat_hf.inference.CheckpointError` for a checkpoint without a trained classification head."""
    import torch

    from ..inference import load_model_and_feature_extractor

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_model_and_feature_extractor(os.fspath(model), device=device)


def _model_header(model, fe, source: str, concurrency: int = 1, max_file_mb: float = DEFAULT_MAX_FILE_MB) -> str:
    from ..training.thresholds import label_names_from_config, thresholds_from_config
    from .analysis import model_kind

    names = label_names_from_config(model.config)
    _, src = thresholds_from_config(model.config)
    leads = ", ".join(getattr(fe, "lead_names", []) or [])
    thr = {"config": "per-class decision thresholds from the checkpoint",
           "argmax": "the most probable class (single-label)"}.get(src, f"thresholds: {src}")
    return (f"## ECG-NAT app: {model_kind(model)} `{Path(source).name or source}`\n\n"
            f"{len(names)} classes ({', '.join(names[:12])}{' ...' if len(names) > 12 else ''}); labels use {thr}. "
            f"Input: {fe.sampling_rate:g} Hz, windows of {fe.window_s:g} s; leads {leads}.\n\n"
            "Drop a WFDB record (`.hea` + `.dat`), a Challenge record (`.hea` + `.mat`), a `.zip` of either, or a "
            f"`.csv` with one column per lead (type its sampling rate), or pick an example (uploads up to "
            f"{max_file_mb:g} MiB; {concurrency} analysis at a time, others wait in the queue). "
            "**Research use only: not a medical device, not for clinical decisions.**")


class _Runner:
    """The handler behind the Analyse button (kept as an object so tests can call it without a browser)."""

    def __init__(self, model, fe, root: Path, examples: dict[str, Path], max_bytes: int, num_workers: int = 1):
        self.model, self.fe, self.root, self.examples, self.max_bytes = model, fe, root, examples, max_bytes
        self.num_workers = max(1, int(num_workers))
        (root / "work").mkdir(parents=True, exist_ok=True)
        (root / "results").mkdir(parents=True, exist_ok=True)

    def _cleanup_results(self) -> None:
        now = time.time()
        for d in (self.root / "results").iterdir():
            try:
                if now - d.stat().st_mtime > _RESULT_MAX_AGE_S:
                    shutil.rmtree(d, ignore_errors=True)
            except OSError:
                pass

    def run(self, files, example, lead_text, csv_rate, csv_units, start_s, progress=None) -> dict[str, Any]:
        """Returns ``{"ok", "message" (markdown), "table", "figures", "downloads"}``; never raises."""
        from ..data.errors import ECGDataError
        from ..data.leads import parse_lead_names
        from ..models.ecgnat.feature_extraction_ecgnat import ECGInputError, ECGLeadNameError
        from .analysis import analyse_record
        from .uploads import UploadError, prepare_record

        self._cleanup_results()
        key = uuid.uuid4().hex
        work = self.root / "work" / key
        out = self.root / "results" / key
        name = "the record"
        try:
            try:
                leads = parse_lead_names(lead_text) if lead_text and str(lead_text).strip() else None
            except ECGDataError as exc:
                raise UploadError(f"lead names: {exc.problem}") from None
            paths = [f if isinstance(f, (str, os.PathLike)) else getattr(f, "name", None) for f in (files or [])]
            paths = [p for p in paths if p]
            if paths:
                name = ", ".join(Path(p).name for p in paths[:3])
                record = prepare_record(paths, work, upload_root=self.root, csv_sampling_rate=csv_rate,
                                        csv_units=csv_units or "mV", max_bytes=self.max_bytes)
            elif example:
                if example not in self.examples:
                    raise UploadError(f"unknown example {example!r}")
                record, name = self.examples[example], example
            else:
                raise UploadError("no record yet: drop a file or pick an example")
            t0 = time.monotonic()
            logger.info("request %s: analysing %s", key[:8], name)  # the queue's order, in the server's log
            result = analyse_record(self.model, self.fe, record, out, lead_names=leads, start_s=start_s or 0.0,
                                    progress=progress, num_workers=self.num_workers)
            logger.info("request %s: done in %.2f s", key[:8], time.monotonic() - t0)
            return {"ok": True, "message": result.summary_markdown(), "table": result.table,
                    "figures": result.figures, "downloads": [str(p) for p in result.downloads]}
        except (UploadError, ECGDataError, ECGInputError) as exc:
            text = str(exc)
            for prefix in (str(work) + os.sep, str(work)):  # the server's folders are not the user's business
                text = text.replace(prefix, "")
            if isinstance(exc, ECGLeadNameError) and "lead names:" not in text:
                text += (". Name the file's channels in the 'Lead names' box, in order (e.g. II,V5) or by name "
                         "(e.g. ECG1=II, ECG2=V5).")
            logger.info("refused %s: %s", name, text)
            return {"ok": False, "message": f"### Could not analyse {name}\n\n{_escape(text)}", "table": None,
                    "figures": {}, "downloads": []}
        except MemoryError:
            logger.exception("out of memory on %s", name)
            return {"ok": False, "message": f"### Could not analyse {name}\n\nThe server ran out of memory.",
                    "table": None, "figures": {}, "downloads": []}
        except Exception:  # noqa: BLE001 - no traceback reaches the page; the log has it
            logger.exception("unexpected error on %s", name)
            return {"ok": False, "message": f"### Could not analyse {name}\n\nAn unexpected error happened on the "
                    "server (it is in the server's log). The app is still running: try another file.",
                    "table": None, "figures": {}, "downloads": []}
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _escape(text: str) -> str:
    """Markdown-safe message text (file names with underscores or asterisks are shown as they are)."""
    for ch in ("\\", "*", "_", "`", "#", "<", ">", "[", "]"):
        text = text.replace(ch, "\\" + ch)
    return text


def build_app(model, fe, *, root: Path, source: str = "", examples: dict[str, Path] | None = None,
              max_file_mb: float = DEFAULT_MAX_FILE_MB, concurrency: int = 1, num_workers: int = 1):
    """The ``gradio.Blocks`` page for ``model`` / ``fe``. ``root``: the app's temporary folder, which must be
    Gradio's upload folder (``GRADIO_TEMP_DIR``; :func:`launch_app` sets it): uploads elsewhere are refused.
    ``concurrency``: the queue's setting, stated on the page. ``num_workers``: threads scoring one
    analysis's window batches at once (see :func:`ecgnat_hf.inference.window_outputs`)."""
    import gradio as gr

    examples = example_records() if examples is None else examples
    runner = _Runner(model, fe, root, examples, int(max_file_mb * 2**20), num_workers=num_workers)
    with gr.Blocks(title="ECG-NAT app", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(_model_header(model, fe, source, concurrency, max_file_mb), elem_id="header")
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                files = gr.File(label=f"ECG record: .hea + .dat, .hea + .mat, .zip or .csv (up to {max_file_mb:g} MiB)",
                                file_count="multiple",
                                elem_id="upload", height=140)
                example = gr.Dropdown(choices=list(examples), value=None, label="... or an example record",
                                      elem_id="example")
                leads = gr.Textbox(label="Lead names (only when the file's channels are not named as standard leads)",
                                   placeholder="II,V5   or   ECG1=II, ECG2=V5", elem_id="leads")
                with gr.Row():
                    rate = gr.Number(label="CSV sampling rate (Hz)", value=None, elem_id="csv-rate", minimum=0)
                    units = gr.Radio(["mV", "uV"], value="mV", label="CSV units", elem_id="csv-units")
                start = gr.Number(label="Printout starts at (s)", value=0, minimum=0, elem_id="start")
                button = gr.Button("Analyse", variant="primary", elem_id="analyse")
            with gr.Column(scale=2):
                status = gr.Markdown("Results appear here.", elem_id="status")
                table = gr.Dataframe(label="Every class: probability, threshold, time above threshold",
                                     interactive=False, elem_id="probabilities", visible=False)
        printout = gr.Image(label="12-lead printout (25 mm/s, 10 mm/mV)", type="filepath", elem_id="printout",
                            visible=False, buttons=["download", "fullscreen"], show_label=False)
        attention = gr.Image(label="Detected beats and lead attention", type="filepath", elem_id="attention",
                             visible=False, buttons=["download", "fullscreen"], show_label=False)
        timeline = gr.Image(label="Timeline: class probabilities over the recording", type="filepath",
                            elem_id="timeline", visible=False, buttons=["download", "fullscreen"], show_label=False)
        downloads = gr.File(label="Downloads: predictions (CSV, JSON), timeline (CSV), figures (PNG)",
                            file_count="multiple", elem_id="downloads", visible=False, interactive=False)

        def analyse(files_, example_, leads_, rate_, units_, start_, progress=gr.Progress()):
            def report(fraction, text):
                progress(fraction, desc=text)

            r = runner.run(files_, example_, leads_, rate_, units_, start_, progress=report)
            figs = r["figures"]
            return (
                r["message"],
                gr.update(value=r["table"], visible=r["table"] is not None),
                gr.update(value=str(figs["printout"]) if "printout" in figs else None, visible="printout" in figs),
                gr.update(value=str(figs["beats_lead_attention"]) if "beats_lead_attention" in figs else None,
                          visible="beats_lead_attention" in figs),
                gr.update(value=str(figs["timeline"]) if "timeline" in figs else None, visible="timeline" in figs),
                gr.update(value=r["downloads"] or None, visible=bool(r["downloads"])),
            )

        button.click(analyse, [files, example, leads, rate, units, start],
                     [status, table, printout, attention, timeline, downloads], api_visibility="private")
        files.upload(lambda: None, None, example, api_visibility="private", queue=False)
        example.input(lambda: None, None, files, api_visibility="private", queue=False)
    demo.runner = runner
    return demo


def _cores_available() -> int:
    """CPU cores this process may run on (its affinity where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def launch_app(model: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
               concurrency: int = 1, max_queue: int = 16, max_file_mb: float = DEFAULT_MAX_FILE_MB,
               examples_dir: str | os.PathLike | None = None, device: str | None = None, block: bool = True,
               num_workers: int | None = None):
    """Load ``model``, build the page and serve it (see the module docstring). Returns Gradio's
    ``(app, local_url, share_url)`` when ``block=False``.

    ``num_workers``: threads that score an analysis's window batches at once; default (``None``): one per
    CPU core this process may use. Above 1, torch's own operations are set to one thread
    (``torch.set_num_threads(1)``), because OpenMP's threads wait for each other after every operation
    and stall when other work shares the cores (see :func:`ecgnat_hf.inference.window_outputs`); with 1,
    torch's thread setting is left as it is."""
    from ..inference import CheckpointError

    if num_workers is None:
        num_workers = _cores_available()
    num_workers = max(1, int(num_workers))

    try:  # a checkpoint without a trained head is refused here, before anything is served
        m, fe = load_checkpoint(model, device=device)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"cannot load the checkpoint {os.fspath(model)!r}: {exc}") from None
    if num_workers > 1 and next(m.parameters()).device.type == "cpu":
        import torch

        torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="ecgnat-app-"))
    atexit.register(_remove, root)
    os.environ["GRADIO_TEMP_DIR"] = str(root)  # uploads go under root (read by gradio at import and at run time)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if "gradio" in sys.modules:
        import gradio.route_utils as _ru  # imported earlier (tests): point its cached default there too

        _ru.DEFAULT_TEMP_DIR = str(root)

    def _stop(signum, frame):  # SIGTERM: leave through the normal exit path, so the folder is removed
        raise KeyboardInterrupt

    if block:
        try:
            signal.signal(signal.SIGTERM, _stop)
        except ValueError:  # not the main thread
            pass
    import gradio as gr

    examples = example_records(examples_dir)
    demo = build_app(m, fe, root=root, source=os.fspath(model), examples=examples, max_file_mb=max_file_mb,
                     concurrency=concurrency, num_workers=num_workers)
    demo.queue(default_concurrency_limit=max(1, int(concurrency)), max_size=max(1, int(max_queue)))
    theme = gr.themes.Default(font=["Helvetica", "Arial", "sans-serif"], font_mono=["DejaVu Sans Mono", "monospace"])
    print(f"ecgnat app: serving {model} on http://{host}:{port} ({concurrency} analysis at a time, each "
          f"scoring on {num_workers} thread(s); up to {max_queue} waiting; uploads up to {max_file_mb:g} MiB; temporary folder {root}, removed at exit)",
          flush=True)
    try:
        result = demo.launch(server_name=host, server_port=int(port), share=bool(share), max_file_size=int(max_file_mb * 2**20),
                             show_error=False, quiet=True, prevent_thread_lock=not block, theme=theme,
                             footer_links=["gradio"], ssr_mode=False, pwa=False, mcp_server=False)
    except KeyboardInterrupt:
        result = None
    except OSError as exc:  # the port is taken, the address cannot be bound
        raise OSError(f"cannot serve on {host}:{port}: {exc}") from None
    finally:
        if block:
            demo.close()
            _remove(root)
    return result
