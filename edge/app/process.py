"""Set-up shared by every long-running process of the firmware (edged, the analytics child).

One helper so each entry point stays short: logging to the journal under systemd and to
stderr elsewhere, faulthandler for post-mortems of hard crashes, an optional nice level, and
the thread/process name that ``top`` and the journal show. Child processes also call
:func:`die_with_parent`, so that no child outlives a killed ``edged``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import faulthandler
import logging
import os
import signal
import sys
import threading
import time

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def under_systemd() -> bool:
    """True when started by systemd with stdout/stderr connected to the journal."""
    return "JOURNAL_STREAM" in os.environ or "INVOCATION_ID" in os.environ


def setup_logging(identifier: str, level: str = "info") -> None:
    """Log to the journal (structured, with the identifier) under systemd, else to stderr."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if under_systemd():
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER=identifier)
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        except ImportError:  # pragma: no cover - systemd-python is a dependency
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())


_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


def _libc() -> ctypes.CDLL | None:
    libc_name = ctypes.util.find_library("c")
    return ctypes.CDLL(libc_name, use_errno=True) if libc_name else None


def set_process_name(name: str) -> None:
    """Name the calling thread as the kernel sees it (``ps -L``, ``top -H``): at most 15 bytes."""
    libc = _libc()
    if libc is not None:
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def die_with_parent(parent_pid: int, *, poll_s: float = 0.5) -> None:
    """End this process when ``parent_pid`` (its parent) dies, however it dies (SIGKILL too).

    Without this, a child of a killed ``edged`` (outside systemd, which kills the whole cgroup)
    lives on, and keeps multiprocessing's resource tracker alive, which then never removes the
    shared memory and semaphores it tracks. Two mechanisms, because each has a gap:

    - ``PR_SET_PDEATHSIG``: the kernel sends SIGKILL when the parent *thread* that started us
      ends; the bridge starts children from threads that outlive them (main, drain);
    - a watcher thread that sees the parent change (re-parented to init or a subreaper):
      covers a parent that died before the request was made, and non-Linux kernels.
    """
    libc = _libc()
    if libc is not None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)  # already orphaned: nothing to report to

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


#: glibc's mallopt(3) parameters, and prctl(2)'s switch for transparent huge pages.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_PR_SET_THP_DISABLE = 41
#: Blocks from this size up are mappings of their own, unmapped when freed.
MMAP_THRESHOLD = 256 * 1024


def bound_malloc() -> bool:
    """Keep the C allocator from holding on to freed memory; False where it is not glibc.

    By default glibc gives each busy thread an arena of its own (eight per core) and, once a
    large block has been freed, serves blocks of that size from the heap, where freed memory
    often stays: a process of a dozen threads moving megabyte frames, packets and segments
    then grows after every burst and never shrinks. Two arenas, and large blocks always
    mapped (so unmapped when freed), keep the resident size at what is in use. Must run before
    the process starts threads (the arenas are made on first use).

    Transparent huge pages are turned off for the process too: a frame or an encoder buffer
    of a few MiB, backed by 2 MiB pages, is resident up to its last page's end, and a stream
    read once per frame gains nothing from fewer TLB entries.
    """
    libc = _libc()
    if libc is not None:
        libc.prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0)  # fails harmlessly on kernels without THP
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(_M_ARENA_MAX, 2)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def setup_process(name: str, *, log_level: str = "info", nice: int = 0) -> None:
    """Everything a long-running firmware process does first."""
    bound_malloc()
    faulthandler.enable()
    setup_logging(name, log_level)
    set_process_name(name)
    if nice:
        with contextlib.suppress(OSError):  # lowering priority can only fail if already lower
            os.nice(nice)
