"""``ecgnat app`` and ``ecgnat space``: uploads, refusals, and the running page driven in a real browser.

The browser tests start ``ecgnat app`` on 127.0.0.1 (a free port) with a tiny ECG-NAT trained for a few
seconds on the bundled PTB-XL sample (decision thresholds fitted on its fold 8), and drive the page with
Debian's ``chromium`` through Playwright (``executable_path``; Playwright's own browsers are never
downloaded). They upload real records, wait for the results and check what a person sees: the label
text, the number of plotted leads, the timeline, the error messages; and that the app still answers.

Screenshots of each state go to ``$ECGNAT_APP_SCREENSHOTS`` (docs/figures when making the docs; a
temporary folder otherwise).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ecgnat_hf.sample_data import sample_dir

from helpers import SUPERCLASSES, load_ptbxl

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SAMPLE = sample_dir() / "records100" / "00000"
MAX_FILE_MB = 8
REPO_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------- checkpoints
def train_tiny_checkpoint(path: Path, steps: int = 40) -> Path:
    """A tiny ECG-NAT trained for ``steps`` Adam steps (a few seconds) on folds 1-7 of the bundled sample, with
    per-class decision thresholds fitted on fold 8, saved with its 100 Hz feature extractor."""
    import torch

    from ecgnat_hf import ECGNATConfig, ECGNATFeatureExtractor, ECGNATForSequenceClassification
    from ecgnat_hf.training.thresholds import fit_decision_thresholds

    torch.manual_seed(0)
    x, y = load_ptbxl(sample_dir(), folds=range(1, 8))
    xv, yv = load_ptbxl(sample_dir(), folds=[8])
    config = ECGNATConfig.from_preset(
        "tiny", num_labels=len(SUPERCLASSES), id2label=dict(enumerate(SUPERCLASSES)),
        label2id={n: i for i, n in enumerate(SUPERCLASSES)}, problem_type="multi_label_classification")
    model = ECGNATForSequenceClassification(config)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    gen = np.random.default_rng(0)
    model.train()
    for _ in range(steps):
        idx = gen.choice(len(x), 16, replace=False)
        out = model(input_values=torch.from_numpy(x[idx]), labels=torch.from_numpy(y[idx]))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        probs = torch.sigmoid(model(input_values=torch.from_numpy(xv)).logits).numpy()
    thresholds, info = fit_decision_thresholds(probs, yv, SUPERCLASSES, "multi_label_classification")
    model.config.decision_thresholds = thresholds
    model.config.decision_threshold_info = info
    model.save_pretrained(path)
    ECGNATFeatureExtractor(sampling_rate=100, window_s=10).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return train_tiny_checkpoint(tmp_path_factory.mktemp("app_ckpt") / "ecgnat-tiny")


@pytest.fixture(scope="module")
def pretraining_checkpoint(tmp_path_factory) -> Path:
    from ecgnat_hf import ECGNATConfig, ECGNATFeatureExtractor, ECGNATForPreTraining

    path = tmp_path_factory.mktemp("app_pre") / "pretrained"
    ECGNATForPreTraining(ECGNATConfig.from_preset("tiny")).save_pretrained(path)
    ECGNATFeatureExtractor(sampling_rate=100, window_s=10).save_pretrained(path)
    return path


# ----------------------------------------------------------------------------------------- record files
def _copy_record(src: Path, dest_dir: Path, name: str | None = None) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    for ext in (".hea", ".dat"):
        shutil.copy(src.with_suffix(ext), dest_dir / (src.name + ext))
    return dest_dir / src.name


def _truncated(tmp: Path) -> list[Path]:
    rec = _copy_record(SAMPLE / "00011_lr", tmp / "trunc")
    data = rec.with_suffix(".dat").read_bytes()
    rec.with_suffix(".dat").write_bytes(data[:1000])
    return [rec.with_suffix(".hea"), rec.with_suffix(".dat")]


def _csv(path: Path, signal_mv: np.ndarray, names) -> Path:
    with open(path, "w") as f:
        f.write(",".join(names) + "\n")
        np.savetxt(f, signal_mv.T, fmt="%.4f", delimiter=",")
    return path


def _mitdb_csv(shared: Path, tmp: Path, seconds: float = 60.0) -> Path:
    """The first minute of MIT-BIH 100 (MLII, V5 at 360 Hz) as a CSV whose columns are only called ch1, ch2."""
    from ecgnat_hf.data import read_record

    rec = read_record(shared / "mitdb" / "100", stop=int(seconds * 360))
    return _csv(tmp / "mitdb100_first_minute.csv", rec.signal, ["ch1", "ch2"])


# ----------------------------------------------------------------------------------------- no browser: uploads
def test_csv_upload_becomes_the_same_signal(tmp_path):
    from ecgnat_hf.app.uploads import prepare_record
    from ecgnat_hf.data import read_record

    rec = read_record(SAMPLE / "00010_lr")
    names = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    (tmp_path / "up").mkdir()
    csv = _csv(tmp_path / "up" / "ecg.csv", rec.signal, names)
    out = prepare_record([csv], tmp_path / "work", upload_root=tmp_path, csv_sampling_rate=100)
    back = read_record(out)
    assert back.sampling_rate == 100 and back.lead_names == names
    np.testing.assert_allclose(back.signal, rec.signal, atol=2e-4)  # CSV rounding (1e-4) + 16-bit gain
    micro = _csv(tmp_path / "up" / "ecg_uv.csv", rec.signal * 1000, names)
    back = read_record(prepare_record([micro], tmp_path / "work2", upload_root=tmp_path, csv_sampling_rate=100,
                                      csv_units="uV"))
    np.testing.assert_allclose(back.signal, rec.signal, atol=2e-4)


def test_zip_is_unpacked_flat_and_checked(tmp_path):
    from ecgnat_hf.app.uploads import UploadError, prepare_record
    from ecgnat_hf.data import read_record

    up = tmp_path / "up"
    up.mkdir()
    z = up / "record.zip"
    with zipfile.ZipFile(z, "w") as zf:  # members in a folder, one with a hostile name
        zf.write(SAMPLE / "00010_lr.hea", "../../etc/00010_lr.hea")
        zf.write(SAMPLE / "00010_lr.dat", "deep/folder/00010_lr.dat")
        zf.writestr("notes.txt", "not a record")
    out = prepare_record([z], tmp_path / "work", upload_root=tmp_path)
    assert out.parent == tmp_path / "work" and sorted(p.name for p in out.parent.iterdir()) == [
        "00010_lr.dat", "00010_lr.hea"]
    assert read_record(out).n_leads == 12
    assert not (tmp_path / "etc").exists()
    with pytest.raises(UploadError, match="unpack to .* MiB, more than"):
        prepare_record([z], tmp_path / "work3", upload_root=tmp_path, max_bytes=1000)
    empty = up / "nothing.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.md", "hello")
    with pytest.raises(UploadError, match="holds no ECG record"):
        prepare_record([empty], tmp_path / "work4", upload_root=tmp_path)


def test_uploads_outside_the_upload_folder_are_refused(tmp_path):
    from ecgnat_hf.app.uploads import UploadError, prepare_record

    (tmp_path / "uploads").mkdir()
    with pytest.raises(UploadError, match="not an uploaded file"):
        prepare_record([SAMPLE / "00010_lr.hea", SAMPLE / "00010_lr.dat"], tmp_path / "w",
                       upload_root=tmp_path / "uploads")


# ----------------------------------------------------------------------------------------- no browser: runner
@pytest.fixture(scope="module")
def runner(checkpoint, tmp_path_factory):
    from ecgnat_hf.app.interface import _Runner, example_records, load_checkpoint

    model, fe = load_checkpoint(checkpoint, device="cpu")
    root = tmp_path_factory.mktemp("app_root")
    return _Runner(model, fe, root, example_records(), 1 << 26)


def _upload(runner, tmp_name: str, files: dict[str, bytes | Path]) -> list[Path]:
    """Files placed where the web server would put them (inside the app's folder)."""
    d = runner.root / "uploads" / tmp_name
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for name, content in files.items():
        p = d / name
        if isinstance(content, Path):
            shutil.copy(content, p)
        else:
            p.write_bytes(content)
        out.append(p)
    return out


@pytest.mark.parametrize("case, rate, expected", [
    ("not_ecg", None, r"not an ECG record file"),
    ("binary_header", None, r"not a WFDB header"),
    ("header_only", None, r"00010_lr\.dat"),
    ("flat_line", 500, r"(?i)no usable|flat"),
    ("absurd_rate", 1e7, r"not plausible for an ECG"),
    ("absurd_header_rate", None, r"(?i)implausible sampling rate"),
    ("empty_csv", 100, r"the CSV is empty"),
    ("header_row_only", 100, r"no samples"),
    ("text_csv", 100, r"hold no numbers"),
    ("csv_without_rate", None, r"does not say its sampling rate"),
])
def test_bad_input_gets_a_message_not_a_traceback(runner, case, rate, expected):
    hea = (SAMPLE / "00010_lr.hea").read_bytes()
    names = ",".join(["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"])
    files = {
        "not_ecg": {"photo.png": b"\x89PNG\r\n\x1a\n" + bytes(200)},
        "binary_header": {"x.hea": b"\x00\x01\x02binary", "x.dat": b"\x00" * 100},
        "header_only": {"00010_lr.hea": hea},
        "flat_line": {"flat.csv": (names + "\n" + "\n".join([",".join(["0.0"] * 12)] * 5000)).encode()},
        "absurd_rate": {"a.csv": (names + "\n" + "\n".join([",".join(["0.1"] * 12)] * 100)).encode()},
        "absurd_header_rate": {"00010_lr.hea": hea.replace(b" 100 1000", b" 900000 1000"),
                               "00010_lr.dat": SAMPLE / "00010_lr.dat"},
        "empty_csv": {"empty.csv": b""},
        "header_row_only": {"h.csv": names.encode() + b"\n"},
        "text_csv": {"t.csv": b"I,II\nfoo,bar\nbaz,qux\n"},
        "csv_without_rate": {"c.csv": b"I,II\n0.1,0.2\n0.2,0.3\n"},
    }[case]
    out = runner.run(_upload(runner, case, files), None, "", rate, "mV", 0)
    assert out["ok"] is False
    assert out["message"].startswith("### Could not analyse")
    assert re.search(expected, out["message"].replace("\\", "")), out["message"]
    assert "Traceback" not in out["message"] and 'File "' not in out["message"]
    assert str(runner.root) not in out["message"]  # no server paths on the page
    assert not any((runner.root / "work").iterdir())  # the working copy is gone


def test_unexpected_error_is_a_generic_message(runner, monkeypatch):
    import ecgnat_hf.app.analysis as analysis

    def boom(*a, **k):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(analysis, "analyse_record", boom)
    out = runner.run(None, next(iter(runner.examples)), "", None, "mV", 0)
    assert out["ok"] is False and "unexpected error" in out["message"] and "secret" not in out["message"]


def test_example_result_matches_predict(runner, checkpoint):
    from ecgnat_hf.inference import predict_records

    label = next(k for k in runner.examples if "00008" in k)
    out = runner.run(None, label, "", None, "mV", 0)
    assert out["ok"], out["message"]
    df = predict_records(checkpoint, [runner.examples[label]], progress=False)
    labels = [x for x in df.loc[0, "labels"].split(";") if x]
    text = ("**Above threshold: " + ", ".join(labels) + "**") if labels else "**No class above its threshold.**"
    assert text in out["message"]
    table = out["table"].set_index("class")
    for c in SUPERCLASSES:
        assert table.loc[c, "probability"] == pytest.approx(df.loc[0, c], abs=1e-3)
    assert "Printout: 12 of 12 standard leads plotted" in out["message"]
    names = sorted(Path(p).name for p in out["downloads"])
    assert names == ["00008_lr_beats_lead_attention.png", "00008_lr_predictions.csv", "00008_lr_predictions.json",
                     "00008_lr_printout.png"]


# ----------------------------------------------------------------------------------------- CLI refusals, Space
def test_app_refuses_a_checkpoint_without_trained_head(pretraining_checkpoint):
    done = subprocess.run([sys.executable, "-m", "ecgnat_hf.cli", "app", "-m", str(pretraining_checkpoint),
                           "--port", str(_free_port())], capture_output=True, text=True, timeout=300,
                          env=_env())
    assert done.returncode == 2, done.stderr[-2000:]
    assert "no trained classification head" in done.stderr and "Traceback" not in done.stderr
    assert "serving" not in done.stdout


def test_space_refuses_a_checkpoint_without_trained_head(pretraining_checkpoint, tmp_path, capsys):
    from ecgnat_hf.cli import main

    assert main(["space", "-m", str(pretraining_checkpoint), "--output_dir", str(tmp_path / "space")]) == 2
    assert "no trained classification head" in capsys.readouterr().err
    assert not (tmp_path / "space").exists()


# ----------------------------------------------------------------------------------------- the server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIO_")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", **extra)
    return env


class Server:
    def __init__(self, argv, log_dir: Path, cwd=None, env=None, timeout=240):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = Path(log_dir) / f"ecgnat-app-{self.port}.log"
        self.proc = subprocess.Popen([*argv, "--port", str(self.port)], cwd=cwd, env=env or _env(),
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited ({self.proc.returncode}): {self.output()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(1)
        self.stop()
        raise RuntimeError(f"the app did not answer in {timeout} s: {self.output()[-3000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def answers(self) -> bool:
        with urllib.request.urlopen(self.url, timeout=10) as r:
            return r.status == 200 and b"gradio" in r.read().lower()

    def temp_folder(self) -> Path:
        return Path(re.search(r"temporary folder (\S+), removed at exit", self.output()).group(1))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _chromium_or_skip():
    if not Path(CHROMIUM).is_file():
        reason = f"{CHROMIUM} is not installed (apt-get install -y chromium; .ci/run does it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        pytest.fail("playwright is not installed (it is in the dev extra)")


@pytest.fixture(scope="module")
def browser():
    _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(checkpoint, browser, tmp_path_factory):
    s = Server([sys.executable, "-m", "ecgnat_hf.cli", "app", "-m", str(checkpoint), "--max_file_mb", str(MAX_FILE_MB)],
               tmp_path_factory.mktemp("app_log"))
    yield s
    folder = s.temp_folder()
    assert s.stop() == 0, s.output()[-3000:]
    assert not folder.exists(), "the app's temporary folder (uploads, results) must be removed at exit"
    assert "Traceback" not in s.output(), s.output()[-3000:]


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    d = Path(os.environ.get("ECGNAT_APP_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture()
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.goto(server.url, wait_until="domcontentloaded")
    pg.wait_for_selector("#analyse", timeout=60_000)
    yield pg
    ctx.close()


def _status(page) -> str:
    return page.inner_text("#status")


def _analyse(page, files=None, leads: str | None = None, rate: float | None = None, wait_for: str = "",
             timeout_s: float = 120) -> str:
    """Fill the form like a person, click Analyse, wait until the status names this record; return its text."""
    if files is not None:
        page.set_input_files("#upload input[type=file]", [str(f) for f in files])
        page.wait_for_function("document.querySelectorAll('#upload .file-preview tr, #upload table tr').length > 0 "
                               "|| document.querySelector('#upload').innerText.includes('.')", timeout=30_000)
    if leads is not None:
        page.fill("#leads textarea, #leads input", leads)
    if rate is not None:
        page.fill("#csv-rate input", str(rate))
    page.click("#analyse")
    page.wait_for_function(
        "(t) => document.querySelector('#status') && document.querySelector('#status').innerText.includes(t)",
        arg=wait_for, timeout=timeout_s * 1000)
    page.wait_for_timeout(800)  # images finish loading
    return _status(page)


def _downloads(page) -> str:
    """The file names listed under Downloads (the page shows stem and extension on separate lines)."""
    return page.inner_text("#downloads").replace("\n.", ".")


def _visible(page, elem_id: str) -> bool:
    loc = page.locator(f"#{elem_id}")
    return loc.count() > 0 and loc.first.is_visible()


def _clear_upload(page):
    page.reload(wait_until="domcontentloaded")
    page.wait_for_selector("#analyse", timeout=60_000)


def test_browser_12_lead_ptbxl_record(page, server, runner, checkpoint, shots):
    from ecgnat_hf.inference import predict_records

    rec = SAMPLE / "00008_lr"
    text = _analyse(page, [rec.with_suffix(".hea"), rec.with_suffix(".dat")], wait_for="Record 00008_lr")
    df = predict_records(checkpoint, [rec], progress=False)
    labels = [x for x in df.loc[0, "labels"].split(";") if x]
    assert ("Above threshold: " + ", ".join(labels)) in text if labels else "No class above its threshold" in text
    assert "Printout: 12 of 12 standard leads plotted" in text
    table = page.inner_text("#probabilities")
    for c in SUPERCLASSES:
        assert c in table
        assert f"{df.loc[0, c]:.3f}".rstrip("0") in table
    assert _visible(page, "printout") and _visible(page, "attention") and not _visible(page, "timeline")
    img = page.locator("#printout img").first
    assert img.evaluate("i => i.complete && i.naturalWidth > 1000")
    downloads = _downloads(page)
    for name in ("00008_lr_predictions.csv", "00008_lr_predictions.json", "00008_lr_printout.png",
                 "00008_lr_beats_lead_attention.png"):
        assert name in downloads
    page.screenshot(path=str(shots / "app_ptbxl_12lead.png"), full_page=True)


@pytest.mark.shared_data
def test_browser_2_lead_mitdb_csv_with_lead_naming(page, server, shared_data, tmp_path, shots):
    csv = _mitdb_csv(shared_data, tmp_path)
    text = _analyse(page, [csv], rate=360, wait_for="Could not analyse")
    assert "no usable ECG lead among ch1, ch2" in text.replace("\\", "")
    assert "Name the file's channels in the 'Lead names' box" in text
    assert not _visible(page, "printout")
    page.screenshot(path=str(shots / "app_unnamed_leads_message.png"), full_page=True)
    text = _analyse(page, leads="II,V5", wait_for="Record mitdb100")
    assert "Printout: 2 of 12 standard leads plotted (II, V5)" in text
    assert "Leads used by the model: II, V5" in text
    assert "1.0 min" in text or "60.0 s" in text
    assert _visible(page, "timeline")  # 60 s > one 10 s window
    page.screenshot(path=str(shots / "app_mitdb_csv_named_leads.png"), full_page=True)


@pytest.mark.shared_data
def test_browser_long_record_timeline(page, server, shared_data, tmp_path, shots):
    rec = shared_data / "mitdb" / "100"
    seen_progress = []
    page.set_input_files("#upload input[type=file]", [str(rec.with_suffix(".hea")), str(rec.with_suffix(".dat"))])
    page.fill("#start input", "600")  # the printout shows minute 10, read alone from the file
    page.wait_for_timeout(1000)
    page.click("#analyse")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        body = page.inner_text("body")
        if "scoring" in body or "reading the record" in body:
            seen_progress.append(body)
        if "Record 100:" in _status(page):
            break
        page.wait_for_timeout(250)
    page.wait_for_timeout(1000)
    text = _status(page)
    assert "Record 100: 30.1 min, 2 channel(s) at 360 Hz" in text
    assert "mean over 361 windows of 10 s, one every 5 s" in text
    assert "Printout: 2 of 12 standard leads plotted (II, V5), 600-610 s" in text
    assert seen_progress, "a progress indicator should show while a long record is scored"
    assert _visible(page, "timeline")
    assert page.locator("#timeline img").first.evaluate("i => i.complete && i.naturalWidth > 500")
    assert "time above threshold (%)" in page.inner_text("#probabilities")
    assert "100_timeline.csv" in _downloads(page)
    page.screenshot(path=str(shots / "app_long_record_timeline.png"), full_page=True)


def test_browser_broken_files_then_still_serving(page, server, tmp_path, shots):
    text = _analyse(page, _truncated(tmp_path), wait_for="Could not analyse")
    assert re.search(r"(?i)truncat|shorter than|too short|bytes", text), text
    assert "Traceback" not in page.inner_text("body")
    page.screenshot(path=str(shots / "app_truncated_record_message.png"), full_page=True)

    _clear_upload(page)
    png = tmp_path / "holiday.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(500))
    text = _analyse(page, [png], wait_for="Could not analyse holiday.png")
    assert "not an ECG record file" in text

    _clear_upload(page)  # a header without its signal file
    hea = tmp_path / "00010_lr.hea"
    shutil.copy(SAMPLE / "00010_lr.hea", hea)
    text = _analyse(page, [hea], wait_for="Could not analyse 00010_lr.hea")
    assert "00010_lr.dat" in text.replace("\\", "")

    _clear_upload(page)  # larger than --max_file_mb: refused by the page, nothing reaches the handler
    big = tmp_path / "big.dat"
    with open(big, "wb") as f:
        f.truncate((MAX_FILE_MB + 1) * 2**20)
    page.set_input_files("#upload input[type=file]", [str(big)])
    page.wait_for_function("document.body.innerText.includes('exceed the maximum allowed size of 8.0 Mb')",
                           timeout=30_000)
    page.screenshot(path=str(shots / "app_oversize_upload_message.png"))
    import httpx  # the server refuses it too, for a client that skips the page's check

    with open(big, "rb") as f:
        r = httpx.post(server.url + "gradio_api/upload", files={"files": ("big.dat", f)}, timeout=60)
    assert r.status_code == 413 and "maximum allowed size" in r.text

    # still serving: the same page analyses an example
    _clear_upload(page)
    page.click("#example input")
    page.get_by_role("option", name=re.compile("00010")).click()
    text = _analyse(page, wait_for="Record 00010_lr")
    assert "Printout: 12 of 12 standard leads plotted" in text
    assert server.answers()


# ----------------------------------------------------------------------------------------- the Space folder
def test_space_folder_runs_the_same_app_without_the_repository(checkpoint, browser, tmp_path):
    from ecgnat_hf.cli import main

    space = tmp_path / "space"
    assert main(["space", "-m", str(checkpoint), "--output_dir", str(space)]) == 0
    readme = (space / "README.md").read_text()
    assert readme.startswith("---\n") and "\nsdk: gradio\n" in readme and "\napp_file: app.py\n" in readme
    reqs = (space / "requirements.txt").read_text().splitlines()
    assert any(r.startswith("gradio") for r in reqs) and any(r.startswith("torch") for r in reqs)
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "modeling_ecgnat.py"):
        assert (space / "model" / name).is_file(), name
    assert (space / "ecgnat_hf" / "app" / "interface.py").is_file()
    assert not (space / "ecgnat_hf" / "sample_data" / "ptbxl100").exists()
    assert len(list((space / "examples").glob("*.hea"))) == 4
    # run it from the folder, with no path to this repository: it must use its own copy of the code
    env = _env()
    env.pop("PYTHONPATH", None)
    s = Server([sys.executable, "app.py"], tmp_path, cwd=space, env=env)
    try:
        assert f"ecgnat_hf code: {space.resolve() / 'ecgnat_hf'}" in s.output()
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        pg = ctx.new_page()
        pg.goto(s.url, wait_until="domcontentloaded")
        pg.wait_for_selector("#analyse", timeout=60_000)
        pg.click("#example input")
        pg.get_by_role("option", name=re.compile("00017")).click()
        text = _analyse(pg, wait_for="Record 00017_lr")
        assert "Printout: 12 of 12 standard leads plotted" in text
        ctx.close()
    finally:
        assert s.stop() == 0, s.output()[-3000:]


# ----------------------------------------------------------------------------------------- other model kinds
def _beatnet_checkpoint(path: Path) -> Path:
    import torch

    from ecgnat_hf.models.beatnet import BeatNetConfig, BeatNetFeatureExtractor, BeatNetForSequenceClassification

    torch.manual_seed(0)
    cfg = BeatNetConfig(sampling_rate=100, max_beats=32, morphology_channels=[8, 16], hidden_size=32,
                        spatial_num_heads=2, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        num_labels=len(SUPERCLASSES), id2label=dict(enumerate(SUPERCLASSES)),
                        label2id={n: i for i, n in enumerate(SUPERCLASSES)}, problem_type="multi_label_classification")
    BeatNetForSequenceClassification(cfg).save_pretrained(path)
    BeatNetFeatureExtractor.from_model_config(cfg, window_s=10).save_pretrained(path)
    return path


def _resnet1d_checkpoint(path: Path) -> Path:
    import torch

    from ecgnat_hf import ECGNATFeatureExtractor
    from ecgnat_hf.models.resnet1d import ResNet1dConfig, ResNet1dForSequenceClassification

    torch.manual_seed(0)
    cfg = ResNet1dConfig(stem_hidden_size=16, hidden_sizes=[16, 32], block_strides=[1, 2], num_labels=len(SUPERCLASSES),
                         id2label=dict(enumerate(SUPERCLASSES)), label2id={n: i for i, n in enumerate(SUPERCLASSES)},
                         problem_type="multi_label_classification")
    ResNet1dForSequenceClassification(cfg).save_pretrained(path)
    ECGNATFeatureExtractor(sampling_rate=100, window_s=10).save_pretrained(path)
    return path


@pytest.mark.parametrize("kind, make", [("BEAT-Net", _beatnet_checkpoint), ("ResNet1d", _resnet1d_checkpoint)])
def test_beatnet_and_resnet1d_checkpoints(kind, make, tmp_path):
    from ecgnat_hf.app.interface import _model_header, _Runner, example_records, load_checkpoint

    model, fe = load_checkpoint(make(tmp_path / "ckpt"), device="cpu")
    assert f"ECG-NAT app: {kind}" in _model_header(model, fe, str(tmp_path / "ckpt"))
    runner = _Runner(model, fe, tmp_path / "root", example_records(), 1 << 26)
    label = next(k for k in runner.examples if "00287" in k)
    out = runner.run(None, label, "", None, "mV", 0)
    assert out["ok"], out["message"]
    assert "Printout: 12 of 12 standard leads plotted" in out["message"]
    assert out["figures"]["beats_lead_attention"].stat().st_size > 10_000
    if kind == "ResNet1d":  # no lead attention: its beats are still drawn, and nothing claims attention
        assert "Lead attention: not available" not in out["message"]


def test_space_from_an_offline_hub_cache_repo_id(checkpoint, tmp_path):
    """``--model org/name`` found only in the local hub cache (offline): the Space gets the snapshot's files."""
    from test_modeling import _hub_cache_layout

    _hub_cache_layout(checkpoint, tmp_path / "hub", "ecg-org/ecgnat-app-test")
    out = tmp_path / "space"
    done = subprocess.run([sys.executable, "-m", "ecgnat_hf.cli", "space", "-m", "ecg-org/ecgnat-app-test",
                           "--output_dir", str(out)], capture_output=True, text=True, timeout=600,
                          env=_env(HF_HUB_CACHE=str(tmp_path / "hub"), HF_HOME=str(tmp_path / "home")))
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        assert (out / "model" / name).is_file() and not (out / "model" / name).is_symlink()
        assert (out / "model" / name).read_bytes() == (checkpoint / name).read_bytes()


# ----------------------------------------------------------------------------------------- several users at once
def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


@pytest.mark.slow
def test_three_users_at_once_go_through_the_queue_in_order(checkpoint, browser, tmp_path):
    """Three browser tabs drop a 10 s 12-lead record each and click Analyse within a second. The app, started
    with its default scoring threads (no OMP_NUM_THREADS) and ``--concurrency 1``, says so on the page, gives
    every tab its own result, analyses the requests one at a time in the order of the clicks (the server's
    log), and its peak memory stays under the 1.5 GiB target. Each user's time is printed."""
    env = {k: v for k, v in _env().items() if k not in ("OMP_NUM_THREADS",)}
    s = Server([sys.executable, "-m", "ecgnat_hf.cli", "--log_level", "info", "app", "-m", str(checkpoint),
                "--concurrency", "1", "--max_queue", "4", "--max_file_mb", str(MAX_FILE_MB)], tmp_path, env=env)
    records = ["00010_lr", "00008_lr", "00017_lr"]
    contexts = []
    try:
        assert "scoring on 2 thread(s)" in s.output() or "scoring on 1 thread(s)" in s.output(), s.output()[-2000:]
        pages = []
        for rid in records:
            ctx = browser.new_context(viewport={"width": 1200, "height": 900})
            contexts.append(ctx)
            pg = ctx.new_page()
            pg.goto(s.url, wait_until="domcontentloaded")
            pg.wait_for_selector("#analyse", timeout=60_000)
            assert "1 analysis at a time, others wait in the queue" in pg.inner_text("#header")
            pg.set_input_files("#upload input[type=file]", [str(SAMPLE / f"{rid}.{e}") for e in ("hea", "dat")])
            pg.wait_for_function("document.querySelector('#upload').innerText.includes('.dat')", timeout=30_000)
            pages.append(pg)
        clicked = []
        for pg in pages:  # three users within a second, in this order
            pg.click("#analyse", no_wait_after=True)
            clicked.append(time.monotonic())
            pg.wait_for_timeout(300)
        seconds = []
        for rid, pg, t0 in zip(records, pages, clicked):
            pg.wait_for_function("(t) => document.querySelector('#status').innerText.includes(t)",
                                 arg=f"Record {rid}:", timeout=180_000)
            seconds.append(time.monotonic() - t0)
            status = pg.inner_text("#status")
            assert "Could not analyse" not in status and "Analysed in" in status, status
            pg.wait_for_selector("#printout img", timeout=30_000)  # the printout follows the status
        print("\nclick -> results per user (s): " + ", ".join(f"{r} {t:.1f}" for r, t in zip(records, seconds)))
        log = s.output()
        events = re.findall(r"request (\w+): (analysing \S+|done)", log)
        assert len(events) == 2 * len(records), log[-3000:]
        # one at a time: each request finishes before the next one starts; in the order of the clicks
        assert [e[1] == "done" for e in events] == [False, True] * len(records), events
        assert [e[0] for e in events[::2]] == [e[0] for e in events[1::2]], events
        assert [e[1].split()[1].split(".")[0] for e in events[::2]] == records, events
        # the last user waited for the two before: its time includes theirs
        assert seconds[2] > min(seconds[:2]), seconds
        peak = _peak_rss_mib(s.proc.pid)
        print(f"app peak memory after three users: {peak:.0f} MiB")
        assert peak < 1536, f"peak memory {peak:.0f} MiB over the 1.5 GiB target"
        assert s.answers()
    finally:
        for ctx in contexts:
            ctx.close()
        code = s.stop()
    assert code == 0 and "Traceback" not in s.output(), s.output()[-3000:]
