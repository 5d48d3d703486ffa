"""The API reference is generated from the docstrings (docs/scripts/gen_ref_pages.py, one page per public module),
so a public module or name without a docstring would leave a hole in it."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import ecgnat_hf


def _public_modules() -> list[str]:
    names = ["ecgnat_hf"]
    for info in pkgutil.walk_packages(ecgnat_hf.__path__, "ecgnat_hf."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            names.append(info.name)
    return names


PUBLIC_MODULES = _public_modules()


def test_every_public_module_is_found():
    for expected in ("ecgnat_hf.inference", "ecgnat_hf.models.ecgnat.modeling_ecgnat", "ecgnat_hf.data.builders.ptbxl",
                     "ecgnat_hf.recipes.finetune", "ecgnat_hf.metrics.comparison"):
        assert expected in PUBLIC_MODULES


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_module_and_its_names_have_docstrings(name):
    module = importlib.import_module(name)
    if module.__name__ != name:  # an old import path answering with a moved module
        pytest.skip(f"{name} is an alias of {module.__name__}")
    assert (module.__doc__ or "").strip(), f"module {name} has no docstring"
    missing = []
    for attr in getattr(module, "__all__", ()):
        obj = getattr(module, attr)  # a name listed in __all__ must exist
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not (obj.__doc__ or "").strip():
            missing.append(attr)
    assert not missing, f"{name}: public names without a docstring: {missing}"
