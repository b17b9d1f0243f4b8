"""Write the research notebooks from their percent-format sources in ``research/src/``.

    python research/build_notebooks.py           # rewrite research/*.ipynb (no outputs)
    python research/build_notebooks.py --check   # exit 1 if a notebook differs from its source

A source is plain Python (so ruff lints it) split into cells by marker lines: ``# %%`` starts a code
cell, ``# %% [parameters]`` the parameters cell (tagged ``parameters`` for papermill-style overrides)
and ``# %% [markdown]`` a markdown cell whose lines are ``# ``-prefixed comments. Lines before the first
marker (the linter header) are not part of the notebook. Nothing imports this script, and the notebooks
do not import anything from ``research/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
SOURCES = {
    "exploratory_analysis.ipynb": HERE / "src" / "exploratory_analysis.py",
    "ablation_studies.ipynb": HERE / "src" / "ablation_studies.py",
}
MARKERS = {"# %%": "code", "# %% [parameters]": "parameters", "# %% [markdown]": "markdown"}


def parse_cells(text: str) -> list[tuple[str, str]]:
    """``(kind, source)`` pairs from a percent-format script; kind is code, parameters or markdown."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        kind = MARKERS.get(line.rstrip())
        if kind is not None:
            cells.append((kind, []))
        elif cells:
            cells[-1][1].append(line)
    out = []
    for kind, lines in cells:
        if kind == "markdown":
            lines = [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in lines]
        body = "\n".join(lines).strip("\n")
        if body:
            out.append((kind, body))
    return out


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """An output-free notebook (nbformat 4) with stable cell ids from ``(kind, source)`` pairs."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, source) in enumerate(cells):
        cell = new_markdown_cell(source) if kind == "markdown" else new_code_cell(source)
        if kind == "parameters":
            cell.metadata["tags"] = ["parameters"]
        cell["id"] = f"cell-{i:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(name: str) -> str:
    """The JSON text of notebook ``name`` as built from its source."""
    return nbformat.writes(build(parse_cells(SOURCES[name].read_text(encoding="utf-8")))) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    parser.add_argument("names", nargs="*", help=f"notebooks to build (default: all of {', '.join(SOURCES)})")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in SOURCES]
    if unknown:
        print(f"error: unknown notebook '{unknown[0]}'; expected one of {', '.join(SOURCES)}", file=sys.stderr)
        return 2
    stale = []
    for name in args.names or SOURCES:
        text, path = render(name), HERE / name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        path.write_text(text, encoding="utf-8")
        print(f"wrote research/{name}")
    if stale:
        print(f"error: {', '.join(stale)} differ from research/src; run python research/build_notebooks.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
