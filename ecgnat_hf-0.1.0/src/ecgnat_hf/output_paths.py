"""Checking output paths before any work: a command that will fail to write its result says so first.

Public API
----------
- :class:`OutputPathError` (an ``OSError``): the path cannot be written; the message names the option (or
  argument) and the path, and says why.
- :func:`check_output_file` ``(path, what="output")``: a file can be created (or replaced) at ``path``.
- :func:`check_output_dir` ``(path, what="output")``: a folder can be created at ``path``, or it exists and
  files can be created in it.

Permission bits are not trusted: ``os.access`` says yes to root for a read-only folder and for ``/proc``,
where nothing can be created. The check creates (and removes) an empty probe file in the folder that will
receive the output, or, when that folder does not exist yet, in its nearest existing ancestor, where it
would be created. Nothing else is created.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["OutputPathError", "check_output_file", "check_output_dir"]


class OutputPathError(OSError):
    """An output path that cannot be written (read-only place, a file where a folder is needed...)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


def _nearest_existing(folder: Path) -> Path:
    p = folder
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _probe(folder: Path, what: str, path: Path) -> None:
    """Create and remove an empty file in ``folder`` (which exists)."""
    if not folder.is_dir():
        raise OutputPathError(f"{what} {path}: cannot write there: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".ecgnat-write-check-", dir=folder)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutputPathError(f"{what} {path}: cannot write there: {folder} does not accept new files ({reason})") from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:  # pragma: no cover - created but not removable: leave it, the check itself passed
        pass


def check_output_file(path: str | os.PathLike, what: str = "output") -> Path:
    """Raise :class:`OutputPathError` unless a file can be written at ``path`` (its folder is created later if
    needed). Returns ``path`` as a :class:`~pathlib.Path`."""
    path = Path(os.fspath(path))
    if path.is_dir():
        raise OutputPathError(f"{what} {path} is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{what} {path}: the file exists and is not writable")
    parent = path.parent if str(path.parent) else Path(".")
    _probe(_nearest_existing(parent), what, path)
    return path


def check_output_dir(path: str | os.PathLike, what: str = "output") -> Path:
    """Raise :class:`OutputPathError` unless files can be written into the folder ``path`` (created later if
    needed). Returns ``path`` as a :class:`~pathlib.Path`."""
    path = Path(os.fspath(path))
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{what} {path} is a file; give a folder")
    _probe(_nearest_existing(path), what, path)
    return path
