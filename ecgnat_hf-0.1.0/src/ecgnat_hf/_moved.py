"""Old import paths of modules that moved, kept working.

The model families now live side by side in ``ecgnat_hf.models.<family>`` and the figures in
``ecgnat_hf.plotting`` (issue 9). No stub file is left at an old path: git then records each move as a
rename, so history (``git log --follow``) and edits made meanwhile on the old path follow the file.

Instead the package ``__init__`` puts a finder in front of ``sys.meta_path`` that answers the old names with
the module object at the new place: ``ecgnat_hf.modeling_ecgnat is ecgnat_hf.models.ecgnat.modeling_ecgnat``,
so classes, ``isinstance`` checks and monkeypatching see one module. Aliases resolve lazily: importing
``ecgnat_hf.training.plots`` imports matplotlib only then. A moved package (``ecgnat_hf.beats``) also covers its
submodules (``ecgnat_hf.beats.qrs``).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__all__ = ["MOVED", "install"]

#: old module name -> module now imported under that name
MOVED = {
    "ecgnat_hf.configuration_ecgnat": "ecgnat_hf.models.ecgnat.configuration_ecgnat",
    "ecgnat_hf.modeling_ecgnat": "ecgnat_hf.models.ecgnat.modeling_ecgnat",
    "ecgnat_hf.feature_extraction_ecgnat": "ecgnat_hf.models.ecgnat.feature_extraction_ecgnat",
    "ecgnat_hf.neighborhood_attention": "ecgnat_hf.models.ecgnat.neighborhood_attention",
    "ecgnat_hf.pipeline_ecgnat": "ecgnat_hf.models.ecgnat.pipeline_ecgnat",
    "ecgnat_hf.beats": "ecgnat_hf.models.beatnet",
    # split into models/resnet1d/configuration_resnet1d.py and modeling_resnet1d.py; the package has every name
    "ecgnat_hf.training.baselines": "ecgnat_hf.models.resnet1d",
    "ecgnat_hf.training.plots": "ecgnat_hf.plotting.figures",
    "ecgnat_hf.training.lead_attention": "ecgnat_hf.plotting.lead_attention",
}


def _target(fullname: str) -> str | None:
    if not fullname.startswith("ecgnat_hf."):
        return None
    if fullname in MOVED:
        return MOVED[fullname]
    for old, new in MOVED.items():  # a submodule of a moved package
        if fullname.startswith(old + "."):
            return new + fullname[len(old):]
    return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target
        self._spec = None

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        # already executed under its own name; the import system has just set the alias's spec on it
        module.__spec__ = self._spec


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    _ecgnat_moved = True

    def find_spec(self, fullname, path=None, target=None):
        new = _target(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install() -> None:
    """Put the finder first in ``sys.meta_path`` (once)."""
    if not any(getattr(f, "_ecgnat_moved", False) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())
