"""Training and evaluation recipes (``transformers.Trainer`` + Accelerate), one module per recipe.

Each module has ``main(args: list[str] | None = None, command: str | None = None) -> dict``: ``args`` are
command-line arguments (``sys.argv[1:]`` when None), optionally starting with one ``.yaml``/``.json``
run config (flags after it override it); ``command`` is the command line shown on the model card.
All write hub-ready output folders (see :mod:`ecgnat_hf.training.hub`).

* :mod:`.pretrain`: masked-reconstruction pretraining over a mixture of unlabelled sources.
* :mod:`.finetune`: classification fine-tuning (ECG-NAT from a checkpoint or scratch, or ResNet1d).
* :mod:`.linear_probe`: frozen encoder, linear head.
* :mod:`.evaluate`: any checkpoint on any split; per-class metrics, ROC curves, lead subsets.
* :mod:`.label_efficiency`: label fractions x repeats x (pretrained, scratch, ResNet1d) table and plot.

The modules are imported lazily, so ``import ecgnat_hf.recipes`` stays cheap.
"""
import importlib

RECIPES = ("pretrain", "finetune", "linear_probe", "evaluate", "label_efficiency")

__all__ = ["RECIPES", "get_recipe"]


def get_recipe(name: str):
    """The ``main`` function of recipe ``name`` (one of :data:`RECIPES`)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; one of {RECIPES}")
    return importlib.import_module(f"{__name__}.{name}").main
