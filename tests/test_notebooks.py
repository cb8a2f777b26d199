"""Every notebook: lint (committed clean, course conventions) and a papermill run with smoke
parameters (``SMOKE=True``, ``SOLUTIONS=True``, strict checks), one test per notebook.

Lint rules (``lint_notebook``), for ``notebooks/NN_name.ipynb``:

* valid nbformat 4; file name ``NN_lowercase_name.ipynb``; kernelspec (if any) ``python3``;
* first cell = the Colab set-up cell, exactly ``ctxmix_lite.colab.COLAB_SETUP_CELL``;
* second cell = markdown: a ``# Title`` line and a *Learning goals* list;
* exactly one cell tagged ``parameters``, a code cell that assigns ``SMOKE`` and ``SOLUTIONS``;
* committed clean: no outputs, no execution counts, no widget state, no papermill metadata;
* no ipympl (``%matplotlib widget``/``ipympl``): Colab does not have it.

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

NOTEBOOKS = rn.notebooks()
NAME_RE = re.compile(r"^\d\d_[a-z0-9]+(_[a-z0-9]+)*\.ipynb$")

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


def lint_notebook(nb, name: str = "NN_name.ipynb") -> list:
    """Problems of a notebook (``nbformat.NotebookNode``) as readable strings; [] when clean."""
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
@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    from papermill.exceptions import PapermillExecutionError

    monkeypatch.setenv("CTXMIX_STRICT_CHECKS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("CTXMIX_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    params, _ = rn.parameters_for(path, smoke=True, solutions=True,
                                  extra=SMOKE_PARAMETERS.get(path.stem, {}))
    assert params.get("SMOKE") is True and params.get("SOLUTIONS") is True, params
    out = tmp_path / "executed" / path.name
    try:
        rn.execute(path, out, params, timeout=900)
    except PapermillExecutionError as err:
        pytest.fail(rn.describe_failure(err, path, out), pytrace=False)
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
    from papermill.exceptions import PapermillExecutionError

    for k, v in dict(CTXMIX_STRICT_CHECKS="1", MPLBACKEND="Agg", CTXMIX_OUTPUTS=str(tmp_path / "outputs"),
                     HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1").items():
        monkeypatch.setenv(k, v)
    params, _ = rn.parameters_for(path, smoke=True, solutions=True, extra={"PRECOMPUTED": False})
    assert params.get("PRECOMPUTED") is False, params
    out = tmp_path / "executed" / path.name
    try:
        rn.execute(path, out, params, timeout=900)
    except PapermillExecutionError as err:
        pytest.fail(rn.describe_failure(err, path, out), pytrace=False)
    text = out.read_text()
    assert "PRECOMPUTED = False: everything is recomputed here." in text
    for fig in EXPECTED_FIGURES.get(path.stem, []):
        assert any((tmp_path / "outputs" / "figures").glob(fig)), f"{fig} was not saved"


def test_smoke_parameters_name_real_notebooks():
    stems = {p.stem for p in NOTEBOOKS}
    assert set(SMOKE_PARAMETERS) <= stems and set(EXPECTED_FIGURES) <= stems


GENERATORS = sorted((ROOT / "scripts").glob("make_nb*.py"))


@pytest.mark.parametrize("script", GENERATORS, ids=[p.stem for p in GENERATORS])
def test_committed_notebook_matches_its_generator(script):
    """Edit the generator, regenerate, commit both: the two never drift apart."""
    import subprocess

    res = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
