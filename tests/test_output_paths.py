"""Output paths and command messages that say what really happens (issue 25): plot into a folder, predict and
export to places that cannot be written (checked before any work; the tests run as root, so unwritable places
are a path under /proc, a file where a folder is needed, or a failing probe), --strict's record in the errors
CSV, leads_used without masked leads, header-less MATLAB files in predict, plot memory on long records, and
finetune on a folder whose every record is unusable. Inputs are built from the bundled real PTB-XL records."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import wfdb

from ecgnat_hf.cli import main
from ecgnat_hf.data import read_record
from ecgnat_hf.data.builders.common import find_records
from ecgnat_hf.inference import predict_records
from ecgnat_hf.output_paths import OutputPathError, check_output_dir, check_output_file
from ecgnat_hf.sample_data import sample_dir

from helpers import make_tiny_checkpoint

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def records() -> list[Path]:
    return find_records(sample_dir() / "records100")[:3]


def _write(folder: Path, name: str, signal: np.ndarray, fs: float, names) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=fs, units=["mV"] * len(names), sig_name=list(names), p_signal=signal.T.astype(np.float64),
                fmt=["16"] * len(names), adc_gain=[1000.0] * len(names), baseline=[0] * len(names),
                write_dir=str(folder))
    return folder / name


# ----------------------------------------------------------------------------------------- the probe
def test_check_output_paths(tmp_path, monkeypatch):
    check_output_file(tmp_path / "new" / "deeper" / "p.csv")  # created later: its nearest existing folder is probed
    check_output_dir(tmp_path / "export")
    assert not (tmp_path / "new").exists() and not (tmp_path / "export").exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(OutputPathError, match="/proc does not accept new files"):
        check_output_file("/proc/p.csv")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputPathError, match="is not a folder"):
        check_output_file(tmp_path / "afile" / "p.csv")
    with pytest.raises(OutputPathError, match="is a file; give a folder"):
        check_output_dir(tmp_path / "afile")
    with pytest.raises(OutputPathError, match="is a folder; give a file name"):
        check_output_file(tmp_path)

    def refuse(*a, **k):  # a read-only folder, as a non-root user sees it
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(OutputPathError, match="Permission denied"):
        check_output_dir(tmp_path / "ro")


# ----------------------------------------------------------------------------------------- predict
def test_predict_unwritable_output_is_refused_before_work(checkpoint, records, tmp_path, capsys):
    for target in ("/proc/p.csv", "/proc/none/p.csv"):
        assert main(["predict", "-m", str(checkpoint), str(records[0]), "-o", target, "--no_progress"]) == 2
        err = capsys.readouterr().err
        assert f"--output {target}: cannot write there" in err and "Traceback" not in err
    with pytest.raises(OutputPathError, match="output_csv /proc/p.csv"):  # the library says so too, before loading
        predict_records(checkpoint, records[0], output_csv="/proc/p.csv", progress=False)


def test_strict_lists_the_record_it_stopped_at(checkpoint, records, tmp_path, capsys):
    folder = tmp_path / "f"
    folder.mkdir()
    for name, src in (("a0", records[0]), ("a1", records[1]), ("b_bad", records[2])):
        shutil.copy(src.with_suffix(".dat"), folder / f"{name}.dat")
        (folder / f"{name}.hea").write_text(src.with_suffix(".hea").read_text().replace(src.name, name))
    (folder / "b_bad.dat").write_bytes(b"")  # truncated: the third record stops the run
    out = tmp_path / "p.csv"
    assert main(["predict", "-m", str(checkpoint), str(folder), "-o", str(out), "--strict", "--no_progress"]) == 1
    errors = pd.read_csv(tmp_path / "p.errors.csv")
    assert list(errors["record_id"]) == ["b_bad"] and errors["error"][0] == "TruncatedSignalError"
    assert len(pd.read_csv(out)) == 2
    assert "it is listed in" in capsys.readouterr().err


def test_leads_used_lists_only_scored_leads_and_calibration_in_quality(checkpoint, records, tmp_path):
    r = read_record(records[0])
    x = r.signal.astype(np.float64).copy()
    x[7] = 0.0  # V2 dead: masked
    dead = _write(tmp_path / "d", "dead", x, r.sampling_rate, r.lead_names)
    neg = tmp_path / "n" / "neg"
    neg.parent.mkdir()
    shutil.copy(records[0].with_suffix(".dat"), neg.with_suffix(".dat"))
    lines = records[0].with_suffix(".hea").read_text().replace(records[0].name, "neg").splitlines()
    toks = lines[1].split()
    toks[2] = "-" + toks[2]
    lines[1] = " ".join(toks)
    neg.with_suffix(".hea").write_text("\n".join(lines) + "\n")
    df = predict_records(checkpoint, [dead, neg], progress=False)
    row = df.set_index("record_id").loc["dead"]
    assert "V2" not in row["leads_used"].split(",") and "V2" in row["leads_ignored"].split(",")
    assert "masked (not scored): V2" in row["quality"]
    q = df.set_index("record_id").loc["neg", "quality"]
    assert "lead I: negative gain in the header" in q and "lead I inverted" in q


def test_predict_headerless_matlab_with_sampling_rate(checkpoint, records, tmp_path, capsys):
    r = read_record(records[0])
    m = tmp_path / "rec.mat"
    scipy.io.savemat(str(m), {"val": r.signal.astype(np.float64)})
    out = tmp_path / "p.csv"
    assert main(["predict", "-m", str(checkpoint), str(m), "-o", str(out), "--no_progress"]) == 1
    problem = pd.read_csv(tmp_path / "p.errors.csv")["problem"][0]
    assert "--sampling_rate" in problem  # advice the command can follow
    assert main(["predict", "-m", str(checkpoint), str(m), "-o", str(out), "--no_progress", "--sampling_rate", "100",
                 "--lead_names", ",".join(r.lead_names)]) == 0
    ref = predict_records(checkpoint, records[0], progress=False)
    got = pd.read_csv(out)
    assert got["leads_used"][0] == ",".join(r.lead_names)
    np.testing.assert_allclose(got[["NORM", "MI"]].to_numpy(), ref[["NORM", "MI"]].to_numpy(), atol=1e-5)


# ----------------------------------------------------------------------------------------- export
def test_export_blames_the_output_not_the_checkpoint(checkpoint, tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("x")
    for target in ("/proc/export", str(tmp_path / "afile")):
        assert main(["export", "-m", str(checkpoint), "-o", target]) == 2
        err = capsys.readouterr().err
        assert f"--output {target}" in err and "checkpoint" not in err
    from ecgnat_hf import export as export_mod

    monkeypatch.setattr(export_mod, "_load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    with pytest.raises(OutputPathError):  # the library checks the folder before loading anything
        export_mod.export_model(checkpoint, "/proc/export")


# ----------------------------------------------------------------------------------------- plot
def test_plot_into_an_existing_folder(records, tmp_path, capsys):
    folder = tmp_path / "figs"
    folder.mkdir()
    assert main(["plot", str(records[0]), "-o", str(folder)]) == 0
    target = folder / f"{records[0].name}_ecg.png"
    assert target.read_bytes()[:8] == PNG_MAGIC and not (tmp_path / "figs.png").exists()
    assert f"wrote {target}" in capsys.readouterr().out
    assert main(["plot", str(records[0]), "-o", str(tmp_path / "noext")]) == 0
    assert (tmp_path / "noext.png").is_file() and f"wrote {tmp_path / 'noext.png'}" in capsys.readouterr().out
    assert main(["plot", str(records[0]), "-o", str(tmp_path / "x.csv")]) == 2
    assert main(["plot", str(records[0]), "-o", "/proc/x.png"]) == 2


def test_plot_reads_only_the_window_it_shows(records, tmp_path, monkeypatch):
    """A 1-hour record (the bundled record tiled): the printout reads its header and 10 s, not the hour."""
    src = records[0]
    raw = src.with_suffix(".dat").read_bytes()
    long = tmp_path / "long"
    (tmp_path / "long.dat").write_bytes(raw * 360)
    lines = src.with_suffix(".hea").read_text().splitlines()
    toks = lines[0].split()
    toks[0], toks[3] = "long", str(1000 * 360)
    lines[0] = " ".join(toks)
    lines[1:13] = [" ".join(["long.dat"] + q.split()[1:6] + ["0"] + q.split()[7:]) for q in lines[1:13]]
    (tmp_path / "long.hea").write_text("\n".join(lines) + "\n")
    import ecgnat_hf.data.records as records_mod

    real = records_mod.read_record
    spans = []

    def spy(path, **kw):
        rec = real(path, **kw)
        spans.append(rec.n_samples)
        return rec
    monkeypatch.setattr(records_mod, "read_record", spy)
    assert main(["plot", str(long), "-o", str(tmp_path / "l.png"), "--start_s", "1800"]) == 0
    assert max(spans) <= 10 * 100 + 1, spans


def test_finetune_all_training_records_unusable(tmp_path, capsys):

    r = read_record(find_records(sample_dir() / "records100")[0])
    root = tmp_path / "folder"
    for i in range(10):
        _write(root, f"r{i:02d}", np.zeros_like(r.signal, dtype=np.float64), r.sampling_rate, r.lead_names)
    (root / "labels.csv").write_text("record,labels\n" + "".join(f"r{i:02d},{'NORM' if i % 2 else 'MI'}\n"
                                                                for i in range(10)))
    code = main(["finetune", "--dataset", "folder", "--data_dir", str(root), "--labels_csv", str(root / "labels.csv"),
                 "--cache_dir", str(tmp_path / "hf"), "--output_dir", str(tmp_path / "out"), "--max_steps", "1",
                 "--use_cpu", "true", "--disable_tqdm", "true"])
    err = capsys.readouterr().err
    assert code == 2
    assert "every train record was left out (10 record(s)" in err and "NoUsableLeadError" in err
    assert "corresponds to no data" not in err
    assert os.path.join(str(root), "r00") in err


def test_embed_checks_its_output_first_and_lists_scored_leads(checkpoint, records, tmp_path, capsys):
    from ecgnat_hf.embeddings import embed_records

    assert main(["embed", "-m", str(checkpoint), str(records[0]), "-o", "/proc/e.parquet", "--no_progress"]) == 2
    assert "--output /proc/e.parquet: cannot write there" in capsys.readouterr().err
    r = read_record(records[0])
    x = r.signal.astype(np.float64).copy()
    x[7] = 0.0
    dead = _write(tmp_path, "dead", x, r.sampling_rate, r.lead_names)
    df = embed_records(checkpoint, dead, progress=False)
    assert "V2" not in df["leads_used"][0].split(",") and len(df["leads_used"][0].split(",")) == 11
