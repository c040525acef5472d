"""Set-up shared by every long-running process of the firmware (edged, the analytics child).

One helper so each entry point stays short: logging to the journal under systemd and to
stderr elsewhere, faulthandler for post-mortems of hard crashes, an optional nice level, and
the thread/process name that ``top`` and the journal show.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import faulthandler
import logging
import os
import sys

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


def set_process_name(name: str) -> None:
    """Name the calling thread as the kernel sees it (``ps -L``, ``top -H``): at most 15 bytes."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return
    libc = ctypes.CDLL(libc_name, use_errno=True)
    pr_set_name = 15
    libc.prctl(pr_set_name, name.encode()[:15], 0, 0, 0)


def setup_process(name: str, *, log_level: str = "info", nice: int = 0) -> None:
    """Everything a long-running firmware process does first."""
    faulthandler.enable()
    setup_logging(name, log_level)
    set_process_name(name)
    if nice:
        with contextlib.suppress(OSError):  # lowering priority can only fail if already lower
            os.nice(nice)
