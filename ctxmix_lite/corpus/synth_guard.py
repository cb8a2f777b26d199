"""Keep the synthesiser's ``mbrola`` child from holding other people's descriptors (issue 12).

libespeak-ng runs MBROLA voices through a child process: ``espeak_SetVoiceByName`` forks, and the
child ``exec``s the ``mbrola`` program with three pipes as its stdin, stdout and stderr. Before
``exec`` the child closes descriptors 3 up to the highest of those pipes only
(``src/libespeak-ng/mbrowrap.c``, ``start_mbrola``: ``for (i = p_stderr[1]; i > 2; i--)``), so
every *inheritable* descriptor numbered above them goes with it into ``mbrola``: a pipe a test
runner, a job harness or a notebook runner inherited or created, say as descriptor 251. And the
child lives on after the sentence, idle on its stdin, until the next MBROLA voice is selected or
the process exits. Whoever waits for end-of-file on such a pipe then waits as long as ``mbrola``
idles. The parent's ends of the three pipes are inheritable too, so any program this process later
starts without closing descriptors keeps ``mbrola``'s stdin open, and ``mbrola`` outlives us.

:func:`install` wraps the synthesiser's one entry point (``synth._Engine.run``), which is where
every fork happens, so that

1. during the call every descriptor >= 3 of this process is close-on-exec
   (:func:`no_inherit`): ``mbrola`` starts with its three pipes and nothing else; the
   descriptors' flags are restored afterwards, and those libespeak-ng opened meanwhile (its ends
   of the pipes) stay close-on-exec;
2. after the call no ``mbrola`` child is left running (:func:`stop_mbrola_children`): it is
   killed (SIGKILL; it ignores SIGTERM) and left for libespeak-ng to reap when it next selects
   an MBROLA voice (which it does before every sentence: the output is unchanged, bit for bit).

Why a wrapper installed from outside ``synth.py``: the homophony data's build key hashes
``synth.py`` byte for byte (``corpus.build._build_key``), and the built data, its key and the
committed checks do not depend on how descriptors are handled. ``ctxmix_lite/__init__.py``
installs it whenever ``ctxmix_lite.corpus.synth`` is imported, by any route (``from ctxmix_lite import
synth``, ``import ctxmix_lite.corpus.synth``, a process-pool worker unpickling ``synth._safe``).
Linux only (``/proc``); elsewhere only step 1 runs, over the descriptors ``/dev/fd`` lists.
"""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
from typing import Dict, Iterator, List, Tuple

MBROLA_NAME = "mbrola"
# one guarded call at a time in this process: a second thread must neither see the first one's
# flags as its "before" nor stop the first one's mbrola (the engine serialises calls anyway)
_LOCK = threading.Lock()


def open_fds() -> List[int]:
    """Descriptors open in this process (>= 0), read from ``/proc/self/fd`` (or ``/dev/fd``)."""
    for d in ("/proc/self/fd", "/dev/fd"):
        try:
            names = os.listdir(d)
        except OSError:
            continue
        fds = []
        for n in names:
            try:
                fd = int(n)
                os.fstat(fd)  # the listing's own descriptor is closed by now
            except (ValueError, OSError):
                continue
            fds.append(fd)
        return sorted(fds)
    return []


def _identity(fd: int):
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@contextlib.contextmanager
def no_inherit(min_fd: int = 3) -> Iterator[Dict[int, Tuple[int, int]]]:
    """Within the block, no descriptor >= ``min_fd`` survives an ``exec``: a child program started
    (by C code, which Python's ``close_fds`` does not cover) gets only what it sets up itself.

    On exit the descriptors that were inheritable before are made inheritable again (if still the
    same file), and descriptors opened inside the block are left close-on-exec. Yields the
    descriptors whose flag was changed (fd -> (device, inode)).
    """
    before = {fd: _identity(fd) for fd in open_fds()}
    changed: Dict[int, Tuple[int, int]] = {}
    for fd, ident in before.items():
        if fd < min_fd or ident is None:
            continue
        try:
            if os.get_inheritable(fd):
                os.set_inheritable(fd, False)
                changed[fd] = ident
        except OSError:  # closed meanwhile
            continue
    try:
        yield changed
    finally:
        for fd in open_fds():
            if fd < min_fd:
                continue
            ident = _identity(fd)
            try:
                if fd in changed and ident == changed[fd]:
                    os.set_inheritable(fd, True)
                elif ident != before.get(fd) and os.get_inheritable(fd):
                    # opened inside the block (possibly under a number freed meanwhile) by
                    # C code, which does not ask for close-on-exec: keep it to this process
                    os.set_inheritable(fd, False)
            except OSError:
                continue


def _stat(pid: int):
    """(command name, state, parent pid) of ``pid`` from ``/proc/<pid>/stat``, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    comm = raw[raw.find("(") + 1: raw.rfind(")")]
    rest = raw[raw.rfind(")") + 2:].split()
    if len(rest) < 2:
        return None
    return comm, rest[0], int(rest[1])


def children(name: str = None) -> List[int]:
    """Pids of this process's live (not zombie) children, optionally only those called ``name``."""
    me = os.getpid()
    out = []
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return out
    for pid in pids:
        st = _stat(pid)
        if st is None or st[2] != me or st[1] in ("Z", "X"):
            continue
        if name is None or st[0] == name:
            out.append(pid)
    return sorted(out)


def stop_mbrola_children(keep=()) -> List[int]:
    """Kill (SIGKILL) this process's running ``mbrola`` children but those in ``keep``; returns
    their pids. They are *not* reaped here: libespeak-ng reaps its child (``waitpid``) when it
    next selects an MBROLA voice, and a zombie cannot have its pid reused meanwhile."""
    killed = []
    for pid in children(MBROLA_NAME):
        if pid in keep:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
        killed.append(pid)
    return killed


def guarded(run):
    """Wrap ``_Engine.run``: no descriptor inherited by ``mbrola``, no ``mbrola`` left after."""
    if getattr(run, "_ctxmix_fd_guard", False):
        return run

    @functools.wraps(run)
    def wrapper(self, *args, **kwargs):
        with _LOCK:
            mine = set(children(MBROLA_NAME))  # started by someone else: not ours to stop
            try:
                with no_inherit():
                    return run(self, *args, **kwargs)
            finally:
                stop_mbrola_children(keep=mine)

    wrapper._ctxmix_fd_guard = True
    return wrapper


def install(synth_module) -> None:
    """Wrap ``synth_module._Engine.run`` (idempotent)."""
    engine_cls = getattr(synth_module, "_Engine", None)
    if engine_cls is not None:
        engine_cls.run = guarded(engine_cls.run)
