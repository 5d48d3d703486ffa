"""The code blocks of the README and the manual run, as written, on the bundled sample.

A fenced ```python or ```bash block preceded by the comment ``<!-- runnable -->`` is executed; the blocks of one
page run in order, in one namespace and one working folder, like a notebook. ``<!-- runnable: shared_data -->``
marks a block that reads ``../shared/data`` (skipped with a reason where that folder is absent, a failure in CI).
A block followed by ``<!-- output -->`` and a fenced block is checked against it: what the block prints must
match, with doctest's rules (``...`` matches anything; runs of whitespace are equal).

The working folder holds what the pages assume: ``ecgnat-demo/`` written by ``ecgnat demo --quick`` (the same
files as ``make demo``, trained for a few steps), ``../shared/data`` and, when present, the repository's
``checkpoints/``. Rendered pages hide the comments (HTML comments), so readers see ordinary code blocks.
"""
from __future__ import annotations

import contextlib
import doctest
import io
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]

_MARK = re.compile(r"^<!--\s*runnable(?::\s*(?P<opts>[\w ,-]+))?\s*-->\s*$")
_OUTPUT = re.compile(r"^<!--\s*output\s*-->\s*$")
_FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*(?P<lang>[\w-]*)")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    options: frozenset[str]
    expected: str | None


def _fenced(lines: list[str], start: int) -> tuple[str, str, int]:
    """(language, body, index after the closing fence) of the fence opening at ``lines[start]``."""
    match = _FENCE.match(lines[start])
    if not match:
        raise ValueError(f"line {start + 1}: expected a fenced code block after the marker, got {lines[start]!r}")
    fence, body = match["fence"], []
    for end in range(start + 1, len(lines)):
        if lines[end].startswith(fence):
            return match["lang"], "\n".join(body) + "\n", end + 1
        body.append(lines[end])
    raise ValueError(f"line {start + 1}: code block never closed")


def _next_content(lines: list[str], i: int) -> int:
    while i < len(lines) and not lines[i].strip():
        i += 1
    return i


def extract_blocks(page: Path) -> list[Block]:
    """Every runnable block of ``page``, in order, with its expected output when one is shown."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        mark = _MARK.match(lines[i].strip())
        if not mark:
            i += 1
            continue
        start = _next_content(lines, i + 1)
        try:
            lang, code, i = _fenced(lines, start)
        except (ValueError, IndexError) as exc:
            raise ValueError(f"{page.name}: {exc}") from None
        if lang not in ("python", "bash"):
            raise ValueError(f"{page.name}:{start + 1}: runnable blocks are python or bash, not {lang!r}")
        expected = None
        following = _next_content(lines, i)
        if following < len(lines) and _OUTPUT.match(lines[following].strip()):
            _, expected, i = _fenced(lines, _next_content(lines, following + 1))
        options = frozenset(o.strip() for o in (mark["opts"] or "").replace(",", " ").split() if o.strip())
        blocks.append(Block(page, start + 1, lang, code, options, expected))
    return blocks


RUNNABLE = {page: extract_blocks(page) for page in PAGES}
RUNNABLE = {page: blocks for page, blocks in RUNNABLE.items() if blocks}


def test_the_readme_quickstart_is_executed():
    """The README's quickstart is among the executed blocks: both the Python and the command-line part."""
    langs = {block.lang for block in RUNNABLE.get(REPO / "README.md", [])}
    assert langs == {"python", "bash"}


def test_extraction_reads_markers_and_outputs(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n<!-- runnable -->\n```python\nprint(1)\n```\n\n<!-- output -->\n```text\n1\n```\n"
                    "```python\nnot run\n```\n<!-- runnable: shared_data -->\n\n```bash\necho hi\n```\n")
    first, second = extract_blocks(page)
    assert (first.lang, first.code, first.expected, first.options) == ("python", "print(1)\n", "1\n", frozenset())
    assert (second.lang, second.code, second.expected) == ("bash", "echo hi\n", None)
    assert second.options == {"shared_data"}
    page.write_text("<!-- runnable -->\n```json\n{}\n```\n")
    with pytest.raises(ValueError, match="python or bash"):
        extract_blocks(page)


def _check_output(block: Block, got: str) -> None:
    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    if not checker.check_output(block.expected, got, flags):
        raise AssertionError(f"{block.page.name}:{block.line}: the block's output differs from the one shown\n"
                             + checker.output_difference(doctest.Example("", block.expected), got, flags))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder outside the repository laid out as the pages assume (see the module docstring)."""
    from conftest import SHARED_DATA

    from ecgnat_hf.cli import main as cli_main

    root = tmp_path_factory.mktemp("docs")
    work = root / "work"
    work.mkdir()
    if SHARED_DATA.is_dir():
        (root / "shared").mkdir()
        (root / "shared" / "data").symlink_to(SHARED_DATA)
    for name in ("checkpoints", "recipes", "benchmarks"):
        if (REPO / name).exists():
            (work / name).symlink_to(REPO / name)
    old = Path.cwd()
    os.chdir(work)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli_main(["demo", "--output_dir", "ecgnat-demo", "--quick"]) in (0, None)
    finally:
        os.chdir(old)
    return work


@pytest.mark.slow
@pytest.mark.parametrize("page", sorted(RUNNABLE), ids=lambda p: str(p.relative_to(REPO)))
def test_page_blocks_run(page, workdir, monkeypatch, request):
    if any("shared_data" in block.options for block in RUNNABLE[page]):
        request.getfixturevalue("shared_data")  # skip (or fail in CI) without ../shared/data
    monkeypatch.chdir(workdir)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    namespace: dict = {"__name__": "__docs__"}
    for block in RUNNABLE[page]:
        where = f"{page.relative_to(REPO)}:{block.line}"
        if block.lang == "python":
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(block.code, where, "exec"), namespace)  # noqa: S102 - the documented example
            got = out.getvalue()
        else:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=workdir, env=env,
                                  capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"{where} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            got = done.stdout
        if block.expected is not None:
            _check_output(block, got)
