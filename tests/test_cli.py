"""The ``ecgnat`` command: help, version, recipe forwarding, predict and plot on real records, exit codes."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

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
        assert "--lead_names" in out and "--batch_size" in out


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
    assert list(df.columns[-len(LABELS):]) == LABELS
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
