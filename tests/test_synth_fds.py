"""Issue 12: the synthesiser's ``mbrola`` child must not hold our descriptors nor outlive a call.

libespeak-ng forks ``mbrola`` for MBROLA voices and closes, in the child, only the descriptors
numbered up to its own pipes: an inheritable pipe end at a high number (251 was seen under pytest)
went into ``mbrola``, which idles until the next voice change, and whoever waited for end-of-file
on that pipe waited as long.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from ctxmix_lite import synth, synth_guard

ROOT = Path(__file__).resolve().parents[1]


def _need_mbrola():
    try:
        synth.find_library()
    except synth.SynthesizerUnavailable as err:
        pytest.skip(str(err))
    if "mb-fr1" not in synth.available_voices():
        pytest.skip(f"mb-fr1 not installed: {synth.INSTALL_COMMAND}")


def _free_high_fd(start=251):
    fd = start
    while fd > 3:
        try:
            os.fstat(fd)
        except OSError:
            return fd
        fd -= 1
    raise RuntimeError("no free descriptor")


def _holders(inode: int, pids):
    """Which of ``pids`` hold a descriptor on pipe ``inode``."""
    out = []
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if f"pipe:[{inode}]" in links:
            out.append(pid)
    return out


def _eof_within(fd: int, seconds: float):
    ready, _, _ = select.select([fd], [], [], seconds)
    return bool(ready) and os.read(fd, 1) == b""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_mbrola_neither_inherits_a_foreign_pipe_nor_outlives_the_call():
    _need_mbrola()
    r, w = os.pipe()
    high = _free_high_fd()
    os.dup2(w, high, inheritable=True)  # like the pipe end pytest held as fd 251
    os.close(w)
    inode = os.fstat(r).st_ino
    try:
        s = synth.synthesize("Elles aiment la musique.", voice="mb-fr1")
        assert s.words and s.audio.size
        kids = synth_guard.children()
        assert _holders(inode, kids) == [], "a child of ours holds the pipe's write end"
        assert synth_guard.children("mbrola") == [], "an mbrola child survived the call"
        assert os.get_inheritable(high), "our own descriptor's flag must be restored"
    finally:
        os.close(high)
    try:
        assert _eof_within(r, 10.0), "no end-of-file: someone still holds the write end"
    finally:
        os.close(r)
    # the next sentence (the voice is selected again, the killed child reaped) is unchanged
    again = synth.synthesize("Elles aiment la musique.", voice="mb-fr1")
    assert (again.audio == s.audio).all() and again.words == s.words and again.phones == s.phones


def test_descriptors_opened_by_the_synthesiser_are_close_on_exec():
    _need_mbrola()
    """libespeak-ng's ends of its pipes to mbrola (new pipes at every sentence) would keep mbrola's
    stdin open in any program this process starts without closing descriptors."""
    def files():
        return {fd: (os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in synth_guard.open_fds()}

    before = files()
    synth.synthesize("Le chat dort.", voice="mb-fr2")
    new = [fd for fd, ident in files().items() if fd > 2 and before.get(fd) != ident]
    assert new, "libespeak-ng opens its pipes to mbrola at every sentence"
    assert [fd for fd in new if os.get_inheritable(fd)] == []


def test_no_inherit_hides_descriptors_from_programs_started_inside_and_restores_them():
    r, w = os.pipe()
    high = _free_high_fd(240)
    os.dup2(w, high, inheritable=True)
    os.close(w)
    ls = [sys.executable, "-c", "import os; print(sorted(int(n) for n in os.listdir('/proc/self/fd')))"]
    try:
        # a program started the way C code starts one (no close_fds) sees every inheritable fd
        seen = json.loads(subprocess.run(ls, close_fds=False, capture_output=True,
                                         text=True, check=True).stdout)
        assert high in seen
        with synth_guard.no_inherit():
            assert not os.get_inheritable(high)
            inside = os.open(os.devnull, os.O_RDONLY)
            os.set_inheritable(inside, True)  # as C code's pipe() would leave it
            seen = json.loads(subprocess.run(ls, close_fds=False, capture_output=True,
                                             text=True, check=True).stdout)
            assert high not in seen
        assert os.get_inheritable(high) and not os.get_inheritable(inside)
        os.close(inside)
    finally:
        os.close(high)
        os.close(r)


def test_the_guard_is_installed_however_synth_is_imported():
    """A process-pool worker imports ``ctxmix_lite.synth`` directly (unpickling ``synth._safe``),
    not through ``from ctxmix_lite import synth``."""
    code = ("import ctxmix_lite.synth as s, pickle\n"
            "print(getattr(s._Engine.run, '_ctxmix_fd_guard', False))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True)
    assert out.stdout.strip() == "True", out.stderr
    assert getattr(synth._Engine.run, "_ctxmix_fd_guard", False)


def test_stop_mbrola_leaves_other_children_alone():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert p.pid in synth_guard.children()
        assert p.pid not in synth_guard.stop_mbrola_children()
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()
