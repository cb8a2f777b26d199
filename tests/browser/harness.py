"""Shared machinery of the browser tests: Debian's chromium driven by Playwright, a Jupyter server
started per test (127.0.0.1, a free port, a random token, a temporary root), and the two front
ends the course meets: JupyterLab 4 (ipywidgets 8) and the classic notebook (ipywidgets 7, the
local stand-in for Colab's front end).

Nothing here is course-specific except the notebook preparation (smoke parameters injected as
papermill does, without executing).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("CTXMIX_BROWSER_ARTIFACTS", ROOT / "outputs" / "browser-artifacts"))


# ---- availability of the browser stack ---------------------------------------------------------
def chromium_path():
    for cand in (os.environ.get("CTXMIX_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium",
                 shutil.which("chromium-browser")):
        if cand and Path(cand).exists():
            return cand
    return None


def require_browser():
    """The chromium executable; skips (with the reason) when chromium or playwright is missing,
    except in CI (``CI=true``), where a missing browser stack is a failure."""
    problems = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the Python package 'playwright' is not installed (pip install -e '.[browser]')")
    exe = chromium_path()
    if exe is None:
        problems.append("no chromium executable (apt-get install -y chromium, or set CTXMIX_CHROMIUM)")
    if problems:
        skip_or_fail("browser tests need: " + "; ".join(problems))
    return exe


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def skip_or_fail(msg: str):
    """Skip with ``msg``; in CI (``CI=true``) fail instead: CI must never pass a browser test it
    did not run."""
    if in_ci():
        pytest.fail(msg + " -- in CI (CI=true) this is a failure, not a skip", pytrace=False)
    pytest.skip(msg)


def require_frontend():
    """(kind, description) of this environment's widget front end (see :func:`frontend_of_env`);
    skips without one, fails in CI."""
    kind, desc = frontend_of_env()
    if kind is None:
        skip_or_fail(f"no widget front end in this environment: {desc}")
    return kind, desc


def launch_browser(pw, exe):
    # --no-sandbox: CI and the course's machines run as root, where chromium's sandbox refuses to start.
    return pw.chromium.launch(executable_path=exe, headless=True,
                              args=["--no-sandbox", "--disable-dev-shm-usage", "--mute-audio"])


# ---- the widget front end of this environment ----------------------------------------------------
def frontend_of_env():
    """('lab', version) with ipywidgets 8 + JupyterLab 4; ('classic', version) with ipywidgets 7 +
    notebook < 7 (Colab's stand-in); (None, reason) otherwise."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ipyw = version("ipywidgets")
    except PackageNotFoundError:
        return None, "ipywidgets is not installed"
    major = int(ipyw.split(".")[0])

    def _v(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    if major >= 8:
        lab = _v("jupyterlab")
        if lab and int(lab.split(".")[0]) >= 4:
            return "lab", f"JupyterLab {lab} + ipywidgets {ipyw}"
        return None, f"ipywidgets {ipyw} but no JupyterLab 4 (pip install -e '.[lab]')"
    nb = _v("notebook")
    if nb and int(nb.split(".")[0]) < 7:
        return "classic", f"classic notebook {nb} + ipywidgets {ipyw}"
    return None, f"ipywidgets {ipyw} needs the classic notebook (notebook<7) as its front end"


# ---- a Jupyter server of our own ---------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    kind: str
    root: Path
    port: int
    token: str
    proc: subprocess.Popen
    log: Path
    extra: dict = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str):
        req = urllib.request.Request(self.base + path, headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read().decode())

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_server(kind: str, root: Path, workdir: Path, env_overrides: dict = None, timeout: float = 120) -> Server:
    """Start JupyterLab (``kind='lab'``) or the classic notebook (``'classic'``) on 127.0.0.1 with a
    token, serving ``root``; the caller must ``stop()`` it (the fixtures do, even on failure)."""
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    # The kernel inherits this: the inline backend must draw (MPLBACKEND=Agg, set by `make test`,
    # would make every plt.show() inside a widget draw nothing).
    env.pop("MPLBACKEND", None)
    env.update({"JUPYTER_CONFIG_DIR": str(workdir / "jupyter-config"),
                "JUPYTER_RUNTIME_DIR": str(workdir / "jupyter-runtime"),
                "IPYTHONDIR": str(workdir / "ipython")})
    if kind == "lab":
        settings = workdir / "lab-settings"
        _write_lab_settings(settings)
        env["JUPYTERLAB_SETTINGS_DIR"] = str(settings)
        env["JUPYTERLAB_WORKSPACES_DIR"] = str(workdir / "lab-workspaces")
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--port-retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
               "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--LabApp.extension_manager=readonly"]
    elif kind == "classic":
        cmd = [sys.executable, "-m", "notebook", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--port-retries=0", f"--NotebookApp.token={token}", f"--NotebookApp.notebook_dir={root}"]
    else:
        raise ValueError(f"unknown front end {kind!r}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers and the course's machines run as root
    env.update(env_overrides or {})
    log = workdir / f"{kind}-server.log"
    fh = open(log, "wb")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT)
    server = Server(kind, root, port, token, proc, log)
    t0 = time.time()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the {kind} server exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            server.api("/api/status")
            return server
        except Exception:
            if time.time() - t0 > timeout:
                server.stop()
                raise RuntimeError(f"the {kind} server did not answer within {timeout:.0f} s:\n{server.log_tail()}")
            time.sleep(0.5)


def _write_lab_settings(settings: Path):
    """User settings of the test's JupyterLab: every cell in the DOM (no windowing), no news."""
    files = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
            {"fetchNews": "false", "checkForUpdates": False},
    }
    for rel, content in files.items():
        p = settings / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(content))


# ---- notebooks with smoke parameters, unexecuted ------------------------------------------------
def prepare_notebook(src: Path, dest_dir: Path, parameters: dict, after: dict = None) -> Path:
    """Copy ``src`` into ``dest_dir`` with ``parameters`` injected the way papermill does it (a cell
    tagged ``injected-parameters`` right after the ``parameters`` cell), without executing.

    ``after``: {snippet: code} inserts a test-only cell ``code`` right after the first cell whose
    source contains ``snippet`` (a missing snippet is an error, so overrides never go stale)."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(src))  # papermill's reader: adds the empty tag lists it expects
    nb = parameterize_notebook(nb, parameters, report_mode=False)
    for snippet, code in (after or {}).items():
        idx = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and snippet in c.source]
        if not idx:
            raise AssertionError(f"{src.name}: no cell contains {snippet!r} (update the browser test's override)")
        cell = nbformat.v4.new_code_cell(code)
        cell.metadata["tags"] = ["browser-test-override"]
        nb.cells.insert(idx[0] + 1, cell)
    nb.metadata.pop("widgets", None)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.name
    nbformat.write(nb, dest)
    return dest


def save_failure_artifacts(name: str, page=None, shots_dir: Path = None, server: Server = None, notes=()):
    """Copy everything a failing browser test saw to ``outputs/browser-artifacts/<name>/``."""
    dest = ARTIFACTS / re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    dest.mkdir(parents=True, exist_ok=True)
    if shots_dir is not None and shots_dir.exists():
        for f in shots_dir.iterdir():
            shutil.copy2(f, dest / f.name)
    if page is not None:
        try:
            page.screenshot(path=str(dest / "page-at-failure.png"), full_page=True)
        except Exception as err:  # the page may be gone
            (dest / "page-at-failure.txt").write_text(f"no screenshot: {err}\n")
    if server is not None:
        (dest / "server.log").write_text(server.log_tail(200_000))
    if notes:
        (dest / "notes.txt").write_text("\n".join(map(str, notes)) + "\n")
    return dest
