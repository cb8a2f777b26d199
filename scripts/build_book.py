#!/usr/bin/env python3
"""Build the course as a static site (Jupyter Book 1.x) from executed notebooks.

    python scripts/build_book.py                               # outputs/notebooks -> outputs/book/html
    python scripts/build_book.py --notebooks DIR --figures DIR --out DIR

``make book`` runs it after ``make run``. The site holds, in this order: the README (landing page),
the eight executed notebooks with their outputs, the dataset card (data/README.md), the
instructor's guide and the glossary (notebooks/INSTRUCTORS.md, GLOSSARY.md, when they exist) and a gallery of outputs/figures.

What the staging step (``OUT/src``) does to the sources, so that the site stands on its own:

* relative links to files that are part of the site stay (the repository's layout is kept);
  links to other files of the repository point to them on GitHub (``--repo-url``);
* images that live outside the site (e.g. the "Open in Colab" badges) become plain text links,
  so every image of the site is served by the site itself;
* an interactive viewer (ipywidgets) is replaced by its last static state: the HTML copy of its
  first drawing that ``ctxmix_lite.viz.widgets.Viewer`` puts next to the widget (a note that it is
  live in Jupyter and Colab, the control values, the figure), else the images and audio its
  output widget held when the notebook was saved and the values of its controls. The widget state itself is dropped (it would need
  JavaScript from a CDN that a static, offline site cannot rely on). When the run saved no
  widget state, the note says so.

Nothing is executed here (``execute_notebooks: off``); a notebook without outputs is an error.
"""
from __future__ import annotations

import argparse
import copy
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
REPO_URL = "https://github.com/ctxmix/ctxmix"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
LIVE_NOTE = ("This is an interactive viewer. The site shows it as it was when the notebook was "
             "saved; open the notebook in Jupyter (<code>make lab</code>) or on Colab to operate "
             "its controls.")

LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)(\s+\"[^\"]*\")?\)")


# ---- markdown ---------------------------------------------------------------------------------
def rewrite_markdown(text: str, src_rel: Path, in_site: set, repo_url: str = REPO_URL) -> str:
    """Links of a markdown file at ``src_rel`` (relative to the repository root), fixed for the site."""
    out, fenced = [], False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        out.append(line if fenced else _rewrite_line(line, src_rel, in_site, repo_url))
    return "".join(out)


def _rewrite_line(line: str, src_rel: Path, in_site: set, repo_url: str) -> str:
    def fix(m):
        bang, label, target, title = m.group(1), m.group(2), m.group(3), m.group(4) or ""
        label = LINK.sub(fix, label)  # nested: [![badge](img)](url)
        external = re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)
        if bang:
            if external:  # an image the site does not hold: keep its words, drop the picture
                return label or target
            return m.group(0)
        if external:
            return f"[{label}]({target}{title})"
        if target.startswith("#"):
            return f"[{label}](#{site_anchor(src_rel.as_posix(), target[1:])}{title})"
        path, _, anchor = target.partition("#")
        resolved = (src_rel.parent / path)
        parts = []
        for p in resolved.parts:
            if p == "..":
                if parts:
                    parts.pop()
            elif p != ".":
                parts.append(p)
        rel = "/".join(parts)
        if rel in in_site:
            return f"[{label}]({path}{'#' + site_anchor(rel, anchor) if anchor else ''}{title})"
        kind = "tree" if (ROOT / rel).is_dir() or path.endswith("/") else "blob"
        url = f"{repo_url}/{kind}/main/{rel}" + (f"#{anchor}" if anchor else "")
        return f"[{label}]({url}{title})"

    return LINK.sub(fix, line)


# Heading anchors: the sources link to headings by GitHub's slugs ("Shipped results
# (`data/results/`)" -> #shipped-results-dataresults, "Slides → notebook sections" ->
# #slides--notebook-sections); Sphinx gives the same headings docutils ids
# (shipped-results-data-results, slides-notebook-sections). {page: {GitHub slug: docutils id}}.
_ANCHORS: dict = {}


def github_slug(heading: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def heading_anchors(text: str) -> dict:
    """{GitHub slug: docutils id} of the markdown headings of ``text`` (fenced code skipped)."""
    from docutils.nodes import make_id

    out, fenced = {}, False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        m = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            shown = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1)).replace("`", "").replace("*", "")
            out.setdefault(github_slug(m.group(1).replace("`", "").replace("*", "")), make_id(shown))
    return out


def site_anchor(page: str, anchor: str) -> str:
    """The id the site gives to ``page#anchor`` (a GitHub heading slug becomes the docutils id)."""
    return _ANCHORS.get(page, {}).get(anchor, anchor)


# ---- notebooks --------------------------------------------------------------------------------
def _descendants(state: dict, model_id: str, seen=None) -> list:
    seen = seen if seen is not None else set()
    if model_id in seen or model_id not in state:
        return []
    seen.add(model_id)
    found = [model_id]
    st = state[model_id].get("state", {})
    for child in st.get("children", []) or []:
        if isinstance(child, str) and child.startswith("IPY_MODEL_"):
            found += _descendants(state, child[len("IPY_MODEL_"):], seen)
    return found


def _controls_text(state: dict, ids: list) -> str:
    rows = []
    for mid in ids:
        m = state[mid]
        name, st = m.get("model_name", ""), m.get("state", {})
        if name in ("DropdownModel",):
            labels = st.get("_options_labels", [])
            idx = st.get("index")
            value = labels[idx] if isinstance(idx, int) and 0 <= idx < len(labels) else "?"
            rows.append(f"<li>{html.escape(st.get('description', ''))}: <b>{html.escape(str(value))}</b> "
                        f"(of {len(labels)} options)</li>")
        elif name in ("IntSliderModel", "FloatSliderModel"):
            rows.append(f"<li>{html.escape(st.get('description', ''))}: <b>{st.get('value')}</b> "
                        f"(from {st.get('min')} to {st.get('max')})</li>")
    return "<ul>" + "".join(rows) + "</ul>" if rows else ""


def static_widgets(nb) -> int:
    """Replace widget views by their saved static state (see the module docstring); returns how
    many were replaced."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    n = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        new_outputs = []
        for out in cell.get("outputs", []):
            data = out.get("data", {}) if out.get("output_type") in ("display_data", "execute_result") else {}
            if WIDGET_VIEW not in data:
                new_outputs.append(out)
                continue
            n += 1
            if "text/html" in data:  # the viewer's own static copy (ctxmix_lite.viz.widgets.Viewer)
                new_outputs.append(nbformat.v4.new_output(
                    out["output_type"] if out["output_type"] == "display_data" else "display_data",
                    data={"text/html": data["text/html"]}))
                continue
            model_id = data[WIDGET_VIEW].get("model_id", "")
            ids = _descendants(state, model_id)
            inner = [o for mid in ids if state[mid].get("model_name") == "OutputModel"
                     for o in state[mid].get("state", {}).get("outputs", [])]
            controls = _controls_text(state, ids)
            if ids:
                note = f"<p><em>{LIVE_NOTE}</em></p>" + (f"<p>Its controls were set to:</p>{controls}" if controls else "")
            else:
                note = (f"<p><em>{LIVE_NOTE} The run that produced this page saved no widget state, "
                        f"so its first view cannot be shown here.</em></p>")
            new_outputs.append(nbformat.v4.new_output("display_data", data={"text/html": note}))
            for o in inner:
                o = copy.deepcopy(o)
                if o.get("output_type") in ("display_data", "execute_result"):
                    o = nbformat.v4.new_output("display_data", data=o.get("data", {}), metadata=o.get("metadata", {}))
                    if WIDGET_VIEW in o.data:
                        continue
                else:
                    o = nbformat.from_dict(o)
                new_outputs.append(o)
        cell.outputs = new_outputs
    nb.metadata.pop("widgets", None)
    return n


def stage_notebook(src: Path, dest: Path) -> dict:
    nb = nbformat.read(src, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not any(c.get("outputs") for c in code):
        raise SystemExit(f"{src} has no outputs: it was not executed (run `make run` first)")
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    if errors:
        raise SystemExit(f"{src} holds {len(errors)} error output(s): fix the run before publishing it")
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = rewrite_markdown(cell.source, Path("notebooks") / src.name, _IN_SITE)
    widgets = static_widgets(nb)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    return {"notebook": src.name, "widgets": widgets}


_IN_SITE: set = set()


def stage(notebooks: Path, figures: Path, src_dir: Path, repo_url: str = REPO_URL) -> dict:
    """Write the book's sources into ``src_dir``; returns what was staged."""
    global _IN_SITE
    nbs = sorted(p for p in notebooks.glob("[0-9][0-9]_*.ipynb"))
    if not nbs:
        raise SystemExit(f"no executed notebooks in {notebooks} (run `make run` first, or pass --notebooks)")
    if src_dir.exists():
        shutil.rmtree(src_dir)
    src_dir.mkdir(parents=True)
    pages = {"README.md": ROOT / "README.md", "data/README.md": ROOT / "data" / "README.md"}
    for name in ("INSTRUCTORS", "GLOSSARY"):  # the instructor's guide and the glossary, when they exist
        page = ROOT / "notebooks" / f"{name}.md"
        if page.exists():
            pages[f"notebooks/{name}.md"] = page
    _IN_SITE = set(pages) | {f"notebooks/{p.name}" for p in nbs} | {"FIGURES.md"}
    _ANCHORS.clear()
    _ANCHORS.update({rel: heading_anchors(path.read_text()) for rel, path in pages.items()})
    for rel, path in pages.items():
        dest = src_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(rewrite_markdown(path.read_text(), Path(rel), _IN_SITE, repo_url))
    staged = [stage_notebook(p, src_dir / "notebooks" / p.name) for p in nbs]

    figs = sorted(figures.glob("*.png")) if figures.is_dir() else []
    (src_dir / "figures").mkdir()
    lines = ["# Figures", "", f"The {len(figs)} figures the notebooks saved (`outputs/figures/`), by notebook.", ""]
    for f in figs:
        shutil.copy2(f, src_dir / "figures" / f.name)
        lines += [f"## {f.stem}", "", f"![{f.stem}](figures/{f.name})", ""]
    if not figs:
        lines.append("No figures were saved by this run.")
    (src_dir / "FIGURES.md").write_text("\n".join(lines) + "\n")

    shutil.copy2(ROOT / "book" / "_config.yml", src_dir / "_config.yml")
    toc = ["# Generated by scripts/build_book.py", "format: jb-book", "root: README", "parts:",
           "  - caption: The course", "    chapters:"]
    toc += [f"      - file: notebooks/{p.stem}" for p in nbs]
    toc += ["  - caption: Reference", "    chapters:", "      - file: data/README"]
    for name in ("INSTRUCTORS", "GLOSSARY"):
        if f"notebooks/{name}.md" in pages:
            toc.append(f"      - file: notebooks/{name}")
    toc.append("      - file: FIGURES")
    (src_dir / "_toc.yml").write_text("\n".join(toc) + "\n")
    return {"notebooks": staged, "figures": len(figs), "pages": sorted(pages)}


def build(src_dir: Path, out: Path) -> Path:
    exe = Path(sys.executable).parent / "jupyter-book"
    if not exe.exists():
        raise SystemExit("jupyter-book is not installed in this environment: pip install -e '.[book]' "
                         "(make book does it)")
    cmd = [str(exe), "build", str(src_dir), "--path-output", str(out), "--builder", "html"]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    html_dir = out / "_build" / "html"
    if not (html_dir / "index.html").exists():
        raise SystemExit(f"the build wrote no {html_dir / 'index.html'}")
    return html_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--notebooks", type=Path, default=ROOT / "outputs" / "notebooks", help="executed notebooks")
    ap.add_argument("--figures", type=Path, default=None, help="figures (default: NOTEBOOKS/../figures)")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "book", help="book folder (site in OUT/_build/html)")
    ap.add_argument("--repo-url", default=REPO_URL, help="where links to repository files point")
    ap.add_argument("--stage-only", action="store_true", help="write OUT/src and stop")
    args = ap.parse_args(argv)
    figures = args.figures or args.notebooks.parent / "figures"
    info = stage(args.notebooks, figures, args.out / "src", args.repo_url)
    print(json.dumps(info, indent=1))
    if not args.stage_only:
        html_dir = build(args.out / "src", args.out)
        print(f"site: {html_dir}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
