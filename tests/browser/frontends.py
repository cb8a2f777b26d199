"""How a learner drives each front end: open a notebook, Run All, wait, read errors.

The widget DOM (``.widget-vbox``, ``.widget-hbox``, ``.widget-dropdown select``,
``.widget-hslider``, ``.widget-readout``, ``.widget-output``) is the same in ipywidgets 7 and 8, so
the widget operations live in the test; only notebook chrome differs here.
"""
from __future__ import annotations

import re
import time

# Text that means a widget or a cell failed, whatever the front end.
FAILURE_TEXT = re.compile(r"Error displaying widget|Failed to display Jupyter Widget|"
                          r"Failed to load model class|model not found|Traceback \(most recent call last\)")


class Frontend:
    kind = "?"
    code_prompt = ""         # selector of the input prompts of code cells
    error_output = ""        # selector of error outputs (tracebacks)

    def __init__(self, page, server):
        self.page, self.server = page, server
        # generous: CI's 2 cores run the kernel, the server and the browser at once
        page.set_default_timeout(120_000)
        page.set_default_navigation_timeout(300_000)

    def open(self, name: str, timeout: float = 420):
        raise NotImplementedError

    def run_all(self, tries: int = 3):
        """Run All Cells from the menu; retried when no cell starts (a menu used while the page is
        still activating its plugins, on a loaded machine, can do nothing)."""
        for attempt in range(tries):
            self._click_run_all()
            t0 = time.time()
            while time.time() - t0 < 30:
                if any(re.search(r"\[(\*|\d+)\]", p) for p in self.prompts()):
                    return
                dialog = self.dialog_text()
                if dialog:
                    raise AssertionError(f"Run All Cells opened a dialog instead of running:\n{dialog}")
                time.sleep(1)
        raise AssertionError(f"Run All Cells started no cell ({tries} tries)")

    def _click_run_all(self):
        raise NotImplementedError

    def dialog_text(self) -> str:
        """The text of a modal dialog the front end shows, '' when none."""
        return ""

    def prompts(self) -> list:
        return [t.strip() for t in self.page.locator(self.code_prompt).all_text_contents()]

    def kernel_idle(self) -> bool:
        raise NotImplementedError

    def wait_all_executed(self, timeout: float, poll: float = 2.0, stalled: float = 90):
        """Until every code cell shows an execution number (none queued '[*]' or never run '[ ]').
        Fails early when a cell shows an error (Run All stops there), and when for ``stalled``
        seconds no cell is running or queued and the kernel is idle while some have not run."""
        t0 = time.time()
        prompts, idle_since = [], None
        while time.time() - t0 < timeout:
            prompts = self.prompts()
            if prompts and all(re.search(r"\[\d+\]", p) for p in prompts) and self.kernel_idle():
                return time.time() - t0
            errors = self.cell_errors()
            if errors:
                raise AssertionError("a cell failed during Run All:\n" + "\n---\n".join(errors))
            if any("*" in p for p in prompts) or not self.kernel_idle():
                idle_since = None
            elif idle_since is None:
                idle_since = time.time()
            elif time.time() - idle_since > stalled:
                raise AssertionError(f"Run All stopped: no cell running or queued for {stalled:.0f} s, "
                                     f"but not every cell has run; prompts: {prompts}")
            time.sleep(poll)
        raise AssertionError(f"Run All did not finish within {timeout:.0f} s; prompts: {prompts}")

    def cell_errors(self) -> list:
        texts = self.page.locator(self.error_output).all_inner_texts()
        for t in self.page.locator(self.output_selector).all_inner_texts():
            if FAILURE_TEXT.search(t) and t not in texts:
                texts.append(t)
        return [t[-3000:] for t in texts]


class Lab(Frontend):
    """JupyterLab 4 (ipywidgets 8)."""
    kind = "lab"
    # Only the prompts of cells whose input is shown: a collapsed input (the solution cells,
    # hidden in JupyterLab) is replaced by a placeholder whose prompt stays empty. Run All runs
    # them in order, so with every shown prompt numbered and the kernel idle, all have run.
    code_prompt = ".jp-CodeCell .jp-InputArea > .jp-InputPrompt"
    error_output = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']"
    output_selector = ".jp-OutputArea-output"

    def open(self, name: str, timeout: float = 420):
        page = self.page
        page.goto(f"{self.server.base}/lab/tree/{name}?reset&token={self.server.token}", wait_until="domcontentloaded")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=timeout * 1000)
        # The kernel is up when the toolbar names a kernel and the status indicator says idle: the
        # indicator also says 'idle' for a second or two before the session has a kernel ('No
        # Kernel'), and Run All Cells then opens the "Select Kernel" dialog instead of running.
        page.wait_for_function(
            "() => { const e = document.querySelector('.jp-Notebook-ExecutionIndicator');"
            " const k = document.querySelector('.jp-Toolbar-kernelName');"
            " const name = k ? k.innerText.trim() : '';"
            " return e && e.getAttribute('data-status') === 'idle' && name && name !== 'No Kernel'; }",
            timeout=timeout * 1000)
        t0 = time.time()
        while not any(s.get("kernel") and s["kernel"].get("connections", 0) >= 1
                      and s["kernel"].get("execution_state") == "idle" for s in self.server.api("/api/sessions")):
            if time.time() - t0 > timeout:
                raise AssertionError(f"no idle kernel connected to {name} within {timeout:.0f} s")
            time.sleep(0.5)

    def _click_run_all(self):
        page = self.page
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

    def kernel_idle(self) -> bool:
        return self.page.evaluate("() => { const e = document.querySelector('.jp-Notebook-ExecutionIndicator');"
                                  " return !!e && e.getAttribute('data-status') === 'idle'; }")

    def dialog_text(self) -> str:
        d = self.page.locator(".jp-Dialog")
        return d.first.inner_text() if d.count() else ""


class Classic(Frontend):
    """The classic notebook (notebook 6.5, ipywidgets 7): the local stand-in for Colab's front end."""
    kind = "classic"
    code_prompt = ".code_cell .input_prompt"
    error_output = ".output_error"
    output_selector = ".output_area"

    def open(self, name: str, timeout: float = 420):
        page = self.page
        page.goto(f"{self.server.base}/notebooks/{name}?token={self.server.token}", wait_until="domcontentloaded")
        page.wait_for_function(
            "() => window.Jupyter && Jupyter.notebook && Jupyter.notebook.kernel"
            " && Jupyter.notebook.kernel.is_connected() && !Jupyter.notebook.kernel_busy"
            " && document.querySelector('#kernel_indicator_icon.kernel_idle_icon')", timeout=timeout * 1000)

    def kernel_idle(self) -> bool:
        return self.page.evaluate("() => !!(window.Jupyter && Jupyter.notebook && !Jupyter.notebook.kernel_busy)")

    def _click_run_all(self):
        page = self.page
        page.locator("#celllink").click()
        page.locator("#run_all_cells > a").click()


FRONTENDS = {"lab": Lab, "classic": Classic}
