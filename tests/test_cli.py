"""The ``ecgnat`` command: help, version, recipe forwarding, predict and plot on real records, exit codes."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ecgnat_hf
from ecgnat_hf.cli import RECIPES, main
from ecgnat_hf.data.builders.common import find_records
from ecgnat_hf.sample_data import sample_dir

from helpers import CHECKPOINT_LABELS as LABELS
from helpers import make_tiny_checkpoint

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def records() -> list[Path]:
    return find_records(sample_dir() / "records100")[:3]


@pytest.fixture()
def corrupted(records, tmp_path) -> Path:
    folder = tmp_path / "bad"
    folder.mkdir()
    shutil.copy(records[1].with_suffix(".hea"), folder)
    data = records[1].with_suffix(".dat").read_bytes()
    (folder / records[1].with_suffix(".dat").name).write_bytes(data[:1000])
    return folder / records[1].name


# ----------------------------------------------------------------------------------------- version / help
@pytest.mark.slow
def test_installed_script_version():
    script = Path(sys.executable).with_name("ecgnat")
    if not script.exists():
        found = shutil.which("ecgnat")
        if found is None:
            pytest.skip("the `ecgnat` console script is not installed (pip install -e . creates it)")
        script = Path(found)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ecgnat {ecgnat_hf.__version__}"


@pytest.mark.parametrize("command", [None, "predict", "plot"])
def test_help(command, capsys):
    argv = ([command] if command else []) + ["--help"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ecgnat{' ' + command if command else ''}")
    if command is None:
        for name in [*RECIPES, "predict", "plot"]:
            assert name in out
    if command == "predict":
        assert "--lead_names" in out and "--batch_size" in out and "--timeline" in out
    if command == "plot":
        assert "--timeline" in out


def test_usage_errors_exit_2(checkpoint, records, tmp_path, capsys):
    assert main([]) == 2  # no command: help on stderr
    assert main(["no-such-command"]) == 2
    assert main(["predict", str(records[0])]) == 2  # --model missing
    assert main(["predict", "-m", str(checkpoint), str(tmp_path / "nope")]) == 2
    assert "no such record or folder" in capsys.readouterr().err
    assert main(["predict", "-m", str(checkpoint), "--lead_names", "I,FOO", str(records[0])]) == 2
    assert "FOO" in capsys.readouterr().err
    assert main(["predict", "-m", str(checkpoint), "--batch_size", "0", str(records[0])]) == 2
    assert main(["predict", "-m", str(tmp_path / "no_ckpt"), str(records[0])]) == 2
    assert "no_ckpt" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", "-m", str(checkpoint), str(empty)]) == 2
    assert "no ECG records" in capsys.readouterr().err
    assert main(["plot", str(records[0]), "--fusion_output", str(tmp_path / "f.png")]) == 2


# ----------------------------------------------------------------------------------------- recipe forwarding
@pytest.fixture()
def fake_recipes(monkeypatch):
    """Replace every ``ecgnat_hf.recipes.<name>`` by a stub whose ``main`` records its arguments."""
    calls = []
    for module_name, _ in RECIPES.values():
        mod = types.ModuleType(f"ecgnat_hf.recipes.{module_name}")

        def fake_main(args=None, command=None, _name=module_name):
            calls.append((_name, list(args), command, sys.argv[0]))
            if args and args[0] == "--exit-code":
                return int(args[1])
            if args and args[0] == "--bad":
                raise ValueError("unknown command-line argument(s): --bad")
            return {"output_dir": "x"}  # recipes return a results dict on success

        mod.main = fake_main
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return calls


@pytest.mark.parametrize("command", list(RECIPES))
def test_recipe_subcommands_forward_arguments(command, fake_recipes):
    module_name = RECIPES[command][0]
    args = ["--output_dir", "out dir", "--max_steps", "3", "config.yaml", "--help"]
    assert main([command, *args]) == 0
    ((name, got, shown, argv0),) = fake_recipes
    assert name == module_name and got == args  # unchanged, --help included (the recipe prints its own)
    assert shown == f"ecgnat {command} --output_dir 'out dir' --max_steps 3 config.yaml --help"
    assert argv0 == f"ecgnat {command}"  # so the recipe's usage line reads "usage: ecgnat <command>"
    assert sys.argv[0] != argv0  # restored afterwards


def test_recipe_exit_codes_and_global_options(fake_recipes, capsys):
    assert main(["--log_level", "info", "finetune", "--log_level", "debug"]) == 0
    assert fake_recipes[-1][1] == ["--log_level", "debug"]  # after the subcommand: the recipe's
    assert main(["evaluate", "--exit-code", "3"]) == 3
    assert main(["pretrain", "--bad"]) == 2
    assert "ecgnat pretrain: error: unknown command-line argument(s): --bad" in capsys.readouterr().err


def test_missing_recipe_module(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ecgnat_hf.recipes.demo", None)  # import now fails
    assert main(["demo"]) == 1
    assert "ecgnat_hf.recipes.demo is not available" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- predict
def test_predict_command(checkpoint, records, corrupted, tmp_path, capsys):
    out = tmp_path / "out" / "pred.csv"
    code = main(["predict", "-m", str(checkpoint), *map(str, records), str(corrupted.parent), "-o", str(out),
                 "--no_progress", "--batch_size", "2"])
    assert code == 1  # one record failed: data error, the rest is written
    captured = capsys.readouterr()
    assert str(corrupted) in captured.err and "TruncatedSignalError" in captured.err
    df = pd.read_csv(out)
    assert [Path(p) for p in df["path"]] == records
    assert list(df.columns[-2 * len(LABELS):-len(LABELS)]) == LABELS  # then time_positive_<class>
    assert ((df[LABELS] > 0) & (df[LABELS] < 1)).all().all()
    errors = pd.read_csv(out.with_name("pred.errors.csv"))
    assert errors["path"].tolist() == [str(corrupted)]
    assert errors["error"].tolist() == ["TruncatedSignalError"]

    # good records only: exit 0, an errors file with just the header (never a stale one)
    code = main(["predict", "-m", str(checkpoint), str(records[0]), "-o", str(out), "--no_progress",
                 "--lead_names", "I,II"])
    assert code == 0
    df = pd.read_csv(out)
    assert len(df) == 1 and df["leads_used"].tolist() == ["I,II"]
    assert pd.read_csv(out.with_name("pred.errors.csv")).empty


def test_predict_timeline_labels_and_plot_timeline(checkpoint, records, tmp_path, capsys):
    out, timeline = tmp_path / "pred.csv", tmp_path / "windows.csv"
    assert main(["predict", "-m", str(checkpoint), *map(str, records), "-o", str(out), "--timeline", str(timeline),
                 "--no_progress"]) == 0
    captured = capsys.readouterr()
    assert f"windows to {timeline}" in captured.out
    assert "labels use default 0.5" in captured.err  # this checkpoint has no fitted thresholds: said so
    df = pd.read_csv(out, keep_default_na=False)
    assert df["labels"].tolist() == [";".join(c for c in LABELS if row[c] >= 0.5) for _, row in df.iterrows()]
    assert [f"time_positive_{c}" for c in LABELS] == list(df.columns[-len(LABELS):])
    tl = pd.read_csv(timeline)
    assert len(tl) == len(records) and tl["start_s"].tolist() == [0.0] * len(records)

    png = tmp_path / "timeline.png"
    assert main(["plot", "--timeline", str(timeline), "-o", str(png), "--model", str(checkpoint)]) == 0
    _png(png)
    one = tmp_path / "one.png"
    assert main(["plot", "--timeline", str(timeline), "--record_id", records[0].name, "-o", str(one)]) == 0
    _png(one)
    assert main(["plot", "--timeline", str(timeline), "--record_id", "nope", "-o", str(one)]) == 2
    assert "'nope' is not in the timeline" in capsys.readouterr().err
    assert main(["plot", "--timeline", str(out), "-o", str(one)]) == 2  # the summary CSV is not a timeline
    assert "not a timeline" in capsys.readouterr().err
    assert main(["plot"]) == 2


@pytest.mark.slow
def test_predict_window_stride(checkpoint, shared_data, tmp_path, capsys):
    """--window_stride_s 10 scores each second once: every other window of the default 5 s plan, same values."""
    record = shared_data / "mitdb" / "100"  # 30 min, 2 leads
    timelines = {}
    for stride in (None, 10):
        tl = tmp_path / f"windows_{stride}.csv"
        extra = ["--window_stride_s", str(stride)] if stride else []
        assert main(["predict", "-m", str(checkpoint), str(record), "-o", str(tmp_path / f"pred_{stride}.csv"),
                     "--timeline", str(tl), "--no_progress", *extra]) == 0
        timelines[stride] = pd.read_csv(tl)
    default, coarse = timelines[None], timelines[10]
    # (the last window of each plan ends at the record's end, 1805.6 s)
    assert set(np.diff(coarse["start_s"])[:-1]) == {10.0} and set(np.diff(default["start_s"])[:-1]) == {5.0}
    assert default["end_s"].iloc[-1] == coarse["end_s"].iloc[-1]
    assert len(coarse) == len(default) // 2 + 1
    same = default.set_index("start_s").loc[coarse["start_s"]]
    np.testing.assert_allclose(same[LABELS].to_numpy(), coarse[LABELS].to_numpy(), atol=1e-5)
    for bad in ("11", "0"):
        assert main(["predict", "-m", str(checkpoint), str(record), "-o", str(tmp_path / "x.csv"),
                     "--window_stride_s", bad, "--no_progress"]) == 2
        assert "--window_stride_s must be > 0 and at most the checkpoint's window of 10 s" in capsys.readouterr().err


def test_predict_refusals_exit_2_before_work(checkpoint, records, tmp_path, capsys):
    from ecgnat_hf import ECGNATConfig, ECGNATFeatureExtractor, ECGNATForPreTraining

    pre = tmp_path / "pretrained"
    ECGNATForPreTraining(ECGNATConfig.from_preset("tiny")).save_pretrained(pre)
    ECGNATFeatureExtractor(sampling_rate=100).save_pretrained(pre)
    out = tmp_path / "pred.csv"
    assert main(["predict", "-m", str(pre), str(records[0]), "-o", str(out), "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert "no trained classification head" in err and "ecgnat finetune" in err
    assert not out.exists()

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["predict", "-m", str(checkpoint), str(records[0]), "-o", str(blocker / "p.csv")]) == 2
    assert "cannot write there" in capsys.readouterr().err
    assert main(["predict", "-m", str(checkpoint), str(records[0]), "-o", str(out), "--timeline", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err

    unrelated = tmp_path / "other.csv"
    unrelated.write_text("x,y\n1,2\n")
    assert main(["predict", "-m", str(checkpoint), str(records[0]), "-o", str(unrelated), "--resume",
                 "--no_progress"]) == 2
    assert "other.run.json is missing" in capsys.readouterr().err
    assert unrelated.read_text() == "x,y\n1,2\n"


def test_predict_strict_keeps_finished_records(checkpoint, records, corrupted, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    code = main(["predict", "-m", str(checkpoint), *map(str, records[:2]), str(corrupted), str(records[2]),
                 "-o", str(out), "--strict", "--no_progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "truncated" in err and f"2 finished record(s) are in {out}" in err
    assert [Path(p) for p in pd.read_csv(out)["path"]] == records[:2]


def test_predict_uses_every_core_by_default(checkpoint, records, tmp_path, monkeypatch):
    import torch

    from ecgnat_hf import cli

    before = torch.get_num_threads()
    monkeypatch.setitem(cli._USER_SET_THREADS, "OMP_NUM_THREADS", False)
    try:
        assert main(["predict", "-m", str(checkpoint), str(records[0]), "-o", str(tmp_path / "p.csv"),
                     "--no_progress"]) == 0
        assert torch.get_num_threads() == cli.available_cores()
        assert main(["--num_threads", "1", "predict", "-m", str(checkpoint), str(records[0]), "-o",
                     str(tmp_path / "p.csv"), "--no_progress"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------- plot
def _png(path: Path) -> bytes:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000, path
    return data


def test_plot_command(checkpoint, records, tmp_path, capsys):
    out = tmp_path / "ecg.png"
    assert main(["plot", str(records[0]) + ".hea", "--model", str(checkpoint), "-o", str(out)]) == 0
    _png(out)
    _png(tmp_path / "ecg_lead_fusion.png")
    assert "wrote" in capsys.readouterr().out

    plain = tmp_path / "plain.png"  # without a model: the printout only
    assert main(["plot", str(records[1]), "-o", str(plain)]) == 0
    _png(plain)
    assert not (tmp_path / "plain_lead_fusion.png").exists()


def test_plot_two_lead_holter_record(checkpoint, shared_data, tmp_path):
    """MIT-BIH 100 (MLII + V5): the printout marks the other leads 'not recorded'."""
    out = tmp_path / "mitdb100.png"
    assert main(["plot", str(shared_data / "mitdb" / "100"), "-o", str(out), "--start_s", "60"]) == 0
    _png(out)


def test_plot_bad_record_exit_1(corrupted, capsys):
    assert main(["plot", str(corrupted)]) == 1
    err = capsys.readouterr().err
    assert str(corrupted) in err and "truncated" in err
