"""scripts/section_times.py: minutes per ``## `` section from papermill's per-cell durations."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import section_times as st  # noqa: E402


def _executed(durations, smoke=False, exception=None):
    """A small executed notebook: set-up + parameters, then two ``## `` sections; ``durations``
    are the code cells' seconds in order (None: papermill recorded no duration)."""
    nb = nbformat.v4.new_notebook()
    cells = [nbformat.v4.new_code_cell("setup"),
             nbformat.v4.new_markdown_cell("# 99 · Title\n\n**Learning goals**\n\n- one"),
             nbformat.v4.new_code_cell("SMOKE = False"),
             nbformat.v4.new_markdown_cell("## 1. Load\n\ntext"),
             nbformat.v4.new_code_cell("load()"),
             nbformat.v4.new_markdown_cell("### Exercise 1.1 — not a section"),
             nbformat.v4.new_code_cell("work()"),
             nbformat.v4.new_markdown_cell("Some words, then\n## 2. Measure"),
             nbformat.v4.new_code_cell("measure()")]
    code = [c for c in cells if c.cell_type == "code"]
    assert len(code) == len(durations)
    for c, d in zip(code, durations):
        c.metadata["papermill"] = {"duration": d, "status": "completed"}
    nb.cells = cells
    nb.metadata["papermill"] = {"parameters": {"SMOKE": smoke}, "exception": exception,
                                "end_time": "2026-12-02T18:00:00.000000"}
    return nb


def test_seconds_per_section():
    t = st.section_times(_executed([30, 6, 60, 24, 120]), "99_test")
    assert t.sections == [(st.PREAMBLE, 36.0), ("1. Load", 84.0), ("2. Measure", 120.0)]
    assert t.total == 240.0 and t.smoke is False and not t.failed and not t.problem


def test_missing_durations_are_not_zero():
    t = st.section_times(_executed([30, 6, None, None, 120]), "99_test")
    assert dict(t.sections)["1. Load"] is None      # shown as "—", not 0.0
    assert t.total == 156.0


def test_not_executed_is_named():
    nb = _executed([1, 1, 1, 1, 1])
    del nb.metadata["papermill"]
    t = st.section_times(nb, "99_test")
    assert "not executed by papermill" in t.problem and t.total is None


def test_table_and_update_from_files(tmp_path):
    cpu, gpu = tmp_path / "cpu", tmp_path / "gpu"
    cpu.mkdir(), gpu.mkdir()
    nbformat.write(_executed([30, 6, 60, 24, 120]), cpu / "99_test.ipynb")
    nbformat.write(_executed([3, 3, 6, 6, 12], exception=True), gpu / "99_test.ipynb")
    nbformat.write(_executed([60, 0, 0, 0, 0]), cpu / "98_other.ipynb")
    (cpu / "notes.ipynb").write_text("{}")            # not NN_name: ignored
    (gpu / "98_other.ipynb").write_text("{broken")    # unreadable: said, not skipped
    out = st.table({"CPU": st.read_run(cpu), "GPU": st.read_run(gpu)})
    lines = out.splitlines()
    assert lines[0] == "| notebook | section | CPU (min) | GPU (min) |"
    assert "| 99_test | set-up and parameters | 0.6 | 0.1 |" in lines
    assert "| 99_test | 1. Load | 1.4 | 0.2 |" in lines
    assert "| 99_test | 2. Measure | 2.0 | 0.2 |" in lines
    assert "| **99_test** | **total** | **4.0** | **0.5** (failed) |" in lines
    assert any(line.startswith("| **98_other** | **total** | **1.0** | unreadable") for line in lines)
    assert "| **all** | **total** | **5.0** | **0.5** |" in lines
    assert lines.index("| **98_other** | **total** | **1.0** | unreadable (Expecting property name "
                       "enclosed in double quotes: line 1 column 2 (char 1)) |") < lines.index(
        "| 99_test | 1. Load | 1.4 | 0.2 |")                             # sorted by notebook
    assert "*CPU*: full parameters, executed 2026-12-02T18:00" in out

    guide = tmp_path / "GUIDE.md"
    guide.write_text(f"# Guide\n\nbefore\n{st.BEGIN}\nold table\n{st.END}\nafter\n")
    assert st.main([f"{cpu}=CPU", "--update", str(guide)]) == 0
    text = guide.read_text()
    assert text.startswith("# Guide\n\nbefore\n" + st.BEGIN + "\n| notebook | section | CPU (min) |")
    assert text.endswith(st.END + "\nafter\n") and "old table" not in text
    assert st.main([f"{cpu}=CPU", "--update", str(guide)]) == 0    # again: same text (idempotent)
    assert guide.read_text() == text


def test_update_needs_the_markers(tmp_path, capsys):
    with pytest.raises(ValueError, match="exactly one"):
        st.update_block("no markers here", "x")
    run = tmp_path / "run"
    run.mkdir()
    nbformat.write(_executed([1, 1, 1, 1, 1]), run / "99_test.ipynb")
    guide = tmp_path / "GUIDE.md"
    guide.write_text("nothing marked\n")
    assert st.main([str(run), "--update", str(guide)]) == 1
    assert "exactly one" in capsys.readouterr().err
    assert guide.read_text() == "nothing marked\n"


def test_missing_run_dir_is_an_error(tmp_path, capsys):
    assert st.main([str(tmp_path / "nope")]) == 1
    assert "no such directory" in capsys.readouterr().err
    assert st.main([str(tmp_path)]) == 1
    assert "no executed notebooks" in capsys.readouterr().err


def test_guide_has_the_block():
    text = (ROOT / "notebooks" / "INSTRUCTORS.md").read_text()
    assert text.count(st.BEGIN) == 1 and text.count(st.END) == 1
