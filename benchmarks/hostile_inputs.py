"""Hostile-input campaign (issue 8): damaged or unusual inputs through the five entry points and beyond.

Entry points: ``read_record``, the feature extractor, ``ecgnat predict``, ``ecgnat plot``, and
``ECGFolder`` with ``ecgnat finetune``; also the PTB-XL and Challenge builders (``builders``), lead-subset
evaluation and ``--leads`` training (``evaluate``), and exported ONNX graphs run through
``ecgnat_hf.export.load_exported`` (``export``). Every case builds its input from real records (the bundled PTB-XL
sample, the Challenge 2021 fixture, ``../shared/data`` when present) in a temporary folder, runs the entry
point in-process (the CLI through ``ecgnat_hf.cli.main``; an exception escaping it is what a user sees as a
traceback) and classifies what came back:

* ``correct``: a result that an oracle checked (same leads and samples as the original, the expected
  rows, the expected labels...);
* ``typed error``: an ``ECGDataError`` / ``ECGInputError`` (CLI: exit 1 or 2 with a message) naming the file;
* ``flag``: a result with a visible quality finding (extractor ``quality_flags``, a quality column, a
  plot warning);
* ``SILENT WRONG``: a result the oracle rejects, or a result where the input should have been refused or
  flagged; ``MISLEADING ERROR``: an error that blames the wrong thing;
* ``TRACEBACK``: any other exception; ``LOST ROWS``: predict finished records missing from its CSV.

A case passes when its outcome is one of those it expects. Run (about 5-10 minutes on 2 busy cores)::

    python benchmarks/hostile_inputs.py [--markdown docs/robustness_table.md] [--only predict|builders|evaluate|export|...]

Exit code 0 when every case passes, 1 otherwise.
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import csv  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
SHARED = Path(os.environ.get("ECGNAT_SHARED_DATA", REPO.parent / "shared" / "data"))
FIXTURES = REPO / "tests" / "fixtures"

import scipy.io  # noqa: E402
import wfdb  # noqa: E402

from ecgnat_hf.data import ECGDataError, read_record  # noqa: E402
from ecgnat_hf.feature_extraction_ecgnat import ECGInputError, ECGNATFeatureExtractor  # noqa: E402
from ecgnat_hf.sample_data import sample_dir  # noqa: E402

TYPED = "typed error"
OK = "correct"
FLAG = "flag"
SILENT = "SILENT WRONG"
TRACE = "TRACEBACK"
LOST = "LOST ROWS"
MISLEAD = "MISLEADING ERROR"


@dataclass
class Case:
    name: str
    entry: str  # read_record | extractor | predict | plot | folder/finetune
    run: Callable[[Path], tuple[str, str]]  # tmp dir -> (outcome, detail)
    expect: tuple = (TYPED,)


@dataclass
class Ctx:
    tmp: Path
    checkpoint: Path | None = None
    pretrain_checkpoint: Path | None = None
    cache: dict = field(default_factory=dict)


CTX: Ctx | None = None


# ------------------------------------------------------------------------------------------ inputs
def ptb_src(i: int = 0) -> Path:
    return sorted((sample_dir() / "records100" / "00000").glob("*.hea"))[i].with_suffix("")


def cinc_src() -> Path:
    return FIXTURES / "cinc2021" / "E07500"


def copy_rec(src: Path, dest: Path, name: str | None = None) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    name = name or src.name
    for f in src.parent.glob(src.name + ".*"):
        if f.suffix in (".hea", ".dat", ".mat"):
            target = dest / (name + f.suffix)
            if name != src.name and f.suffix == ".hea":
                target.write_text(f.read_text().replace(src.name, name))
            else:
                shutil.copy(f, target)
    return dest / name


def write_wfdb(dest: Path, name: str, signal: np.ndarray, fs: float, names: list[str], units="mV") -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    sig = np.asarray(signal, dtype=np.float64)
    wfdb.wrsamp(name, fs=fs, units=[units] * sig.shape[0], sig_name=names, p_signal=sig.T, fmt=["16"] * sig.shape[0],
                adc_gain=[1000.0 if units == "mV" else 1.0] * sig.shape[0], baseline=[0] * sig.shape[0],
                write_dir=str(dest))
    return dest / name


def edit_lines(path: Path, fn) -> None:
    hea = path.with_name(path.name + ".hea")
    lines = hea.read_text().splitlines()
    hea.write_text("\n".join(fn(lines)) + "\n")


def set_token(line_no: int, field_no: int, value: str):
    def fn(lines):
        toks = lines[line_no].split()
        toks[field_no] = value
        lines[line_no] = " ".join(toks)
        return lines
    return fn


def ptb_signal(i: int = 0):
    r = read_record(ptb_src(i))
    return r.signal.astype(np.float64), r.sampling_rate, r.lead_names


# --------------------------------------------------------------------------------------- runners
def run_reader(make, oracle=None, keyword: str | None = None, **kw):
    """make(tmp) -> path; oracle(record) -> None when right, else what is wrong. ``keyword``: text an error
    must contain (the channel, the option it advises...), else MISLEADING ERROR. A record read with header
    calibration flags (``metadata["calibration_flags"]``) is a ``flag`` when the oracle accepts its signal."""
    def run(tmp: Path):
        path = make(tmp)
        try:
            rec = read_record(path, **kw)
        except ECGDataError as exc:
            if keyword and keyword not in str(exc):
                return MISLEAD, f"{type(exc).__name__}: {exc.problem}"
            return TYPED, f"{type(exc).__name__}: {exc.problem}"
        except Exception as exc:  # noqa: BLE001
            return TRACE, f"{type(exc).__name__}: {exc}"
        if oracle is None:
            return SILENT, f"read without error: {rec!r}"
        wrong = oracle(rec)
        if wrong:
            return SILENT, wrong
        if rec.metadata.get("calibration_flags"):
            return FLAG, "; ".join(rec.metadata["calibration_flags"])
        return OK, f"{rec.n_leads} leads x {rec.n_samples} samples as expected"
    return run


def same_as(ref_path: Path, names=None):
    ref = read_record(ref_path)

    def oracle(rec):
        if (names or ref.lead_names) != rec.lead_names:
            return f"lead names {rec.lead_names}"
        if rec.signal.shape != ref.signal.shape or not np.allclose(rec.signal, ref.signal, atol=1e-6, equal_nan=True):
            return "signal differs from the original"
        return None
    return oracle


def run_fe(make, oracle=None, **fe_kw):
    def run(tmp: Path):
        args, kwargs = make(tmp)
        fe = ECGNATFeatureExtractor(sampling_rate=100, window_s=10, **fe_kw)
        t0 = time.perf_counter()
        try:
            out = fe(*args, **kwargs)
        except (ECGInputError, ECGDataError) as exc:
            return TYPED, f"{type(exc).__name__}: {exc} ({time.perf_counter() - t0:.2f} s)"
        except Exception as exc:  # noqa: BLE001
            return TRACE, f"{type(exc).__name__}: {exc}"
        flags = [f for fl in out.quality_flags for f in fl]
        if flags:
            return FLAG, "; ".join(flags)[:160] + f" (lead_mask {out['lead_mask'][0].tolist()})"
        if oracle is None:
            return SILENT, f"accepted: {tuple(out['input_values'].shape)}"
        wrong = oracle(out)
        return (SILENT, wrong) if wrong else (OK, f"input_values {tuple(out['input_values'].shape)}")
    return run


def cli(argv: list[str]) -> tuple[int | None, str, str, BaseException | None]:
    from ecgnat_hf import cli as cli_mod

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handler = logging.StreamHandler(err)
    root.addHandler(handler)
    exc = None
    rc = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli_mod.main(argv)
    except SystemExit as e:  # noqa: PERF203
        rc = e.code if isinstance(e.code, int) else 1
    except BaseException as e:  # noqa: BLE001
        exc = e
        err.write("".join(traceback.format_exception(e)))
    finally:
        root.removeHandler(handler)
    return rc, out.getvalue(), err.getvalue(), exc


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_predict(make, expect_rows: int | None = None, oracle=None, refused: bool = False, flagged: bool = False,
                extra=()):
    """make(tmp) -> list of inputs. ``expect_rows``: rows the CSV must hold. ``refused``: the input must be
    refused (in the errors CSV, not scored); ``flagged``: scored with a visible quality finding."""
    def run(tmp: Path):
        inputs = make(tmp)
        out_csv = tmp / "pred.csv"
        rc, out, err, exc = cli(["predict", "-m", str(CTX.checkpoint), *map(str, inputs), "-o", str(out_csv),
                                 "--no_progress", *extra])
        if exc is not None or "Traceback" in err:
            return TRACE, (err.strip().splitlines() or ["?"])[-1][:160]
        rows = _read_csv(out_csv)
        errors = _read_csv(out_csv.with_name(out_csv.stem + ".errors.csv"))
        if expect_rows is not None and len(rows) < expect_rows:
            return LOST, f"{len(rows)} of {expect_rows} rows in the CSV (exit {rc}); {err.strip()[-120:]}"
        if refused:
            if rows:
                return SILENT, f"scored: {dict(list(rows[0].items())[-3:])}"
            msg = errors[0]["problem"] if errors else err.strip()[-160:]
            return (TYPED, f"exit {rc}: {msg[:160]}") if rc else (SILENT, f"exit 0, no row ({err[-80:]})")
        if flagged:
            qual = [v for r in rows for k, v in r.items() if k.lower() in ("quality", "warnings", "quality_flags") and v]
            if qual:
                return FLAG, qual[0][:160]
            return SILENT, "scored without a quality finding in the CSV" + (f" ({rows[0].get('leads_used')})" if rows else "")
        if oracle is not None:
            wrong = oracle(rows, errors, rc, err)
            if wrong:
                return (TYPED, wrong[len("typed:"):]) if wrong.startswith("typed:") else (SILENT, wrong)
            return OK, f"{len(rows)} row(s), {len(errors)} error(s), exit {rc}"
        if rc:
            return TYPED, f"exit {rc}: {(errors[0]['problem'] if errors else err.strip()[-160:])[:160]}"
        return OK, f"{len(rows)} row(s), exit 0"
    return run


def run_plot(make, keyword: str | None = None, with_model=False, extra=()):
    """``keyword``: for an expected error, text the message must contain (else MISLEADING ERROR)."""
    def run(tmp: Path):
        rec = make(tmp)
        png = tmp / "ecg.png"
        argv = ["plot", str(rec), "-o", str(png), *extra]
        if with_model:
            argv += ["-m", str(CTX.checkpoint)]
        rc, out, err, exc = cli(argv)
        if exc is not None or "Traceback" in err:
            return TRACE, (err.strip().splitlines() or ["?"])[-1][:160]
        if rc == 0 and png.is_file():
            if "quality:" in err:
                return FLAG, err.strip().splitlines()[-1][:160]
            return OK, "PNG written"
        msg = err.strip().splitlines()[-1] if err.strip() else ""
        if keyword and keyword not in msg:
            return MISLEAD, msg[:160]
        return TYPED, f"exit {rc}: {msg[:160]}"
    return run


# ------------------------------------------------------------------------------------------ cases
def reader_cases() -> list[Case]:
    C = []
    add = lambda n, run, expect=(TYPED,): C.append(Case(n, "read_record", run, expect))  # noqa: E731
    cinc = cinc_src()
    mat_val = lambda: scipy.io.loadmat(str(cinc) + ".mat")["val"]  # noqa: E731

    def resave(writer):
        def make(tmp):
            p = copy_rec(cinc, tmp)
            writer(p.with_suffix(".mat"))
            return p
        return make

    add("clean PTB-XL record (.dat)", run_reader(lambda t: copy_rec(ptb_src(), t), same_as(ptb_src())), (OK,))
    add("clean Challenge record (.mat v4)", run_reader(lambda t: copy_rec(cinc, t), same_as(cinc)), (OK,))
    add(".mat re-saved by scipy as v5", run_reader(resave(lambda m: scipy.io.savemat(str(m), {"val": mat_val()})), same_as(cinc)), (OK,))
    add(".mat v5, variable renamed 'data'", run_reader(resave(lambda m: scipy.io.savemat(str(m), {"data": mat_val()})), same_as(cinc)), (OK,))
    add(".mat v4, variable renamed 'signal'", run_reader(resave(lambda m: scipy.io.savemat(str(m), {"signal": mat_val()}, format="4")), same_as(cinc)), (OK,))
    add(".mat v5 compressed", run_reader(resave(lambda m: scipy.io.savemat(str(m), {"val": mat_val()}, do_compression=True)), same_as(cinc)), (OK,))
    add(".mat v5 as double precision", run_reader(resave(lambda m: scipy.io.savemat(str(m), {"val": mat_val().astype(float)})), same_as(cinc)), (OK,))
    add(".mat v5 transposed (samples x leads)", run_reader(resave(lambda m: scipy.io.savemat(str(m), {"val": mat_val().T})), same_as(cinc)), (OK,))

    def v73(m):
        import h5py
        with h5py.File(m, "w", userblock_size=512) as f:
            f["val"] = mat_val().T
        with open(m, "r+b") as f:
            f.write(b"MATLAB 7.3 MAT-file".ljust(116, b" "))
    add(".mat re-saved as v7.3 (HDF5)", run_reader(resave(v73), same_as(cinc)), (OK,))
    add(".mat re-saved in mV (physical floats)", run_reader(resave(lambda m: scipy.io.savemat(str(m), {"val": mat_val() / 1000}))))
    add(".mat with leads re-ordered", run_reader(resave(lambda m: scipy.io.savemat(str(m), {"val": mat_val()[::-1]}, format="4"))))
    add(".mat of another record", run_reader(resave(lambda m: shutil.copy(FIXTURES / "cinc2021" / "HR06001.mat", m))))
    add(".mat with 6 of 12 leads", run_reader(resave(lambda m: scipy.io.savemat(str(m), {"val": mat_val()[:6]}, format="4"))))
    add(".mat random bytes", run_reader(resave(lambda m: m.write_bytes(np.random.default_rng(1).bytes(120024)))))
    add(".mat empty file", run_reader(resave(lambda m: m.write_bytes(b""))))
    add(".mat v4 header byte flipped (name length)", run_reader(resave(lambda m: m.write_bytes(
        m.read_bytes()[:16] + bytes([m.read_bytes()[16] ^ 1]) + m.read_bytes()[17:]))))

    def dat_edit(fn):
        def make(tmp):
            p = copy_rec(ptb_src(), tmp)
            d = p.with_suffix(".dat")
            d.write_bytes(fn(d.read_bytes()))
            return p
        return make
    add(".dat truncated to half", run_reader(dat_edit(lambda b: b[: len(b) // 2])))
    add(".dat empty", run_reader(dat_edit(lambda b: b"")))
    add(".dat one byte flipped", run_reader(dat_edit(lambda b: b[:999] + bytes([b[999] ^ 0x40]) + b[1000:])))
    add(".dat of another record (swapped)", run_reader(dat_edit(lambda b: (ptb_src(1).with_suffix(".dat")).read_bytes())))
    add(".dat with leads I and II swapped", run_reader(dat_edit(lambda b: np.frombuffer(b, "<i2").reshape(-1, 12)[
        :, [1, 0] + list(range(2, 12))].tobytes())))
    add(".dat missing", run_reader(lambda t: (lambda p: (p.with_suffix(".dat").unlink(), p)[1])(copy_rec(ptb_src(), t))))
    add(".hea missing", run_reader(lambda t: (lambda p: (p.with_suffix(".hea").unlink(), p)[1])(copy_rec(ptb_src(), t))))
    add(".hea binary garbage", run_reader(lambda t: (lambda p: (p.with_suffix(".hea").write_bytes(bytes(range(256))), p)[1])(copy_rec(ptb_src(), t))))
    add(".hea empty", run_reader(lambda t: (lambda p: (p.with_suffix(".hea").write_text(""), p)[1])(copy_rec(ptb_src(), t))))

    def hea(fn):
        def make(tmp):
            p = copy_rec(ptb_src(), tmp)
            edit_lines(p, fn)
            return p
        return make
    add(".hea without sampling rate", run_reader(hea(lambda ls: [" ".join(ls[0].split()[:2])] + ls[1:])))
    for fs in ("0.5", "0.001", "1e9", "-100", "nan"):
        add(f".hea sampling rate {fs} Hz", run_reader(hea(set_token(0, 2, fs))))
    add(".hea announces 13 signals, has 12 lines", run_reader(hea(set_token(0, 1, "13"))))
    add(".hea announces 11 of 12 signals", run_reader(hea(set_token(0, 1, "11"))))
    add(".hea gain 'nan'", run_reader(hea(set_token(1, 2, "nan/mV"))))
    add(".hea format 16 -> 212", run_reader(hea(lambda ls: [ls[0]] + [" ".join([x.split()[0], "212"] + x.split()[2:]) for x in ls[1:13]] + ls[13:])))
    add(".hea byte offset +1000", run_reader(hea(lambda ls: [ls[0]] + [" ".join([x.split()[0], "16+1000"] + x.split()[2:]) for x in ls[1:13]] + ls[13:])))
    add(".hea sig_len 999999 (longer than file)", run_reader(hea(set_token(0, 3, "999999"))))
    add(".hea duplicate lead names (I twice)", run_reader(hea(lambda ls: [ls[0], ls[1], " ".join(ls[2].split()[:-1] + ["I"])] + ls[3:])))
    add(".hea without lead names", run_reader(hea(lambda ls: [ls[0]] + [" ".join(x.split()[:8]) for x in ls[1:13]] + ls[13:]),
                                              lambda r: None if r.lead_names == [f"ch{i}" for i in range(12)] else str(r.lead_names)), (OK,))
    add(".hea without lead names + lead_names=[...]", run_reader(
        hea(lambda ls: [ls[0]] + [" ".join(x.split()[:8]) for x in ls[1:13]] + ls[13:]),
        same_as(ptb_src(), names=read_record(ptb_src()).lead_names), lead_names=read_record(ptb_src()).lead_names), (OK,))
    add(".hea units uV (gain 1000/uV)", run_reader(hea(lambda ls: [ls[0]] + [x.replace("/mV", "/uV") for x in ls[1:13]] + ls[13:]),
                                                   lambda r: None if np.allclose(r.signal * 1000, read_record(ptb_src()).signal, atol=1e-3) else "not converted"), (OK,))
    add(".hea latin-1 comment", run_reader(hea(lambda ls: ls + ["# Bemerkung: Schrittmacher \xe4"]), same_as(ptb_src())), (OK,))
    add("path ''", run_reader(lambda t: ""))
    add("path '.'", run_reader(lambda t: "."))
    add("path is a folder", run_reader(lambda t: t))

    def loop(tmp):
        (tmp / "loop.hea").symlink_to(tmp / "loop.hea")
        return tmp / "loop"
    add("symlink loop", run_reader(loop))

    def nan_record(tmp):
        x, fs, names = ptb_signal()
        x[3, 100:200] = np.nan
        return write_wfdb(tmp, "nanrec", x, fs, names)
    add("NaN samples (WFDB invalid value)", run_reader(nan_record))
    if (SHARED / "mitdb" / "100.hea").is_file():
        add("30-minute MIT-BIH record (MLII, V5)", run_reader(lambda t: SHARED / "mitdb" / "100",
                                                              lambda r: None if r.n_samples == 650000 else "length"), (OK,))
    if (SHARED / "ptbdb" / "s0010_re.hea").is_file():
        add("PTB record with Frank leads vx/vy/vz", run_reader(lambda t: SHARED / "ptbdb" / "s0010_re",
                                                                lambda r: None if r.n_leads == 15 else "leads"), (OK,))
    return C


def extractor_cases() -> list[Case]:
    C = []
    add = lambda n, run, expect=(TYPED,): C.append(Case(n, "feature extractor", run, expect))  # noqa: E731
    x, fs, names = ptb_signal()
    shape_ok = lambda out: None if out["input_values"].shape[1:] == (12, 1000) else str(out["input_values"].shape)  # noqa: E731
    add("clean 12-lead record", run_fe(lambda t: ((x,), dict(sampling_rate=fs, lead_names=names)), shape_ok), (OK,))
    add("ragged nested list", run_fe(lambda t: (([[0.1, 0.2, 0.3], [0.1, 0.2]],), dict(sampling_rate=100))))
    add("nested list of strings", run_fe(lambda t: (([["a", "b"]],), dict(sampling_rate=100))))
    add("dict instead of an array", run_fe(lambda t: (({"I": [1, 2]},), dict(sampling_rate=100))))
    add("complex-valued signal", run_fe(lambda t: ((x.astype(complex),), dict(sampling_rate=fs, lead_names=names))))
    for r in (0.5, 0.001, float("nan"), None, -5, "fast"):
        add(f"sampling rate {r!r}", run_fe(lambda t, r=r: ((x,), dict(sampling_rate=r, lead_names=names))))
    add("all-zero 12 leads", run_fe(lambda t: ((np.zeros((12, 1000)),), dict(sampling_rate=100))))
    add("constant 1 mV on every lead", run_fe(lambda t: ((np.ones((12, 1000)),), dict(sampling_rate=100))))

    def dead(t):
        y = x.copy()
        y[7] = 0
        return (y,), dict(sampling_rate=fs, lead_names=names)
    add("one dead lead (V2 all zero)", run_fe(dead), (FLAG,))

    def saturated(t):
        y = x.copy()
        y[1] = np.clip(y[1] * 8, -0.5, 0.5)
        return (y,), dict(sampling_rate=fs, lead_names=names)
    add("lead II clipped at the rails", run_fe(saturated), (FLAG,))
    add("values in microvolts labelled mV (standardizing extractor)",
        run_fe(lambda t: ((x * 1000,), dict(sampling_rate=fs, lead_names=names))), (FLAG,))
    add("values in microvolts labelled mV (amplitude-keeping extractor, scaling='center')",
        run_fe(lambda t: ((x * 1000,), dict(sampling_rate=fs, lead_names=names)), scaling="center"))
    add("1-sample signal", run_fe(lambda t: ((x[:, :1],), dict(sampling_rate=fs, lead_names=names))))
    add("0-sample signal", run_fe(lambda t: ((x[:, :0],), dict(sampling_rate=fs, lead_names=names))))
    add("(samples, leads) transposed", run_fe(lambda t: ((x.T,), dict(sampling_rate=fs, lead_names=names))))
    add("NaN in a batch", run_fe(lambda t: ((np.stack([x, np.where(np.arange(1000) == 5, np.nan, x)]),), dict(sampling_rate=fs))))
    add("unknown lead name 'ECG'", run_fe(lambda t: ((x[:1],), dict(sampling_rate=fs, lead_names=["ECG"]))))
    add("duplicate leads I and D1", run_fe(lambda t: ((x[:2],), dict(sampling_rate=fs, lead_names=["I", "D1"]))))
    add("100 unnamed channels", run_fe(lambda t: ((np.random.default_rng(0).normal(size=(100, 1000)),), dict(sampling_rate=100))))

    def bf16(t):
        import torch
        return (torch.tensor(x, dtype=torch.bfloat16),), dict(sampling_rate=fs, lead_names=names)
    add("torch bfloat16 tensor", run_fe(bf16, shape_ok), (OK,))
    if (SHARED / "cinc2021-sample" / "JS20004.hea").is_file():
        add("real record with 3 all-zero leads (JS20004)", run_fe(
            lambda t: ((read_record(SHARED / "cinc2021-sample" / "JS20004"),), {})), (FLAG,))
    return C


def predict_cases() -> list[Case]:
    C = []
    add = lambda n, run, expect=(TYPED,): C.append(Case(n, "ecgnat predict", run, expect))  # noqa: E731
    x, fs, names = ptb_signal()

    def one_row(rows, errors, rc, err):
        ok = len(rows) == 1 and all(np.isfinite(float(rows[0][c])) for c in ("NORM", "MI"))
        return None if ok else f"rows {len(rows)}, errors {[e['problem'][:60] for e in errors]}"

    def same_pred_as_clean_cinc(rows, errors, rc, err):
        if len(rows) != 1:
            return f"typed: {errors[0]['problem'][:150]}" if errors else "no row"
        ref = CTX.cache["cinc_pred"]
        got = [float(rows[0][c]) for c in ("NORM", "MI", "STTC", "CD", "HYP")]
        return None if np.allclose(got, ref, atol=1e-5) else f"probabilities {got} differ from the original's {ref}"

    add("clean record", run_predict(lambda t: [copy_rec(ptb_src(), t)], 1, one_row), (OK,))
    add("all-zero record", run_predict(lambda t: [write_wfdb(t, "zero", np.zeros((12, 1000)), 100, names)], refused=True))
    add("record with one dead lead", run_predict(lambda t: [write_wfdb(t, "dead", np.vstack([x[:7], 0 * x[7:8], x[8:]]), fs, names)],
                                                 flagged=True), (FLAG,))
    add("record at 0.5 Hz", run_predict(lambda t: [(lambda p: (edit_lines(p, set_token(0, 2, "0.5")), p)[1])(copy_rec(ptb_src(), t))], refused=True))
    add("record at 0.001 Hz", run_predict(lambda t: [(lambda p: (edit_lines(p, set_token(0, 2, "0.001")), p)[1])(copy_rec(ptb_src(), t))], refused=True))
    add(".mat re-saved as v5", run_predict(lambda t: [(lambda p: (scipy.io.savemat(str(p) + ".mat", {"val": scipy.io.loadmat(str(cinc_src()) + ".mat")["val"]}), p)[1])(copy_rec(cinc_src(), t))],
                                           1, same_pred_as_clean_cinc), (OK,))
    add(".mat v4 with another variable name", run_predict(lambda t: [(lambda p: (scipy.io.savemat(str(p) + ".mat", {"x": scipy.io.loadmat(str(cinc_src()) + ".mat")["val"]}, format="4"), p)[1])(copy_rec(cinc_src(), t))],
                                                          1, same_pred_as_clean_cinc), (OK,))
    add(".dat swapped with another record", run_predict(lambda t: [(lambda p: (shutil.copy(ptb_src(1).with_suffix(".dat"), p.with_suffix(".dat")), p)[1])(copy_rec(ptb_src(), t))], refused=True))

    def mixed(t):
        good = [copy_rec(ptb_src(i), t / "f") for i in range(3)]
        bad = copy_rec(ptb_src(3), t / "f")
        bad.with_suffix(".dat").write_bytes(b"\x00" * 10)
        write_wfdb(t / "f", "zz_flat", np.zeros((12, 1000)), 100, names)
        return [t / "f"]
    add("folder: 3 good, 1 truncated, 1 flat", run_predict(mixed, 3, lambda rows, errors, rc, err: None if (
        len(rows) == 3 and len(errors) == 2 and rc == 1) else f"{len(rows)} rows, {len(errors)} errors, exit {rc}"), (OK,))
    add("unnamed channels + --lead_names list", run_predict(
        lambda t: [(lambda p: (edit_lines(p, lambda ls: [ls[0]] + [" ".join(q.split()[:8]) for q in ls[1:13]]), p)[1])(copy_rec(ptb_src(), t))],
        1, one_row, extra=("--lead_names", ",".join(names))), (OK,))
    add("single channel 'ECG' + --lead_names ECG=I", run_predict(
        lambda t: [write_wfdb(t, "cinc17", x[:1], fs, ["ECG"])], 1, one_row, extra=("--lead_names", "ECG=I")), (OK,))
    add("single channel 'ECG' + --lead_names I", run_predict(
        lambda t: [write_wfdb(t, "cinc17b", x[:1], fs, ["ECG"])], 1, one_row, extra=("--lead_names", "I")), (OK,))
    add("single channel 'ECG' without naming", run_predict(lambda t: [write_wfdb(t, "cinc17c", x[:1], fs, ["ECG"])], refused=True))

    def head_less(rows, errors, rc, err):
        return None
    add("checkpoint without a trained head", lambda t: _predict_headless(t))

    def unwritable(t):
        start = time.perf_counter()
        (t / "afile").write_text("a file, not a folder")
        rc, out, err, exc = cli(["predict", "-m", str(CTX.checkpoint), str(copy_rec(ptb_src(), t)), "-o",
                                 str(t / "afile" / "p.csv"), "--no_progress"])
        took = time.perf_counter() - start
        if exc is not None or "Traceback" in err:
            return TRACE, err.strip().splitlines()[-1][:160]
        if not rc:
            return SILENT, "exit 0"
        # the check must come before the work: "wrote N records" on stdout means the records were predicted first
        if "wrote" in out:
            return SILENT, f"failed only after predicting ({took:.1f} s): {err.strip().splitlines()[-1][:120]}"
        return TYPED, f"exit {rc}: {err.strip().splitlines()[-1][:140]}"
    add("-o under a path that is a file (unwritable)", unwritable)

    def resume_unrelated(t):
        other = t / "pred.csv"
        other.write_text("id,score\na,0.5\n")
        rc, out, err, exc = cli(["predict", "-m", str(CTX.checkpoint), str(copy_rec(ptb_src(), t / "r")), "-o", str(other),
                                 "--resume", "--no_progress"])
        if exc is not None or "Traceback" in err:
            return TRACE, err.strip().splitlines()[-1][:160]
        if rc == 0:
            return SILENT, "resumed into an unrelated CSV"
        return TYPED, f"exit {rc}: {err.strip().splitlines()[-1][:140]}"
    add("--resume from an unrelated CSV", resume_unrelated)

    def strict_keeps(t):
        for i in range(2):
            copy_rec(ptb_src(i), t / "f", name=f"a{i}")
        bad = copy_rec(ptb_src(2), t / "f", name="b_bad")
        bad.with_suffix(".dat").write_bytes(b"")
        out_csv = t / "p.csv"
        rc, out, err, exc = cli(["predict", "-m", str(CTX.checkpoint), str(t / "f"), "-o", str(out_csv), "--strict",
                                 "--no_progress", "--batch_size", "64"])
        rows = _read_csv(out_csv)
        if exc is not None or "Traceback" in err:
            return TRACE, err.strip().splitlines()[-1][:160]
        if len(rows) < 2:
            return LOST, f"--strict stopped at the bad record; CSV holds {len(rows)} of the 2 finished rows"
        return TYPED, f"exit {rc}, {len(rows)} finished rows kept"
    add("--strict with a bad 3rd record", strict_keeps)
    add("folder without records", run_predict(lambda t: [(t / "empty").mkdir() or t / "empty"], refused=True))
    add("header without its .dat", run_predict(lambda t: [(lambda p: (p.with_suffix(".dat").unlink(), p)[1])(copy_rec(ptb_src(), t))], refused=True))
    return C


def _predict_headless(t: Path):
    rc, out, err, exc = cli(["predict", "-m", str(CTX.pretrain_checkpoint), str(copy_rec(ptb_src(), t)), "-o",
                             str(t / "p.csv"), "--no_progress"])
    if exc is not None or "Traceback" in err:
        return TRACE, err.strip().splitlines()[-1][:160]
    if rc == 0:
        rows = _read_csv(t / "p.csv")
        return SILENT, f"exit 0 with columns {list(rows[0])[-2:] if rows else []}"
    return TYPED, f"exit {rc}: {err.strip().splitlines()[-1][:140]}"


def plot_cases() -> list[Case]:
    C = []
    add = lambda n, run, expect=(TYPED,): C.append(Case(n, "ecgnat plot", run, expect))  # noqa: E731
    x, fs, names = ptb_signal()
    add("clean record", run_plot(lambda t: copy_rec(ptb_src(), t)), (OK,))
    add("0-sample record", run_plot(lambda t: (lambda p: (p.with_suffix(".dat").write_bytes(b""),
                                                          edit_lines(p, set_token(0, 3, "0")), p)[2])(copy_rec(ptb_src(), t)),
                                    keyword="no samples"))
    add("all-zero record", run_plot(lambda t: write_wfdb(t, "zero", np.zeros((12, 1000)), 100, names)), (FLAG, TYPED))
    add("all-zero record with --model", run_plot(lambda t: write_wfdb(t, "zero", np.zeros((12, 1000)), 100, names),
                                                 with_model=True, keyword="usable"))
    add("unnamed channels, no --lead_names", run_plot(lambda t: (lambda p: (edit_lines(p, lambda ls: [ls[0]] + [" ".join(q.split()[:8]) for q in ls[1:13]]), p)[1])(copy_rec(ptb_src(), t)),
                                                      keyword="lead"))
    add("unnamed channels + --lead_names", run_plot(lambda t: (lambda p: (edit_lines(p, lambda ls: [ls[0]] + [" ".join(q.split()[:8]) for q in ls[1:13]]), p)[1])(copy_rec(ptb_src(), t)),
                                                    extra=("--lead_names", ",".join(names))), (OK,))
    add("single channel 'ECG' + --lead_names ECG=I", run_plot(lambda t: write_wfdb(t, "c17", x[:1], fs, ["ECG"]),
                                                              extra=("--lead_names", "ECG=I")), (OK,))
    add("--start_s beyond the record", run_plot(lambda t: copy_rec(ptb_src(), t), keyword="start_s", extra=("--start_s", "99")))
    add("record at 0.5 Hz", run_plot(lambda t: (lambda p: (edit_lines(p, set_token(0, 2, "0.5")), p)[1])(copy_rec(ptb_src(), t)),
                                     keyword="sampling rate"))
    add(".mat re-saved as v5", run_plot(lambda t: (lambda p: (scipy.io.savemat(str(p) + ".mat", {"val": scipy.io.loadmat(str(cinc_src()) + ".mat")["val"]}), p)[1])(copy_rec(cinc_src(), t))), (OK,))
    add(".mat of another record", run_plot(lambda t: (lambda p: (shutil.copy(FIXTURES / "cinc2021" / "HR06001.mat", str(p) + ".mat"), p)[1])(copy_rec(cinc_src(), t)),
                                           keyword="does not match"))
    add("symlink loop", run_plot(lambda t: (lambda p: ((t / "loop.hea").symlink_to(t / "loop.hea"), t / "loop")[1])(t)))
    return C


# ------------------------------------------------------------------------------- folder / finetune
def _folder(t: Path, n: int = 12, labels: list[tuple[str, str]] | None = None, text: str | None = None,
            encoding="utf-8") -> Path:
    root = t / "folder"
    for i in range(n):
        copy_rec(ptb_src(i), root, name=f"r{i:02d}")
    if text is None:
        rows = labels or [(f"r{i:02d}", "NORM" if i % 2 else "MI") for i in range(n)]
        text = "record,labels\n" + "\n".join(f"{a},{b}" for a, b in rows) + "\n"
    (root / "labels.csv").write_bytes(text.encode(encoding))
    return root


def run_folder(make, oracle=None, **cfg):
    def run(tmp: Path):
        from ecgnat_hf.data.builders import ECGFolder

        root = make(tmp)
        try:
            b = ECGFolder(data_dir=str(root), labels_file=str(root / "labels.csv"), cache_dir=str(tmp / "hf"),
                          validation_fraction=0.0, test_fraction=0.0, **cfg)
            b.download_and_prepare()
            ds = b.as_dataset("train")
        except (ECGDataError, ValueError) as exc:
            return TYPED, f"{type(exc).__name__}: {exc}"[:200]
        except Exception as exc:  # noqa: BLE001
            return TRACE, f"{type(exc).__name__}: {exc}"[:200]
        if oracle is None:
            return SILENT, f"built {ds.num_rows} examples"
        wrong = oracle(b, ds)
        return (SILENT, wrong) if wrong else (OK, f"{ds.num_rows} examples; skipped {b.skipped_summary()}")
    return run


def run_finetune(make, extra=(), oracle=None, expect_error: str | None = None):
    def run(tmp: Path):

        root, labels = make(tmp)
        argv = ["finetune", "--dataset", "folder", "--data_dir", str(root), "--labels_csv", str(labels),
                "--cache_dir", str(tmp / "hf"), "--output_dir", str(tmp / "out"), "--max_steps", "2",
                "--per_device_train_batch_size", "4", "--eval_strategy", "no", "--save_strategy", "no",
                "--load_best_model_at_end", "false", "--use_cpu", "true", "--disable_tqdm", "true", *extra]
        rc, out, err, exc = cli(argv)
        if exc is not None or "Traceback" in err:
            return TRACE, (err.strip().splitlines() or ["?"])[-1][:160]
        if rc:
            line = [ln for ln in err.strip().splitlines() if "error" in ln.lower()] or err.strip().splitlines() or ["?"]
            if expect_error and expect_error not in err:
                return MISLEAD, line[-1][:160]
            return TYPED, f"exit {rc}: {line[-1][:150]}"
        if expect_error:
            return SILENT, "trained although it should have refused"
        wrong = oracle(tmp, err) if oracle else None
        return (SILENT, wrong) if wrong else (OK, "trained 2 steps" + (f"; {err.count('left out')} record(s) left out and named" if "left out" in err else ""))
    return run


def folder_cases() -> list[Case]:
    C = []
    add = lambda n, run, expect=(TYPED,): C.append(Case(n, "ECGFolder / finetune", run, expect))  # noqa: E731

    def binary_oracle(b, ds):
        want = {"r00": [1.0, 0.0], "r01": [0.0, 0.0], "r02": [0.0, 1.0], "r03": [0.0, 0.0]}
        got = {ex["record_id"]: list(ex["labels"]) for ex in ds}
        return None if all(got.get(k) == v for k, v in want.items()) else f"labels {got}"
    add("0/1 columns with FALSE, no, 0.00, yes", run_folder(lambda t: _folder(
        t, 4, text="record,AF,NORM\nr00,1,FALSE\nr01,no,0.00\nr02,0,yes\nr03,false,0\n"), binary_oracle), (OK,))
    add("0/1 column with NaN", run_folder(lambda t: _folder(t, 3, text="record,AF\nr00,1\nr01,NaN\nr02,0\n")))
    add("0/1 column with 2", run_folder(lambda t: _folder(t, 3, text="record,AF\nr00,1\nr01,2\nr02,0\n")))
    add("empty labels cell", run_folder(lambda t: _folder(t, 3, text="record,labels\nr00,MI\nr01,\nr02,NORM\n")))
    add("empty labels cell, empty_labels='negative'", run_folder(
        lambda t: _folder(t, 3, text="record,labels\nr00,MI\nr01,\nr02,NORM\n"),
        lambda b, ds: None if [list(e["labels"]) for e in ds if e["record_id"] == "r01"] == [[0.0, 0.0]] else "r01 labels",
        empty_labels="negative"), (OK,))
    add("conflicting duplicate rows", run_folder(lambda t: _folder(t, 3, text="record,labels\nr00,MI\nr01,NORM\nr00,NORM\nr02,MI\n")))
    add("identical duplicate rows", run_folder(lambda t: _folder(t, 3, text="record,labels\nr00,MI\nr01,NORM\nr00,MI\nr02,MI\n"),
                                               lambda b, ds: None if ds.num_rows == 3 else str(ds.num_rows)), (OK,))
    add("latin-1 labels CSV", run_folder(lambda t: _folder(t, 3, text="record,labels\nr00,Vorhofflimmern\nr01,Linksschenkelblock \xe4\nr02,MI\n",
                                                            encoding="latin-1")))
    add("empty labels CSV", run_folder(lambda t: _folder(t, 3, text="")))
    add("labels CSV without a record column", run_folder(lambda t: _folder(t, 3, text="id,labels\nr00,MI\n")))
    add("labels CSV with a ragged row", run_folder(lambda t: _folder(t, 3, text="record,labels\nr00,MI,extra\nr01,MI\n")))

    def with_flat(t):
        root = _folder(t, 4)
        write_wfdb(root, "r03", np.zeros((12, 1000)), 100, list(read_record(ptb_src()).lead_names))
        return root
    add("folder with an all-zero record", run_folder(with_flat, lambda b, ds: None if (
        ds.num_rows == 3 and b.skipped_summary() == {"NoUsableLeadError": 1}) else f"{ds.num_rows} rows, {b.skipped_summary()}"), (OK,))

    def with_swapped(t):
        root = _folder(t, 4)
        shutil.copy(root / "r00.dat", root / "r01.dat")
        return root
    add("folder with a swapped .dat", run_folder(with_swapped, lambda b, ds: None if (
        ds.num_rows == 3 and "SignalMismatchError" in b.skipped_summary()) else f"{ds.num_rows} rows, {b.skipped_summary()}"), (OK,))

    def one_sample(t):
        root = _folder(t, 12)
        x, fs, names = ptb_signal(5)
        write_wfdb(root, "r05", x[:, :1], fs, names)
        return root, root / "labels.csv"
    add("finetune: folder with a 1-sample record", run_finetune(
        one_sample, oracle=lambda t, err: None if "r05" in err else "the short record was not named"), (OK,))

    def flat_ft(t):
        root = _folder(t, 12)
        write_wfdb(root, "r03", np.zeros((12, 1000)), 100, list(read_record(ptb_src()).lead_names))
        return root, root / "labels.csv"
    add("finetune: folder with an all-zero record", run_finetune(flat_ft), (OK,))

    def cinc17(t, n=12):
        root = t / "c17"
        rows = []
        for i in range(n):
            x, fs, _ = ptb_signal(i)
            write_wfdb(root, f"A{i:05d}", x[:1], fs, ["ECG"])
            rows.append(f"A{i:05d},{'N' if i % 2 else 'O'}")
        (root / "REFERENCE.csv").write_text("record,labels\n" + "\n".join(rows) + "\n")
        return root, root / "REFERENCE.csv"
    add("finetune: single-channel 'ECG' folder, no naming", run_finetune(cinc17, ("--label_type", "single_label"),
                                                                          expect_error="--lead_names"))
    add("finetune: single-channel 'ECG' folder, --lead_names ECG=I", run_finetune(
        cinc17, ("--label_type", "single_label", "--lead_names", "ECG=I")), (OK,))
    add("finetune resnet1d: 9 training records, batch 8 (last batch of one)", run_finetune(
        lambda t: cinc17(t, 9), ("--label_type", "single_label", "--lead_names", "ECG=I", "--model_type", "resnet1d",
                                 "--config_overrides", "hidden_sizes=[16,16],block_strides=[1,2],stem_hidden_size=16",
                                 "--per_device_train_batch_size", "8", "--test_fraction", "0", "--validation_fraction", "0")), (OK,))

    def unnamed(t):
        root = _folder(t, 12)
        for h in root.glob("*.hea"):
            ls = h.read_text().splitlines()
            h.write_text("\n".join([ls[0]] + [" ".join(q.split()[:8]) for q in ls[1:13]] + ls[13:]) + "\n")
        return root, root / "labels.csv"
    add("finetune: unnamed channels + --lead_names list", run_finetune(
        unnamed, ("--lead_names", ",".join(read_record(ptb_src()).lead_names))), (OK,))
    add("finetune: conflicting label rows", run_finetune(
        lambda t: (lambda r: (r, r / "labels.csv"))(_folder(t, 12, text="record,labels\n" + "\n".join(
            f"r{i:02d},{'NORM' if i % 2 else 'MI'}" for i in range(12)) + "\nr00,NORM\n")), expect_error="conflicting"))
    return C


# ------------------------------------------------------------------ PTB-XL / Challenge builders
def _ptbxl_copy(t: Path, n: int = 6) -> tuple[Path, list[int]]:
    """The bundled PTB-XL tables plus the first ``n`` records, as a PTB-XL folder."""
    import csv as _csv

    src = sample_dir()
    root = t / "ptbxl"
    root.mkdir()
    for f in ("ptbxl_database.csv", "scp_statements.csv"):
        shutil.copy(src / f, root / f)
    with open(src / "ptbxl_database.csv", newline="") as f:
        rows = list(_csv.DictReader(f))[:n]
    for r in rows:
        rel = Path(r["filename_lr"])
        copy_rec(src / rel, root / rel.parent)
    return root, [int(float(r["ecg_id"])) for r in rows]


def run_builder(make, oracle, kind: str = "ptbxl", **cfg):
    def run(tmp: Path):
        from ecgnat_hf.data.builders import PTBXL, PhysioNetChallenge

        root, ids = make(tmp)
        try:
            if kind == "ptbxl":
                b = PTBXL(config_name="superdiagnostic", data_dir=str(root), cache_dir=str(tmp / "hf"), record_ids=tuple(ids),
                          train_folds=tuple(range(1, 11)), validation_folds=(), test_folds=(), drop_unlabelled=False, **cfg)
            else:
                b = PhysioNetChallenge(data_dir=str(root), cache_dir=str(tmp / "hf"), **cfg)
            b.download_and_prepare()
            ds = b.as_dataset("train")
        except (ECGDataError, ValueError) as exc:
            return TYPED, f"{type(exc).__name__}: {exc}"[:200]
        except Exception as exc:  # noqa: BLE001
            return TRACE, f"{type(exc).__name__}: {exc}"[:200]
        wrong = oracle(b, ds)
        return (SILENT, wrong) if wrong else (OK, f"{ds.num_rows} examples; skipped {b.skipped_summary()}")
    return run


def builder_cases() -> list[Case]:
    C = []
    add = lambda n, run, expect=(OK,): C.append(Case(n, "PTB-XL / Challenge builder", run, expect))  # noqa: E731

    def zero_ptbxl(leads=None):
        def make(t):
            root, ids = _ptbxl_copy(t)
            target = next(root.rglob("*.hea")).with_suffix("")
            x, fs, names = ptb_signal(0)
            x[slice(None) if leads is None else leads] = 0.0
            write_wfdb(target.parent, target.name, x, fs, names)
            return root, ids
        return make

    def flat_oracle(n_rows, summary):
        return lambda b, ds: None if (ds.num_rows == n_rows and b.skipped_summary() == summary) else \
            f"{ds.num_rows} rows, skipped {b.skipped_summary()}"
    add("PTB-XL: all-zero record", run_builder(zero_ptbxl(), flat_oracle(5, {"NoUsableLeadError": 1})))
    add("PTB-XL: one all-zero lead (kept; masked later)", run_builder(zero_ptbxl([8]), flat_oracle(6, {})))
    add("PTB-XL: all-zero record, quality_check=False", run_builder(zero_ptbxl(), flat_oracle(6, {}), quality_check=False))
    add("PTB-XL: unknown quality threshold", run_builder(zero_ptbxl(), flat_oracle(5, {}), quality_thresholds={"flat": 1}),
        (TYPED,))

    def zero_cinc(t):
        root = t / "cinc"
        for i, h in enumerate(sorted((FIXTURES / "cinc2021").glob("*.hea"))[:3]):
            copy_rec(h.with_suffix(""), root)
        r = read_record(root / sorted(p.stem for p in root.glob("*.hea"))[0])
        write_wfdb(root, Path(r.path).name, np.zeros_like(r.signal), r.sampling_rate, list(r.lead_names))
        return root, None
    add("Challenge: all-zero record", run_builder(zero_cinc, lambda b, ds: None if (
        b.skipped_summary() == {"NoUsableLeadError": 1}) else f"{ds.num_rows} rows, skipped {b.skipped_summary()}",
        kind="challenge"))
    return C


# ----------------------------------------------------------------------------- evaluate: lead subsets
def _chest_only_folder(t: Path) -> tuple[Path, Path, str]:
    """12 bundled PTB-XL records, 8 train / 4 test, test record r09 reduced to V1-V6, and a seeded untrained
    tiny checkpoint with the folder's classes."""
    import torch

    from ecgnat_hf import ECGNATConfig, ECGNATFeatureExtractor, ECGNATForSequenceClassification

    root = _folder(t, 12, text="record,labels,split\n" + "\n".join(
        f"r{i:02d},{'NORM' if i % 2 else 'MI'},{'train' if i < 8 else 'test'}" for i in range(12)) + "\n")
    x, fs, names = ptb_signal(9)
    write_wfdb(root, "r09", x[6:], fs, list(names)[6:])
    torch.manual_seed(0)
    labels = ["MI", "NORM"]
    ck = t / "ck2"
    ECGNATForSequenceClassification(ECGNATConfig.from_preset(
        "tiny", num_labels=2, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
        problem_type="multi_label_classification")).save_pretrained(ck)
    ECGNATFeatureExtractor(sampling_rate=100, window_s=10).save_pretrained(ck)
    return root, ck, "r09"


def evaluate_cases() -> list[Case]:
    import json

    C = []
    add = lambda n, run, expect=(OK,): C.append(Case(n, "evaluate / finetune --leads", run, expect))  # noqa: E731

    def evaluate(t: Path):
        root, ck, rec = _chest_only_folder(t)
        rc, out, err, exc = cli(["evaluate", "--model_name_or_path", str(ck), "--dataset", "folder", "--data_dir", str(root),
                                 "--labels_csv", str(root / "labels.csv"), "--cache_dir", str(t / "hf"),
                                 "--eval_splits", "test", "--lead_subsets", "12-lead;I+II;V1", "--plot_roc", "false",
                                 "--output_dir", str(t / "ev"), "--use_cpu", "true", "--disable_tqdm", "true"])
        if exc is not None or "Traceback" in err:
            return TRACE, (err.strip().splitlines() or ["?"])[-1][:160]
        if rc:
            return MISLEAD, f"exit {rc}: the whole evaluation stopped: {(err.strip().splitlines() or ['?'])[-1][:120]}"
        rep = json.loads((t / "ev" / "evaluation.json").read_text())["lead_subsets"]["test"]
        md = (t / "ev" / "evaluation.md").read_text()
        sub = rep["I+II"]
        if (sub.get("n_skipped") != 1 or not any(r.endswith(rec) for r in sub.get("skipped_records", []))
                or "n_skipped" in rep["12-lead"] or rep["V1"].get("n_skipped") != 0 or rec not in md):
            return SILENT, f"I+II: {sub.get('n_scored')} scored, {sub.get('n_skipped')} left out"
        return OK, (f"I+II: {sub['n_scored']} scored, {sub['n_skipped']} left out and named ({rec}); "
                    f"12-lead and V1 score all {rep['V1']['n_scored']}")
    add("evaluate: a test record without any lead of the subset", evaluate)

    def finetune_leads(t: Path):
        root, _, rec = _chest_only_folder(t)

        rc, out, err, exc = cli(["finetune", "--dataset", "folder", "--data_dir", str(root), "--labels_csv",
                                 str(root / "labels.csv"), "--leads", "I+II", "--cache_dir", str(t / "hf"),
                                 "--output_dir", str(t / "out"), "--max_steps", "2", "--per_device_train_batch_size", "4",
                                 "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
                                 "--use_cpu", "true", "--disable_tqdm", "true"])
        if exc is not None or "Traceback" in err:
            return TRACE, (err.strip().splitlines() or ["?"])[-1][:160]
        if rc:
            return MISLEAD, f"exit {rc}: {(err.strip().splitlines() or ['?'])[-1][:140]}"
        if rec not in err:
            return SILENT, "trained, but the record without lead I or II was not named"
        return OK, f"trained 2 steps; {rec} left out and named"
    add("finetune --leads I+II: a record without lead I or II", finetune_leads)
    return C


# ------------------------------------------------------------------------------------ exported model
def export_cases() -> list[Case]:
    C = []
    add = lambda n, run, expect=(TYPED,): C.append(Case(n, "exported model (ONNX)", run, expect))  # noqa: E731

    def exported():
        if "onnx" not in CTX.cache:
            from ecgnat_hf.export import export_model, load_exported

            export_model(CTX.checkpoint, CTX.tmp / "onnx", format="onnx")
            CTX.cache["onnx"] = load_exported(CTX.tmp / "onnx")
        return CTX.cache["onnx"]

    def torch_logits(x, mask):
        import torch
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(CTX.checkpoint).eval()
        with torch.inference_mode():
            return model(input_values=torch.from_numpy(x), lead_mask=torch.from_numpy(mask)).logits.numpy()

    def run_exported(n_samples: int | None, through_fe: bool = False, empty_mask: bool = False, below: int = 0):
        """``n_samples`` of a real record (None: the export's min_length - ``below``), raw or through the
        feature extractor's windows, run by the Python runner and compared with PyTorch."""
        def run(tmp: Path):
            from ecgnat_hf.feature_extraction_ecgnat import ECGNATFeatureExtractor

            ex = exported()
            rec = read_record(ptb_src(0))
            n = ex.min_length - below if n_samples is None else n_samples
            fe = ECGNATFeatureExtractor.from_pretrained(CTX.checkpoint)
            feats = fe(rec.signal[:, :n] if through_fe else rec.signal, sampling_rate=rec.sampling_rate,
                       lead_names=rec.lead_names, window=through_fe)
            x = feats["input_values"] if through_fe else feats["input_values"][:, :, :n]
            mask = feats["lead_mask"].astype(bool)
            if empty_mask:
                mask[:] = False
            try:
                out = ex(x, mask, record=Path(rec.path).name)
            except (ECGDataError, ECGInputError) as exc:
                return TYPED, f"{type(exc).__name__}: {exc}"[:200]
            except Exception as exc:  # noqa: BLE001
                return TRACE, f"{type(exc).__name__}: {exc}"[:200]
            diff = float(np.abs(out["logits"] - torch_logits(x, mask)).max())
            return (OK, f"{x.shape[-1]} samples, |ONNX - PyTorch| {diff:.1e}") if diff < 1e-4 else \
                (SILENT, f"{x.shape[-1]} samples, ONNX differs from PyTorch by {diff:.2g}")
        return run
    add("raw input of 300 samples (below min_length)", run_exported(300))
    add("raw input of min_length - 1 samples", run_exported(None, below=1))
    add("raw input of exactly min_length samples", run_exported(None), (OK,))
    add("3 s record through the feature extractor (padded to one window)", run_exported(300, through_fe=True), (OK,))
    add("lead_mask row without a present lead", run_exported(1000, empty_mask=True))
    return C


# -------------------------------------------------------------------------------------------- main
def _setup(tmp: Path) -> Ctx:
    import torch

    from ecgnat_hf import ECGNATConfig, ECGNATFeatureExtractor, ECGNATForSequenceClassification
    from ecgnat_hf.modeling_ecgnat import ECGNATForPreTraining

    torch.manual_seed(0)
    labels = ["NORM", "MI", "STTC", "CD", "HYP"]
    ck = tmp / "checkpoint"
    config = ECGNATConfig.from_preset("tiny", num_labels=5, id2label=dict(enumerate(labels)),
                                      label2id={n: i for i, n in enumerate(labels)}, problem_type="multi_label_classification")
    ECGNATForSequenceClassification(config).save_pretrained(ck)
    ECGNATFeatureExtractor(sampling_rate=100, window_s=10).save_pretrained(ck)
    pre = tmp / "pretrain_checkpoint"
    ECGNATForPreTraining(ECGNATConfig.from_preset("tiny")).save_pretrained(pre)
    ECGNATFeatureExtractor(sampling_rate=100, window_s=10).save_pretrained(pre)
    ctx = Ctx(tmp, ck, pre)
    global CTX
    CTX = ctx
    d = tmp / "ref"
    rc, out, err, exc = cli(["predict", "-m", str(ck), str(copy_rec(cinc_src(), d)), "-o", str(d / "p.csv"), "--no_progress"])
    ctx.cache["cinc_pred"] = [float(_read_csv(d / "p.csv")[0][c]) for c in labels]
    return ctx


# --------------------------------------------------------------------- issue 25: the second campaign's classes
def _gain_edit(token: str, leads=range(12)):
    """Header edit: the gain field of the given signal lines (0-based leads) becomes ``token``."""
    def fn(lines):
        for i in leads:
            toks = lines[1 + i].split()
            toks[2] = token
            lines[1 + i] = " ".join(toks)
        return lines
    return fn


def _unit_edit(unit: str, leads=range(12), name: str | None = None):
    def fn(lines):
        for i in leads:
            toks = lines[1 + i].split()
            toks[2] = toks[2].replace("/mV", f"/{unit}")
            if name is not None:
                toks[8:] = [name]
            lines[1 + i] = " ".join(toks)
        return lines
    return fn


def _hea_copy(fn):
    def make(tmp):
        p = copy_rec(ptb_src(), tmp)
        edit_lines(p, fn)
        return p
    return make


def _scaled(factor: float, leads=None):
    ref = read_record(ptb_src())

    def oracle(rec):
        want = ref.signal.astype(np.float64) * factor
        if leads is not None:
            want = ref.signal.astype(np.float64).copy()
            want[leads] *= factor
        ok = rec.signal.shape == want.shape and np.allclose(rec.signal, want, rtol=1e-5, atol=1e-9)
        return None if ok else "signal differs from the original at the expected scale"
    return oracle


def _readable(detail: str) -> str | None:
    """A message with a number of 20+ digits is not readable."""
    return "unreadable number in the message" if re.search(r"\d{20,}", detail) else None


def units_cases() -> list[Case]:
    """Class 1: physical units, gains, baselines, inverted leads."""
    C = []
    add = lambda n, entry, run, expect=(TYPED,): C.append(Case(n, entry, run, expect))  # noqa: E731
    R = "read_record"
    for unit in ("mmHg", "furlong", "unknown"):
        add(f".hea ECG leads in {unit!r}", R, run_reader(_hea_copy(_unit_edit(unit)), keyword=f"'{unit}'"))
    add(".hea lead V1 alone in 'mmHg'", R, run_reader(_hea_copy(_unit_edit("mmHg", [6])), keyword="signal 7 (V1)"))
    add(".hea channel 'ABP' in mmHg beside 11 ECG leads", R, run_reader(
        _hea_copy(_unit_edit("mmHg", [11], name="ABP")),
        lambda r: None if (r.lead_names[11] == "ABP" and np.allclose(r.signal[:11], read_record(ptb_src()).signal[:11]))
        else "ECG leads changed"), (OK,))
    for unit, factor in (("mv", 1.0), ("MV", 1.0), ("millivolts", 1.0), ("\u00b5V", 1e-3), ("\u03bcV", 1e-3), ("V", 1e3),
                         ("nV", 1e-6)):
        add(f".hea units {unit!r}", R, run_reader(_hea_copy(_unit_edit(unit)), _scaled(factor)), (OK,))
    add(".hea negative gain on lead I", R, run_reader(_hea_copy(_gain_edit("-1000/mV", [0])), _scaled(-1.0, [0])), (FLAG,))
    add(".hea negative gain on every lead", R, run_reader(_hea_copy(_gain_edit("-1000/mV")), _scaled(-1.0)), (FLAG,))
    add(".hea zero gain on lead III (WFDB default 200)", R, run_reader(_hea_copy(_gain_edit("0/mV", [2])),
                                                                      _scaled(1000 / 200, [2])), (FLAG,))
    add(".hea baseline 1e37 adu", R, run_reader(_hea_copy(_gain_edit("1000(1e37)/mV", [0])), keyword="baseline"))
    add(".hea gain 1e-300 (values beyond float32)", R, run_reader(_hea_copy(_gain_edit("1e-300/mV", [0])), keyword="gain"))

    E = "feature extractor"
    x, fs, names = ptb_signal()

    def readable_flag(factor, scaling="standardize"):
        def run(tmp):
            outcome, detail = run_fe(lambda t: ((x * factor,), dict(sampling_rate=fs, lead_names=names)),
                                     scaling=scaling)(tmp)
            bad = _readable(detail)
            return (MISLEAD, bad + ": " + detail[:120]) if bad else (outcome, detail)
        return run
    add("values x 1e30 (a gain error), standardizing extractor", E, readable_flag(1e30), (FLAG,))
    add("values x 1e30, amplitude-keeping extractor", E, readable_flag(1e30, "center"))

    def inverted(rows):
        def make(t):
            y = x.copy()
            y[rows] *= -1
            return (y,), dict(sampling_rate=fs, lead_names=names)
        return make
    add("every lead inverted (lead I vs aVR)", E, run_fe(inverted(slice(None))), (FLAG,))
    add("lead II inverted (Einthoven)", E, run_fe(inverted([1])), (FLAG,))
    add("lead aVL inverted (Einthoven)", E, run_fe(inverted([4])), (FLAG,))

    P = "ecgnat predict"
    add("ECG leads in 'furlong'", P, run_predict(lambda t: [_hea_copy(_unit_edit("furlong"))(t)], refused=True))
    add("negative gain on every lead", P, run_predict(lambda t: [_hea_copy(_gain_edit("-1000/mV"))(t)], flagged=True), (FLAG,))
    add("zero gain on lead I", P, run_predict(lambda t: [_hea_copy(_gain_edit("0/mV", [0]))(t)], flagged=True), (FLAG,))
    add("baseline 1e37 adu", P, run_predict(lambda t: [_hea_copy(_gain_edit("1000(1e37)/mV", [0]))(t)], refused=True))
    return C


def output_path_cases() -> list[Case]:
    """Class 2: output paths do what they say, or the command refuses before any work."""
    C = []
    add = lambda n, entry, run, expect=(TYPED,): C.append(Case(n, entry, run, expect))  # noqa: E731

    def plot_into(t):
        (t / "figs").mkdir()
        rc, out, err, exc = cli(["plot", str(copy_rec(ptb_src(), t / "r")), "-o", str(t / "figs")])
        if exc is not None or "Traceback" in err:
            return TRACE, (err.strip().splitlines() or ["?"])[-1][:160]
        target = t / "figs" / "00001_lr_ecg.png"
        if (t / "figs.png").exists():
            return SILENT, f"wrote figs.png, said {out.strip()[:120]}"
        if rc == 0 and target.is_file() and str(target) in out:
            return OK, "PNG written into the folder and named"
        return (TYPED, f"exit {rc}: {err.strip()[-140:]}") if rc else (SILENT, f"said {out.strip()[:120]}")
    add("plot -o EXISTING_DIR", "ecgnat plot", plot_into, (OK, TYPED))

    def cmd(argv_fn, keyword: str, banned: str | None = None, before_work: bool = True):
        def run(t):
            rc, out, err, exc = cli(argv_fn(t))
            if exc is not None or "Traceback" in err:
                return TRACE, (err.strip().splitlines() or ["?"])[-1][:160]
            if not rc:
                return SILENT, "exit 0"
            last = (err.strip().splitlines() or ["?"])[-1]
            if keyword not in err or (banned and banned in last):
                return MISLEAD, last[:160]
            if before_work and "wrote" in out:
                return SILENT, "failed only after the work"
            return TYPED, f"exit {rc}: {last[:150]}"
        return run
    ck = lambda: str(CTX.checkpoint)  # noqa: E731
    add("plot -o under /proc", "ecgnat plot", cmd(lambda t: ["plot", str(copy_rec(ptb_src(), t)), "-o", "/proc/ecg.png"],
                                                  "/proc"))
    add("predict -o under /proc", "ecgnat predict", cmd(
        lambda t: ["predict", "-m", ck(), str(copy_rec(ptb_src(), t)), "-o", "/proc/p.csv", "--no_progress"], "--output /proc"))
    add("predict -o in a missing folder under /proc", "ecgnat predict", cmd(
        lambda t: ["predict", "-m", ck(), str(copy_rec(ptb_src(), t)), "-o", "/proc/x/p.csv", "--no_progress"], "--output /proc"))
    add("embed -o under /proc", "ecgnat embed", cmd(
        lambda t: ["embed", "-m", ck(), str(copy_rec(ptb_src(), t)), "-o", "/proc/e.parquet", "--no_progress"],
        "--output /proc"))
    add("export -o under /proc", "ecgnat export", cmd(lambda t: ["export", "-m", ck(), "-o", "/proc/export"],
                                                      "--output /proc", banned="checkpoint"))
    add("export -o a file (a folder is needed)", "ecgnat export", cmd(
        lambda t: ((t / "afile").write_text("x"), ["export", "-m", ck(), "-o", str(t / "afile")])[1],
        "--output", banned="checkpoint"))

    def strict_errors_csv(t):
        for i in range(2):
            copy_rec(ptb_src(i), t / "f", name=f"a{i}")
        copy_rec(ptb_src(2), t / "f", name="b_bad").with_suffix(".dat").write_bytes(b"")
        rc, out, err, exc = cli(["predict", "-m", ck(), str(t / "f"), "-o", str(t / "p.csv"), "--strict", "--no_progress"])
        if exc is not None or "Traceback" in err:
            return TRACE, (err.strip().splitlines() or ["?"])[-1][:160]
        errors = _read_csv(t / "p.errors.csv")
        if not rc:
            return SILENT, "exit 0"
        if [e["record_id"] for e in errors] != ["b_bad"]:
            return LOST, f"errors CSV holds {[e['record_id'] for e in errors]}, not the record --strict stopped at"
        return TYPED, f"exit {rc}; b_bad in the errors CSV ({errors[0]['error']}); {len(_read_csv(t / 'p.csv'))} rows kept"
    add("--strict: the record it stopped at in the errors CSV", "ecgnat predict", strict_errors_csv)
    return C


def message_cases() -> list[Case]:
    """Class 3: messages name the real culprit."""
    C = []
    add = lambda n, entry, run, expect=(TYPED,): C.append(Case(n, entry, run, expect))  # noqa: E731
    x, fs, names = ptb_signal()

    def matlab_rate(t):
        from ecgnat_hf.data.records import read_matlab_record

        m = t / "x.mat"
        scipy.io.savemat(str(m), {"val": x[:2]})
        try:
            read_matlab_record(m, sampling_rate="abc", lead_names=["I", "II"])
        except ECGDataError as exc:
            return (TYPED, f"{type(exc).__name__}: {exc.problem}") if str(m) in str(exc) else (MISLEAD, str(exc)[:160])
        except Exception as exc:  # noqa: BLE001
            return TRACE, f"{type(exc).__name__}: {exc}"[:160]
        return SILENT, "read"
    add("read_matlab_record(sampling_rate='abc')", "read_record", matlab_rate)

    def fe_none(t):
        outcome, detail = run_fe(lambda t: ((x[:2],), dict(sampling_rate=fs, lead_names=[None, "II"])))(t)
        return (MISLEAD, detail) if outcome == TYPED and "lead_names[0]" not in detail else (outcome, detail)
    add("lead_names=[None, 'II'] for one record", "feature extractor", fe_none)

    bom = b"\xef\xbb\xbf" + "record,labels\nr00,NORM\nr01,Schrittmacher \xe4\nr02,MI\n".encode("cp1252")

    offset = bom.index(0xE4)  # the real offending byte, counted from the file's first byte (the BOM's)

    def bom_csv(encoding=None):
        def run(t):
            root = _folder(t, 3)
            (root / "labels.csv").write_bytes(bom)
            cfg = {"labels_encoding": encoding} if encoding else {}
            outcome, detail = run_folder(lambda _: root, lambda b, ds: None if sorted(ds["record_id"]) == ["r00", "r01", "r02"]
                                         else f"records {sorted(ds['record_id'])}", **cfg)(t / "b")
            if outcome == TYPED and f"byte 0xe4 at offset {offset}" not in detail:
                return MISLEAD, detail
            return outcome, detail
        return run
    add("labels CSV in Windows-1252 with a UTF-8 BOM", "ECGFolder / finetune", bom_csv())
    add("same, labels_encoding='cp1252'", "ECGFolder / finetune", bom_csv("cp1252"), (OK,))
    add("same, labels_encoding='latin-1'", "ECGFolder / finetune", bom_csv("latin-1"), (OK,))

    def unusable(t):
        root = t / "folder"
        for i in range(12):
            write_wfdb(root, f"r{i:02d}", np.zeros((12, 1000)), 100, names)
        (root / "labels.csv").write_text("record,labels\n" + "".join(f"r{i:02d},{'NORM' if i % 2 else 'MI'}\n" for i in range(12)))
        return root, root / "labels.csv"
    add("finetune: every training record unusable", "ECGFolder / finetune",
        run_finetune(unusable, expect_error="every train record was left out"))

    def headerless(t):
        m = t / "rec.mat"
        scipy.io.savemat(str(m), {"val": x})
        return m
    add("Challenge .mat without its header", "ecgnat predict", _predict_keyword(
        lambda t: [headerless(t)], "--sampling_rate"))
    add(".mat without header + --sampling_rate --lead_names", "ecgnat predict", run_predict(
        lambda t: [headerless(t)], 1, lambda rows, errors, rc, err: None if (
            len(rows) == 1 and rows[0]["leads_used"] == ",".join(names)) else f"{len(rows)} rows, {errors}",
        extra=("--sampling_rate", str(fs), "--lead_names", ",".join(names))), (OK,))
    return C


def _predict_keyword(make, keyword: str):
    """predict must refuse the input with a message containing ``keyword`` (advice it can follow)."""
    def run(tmp: Path):
        outcome, detail = run_predict(make, refused=True)(tmp)
        if outcome == TYPED and keyword not in detail:
            return MISLEAD, detail
        return outcome, detail
    return run


def truth_cases() -> list[Case]:
    """Class 4: leads_used, zero gains (in units_cases) and the memory of plot on a long record."""
    C = []
    add = lambda n, entry, run, expect=(OK,): C.append(Case(n, entry, run, expect))  # noqa: E731
    x, fs, names = ptb_signal()
    add("leads_used with a dead lead V2", "ecgnat predict", run_predict(
        lambda t: [write_wfdb(t, "dead", np.vstack([x[:7], 0 * x[7:8], x[8:]]), fs, names)], 1,
        lambda rows, errors, rc, err: None if (rows and "V2" not in rows[0]["leads_used"].split(",")
                                               and "V2" in rows[0]["leads_ignored"].split(","))
        else f"leads_used {rows[0]['leads_used'] if rows else None}"))

    def long_plot(t):
        """A 6-hour record (the bundled record tiled, 52 MB): the plot's peak of traced allocations."""
        import tracemalloc

        src = ptb_src()
        raw = src.with_suffix(".dat").read_bytes()
        reps = 2160
        with open(t / "long.dat", "wb") as f:
            for _ in range(reps):
                f.write(raw)
        lines = src.with_suffix(".hea").read_text().splitlines()
        toks = lines[0].split()
        toks[0], toks[3] = "long", str(1000 * reps)
        lines[0] = " ".join(toks)
        lines[1:13] = [" ".join(["long.dat"] + q.split()[1:6] + ["0"] + q.split()[7:]) for q in lines[1:13]]
        (t / "long.hea").write_text("\n".join(lines) + "\n")
        size = (t / "long.dat").stat().st_size

        def peak_of(argv):
            tracemalloc.start()
            try:
                rc, out, err, exc = cli(argv)
                return rc, err, exc, tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        # baseline in the same run: the same printout of the 10-second original (figure rendering included)
        short = ["plot", str(copy_rec(src, t / "short")), "-o", str(t / "s.png")]
        cli(short)  # warm-up: first-use imports and font caches are not the record's
        _, _, _, base = peak_of(short)
        rc, err, exc, peak = peak_of(["plot", str(t / "long"), "-o", str(t / "l.png"), "--start_s", "10000"])
        if exc is not None or rc:
            return TRACE, (err.strip().splitlines() or ["?"])[-1][:160]
        detail = (f"peak traced allocations {peak / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB record, "
                  f"{peak / base:.2f}x the 10-s record's {base / 2**20:.0f} MiB")
        return (OK, detail) if peak - base < size / 10 else (SILENT, detail + " (the record was loaded)")
    add("plot of a 6-hour record (memory)", "ecgnat plot", long_plot)
    return C


GROUPS = {"read_record": reader_cases, "extractor": extractor_cases, "predict": predict_cases, "plot": plot_cases,
          "folder": folder_cases, "builders": builder_cases, "evaluate": evaluate_cases, "export": export_cases,
          "units": units_cases, "outputs": output_path_cases, "messages": message_cases, "truths": truth_cases}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--markdown", default=None, help="also write the table (Markdown) to this file")
    ap.add_argument("--only", default=None, choices=sorted(GROUPS), help="run one entry point only")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=io.StringIO())  # the CLI's warnings are captured per case
    for name in ("datasets", "transformers", "py.warnings"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore")
    tmp = Path(tempfile.mkdtemp(prefix="ecgnat-hostile-"))
    t0 = time.time()
    try:
        _setup(tmp)
        cases = [c for g, fn in GROUPS.items() if args.only in (None, g) for c in fn()]
        results = []
        for i, case in enumerate(cases):
            d = tmp / f"case{i:03d}"
            d.mkdir()
            try:
                outcome, detail = case.run(d)
            except Exception as exc:  # noqa: BLE001 - a failure of the harness's own setup is a traceback too
                outcome, detail = TRACE, f"{type(exc).__name__}: {exc}"
            passed = outcome in case.expect
            results.append((case, outcome, detail, passed))
            print(f"[{i + 1:3d}/{len(cases)}] {'ok  ' if passed else 'FAIL'} {case.entry:22s} {case.name}: {outcome}",
                  file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = _markdown(results, time.time() - t0)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table)
    return 0 if all(r[3] for r in results) else 1


def _markdown(results, seconds: float) -> str:
    from collections import Counter

    def cell(s: str) -> str:  # temporary folders shortened to <tmp>/
        s = re.sub(r"/\S*?ecgnat-hostile-[^/]+/(case\d+/)?", "<tmp>/", str(s))
        return s.replace("|", "\\|").replace("\n", " ")[:170]

    counts = Counter(o for _, o, _, _ in results)
    by_entry = Counter(c.entry for c, _, _, _ in results)
    failed = [r for r in results if not r[3]]
    lines = [f"{len(results)} hostile inputs ({', '.join(f'{k}: {v}' for k, v in by_entry.items())}); "
             f"{len(results) - len(failed)} as expected, {len(failed)} not. Outcomes: "
             + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f". Run time {seconds / 60:.1f} min.", "",
             "| # | input | entry point | expected | outcome | detail |", "|---|---|---|---|---|---|"]
    for i, (case, outcome, detail, passed) in enumerate(results, 1):
        mark = outcome if passed else f"**{outcome}**"
        lines.append(f"| {i} | {cell(case.name)} | {case.entry} | {' / '.join(case.expect)} | {mark} | {cell(detail)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
