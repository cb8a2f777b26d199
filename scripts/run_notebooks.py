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

A run cannot hang: a watchdog (``scripts/kernel_watchdog.py``) kills a kernel that stalls -- no
message for ``--stall-timeout`` s (``CTXMIX_STALL_TIMEOUT``, default 180) while the kernel and its
children use no CPU -- or whose cell runs past ``--timeout`` s, writes ``NAME.stallN.txt`` beside
the executed notebook, and runs the notebook once more (``--retries``, ``CTXMIX_RUN_RETRIES``);
if every attempt stalls the run fails naming the notebook and the cell. See the README, "What
`make run` produces".

Checked (issue 12's "done when"): notebook 00, full parameters, 20 runs back to back (the loop in the README) at load average 7-27 on 2 cores: all 20, 20 with exit 0 and no stall (25-470 s each). Before the fix of the client's lost wake-up: 1 stall in 6 runs.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))  # kernel_watchdog, when imported
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


def execute(path: Path, output: Path, parameters: dict, kernel: str = None,
            timeout: float = 1800, progress: bool = False, log_output: bool = False,
            stall_timeout: float = None, retries: int = None, idle_cpu: float = None,
            log=None):
    """Run one notebook with papermill (cwd = notebooks/) under a watchdog.

    Raises papermill's ``PapermillExecutionError`` when a cell fails. When the execution stalls
    (no message from the kernel for ``stall_timeout`` s while the kernel and its children are
    idle) or a cell runs past ``timeout`` s, the kernel and its processes are killed and the
    notebook is run again from the start, up to ``retries`` more times; when every attempt
    stalls, :class:`kernel_watchdog.NotebookStalled` names the notebook and the cell, and a
    diagnostic report per attempt is written beside ``output`` (``NAME.stallN.txt``).
    Defaults: ``stall_timeout`` $CTXMIX_STALL_TIMEOUT or 180 s, ``retries`` $CTXMIX_RUN_RETRIES
    or 1."""
    from kernel_watchdog import NotebookStalled, env_float

    stall_timeout = float(stall_timeout or env_float("CTXMIX_STALL_TIMEOUT", 180))
    if retries is None:
        raw = os.environ.get("CTXMIX_RUN_RETRIES", "").strip()
        try:
            retries = int(raw) if raw else 1
        except ValueError:
            raise ValueError(f"CTXMIX_RUN_RETRIES must be an integer >= 0, got {raw!r}") from None
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    log = log or (lambda text: print(text, flush=True))
    output.parent.mkdir(parents=True, exist_ok=True)
    for stale in output.parent.glob(f"{output.stem}.stall*.txt"):  # an earlier run's reports
        stale.unlink()
    attempts = []
    for attempt in range(1, retries + 2):
        result, watch = _execute_watched(path, output, parameters, kernel, timeout, progress,
                                         log_output, stall_timeout, idle_cpu)
        if watch.verdict is None:
            if watch.late_wakeups:
                log(f"    ({watch.late_wakeups} kernel message(s) picked up by the client's "
                    f"once-a-second re-check, not by a wake-up)")
            if isinstance(result, BaseException):
                raise result
            if attempts:
                log(f"    (attempt {attempt} finished; earlier: "
                    + "; ".join(v for v, _ in attempts) + ")")
            return result
        report = output.parent / f"{output.stem}.stall{attempt}.txt"
        try:
            report.write_text(watch.report + "\n")
        except OSError as err:
            report = Path(f"(report not written: {err})")
        attempts.append((watch.verdict, report))
        more = f" -- retrying ({attempt}/{retries})" if attempt <= retries else ""
        log(f"    ! {path.name}, attempt {attempt}: {watch.verdict}\n"
            f"      diagnostics: {report}{more}")
    lines = [f"{path.name} did not finish: the kernel stalled or a cell timed out on every "
             f"attempt ({len(attempts)} of {len(attempts)})."]
    for k, (verdict, report) in enumerate(attempts, 1):
        lines.append(f"  attempt {k}: {verdict}\n    diagnostics: {report}")
    lines.append(f"  partially executed notebook: {output}")
    lines.append(f"  limits: --stall-timeout {stall_timeout:.0f} s (CTXMIX_STALL_TIMEOUT), "
                 f"--timeout {timeout:.0f} s per cell, --retries {retries} (CTXMIX_RUN_RETRIES)")
    raise NotebookStalled("\n".join(lines), [r for _, r in attempts])


def _execute_watched(path, output, parameters, kernel, timeout, progress, log_output,
                     stall_timeout, idle_cpu):
    """One attempt: papermill in a worker thread, the watchdog beside it. Returns
    ``(notebook or exception, watch)``."""
    import threading

    import papermill
    from kernel_watchdog import KERNEL_ARGUMENTS, Watch, watched_kernel_manager_class

    watch = Watch(path.name, stall_timeout=stall_timeout, cell_timeout=timeout,
                  idle_cpu=idle_cpu, report_dir=output.parent)
    box = {}

    def work():
        try:
            box["nb"] = papermill.execute_notebook(
                str(path), str(output), parameters=parameters,
                kernel_name=kernel or pick_kernel(), cwd=str(path.parent),
                progress_bar=progress, log_output=log_output,
                # the watchdog enforces ``timeout``; nbclient's own timeout is a backstop
                execution_timeout=int(timeout) + 120, start_timeout=300,
                # saved at each cell's start and end (and every 30 s of output): a killed
                # execution leaves its partially executed notebook behind
                request_save_on_cell_execute=True,
                kernel_manager_class=watched_kernel_manager_class(watch),
                extra_arguments=list(KERNEL_ARGUMENTS),
                on_cell_execute=watch.on_cell_execute, on_cell_executed=watch.on_cell_executed)
        except BaseException as err:  # handed to the caller
            box["err"] = err

    worker = threading.Thread(target=work, name=f"papermill-{path.stem}", daemon=True)
    watch.start()
    worker.start()
    try:
        while worker.is_alive():
            worker.join(timeout=0.5)
            if watch.verdict is not None:
                # the kernel is dead; nbclient notices within seconds. Never wait forever.
                worker.join(timeout=60)
                break
    except KeyboardInterrupt:
        pid = watch.kernel_pid()
        if pid:
            from kernel_watchdog import kill_tree
            kill_tree(pid)
        raise
    finally:
        watch.stop()
    if worker.is_alive():
        return RuntimeError("papermill did not return after the kernel was killed"), watch
    return box.get("err", box.get("nb")), watch


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
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds a cell may run, busy or not (default 3600)")
    parser.add_argument("--stall-timeout", type=float, default=None,
                        help="seconds without a message from an idle kernel before it is "
                             "declared stalled ($CTXMIX_STALL_TIMEOUT, default 180)")
    parser.add_argument("--retries", type=int, default=None,
                        help="runs of a notebook again after a stall or timeout "
                             "($CTXMIX_RUN_RETRIES, default 1)")
    parser.add_argument("--keep-going", action="store_true", help="run every notebook anyway")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from ctxmix_lite.course.paths import figures_dir, outputs_dir

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

    from kernel_watchdog import NotebookStalled
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
            execute(path, output, params, kernel=kernel, timeout=args.timeout, progress=progress,
                    stall_timeout=args.stall_timeout, retries=args.retries)
        except NotebookStalled as err:
            dt = time.time() - t0
            results.append((path.name, dt, "STALLED"))
            failures.append(str(err))
            print(f"    \u2718 stalled after {dt:.0f} s\n\n{failures[-1]}\n", flush=True)
            if not args.keep_going:
                break
            continue
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
        print(f"  {status:7s} {dt:7.0f} s  {name}")
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
