"""Hub-ready output folders, written atomically, and uploading them.

:func:`save_hub_ready` writes everything ``huggingface-cli upload`` / ``push_to_hub`` needs into one
folder:

* ``config.json`` with ``label2id``/``id2label`` and a complete ``auto_map`` (AutoConfig, AutoModel,
  AutoModelForPreTraining, AutoModelForSequenceClassification for ECG-NAT; AutoConfig, AutoModel,
  AutoModelForSequenceClassification for the ResNet1d baseline) and ``model.safetensors``;
* ``preprocessor_config.json`` (with its own ``auto_map``) and the remote-code ``.py`` files, so
  ``from_pretrained(..., trust_remote_code=True)`` works on a machine without ``ecgnat_hf``;
* ``README.md``: the model card (:func:`ecgnat_hf.training.model_card.write_model_card`), whose numbers
  are those of ``eval_results.json``, which is written beside it;
* ``run_arguments.json``: the run's arguments (model/data/training dataclasses).

Everything is first written to a temporary folder in the same parent and renamed into place, so an
interrupted save never leaves a half-written checkpoint. When the target folder already exists (a
recipe's ``output_dir`` with ``checkpoint-*`` folders), the old folder is renamed aside, the new one
renamed in, and entries of the old folder that the new one does not have (checkpoints, trainer state)
are moved back; a crash in that short window leaves them in ``.<name>.old-*`` beside it.

:func:`push_to_hub` uploads such a folder with ``huggingface_hub.HfApi`` (``create_repo`` then
``upload_folder``, checkpoints and hidden files left out).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

logger = logging.getLogger(__name__)

__all__ = ["save_hub_ready", "push_to_hub", "check_hub_ready", "HUB_IGNORE_PATTERNS", "RESNET1D_AUTO_MAP"]

#: never uploaded: Trainer checkpoints, hidden and private files
HUB_IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", ".*", "_*", "*.tmp", "training_args.bin"]

RESNET1D_AUTO_MAP = {
    "AutoConfig": "configuration_resnet1d.ResNet1dConfig",
    "AutoModel": "modeling_resnet1d.ResNet1dModel",
    "AutoModelForSequenceClassification": "modeling_resnet1d.ResNet1dForSequenceClassification",
}
#: module of the ResNet1d remote code in checkpoints saved before models/resnet1d/ (one file, baselines.py)
_RESNET1D_OLD_MODULE = "baselines."


def _json_dump(obj: Any, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


def _prepare_remote_code(model) -> None:
    """Mark the model (and its config) for remote code with a complete auto_map."""
    from ..models.ecgnat.modeling_ecgnat import ECGNATPreTrainedModel
    from ..models.resnet1d import (
        ResNet1dConfig,
        ResNet1dForSequenceClassification,
        ResNet1dModel,
        ResNet1dPreTrainedModel,
    )

    if isinstance(model, ECGNATPreTrainedModel):
        if type(model)._auto_class is None:  # the package __init__ registers them; be safe if it did not
            import ecgnat_hf  # noqa: F401
        return  # ECGNATPreTrainedModel.save_pretrained writes the full auto_map
    if isinstance(model, ResNet1dPreTrainedModel):
        ResNet1dConfig.register_for_auto_class()
        ResNet1dModel.register_for_auto_class("AutoModel")
        ResNet1dForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
        # a model loaded from an older checkpoint keeps its auto_map, which names baselines.py: that file is no
        # longer written, so its entries give way to the current ones
        kept = {k: v for k, v in (getattr(model.config, "auto_map", None) or {}).items()
                if not str(v).startswith(_RESNET1D_OLD_MODULE)}
        model.config.auto_map = {**RESNET1D_AUTO_MAP, **kept}


def check_hub_ready(folder: str | os.PathLike) -> list[str]:
    """Problems that would stop a remote-code load of ``folder`` (empty list: hub-ready)."""
    folder = Path(folder)
    problems = []
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md"):
        if not (folder / name).is_file():
            problems.append(f"missing {name}")
    for name in ("config.json", "preprocessor_config.json"):
        p = folder / name
        if not p.is_file():
            continue
        auto_map = json.loads(p.read_text()).get("auto_map") or {}
        if not auto_map:
            problems.append(f"{name} has no auto_map")
        for cls, ref in auto_map.items():
            ref = ref[0] if isinstance(ref, (list, tuple)) else ref
            if ref and "--" not in ref and not (folder / (ref.rsplit(".", 1)[0] + ".py")).is_file():
                problems.append(f"{name}: {cls} -> {ref} but {ref.rsplit('.', 1)[0]}.py is missing")
    cfg = folder / "config.json"
    if cfg.is_file() and "AutoModelForSequenceClassification" not in (json.loads(cfg.read_text()).get("auto_map") or {}):
        problems.append("config.json auto_map lacks AutoModelForSequenceClassification")
    return problems


def save_hub_ready(
    model,
    feature_extractor,
    output_dir: str | os.PathLike,
    eval_results: Mapping[str, Any] | None = None,
    card_kwargs: Mapping[str, Any] | None = None,
    run_arguments: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, Any] | None = None,
) -> Path:
    """Write a hub-ready checkpoint folder atomically and return its path.

    Args:
        model: an unwrapped ``PreTrainedModel`` (ECG-NAT head or ResNet1d baseline).
        feature_extractor: the ``ECGNATFeatureExtractor`` used for training (saved as
            ``preprocessor_config.json``).
        output_dir: target folder (created, or updated in place keeping unrelated entries such as
            ``checkpoint-*``).
        eval_results: ``{split: {metric: value}}`` (or flat Trainer metrics); written to
            ``eval_results.json`` and rendered into the model card.
        card_kwargs: keyword arguments of :func:`~ecgnat_hf.training.model_card.write_model_card`
            other than ``output_dir`` and ``eval_results`` (``kind``, ``model_name``, ``task_name``,
            ``dataset_name``, ``command``, ``training_args``, ...). None: no README is written.
        run_arguments: JSON-able arguments of the run, written to ``run_arguments.json``.
        extra_files: ``{file name: JSON-able object or str}`` also written into the folder.
    """
    from .model_card import write_model_card

    output_dir = Path(output_dir).resolve()
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        _prepare_remote_code(model)
        model.save_pretrained(tmp)
        feature_extractor.save_pretrained(tmp)
        _json_dump(dict(eval_results or {}), tmp / "eval_results.json")
        if run_arguments is not None:
            _json_dump(dict(run_arguments), tmp / "run_arguments.json")
        for name, content in (extra_files or {}).items():
            if isinstance(content, str):
                (tmp / name).write_text(content, encoding="utf-8")
            else:
                _json_dump(content, tmp / name)
        if card_kwargs is not None:
            write_model_card(tmp, eval_results=dict(eval_results or {}), **dict(card_kwargs))
        problems = check_hub_ready(tmp) if card_kwargs is not None else [
            p for p in check_hub_ready(tmp) if "README" not in p]
        if problems:
            raise RuntimeError(f"checkpoint is not hub-ready: {'; '.join(problems)}")
        _swap_into_place(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("hub-ready checkpoint written to %s", output_dir)
    return output_dir


def _swap_into_place(new: Path, target: Path) -> None:
    if not target.exists():
        os.replace(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rmdir(old)
    os.replace(target, old)
    os.replace(new, target)
    for entry in old.iterdir():  # keep what the new folder does not replace (checkpoints, trainer state)
        dest = target / entry.name
        if not dest.exists():
            os.replace(entry, dest)
    shutil.rmtree(old, ignore_errors=True)


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload ECG-NAT checkpoint (ecgnat_hf recipe)",
) -> Any:
    """Create ``repo_id`` if needed and upload a hub-ready ``folder`` (checkpoints/hidden files excluded).

    Uses ``huggingface_hub.HfApi().create_repo`` and ``.upload_folder`` (the same calls ``Trainer.push_to_hub``
    makes); returns what ``upload_folder`` returns (a ``CommitInfo``).
    """
    from huggingface_hub import HfApi

    problems = check_hub_ready(folder)
    if problems:
        raise RuntimeError(f"{folder} is not hub-ready: {'; '.join(problems)}")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model", token=token)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="model",
        revision=revision,
        commit_message=commit_message,
        ignore_patterns=HUB_IGNORE_PATTERNS,
        token=token,
    )
