"""Every notebook: its source in sync, lint (committed clean, course conventions, pyflakes on the
source) and a papermill run with smoke parameters (``SMOKE=True``, ``SOLUTIONS=True``, strict
checks), one test per notebook.

Sources (``scripts/sync_notebooks.py``, ``make notebooks``): each ``notebooks/NN_name.ipynb`` is
exactly what its jupytext ``py:percent`` source ``notebooks/src/NN_name.py`` gives, and the source
is in the form ``make notebooks`` writes; the source passes pyflakes (``pyflakes_problems``).

Lint rules (``lint_notebook``), for ``notebooks/NN_name.ipynb``:

* valid nbformat 4; file name ``NN_lowercase_name.ipynb``; kernelspec (if any) ``python3``;
* first cell = the Colab set-up cell, exactly ``ctxmix_lite.colab.COLAB_SETUP_CELL``;
* second cell = markdown: a ``# Title`` line and a *Learning goals* list;
* exactly one cell tagged ``parameters``, a code cell that assigns ``SMOKE`` and ``SOLUTIONS``;
* committed clean: no outputs, no execution counts, no widget state, no papermill metadata;
* no ipympl (``%matplotlib widget``/``ipympl``): Colab does not have it;
* solution cells (tagged ``solution``) are committed collapsed (``metadata.jupyter.source_hidden``);
* exercises in the ARENA form (the README's "Exercises"; notebooks in ``EXERCISE_FORM_NOTEBOOKS``):
  a markdown cell opening with ``### Exercise`` holds the markers line (``MARKERS_RE``) and a
  hint ladder of at least two ``<summary>Hint`` rungs, and is followed by the learner's stub (a code
  cell with ``YOUR CODE HERE``), a collapsed code cell tagged ``solution``, and a cell calling
  ``use_solution(`` (then the check).

Execution: papermill runs each notebook from ``notebooks/`` with its smoke parameters (only the
parameters it declares are injected; per-notebook extras in ``SMOKE_PARAMETERS``), the kernel
``ctxmix`` registered by ``make`` (else ``python3``), ``CTXMIX_STRICT_CHECKS=1`` (a failing
exercise check raises), ``MPLBACKEND=Agg`` and outputs/figures in a temporary directory. A failing
cell fails the test with the cell's source, error and traceback.
"""
from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest

from ctxmix_lite.colab import COLAB_SETUP_CELL

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import run_notebooks as rn  # noqa: E402
import sync_notebooks as sn  # noqa: E402

NOTEBOOKS = rn.notebooks()
NAME_RE = re.compile(r"^\d\d_[a-z0-9]+(_[a-z0-9]+)*\.ipynb$")
# Notebooks whose exercises are linted for the ARENA form (markers, hint ladder, stub, collapsed
# solution, use_solution): every notebook.
EXERCISE_FORM_NOTEBOOKS = {p.name[:2] for p in NOTEBOOKS}
EXERCISE_HEADING_RE = re.compile(r"^### Exercise\b", re.MULTILINE)
# The markers line of an exercise: difficulty and importance out of five (ARENA's red and blue
# circles, white for the rest), then the expected time, e.g.
#   > **Difficulty** 🔴🔴⚪⚪⚪ · **Importance** 🔵🔵🔵🔵⚪ · **Time** ~10 min
MARKERS_RE = (r"\*\*Difficulty\*\* (?:\U0001F534)+(?:\u26AA)* · \*\*Importance\*\* (?:\U0001F535)+(?:\u26AA)* · "
              r"\*\*Time\*\* ~\d+(?:[–-]\d+)? min")

# Extra smoke parameters per notebook stem (beyond SMOKE=True, SOLUTIONS=True), if a notebook
# needs them; notebooks should derive their small sizes from SMOKE themselves.
SMOKE_PARAMETERS: dict = {}
# Figures a notebook must write (file names under outputs/figures) in its smoke run.
EXPECTED_FIGURES = {
    "00_welcome": ["00_waveform_spectrogram_words.png"],
    "01_transformer_layer": ["01_whisper_encoder_head_attention.png"],
    "02_attention_in_speech": ["02_word_level_maps.png", "02_cad_heads_layers.png", "02_diagonality_curves.png",
                               "02_locality_band.png", "02_head_diversity_layers.png",
                               "02_attention_vs_value_norms.png"],
    "03_attention_norm": ["03_word_level_attention_vs_norm.png", "03_attention_norm_correlation_layers.png"],
    "04_value_zeroing": ["04_measure_correlations_layers.png", "04_rollout_decoder.png",
                         "04_rollout_encoder_words.png"],
    "05_homophony_cue_contribution": ["05_item_waveform.png", "05_fig1_encoders.png",
                                      "05_fig2_whisper_components.png", "05_templates_encoder.png",
                                      "05_templates_decoder.png"],
    "06_number_probe": ["06_fig4_probe.png", "06_minimal_pairs.png", "06_probe_vs_cue.png"],
    "07_context_mixing_vs_attribution": ["07_attribution_item*.png"],  # (glob patterns allowed)
}


# ----------------------------------------------------------------------------------------------
# Lint
# ----------------------------------------------------------------------------------------------
def _assigned_names(source: str) -> set:
    names = set()
    for node in ast.parse(source).body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for t in targets:
            for n in ast.walk(t):
                if isinstance(n, ast.Name):
                    names.add(n.id)
    return names


def _tags(cell) -> list:
    return cell.get("metadata", {}).get("tags", []) or []


def _source_hidden(cell) -> bool:
    return cell.get("metadata", {}).get("jupyter", {}).get("source_hidden") is True


def lint_exercises(cells) -> list:
    """Problems of the exercises (ARENA form, see the module docstring) of a list of cells."""
    problems = []
    for i, c in enumerate(cells):
        if c.get("cell_type") != "markdown":
            continue
        text = c.get("source", "")
        heading = EXERCISE_HEADING_RE.search(text)
        if heading is None:
            continue
        title = text[heading.start():].splitlines()[0]
        where = f"cell {i} ({title!r})"
        if heading.start() != len(text) - len(text.lstrip()):
            problems.append(f"{where}: an exercise heading must open its own markdown cell")
        if not re.search(MARKERS_RE, text):
            problems.append(f"{where}: no difficulty / importance / time markers line (see the README, Exercises)")
        rungs = len(re.findall(r"<summary>Hint", text))
        if rungs < 2:
            problems.append(f"{where}: a hint ladder needs >= 2 '<summary>Hint' rungs (a nudge, then the key "
                            f"line); found {rungs}")
        nxt = cells[i + 1:i + 4]
        kinds = [(n.get("cell_type"), n.get("source", "")) for n in nxt]
        if len(nxt) < 1 or kinds[0][0] != "code" or "YOUR CODE HERE" not in kinds[0][1]:
            problems.append(f"{where}: not followed by the learner's stub (a code cell with '# YOUR CODE HERE')")
        if len(nxt) < 2 or kinds[1][0] != "code" or "solution" not in _tags(nxt[1]):
            problems.append(f"{where}: the stub is not followed by a code cell tagged 'solution'")
        elif not _source_hidden(nxt[1]):
            problems.append(f"{where}: its solution cell is not collapsed (metadata.jupyter.source_hidden)")
        if len(nxt) < 3 or "use_solution(" not in kinds[2][1]:
            problems.append(f"{where}: the solution is not followed by a cell calling use_solution( and the check")
    # ... and the other way round: every exercise (a use_solution call) has that form
    for i, c in enumerate(cells):
        if c.get("cell_type") != "code" or "use_solution(" not in c.get("source", ""):
            continue
        head = cells[i - 3] if i >= 3 else {}
        if not (head.get("cell_type") == "markdown" and EXERCISE_HEADING_RE.match(head.get("source", "").lstrip())
                and "solution" in _tags(cells[i - 1])):
            problems.append(f"cell {i} calls use_solution( but is not the check of an exercise in the ARENA "
                            f"form (### Exercise markdown, stub, solution, check)")
    return problems


def lint_notebook(nb, name: str = "NN_name.ipynb", exercise_form=None) -> list:
    """Problems of a notebook (``nbformat.NotebookNode``) as readable strings; [] when clean.

    ``exercise_form``: lint the exercises' ARENA form (default: when the notebook's number is in
    ``EXERCISE_FORM_NOTEBOOKS``)."""
    problems = []
    if not NAME_RE.match(name):
        problems.append(f"file name {name!r} is not NN_lowercase_name.ipynb")
    if nb.get("nbformat") != 4:
        problems.append(f"nbformat {nb.get('nbformat')} (need 4)")
    try:
        nbformat.validate(nb)
    except Exception as err:  # nbformat.ValidationError
        problems.append(f"invalid notebook: {str(err).splitlines()[0]}")
    cells = nb.get("cells", [])
    if len(cells) < 3:
        problems.append(f"only {len(cells)} cells (need set-up, title, parameters at least)")
    kernel = nb.get("metadata", {}).get("kernelspec", {}).get("name")
    if kernel not in (None, "python3"):
        problems.append(f"kernelspec {kernel!r}: commit with 'python3' (Colab runs that)")

    if cells:
        first = cells[0]
        if first.get("cell_type") != "code" or first.get("source", "").rstrip("\n") != \
                COLAB_SETUP_CELL.rstrip("\n"):
            problems.append("first cell is not the Colab set-up cell "
                            "(copy ctxmix_lite.colab.COLAB_SETUP_CELL exactly)")
    if len(cells) > 1:
        second = cells[1]
        text = second.get("source", "")
        if second.get("cell_type") != "markdown":
            problems.append("second cell must be markdown: title + learning goals")
        else:
            if not re.match(r"\s*# \S", text):
                problems.append("second cell must start with a '# Title' line")
            if not re.search(r"learning goals", text, re.IGNORECASE):
                problems.append("second cell lacks 'Learning goals'")
            elif not re.search(r"^\s*([-*]|\d+\.)\s+\S", text, re.MULTILINE):
                problems.append("second cell lists no learning goals (a '-' or '1.' list)")

    tagged = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        problems.append(f"{len(tagged)} cells tagged 'parameters' (need exactly one)")
    else:
        cell = cells[tagged[0]]
        if cell.get("cell_type") != "code":
            problems.append("the 'parameters' cell is not a code cell")
        else:
            try:
                names = _assigned_names(cell.get("source", ""))
            except SyntaxError as err:
                problems.append(f"the 'parameters' cell does not parse: {err}")
                names = set()
            for required in ("SMOKE", "SOLUTIONS"):
                if required not in names:
                    problems.append(f"the 'parameters' cell does not assign {required}")

    for i, c in enumerate(cells):
        if c.get("cell_type") == "code":
            if c.get("outputs"):
                problems.append(f"cell {i} has outputs (clear them before committing)")
            if c.get("execution_count") is not None:
                problems.append(f"cell {i} has an execution count")
            src = c.get("source", "")
            if "%matplotlib widget" in src or "ipympl" in src:
                problems.append(f"cell {i} uses ipympl (not on Colab): use the inline backend")
        if c.get("attachments") and c.get("cell_type") == "code":
            problems.append(f"cell {i} has attachments")
        meta = c.get("metadata", {})
        for key in ("papermill", "execution"):
            if key in meta:
                problems.append(f"cell {i} carries '{key}' metadata from an executed run")
        if "solution" in _tags(c) and not _source_hidden(c):
            problems.append(f"cell {i} is a solution committed expanded: set metadata.jupyter.source_hidden "
                            f"(in the source: jupyter={{\"source_hidden\": true}} on its # %% line)")
    if exercise_form is None:
        exercise_form = name[:2] in EXERCISE_FORM_NOTEBOOKS
    if exercise_form:
        problems += lint_exercises(cells)
    meta = nb.get("metadata", {})
    if "widgets" in meta:
        problems.append("notebook metadata holds widget state (metadata.widgets)")
    if "papermill" in meta:
        problems.append("notebook metadata holds papermill data: this is an executed copy")
    return problems


def test_there_are_notebooks():
    names = [p.name for p in NOTEBOOKS]
    assert "00_welcome.ipynb" in names, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_lint(path):
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    problems = lint_notebook(nb, path.name)
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


# ---- the lint itself must be able to fail ----------------------------------------------------
def _good_notebook():
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("SMOKE = False\nSOLUTIONS = False\nN_ITEMS = 100")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_code_cell(COLAB_SETUP_CELL),
                nbformat.v4.new_markdown_cell("# 99 Test\n\n**Learning goals**\n\n- one\n- two"),
                params,
                nbformat.v4.new_code_cell("x = N_ITEMS * 2\nprint(x)")]
    return nb


def _with_outputs(nb):
    nb.cells[3].outputs = [nbformat.v4.new_output("stream", name="stdout", text="200\n")]


def _with_count(nb):
    nb.cells[3].execution_count = 3


def _with_widget_state(nb):
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}


def _two_parameter_cells(nb):
    extra = nbformat.v4.new_code_cell("SMOKE = True")
    extra.metadata["tags"] = ["parameters"]
    nb.cells.append(extra)


def _no_parameter_cell(nb):
    nb.cells[2].metadata["tags"] = []


def _parameters_without_solutions(nb):
    nb.cells[2].source = "SMOKE = False\nN_ITEMS = 100"


def _edited_setup_cell(nb):
    nb.cells[0].source = COLAB_SETUP_CELL.replace("--depth", "--depth=1")


def _no_learning_goals(nb):
    nb.cells[1].source = "# 99 Test\n\nSome text."


def _title_not_markdown(nb):
    nb.cells[1] = nbformat.v4.new_code_cell("# 99 Test\n# Learning goals\n# - one")


def _papermill_copy(nb):
    nb.metadata["papermill"] = {"parameters": {"SMOKE": True}}


def _ipympl(nb):
    nb.cells[3].source = "%matplotlib widget\n" + nb.cells[3].source


def _kernel_ctxmix(nb):
    nb.metadata["kernelspec"]["name"] = "ctxmix"


BREAKERS = {
    "outputs": (_with_outputs, "has outputs"),
    "execution count": (_with_count, "execution count"),
    "widget state": (_with_widget_state, "widget state"),
    "two parameter cells": (_two_parameter_cells, "2 cells tagged"),
    "no parameter cell": (_no_parameter_cell, "0 cells tagged"),
    "no SOLUTIONS": (_parameters_without_solutions, "does not assign SOLUTIONS"),
    "edited set-up cell": (_edited_setup_cell, "Colab set-up cell"),
    "no learning goals": (_no_learning_goals, "Learning goals"),
    "title not markdown": (_title_not_markdown, "must be markdown"),
    "papermill copy": (_papermill_copy, "executed copy"),
    "ipympl": (_ipympl, "ipympl"),
    "kernel": (_kernel_ctxmix, "kernelspec"),
}


def test_lint_accepts_a_clean_notebook():
    assert lint_notebook(_good_notebook(), "99_test.ipynb") == []
    assert lint_notebook(_good_exercise_notebook(), "99_test.ipynb", exercise_form=True) == []


# ---- exercises in the ARENA form -------------------------------------------------------------
# An exercise as a contributor writes it in a notebook's source (notebooks/src/NN_name.py).
EXERCISE_SOURCE = '''# %% [markdown]
# ### Exercise 9.1 — double it
#
# > **Difficulty** 🔴⚪⚪⚪⚪ · **Importance** 🔵🔵⚪⚪⚪ · **Time** ~3 min
#
# Write `double(x)`.
#
# <details><summary>Hint 1 — a nudge</summary>
#
# Multiply.
#
# </details>
# <details><summary>Hint 2 — the key line</summary>
#
# `return 2 * x`
#
# </details>

# %%
def double(x):
    # YOUR CODE HERE
    raise NotImplementedError


# %% cellView="form" jupyter={"source_hidden": true} tags=["solution"]
# @title Solution — double (open it when you are stuck)
def double_solution(x):
    return 2 * x  # y = 2 x


# %%
double = use_solution(double, double_solution, SOLUTIONS)
assert double(2) == 4
'''


def _good_exercise_notebook():
    import jupytext

    nb = _good_notebook()
    nb.cells += jupytext.reads(EXERCISE_SOURCE, fmt="py:percent").cells
    return nb


def _ex_no_markers(nb):
    nb.cells[4].source = re.sub(MARKERS_RE, "", nb.cells[4].source)


def _ex_one_hint(nb):
    src = nb.cells[4].source
    nb.cells[4].source = src[:src.index("<details>")] + "<details><summary>Hint 1</summary>\n\nx\n\n</details>"


def _ex_no_stub(nb):
    del nb.cells[5]


def _ex_solution_expanded(nb):
    nb.cells[6].metadata["jupyter"]["source_hidden"] = False


def _ex_solution_untagged(nb):
    nb.cells[6].metadata["tags"] = []


def _ex_no_use_solution(nb):
    nb.cells[7].source = "assert double(2) == 4"


def _ex_heading_inside_a_section(nb):
    nb.cells[4].source = "## 9. A section\n\nSome text.\n\n" + nb.cells[4].source


def _ex_old_heading(nb):
    nb.cells[4].source = nb.cells[4].source.replace("### Exercise 9.1 — double it", "## 9 · Exercise: double it")


EXERCISE_BREAKERS = {
    "old-style heading": (_ex_old_heading, "not the check of an exercise"),
    "no markers": (_ex_no_markers, "markers line"),
    "one hint rung": (_ex_one_hint, "hint ladder needs >= 2"),
    "no stub": (_ex_no_stub, "learner's stub"),
    "solution expanded": (_ex_solution_expanded, "not collapsed"),
    "solution untagged": (_ex_solution_untagged, "tagged 'solution'"),
    "no use_solution": (_ex_no_use_solution, "use_solution("),
    "heading inside a section": (_ex_heading_inside_a_section, "open its own markdown cell"),
}


@pytest.mark.parametrize("what", list(EXERCISE_BREAKERS))
def test_lint_rejects_exercise(what, tmp_path):
    """Each exercise rule fires on a notebook that breaks it (written to and read back from disk)."""
    breaker, expected = EXERCISE_BREAKERS[what]
    nb = _good_exercise_notebook()
    breaker(nb)
    path = tmp_path / "99_test.ipynb"
    nbformat.write(nb, path)
    problems = lint_notebook(nbformat.read(path, as_version=nbformat.NO_CONVERT), path.name, exercise_form=True)
    assert any(expected in p for p in problems), problems


def test_lint_rejects_an_expanded_solution_in_any_notebook():
    """Committing a solution expanded is an error in every notebook, converted or not."""
    nb = _good_exercise_notebook()
    _ex_solution_expanded(nb)
    problems = lint_notebook(nb, "99_test.ipynb", exercise_form=False)
    assert any("committed expanded" in p for p in problems), problems


def test_exercise_form_applies_to_the_listed_notebooks():
    """The rule is on for every notebook (and fires on a listed stem only)."""
    stems = {p.name[:2] for p in NOTEBOOKS}
    assert EXERCISE_FORM_NOTEBOOKS <= stems
    nb = _good_exercise_notebook()
    _ex_no_markers(nb)
    assert any("markers line" in p for p in lint_notebook(nb, "00_test.ipynb"))
    assert not any("markers line" in p for p in lint_notebook(nb, "99_test.ipynb"))


@pytest.mark.parametrize("what", list(BREAKERS))
def test_lint_rejects(what, tmp_path):
    """Each rule fires on a notebook that breaks it (written to and read back from disk)."""
    breaker, expected = BREAKERS[what]
    nb = _good_notebook()
    breaker(nb)
    path = tmp_path / "99_test.ipynb"
    nbformat.write(nb, path)
    problems = lint_notebook(nbformat.read(path, as_version=nbformat.NO_CONVERT), path.name)
    assert any(expected in p for p in problems), problems


def test_lint_rejects_an_executed_notebook(tmp_path):
    """A notebook executed by papermill (outputs, counts, metadata) never passes the lint."""
    src = tmp_path / "99_test.ipynb"
    nbformat.write(_good_notebook(), src)
    out = tmp_path / "executed" / "99_test.ipynb"
    rn.execute(src, out, {"SMOKE": True}, timeout=120)
    problems = lint_notebook(nbformat.read(out, as_version=4), out.name)
    assert any("has outputs" in p for p in problems), problems
    assert any("execution count" in p for p in problems), problems


def test_lint_rejects_bad_file_names():
    assert any("file name" in p for p in lint_notebook(_good_notebook(), "Welcome.ipynb"))


# ----------------------------------------------------------------------------------------------
# The runner's helpers
# ----------------------------------------------------------------------------------------------
def test_parameters_are_filtered_to_what_the_notebook_declares(tmp_path):
    path = tmp_path / "99_test.ipynb"
    nbformat.write(_good_notebook(), path)
    injected, ignored = rn.parameters_for(path, smoke=True, solutions=True,
                                          extra={"N_ITEMS": 3, "DEVICE": "cuda"})
    assert injected == {"SOLUTIONS": True, "SMOKE": True, "N_ITEMS": 3}
    assert ignored == ["DEVICE"]
    injected, _ = rn.parameters_for(path, smoke=False, solutions=True, extra={})
    assert injected == {"SOLUTIONS": True}


def test_a_failing_cell_is_reported_with_its_error(tmp_path):
    from papermill.exceptions import PapermillExecutionError

    nb = _good_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("def f(n):\n    return n / 0\n\nf(N_ITEMS)"))
    src = tmp_path / "99_failing.ipynb"
    nbformat.write(nb, src)
    out = tmp_path / "out" / src.name
    with pytest.raises(PapermillExecutionError) as info:
        rn.execute(src, out, {"SMOKE": True}, timeout=120)
    report = rn.describe_failure(info.value, src, out)
    assert "ZeroDivisionError" in report and "return n / 0" in report and "f(N_ITEMS)" in report
    assert "\x1b[" not in report  # ANSI colours stripped
    assert out.exists()  # the partial notebook is kept for inspection


# ----------------------------------------------------------------------------------------------
# Execution of every notebook (smoke parameters)
# ----------------------------------------------------------------------------------------------
def _execute_smoke(path, tmp_path, monkeypatch, extra: dict) -> Path:
    """Run ``path`` with papermill at smoke size (``SMOKE=True``, ``SOLUTIONS=True``, ``extra``),
    strict checks, no hub, outputs in ``tmp_path``; a failing cell fails the test with its report."""
    from papermill.exceptions import PapermillExecutionError

    for k, v in dict(CTXMIX_STRICT_CHECKS="1", MPLBACKEND="Agg", CTXMIX_OUTPUTS=str(tmp_path / "outputs"),
                     HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1").items():
        monkeypatch.setenv(k, v)
    params, _ = rn.parameters_for(path, smoke=True, solutions=True, extra=extra)
    assert params.get("SMOKE") is True and params.get("SOLUTIONS") is True, params
    out = tmp_path / "executed" / path.name
    try:
        rn.execute(path, out, params, timeout=900)
    except PapermillExecutionError as err:
        pytest.fail(rn.describe_failure(err, path, out), pytrace=False)
    return out


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    out = _execute_smoke(path, tmp_path, monkeypatch, SMOKE_PARAMETERS.get(path.stem, {}))
    executed = nbformat.read(out, as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    for fig in EXPECTED_FIGURES.get(path.stem, []):
        assert any((tmp_path / "outputs" / "figures").glob(fig)), f"{fig} was not saved"
    keep = os.environ.get("CTXMIX_KEEP_EXECUTED")  # CI builds the site from these (make ci-book)
    if keep:
        import shutil

        (Path(keep) / "notebooks").mkdir(parents=True, exist_ok=True)
        shutil.copy2(out, Path(keep) / "notebooks" / path.name)
        if (tmp_path / "outputs" / "figures").is_dir():
            shutil.copytree(tmp_path / "outputs" / "figures", Path(keep) / "figures", dirs_exist_ok=True)


# Notebooks 05-07 load the shipped results by default (PRECOMPUTED=True: what test_notebook_runs
# executes, with a live re-check); this runs their recomputation path at smoke size.
RECOMPUTING = [p for p in NOTEBOOKS if p.stem[:2] in ("05", "06", "07")]


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.parametrize("path", RECOMPUTING, ids=[p.stem for p in RECOMPUTING])
def test_notebook_recomputes(path, tmp_path, monkeypatch):
    out = _execute_smoke(path, tmp_path, monkeypatch, {"PRECOMPUTED": False})
    assert rn.parameters_for(path, smoke=True, solutions=True, extra={"PRECOMPUTED": False})[0]["PRECOMPUTED"] is False
    text = out.read_text()
    assert "PRECOMPUTED = False: everything is recomputed here." in text
    for fig in EXPECTED_FIGURES.get(path.stem, []):
        assert any((tmp_path / "outputs" / "figures").glob(fig)), f"{fig} was not saved"


def test_smoke_parameters_name_real_notebooks():
    stems = {p.stem for p in NOTEBOOKS}
    assert set(SMOKE_PARAMETERS) <= stems and set(EXPECTED_FIGURES) <= stems


# ----------------------------------------------------------------------------------------------
# Sources: notebooks/src/NN_name.py (jupytext py:percent) <-> notebooks/NN_name.ipynb
# ----------------------------------------------------------------------------------------------
PAIRS = sn.pairs()


def test_every_notebook_has_a_source():
    assert [nb.name for nb, _ in PAIRS] == [p.name for p in NOTEBOOKS]
    assert all(py.exists() for _, py in PAIRS), [str(py) for _, py in PAIRS if not py.exists()]


@pytest.mark.parametrize("pair", PAIRS, ids=[nb.stem for nb, _ in PAIRS])
def test_committed_notebook_matches_its_source(pair):
    """Edit either side, run `make notebooks`, commit both: the two never drift apart."""
    problems = sn.check_pair(*pair)
    assert not problems, "\n".join(problems)


def _pair_in(tmp_path, stem="00_welcome"):
    """A copy of the committed pair ``stem`` (and the jupytext configuration) under ``tmp_path``."""
    import shutil

    d = tmp_path / "notebooks"
    (d / "src").mkdir(parents=True)
    shutil.copy2(ROOT / "notebooks" / "jupytext.toml", d)
    shutil.copy2(ROOT / "notebooks" / f"{stem}.ipynb", d)
    shutil.copy2(ROOT / "notebooks" / "src" / f"{stem}.py", d / "src")
    return d / f"{stem}.ipynb", d / "src" / f"{stem}.py"


def _touch_later(path, than):
    """Make ``path`` newer than ``than`` (mtimes decide which side of a pair wins)."""
    t = than.stat().st_mtime_ns + 5_000_000_000
    os.utime(path, ns=(t, t))


def _parameters_cell(nb):
    (cell,) = [c for c in nb.cells if "parameters" in _tags(c)]
    return cell


def _sync(ipynb, py, **kw):
    lines = []
    result = sn.sync_pair(ipynb, py, log=lines.append, **kw)
    return result, "\n".join(lines)


def test_the_check_catches_a_notebook_edited_without_its_source(tmp_path):
    """The check fails on a modified copy, naming the notebook and the fix -- in both directions."""
    ipynb, py = _pair_in(tmp_path)
    assert sn.check_pair(ipynb, py) == []
    original = ipynb.read_text()
    nb = nbformat.read(ipynb, as_version=4)
    nb.cells[1].source = nb.cells[1].source.replace("Welcome", "Hello")
    nbformat.write(nb, ipynb)
    problems = sn.check_pair(ipynb, py)
    assert len(problems) == 1 and "00_welcome.ipynb differs from its source" in problems[0], problems
    assert "src/00_welcome.py" in problems[0] and "make notebooks" in problems[0]
    # executed (outputs, a count) but otherwise the same: also caught, the commit would carry outputs
    ipynb.write_text(original)
    nb = nbformat.read(ipynb, as_version=4)
    nb.cells[4].execution_count = 1
    nb.cells[4].outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
    nbformat.write(nb, ipynb)
    assert any("differs from its source" in p for p in sn.check_pair(ipynb, py))
    # the source edited, the notebook not regenerated
    ipynb.write_text(original)
    py.write_text(py.read_text().replace("N_SENTENCES = 4", "N_SENTENCES = 5"))
    problems = sn.check_pair(ipynb, py)
    assert problems and "differs from its source" in problems[0], problems
    # a source not in the written form (a marker without its space) is caught even when it parses
    ipynb.write_text(original)
    py.write_text(py.read_text().replace("N_SENTENCES = 5", "N_SENTENCES = 4").replace(
        "# %% [markdown]", "#%% [markdown]", 1))
    problems = sn.check_pair(ipynb, py)
    assert problems and all("make notebooks" in p for p in problems), problems
    py.unlink()
    assert "has no source" in sn.check_pair(ipynb, py)[0]


def test_the_check_script_exits_1_and_names_the_notebook(tmp_path):
    """`python scripts/sync_notebooks.py --check` (what the README gives) on a modified copy."""
    import subprocess

    ipynb, py = _pair_in(tmp_path)
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "sync_notebooks.py"), "--check", "--dir",
                          str(ipynb.parent)], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    py.write_text(py.read_text().replace("N_SENTENCES = 4", "N_SENTENCES = 5"))
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "sync_notebooks.py"), "--check", "--dir",
                          str(ipynb.parent)], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 1 and "00_welcome.ipynb differs from its source" in res.stdout, res.stdout


def test_sync_from_an_edited_source(tmp_path):
    """A contributor edits the .py: `make notebooks` rewrites the .ipynb from it."""
    ipynb, py = _pair_in(tmp_path)
    text = py.read_text().replace("N_SENTENCES = 4", "N_SENTENCES = 5")
    text += '\n\n# %% [markdown]\n# ## A new section\n\n# %%\nprint("new")\n'
    py.write_text(text)
    _touch_later(py, ipynb)
    result, log = _sync(ipynb, py)
    assert result == "wrote" and "from the source" in log, log
    nb = nbformat.read(ipynb, as_version=4)
    assert "N_SENTENCES = 5" in _parameters_cell(nb).source
    assert [c.source for c in nb.cells[-2:]] == ["## A new section", 'print("new")']
    assert nb.cells[-1].id == f"nb00-{len(nb.cells) - 1:02d}"
    assert sn.check_pair(ipynb, py) == []
    assert lint_notebook(nb, ipynb.name) == []
    assert _sync(ipynb, py)[0] == "ok"  # idempotent


def test_sync_from_a_notebook_saved_by_jupyter(tmp_path):
    """A contributor edits the .ipynb in Jupyter (runs it, adds a cell; Jupyter writes outputs, counts,
    random ids, its own metadata, the kernel it ran): `make notebooks` writes the .py from it and
    commits the .ipynb clean; tags, ids and the collapsed state of solutions survive."""
    ipynb, py = _pair_in(tmp_path)
    committed = nbformat.read(ipynb, as_version=4)
    nb = nbformat.read(ipynb, as_version=4)
    for i, c in enumerate(nb.cells):
        c.id = f"{i:08x}-jupyter"
        if c.cell_type == "code":
            c.execution_count = i
            c.outputs = [nbformat.v4.new_output("stream", name="stdout", text="out\n")]
            c.metadata["scrolled"] = True
            c.metadata.setdefault("jupyter", {})["outputs_hidden"] = False
    nb.cells[2].metadata["slideshow"] = {"slide_type": "slide"}  # not part of the course's form: said
    new = nbformat.v4.new_markdown_cell("A note added in JupyterLab.")
    nb.cells.insert(5, new)
    nb.metadata["kernelspec"] = {"name": "ctxmix", "display_name": "Python (ctxmix)", "language": "python"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nbformat.write(nb, ipynb)
    _touch_later(ipynb, py)
    result, log = _sync(ipynb, py)
    assert result == "wrote" and "from the notebook" in log, log
    assert "cell 2: dropped the cell metadata 'slideshow'" in log and "scrolled" not in log, log
    assert "# A note added in JupyterLab." in py.read_text()
    clean = nbformat.read(ipynb, as_version=4)
    assert lint_notebook(clean, ipynb.name) == []
    assert clean.metadata == committed.metadata
    assert [c.id for c in clean.cells] == [f"nb00-{i:02d}" for i in range(len(committed.cells) + 1)]
    del clean.cells[5]
    assert [(c.cell_type, c.source, c.metadata) for c in clean.cells] == \
        [(c.cell_type, c.source, c.metadata) for c in committed.cells]
    assert sn.check_pair(ipynb, py) == []


def test_jupyterlab_pairing_writes_the_source_as_make_notebooks_does(tmp_path):
    """JupyterLab with jupytext (notebooks/jupytext.toml) saves the .py beside the .ipynb: the source
    it writes is the one `make notebooks` writes, so saving in Jupyter then `make notebooks` leaves
    the source as saved and only cleans the .ipynb."""
    import asyncio

    pytest.importorskip("jupyter_server")
    from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
    from jupytext.async_contentsmanager import build_async_jupytext_contents_manager_class

    ipynb, py = _pair_in(tmp_path, "04_value_zeroing")
    # what jupytext's server extension makes of jupyter_server's default contents manager
    cm = build_async_jupytext_contents_manager_class(AsyncLargeFileManager)(root_dir=str(tmp_path))

    async def edit_and_save():
        nb = (await cm.get("notebooks/04_value_zeroing.ipynb"))["content"]
        nb.cells.insert(3, nbformat.v4.new_markdown_cell("Added in JupyterLab."))
        nb.cells[5].outputs = [nbformat.v4.new_output("stream", name="stdout", text="out\n")]
        await cm.save(dict(type="notebook", content=nb), "notebooks/04_value_zeroing.ipynb")

    asyncio.run(edit_and_save())
    saved = py.read_text()
    assert "# %% [markdown]\n# Added in JupyterLab.\n" in saved
    assert any("differs from its source" in p for p in sn.check_pair(ipynb, py))  # outputs, metadata
    result, log = _sync(ipynb, py)
    assert result == "wrote" and "04_value_zeroing.ipynb" in log and "src/" not in log, log
    assert py.read_text() == saved
    assert sn.check_pair(ipynb, py) == []


def test_sync_refuses_when_both_sides_were_edited(tmp_path):
    """Both sides edited since the last commit and different: nothing is overwritten until
    --from says which edits to keep."""
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    ipynb, py = _pair_in(tmp_path)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"]
    subprocess.run(git + ["init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(git + ["add", "."], cwd=tmp_path, check=True)
    subprocess.run(git + ["commit", "-q", "-m", "pair"], cwd=tmp_path, check=True)
    py.write_text(py.read_text().replace("N_SENTENCES = 4", "N_SENTENCES = 5"))
    nb = nbformat.read(ipynb, as_version=4)
    _parameters_cell(nb).source = _parameters_cell(nb).source.replace("N_SENTENCES = 4", "N_SENTENCES = 6")
    nbformat.write(nb, ipynb)
    _touch_later(ipynb, py)
    before = (ipynb.read_text(), py.read_text())
    result, log = _sync(ipynb, py)
    assert result == "conflict" and "--from py" in log, log
    assert (ipynb.read_text(), py.read_text()) == before
    result, log = _sync(ipynb, py, prefer="py")
    assert result == "wrote"
    assert "N_SENTENCES = 5" in _parameters_cell(nbformat.read(ipynb, as_version=4)).source
    assert sn.check_pair(ipynb, py) == []


def test_sync_refreshes_the_set_up_cell(tmp_path, monkeypatch):
    """The first cell is always the package's current COLAB_SETUP_CELL (as the generators wrote it)."""
    import ctxmix_lite.colab

    ipynb, py = _pair_in(tmp_path)
    monkeypatch.setattr(ctxmix_lite.colab, "COLAB_SETUP_CELL", COLAB_SETUP_CELL + "\nprint('new set-up')\n")
    assert any("differs from its source" in p for p in sn.check_pair(ipynb, py))
    assert _sync(ipynb, py)[0] == "wrote"
    assert "print('new set-up')" in py.read_text()
    assert nbformat.read(ipynb, as_version=4).cells[0].source.endswith("print('new set-up')\n")


# ---- pyflakes on the sources (as on the package) ---------------------------------------------
def pyflakes_problems(text: str, filename: str) -> list:
    """pyflakes' messages for a notebook source, as ``file:line: message``. The one exception: the
    set-up cell's ``import ctxmix_lite`` (an availability test in ``COLAB_SETUP_CELL``, which the
    lint checks verbatim) is not reported as unused."""
    from pyflakes import checker, messages

    try:
        tree = ast.parse(text, filename)
    except SyntaxError as err:
        return [f"{filename}:{err.lineno}: syntax error: {err.msg}"]
    setup_end = next((i for i, line in enumerate(text.splitlines(), 1) if i > 1 and line.startswith("# %%")),
                     0)
    out = []
    for m in sorted(checker.Checker(tree, filename=filename).messages, key=lambda m: m.lineno):
        if (isinstance(m, messages.UnusedImport) and m.lineno < setup_end
                and m.message_args[0] == "ctxmix_lite"):
            continue
        out.append(f"{filename}:{m.lineno}: {m.message % m.message_args}")
    return out


@pytest.mark.parametrize("pair", PAIRS, ids=[nb.stem for nb, _ in PAIRS])
def test_notebook_source_passes_pyflakes(pair):
    _, py = pair
    problems = pyflakes_problems(py.read_text(encoding="utf-8"), str(py.relative_to(ROOT)))
    assert not problems, "\n".join(problems)


def test_pyflakes_lint_can_fail():
    src = "# %%\nimport os, sys\nimport ctxmix_lite\n\n# %%\nimport json\nprint(undefined_name, sys)\n"
    problems = pyflakes_problems(src, "99_test.py")
    assert any("'json' imported but unused" in p for p in problems), problems
    assert any("'os' imported but unused" in p for p in problems), problems
    assert any("undefined name 'undefined_name'" in p for p in problems), problems
    assert not any("ctxmix_lite" in p for p in problems), problems
    assert pyflakes_problems("x = (", "99_test.py")[0].startswith("99_test.py:1: syntax error")
