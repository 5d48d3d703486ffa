"""``ecgnat app``: a Gradio page where a record is dropped in and the printout, labels, lead attention, beats
and timeline appear; ``ecgnat space``: the same app as a Hugging Face Space folder.

* :mod:`.uploads`: uploaded files (WFDB, Challenge ``.mat``, zip, CSV) -> one record on disk, or a message;
* :mod:`.analysis`: one record through the classifier -> predictions, figures and files to download;
* :mod:`.interface`: the page (``gradio.Blocks``), the queue and the temporary folder;
* :mod:`.space`: the Space folder writer.

Gradio is an optional dependency: ``pip install 'ecgnat-hf[app]'``. See ``docs/app.md``.
"""
from .interface import EXAMPLES, build_app, example_records, launch_app, load_checkpoint
from .space import write_space

__all__ = ["launch_app", "build_app", "load_checkpoint", "example_records", "write_space", "EXAMPLES"]
