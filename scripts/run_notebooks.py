#!/usr/bin/env python3
"""Execute the course notebooks with papermill (what ``make run`` does after building the data).

    python scripts/run_notebooks.py                 # every notebook, full parameters
    python scripts/run_notebooks.py --smoke         # SMOKE=True: small sizes, as CI runs them
    python scripts/run_notebooks.py --only 03 05    # notebooks whose name starts with 03 / 05
    python scripts/run_notebooks.py -p DEVICE cuda  # set any parameter a notebook declares

Executed copies go to ``outputs/notebooks/`` (``--output-dir``), figures to ``outputs/figures/``
(``CTXMIX_OUTPUTS`` moves both). Every run uses ``SOLUTIONS=True`` -- the reference solutions of
the exercises, so that everything downstream runs -- unless ``--no-solutions`` (a learner's view:
the checks then report what is not done yet and the notebook stops there). Only parameters that a
notebook declares in its ``parameters`` cell are injected. The run stops at the first failing
notebook and shows the failing cell's error (``--keep-going`` runs the rest first).
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
KERNEL = "ctxmix"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def notebooks(only=None) -> list:
    """The course notebooks ``NN_name.ipynb`` in order, filtered by name prefixes ``only``."""
    found = sorted(p for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        prefixes = [o for item in only for o in str(item).split(",") if o]
        found = [p for p in found if any(p.name.startswith(pre) for pre in prefixes)]
    return found


def pick_kernel() -> str:
    """``ctxmix`` when that kernel runs this interpreter (``make`` registers it), else ``python3``
    (ipykernel's own spec, which also runs this interpreter)."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        spec = KernelSpecManager().get_kernel_spec(KERNEL)
        exe = Path(spec.argv[0])  # compared unresolved: venvs share the base interpreter
        if exe.exists() and exe.absolute() == Path(sys.executable).absolute():
            return KERNEL
    except Exception:
        pass
    return "python3"


def declared_parameters(path: Path) -> dict:
    """Names and defaults of the notebook's ``parameters`` cell (papermill's own inspection)."""
    import papermill

    return {name: info.get("default") for name, info in papermill.inspect_notebook(str(path)).items()}


def parameters_for(path: Path, smoke: bool, solutions: bool, extra: dict) -> tuple:
    """``(injected, ignored)``: the parameters to inject that this notebook declares."""
    declared = declared_parameters(path)
    wanted = {"SOLUTIONS": solutions}
    if smoke:
        wanted["SMOKE"] = True
    wanted.update(extra)
    injected = {k: v for k, v in wanted.items() if k in declared}
    ignored = sorted(k for k in extra if k not in declared)
    return injected, ignored


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def describe_failure(err, path: Path, output: Path) -> str:
    """A readable report of a papermill execution error: cell, source head, error, traceback."""
    cell = getattr(err, "exec_count", None)
    source = (getattr(err, "source", "") or "").strip().splitlines()
    tb = strip_ansi("\n".join(getattr(err, "traceback", []) or []))
    tb_lines = tb.splitlines()
    if len(tb_lines) > 60:
        tb_lines = ["..."] + tb_lines[-60:]
    head = "\n".join("    " + line for line in source[:12])
    if len(source) > 12:
        head += "\n    ..."
    return (f"{path.name}: cell [{cell}] failed with {getattr(err, 'ename', type(err).__name__)}: "
            f"{strip_ansi(str(getattr(err, 'evalue', err)))}\n"
            f"  cell source:\n{head}\n  traceback:\n"
            + "\n".join("    " + line for line in tb_lines)
            + f"\n  partially executed notebook: {output}")


def ipc_kernel_manager_class():
    """A kernel manager whose kernel talks over unix sockets in a private directory.

    Kernels on TCP (the default) take ports that are free at the moment they are chosen; two
    notebooks started at once (pytest-xdist workers, several runs on one machine) can race for
    the same ports, and a client can then wait forever for a reply. Sockets in a fresh directory
    cannot collide. (On Windows, where zmq has no ipc transport, the default is kept.)"""
    import shutil
    import tempfile
    import weakref

    from jupyter_client import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            ipc_dir = tempfile.mkdtemp(prefix="ctxk-")  # short: unix socket paths are limited
            super().__init__(transport="ipc", ip=os.path.join(ipc_dir, "k"), **kwargs)
            weakref.finalize(self, shutil.rmtree, ipc_dir, True)

    return IPCKernelManager


def execute(path: Path, output: Path, parameters: dict, kernel: str = None,
            timeout: int = 1800, progress: bool = False, log_output: bool = False):
    """Run one notebook with papermill (cwd = notebooks/); raises papermill's
    ``PapermillExecutionError`` when a cell fails."""
    import papermill

    output.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if os.name == "nt" else {"kernel_manager_class": ipc_kernel_manager_class()}
    return papermill.execute_notebook(
        str(path), str(output), parameters=parameters, kernel_name=kernel or pick_kernel(),
        cwd=str(path.parent), progress_bar=progress, log_output=log_output,
        execution_timeout=timeout, request_save_on_cell_execute=False, **extra)


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word is a string: -p MODEL openai/whisper-base


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="inject SMOKE=True (small, fast)")
    parser.add_argument("--only", nargs="+", metavar="NN", help="notebook name prefixes")
    parser.add_argument("--no-solutions", action="store_true",
                        help="run with SOLUTIONS=False (the learner's view)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"), help="inject a parameter (Python literal)")
    parser.add_argument("--output-dir", type=Path, help="executed notebooks (outputs/notebooks)")
    parser.add_argument("--kernel", help="Jupyter kernel name (default: ctxmix, else python3)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    parser.add_argument("--keep-going", action="store_true", help="run every notebook anyway")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from ctxmix_lite.paths import figures_dir, outputs_dir

    solutions = not args.no_solutions
    if solutions:
        os.environ.setdefault("CTXMIX_STRICT_CHECKS", "1")
    out_dir = (args.output_dir or outputs_dir() / "notebooks").resolve()
    extra = {name: _parse_value(value) for name, value in args.parameter}
    todo = notebooks(args.only)
    if not todo:
        print(f"No notebooks match {args.only} in {NOTEBOOKS_DIR}", file=sys.stderr)
        return 1
    kernel = args.kernel or pick_kernel()
    progress = sys.stderr.isatty()
    started = time.time()
    print(f"Executing {len(todo)} notebook(s) with kernel {kernel!r} "
          f"({'smoke' if args.smoke else 'full'} parameters, SOLUTIONS={solutions})", flush=True)

    from papermill.exceptions import PapermillExecutionError

    results, failures = [], []
    for k, path in enumerate(todo, 1):
        params, ignored = parameters_for(path, args.smoke, solutions, extra)
        output = out_dir / path.name
        shown = ", ".join(f"{n}={v!r}" for n, v in params.items()) or "defaults"
        print(f"[{k}/{len(todo)}] {path.name} ({shown}) ...", flush=True)
        if ignored:
            print(f"    (not parameters of this notebook, ignored: {', '.join(ignored)})")
        t0 = time.time()
        try:
            execute(path, output, params, kernel=kernel, timeout=args.timeout, progress=progress)
        except PapermillExecutionError as err:
            dt = time.time() - t0
            results.append((path.name, dt, "FAILED"))
            failures.append(describe_failure(err, path, output))
            print(f"    \u2718 failed after {dt:.0f} s\n\n{failures[-1]}\n", flush=True)
            if not args.keep_going:
                break
            continue
        dt = time.time() - t0
        results.append((path.name, dt, "ok"))
        print(f"    \u2714 {dt:.0f} s -> {output}", flush=True)

    figures = sorted(p for p in figures_dir().glob("*.png") if p.stat().st_mtime >= started - 1)
    print("\nSummary")
    for name, dt, status in results:
        print(f"  {status:6s} {dt:7.0f} s  {name}")
    print(f"\nExecuted notebooks: {out_dir}")
    print(f"Figures ({len(figures)} written by this run): {figures_dir()}")
    for p in figures:
        print(f"  {p.name}")
    if failures:
        print(f"\n{len(failures)} notebook(s) failed; first failure:\n{failures[0]}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
