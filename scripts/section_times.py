"""Minutes per notebook section, read from executed notebooks, as a markdown table.

papermill records how long each cell ran (``cell.metadata.papermill.duration``, seconds) in the
executed copies that ``make run`` writes to ``outputs/notebooks/``. This script adds the cells up
per ``## `` section (cells before the first ``## `` heading count as "set-up and parameters") and
prints one table: a row per section, a bold total per notebook, one minutes column per run.

    python scripts/section_times.py                                  # outputs/notebooks, printed
    python scripts/section_times.py outputs/notebooks=CPU gpu/notebooks=GPU   # two runs side by side
    python scripts/section_times.py --update notebooks/INSTRUCTORS.md  # rewrite the marked block

``--update`` replaces what lies between the lines ``<!-- section-times:begin -->`` and
``<!-- section-times:end -->`` of the file (both must be there, once each) and leaves the rest
alone. A notebook that was not executed by papermill, or whose run failed, is named in the table
rather than silently left out.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUN = ROOT / "outputs" / "notebooks"
BEGIN = "<!-- section-times:begin -->"
END = "<!-- section-times:end -->"
PREAMBLE = "set-up and parameters"
NB_RE = re.compile(r"^\d\d_[a-z0-9_]+\.ipynb$")


@dataclass
class NotebookTimes:
    name: str                                     # file stem, e.g. "03_attention_norm"
    sections: list = field(default_factory=list)  # [(title, seconds or None)] in notebook order
    smoke: bool | None = None
    failed: bool = False
    executed: str = ""                            # papermill's end time
    problem: str = ""                             # why there are no times

    @property
    def total(self):
        vals = [s for _, s in self.sections if s is not None]
        return sum(vals) if vals else None


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def section_times(nb: dict, name: str = "notebook") -> NotebookTimes:
    """Seconds per ``## `` section of an executed notebook (a dict as read from the .ipynb)."""
    out = NotebookTimes(name=name)
    meta = nb.get("metadata", {}).get("papermill")
    if not isinstance(meta, dict):
        out.problem = "not executed by papermill (no metadata.papermill)"
        return out
    out.smoke = (meta.get("parameters") or {}).get("SMOKE")
    out.failed = bool(meta.get("exception"))
    out.executed = str(meta.get("end_time") or "")
    title, seconds, seen = PREAMBLE, None, False
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            heads = [line[3:].strip() for line in _source(cell).splitlines() if line.startswith("## ")]
            if heads:
                if seen or seconds is not None:
                    out.sections.append((title, seconds))
                title, seconds, seen = heads[-1], None, True
                continue
        pm = cell.get("metadata", {}).get("papermill", {})
        dur = pm.get("duration") if isinstance(pm, dict) else None
        if isinstance(dur, (int, float)) and dur >= 0:
            seconds = (seconds or 0.0) + float(dur)
        seen = True
    out.sections.append((title, seconds))
    if all(s is None for _, s in out.sections):
        out.problem = "no cell durations recorded"
    return out


def read_run(directory: Path) -> list:
    """:class:`NotebookTimes` of every ``NN_name.ipynb`` in ``directory`` (sorted by name)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such directory (run `make run` first?)")
    runs = []
    for path in sorted(directory.glob("*.ipynb")):
        if not NB_RE.match(path.name):
            continue
        try:
            nb = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            t = NotebookTimes(name=path.stem, problem=f"unreadable ({err})")
        else:
            t = section_times(nb, path.stem)
        runs.append(t)
    if not runs:
        raise FileNotFoundError(f"{directory}: no executed notebooks (NN_name.ipynb) there")
    return runs


def _minutes(seconds) -> str:
    if seconds is None:
        return "—"
    if 0 <= seconds < 3:  # would print as 0.0: say it is there, and small
        return "<0.1"
    return f"{seconds / 60:.1f}"


def table(runs: dict) -> str:
    """Markdown table: ``runs`` maps a column label to the list :func:`read_run` gave for it."""
    labels = list(runs)
    names = sorted({t.name for ts in runs.values() for t in ts})
    by = {label: {t.name: t for t in ts} for label, ts in runs.items()}
    lines = ["| notebook | section | " + " | ".join(f"{lab} (min)" for lab in labels) + " |",
             "|---|---|" + "---:|" * len(labels)]
    for name in names:
        order = []
        for label in labels:
            t = by[label].get(name)
            for title, _ in (t.sections if t else []):
                if title not in order:
                    order.append(title)
        for title in order:
            cells = []
            for label in labels:
                t = by[label].get(name)
                secs = dict(t.sections).get(title) if t else None
                cells.append(_minutes(secs))
            lines.append(f"| {name} | {title} | " + " | ".join(cells) + " |")
        totals = []
        for label in labels:
            t = by[label].get(name)
            if t is None:
                totals.append("not run")
            elif t.problem:
                totals.append(t.problem)
            else:
                totals.append(f"**{_minutes(t.total)}**" + (" (failed)" if t.failed else ""))
        lines.append(f"| **{name}** | **total** | " + " | ".join(totals) + " |")
    grand = []
    for label in labels:
        vals = [t.total for t in runs[label] if t.total is not None]
        grand.append(f"**{_minutes(sum(vals))}**" if vals else "—")
    lines.append("| **all** | **total** | " + " | ".join(grand) + " |")
    notes = []
    for label, ts in runs.items():
        smoke = {t.smoke for t in ts if not t.problem}
        size = ("smoke parameters (SMOKE=True)" if smoke == {True} else
                "full parameters" if smoke <= {False, None} else "mixed SMOKE settings")
        ends = sorted(t.executed for t in ts if t.executed)
        when = f", executed {ends[0][:16]} … {ends[-1][:16]}" if ends else ""
        notes.append(f"*{label}*: {size}{when}.")
    return "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"


def update_block(text: str, block: str) -> str:
    """``text`` with what lies between the BEGIN and END marker lines replaced by ``block``."""
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"need exactly one {BEGIN} and one {END} line")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + BEGIN + "\n" + block.rstrip("\n") + "\n" + END + tail


def _parse_run(arg: str):
    path, _, label = arg.partition("=")
    path = Path(path)
    return path, (label or ("smoke run" if "smoke" in path.name.lower() else "this machine"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", metavar="DIR[=LABEL]",
                        help=f"folders of executed notebooks (default {DEFAULT_RUN.relative_to(ROOT)})")
    parser.add_argument("--update", metavar="FILE", type=Path,
                        help="rewrite the section-times block of FILE (e.g. notebooks/INSTRUCTORS.md)")
    args = parser.parse_args(argv)
    specs = [_parse_run(a) for a in args.runs] or [(DEFAULT_RUN, "this machine")]
    try:
        runs = {label: read_run(path) for path, label in specs}
    except FileNotFoundError as err:
        print(f"section_times: {err}", file=sys.stderr)
        return 1
    block = table(runs)
    if args.update is None:
        print(block, end="")
        return 0
    try:
        text = args.update.read_text(encoding="utf-8")
        args.update.write_text(update_block(text, block), encoding="utf-8")
    except (OSError, ValueError) as err:
        print(f"section_times: {args.update}: {err}", file=sys.stderr)
        return 1
    print(f"updated the section times in {args.update}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
