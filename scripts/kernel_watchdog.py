"""A watchdog for notebook execution: notebooks run by ``scripts/run_notebooks.py`` cannot hang.

papermill (through nbclient) waits for the kernel's reply to each cell with only a per-cell
timeout, so a kernel that never answers -- a lost request or reply, the class of hang reported in
papermill #711/#726 and in ipykernel 7 (ipykernel #1529/#1554: an ``execute_request`` left unread
on the shell socket, the kernel idle at 0 % CPU) -- keeps a run waiting for that whole timeout.

:class:`Watch` runs beside one execution and watches two things:

* **messages**: the time of the last message the client received from the kernel (any channel:
  iopub outputs and status, shell replies), recorded by the kernel client's channels;
* **CPU**: the CPU time used by the kernel process *and its children* (a synthesiser or a worker
  pool counts), read with psutil when installed, else from ``/proc``.

The execution is declared **stalled** when no message came for ``stall_timeout`` seconds *and*
the kernel's process tree used less than ``idle_cpu`` seconds of CPU in that window -- a long,
busy cell (silent but computing) is left alone. It is declared **timed out** when one cell has run
longer than ``cell_timeout`` seconds, busy or not. Either way the watchdog writes a diagnostic
report (the kernel's threads and their wait channels, its children, whether a reply was sitting
unread on the client's sockets, the kernel's Python stacks), then kills the kernel's process group
and every descendant. nbclient notices the dead kernel within a second or two and the execution
returns; the caller (``run_notebooks.execute_watched``) retries the notebook once and otherwise
reports :class:`NotebookStalled` naming the notebook and the cell.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Optional

try:  # optional: /proc is read when psutil is missing (Linux)
    import psutil
except ImportError:  # pragma: no cover - psutil is installed with jupyter here
    psutil = None

#: The kernel dumps its Python stacks into this file on SIGUSR2 (registered at kernel start-up).
STACKS_ENV = "CTXMIX_KERNEL_STACKS"


class NotebookStalled(RuntimeError):
    """A notebook's execution stalled or a cell exceeded its timeout, on every attempt."""

    def __init__(self, message: str, reports: list):
        super().__init__(message)
        self.reports = reports


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value in (None, ""):
        return float(default)
    try:
        out = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {value!r}") from None
    if out <= 0:
        raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
    return out


# ---- process tree ----------------------------------------------------------------------------
def _proc_children() -> dict:
    """ppid -> [pid] for every process (from /proc)."""
    tree: dict = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read().decode("latin-1")
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int) -> list:
    """Every descendant pid of ``pid`` (children first)."""
    if psutil is not None:
        try:
            return [p.pid for p in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return []
    tree, out, todo = _proc_children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _cpu_of(pid: int) -> float:
    if psutil is not None:
        try:
            t = psutil.Process(pid).cpu_times()
            return t.user + t.system
        except psutil.Error:
            return 0.0
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().decode("latin-1").rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its living descendants."""
    return _cpu_of(pid) + sum(_cpu_of(p) for p in descendants(pid))


def describe_process(pid: int) -> str:
    """One line per thread (state, wait channel) and the open descriptors' targets."""
    lines = []
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        lines.append(f"pid {pid}: {cmd}  (cpu {_cpu_of(pid):.2f} s)")
        for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
            base = f"/proc/{pid}/task/{tid}"
            try:
                comm = Path(base, "comm").read_text().strip()
                state = Path(base, "stat").read_text().rsplit(")", 1)[1].split()[0]
                wchan = Path(base, "wchan").read_text().strip() or "-"
            except OSError:
                continue
            lines.append(f"  thread {tid} {comm!r}: state {state}, waiting in {wchan}")
        fds = []
        for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
            try:
                fds.append(f"{fd}->{os.readlink(f'/proc/{pid}/fd/{fd}')}")
            except OSError:
                pass
        lines.append("  fds: " + " ".join(fds))
    except OSError as err:
        lines.append(f"pid {pid}: cannot read /proc ({err})")
    return "\n".join(lines)


def kill_tree(pid: int) -> list:
    """SIGKILL the kernel's process group (when it leads one) and every descendant; returns the
    pids killed. jupyter_client starts kernels in a new session, so the group holds the kernel's
    children too (e.g. the ``mbrola`` synthesiser); children that left it are killed by pid."""
    victims = [pid] + descendants(pid)
    if os.name == "posix":
        try:
            pgid = os.getpgid(pid)
            if pgid == pid and pgid != os.getpgid(0):
                os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for p in victims:
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return victims


# ---- kernel manager and client that report to a Watch ---------------------------------------
def watched_kernel_manager_class(watch: "Watch", ipc: bool = True):
    """An ``AsyncKernelManager`` class for one execution: its client's channels time-stamp every
    message into ``watch``, its kernel registers a SIGUSR2 stack dump, and (``ipc``) the kernel
    talks over unix sockets in a private directory.

    Kernels on TCP (the default) take ports that are free at the moment they are chosen; two
    notebooks started at once (pytest-xdist workers, several runs on one machine) can race for
    the same ports, and a client can then wait forever for a reply. Sockets in a fresh directory
    cannot collide. (On Windows, where zmq has no ipc transport, TCP is kept.)"""
    from jupyter_client import AsyncKernelManager
    from jupyter_client.asynchronous import AsyncKernelClient
    try:  # jupyter_client >= 8: the asyncio channel has its own class
        from jupyter_client.channels import AsyncZMQSocketChannel
    except ImportError:  # jupyter_client 7 (Colab's stack): the one channel class is the asyncio one
        from jupyter_client.channels import ZMQSocketChannel as AsyncZMQSocketChannel
    from traitlets import Type

    from queue import Empty

    class WatchedChannel(AsyncZMQSocketChannel):
        async def get_msg(self, timeout=None):
            """jupyter_client's ``get_msg``, but the wait is cut into slices of
            ``watch.poll_slice`` s, each ending with pyzmq's level check of the socket.

            zmq sockets wake asyncio through an edge-triggered descriptor. nbclient *sends* on
            the shell socket while another coroutine waits on it (an ``Output`` widget's state
            is echoed to the kernel as ``comm_msg`` requests), and a send consumes that edge: a
            reply that arrived meanwhile is never signalled, and jupyter_client's single
            ``poll(timeout)`` -- the cell timeout, or forever on iopub -- waits with a message
            sitting in the socket. The root cause of issue 12's hang; see the README."""
            watch.loop = asyncio.get_running_loop()
            deadline = None if timeout is None else time.monotonic() + timeout
            slice_s = watch.poll_slice
            while True:
                wait = slice_s if deadline is None else max(0.0, deadline - time.monotonic())
                if slice_s > 0:
                    wait = min(wait, slice_s)
                t0 = time.monotonic()
                ready = await self.socket.poll(None if wait == float("inf") else int(wait * 1000))
                if ready:
                    if slice_s > 0 and time.monotonic() - t0 >= 0.95 * slice_s:
                        watch.late_wakeups += 1  # found by the level check, not the wake-up
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise Empty
            msg = await self._recv()
            watch.message(msg)
            return msg

    class WatchedClient(AsyncKernelClient):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            watch.kc = self

        shell_channel_class = Type(WatchedChannel)
        iopub_channel_class = Type(WatchedChannel)
        stdin_channel_class = Type(WatchedChannel)
        control_channel_class = Type(WatchedChannel)

    class WatchedKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            kwargs.setdefault("client_factory", WatchedClient)
            if ipc and os.name != "nt":
                ipc_dir = tempfile.mkdtemp(prefix="ctxk-")  # short: socket paths are limited
                kwargs.update(transport="ipc", ip=os.path.join(ipc_dir, "k"))
                weakref.finalize(self, shutil.rmtree, ipc_dir, True)
            super().__init__(**kwargs)
            watch.km = self

        async def _async_pre_start_kernel(self, **kw):
            cmd, kw = await super()._async_pre_start_kernel(**kw)
            env = dict(kw.get("env") or os.environ)
            env[STACKS_ENV] = str(watch.stacks_file)
            kw["env"] = env
            return cmd, kw

    return WatchedKernelManager


#: Extra kernel arguments: dump every thread's Python stack to $CTXMIX_KERNEL_STACKS on SIGUSR2
#: (faulthandler works from the C signal handler, so even a kernel stuck holding the GIL answers).
KERNEL_ARGUMENTS = [
    "--IPKernelApp.exec_lines="
    "(lambda fh, s, os: fh.register(s.SIGUSR2, file=open(os.environ['" + STACKS_ENV + "'], 'w'),"
    " all_threads=True) if os.environ.get('" + STACKS_ENV + "') and hasattr(s, 'SIGUSR2') "
    "else None)(__import__('faulthandler'), __import__('signal'), __import__('os'))",
]


# ---- the watch ------------------------------------------------------------------------------
class Watch:
    """Watches one notebook execution; :meth:`start` a thread, :meth:`stop` it afterwards."""

    def __init__(self, notebook: str, stall_timeout: float, cell_timeout: float,
                 idle_cpu: Optional[float] = None, poll: float = 1.0, report_dir=None):
        self.notebook = notebook
        self.stall_timeout = float(stall_timeout)
        self.cell_timeout = float(cell_timeout)
        # Idle, a kernel and its children used 0.40 s of CPU in 182 s (0.2 %: the stalled
        # notebook 00 of issue 12, mbrola included); a computing kernel gets its share of a core
        # -- still ~2-3 % at nice 10 among a dozen running jobs on 2 cores.
        self.idle_cpu = float(idle_cpu) if idle_cpu is not None else max(
            0.25, 0.01 * self.stall_timeout)
        self.poll = float(poll)
        self.report_dir = Path(report_dir or tempfile.gettempdir())
        self.stacks_file = Path(tempfile.mkstemp(prefix="ctxmix-kernel-stacks-")[1])
        self.km = None
        self.kc = None
        self.loop = None
        self.last_message = time.monotonic()
        self.messages = 0
        # see WatchedChannel.get_msg; CTXMIX_CLIENT_POLL_SLICE=0 restores jupyter_client's wait
        self.poll_slice = float(os.environ.get("CTXMIX_CLIENT_POLL_SLICE", "") or 1.0)
        if self.poll_slice <= 0:
            self.poll_slice = float("inf")
        self.late_wakeups = 0
        self.cell = None  # (index, id, first source line)
        self.cell_started = None
        self.verdict = None  # set when the watchdog killed the kernel
        self.report = ""
        self._samples: deque = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kernel-watchdog", daemon=True)

    # called by the client's channels and by nbclient's hooks (in the execution's thread)
    def message(self, msg=None):
        self.last_message = time.monotonic()
        self.messages += 1

    def on_cell_execute(self, cell=None, cell_index=None, **_):
        src = (cell.get("source", "") if cell is not None else "").strip().splitlines()
        cid = cell.get("id") if cell is not None else None
        self.cell = (cell_index, cid, src[0] if src else "")
        self.cell_started = time.monotonic()
        self.last_message = time.monotonic()

    def on_cell_executed(self, **_):
        self.cell_started = None

    # ---- the thread ----
    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.stacks_file.unlink()
        except OSError:
            pass

    def kernel_pid(self) -> Optional[int]:
        prov = getattr(self.km, "provisioner", None)
        pid = getattr(prov, "pid", None)
        if pid is None:
            proc = getattr(prov, "process", None)
            pid = getattr(proc, "pid", None)
        return pid

    def where(self) -> str:
        if self.cell is None:
            return "before the first cell (kernel start-up)" if self.messages == 0 else \
                "after the last cell (papermill's closing kernel_info request)"
        index, cid, first = self.cell
        return f"cell {index} (id {cid}) `{first}`"

    def _run(self):
        while not self._stop.wait(self.poll):
            pid = self.kernel_pid()
            if pid is None:
                continue
            now = time.monotonic()
            self._samples.append((now, tree_cpu(pid)))
            while len(self._samples) > 2 and self._samples[1][0] <= now - self.stall_timeout:
                self._samples.popleft()
            if self.cell_started is not None and now - self.cell_started > self.cell_timeout:
                self._fire(pid, f"timed out: {self.where()} ran longer than its timeout of "
                                f"{self.cell_timeout:.0f} s")
                return
            quiet = now - self.last_message
            t0, c0 = self._samples[0]
            if quiet >= self.stall_timeout and now - t0 >= self.stall_timeout * 0.95:
                used = self._samples[-1][1] - c0
                if used < self.idle_cpu:
                    self._fire(pid, f"stalled: {self.where()} -- no message from the kernel for "
                                    f"{quiet:.0f} s while the kernel and its children were idle "
                                    f"({used:.2f} s of CPU in the last {now - t0:.0f} s)")
                    return

    def _client_pending(self) -> str:
        """Whether replies sit unread in the client's sockets (a client-side lost wake-up)."""
        kc = self.kc
        loop = self.loop
        if loop is None or not loop.is_running():
            return "client event loop: not running"

        async def probe():
            import zmq

            out = []
            for name in ("shell_channel", "iopub_channel", "control_channel"):
                ch = getattr(kc, f"_{name}", None) if kc is not None else None
                sock = getattr(ch, "socket", None)
                if sock is not None:
                    ev = sock.getsockopt(zmq.EVENTS)
                    out.append(f"{name}: {'a message is waiting' if ev & zmq.POLLIN else 'empty'}")
            return ", ".join(out) or "client sockets: unknown"

        try:
            return asyncio.run_coroutine_threadsafe(probe(), loop).result(timeout=3)
        except Exception as err:  # a blocked loop is itself the finding
            return f"client event loop did not answer within 3 s ({type(err).__name__})"

    def _fire(self, pid: int, verdict: str):
        parts = [f"{self.notebook}: {verdict}", f"load average: {os.getloadavg()}",
                 f"messages received: {self.messages} ({self.late_wakeups} found only by the "
                 f"periodic level check: lost wake-ups)", self._client_pending(), "",
                 "kernel process tree:"]
        for p in [pid] + descendants(pid):
            parts.append(describe_process(p))
        if hasattr(signal, "SIGUSR2"):
            try:
                os.kill(pid, signal.SIGUSR2)
                time.sleep(1.0)
                stacks = self.stacks_file.read_text(errors="replace").strip()
                parts += ["", "kernel Python stacks (faulthandler):", stacks or "(none written)"]
            except OSError as err:
                parts.append(f"(no kernel stacks: {err})")
        killed = kill_tree(pid)
        parts += ["", f"killed: {killed}"]
        self.report = "\n".join(parts)
        self.verdict = f"{verdict}; killed the kernel (pid {pid}) and its processes {killed[1:]}"
