"""Packaging: the wheel works with no repository around it, the version is written in one place and moves with
the changelog, and the README stays a front door whose links resolve."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import ecgnat_hf

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
# README links to pages that other work adds to docs/ (remove an entry once its page is merged)
PENDING_PAGES: set = set()


def test_version_is_written_once_and_matches_the_changelog():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "ecgnat_hf.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?", ecgnat_hf.__version__)
    headings = re.findall(r"^## \[([^\]]+)\]", (REPO / "docs" / "changelog.md").read_text(), flags=re.M)
    assert headings, "docs/changelog.md has no '## [version]' heading"
    assert headings[0] == ecgnat_hf.__version__, (
        f"the latest changelog entry is {headings[0]} but ecgnat_hf.__version__ is {ecgnat_hf.__version__}: "
        "bump both together")
    assert len(set(headings)) == len(headings), "a version appears twice in the changelog"


def test_readme_is_a_front_door_with_working_links():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert "Research use only" in text
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+://", t)]
    assert targets, "the README links into the manual"
    missing = [t for t in targets if t and not (REPO / t).exists() and t not in PENDING_PAGES]
    assert not missing, f"README links to files that do not exist: {missing}"
    for page in ("docs/getting-started.md", "docs/results.md", "CONTRIBUTING.md", "docs/changelog.md"):
        assert page in targets


def _site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


@pytest.mark.slow
def test_wheel_works_outside_the_repository(tmp_path):
    """Build the sdist and the wheel (the wheel from the sdist), check them with twine, install the wheel into a
    fresh virtual environment outside the repository and use it there: the console script, the bundled sample,
    the model-card templates (a fine-tune writes its card), predict, and from_pretrained.

    Third-party dependencies come from this environment through a .pth line (installing torch again would take
    minutes); the package itself is installed from the wheel with --no-deps, and the test proves that the
    imported ecgnat_hf is the wheel's copy, not this environment's editable one."""
    dist = tmp_path / "dist"
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(REPO)],
                           capture_output=True, text=True, env=clean_env)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in dist.iterdir())
    assert wheels[0].name.startswith(f"ecgnat_hf-{ecgnat_hf.__version__}-")
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, (*wheels, *sdists))],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    venv = tmp_path / "fresh venv"  # a space in the path, as on many user machines
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                "--no-index", "--quiet", str(wheels[0])], capture_output=True, text=True,
                               env=clean_env)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    fresh_site = _site_packages(python)
    assert (fresh_site / "ecgnat_hf" / "__init__.py").is_file(), sorted(p.name for p in fresh_site.iterdir())
    # after the fresh site-packages on sys.path: the third-party packages of this environment. A directory added
    # by a .pth line does not have its own .pth files run, so this environment's editable install stays inactive.
    dev_paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (fresh_site / "zz_dev_dependencies.pth").write_text("\n".join(dev_paths) + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**clean_env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PATH": f"{venv / 'bin'}{os.pathsep}{clean_env.get('PATH', '')}"}

    def run(*args, timeout=600):
        done = subprocess.run([str(a) for a in args], cwd=work, env=env, capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    where = run(python, "-c", "import ecgnat_hf, sys; print(ecgnat_hf.__file__); print(ecgnat_hf.__version__)")
    module_file, version = where.strip().splitlines()
    assert Path(module_file).is_relative_to(fresh_site), f"imported {module_file}, not the wheel's copy"
    assert not Path(module_file).is_relative_to(REPO) and version == ecgnat_hf.__version__
    ecgnat = venv / "bin" / "ecgnat"
    assert run(ecgnat, "--version").strip() == f"ecgnat {ecgnat_hf.__version__}"
    assert "--quick" in run(ecgnat, "demo", "--help")

    # a checkpoint trained in seconds on the sample inside the wheel; its model card comes from the packaged template
    run(ecgnat, "finetune", "--dataset", "sample", "--preset", "tiny", "--output_dir", "ckpt", "--max_steps", "2",
        "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2",
        "--per_device_train_batch_size",
        "8", "--max_train_samples", "16", "--max_eval_samples", "16", "--max_test_samples", "16",
        "--disable_tqdm", "true", "--use_cpu", "true", "--report_to", "none")
    card = (work / "ckpt" / "README.md").read_text()
    assert card.startswith("---") and "not a medical device" in card.lower()

    record = run(python, "-c", "from ecgnat_hf.sample_data import sample_dir; "
                               "print(sample_dir() / 'records100/00000/00008_lr')").strip()
    assert Path(record).is_relative_to(fresh_site)
    run(ecgnat, "predict", record, "-m", "ckpt", "-o", "predictions.csv", "--no_progress")
    rows = (work / "predictions.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("00008_lr,")

    loaded = run(python, "-c", "import ecgnat_hf; from transformers import AutoModel; "
                               "m = AutoModel.from_pretrained('ckpt'); print(type(m).__name__, type(m).__module__)")
    assert loaded.split() == ["ECGNATModel", "ecgnat_hf.models.ecgnat.modeling_ecgnat"]
