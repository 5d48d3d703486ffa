"""Writes one API reference page per public module of ecgnat_hf (run by mkdocs-gen-files at build time).

Private modules (a name part starting with ``_``) are skipped; everything else gets a page, so a new module
appears in the reference without editing the docs.
"""
from pathlib import Path

import mkdocs_gen_files

SRC = Path(__file__).resolve().parents[2] / "src"
nav = mkdocs_gen_files.Nav()

for path in sorted((SRC / "ecgnat_hf").rglob("*.py")):
    module = path.relative_to(SRC).with_suffix("")
    parts = list(module.parts)
    page = Path(*parts).with_suffix(".md")
    if parts[-1] == "__init__":  # a package: its page is the index of its folder
        parts = parts[:-1]
        page = Path(*parts, "index.md")
    if any(part.startswith("_") for part in parts):
        continue
    doc_path = Path("reference", page)
    nav[tuple(parts)] = page.as_posix()
    with mkdocs_gen_files.open(doc_path, "w") as page:
        page.write(f"::: {'.'.join(parts)}\n")
    mkdocs_gen_files.set_edit_path(doc_path, path.relative_to(SRC.parent))

with mkdocs_gen_files.open("reference/SUMMARY.md", "w") as summary:
    summary.writelines(nav.build_literate_nav())
